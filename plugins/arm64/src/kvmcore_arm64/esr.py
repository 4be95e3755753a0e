"""Decoding of arm64 exception syndromes (ESR_ELx, HPFAR_EL2, FAR_EL2) for guest aborts.

Pure functions and tables, no pluggy. Names follow Linux's ``arch/arm64/include/asm/esr.h``
(``ESR_ELx_*``) and ``kvm_emulate.h`` (``kvm_vcpu_*``); every KVM predicate says which kernel
function it mirrors. Bit layouts are from the project reference (kvm-fault-facts.md section 4),
cross-checked as noted in the comments ("verified:" lines say against what).

ESR_ELx layout (the same for ESR_EL1 and ESR_EL2, so a value pasted from a host oops decodes too)::

    [63:56] RES0   [55:32] ISS2   [31:26] EC   [25] IL   [24:0] ISS

Hot path: :func:`decode_esr` is cached (``functools.lru_cache``, keyed on the exact int), and the
miss path only indexes precomputed tuples; nothing builds a dict per call.

:class:`FscInfo` and :class:`EsrInfo` are frozen dataclasses whose ``__init__`` is written out and
whose ``__repr__``, ``__eq__`` and ``__hash__`` are the core's shared ``kvmcore.fields_repr``,
``fields_eq`` and ``fields_hash`` (CPython 3.11 compiles the methods ``@dataclass`` generates
from source at every import: EsrInfo's alone were about 2% of ``kvmcore decode``'s start-up).
``tests/test_types.py`` holds them to what ``make_dataclass`` generates.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import kvmcore
from kvmcore import DecodeError

# --------------------------------------------------------------------------------------------
# Register layout (asm/esr.h)
# --------------------------------------------------------------------------------------------

U64_MAX = (1 << 64) - 1

ESR_ELx_RES0_MASK = 0xFF << 56  # bits [63:56]
ESR_ELx_ISS2_SHIFT = 32
ESR_ELx_ISS2_MASK = 0xFFFFFF << ESR_ELx_ISS2_SHIFT  # GENMASK(55, 32)
ESR_ELx_EC_SHIFT = 26
ESR_ELx_EC_MASK = 0x3F << ESR_ELx_EC_SHIFT
ESR_ELx_IL = 1 << 25
ESR_ELx_ISS_MASK = (1 << 25) - 1  # GENMASK(24, 0)

# ISS, data and instruction aborts (bit positions in ESR = positions in ISS)
ESR_ELx_ISV = 1 << 24
ESR_ELx_SAS_SHIFT = 22
ESR_ELx_SAS = 3 << ESR_ELx_SAS_SHIFT
ESR_ELx_SSE = 1 << 21
ESR_ELx_SRT_SHIFT = 16
ESR_ELx_SRT_MASK = 0x1F << ESR_ELx_SRT_SHIFT
ESR_ELx_SF = 1 << 15
ESR_ELx_AR = 1 << 14
ESR_ELx_VNCR = 1 << 13
ESR_ELx_SET_SHIFT = 11
ESR_ELx_SET_MASK = 3 << ESR_ELx_SET_SHIFT
ESR_ELx_FnV = 1 << 10
ESR_ELx_EA = 1 << 9
ESR_ELx_CM = 1 << 8
ESR_ELx_S1PTW = 1 << 7
ESR_ELx_WNR = 1 << 6
ESR_ELx_FSC = 0x3F
ESR_ELx_FSC_TYPE = 0x3C
ESR_ELx_FSC_LEVEL = 0x03

# ISS2, data aborts (positions inside ISS2, as esr.h defines them).
# verified: TnD/TagAccess/GCS/Overlay/DirtyBit/Xs from esr.h (reference 4.2); AssuredOnly bit 7
# and HDBSSF bit 11 confirmed against the Arm-XML-derived ESR_EL2 field list
# (lelegard/arm-cpusysregs docs/registers-fields.md).
ESR_ELx_HDBSSF = 1 << 11
ESR_ELx_TnD = 1 << 10
ESR_ELx_TagAccess = 1 << 9
ESR_ELx_GCS = 1 << 8
ESR_ELx_AssuredOnly = 1 << 7  # FEAT_THE; no Linux define as of 7.2
ESR_ELx_Overlay = 1 << 6
ESR_ELx_DirtyBit = 1 << 5
ESR_ELx_Xs_MASK = 0x1F

# Exception classes KVM's fault path cares about
ESR_ELx_EC_IABT_LOW = 0x20
ESR_ELx_EC_IABT_CUR = 0x21
ESR_ELx_EC_DABT_LOW = 0x24
ESR_ELx_EC_DABT_CUR = 0x25

#: KVM's FAR_TO_FIPA_OFFSET: the low 12 bits of FAR complete the HPFAR IPA, whatever the granule.
FAR_TO_FIPA_OFFSET_MASK = 0xFFF

# HPFAR_EL2 (arch/arm64/tools/sysreg): NS [63], RES0 [62:48], FIPA [47:4] = IPA[55:12], RES0 [3:0]
HPFAR_EL2_NS = 1 << 63
HPFAR_EL2_FIPA_SHIFT = 4
HPFAR_EL2_FIPA_MASK = ((1 << 44) - 1) << HPFAR_EL2_FIPA_SHIFT
HPFAR_EL2_RES0_MASK = U64_MAX & ~(HPFAR_EL2_NS | HPFAR_EL2_FIPA_MASK)

#: PAGE_SHIFT for each stage-2 granule.
PAGE_SHIFTS = {4096: 12, 16384: 14, 65536: 16}

# --------------------------------------------------------------------------------------------
# Exception classes
# --------------------------------------------------------------------------------------------

UNALLOCATED = "UNALLOCATED"

# (name, meaning). Names are Linux's ESR_ELx_EC_* suffixes (esr.h, 6.15-6.18; verified against
# esr.h copies that carry OTHER 0x0A, SME 0x1D, MOPS 0x27, GCS 0x2D). Two classes have no Linux
# define and are named here: 0x1E GPC (QEMU target/arm/syndrome.h EC_GPC = 0x1e; RME granule
# protection check, taken to EL3) and 0x3D PROFILING (Arm ARM FEAT_SPE_EXC/FEAT_TRBE_EXC/FEAT_EBEP
# profiling exception; the class number is *unverified*).
_EC_DEFS: dict[int, tuple[str, str]] = {
    0x00: ("UNKNOWN", "Unknown reason, e.g. an UNDEFINED instruction"),
    0x01: ("WFx", "Trapped WFI, WFE, WFIT or WFET"),
    0x03: ("CP15_32", "Trapped AArch32 MCR or MRC access, coproc 0b1111"),
    0x04: ("CP15_64", "Trapped AArch32 MCRR or MRRC access, coproc 0b1111"),
    0x05: ("CP14_MR", "Trapped AArch32 MCR or MRC access, coproc 0b1110"),
    0x06: ("CP14_LS", "Trapped AArch32 LDC or STC access"),
    0x07: ("FP_ASIMD", "Trapped access to SVE, Advanced SIMD or floating point"),
    0x08: ("CP10_ID", "Trapped VMRS access to an ID register (EL2 only)"),
    0x09: ("PAC", "Trapped pointer authentication instruction (EL2 and above)"),
    0x0A: ("OTHER", "Trapped LD64B/ST64B* or other instruction identified by the ISS"),
    0x0C: ("CP14_64", "Trapped AArch32 MRRC access, coproc 0b1110"),
    0x0D: ("BTI", "Branch Target Identification exception"),
    0x0E: ("ILL", "Illegal Execution state"),
    0x11: ("SVC32", "SVC executed in AArch32 state"),
    0x12: ("HVC32", "HVC executed in AArch32 state"),
    0x13: ("SMC32", "SMC executed in AArch32 state"),
    0x15: ("SVC64", "SVC executed in AArch64 state"),
    0x16: ("HVC64", "HVC executed in AArch64 state"),
    0x17: ("SMC64", "SMC executed in AArch64 state"),
    0x18: ("SYS64", "Trapped MSR, MRS or System instruction in AArch64 state"),
    0x19: ("SVE", "Trapped access to SVE functionality"),
    0x1A: ("ERET", "Trapped ERET, ERETAA or ERETAB (EL2 only)"),
    0x1C: ("FPAC", "Pointer authentication failure (FEAT_FPAC)"),
    0x1D: ("SME", "Trapped access to SME functionality"),
    0x1E: ("GPC", "Granule Protection Check exception (RME, EL3 only)"),
    0x1F: ("IMP_DEF", "IMPLEMENTATION DEFINED exception (EL3 only)"),
    0x20: ("IABT_LOW", "Instruction Abort from a lower Exception level"),
    0x21: ("IABT_CUR", "Instruction Abort taken without a change of Exception level"),
    0x22: ("PC_ALIGN", "PC alignment fault"),
    0x24: ("DABT_LOW", "Data Abort from a lower Exception level"),
    0x25: ("DABT_CUR", "Data Abort taken without a change of Exception level"),
    0x26: ("SP_ALIGN", "SP alignment fault"),
    0x27: ("MOPS", "Memory Copy or Memory Set exception (FEAT_MOPS)"),
    0x28: ("FP_EXC32", "Trapped floating-point exception from AArch32"),
    0x2C: ("FP_EXC64", "Trapped floating-point exception from AArch64"),
    0x2D: ("GCS", "Guarded Control Stack exception"),
    0x2F: ("SERROR", "SError exception"),
    0x30: ("BREAKPT_LOW", "Breakpoint from a lower Exception level"),
    0x31: ("BREAKPT_CUR", "Breakpoint taken without a change of Exception level"),
    0x32: ("SOFTSTP_LOW", "Software Step from a lower Exception level"),
    0x33: ("SOFTSTP_CUR", "Software Step taken without a change of Exception level"),
    0x34: ("WATCHPT_LOW", "Watchpoint from a lower Exception level"),
    0x35: ("WATCHPT_CUR", "Watchpoint taken without a change of Exception level"),
    0x38: ("BKPT32", "BKPT executed in AArch32 state"),
    0x3A: ("VECTOR32", "AArch32 Vector Catch (EL2 only)"),
    0x3C: ("BRK64", "BRK executed in AArch64 state"),
    0x3D: ("PROFILING", "Profiling exception (SPE/TRBE/PMU; class number unverified)"),
}

#: Exception class -> Linux ``ESR_ELx_EC_*`` name, for every allocated class.
EC_NAMES: dict[int, str] = {ec: name for ec, (name, _) in _EC_DEFS.items()}
#: Exception class -> one-line meaning, for every allocated class.
EC_MEANINGS: dict[int, str] = {ec: meaning for ec, (_, meaning) in _EC_DEFS.items()}

_EC_NAME: tuple[str, ...] = tuple(EC_NAMES.get(ec, UNALLOCATED) for ec in range(64))
_EC_MEANING: tuple[str, ...] = tuple(
    EC_MEANINGS.get(ec, "Unallocated exception class") for ec in range(64)
)


def ec_name(ec: int) -> str:
    """``ESR_ELx_EC_*`` name of an exception class (0..63); ``"UNALLOCATED"`` for holes."""
    return _EC_NAME[ec]


def ec_meaning(ec: int) -> str:
    """One-line human meaning of an exception class (0..63)."""
    return _EC_MEANING[ec]


# --------------------------------------------------------------------------------------------
# Fault status codes (DFSC/IFSC)
# --------------------------------------------------------------------------------------------

FAULT_KINDS = (
    "address_size",
    "translation",
    "access_flag",
    "permission",
    "sync_external_abort",
    "sync_external_abort_ttw",
    "tag_check",
    "sync_parity_ecc",
    "sync_parity_ecc_ttw",
    "alignment",
    "granule_protection",
    "granule_protection_ttw",
    "tlb_conflict",
    "unsupported_atomic_hw_update",
    "impdef_lockdown",
    "impdef_unsupported_exclusive_atomic",
    "reserved",
)


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore.fields_repr
class FscInfo:
    """One fault status code: its name, ``fault_kind`` and lookup level (None if levelless)."""

    code: int
    name: str
    fault_kind: str
    level: int | None

    def __init__(self, code: int, name: str, fault_kind: str, level: int | None) -> None:
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fault_kind", fault_kind)
        object.__setattr__(self, "level", level)

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq
    __hash__ = kvmcore.fields_hash


def _fsc_defs() -> dict[int, tuple[str, str, int | None]]:
    d: dict[int, tuple[str, str, int | None]] = {}

    def lvl(code: int, what: str, kind: str, level: int) -> None:
        d[code] = (f"{what}, level {level}", kind, level)

    # Address size: ADDRSZ_L(0..3) = 0x00-0x03; level -1 = 0x29, level -2 = 0x2C (FEAT_D128).
    # Note: esr.h's ESR_ELx_FSC_ADDRSZ_nL(-1) returned 0x25 in 6.15-6.18; the Arm ARM and
    # arm64's fault_info[] ("level -1 address size fault" at index 41) say 0x29, and the
    # kernel later fixed the macro ("arm64: Correct value returned by ESR_ELx_FSC_ADDRSZ_nL()",
    # backported to 6.18.y in 2026). We follow the architecture.
    for n in range(4):
        lvl(n, "address size fault", "address_size", n)
    lvl(0x29, "address size fault", "address_size", -1)
    lvl(0x2C, "address size fault", "address_size", -2)
    # Translation: FAULT_L(0..3) = 0x04-0x07; FAULT_L(-1) = 0x2B, FAULT_L(-2) = 0x2A.
    for n in range(4):
        lvl(0x04 + n, "translation fault", "translation", n)
    lvl(0x2B, "translation fault", "translation", -1)
    lvl(0x2A, "translation fault", "translation", -2)
    for n in range(4):
        lvl(0x08 + n, "access flag fault", "access_flag", n)
        lvl(0x0C + n, "permission fault", "permission", n)
    d[0x10] = ("synchronous external abort, not on translation table walk",
               "sync_external_abort", None)
    d[0x11] = ("synchronous tag check fault", "tag_check", None)
    # SEA_TTW(n) = 0x14 + n for n in -1..3; SECC_TTW(n) = 0x1C + n.
    for n in range(-1, 4):
        lvl(0x14 + n, "synchronous external abort on translation table walk",
            "sync_external_abort_ttw", n)
        lvl(0x1C + n, "synchronous parity or ECC error on translation table walk",
            "sync_parity_ecc_ttw", n)
    d[0x18] = ("synchronous parity or ECC error, not on translation table walk",
               "sync_parity_ecc", None)
    d[0x21] = ("alignment fault", "alignment", None)
    # Granule protection faults (RME). verified: arm64 fault_info[] in the RME host series
    # (Steven Price, "arm64: RME: ..." v9-v13, 2025): index 35 (0x23) "Granule Protection Fault
    # at level -1", 36-39 (0x24-0x27) "at level 0..3", 40 (0x28) "not on table walk".
    for n in range(-1, 4):
        lvl(0x24 + n, "granule protection fault on translation table walk",
            "granule_protection_ttw", n)
    d[0x28] = ("granule protection fault, not on translation table walk",
               "granule_protection", None)
    # verified: names of 0x30, 0x31, 0x34, 0x35 against arm64 fault_info[] ("TLB conflict
    # abort", "Unsupported atomic hardware update fault", "implementation fault (lockdown
    # abort)", "implementation fault (unsupported exclusive)"); 0x35 is esr.h FSC_EXCL_ATOMIC.
    d[0x30] = ("TLB conflict abort", "tlb_conflict", None)
    d[0x31] = ("unsupported atomic hardware update fault", "unsupported_atomic_hw_update", None)
    d[0x34] = ("IMPLEMENTATION DEFINED fault (lockdown)", "impdef_lockdown", None)
    d[0x35] = ("IMPLEMENTATION DEFINED fault (unsupported exclusive or atomic access)",
               "impdef_unsupported_exclusive_atomic", None)
    return d


_FSC_DEFS = _fsc_defs()
#: All 64 fault status codes, indexed by code; unlisted codes are ``reserved``.
FSC_TABLE: tuple[FscInfo, ...] = tuple(
    FscInfo(code, *_FSC_DEFS.get(code, ("reserved", "reserved", None))) for code in range(64)
)
del _FSC_DEFS


def fsc_info(fsc: int) -> FscInfo:
    """The :class:`FscInfo` of a 6-bit fault status code."""
    return FSC_TABLE[fsc & ESR_ELx_FSC]


# --------------------------------------------------------------------------------------------
# The decoded syndrome
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore.fields_repr
class EsrInfo:
    """A decoded ESR_ELx value.

    Single-bit fields are ``bool``; multi-bit fields are ``int``. A field is ``None`` where the
    architecture leaves it undefined for this value: every abort field for a non-abort EC,
    ``sas/sse/srt/sf/ar`` when ISV=0 or for instruction aborts, ``isv/vncr/cm/wnr`` and the ISS2
    fields for instruction aborts, ``set`` unless the FSC is 0x10 (synchronous external abort,
    not on a walk), ``fault_level`` for level-less or reserved codes.
    """

    esr: int
    ec: int
    ec_name: str
    il: bool
    iss: int
    iss2: int
    is_abort: bool
    guest_fault: bool
    is_data_abort: bool
    isv: bool | None
    sas: int | None
    sse: bool | None
    srt: int | None
    sf: bool | None
    ar: bool | None
    vncr: bool | None
    set: int | None
    fnv: bool | None
    ea: bool | None
    cm: bool | None
    s1ptw: bool | None
    wnr: bool | None
    fsc: int | None
    fsc_name: str | None
    fault_kind: str | None
    fault_level: int | None
    tnd: bool | None
    tag_access: bool | None
    gcs: bool | None
    assured_only: bool | None
    overlay: bool | None
    dirty_bit: bool | None
    xs: int | None
    hdbssf: bool | None

    def __init__(
        self,
        esr: int,
        ec: int,
        ec_name: str,
        il: bool,
        iss: int,
        iss2: int,
        is_abort: bool,
        guest_fault: bool,
        is_data_abort: bool,
        isv: bool | None,
        sas: int | None,
        sse: bool | None,
        srt: int | None,
        sf: bool | None,
        ar: bool | None,
        vncr: bool | None,
        set: int | None,
        fnv: bool | None,
        ea: bool | None,
        cm: bool | None,
        s1ptw: bool | None,
        wnr: bool | None,
        fsc: int | None,
        fsc_name: str | None,
        fault_kind: str | None,
        fault_level: int | None,
        tnd: bool | None,
        tag_access: bool | None,
        gcs: bool | None,
        assured_only: bool | None,
        overlay: bool | None,
        dirty_bit: bool | None,
        xs: int | None,
        hdbssf: bool | None,
    ) -> None:
        object.__setattr__(self, "esr", esr)
        object.__setattr__(self, "ec", ec)
        object.__setattr__(self, "ec_name", ec_name)
        object.__setattr__(self, "il", il)
        object.__setattr__(self, "iss", iss)
        object.__setattr__(self, "iss2", iss2)
        object.__setattr__(self, "is_abort", is_abort)
        object.__setattr__(self, "guest_fault", guest_fault)
        object.__setattr__(self, "is_data_abort", is_data_abort)
        object.__setattr__(self, "isv", isv)
        object.__setattr__(self, "sas", sas)
        object.__setattr__(self, "sse", sse)
        object.__setattr__(self, "srt", srt)
        object.__setattr__(self, "sf", sf)
        object.__setattr__(self, "ar", ar)
        object.__setattr__(self, "vncr", vncr)
        object.__setattr__(self, "set", set)
        object.__setattr__(self, "fnv", fnv)
        object.__setattr__(self, "ea", ea)
        object.__setattr__(self, "cm", cm)
        object.__setattr__(self, "s1ptw", s1ptw)
        object.__setattr__(self, "wnr", wnr)
        object.__setattr__(self, "fsc", fsc)
        object.__setattr__(self, "fsc_name", fsc_name)
        object.__setattr__(self, "fault_kind", fault_kind)
        object.__setattr__(self, "fault_level", fault_level)
        object.__setattr__(self, "tnd", tnd)
        object.__setattr__(self, "tag_access", tag_access)
        object.__setattr__(self, "gcs", gcs)
        object.__setattr__(self, "assured_only", assured_only)
        object.__setattr__(self, "overlay", overlay)
        object.__setattr__(self, "dirty_bit", dirty_bit)
        object.__setattr__(self, "xs", xs)
        object.__setattr__(self, "hdbssf", hdbssf)

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq
    __hash__ = kvmcore.fields_hash

    @property
    def ec_meaning(self) -> str:
        """One-line meaning of the exception class."""
        return _EC_MEANING[self.ec]

    @property
    def access_size(self) -> int | None:
        """Access size in bytes (``1 << SAS``, ``kvm_vcpu_dabt_get_as``), None without ISV."""
        return None if self.sas is None else 1 << self.sas

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: every field in declaration order, then ``ec_meaning``.

        Values are JSON scalars (int, bool, str, None); registers stay ints.
        """
        d = {name: getattr(self, name) for name in _FIELD_NAMES}
        d["ec_meaning"] = _EC_MEANING[self.ec]
        return d


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(EsrInfo))
#: The keys of :meth:`EsrInfo.to_dict`, in order.
ESR_INFO_KEYS: tuple[str, ...] = (*_FIELD_NAMES, "ec_meaning")

