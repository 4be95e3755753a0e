"""Decoding of the RISC-V ``htinst`` CSR and of the instructions KVM emulates for MMIO.

Two sources of truth, kept apart on purpose:

* :func:`decode_htinst` follows the privileged spec (H extension, "Transformed Instruction or
  Pseudoinstruction for mtinst or htinst"): it classifies a value as ``zero``, ``transformed``,
  ``pseudo``, ``custom`` or ``invalid`` and fully verifies a transformed value, as the spec asks
  software to (e.g. bits 63:32 must be zero).
* :func:`mmio_access` mirrors ``kvm_riscv_vcpu_mmio_load()`` / ``kvm_riscv_vcpu_mmio_store()``
  (``arch/riscv/kvm/vcpu_insn.c``) bug for bug: it looks only at bit 0 of ``htinst``, falls back to
  the instruction KVM reads from guest memory at ``sepc``, and answers -EOPNOTSUPP / -EIO exactly
  where the kernel does.

Both read the same instruction table (:data:`_OPS`), and :mod:`kvmcore_riscv.encode` builds its
encodings from it too, so every opcode/funct3/width rule exists once.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from kvmcore import DecodeError

HtinstKind = Literal["zero", "transformed", "pseudo", "custom", "invalid"]

_U64_MAX = (1 << 64) - 1

# --- Instruction fields (names as in arch/riscv/kvm/vcpu_insn.c / asm/insn.h) -----------------
SH_RD = 7
SH_RS1 = 15
SH_RS2 = 20
SH_RS2C = 2
MASK_RX = 0x1F
INSN_16BIT_MASK = 0x3
#: opcode | funct3 (bits 14:12, 6:0): the kernel's INSN_MASK_LB ... INSN_MASK_SD.
INSN_MASK_FUNCT3_OPCODE = 0x707F
#: The transformed instruction's bit 1: 1 = the trapping instruction was 32-bit, 0 = compressed.
HTINST_BIT_32BIT = 1 << 1

# Major opcodes (bits 6:0, with bits 1:0 = 11).
OPC_LOAD = 0x03
OPC_LOAD_FP = 0x07
OPC_STORE = 0x23
OPC_STORE_FP = 0x27
OPC_AMO = 0x2F
OPC_SYSTEM = 0x73
#: custom-0/1/2/3: a bit-0-set htinst in this space is a "custom value" (spec), not a transformation.
OPC_CUSTOM = frozenset({0x0B, 0x2B, 0x5B, 0x7B})

# --- Special pseudoinstructions for implicit VS-stage page-table accesses ---------------------
# Values from the privileged spec's pseudoinstruction table (confirmed against the
# riscv-isa-manual hypervisor chapter; no Linux define exists).
HTINST_PSEUDO_RV32_READ = 0x00002000
HTINST_PSEUDO_RV32_WRITE = 0x00002020
HTINST_PSEUDO_RV64_READ = 0x00003000
HTINST_PSEUDO_RV64_WRITE = 0x00003020
#: value -> (is_write, PTE size in bytes). A write is a hardware A/D-bit update.
PSEUDO_INSTRUCTIONS: dict[int, tuple[bool, int]] = {
    HTINST_PSEUDO_RV32_READ: (False, 4),
    HTINST_PSEUDO_RV32_WRITE: (True, 4),
    HTINST_PSEUDO_RV64_READ: (False, 8),
    HTINST_PSEUDO_RV64_WRITE: (True, 8),
}


@dataclass(frozen=True, slots=True)
class MemOp:
    """One standard memory instruction that has a defined htinst transformation.

    ``key``/``mask``: ``(insn & mask) == key`` identifies it (bits 1:0 forced to 11).
    ``compressible``: a 16-bit form exists on RV64 (C, Zcd or Zcb), so a transformed value with
    bit 1 = 0 is possible. ``mmio``: ``kvm_riscv_vcpu_mmio_load/store`` emulate it (32-bit form).
    """

    mnemonic: str
    key: int
    mask: int
    size: int
    is_write: bool
    has_rd: bool
    has_rs2: bool
    sign_extend: bool | None
    fp: bool
    compressible: bool
    mmio: bool


def _build_ops() -> tuple[MemOp, ...]:
    ops: list[MemOp] = []
    m = INSN_MASK_FUNCT3_OPCODE
    # Integer loads: (mnemonic, funct3, size, sign-extended into the 64-bit rd, compressible).
    for mn, f3, size, sext, comp in (
        ("lb", 0, 1, True, False),
        ("lh", 1, 2, True, True),  # c.lh (Zcb)
        ("lw", 2, 4, True, True),  # c.lw, c.lwsp
        ("ld", 3, 8, False, True),  # c.ld, c.ldsp
        ("lbu", 4, 1, False, True),  # c.lbu (Zcb)
        ("lhu", 5, 2, False, True),  # c.lhu (Zcb)
        ("lwu", 6, 4, False, False),
    ):
        ops.append(
            MemOp(mn, f3 << 12 | OPC_LOAD, m, size, False, True, False, sext, False, comp, True)
        )
    for mn, f3, size, comp in (
        ("sb", 0, 1, True),
        ("sh", 1, 2, True),
        ("sw", 2, 4, True),
        ("sd", 3, 8, True),
    ):
        ops.append(
            MemOp(mn, f3 << 12 | OPC_STORE, m, size, True, False, True, None, False, comp, True)
        )
    # FP loads/stores (funct3 0, 5, 6, 7 of these opcodes are vector accesses: no transformation).
    for mn, f3, size, comp in (
        ("flh", 1, 2, False),
        ("flw", 2, 4, False),
        ("fld", 3, 8, True),
        ("flq", 4, 16, False),
    ):
        ops.append(
            MemOp(mn, f3 << 12 | OPC_LOAD_FP, m, size, False, True, False, None, True, comp, False)
        )
    for mn, f3, size, comp in (
        ("fsh", 1, 2, False),
        ("fsw", 2, 4, False),
        ("fsd", 3, 8, True),
        ("fsq", 4, 16, False),
    ):
        ops.append(
            MemOp(mn, f3 << 12 | OPC_STORE_FP, m, size, True, False, True, None, True, comp, False)
        )
    # A extension (Zalrsc/Zaamo), Zabha (.b/.h AMOs) and Zacas (amocas, amocas.q): funct5 in 31:27.
    # aq/rl (26:25) are kept by the transformation and ignored here. LR faults are loads, SC and
    # AMOs are store/AMO faults.
    widths = {"b": (0, 1), "h": (1, 2), "w": (2, 4), "d": (3, 8), "q": (4, 16)}
    amo_mask = 0xF800707F
    for name, funct5, suffixes in (
        ("lr", 0b00010, "wd"),
        ("sc", 0b00011, "wd"),
        ("amoswap", 0b00001, "bhwd"),
        ("amoadd", 0b00000, "bhwd"),
        ("amoxor", 0b00100, "bhwd"),
        ("amoand", 0b01100, "bhwd"),
        ("amoor", 0b01000, "bhwd"),
        ("amomin", 0b10000, "bhwd"),
        ("amomax", 0b10100, "bhwd"),
        ("amominu", 0b11000, "bhwd"),
        ("amomaxu", 0b11100, "bhwd"),
        ("amocas", 0b00101, "bhwdq"),
    ):
        for sfx in suffixes:
            f3, size = widths[sfx]
            key = funct5 << 27 | f3 << 12 | OPC_AMO
            if name == "lr":  # rs2 must be x0
                ops.append(
                    MemOp(
                        f"lr.{sfx}",
                        key,
                        amo_mask | MASK_RX << SH_RS2,
                        size,
                        False,
                        True,
                        False,
                        None,
                        False,
                        False,
                        False,
                    )
                )
            else:
                ops.append(
                    MemOp(
                        f"{name}.{sfx}",
                        key,
                        amo_mask,
                        size,
                        True,
                        True,
                        True,
                        None,
                        False,
                        False,
                        False,
                    )
                )
    # H extension virtual-machine loads/stores (funct3 100 of SYSTEM). HLV's variant lives in the
    # rs2 field; HSV has rd = x0.
    hlv_mask = 0xFFF0707F
    for mn, funct7, rs2, size, sext in (
        ("hlv.b", 0b0110000, 0b00000, 1, True),
        ("hlv.bu", 0b0110000, 0b00001, 1, False),
        ("hlv.h", 0b0110010, 0b00000, 2, True),
        ("hlv.hu", 0b0110010, 0b00001, 2, False),
        ("hlvx.hu", 0b0110010, 0b00011, 2, False),
        ("hlv.w", 0b0110100, 0b00000, 4, True),
        ("hlv.wu", 0b0110100, 0b00001, 4, False),
        ("hlvx.wu", 0b0110100, 0b00011, 4, False),
        ("hlv.d", 0b0110110, 0b00000, 8, False),
    ):
        key = funct7 << 25 | rs2 << SH_RS2 | 0b100 << 12 | OPC_SYSTEM
        ops.append(MemOp(mn, key, hlv_mask, size, False, True, False, sext, False, False, False))
    hsv_mask = 0xFE007FFF
    for mn, funct7, size in (
        ("hsv.b", 0b0110001, 1),
        ("hsv.h", 0b0110011, 2),
        ("hsv.w", 0b0110101, 4),
        ("hsv.d", 0b0110111, 8),
    ):
        key = funct7 << 25 | 0b100 << 12 | OPC_SYSTEM
        ops.append(MemOp(mn, key, hsv_mask, size, True, False, True, None, False, False, False))
    return tuple(ops)


#: Every standard memory instruction with a defined transformation.
_OPS: tuple[MemOp, ...] = _build_ops()
#: mnemonic -> MemOp (used by the encoder).
OPS_BY_MNEMONIC: dict[str, MemOp] = {op.mnemonic: op for op in _OPS}
#: The distinct masks, each with its key -> MemOp table; tried in order (they never overlap).
_LOOKUP: tuple[tuple[int, dict[int, MemOp]], ...] = tuple(
    (mask, {op.key: op for op in _OPS if op.mask == mask})
    for mask in dict.fromkeys(op.mask for op in _OPS)
)


#: The 32-bit integer loads/stores KVM's MMIO path decodes, by (insn & 0x707f).
OPS_BY_KEY_32: dict[int, MemOp] = {op.key: op for op in _OPS if op.mmio}


def match_mem_op(insn: int) -> MemOp | None:
    """The standard memory instruction a 32-bit encoding (bits 1:0 = 11) is, or None."""
    for mask, table in _LOOKUP:
        op = table.get(insn & mask)
        if op is not None:
            return op
    return None


def _field(insn: int, shift: int) -> int:
    return (insn >> shift) & MASK_RX


@dataclass(frozen=True, slots=True)
class HtinstInfo:
    """What an ``htinst`` value says about the trapping access.

    ``kind``: ``zero`` (no information), ``transformed`` (a standard load/store/AMO/HLV/HSV),
    ``pseudo`` (implicit VS-stage page-table access), ``custom`` (bit 0 set, custom opcode space:
    meaning not specified by the standard) or ``invalid`` (any other value; the spec says software
    may treat it as zero). Fields that the kind does not carry are None.
    """

    htinst: int
    kind: HtinstKind
    mnemonic: str | None = None
    #: True for stores, SC, AMOs, HSV and the write pseudoinstruction (A/D update).
    is_write: bool | None = None
    #: Bytes accessed (for a pseudoinstruction: the PTE size, 4 or 8).
    access_size: int | None = None
    #: 4 if the trapping instruction was 32-bit (htinst bit 1 = 1), 2 if compressed.
    insn_length: int | None = None
    rd: int | None = None
    rs2: int | None = None
    #: Integer loads only: True if the loaded value is sign-extended to 64 bits (LB/LH/LW, HLV.B/H/W).
    sign_extend: bool | None = None
    #: The "Addr. Offset" field (bits 19:15, where rs1 was): faulting VA minus the original VA,
    #: nonzero only for a misaligned access that faulted on a later part.
    addr_offset: int | None = None
    #: rd/rs2 name an f register (FLW/FSD...).
    fp: bool = False


def decode_htinst(htinst: int) -> HtinstInfo:
    """Classify and decode an ``htinst`` value as the privileged spec defines it (RV64).

    Raises :class:`DecodeError` only for a value that is not a 64-bit register value.
    Anything else decodes; unrecognised values come back with kind ``invalid``.
    """
    if type(htinst) is not int or not 0 <= htinst <= _U64_MAX:
        raise DecodeError(f"htinst={htinst!r}: not a 64-bit register value (0 <= htinst < 2**64)")
    return _decode_htinst(htinst)


@lru_cache(maxsize=4096)
def _decode_htinst(htinst: int) -> HtinstInfo:
    if htinst == 0:
        return HtinstInfo(0, "zero")
    pseudo = PSEUDO_INSTRUCTIONS.get(htinst)
    if pseudo is not None:
        return HtinstInfo(htinst, "pseudo", is_write=pseudo[0], access_size=pseudo[1])
    # Bit 0 clear and not a pseudoinstruction; or bits 63:32 set (the spec: software must check
    # they are zero before trusting the low 32 bits).
    if not htinst & 1 or htinst >> 32:
        return HtinstInfo(htinst, "invalid")
    insn = htinst | INSN_16BIT_MASK
    compressed = not htinst & HTINST_BIT_32BIT
    op = match_mem_op(insn)
    if op is None:
        if insn & 0x7F in OPC_CUSTOM:
            return HtinstInfo(htinst, "custom", insn_length=2 if compressed else 4)
        return HtinstInfo(htinst, "invalid")
    if compressed and not op.compressible:
        return HtinstInfo(htinst, "invalid")
    return HtinstInfo(
        htinst,
        "transformed",
        mnemonic=op.mnemonic,
        is_write=op.is_write,
        access_size=op.size,
        insn_length=2 if compressed else 4,
        rd=_field(insn, SH_RD) if op.has_rd else None,
        rs2=_field(insn, SH_RS2) if op.has_rs2 else None,
        sign_extend=op.sign_extend,
        addr_offset=_field(insn, SH_RS1),
        fp=op.fp,
    )


# --- MMIO emulation: kvm_riscv_vcpu_mmio_load() / kvm_riscv_vcpu_mmio_store() -----------------


class MmioEmulationError(DecodeError):
    """KVM cannot emulate this MMIO access; ``.errno`` is what the kernel function returns
    (negated): ``EOPNOTSUPP`` for an instruction it does not decode, ``EIO`` for a GPA not aligned
    to the access length. KVM_RUN then fails with that errno."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


