"""RISC-V trap causes and guest-page-fault decoding (RV64 host, H extension).

A guest-page fault reaches KVM as ``struct kvm_cpu_trap`` = {sepc, scause, stval, htval, htinst}.
:func:`decode_guest_page_fault` turns the last four into a :class:`GuestPageFault`, the way
``gstage_page_fault()`` (``arch/riscv/kvm/vcpu_exit.c``) reads them, with one deliberate
difference documented on :attr:`GuestPageFault.gpa`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, NamedTuple, NoReturn

from kvmcore import DecodeError

from .htinst import HtinstKind, _decode_htinst

Access = Literal["fetch", "load", "store"]

_U64_MAX = (1 << 64) - 1

#: scause bit 63 on RV64: set for an interrupt (asm/csr.h CAUSE_IRQ_FLAG).
CAUSE_IRQ_FLAG = 1 << 63

# --- Exception causes: asm/csr.h names ---------------------------------------------------------
EXC_INST_MISALIGNED = 0
EXC_INST_ACCESS = 1
EXC_INST_ILLEGAL = 2
EXC_BREAKPOINT = 3
EXC_LOAD_MISALIGNED = 4
EXC_LOAD_ACCESS = 5
EXC_STORE_MISALIGNED = 6
EXC_STORE_ACCESS = 7
EXC_SYSCALL = 8
EXC_HYPERVISOR_SYSCALL = 9
EXC_SUPERVISOR_SYSCALL = 10
EXC_INST_PAGE_FAULT = 12
EXC_LOAD_PAGE_FAULT = 13
EXC_STORE_PAGE_FAULT = 15
EXC_SOFTWARE_CHECK = 18
EXC_HARDWARE_ERROR = 19
EXC_INST_GUEST_PAGE_FAULT = 20
EXC_LOAD_GUEST_PAGE_FAULT = 21
EXC_VIRTUAL_INST_FAULT = 22
EXC_STORE_GUEST_PAGE_FAULT = 23

# --- Interrupt causes (scause without bit 63): asm/csr.h names --------------------------------
IRQ_S_SOFT = 1
IRQ_VS_SOFT = 2
IRQ_M_SOFT = 3
IRQ_S_TIMER = 5
IRQ_VS_TIMER = 6
IRQ_M_TIMER = 7
IRQ_S_EXT = 9
IRQ_VS_EXT = 10
IRQ_M_EXT = 11
IRQ_S_GEXT = 12
IRQ_PMU_OVF = 13


class CauseName(NamedTuple):
    """A cause code's name and meaning.

    ``in_kernel``: the name is a Linux ``asm/csr.h`` define. Codes without one (11, 19) carry
    the name other projects use (kvm-unit-tests ``EXC_HARDWARE_ERROR``) or kvmcore's own.
    """

    name: str
    meaning: str
    in_kernel: bool = True


#: Exception codes of the privileged spec (1.13, with the H extension), by code.
EXCEPTION_NAMES: dict[int, CauseName] = {
    EXC_INST_MISALIGNED: CauseName("EXC_INST_MISALIGNED", "instruction address misaligned"),
    EXC_INST_ACCESS: CauseName("EXC_INST_ACCESS", "instruction access fault"),
    EXC_INST_ILLEGAL: CauseName("EXC_INST_ILLEGAL", "illegal instruction"),
    EXC_BREAKPOINT: CauseName("EXC_BREAKPOINT", "breakpoint"),
    EXC_LOAD_MISALIGNED: CauseName("EXC_LOAD_MISALIGNED", "load address misaligned"),
    EXC_LOAD_ACCESS: CauseName("EXC_LOAD_ACCESS", "load access fault"),
    EXC_STORE_MISALIGNED: CauseName("EXC_STORE_MISALIGNED", "store/AMO address misaligned"),
    EXC_STORE_ACCESS: CauseName("EXC_STORE_ACCESS", "store/AMO access fault"),
    EXC_SYSCALL: CauseName("EXC_SYSCALL", "environment call from U-mode or VU-mode (user ecall)"),
    EXC_HYPERVISOR_SYSCALL: CauseName(
        "EXC_HYPERVISOR_SYSCALL", "environment call from HS-mode (supervisor ecall)"
    ),
    EXC_SUPERVISOR_SYSCALL: CauseName(
        "EXC_SUPERVISOR_SYSCALL", "environment call from VS-mode (guest ecall, an SBI call)"
    ),
    11: CauseName("EXC_MACHINE_SYSCALL", "environment call from M-mode (machine ecall)", False),
    EXC_INST_PAGE_FAULT: CauseName("EXC_INST_PAGE_FAULT", "instruction page fault"),
    EXC_LOAD_PAGE_FAULT: CauseName("EXC_LOAD_PAGE_FAULT", "load page fault"),
    EXC_STORE_PAGE_FAULT: CauseName("EXC_STORE_PAGE_FAULT", "store/AMO page fault"),
    EXC_SOFTWARE_CHECK: CauseName("EXC_SOFTWARE_CHECK", "software check (Zicfilp/Zicfiss CFI)"),
    EXC_HARDWARE_ERROR: CauseName("EXC_HARDWARE_ERROR", "hardware error", False),
    EXC_INST_GUEST_PAGE_FAULT: CauseName(
        "EXC_INST_GUEST_PAGE_FAULT", "instruction guest-page fault"
    ),
    EXC_LOAD_GUEST_PAGE_FAULT: CauseName("EXC_LOAD_GUEST_PAGE_FAULT", "load guest-page fault"),
    EXC_VIRTUAL_INST_FAULT: CauseName("EXC_VIRTUAL_INST_FAULT", "virtual instruction"),
    EXC_STORE_GUEST_PAGE_FAULT: CauseName(
        "EXC_STORE_GUEST_PAGE_FAULT", "store/AMO guest-page fault"
    ),
}

#: Interrupt codes (scause & ~CAUSE_IRQ_FLAG), including the H extension's VS-level and SGEI.
INTERRUPT_NAMES: dict[int, CauseName] = {
    IRQ_S_SOFT: CauseName("IRQ_S_SOFT", "supervisor software"),
    IRQ_VS_SOFT: CauseName("IRQ_VS_SOFT", "virtual supervisor software"),
    IRQ_M_SOFT: CauseName("IRQ_M_SOFT", "machine software"),
    IRQ_S_TIMER: CauseName("IRQ_S_TIMER", "supervisor timer"),
    IRQ_VS_TIMER: CauseName("IRQ_VS_TIMER", "virtual supervisor timer"),
    IRQ_M_TIMER: CauseName("IRQ_M_TIMER", "machine timer"),
    IRQ_S_EXT: CauseName("IRQ_S_EXT", "supervisor external"),
    IRQ_VS_EXT: CauseName("IRQ_VS_EXT", "virtual supervisor external"),
    IRQ_M_EXT: CauseName("IRQ_M_EXT", "machine external"),
    IRQ_S_GEXT: CauseName("IRQ_S_GEXT", "supervisor guest external"),
    IRQ_PMU_OVF: CauseName("IRQ_PMU_OVF", "counter overflow (Sscofpmf)"),
}

#: The three guest-page-fault causes and the access each reports (the original access type, also
#: for implicit VS-stage page-table accesses).
GUEST_PAGE_FAULT_ACCESS: dict[int, Access] = {
    EXC_INST_GUEST_PAGE_FAULT: "fetch",
    EXC_LOAD_GUEST_PAGE_FAULT: "load",
    EXC_STORE_GUEST_PAGE_FAULT: "store",
}

#: Widest GPA on RV64: Sv57x4 = 57 + 2 bits. htval holds GPA >> 2, so at most 57 bits.
GPA_BITS = 59
HTVAL_MAX = (1 << (GPA_BITS - 2)) - 1
PAGE_SHIFT = 12


def scause_name(scause: int) -> str:
    """The kernel-style name of a cause: ``EXC_LOAD_GUEST_PAGE_FAULT``, ``IRQ_S_TIMER``,
    or ``EXC_RESERVED_14`` / ``IRQ_RESERVED_14`` / ``EXC_CUSTOM_24`` for codes without one."""
    if scause & CAUSE_IRQ_FLAG:
        code = scause & ~CAUSE_IRQ_FLAG
        info = INTERRUPT_NAMES.get(code)
        if info is not None:
            return info.name
        return f"IRQ_PLATFORM_{code}" if code >= 16 else f"IRQ_RESERVED_{code}"
    info = EXCEPTION_NAMES.get(scause)
    if info is not None:
        return info.name
    if 24 <= scause <= 31 or 48 <= scause <= 63:
        return f"EXC_CUSTOM_{scause}"
    return f"EXC_RESERVED_{scause}"


def describe_scause(scause: int) -> str:
    """``scause=0x15: load guest-page fault [EXC_LOAD_GUEST_PAGE_FAULT]`` style text."""
    if scause & CAUSE_IRQ_FLAG:
        code = scause & ~CAUSE_IRQ_FLAG
        info = INTERRUPT_NAMES.get(code)
        meaning = info.meaning if info else ("platform" if code >= 16 else "reserved")
        return f"scause=0x{scause:x}: interrupt {code} ({meaning}) [{scause_name(scause)}]"
    info = EXCEPTION_NAMES.get(scause)
    if info is not None:
        return f"scause=0x{scause:x}: {info.meaning} [{info.name}]"
    return f"scause=0x{scause:x}: exception {scause} ({scause_name(scause)})"


@dataclass(frozen=True, slots=True)
class GuestPageFault:
    """A decoded guest-page fault (RISC-V's counterpart of a stage-2/TDP fault).

    Fields that the trap does not determine are None (e.g. the register when htinst is zero).
    """

    scause: int
    scause_name: str
    access: Access
    #: The faulting guest physical address. ``(htval << 2) | (stval & 3)`` as the kernel computes
    #: it, except for an implicit VS-stage page-table access (htinst pseudoinstruction): there the
    #: PTE address is PTE-size aligned and stval is the original VA, so ``gpa = htval << 2``.
    gpa: int
    #: What ``gstage_page_fault()`` computes: ``(htval << 2) | (stval & 3)``.
    kernel_gpa: int
    #: stval: the faulting guest virtual address (for a pseudoinstruction, the VA being translated).
    gva: int
    htval: int
    stval: int
    htinst: int
    htinst_kind: HtinstKind
    insn_length: int | None
    access_size: int | None
    rd: int | None
    rs2: int | None
    sign_extend: bool | None
    addr_offset: int | None

    @property
    def gfn(self) -> int:
        """``gpa >> PAGE_SHIFT``."""
        return self.gpa >> PAGE_SHIFT

    @property
    def write(self) -> bool:
        """``is_write`` as ``gstage_page_fault()`` passes it: ``scause == EXC_STORE_GUEST_PAGE_FAULT``."""
        return self.scause == EXC_STORE_GUEST_PAGE_FAULT

    @property
    def exec(self) -> bool:
        """An instruction guest-page fault (KVM itself does not distinguish it when mapping)."""
        return self.scause == EXC_INST_GUEST_PAGE_FAULT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: scause, scause_name, access, gpa, gva, htinst_kind, insn_length,
        access_size, ``rs2`` for a store or else ``rd``, sign_extend, addr_offset, and
        ``kernel_gpa`` only when it differs from gpa."""
        d: dict[str, Any] = {
            "scause": self.scause,
            "scause_name": self.scause_name,
            "access": self.access,
            "gpa": self.gpa,
            "gva": self.gva,
            "htinst_kind": self.htinst_kind,
            "insn_length": self.insn_length,
            "access_size": self.access_size,
        }
        if self.access == "store":
            d["rs2"] = self.rs2
        else:
            d["rd"] = self.rd
        d["sign_extend"] = self.sign_extend
        d["addr_offset"] = self.addr_offset
        if self.kernel_gpa != self.gpa:
            d["kernel_gpa"] = self.kernel_gpa
        return d


# Which transformed-instruction direction each cause allows (spec: "the instruction that trapped
# is the same kind as indicated by the register value"; instruction guest-page faults never carry
# a transformed or custom value).
_TRANSFORMED_IS_WRITE: dict[int, bool | None] = {
    EXC_INST_GUEST_PAGE_FAULT: None,
    EXC_LOAD_GUEST_PAGE_FAULT: False,
    EXC_STORE_GUEST_PAGE_FAULT: True,
}


#: :func:`trap_syndrome`: ``(scause_name, access, htinst_kind, insn_length, access_size, rd, rs2,
#: sign_extend, addr_offset)``.
TrapSyndrome = tuple[str, Access, HtinstKind, "int | None", "int | None", "int | None", "int | None", "bool | None", "int | None"]


def _bad_register(name: str, value: object) -> NoReturn:
    raise DecodeError(f"{name}={value!r}: not a 64-bit register value (0 <= {name} < 2**64)")


def decode_guest_page_fault(scause: int, htval: int, stval: int, htinst: int = 0) -> GuestPageFault:
    """Decode a guest-page-fault trap; mirrors the reading in ``gstage_page_fault()``.

    Accepts scause 20, 21 and 23 only. Raises :class:`DecodeError` naming the register for:
    any other cause or an interrupt; a value outside 0..2**64-1 (or not an int); htval wider
    than 57 bits (a Sv57x4 GPA has 59 bits and htval = GPA >> 2); a transformed/custom htinst on
    an instruction guest-page fault; a transformed htinst whose direction contradicts scause
    (e.g. SW with a load guest-page fault). ``htval = 0`` is accepted: it is GPA 0..3 as much as
    "no information", and the kernel uses it as-is.
    """
    syndrome, gpa, kernel_gpa = guest_page_fault_fields(scause, htval, stval, htinst)
    name, access, kind, ilen, size, rd, rs2, sext, off = syndrome
    return _new_guest_page_fault(
        scause, name, access, gpa, kernel_gpa, stval, htval, stval, htinst, kind, ilen, size, rd, rs2, sext, off
    )


def guest_page_fault_fields(scause: int, htval: int, stval: int, htinst: int) -> tuple[TrapSyndrome, int, int]:
    """:func:`decode_guest_page_fault`'s checks, in its order, and its values without the
    object: ``(trap_syndrome(scause, htinst), gpa, kernel_gpa)``. The fault paths build their
    own fault type from these."""
    if type(scause) is not int or not 0 <= scause <= _U64_MAX:
        _bad_register("scause", scause)
    if type(htval) is not int or not 0 <= htval <= _U64_MAX:
        _bad_register("htval", htval)
    if type(stval) is not int or not 0 <= stval <= _U64_MAX:
        _bad_register("stval", stval)
    if type(htinst) is not int or not 0 <= htinst <= _U64_MAX:
        _bad_register("htinst", htinst)
    if scause not in GUEST_PAGE_FAULT_ACCESS:
        raise DecodeError(f"{describe_scause(scause)} is not a guest-page fault (20, 21 or 23)")
    if htval > HTVAL_MAX:
        raise DecodeError(
            f"htval=0x{htval:x}: wider than 57 bits; htval holds GPA >> 2 and the widest GPA "
            f"(Sv57x4) has {GPA_BITS} bits"
        )
    syndrome = trap_syndrome(scause, htinst)
    kernel_gpa = (htval << 2) | (stval & 3)
    return syndrome, htval << 2 if syndrome[2] == "pseudo" else kernel_gpa, kernel_gpa


@lru_cache(maxsize=4096)
def trap_syndrome(scause: int, htinst: int) -> TrapSyndrome:
    """What ``scause`` and ``htinst`` alone decide, once per distinct pair (guests repeat a few):
    ``(scause_name, access, htinst_kind, insn_length, access_size, rd, rs2, sign_extend,
    addr_offset)``.

    Both must be validated u64 ints and ``scause`` a guest-page-fault cause
    (:func:`decode_guest_page_fault` checks that first). Raises :class:`DecodeError` (never
    cached) for a transformed/custom htinst on an instruction guest-page fault, or a transformed
    one whose direction contradicts ``scause``.
    """
    info = _decode_htinst(htinst)
    kind = info.kind
    if kind == "transformed" or kind == "custom":
        allowed = _TRANSFORMED_IS_WRITE[scause]
        if allowed is None:
            raise DecodeError(
                f"htinst=0x{htinst:x}: a {kind} value ({info.mnemonic or 'custom'}) cannot "
                f"accompany {describe_scause(scause)}; instruction guest-page faults carry "
                "only zero or a pseudoinstruction"
            )
        if kind == "transformed" and info.is_write != allowed:
            raise DecodeError(
                f"htinst=0x{htinst:x}: transformed {info.mnemonic} "
                f"({'a store/AMO' if info.is_write else 'a load'}) cannot cause "
                f"{describe_scause(scause)}"
            )
    return (EXCEPTION_NAMES[scause].name, GUEST_PAGE_FAULT_ACCESS[scause], kind, info.insn_length,
            info.access_size, info.rd, info.rs2, info.sign_extend, info.addr_offset)


# A frozen dataclass's __init__ sets each field through object.__setattr__ (~1.2 us for 16
# fields). Setting the slots through their member descriptors is about twice as fast and gives an
# identical object; the assertion keeps this in step with the field list.
_FIELDS = tuple(GuestPageFault.__dataclass_fields__)
assert _FIELDS == (
    "scause",
    "scause_name",
    "access",
    "gpa",
    "kernel_gpa",
    "gva",
    "htval",
    "stval",
    "htinst",
    "htinst_kind",
    "insn_length",
    "access_size",
    "rd",
    "rs2",
    "sign_extend",
    "addr_offset",
), _FIELDS
(
    _s_scause,
    _s_name,
    _s_access,
    _s_gpa,
    _s_kgpa,
    _s_gva,
    _s_htval,
    _s_stval,
    _s_htinst,
    _s_kind,
    _s_ilen,
    _s_size,
    _s_rd,
    _s_rs2,
    _s_sext,
    _s_off,
) = (getattr(GuestPageFault, name).__set__ for name in _FIELDS)
_object_new = object.__new__


def _new_guest_page_fault(
    scause: int,
    name: str,
    access: Access,
    gpa: int,
    kernel_gpa: int,
    gva: int,
    htval: int,
    stval: int,
    htinst: int,
    kind: HtinstKind,
    ilen: int | None,
    size: int | None,
    rd: int | None,
    rs2: int | None,
    sext: bool | None,
    off: int | None,
) -> GuestPageFault:
    f = _object_new(GuestPageFault)
    _s_scause(f, scause)
    _s_name(f, name)
    _s_access(f, access)
    _s_gpa(f, gpa)
    _s_kgpa(f, kernel_gpa)
    _s_gva(f, gva)
    _s_htval(f, htval)
    _s_stval(f, stval)
    _s_htinst(f, htinst)
    _s_kind(f, kind)
    _s_ilen(f, ilen)
    _s_size(f, size)
    _s_rd(f, rd)
    _s_rs2(f, rs2)
    _s_sext(f, sext)
    _s_off(f, off)
    return f


__all__ = [
    "CAUSE_IRQ_FLAG",
    "EXCEPTION_NAMES",
    "GUEST_PAGE_FAULT_ACCESS",
    "INTERRUPT_NAMES",
    "CauseName",
    "GuestPageFault",
    "decode_guest_page_fault",
    "describe_scause",
    "scause_name",
]