_ABORT_FIELDS = 25  # fields after is_data_abort
_NON_ABORT_TAIL = (None,) * _ABORT_FIELDS
_IABT_ECS = frozenset((ESR_ELx_EC_IABT_LOW, ESR_ELx_EC_IABT_CUR))
_DABT_ECS = frozenset((ESR_ELx_EC_DABT_LOW, ESR_ELx_EC_DABT_CUR))
_GUEST_ECS = frozenset((ESR_ELx_EC_IABT_LOW, ESR_ELx_EC_DABT_LOW))
_FSC_EXTABT = 0x10


def _check_u64(reg: str, value: int) -> None:
    if value < 0 or value > U64_MAX:
        raise DecodeError(f"{reg}={value:#x}: not a 64-bit register value")


def _as_int(reg: str, value: object) -> int:
    if isinstance(value, int):  # bool and IntEnum included
        return int(value)
    raise TypeError(f"{reg} must be an int, got {type(value).__name__}: {value!r}")


@lru_cache(maxsize=8192)
def _decode(esr: int) -> EsrInfo:
    _check_u64("esr", esr)
    if esr & ESR_ELx_RES0_MASK:
        raise DecodeError(f"esr={esr:#x}: bits [63:56] are RES0 (found {esr >> 56:#x})")
    ec = (esr >> ESR_ELx_EC_SHIFT) & 0x3F
    il = bool(esr & ESR_ELx_IL)
    iss = esr & ESR_ELx_ISS_MASK
    iss2 = esr >> ESR_ELx_ISS2_SHIFT
    name = _EC_NAME[ec]
    is_dabt = ec in _DABT_ECS
    if not is_dabt and ec not in _IABT_ECS:
        return EsrInfo(esr, ec, name, il, iss, iss2, False, False, False, *_NON_ABORT_TAIL)

    fsc = iss & ESR_ELx_FSC
    f = FSC_TABLE[fsc]
    set_ = (iss & ESR_ELx_SET_MASK) >> ESR_ELx_SET_SHIFT if fsc == _FSC_EXTABT else None
    fnv = bool(iss & ESR_ELx_FnV)
    ea = bool(iss & ESR_ELx_EA)
    s1ptw = bool(iss & ESR_ELx_S1PTW)
    sas: int | None
    srt: int | None
    sse: bool | None
    sf: bool | None
    ar: bool | None
    if not is_dabt:
        # Instruction abort: ISS [24:13], [8], [6] are RES0 and ISS2 holds no abort fields.
        return EsrInfo(
            esr, ec, name, il, iss, iss2, True, ec == ESR_ELx_EC_IABT_LOW, False,
            None, None, None, None, None, None, None, set_, fnv, ea, None, s1ptw, None,
            fsc, f.name, f.fault_kind, f.level,
            None, None, None, None, None, None, None, None,
        )
    if iss & ESR_ELx_ISV:
        isv = True
        sas = (iss & ESR_ELx_SAS) >> ESR_ELx_SAS_SHIFT
        sse = bool(iss & ESR_ELx_SSE)
        srt = (iss & ESR_ELx_SRT_MASK) >> ESR_ELx_SRT_SHIFT
        sf = bool(iss & ESR_ELx_SF)
        ar = bool(iss & ESR_ELx_AR)
    else:
        isv = False
        sas = sse = srt = sf = ar = None
    return EsrInfo(
        esr, ec, name, il, iss, iss2, True, ec == ESR_ELx_EC_DABT_LOW, True,
        isv, sas, sse, srt, sf, ar, bool(iss & ESR_ELx_VNCR), set_, fnv, ea,
        bool(iss & ESR_ELx_CM), s1ptw, bool(iss & ESR_ELx_WNR),
        fsc, f.name, f.fault_kind, f.level,
        bool(iss2 & ESR_ELx_TnD), bool(iss2 & ESR_ELx_TagAccess), bool(iss2 & ESR_ELx_GCS),
        bool(iss2 & ESR_ELx_AssuredOnly), bool(iss2 & ESR_ELx_Overlay),
        bool(iss2 & ESR_ELx_DirtyBit), iss2 & ESR_ELx_Xs_MASK, bool(iss2 & ESR_ELx_HDBSSF),
    )


