"""A tiny x86-64 guest that makes one memory access, and the runner that reports what KVM did.

The guest is built in Python: 4-level identity page tables (2 MiB pages, 0-4 GiB, U/S=1 at every
level, A/D preset), a GDT with CPL0 and CPL3 segments, and a few hand-assembled instructions::

    mov rdi, GPA                       48 bf imm64
    mov rax, 0x1122334455667788        48 b8 imm64
    mov rsi, done                      48 be imm64
    mov r/m, [rdi] / mov [rdi], r/m    8a 07 | 66 8b 07 | 8b 07 | 48 8b 07   (read, width 1/2/4/8)
                                       88 07 | 66 89 07 | 89 07 | 48 89 07   (write)
    jmp rdi                            ff e7                                 (fetch)
    done: out 0xe9, al                 e6 e9                                 ("done")
    jmp start                          eb disp8                              (KVM_RUN again: the access again)

A fetch target holds ``mov al, 0x5a; jmp rsi`` (b0 5a ff e6), so completion with AL = 0x5a says
the page was executed; the ``out`` itself always runs from the guest's own RAM (PVM emulates
``out`` at CPL 3, and the emulator reads instruction bytes through ``userspace_addr``, which a
guest_memfd-only slot may not have). On a PVM host (``kvm_pvm``: no VMX/SVM, shadow paging) the guest runs
at CPL 3 with RFLAGS.IOPL=3: only then does it execute natively and take the shadow MMU's page
faults (at CPL 0 PVM emulates every instruction, so only the emulator's memory path is seen;
measured: ``/work/shared/reference/realkvm-findings.md`` section 2). On VMX/SVM hosts CPL 0 is the
normal case and is used.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from kvmcore import abi, uapi
from kvmcore.errors import KvmError
from kvmcore.realkvm.hostmem import PAGE_SIZE, HostMapping
from kvmcore.realkvm.kvm import VCPU, VM, System, delta

# --- guest physical layout (slot 0: the guest's own RAM) ---------------------------------------
SYSTEM_SLOT = 0
SYSTEM_SIZE = 0x10_0000  # 1 MiB: page tables, GDT, code, stack
PML4_GPA = 0x1000
PDPT_GPA = 0x2000
PD_GPA = 0x3000  # four PDs: 0x3000-0x6fff
GDT_GPA = 0x7000
CODE_GPA = 0x8000
STACK_TOP = 0xF000
#: the slot under test: one page here, in slot 1
TEST_SLOT = 1
TEST_GPA = 0x20_0000
#: a GPA with no memslot
NOSLOT_GPA = 0x1000_0000

DONE_PORT = 0xE9
RAX_SENTINEL = 0x1122_3344_5566_7788
FETCH_MARKER = 0x5A
FETCH_CODE = bytes([0xB0, FETCH_MARKER, 0xFF, 0xE6])  # mov al, 0x5a; jmp rsi

# selectors: index << 3 | RPL
SEL_KERNEL_CS, SEL_KERNEL_DS, SEL_USER_DS, SEL_USER_CS = 0x08, 0x10, 0x2B, 0x33

# CR0 = PE|MP|ET|NE|WP|AM|PG; CR4 = PAE|OSFXSR|OSXMMEXCPT; EFER = SCE|LME|LMA
CR0, CR4, EFER = 0x8005_0033, 0x620, 0x501
RFLAGS_FIXED, RFLAGS_IOPL3 = 0x2, 0x3000

_READ_OPS = {1: b"\x8a\x07", 2: b"\x66\x8b\x07", 4: b"\x8b\x07", 8: b"\x48\x8b\x07"}
_WRITE_OPS = {1: b"\x88\x07", 2: b"\x66\x89\x07", 4: b"\x89\x07", 8: b"\x48\x89\x07"}
ACCESSES = ("read", "write", "fetch")

STAT_NAMES = ("pf_taken", "pf_fixed", "pf_emulate", "pf_spurious", "pf_guest", "pf_mmio_spte_created",
              "insn_emulation", "insn_emulation_fail", "mmio_exits", "io_exits", "exits")


def guest_code(access: str, gpa: int, width: int = 8) -> bytes:
    """The access instruction sequence (see the module docstring for the encodings)."""
    if access not in ACCESSES:
        raise ValueError(f"access {access!r}: expected one of {', '.join(ACCESSES)}")
    if access != "fetch" and width not in _READ_OPS:
        raise ValueError(f"width {width}: expected 1, 2, 4 or 8")
    if not 0 <= gpa < 1 << 32:
        raise ValueError(f"gpa {gpa:#x}: the guest identity-maps only the first 4 GiB")
    op = {"read": _READ_OPS, "write": _WRITE_OPS}.get(access, {}).get(width, b"\xff\xe7")
    done = CODE_GPA + 30 + len(op)
    code = (b"\x48\xbf" + struct.pack("<Q", gpa) + b"\x48\xb8" + struct.pack("<Q", RAX_SENTINEL)
            + b"\x48\xbe" + struct.pack("<Q", done))
    if access == "read":
        code += _READ_OPS[width]
    elif access == "write":
        code += _WRITE_OPS[width]
    else:
        code += b"\xff\xe7"
    code += bytes([0xE6, DONE_PORT])
    return code + bytes([0xEB, -(len(code) + 2) & 0xFF])  # jmp short back to CODE_GPA


def page_tables() -> dict[int, bytes]:
    """GPA -> page contents of the identity map of 0-4 GiB with 2 MiB pages.

    Every entry has P|RW|US (0x7); the 2 MiB leaves add A|D|PS (0xe7), so the shadow MMU has
    no accessed/dirty bit to emulate and treats a read like a TDP walk would.
    """
    pml4 = struct.pack("<Q", PDPT_GPA | 0x7).ljust(PAGE_SIZE, b"\0")
    pdpt = b"".join(struct.pack("<Q", (PD_GPA + i * PAGE_SIZE) | 0x7) for i in range(4)).ljust(PAGE_SIZE, b"\0")
    pages = {PML4_GPA: pml4, PDPT_GPA: pdpt}
    for i in range(4):
        pages[PD_GPA + i * PAGE_SIZE] = b"".join(
            struct.pack("<Q", ((i * 512 + j) << 21) | 0xE7) for j in range(512)
        )
    return pages


def gdt() -> bytes:
    """Null, kernel code (L, DPL0), kernel data, an unused slot, a 32-bit user code slot,
    user data (DPL3, selector 0x2b), user code (L, DPL3, selector 0x33)."""
    entries = [
        0,
        0x00AF_9A00_0000_FFFF,  # 0x08 kernel code64
        0x00CF_9200_0000_FFFF,  # 0x10 kernel data
        0,
        0x00CF_FA00_0000_FFFF,  # 0x20 user code32
        0x00CF_F200_0000_FFFF,  # 0x28 user data (0x2b with RPL 3)
        0x00AF_FA00_0000_FFFF,  # 0x30 user code64 (0x33 with RPL 3)
    ]
    return b"".join(struct.pack("<Q", e) for e in entries)


def _segment(selector: int, code: bool, dpl: int) -> uapi.kvm_segment:
    return uapi.kvm_segment(
        base=0, limit=0xFFFF_FFFF, selector=selector, type=0xB if code else 0x3, present=1, dpl=dpl,
        db=0 if code else 1, s=1, l=1 if code else 0, g=1,
    )


# --- host detection -------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class HostKvm:
    """What KVM this host has: ``flavour`` ``"pvm"``, ``"vmx"``, ``"svm"`` or ``"unknown"``, how
    that was found, the kernel release and the CPL the access runner uses."""

    flavour: str
    evidence: str
    release: str
    cpl: int

    @property
    def kernel(self) -> tuple[int, int]:
        """``(major, minor)`` of the running kernel (``6.18.44-fc`` gives ``(6, 18)``)."""
        parts = self.release.split(".")
        try:
            return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
        except (IndexError, ValueError):
            return (0, 0)


def detect_host(sys_module: str = "/sys/module", cpuinfo: str = "/proc/cpuinfo") -> HostKvm:
    """Which KVM backs ``/dev/kvm``: the loaded module (``/sys/module/kvm_{pvm,intel,amd}``), else
    the CPU flags in ``/proc/cpuinfo`` (``vmx``/``svm``). PVM runs guests at CPL 3."""
    release = os.uname().release
    for module, flavour in (("kvm_pvm", "pvm"), ("kvm_intel", "vmx"), ("kvm_amd", "svm")):
        if os.path.isdir(f"{sys_module}/{module}"):
            return HostKvm(flavour, f"{sys_module}/{module} is loaded", release, 3 if flavour == "pvm" else 0)
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    for flag in ("vmx", "svm"):
        if flag in flags:
            return HostKvm(flag, f"{cpuinfo} has the {flag} flag", release, 0)
    # no VMX/SVM visible and no known module: a paravirtual KVM; CPL 3 is what reaches its MMU
    return HostKvm("unknown", "no kvm_pvm/kvm_intel/kvm_amd module and no vmx/svm CPU flag", release, 3)


# --- the runner -------------------------------------------------------------------------------------
@dataclass(slots=True)
class RunResult:
    """What userspace saw after one access: ``KVM_RUN``'s return value and errno, ``exit_reason``,
    the exit union's MMIO or memory_fault fields, whether the guest reached its ``out 0xe9``, the
    guest's RAX there (the value a read loaded), and the vCPU stats that changed."""

    ret: int
    errno: int
    exit_reason: int
    completed: bool
    mmio: dict[str, int] | None = None
    memory_fault: dict[str, int] | None = None
    rax: int | None = None
    rip: int | None = None
    stats: dict[str, int] = field(default_factory=dict)
    dirty: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ret": self.ret, "errno": self.errno, "exit_reason": self.exit_reason,
            "exit_reason_name": abi.exit_reason_name(self.exit_reason), "completed": self.completed,
            "mmio": self.mmio, "memory_fault": self.memory_fault, "rax": self.rax, "rip": self.rip,
            "stats": self.stats, "dirty": self.dirty,
        }