@dataclass(frozen=True, slots=True)
class MmioAccess:
    """The decode KVM saves in ``vcpu->arch.mmio_decode`` plus ``run->mmio.is_write``/``len``.

    ``reg``: the destination (loads) or source (stores) x register, already mapped for the
    compressed forms (rd'/rs2' + 8). ``shift``: the kernel's sign-extension shift, 0 for
    zero-extended loads, LD and all stores.
    """

    is_write: bool
    len: int
    reg: int
    sign_extend: bool
    insn_len: int
    shift: int
    mnemonic: str


# Compressed forms the kernel decodes (RV64): key = insn & 0xe003 -> (mnemonic, len, is_write,
# register field). The register field is "rs2s" (bits 4:2, + 8), "rd" (11:7) or "rs2c" (6:2).
INSN_MASK_C = 0xE003
_C_FORMS: dict[int, tuple[str, int, bool, str]] = {
    0x6000: ("c.ld", 8, False, "rs2s"),  # INSN_MATCH_C_LD
    0x6002: ("c.ldsp", 8, False, "rd"),  # INSN_MATCH_C_LDSP, needs rd != 0
    0x4000: ("c.lw", 4, False, "rs2s"),  # INSN_MATCH_C_LW
    0x4002: ("c.lwsp", 4, False, "rd"),  # INSN_MATCH_C_LWSP, needs rd != 0
    0xE000: ("c.sd", 8, True, "rs2s"),  # INSN_MATCH_C_SD
    0xE002: ("c.sdsp", 8, True, "rs2c"),  # INSN_MATCH_C_SDSP, kernel also needs bits 11:7 != 0
    0xC000: ("c.sw", 4, True, "rs2s"),  # INSN_MATCH_C_SW
    0xC002: ("c.swsp", 4, True, "rs2c"),  # INSN_MATCH_C_SWSP, kernel also needs bits 11:7 != 0
}