def decode_esr(esr: int) -> EsrInfo:
    """Decode any 64-bit ESR_ELx value (ESR_EL2 from a guest exit, or ESR_EL1 from a host oops).

    Every exception class decodes (unallocated ones are named ``"UNALLOCATED"``); every fault
    status code decodes (unlisted ones as ``"reserved"``). Raises :class:`DecodeError` naming the
    value for a value outside ``[0, 2**64)`` or with RES0 bits [63:56] set, and ``TypeError`` for
    a non-int. Results are cached (the returned object is immutable and shared).

    >>> decode_esr(0x93810046).fault_kind
    'translation'
    """
    if esr.__class__ is not int:
        esr = _as_int("esr", esr)
    return _decode(esr)


def check_guest_abort(info: EsrInfo) -> None:
    """Raise :class:`DecodeError` unless ``info`` is an abort from a lower EL (EC 0x20 or 0x24).

    Mirrors the dispatch of ``arm_exit_handlers[]``: only ESR_ELx_EC_IABT_LOW and
    ESR_ELx_EC_DABT_LOW reach ``kvm_handle_guest_abort()``.
    """
    if info.guest_fault:
        return
    if info.is_abort:
        raise DecodeError(
            f"esr={info.esr:#x}: EC {info.ec:#x} ({info.ec_name}) is an abort taken from the "
            f"current EL (host), not a guest fault"
        )
    raise DecodeError(f"esr={info.esr:#x}: EC {info.ec:#x} ({info.ec_name}) is not an abort")


