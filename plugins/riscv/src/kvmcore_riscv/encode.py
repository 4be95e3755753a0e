"""Build the trap CSRs real hardware reports for a guest-page fault (the inverse of
:func:`kvmcore_riscv.trap.decode_guest_page_fault`), for tests and scenario files.

How kvmcore's generic accesses map onto RISC-V causes: the cause says only which kind of access
faulted (fetch 20, load 21, store/AMO 23), never why. A G-stage PTE that is missing, lacks R/W/X,
lacks U, or (with Svade) has A/D clear all give the same cause; there is no read-only, no-exec
or access-flag cause as on arm64/x86. So ``"read"`` -> load guest-page fault, ``"write"`` ->
store/AMO guest-page fault (also for a write to a read-only page), ``"exec"`` -> instruction
guest-page fault.
"""

from __future__ import annotations

from .htinst import (
    HTINST_BIT_32BIT,
    OPS_BY_MNEMONIC,
    SH_RD,
    SH_RS2,
)
from .trap import (
    EXC_INST_GUEST_PAGE_FAULT,
    EXC_LOAD_GUEST_PAGE_FAULT,
    EXC_STORE_GUEST_PAGE_FAULT,
    GPA_BITS,
)

_U64_MAX = (1 << 64) - 1
_PAGE_MASK = 0xFFF

# (size, signed) -> load mnemonic; size -> store mnemonic. Encodings come from htinst's table.
_LOADS = {
    (1, True): "lb",
    (1, False): "lbu",
    (2, True): "lh",
    (2, False): "lhu",
    (4, True): "lw",
    (4, False): "lwu",
    (8, True): "ld",
}
_STORES = {1: "sb", 2: "sh", 4: "sw", 8: "sd"}
#: Base C extension (RV64) has compressed forms only for these (c.lw/c.lwsp, c.ld/c.ldsp, c.sw/c.swsp,
#: c.sd/c.sdsp). Zcb's c.lbu/c.lh/c.lhu/c.sb/c.sh are not generated here.
_COMPRESSIBLE_SIZES = (4, 8)


def transformed_htinst(
    mnemonic: str, reg: int, *, compressed: bool = False, addr_offset: int = 0
) -> int:
    """The transformed htinst of a basic load (``reg`` = rd) or store (``reg`` = rs2): the
    instruction with its immediate zeroed, rs1 replaced by the Addr. Offset, and bit 1 cleared
    if the original was compressed."""
    op = OPS_BY_MNEMONIC.get(mnemonic)
    if op is None or (op.has_rd and op.has_rs2):
        raise ValueError(
            f"mnemonic={mnemonic!r}: not a one-register load/store with a transformation"
        )
    if type(reg) is not int or not 0 <= reg <= 31:
        raise ValueError(f"reg={reg!r}: not an x register number (0..31)")
    if not 0 <= addr_offset <= 31:
        raise ValueError(f"addr_offset={addr_offset!r}: does not fit the 5-bit Addr. Offset field")
    value = op.key | addr_offset << 15 | reg << (SH_RD if op.has_rd else SH_RS2)
    if compressed:
        if not op.compressible:
            raise ValueError(f"{mnemonic}: has no compressed form on RV64")
        value &= ~HTINST_BIT_32BIT
    return value


def encode_guest_page_fault(
    gpa: int,
    access: str,
    *,
    size: int = 4,
    gva: int | None = None,
    reg: int = 10,
    compressed: bool = False,
    htinst: bool = True,
    signed: bool = True,
) -> dict[str, int]:
    """Trap CSRs for a guest ``access`` ("read", "write" or "exec") faulting on ``gpa``.

    Returns ``{"scause", "htval", "stval", "htinst"}`` (plus ``"sepc"`` for "exec", where the
    faulting fetch address is the instruction's). ``gva`` (the VS-stage virtual address, stval)
    defaults to ``gpa`` (identity VS-stage / vsatp Bare); it must share the page offset with gpa.
    For "read"/"write", ``htinst=True`` reports the transformed LB/LBU/LH/LHU/LW/LWU/LD or
    SB/SH/SW/SD with rd/rs2 = ``reg`` (``signed=False`` picks the zero-extending load;
    ``compressed=True`` a C.LW/C.LD/C.SW/C.SD-style form, bit 1 = 0); ``htinst=False`` reports 0.
    "exec" always reports htinst 0 (the spec forbids a transformed value there) and ignores
    size/reg/compressed/signed.

    Raises ValueError naming the impossible argument or combination.
    """
    if type(gpa) is not int or not 0 <= gpa < 1 << GPA_BITS:
        raise ValueError(
            f"gpa={gpa!r}: not a guest physical address (0 <= gpa < 2**{GPA_BITS}, Sv57x4)"
        )
    if gva is None:
        gva = gpa
    elif type(gva) is not int or not 0 <= gva <= _U64_MAX:
        raise ValueError(f"gva={gva!r}: not a 64-bit virtual address")
    if gva & _PAGE_MASK != gpa & _PAGE_MASK:
        raise ValueError(
            f"gva=0x{gva:x}, gpa=0x{gpa:x}: a translation keeps the page offset, so the low 12 "
            "bits must match"
        )
    htval = gpa >> 2
    if access == "exec":
        return {
            "scause": EXC_INST_GUEST_PAGE_FAULT,
            "htval": htval,
            "stval": gva,
            "htinst": 0,
            "sepc": gva,
        }
    if access not in ("read", "write"):
        raise ValueError(f"access={access!r}: expected 'read', 'write' or 'exec'")
    write = access == "write"
    if size not in (1, 2, 4, 8):
        raise ValueError(f"size={size!r}: RV64 integer loads/stores access 1, 2, 4 or 8 bytes")
    if type(reg) is not int or not 0 <= reg <= 31:
        raise ValueError(f"reg={reg!r}: not an x register number (0..31)")
    if write:
        mnemonic = _STORES[size]
    else:
        mnemonic = _LOADS.get((size, signed))  # type: ignore[assignment]
        if mnemonic is None:
            raise ValueError(
                f"size={size}, signed=False: RV64 has no zero-extending 8-byte load (LDU)"
            )
    if compressed:
        if size not in _COMPRESSIBLE_SIZES:
            raise ValueError(
                f"compressed=True, size={size}: the C extension has no {size}-byte {access} form"
            )
        if not write and not signed and size == 4:
            raise ValueError("compressed=True, signed=False: there is no C.LWU")
        if not write and reg == 0:
            raise ValueError(
                "compressed=True, reg=0: C.LW/C.LD need rd' in x8..x15, C.LWSP/C.LDSP reserve rd=x0"
            )
    value = transformed_htinst(mnemonic, reg, compressed=compressed) if htinst else 0
    scause = EXC_STORE_GUEST_PAGE_FAULT if write else EXC_LOAD_GUEST_PAGE_FAULT
    return {"scause": scause, "htval": htval, "stval": gva, "htinst": value}


__all__ = ["encode_guest_page_fault", "transformed_htinst"]
