"""``kvmcore check-host``, part (b): one guest access per slot configuration, on the running
kernel and through the model, compared on what userspace sees.

The real side is :class:`kvmcore.realkvm.guest.Guest` (a fresh VM per case). The model side is a
fresh ``kvmcore.VM("x86", ...)`` with the same slot, fed the stage-2 fault the host's vendor would
report for a first touch of the page: on VMX an EPT violation (exit qualification 0x181/0x182/
0x184: the access bit, GVA valid and translated, no permission bits), on SVM and on PVM a #NPF
(error code US | GUEST_FINAL | W/ID, P clear). PVM has no stage-2 fault: its shadow MMU takes the
guest's own #PF and resolves the gfn through the same ``kvm_mmu_faultin_pfn()``; a not-present
#NPF from a user access (the host CPU is AMD) is the closest TDP input and reaches the same
slot, hva and guest_memfd checks. Accesses that end in the instruction emulator (no slot, a
write to a read-only slot) get the width and the stored value (raw ``len``/``data``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kvmcore
from kvmcore import abi
from kvmcore.errors import KvmError
from kvmcore.realkvm import guest as g
from kvmcore.realkvm.hostmem import (
    PAGE_SIZE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    HostMapping,
    libc_mmap,
    libc_munmap,
)
from kvmcore.realkvm.kvm import System

#: the uaddr page starts with ``mov al, 0x5a; jmp rsi`` then 0x11 bytes; a guest_memfd page
#: with ``mov al, 0x5b; jmp rsi`` then 0x22 bytes: what a read loads or a fetch executes
#: tells which backing KVM used
UADDR_PAGE = g.FETCH_CODE + b"\x11" * (PAGE_SIZE - len(g.FETCH_CODE))
GMEM_MARKER = 0x5B
GMEM_PAGE = bytes([0xB0, GMEM_MARKER, 0xFF, 0xE6]) + b"\x22" * (PAGE_SIZE - 4)


@dataclass(slots=True, frozen=True)
class SlotConfig:
    """One configuration of the slot under test (``None``: no slot at the accessed GPA)."""

    name: str
    description: str
    flags: int = 0
    gmem_flags: int | None = None  # a guest_memfd slot when not None
    uaddr: bool = True  # False: userspace_addr = 0
    host_change: str | None = None  # "munmap", "prot_none", "prot_read" after the slot is set
    no_slot: bool = False
    #: a second KVM_RUN: "retry" as is, "fix" after mprotect(PROT_READ|PROT_WRITE) of the backing,
    #: "relog" after KVM_GET_DIRTY_LOG
    then: str | None = None


CONFIGS: tuple[SlotConfig, ...] = (
    SlotConfig("no_slot", "no memslot at the GPA", no_slot=True),
    SlotConfig("rw", "read-write slot"),
    SlotConfig("readonly", "KVM_MEM_READONLY slot", flags=abi.KVM_MEM_READONLY),
    SlotConfig("dirty_log", "KVM_MEM_LOG_DIRTY_PAGES slot", flags=abi.KVM_MEM_LOG_DIRTY_PAGES),
    SlotConfig("gmem", "KVM_MEM_GUEST_MEMFD slot, guest_memfd flags 0", flags=abi.KVM_MEM_GUEST_MEMFD, gmem_flags=0),
    SlotConfig(
        "gmem_mmap", "KVM_MEM_GUEST_MEMFD slot, guest_memfd MMAP|INIT_SHARED",
        flags=abi.KVM_MEM_GUEST_MEMFD, gmem_flags=abi.GUEST_MEMFD_FLAG_MMAP | abi.GUEST_MEMFD_FLAG_INIT_SHARED,
    ),
    SlotConfig(
        "gmem_mmap_no_uaddr", "as gmem_mmap with userspace_addr 0",
        flags=abi.KVM_MEM_GUEST_MEMFD, gmem_flags=abi.GUEST_MEMFD_FLAG_MMAP | abi.GUEST_MEMFD_FLAG_INIT_SHARED, uaddr=False,
    ),
    SlotConfig("munmap", "read-write slot, backing munmapped", host_change="munmap"),
    SlotConfig("prot_none", "read-write slot, backing mprotect(PROT_NONE)", host_change="prot_none"),
    SlotConfig("prot_read", "read-write slot, backing mprotect(PROT_READ)", host_change="prot_read"),
    SlotConfig("prot_none_retry", "as prot_none, then KVM_RUN again unchanged", host_change="prot_none", then="retry"),
    SlotConfig("prot_none_fixed", "as prot_none, then mprotect(RW) and KVM_RUN again", host_change="prot_none", then="fix"),
    SlotConfig("dirty_log_again", "dirty_log, then KVM_GET_DIRTY_LOG (clears and write-protects) and the access again",
               flags=abi.KVM_MEM_LOG_DIRTY_PAGES, then="relog"),
)


@dataclass(slots=True, frozen=True)
class AccessCase:
    config: SlotConfig
    access: str
    width: int

    @property
    def gpa(self) -> int:
        return g.NOSLOT_GPA if self.config.no_slot else g.TEST_GPA

    @property
    def name(self) -> str:
        return f"{self.config.name}/{self.access}" + (f"/{self.width}" if self.access != "fetch" else "")


def cases() -> Iterator[AccessCase]:
    """Every configuration x (read, write, fetch); widths 1, 2, 4, 8 where the access ends in an
    MMIO exit whose ``len``/``data`` are compared (no slot, a write to a read-only slot), else 8."""
    for config in CONFIGS:
        for access in g.ACCESSES:
            mmio_widths = config.no_slot or (config.name == "readonly" and access == "write")
            widths = (1, 2, 4, 8) if mmio_widths and access != "fetch" else (8,)
            for width in widths:
                yield AccessCase(config, access, width)


@dataclass(slots=True)
class Seen:
    """What userspace saw, in the same terms for both sides."""

    ret: int  # 0 or -1
    errno: int
    exit_reason: int | None  # None: the model left the fault to an unmodelled path
    completed: bool
    mmio: dict[str, int] | None = None
    memory_fault: dict[str, int] | None = None
    backing: str | None = None  # "uaddr" / "gmem" / None
    dirty: bool | None = None
    detail: str = ""
    first: str | None = None  # with a second KVM_RUN: what the first one gave (its summary)

    def key(self) -> tuple[Any, ...]:
        return (self.ret, self.errno, self.exit_reason, self.completed, self.mmio, self.memory_fault, self.backing,
                self.dirty, self.first)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Seen:
        """The inverse of :meth:`as_dict` (whose extra ``exit_reason_name`` is derived)."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "ret": self.ret, "errno": self.errno, "exit_reason": self.exit_reason,
            "exit_reason_name": abi.exit_reason_name(self.exit_reason) if self.exit_reason is not None else None,
            "completed": self.completed, "mmio": self.mmio, "memory_fault": self.memory_fault,
            "backing": self.backing, "dirty": self.dirty, "detail": self.detail, "first": self.first,
        }

    def summary(self) -> str:
        if self.first is not None:
            return f"{self.first}, then " + Seen(self.ret, self.errno, self.exit_reason, self.completed, self.mmio,
                                                 self.memory_fault, self.backing, self.dirty, self.detail).summary()
        if self.ret:
            return f"-1 {kvmcore.errors.strerror(self.errno)}" + (f" exit {self.exit_reason}" if self.exit_reason else "")
        if self.completed:
            text = "completed" + (f" ({self.backing})" if self.backing else "")
            return text + (" dirty" if self.dirty else "")
        if self.exit_reason is None:
            return f"not modelled ({self.detail})"
        text = abi.exit_reason_name(self.exit_reason)
        if self.mmio is not None:
            m = self.mmio
            text += f" {m['phys_addr']:#x} len {m['len']} {'w' if m['is_write'] else 'r'}" + (f" data {m['data']:#x}" if m["is_write"] else "")
        if self.memory_fault is not None:
            mf = self.memory_fault
            text += f" flags {mf['flags']:#x} gpa {mf['gpa']:#x} size {mf['size']:#x}"
        return text + (f" ({self.detail})" if self.detail and self.exit_reason == abi.KVM_EXIT_INTERNAL_ERROR else "")