def decode_guest_abort(esr: int) -> EsrInfo:
    """Lean entry point for the fault pipeline: :func:`decode_esr` + :func:`check_guest_abort`."""
    info = decode_esr(esr)
    if not info.guest_fault:
        check_guest_abort(info)
    return info


# --------------------------------------------------------------------------------------------
# KVM predicates (arch/arm64/include/asm/kvm_emulate.h, esr.h)
# --------------------------------------------------------------------------------------------


def is_translation_fault(info: EsrInfo) -> bool:
    """Mirrors ``esr_fsc_is_translation_fault()``: translation fault, levels -1..3.

    Level -2 (0x2A) is a translation fault to the architecture but KVM's predicate omits it.
    """
    return info.fault_kind == "translation" and info.fault_level >= -1  # type: ignore[operator]


def is_permission_fault(info: EsrInfo) -> bool:
    """Mirrors ``esr_fsc_is_permission_fault()`` / ``kvm_vcpu_trap_is_permission_fault()``."""
    return info.fault_kind == "permission"


def is_access_flag_fault(info: EsrInfo) -> bool:
    """Mirrors ``esr_fsc_is_access_flag_fault()``: access flag fault, levels 0..3."""
    return info.fault_kind == "access_flag"


def is_address_size_fault(info: EsrInfo) -> bool:
    """Mirrors ``esr_fsc_is_addr_sz_fault()``: address size fault, levels -1..3.

    Uses 0x29 for level -1 as the Arm ARM does; 6.15-6.18 kernels tested 0x25 instead
    (the ``ESR_ELx_FSC_ADDRSZ_nL()`` bug, fixed later).
    """
    return info.fault_kind == "address_size" and info.fault_level >= -1  # type: ignore[operator]