class Guest:
    """A fresh VM with the guest loaded, one vCPU, ready to run one access (a context manager)."""

    def __init__(self, system: System, host: HostKvm, access: str, gpa: int, width: int = 8) -> None:
        self.host = host
        self.system_mem = HostMapping(SYSTEM_SIZE)
        self.vm: VM | None = None
        try:
            for gpa_page, data in page_tables().items():
                self.system_mem.write(gpa_page, data)
            self.system_mem.write(GDT_GPA, gdt())
            self.system_mem.write(CODE_GPA, guest_code(access, gpa, width))
            self.vm = system.create_vm()
            self.vm.set_user_memory_region(SYSTEM_SLOT, 0, SYSTEM_SIZE, self.system_mem.addr)
            self.vcpu: VCPU = self.vm.create_vcpu()
            self._setup_vcpu(system)
        except BaseException:
            self.close()
            raise

    def _setup_vcpu(self, system: System) -> None:
        self.vcpu.set_cpuid2(system.supported_cpuid())
        sregs = self.vcpu.get_sregs()
        user = self.host.cpl == 3
        cs = _segment(SEL_USER_CS if user else SEL_KERNEL_CS, True, 3 if user else 0)
        ds = _segment(SEL_USER_DS if user else SEL_KERNEL_DS, False, 3 if user else 0)
        sregs.cs = cs
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = ds
        sregs.gdt.base, sregs.gdt.limit = GDT_GPA, len(gdt()) - 1
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = CR0, PML4_GPA, CR4, EFER
        self.vcpu.set_sregs(sregs)
        regs = uapi.kvm_regs(rip=CODE_GPA, rsp=STACK_TOP, rflags=RFLAGS_FIXED | (RFLAGS_IOPL3 if user else 0))
        self.vcpu.set_regs(regs)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.vm is not None:
            self.vm.close()
            self.vm = None
        self.system_mem.close()

    def run(self) -> RunResult:
        """One ``KVM_RUN``, reported; completion is an IO exit on the done port."""
        assert self.vm is not None
        stats = self.vcpu.stats()
        before = stats.read()
        ret, err = 0, 0
        try:
            self.vcpu.kvm_run()
        except KvmError as exc:
            ret, err = -1, exc.errno
        after = stats.read()
        run = self.vcpu.run
        reason = run.exit_reason
        result = RunResult(ret, err, reason, False, stats=delta(before, after, STAT_NAMES))
        if ret == 0 and reason == abi.KVM_EXIT_IO:
            io = _kvm_run_io.from_address(ctypes.addressof(run.exit))
            result.completed = io.port == DONE_PORT and io.direction == 1
        elif ret == 0 and reason == abi.KVM_EXIT_MMIO:
            m = run.exit.mmio
            result.mmio = {"phys_addr": m.phys_addr, "len": m.len, "is_write": m.is_write,
                           "data": int.from_bytes(bytes(m.data)[: min(m.len, 8)], "little") if m.is_write else 0}
        elif reason == abi.KVM_EXIT_MEMORY_FAULT:
            mf = run.exit.memory_fault
            result.memory_fault = {"flags": mf.flags, "gpa": mf.gpa, "size": mf.size}
        regs = self.vcpu.get_regs()
        result.rax, result.rip = regs.rax, regs.rip
        return result


class _kvm_run_io(ctypes.Structure):
    """``struct { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; } io``."""

    _fields_ = [("direction", ctypes.c_uint8), ("size", ctypes.c_uint8), ("port", ctypes.c_uint16),
                ("count", ctypes.c_uint32), ("data_offset", ctypes.c_uint64)]


def check_host_usable(system: System) -> None:
    """Refuse hosts this runner cannot drive, naming what is missing."""
    if os.uname().machine != "x86_64":
        raise KvmError(errno.ENOSYS, f"the guest access runner is x86-64 only (this host is {os.uname().machine})")
    for cap, name in ((uapi.KVM_CAP_USER_MEMORY2, "KVM_CAP_USER_MEMORY2"), (uapi.KVM_CAP_BINARY_STATS_FD, "KVM_CAP_BINARY_STATS_FD")):
        if not system.check_extension(cap):
            raise KvmError(errno.ENOSYS, f"/dev/kvm lacks {name}")