@dataclass(slots=True)
class AccessRow:
    case: AccessCase
    real: Seen
    model: Seen
    stats: dict[str, int] = field(default_factory=dict)
    expected: str | None = None  # the documented expected difference, if they disagree

    @property
    def agree(self) -> bool:
        return self.real.key() == self.model.key()


# --- the real side -------------------------------------------------------------------------------
def run_real(system: System, host: g.HostKvm, case: AccessCase) -> tuple[Seen, dict[str, int]]:
    """Build the guest and the slot, make the host change, run once, tell what happened."""
    cfg = case.config
    with g.Guest(system, host, case.access, case.gpa, case.width) as guest, HostMapping(PAGE_SIZE) as page:
        assert guest.vm is not None
        page.write(0, UADDR_PAGE)
        gmem_addr = 0
        try:
            if not cfg.no_slot:
                gmem_fd = 0
                if cfg.gmem_flags is not None:
                    gmem = guest.vm.create_guest_memfd(PAGE_SIZE, cfg.gmem_flags)
                    gmem_fd = gmem.fd
                    if cfg.gmem_flags & abi.GUEST_MEMFD_FLAG_MMAP:
                        gmem_addr = libc_mmap(PAGE_SIZE, PROT_READ | PROT_WRITE, mmap.MAP_SHARED, gmem_fd)
                        ctypes.memmove(gmem_addr, GMEM_PAGE, PAGE_SIZE)
                guest.vm.set_user_memory_region(
                    g.TEST_SLOT, g.TEST_GPA, PAGE_SIZE, page.addr if cfg.uaddr else 0, cfg.flags, gmem_fd, 0
                )
                if cfg.host_change == "munmap":
                    page.munmap(0, PAGE_SIZE)
                elif cfg.host_change == "prot_none":
                    page.mprotect(0, PAGE_SIZE, PROT_NONE)
                elif cfg.host_change == "prot_read":
                    page.mprotect(0, PAGE_SIZE, PROT_READ)
            r = guest.run()
            first = None
            if cfg.then is not None:
                seen1 = Seen(r.ret, r.errno, r.exit_reason, r.completed, r.mmio, r.memory_fault)
                if r.completed:
                    seen1.backing = _backing(case, r.rax or 0, page, gmem_addr)
                if cfg.then == "fix":
                    page.mprotect(0, PAGE_SIZE, PROT_READ | PROT_WRITE)
                elif cfg.then == "relog":
                    seen1.dirty = bool(guest.vm.get_dirty_log(g.TEST_SLOT, 1)[0] & 1)
                first = seen1.summary()
                second = guest.run()
                second.stats = {k: r.stats.get(k, 0) + second.stats.get(k, 0) for k in {*r.stats, *second.stats}}
                r = second
            seen = Seen(r.ret, r.errno, r.exit_reason, r.completed, r.mmio, r.memory_fault, first=first)
            if r.exit_reason == abi.KVM_EXIT_INTERNAL_ERROR and r.ret == 0:
                seen.detail = f"suberror {guest.vcpu.run.internal.suberror}"
            if r.completed and not cfg.no_slot:
                seen.backing = _backing(case, r.rax or 0, page, gmem_addr)
            if cfg.flags & abi.KVM_MEM_LOG_DIRTY_PAGES:
                seen.dirty = bool(guest.vm.get_dirty_log(g.TEST_SLOT, 1)[0] & 1)
            return seen, r.stats
        finally:
            if gmem_addr:
                libc_munmap(gmem_addr, PAGE_SIZE)


