"""``RiscvFault``: kvmcore's RISC-V fault type, and the raw-register checks around the decoder.
(``RiscvFault`` and the register names are defined in :mod:`kvmcore_riscv.fault_type`, which
loading the plugin imports without the decoders, and re-exported here.)

Upstream RISC-V KVM has no ``struct kvm_page_fault``: ``gstage_page_fault()``
(``arch/riscv/kvm/vcpu_exit.c``) works on ``struct kvm_cpu_trap`` and local variables.
:class:`RiscvFault` is what such a struct would hold on RISC-V: the five fields the common
``kvm_prepare_memory_fault_exit()`` asserts (``gfn``, ``exec``, ``write``, ``is_private``,
``slot``) plus the decoded trap. The bit-level decoding is :mod:`kvmcore_riscv.trap` and
:mod:`kvmcore_riscv.htinst`; this module only checks the raw mapping and wraps the result.

Raw keys (``vcpu.handle_fault(raw)``):

* ``scause``, ``htval``, ``stval``: required (the trap CSRs).
* ``htinst``: optional, default 0 ("no information", what hardware without htinst support
  writes).
* ``sepc``: optional; the guest PC, only reported (KVM reads the instruction there when htinst
  has bit 0 clear).
* ``private`` (0/1), ``data``, ``insn``: kvmcore's modelling inputs, not registers. ``private``
  marks a private access (upstream RISC-V has no private memory; CoVE is out of tree);
  ``data`` is the value a store writes (KVM reads it from rs2 for an MMIO exit); ``insn`` is
  the instruction at ``sepc`` (KVM reads it from guest memory when htinst bit 0 is clear).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kvmcore
from kvmcore import DecodeError

from .fault_type import MODEL_KEYS, REGISTERS, REQUIRED, RiscvFault
from .trap import (
    EXC_INST_GUEST_PAGE_FAULT,
    EXC_STORE_GUEST_PAGE_FAULT,
    GUEST_PAGE_FAULT_ACCESS,
    HTVAL_MAX,
    PAGE_SHIFT,
    decode_guest_page_fault,
    guest_page_fault_fields,
    scause_name,
    trap_syndrome,
)

_KEYS = frozenset(REGISTERS + MODEL_KEYS)
_REQUIRED_KEYS = frozenset(REQUIRED)
#: ``fault_kind`` by the trap's access.
FAULT_KINDS = {access: "guest_page_fault_" + access for access in ("fetch", "load", "store")}
_U64_MAX = (1 << 64) - 1




def check_raw(raw: Mapping[str, Any], required: tuple[str, ...] = REQUIRED) -> None:
    """Refuse unknown keys and missing required registers, naming them.

    The common case (known keys, the required registers present) costs one set comparison;
    otherwise :func:`kvmcore.check_raw_keys` names what is wrong.
    """
    keys = raw.keys()
    if keys <= _KEYS and keys >= (_REQUIRED_KEYS if required is REQUIRED else frozenset(required)):
        return
    kvmcore.check_raw_keys(
        raw, arch="RISC-V", registers=REGISTERS, extra_keys=MODEL_KEYS, required=required,
        needs="a RISC-V guest-page fault needs scause, htval and stval (htinst defaults to 0, sepc is optional)",
    )


def _optional_int(raw: Mapping[str, Any], name: str, limit: int, what: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= limit:
        raise DecodeError(f"{name}={value!r}: not {what}")
    return value


_private = kvmcore.raw_private
#: The raw keys of a plain trap (four CSRs, and the value an MMIO store writes), which
#: :func:`decode_riscv_fault` decodes in one go; any other input (sepc, insn, private, a bad
#: value) takes the step-by-step checks.
_PLAIN_KEYS = frozenset(("scause", "htval", "stval", "htinst", "data"))
#: Set in an int that is negative or 2**64 or more.
_NOT_U64 = ~_U64_MAX
#: Set in an htval that is negative or wider than 57 bits (:data:`~kvmcore_riscv.trap.HTVAL_MAX`).
_HTVAL_INVALID = ~HTVAL_MAX


def decode_riscv_fault(raw: Mapping[str, Any]) -> RiscvFault:
    """Decode one trap into a :class:`RiscvFault` (the ``decode_fault`` hook).

    The CSRs go through the checks of :func:`kvmcore_riscv.trap.decode_guest_page_fault`
    (:func:`~kvmcore_riscv.trap.guest_page_fault_fields`), which mirror the reading in
    ``gstage_page_fault()``; its ``DecodeError`` (wrong cause, bad value, htinst
    contradicting scause) propagates.

    A plain trap (only scause, htval, stval, htinst and data, each valid) passes those checks in one
    test and is decoded in one go; anything else is checked step by step. Both give the same
    fault (the property test in ``tests/test_riscv_fault_decode.py``).
    """
    get = raw.get
    scause, htval, stval, htinst = get("scause"), get("htval"), get("stval"), get("htinst", 0)
    data = get("data")
    if (
        raw.keys() <= _PLAIN_KEYS
        and scause.__class__ is int
        and htval.__class__ is int
        and stval.__class__ is int
        and htinst.__class__ is int
        and not (scause | stval | htinst) & _NOT_U64
        and not htval & _HTVAL_INVALID
        and scause in GUEST_PAGE_FAULT_ACCESS
        and (data is None or (data.__class__ is int and not data & _NOT_U64))
    ):
        # a plain trap (only the four CSRs, valid values): guest_page_fault_fields()'s checks
        # are the test above, in one go; its values follow
        name, access, kind, ilen, size, rd, rs2, sext, off = trap_syndrome(scause, htinst)
        kernel_gpa = (htval << 2) | (stval & 3)
        gpa = htval << 2 if kind == "pseudo" else kernel_gpa
        return RiscvFault(
            gpa >> PAGE_SHIFT, scause == EXC_INST_GUEST_PAGE_FAULT, scause == EXC_STORE_GUEST_PAGE_FAULT, False,
            scause, name, access, FAULT_KINDS[access], gpa, kernel_gpa, stval, htval, stval, htinst, kind, ilen,
            size, rd, rs2, sext, off, None, None, data,
        )
    return _decode_riscv_fault(raw)


def _decode_riscv_fault(raw: Mapping[str, Any]) -> RiscvFault:
    """:func:`decode_riscv_fault` step by step, for any input: the optional register sepc, the
    modelling inputs, and the errors (:func:`check_raw`, the CSRs in order, then the rest)."""
    check_raw(raw)
    get = raw.get
    scause, htval, stval, htinst = raw["scause"], raw["htval"], raw["stval"], get("htinst", 0)
    syndrome, gpa, kernel_gpa = guest_page_fault_fields(scause, htval, stval, htinst)
    name, access, kind, ilen, size, rd, rs2, sext, off = syndrome
    is_private = _private(raw)  # checked before the optional registers, as before
    # the optional registers checked only when given (_optional_int() passes None through)
    sepc, insn, data = get("sepc"), get("insn"), get("data")
    if sepc is not None:
        sepc = _optional_int(raw, "sepc", _U64_MAX, "a 64-bit register value")
    if insn is not None:
        insn = _optional_int(raw, "insn", 0xFFFFFFFF, "a 16- or 32-bit instruction encoding")
    if data is not None:
        data = _optional_int(raw, "data", _U64_MAX, "a 64-bit store value")
    # positional, in field order (keywords cost more for 24 fields); the same values as
    # decode_guest_page_fault()'s GuestPageFault (gfn, write, exec are its properties)
    return RiscvFault(
        gpa >> PAGE_SHIFT, scause == EXC_INST_GUEST_PAGE_FAULT, scause == EXC_STORE_GUEST_PAGE_FAULT, is_private,
        scause, name, access, FAULT_KINDS[access], gpa, kernel_gpa, stval, htval, stval, htinst, kind, ilen,
        size, rd, rs2, sext, off, sepc, insn, data,
    )


# --- describe_syndrome ------------------------------------------------------------------------

MEANINGS: dict[str, str] = {
    "scause": "supervisor cause register: the trap's exception code (bit 63 set for an interrupt)",
    "scause_name": "the asm/csr.h name of the cause",
    "interrupt": "scause bit 63: an interrupt, not an exception",
    "access": "the original access that faulted: fetch (20), load (21) or store/AMO (23)",
    "gpa": "faulting guest physical address: (htval << 2) | (stval & 3), PTE-aligned for an implicit access",
    "kernel_gpa": "what gstage_page_fault() computes, (htval << 2) | (stval & 3): KVM's MMIO address",
    "gva": "stval: the faulting guest virtual address (for an implicit access, the VA being translated)",
    "htinst_kind": "htinst: zero, transformed instruction, pseudoinstruction (implicit PTE access), custom or invalid",
    "insn_length": "length of the trapping instruction from htinst bit 1 (4, or 2 if compressed); None if htinst does not say",
    "access_size": "bytes accessed (the PTE size for a pseudoinstruction); None if htinst does not say",
    "rd": "destination register of the load, from the transformed htinst; None if htinst does not say",
    "rs2": "source register of the store, from the transformed htinst; None if htinst does not say",
    "sign_extend": "the load sign-extends into the 64-bit register (LB/LH/LW); None for stores or when unknown",
    "addr_offset": "htinst bits 19:15: faulting VA minus the access's VA (nonzero only for a misaligned access)",
    "gfn": "guest frame number: gpa >> 12",
    "write": "a store/AMO guest-page fault (the is_write gstage_page_fault() passes to kvm_riscv_mmu_map())",
    "exec": "an instruction guest-page fault",
    "page_walk": "htinst says: 1 an implicit access of the VS-stage walk (pseudoinstruction), 0 an explicit one, - not said",
    "is_private": "the raw key private (kvmcore's modelling input; upstream RISC-V has no private memory)",
}


def describe(raw: Mapping[str, Any]) -> kvmcore.Syndrome:
    """Every field of a trap for a person (the ``describe_syndrome`` hook).

    A cause that is not a guest-page fault (only ``scause`` is needed then), or a guest-page
    fault the decoder refuses, gives ``guest_fault=False`` with the decoder's message. Unknown
    keys, a missing scause, or a scause that is not a 64-bit value raise ``DecodeError``; a
    guest-page fault without htval or stval decodes what scause/htinst say and gives ``None``
    for the fields that need the missing register (gpa, gfn, gva).
    """
    check_raw(raw, ("scause",))
    scause = raw["scause"]
    if type(scause) is not int or not 0 <= scause <= _U64_MAX:
        raise DecodeError(f"scause={scause!r}: not a 64-bit register value (0 <= scause < 2**64)")
    try:
        # for another cause this raises, saying what the cause is
        trap = decode_guest_page_fault(
            scause, raw.get("htval", 0), raw.get("stval", 0), raw.get("htinst", 0)
        )
        is_private = _private(raw)
    except DecodeError as err:
        fields = {
            "scause": scause,
            "scause_name": scause_name(scause),
            "interrupt": bool(scause >> 63),
        }
        meanings = {k: MEANINGS[k] for k in fields}
        return kvmcore.Syndrome("riscv", fields, meanings, guest_fault=False, error=str(err))
    fields = trap.to_dict()
    fields.update(gfn=trap.gfn, write=trap.write, exec=trap.exec, is_private=is_private)
    fields["page_walk"] = {"pseudo": True, "transformed": False}.get(trap.htinst_kind)
    # A lone scause (or one without htval/stval) still names the access; what needs the
    # missing registers is unknown (None), not computed from a stand-in 0.
    unknown = (("gpa", "kernel_gpa", "gfn") if "htval" not in raw else ()) + (
        ("gva", "gpa", "kernel_gpa") if "stval" not in raw else ())
    for name in unknown:
        if name in fields:
            fields[name] = None
    meanings = {k: MEANINGS[k] for k in fields}
    return kvmcore.Syndrome("riscv", fields, meanings, guest_fault=True)


__all__ = ["REGISTERS", "RiscvFault", "check_raw", "decode_riscv_fault", "describe"]