_SEA_KINDS = frozenset(
    ("sync_external_abort", "sync_external_abort_ttw", "sync_parity_ecc", "sync_parity_ecc_ttw")
)


def is_sea(info: EsrInfo) -> bool:
    """Mirrors ``kvm_vcpu_abt_issea()``: FSC 0x10, 0x13-0x17, 0x18, 0x1B-0x1F."""
    return info.fault_kind in _SEA_KINDS


def is_exec_fault(info: EsrInfo) -> bool:
    """Mirrors ``kvm_vcpu_trap_is_exec_fault()``: an IABT_LOW that is not on a stage-1 walk."""
    return info.ec == ESR_ELx_EC_IABT_LOW and not info.s1ptw


def is_write_fault(info: EsrInfo) -> bool:
    """Mirrors ``kvm_is_write_fault()`` (kvm_emulate.h, 6.15-6.18 form).

    * S1PTW: a write only if it is a permission fault (the walker's AF/DBM update), so that
      guest page tables in a read-only memslot do not fault forever;
    * instruction abort: never a write;
    * otherwise WnR (``kvm_vcpu_dabt_iswrite()`` = ``ESR & ESR_ELx_WNR``).

    Cache maintenance (CM=1) reports WnR=1 and KVM does *not* filter it out: a DC to a
    read-only memslot is a write fault (verified in the 6.x kvm_emulate.h: iswrite is a bare
    WnR test; only the host's arch/arm64/mm/fault.c ``is_write_abort()`` excludes CM). KVM then
    skips a CM abort only when there is no memslot at all.
    """
    if info.s1ptw:
        return info.fault_kind == "permission"
    if not info.is_data_abort:
        return False
    return bool(info.wnr)