def _mmio_direction(is_write: bool | None) -> str:
    if is_write is None:
        return "kvm_riscv_vcpu_mmio_load/store"
    return "kvm_riscv_vcpu_mmio_store" if is_write else "kvm_riscv_vcpu_mmio_load"


def mmio_access(
    htinst: int,
    insn: int | None = None,
    *,
    is_write: bool | None = None,
    fault_addr: int | None = None,
) -> MmioAccess:
    """Decode the access KVM emulates for an MMIO guest-page fault.

    Mirrors ``kvm_riscv_vcpu_mmio_load()`` (``is_write=False``, a load guest-page fault) and
    ``kvm_riscv_vcpu_mmio_store()`` (``is_write=True``); with ``is_write=None`` the instruction
    picks the direction. Like the kernel:

    * ``htinst`` bit 0 = 1: the instruction is ``htinst | 0x3`` and its length is 4 if bit 1 is
      set, else 2. Nothing else of ``htinst`` is verified (the kernel ignores bits 63:32).
    * bit 0 = 0 (zero, a pseudoinstruction or junk): the kernel reads the instruction from guest
      memory at ``sepc``; pass it as ``insn`` (a 16-bit instruction in the low half).
    * Decodes LB/LBU/LH/LHU/LW/LWU/LD, SB/SH/SW/SD and C.LD/C.LDSP/C.LW/C.LWSP/C.SD/C.SDSP/C.SW/
      C.SWSP. Anything else (FP, AMO, Zcb...) raises :class:`MmioEmulationError` with EOPNOTSUPP.
      Kernel quirk kept: C.SWSP/C.SDSP are refused when bits 11:7 (part of their offset) are 0,
      because the kernel applies C.LWSP's "rd != 0" test to them.
    * ``fault_addr`` (the GPA), if given, must be aligned to the length, else EIO.
    """
    if type(htinst) is not int or not 0 <= htinst <= _U64_MAX:
        raise DecodeError(f"htinst={htinst!r}: not a 64-bit register value (0 <= htinst < 2**64)")
    if htinst & 1:
        insn = htinst | INSN_16BIT_MASK
        insn_len = 4 if htinst & HTINST_BIT_32BIT else 2
    else:
        if insn is None:
            raise DecodeError(
                f"htinst=0x{htinst:x}: carries no transformed instruction; {_mmio_direction(is_write)} reads the "
                "instruction from guest memory at sepc: pass it as insn"
            )
        if type(insn) is not int or not 0 <= insn <= 0xFFFFFFFF:
            raise DecodeError(f"insn={insn!r}: not a 16- or 32-bit instruction encoding")
        if insn & INSN_16BIT_MASK != INSN_16BIT_MASK:
            insn &= 0xFFFF
            insn_len = 2
        else:
            insn_len = 4

    found: MmioAccess | None = None
    if insn & INSN_16BIT_MASK == INSN_16BIT_MASK:
        op = OPS_BY_KEY_32.get(insn & INSN_MASK_FUNCT3_OPCODE)
        if op is not None:
            reg = _field(insn, SH_RS2) if op.is_write else _field(insn, SH_RD)
            shift = 8 * (8 - op.size) if op.sign_extend else 0
            found = MmioAccess(op.is_write, op.size, reg, bool(shift), insn_len, shift, op.mnemonic)
    else:
        form = _C_FORMS.get(insn & INSN_MASK_C)
        # The kernel's extra test for the SP-relative forms: (insn >> SH_RD) & 0x1f must be nonzero.
        if form is not None and (form[3] == "rs2s" or _field(insn, SH_RD)):
            mnemonic, length, write, regfield = form
            if regfield == "rs2s":
                reg = 8 + ((insn >> SH_RS2C) & 0x7)
            elif regfield == "rd":
                reg = _field(insn, SH_RD)
            else:
                reg = _field(insn, SH_RS2C)
            shift = 8 * (8 - length) if not write else 0
            found = MmioAccess(write, length, reg, bool(shift), insn_len, shift, mnemonic)

    if found is None or (is_write is not None and found.is_write != is_write):
        # what the kernel decoded (the messages only: not built on the way to an exit)
        what = f"htinst=0x{htinst:x}" if htinst & 1 else f"insn=0x{insn:x}"
        func = _mmio_direction(is_write)
        raise MmioEmulationError(
            errno.EOPNOTSUPP,
            f"{what}: not an MMIO {'store' if is_write else 'load' if is_write is not None else 'load or store'} "
            f"KVM decodes; {func} returns -EOPNOTSUPP",
        )
    if fault_addr is not None and fault_addr & (found.len - 1):
        raise MmioEmulationError(
            errno.EIO,
            f"fault_addr=0x{fault_addr:x}: not aligned to the {found.len}-byte {found.mnemonic}; "
            f"{_mmio_direction(is_write)} returns -EIO",
        )
    return found


__all__ = [
    "HtinstInfo",
    "HtinstKind",
    "MemOp",
    "MmioAccess",
    "MmioEmulationError",
    "OPS_BY_MNEMONIC",
    "PSEUDO_INSTRUCTIONS",
    "decode_htinst",
    "match_mem_op",
    "mmio_access",
]