def _backing(case: AccessCase, rax: int, page: HostMapping, gmem_addr: int) -> str | None:
    """Which page the completed access used, from the guest's RAX or the pages' bytes."""
    if case.access == "read":
        first = rax & 0xFF
        return "uaddr" if first == 0xB0 and (rax >> 8) & 0xFF == g.FETCH_MARKER else "gmem" if (rax >> 8) & 0xFF == GMEM_MARKER else f"rax {rax:#x}"
    if case.access == "fetch":
        return {g.FETCH_MARKER: "uaddr", GMEM_MARKER: "gmem"}.get(rax & 0xFF, f"al {rax & 0xFF:#x}")
    try:
        if page.read(0, 8) != UADDR_PAGE[:8]:
            return "uaddr"
    except KvmError:  # munmapped or PROT_NONE: the write cannot have landed there
        pass
    if gmem_addr and ctypes.string_at(gmem_addr, 8) != GMEM_PAGE[:8]:
        return "gmem"
    return "neither"


# --- the model side ------------------------------------------------------------------------------
def model_raw(vendor: str, case: AccessCase, present: bool = False) -> dict[str, Any]:
    """The stage-2 fault the host's vendor reports for the access (module docstring): a first
    touch, or with ``present`` a write to a page mapped read-only and executable (EPT: bits 3
    and 5, readable and executable; #NPF: P)."""
    write, fetch = case.access == "write", case.access == "fetch"
    if vendor == "vmx":
        raw: dict[str, Any] = {"exit_qualification": 0x180 | (0x2 if write else 0x4 if fetch else 0x1) | (0x28 if present else 0),
                               "gpa": case.gpa}
    else:  # svm, and PVM's closest TDP input
        raw = {"vendor": "svm", "error_code": 0x1_0000_0004 | (0x2 if write else 0) | (0x10 if fetch else 0) | int(present),
               "gpa": case.gpa}
    if not fetch:
        raw["len"] = case.width
        if write:
            raw["data"] = g.RAX_SENTINEL & ((1 << 8 * case.width) - 1)
    return raw