# --------------------------------------------------------------------------------------------
# HPFAR_EL2, FAR_EL2 and the IPA
# --------------------------------------------------------------------------------------------


def hpfar_to_ipa(hpfar: int) -> int:
    """Page-aligned IPA from a raw HPFAR_EL2: FIPA [47:4] gives IPA bits [55:12].

    Mirrors ``kvm_vcpu_get_fault_ipa()`` (``FIELD_GET(HPFAR_EL2_FIPA, hpfar) << 12``). Bit 63
    (NS) is not address: KVM's hyp code sets it as its own "HPFAR valid" flag, so it is accepted
    and ignored here. Raises :class:`DecodeError` for a value outside ``[0, 2**64)`` or with RES0
    bits [62:48] or [3:0] set: no CPU (and no KVM) produces those, so they mean a wrong register.
    """
    if hpfar.__class__ is not int:
        hpfar = _as_int("hpfar", hpfar)
    _check_u64("hpfar", hpfar)
    if hpfar & HPFAR_EL2_RES0_MASK:
        raise DecodeError(
            f"hpfar={hpfar:#x}: RES0 bits set ({hpfar & HPFAR_EL2_RES0_MASK:#x}); "
            f"only NS [63] and FIPA [47:4] may be set"
        )
    return (hpfar & HPFAR_EL2_FIPA_MASK) << (12 - HPFAR_EL2_FIPA_SHIFT)


def fault_ipa(hpfar: int, far: int) -> int:
    """Full faulting IPA: ``hpfar_to_ipa(hpfar) | (far & 0xfff)``.

    Mirrors ``kvm_handle_guest_abort()``: "The IPA is reported as [MAX:12], so we need to
    complement it with the bottom 12 bits from the faulting VA. This is always 12 bits,
    irrespective of the page size" (FAR_TO_FIPA_OFFSET).
    """
    if far.__class__ is not int:
        far = _as_int("far", far)
    _check_u64("far", far)
    return hpfar_to_ipa(hpfar) | (far & FAR_TO_FIPA_OFFSET_MASK)


def gpa_to_gfn(gpa: int, page_shift: int = 12) -> int:
    """``gpa >> PAGE_SHIFT`` for a 4K (12), 16K (14) or 64K (16) granule."""
    if page_shift not in (12, 14, 16):
        raise ValueError(f"page_shift={page_shift!r}: arm64 granules are 12, 14 or 16")
    if gpa < 0:
        raise ValueError(f"gpa={gpa:#x}: negative")
    return gpa >> page_shift


def hpfar_trusted(info: EsrInfo, *, erratum_834220: bool = False) -> bool:
    """Is HPFAR_EL2 valid for this abort? Mirrors ``__hpfar_valid()`` (hyp/include/hyp/fault.h).

    Per Arm ARM R_FKLWR, HPFAR is written for translation, access flag and address size faults,
    and for permission faults on a stage-1 walk (S1PTW). ``erratum_834220=True`` models CPUs
    that misreport stage-1 permission faults as stage-2 translation faults: KVM then distrusts
    HPFAR for translation faults too.

    When this is False, ``__get_fault_info()`` does not read HPFAR: if
    :func:`fault_safe_to_translate` it re-walks stage 1 with ``AT S1E1R`` (``AT S1E1A`` when
    the CPU has POE) on FAR_EL2 and converts PAR_EL1 to HPFAR format (``PAR_TO_HPFAR``); if
    that walk fails it returns to the guest to retry. If not safe to translate, the exit goes
    on with no valid HPFAR (KVM's NS "valid" bit clear).
    """
    if erratum_834220 and is_translation_fault(info):
        return False
    if is_translation_fault(info) or is_access_flag_fault(info):
        return True
    if info.s1ptw and is_permission_fault(info):
        return True
    return is_address_size_fault(info)