def run_model(make_vm: Any, vendor: str, case: AccessCase) -> Seen:
    """The same slot and host change in a fresh model VM, then the fault."""
    cfg = case.config
    vm = make_vm()
    if not cfg.no_slot:
        hva = vm.host.mmap(PAGE_SIZE)
        gmem_fd = None
        if cfg.gmem_flags is not None:
            gmem_fd = vm.create_guest_memfd(PAGE_SIZE, cfg.gmem_flags)
        vm.set_user_memory_region(
            g.TEST_SLOT, g.TEST_GPA, PAGE_SIZE, hva if cfg.uaddr else 0, cfg.flags, guest_memfd=gmem_fd,
        )
        if cfg.host_change == "munmap":
            vm.host.munmap(hva, PAGE_SIZE)
        elif cfg.host_change == "prot_none":
            vm.host.mprotect(hva, PAGE_SIZE, kvmcore.PROT_NONE)
        elif cfg.host_change == "prot_read":
            vm.host.mprotect(hva, PAGE_SIZE, kvmcore.PROT_READ)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault(model_raw(vendor, case))
    if cfg.then is not None:
        seen1 = _model_seen(vm, vcpu, res, cfg)
        if cfg.then == "fix":
            vm.host.mprotect(hva, PAGE_SIZE, kvmcore.PROT_READ | kvmcore.PROT_WRITE)
        if cfg.then == "relog":
            vm.get_dirty_log(g.TEST_SLOT)  # clears the bitmap and write-protects the slot
            entry = vm.stage2.lookup(g.TEST_GPA >> vm.page_shift)
            if entry is not None and (case.access == "read" or (case.access == "write" and entry.writable)
                                      or (case.access == "fetch" and entry.exec)):
                # the stage-2 entry allows the access: no fault, the guest runs on
                seen = Seen(0, 0, abi.KVM_EXIT_IO, True, backing=seen1.backing, dirty=False, detail="no fault")
                seen.first = seen1.summary()
                return seen
            res = vcpu.handle_fault(model_raw(vendor, case, present=entry is not None))
        else:
            res = vcpu.handle_fault(model_raw(vendor, case))
        seen = _model_seen(vm, vcpu, res, cfg)
        seen.first = seen1.summary()
        return seen
    return _model_seen(vm, vcpu, res, cfg)


def _model_seen(vm: Any, vcpu: Any, res: Any, cfg: SlotConfig) -> Seen:
    """What userspace sees after the model's ``handle_fault``: a mapped fault lets the guest run
    on to its ``out`` (an IO exit); an exit is reported with its kvm_run fields."""
    run = vcpu.kvm_run
    slot = vm.memslots.by_id.get(g.TEST_SLOT)
    dirty = None
    if slot is not None and cfg.flags & abi.KVM_MEM_LOG_DIRTY_PAGES:
        dirty = bool(slot.dirty_bitmap and slot.dirty_bitmap[0] & 1)
    if res.ret:
        return Seen(-1, -res.ret, run.exit_reason, False, dirty=dirty, detail=res.outcome)
    if res.exit_reason is None:
        if isinstance(res.outcome, str) and res.outcome.startswith("mapped"):
            backing = "gmem" if res.outcome in ("mapped_gmem", "mapped_private") else "uaddr"
            return Seen(0, 0, abi.KVM_EXIT_IO, True, backing=backing, dirty=dirty, detail=res.outcome)
        return Seen(0, 0, None, False, dirty=dirty, detail=f"{res.outcome}: {res.detail}" if res.detail else res.outcome)
    seen = Seen(0, 0, res.exit_reason, False, dirty=dirty, detail=res.outcome)
    if res.exit_reason == abi.KVM_EXIT_MMIO:
        m = run.exit.mmio
        seen.mmio = {"phys_addr": m.phys_addr, "len": m.len, "is_write": m.is_write,
                     "data": int.from_bytes(bytes(m.data)[: min(m.len, 8)], "little") if m.is_write else 0}
    elif res.exit_reason == abi.KVM_EXIT_MEMORY_FAULT:
        mf = run.exit.memory_fault
        seen.memory_fault = {"flags": mf.flags, "gpa": mf.gpa, "size": mf.size}
    return seen


def run_matrix(system: System, host: g.HostKvm, make_vm: Any, vendor: str) -> list[AccessRow]:
    rows = []
    for case in cases():
        try:
            real, stats = run_real(system, host, case)
        except kvmcore.KvmError as exc:  # setting up the case failed: report, do not hide
            real, stats = Seen(-1, exc.errno, None, False, detail=f"setup failed: {exc}"), {}
        try:
            model = run_model(make_vm, vendor, case)
        except kvmcore.KvmError as exc:
            model = Seen(-1, exc.errno, None, False, detail=f"setup failed: {exc}")
        rows.append(AccessRow(case, real, model, stats))
    return rows


__all__ = ["CONFIGS", "AccessCase", "AccessRow", "Seen", "cases", "model_raw", "run_matrix", "run_model", "run_real"]