def fault_safe_to_translate(info: EsrInfo) -> bool:
    """Mirrors ``__fault_safe_to_translate()``: may KVM run ``AT`` on FAR for this abort?

    Not for an SEA or parity/ECC error on a table walk, nor an SEA with FnV=1 (FAR unknown).
    """
    if info.fault_kind in ("sync_external_abort_ttw", "sync_parity_ecc_ttw"):
        return False
    return not (info.fsc == _FSC_EXTABT and info.fnv)


# --------------------------------------------------------------------------------------------
# Sanitised syndromes for userspace exits
# --------------------------------------------------------------------------------------------

#: ESR bits kvmcore keeps in a memory-fault exit for a data abort. Kept:
#:  * EC, IL: which abort it is (lower-EL data/instruction abort, 32-bit instruction);
#:  * WnR, CM, S1PTW, FSC: what the access was and why it failed (as the NISV exit keeps
#:    CM|WnR|FSC, plus S1PTW because a walk access is not the instruction's own access);
#:  * FnV: says whether the reported address can be trusted;
#:  * ISS2 TnD, TagAccess, GCS, AssuredOnly, Overlay, DirtyBit: the arch-specific reasons a
#:    permission check failed (FEAT_MTE_PERM NoTagAccess, FEAT_THE AssuredOnly/MostlyReadOnly,
#:    POE overlays, indirect-permission dirty state) or the kind of access (tag, GCS) that a
#:    read/write/exec triple cannot express: Oliver Upton's point in the Userfault v3 review.
#: Cleared:
#:  * ISV, SAS, SSE, SRT, SF, AR and ISS2 Xs: the guest instruction's syndrome (register
#:    numbers, sizes). It belongs to MMIO emulation (KVM_EXIT_MMIO), and the kernel's NISV
#:    sanitiser drops it too;
#:  * VNCR: KVM-internal (nested virt's VNCR page); SET and EA: RAS/IMPDEF error detail for
#:    external aborts, which never become memory-fault exits;
#:  * ISS2 HDBSSF: the state of the host's hardware dirty-bit tracking buffer (host state).
SANITISED_ESR_KEEP_DABT = (
    ESR_ELx_EC_MASK | ESR_ELx_IL | ESR_ELx_WNR | ESR_ELx_CM | ESR_ELx_S1PTW | ESR_ELx_FnV
    | ESR_ELx_FSC
    | (ESR_ELx_TnD | ESR_ELx_TagAccess | ESR_ELx_GCS | ESR_ELx_AssuredOnly | ESR_ELx_Overlay
       | ESR_ELx_DirtyBit) << ESR_ELx_ISS2_SHIFT
)
#: For an instruction abort WnR, CM and every ISS2 bit are RES0: keep EC, IL, S1PTW, FnV, FSC.
SANITISED_ESR_KEEP_IABT = ESR_ELx_EC_MASK | ESR_ELx_IL | ESR_ELx_S1PTW | ESR_ELx_FnV | ESR_ELx_FSC


def sanitised_esr(esr: int) -> int:
    """The ESR value kvmcore puts in a memory-fault exit (see :data:`SANITISED_ESR_KEEP_DABT`).

    Raises :class:`DecodeError` if ``esr`` is malformed or not an abort (other classes' ISS
    bits mean something else entirely).
    """
    info = decode_esr(esr)
    if not info.is_abort:
        check_guest_abort(info)  # raises "... is not an abort"
    keep = SANITISED_ESR_KEEP_DABT if info.is_data_abort else SANITISED_ESR_KEEP_IABT
    return info.esr & keep


def nisv_sanitised_iss(esr: int) -> int:
    """Mirrors ``kvm_vcpu_dabt_iss_nisv_sanitized()``: ``ESR & (CM | WnR | FSC)``.

    This is ``run->arm_nisv.esr_iss`` of KVM_EXIT_ARM_NISV. Like the kernel it does not look
    at the EC (KVM only calls it for a DABT_LOW with ISV=0); it only checks the value is a
    well-formed 64-bit ESR.
    """
    if esr.__class__ is not int:
        esr = _as_int("esr", esr)
    _check_u64("esr", esr)
    return esr & (ESR_ELx_CM | ESR_ELx_WNR | ESR_ELx_FSC)


__all__ = [
    "EC_MEANINGS",
    "EC_NAMES",
    "ESR_INFO_KEYS",
    "FAULT_KINDS",
    "FSC_TABLE",
    "PAGE_SHIFTS",
    "SANITISED_ESR_KEEP_DABT",
    "SANITISED_ESR_KEEP_IABT",
    "UNALLOCATED",
    "EsrInfo",
    "FscInfo",
    "check_guest_abort",
    "decode_esr",
    "decode_guest_abort",
    "ec_meaning",
    "ec_name",
    "fault_ipa",
    "fault_safe_to_translate",
    "fsc_info",
    "gpa_to_gfn",
    "hpfar_to_ipa",
    "hpfar_trusted",
    "is_access_flag_fault",
    "is_address_size_fault",
    "is_exec_fault",
    "is_permission_fault",
    "is_sea",
    "is_translation_fault",
    "is_write_fault",
    "nisv_sanitised_iss",
    "sanitised_esr",
]
