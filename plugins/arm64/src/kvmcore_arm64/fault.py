"""``Arm64Fault``: kvmcore's arm64 fault type, and ``decode_fault`` (raw registers -> fault).

Upstream arm64 KVM (6.15-6.18) has no ``struct kvm_page_fault``: ``kvm_handle_guest_abort()``
and ``user_mem_abort()`` read the syndrome through ``kvm_vcpu_get_esr()``,
``kvm_vcpu_get_fault_ipa()`` and ``kvm_vcpu_get_hfar()`` and keep the results in locals.
KVM Userfault v3 (patch 02) adds a small struct with the five asserted fields (``exec``,
``write``, ``is_private`` "never set on arm64", ``gfn``, ``slot``); Sean's Aug 2025 RFC grows it
with ``esr``, ``is_perm``, ``fault_ipa``, ``ipa``, ``hva``, ``pfn``. :class:`Arm64Fault` is
that struct with the decoded syndrome next to it (defined in :mod:`kvmcore_arm64.fault_type`,
which loading the plugin imports without the decoder, and re-exported here). The bit-level
work is :mod:`kvmcore_arm64.esr`; this module only checks the raw mapping and wraps the result.

Raw keys (``vcpu.handle_fault(raw)``):

* ``esr`` (ESR_EL2) and ``hpfar`` (HPFAR_EL2): required;
* ``far`` (FAR_EL2): optional; only its low 12 bits are used (the byte offset of an MMIO
  access, ``FAR_TO_FIPA_OFFSET``); without it the offset is 0;
* ``private`` (0/1): kvmcore's modelling input for a private access (upstream arm64 never
  sets ``is_private``; CCA realms are out of tree);
* ``data``: the value a store writes, for a ``KVM_EXIT_MMIO`` write (KVM reads it from the
  guest register SRT names).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import kvmcore
from kvmcore import DecodeError

from . import esr as E
from .esr import EsrInfo
from .fault_type import GRANULE_SHIFTS, MODEL_KEYS, REGISTERS, REQUIRED, Arm64Fault

_KEYS = frozenset(REGISTERS + MODEL_KEYS)
_REQUIRED_KEYS = frozenset(REQUIRED)
#: The keys whose values must be 64-bit register values.
_U64_KEYS = ("esr", "far", "hpfar", "data")
_U64_MAX = (1 << 64) - 1

#: Stage-2 block sizes user_mem_abort() may install, by PAGE_SHIFT (PUD/PMD level blocks that
#: ``get_vma_page_shift()`` and ``fault_supports_stage2_huge_mapping()`` allow), largest first.
BLOCK_SIZES = {12: (1 << 30, 1 << 21), 14: (1 << 25,), 16: (1 << 29,)}


def check_raw(raw: Mapping[str, Any]) -> None:
    """Refuse unknown keys, missing required registers and values that are not ints.

    The common case (known keys, both required registers) costs one set comparison; otherwise
    :func:`kvmcore.check_raw_keys` names what is wrong.
    """
    keys = raw.keys()
    if not (keys <= _KEYS and _REQUIRED_KEYS <= keys):
        kvmcore.check_raw_keys(
            raw, arch="arm64", registers=REGISTERS, extra_keys=MODEL_KEYS, required=REQUIRED,
            needs="an arm64 stage-2 abort needs esr (ESR_EL2) and hpfar (HPFAR_EL2); far (FAR_EL2) is optional",
        )
    for key in _U64_KEYS:
        value = raw.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= _U64_MAX):
            raise DecodeError(f"{key}={value!r}: not a 64-bit register value")


raw_private = kvmcore.raw_private

#: The :class:`Arm64Fault` fields from ``esr`` to ``srt``, in order: the decoded syndrome.
_SYNDROME_FIELDS = (
    "esr", "ec", "fsc", "fault_kind", "fault_level", "s1ptw", "is_iabt", "isv", "wnr", "cm", "access_size", "srt",
)  # fmt: skip
assert tuple(Arm64Fault.__dataclass_fields__)[4:16] == _SYNDROME_FIELDS


@lru_cache(maxsize=4096)
def _abort_fields(esr: int) -> tuple[bool, bool, tuple[Any, ...], bool, EsrInfo]:
    """What ESR_EL2 alone decides, once per distinct value (guests repeat a few syndromes):
    ``(exec, write, syndrome, hpfar_trusted, info)``, ``syndrome`` being the values of
    ``_SYNDROME_FIELDS``.

    ``kvm_vcpu_trap_is_exec_fault()``, ``kvm_is_write_fault()`` and ``__hpfar_valid()`` are
    :mod:`kvmcore_arm64.esr`'s. Raises :class:`DecodeError` (never cached) unless ``esr`` is a
    guest abort (:func:`~kvmcore_arm64.esr.decode_guest_abort`); ``esr`` must be an int.
    """
    info = E.decode_guest_abort(esr)
    syndrome = (
        info.esr, info.ec, info.fsc, info.fault_kind, info.fault_level, bool(info.s1ptw),
        not info.is_data_abort, info.isv, info.wnr, info.cm, info.access_size, info.srt,
    )  # fmt: skip
    return E.is_exec_fault(info), E.is_write_fault(info), syndrome, E.hpfar_trusted(info), info


#: The raw keys of a plain abort (the registers, and the value an MMIO store writes), which
#: :func:`decode_fault` decodes in one go; any other input takes the step-by-step
#: :func:`_decode_fault`.
_PLAIN_KEYS = frozenset((*REGISTERS, "data"))
#: Set in an int that is negative or 2**64 or more.
_NOT_U64 = ~_U64_MAX
#: Set in an HPFAR_EL2 value :func:`~kvmcore_arm64.esr.hpfar_to_ipa` refuses: RES0 bits [62:48]
#: or [3:0], a negative value, 2**64 or more.
_HPFAR_INVALID = ~(E.HPFAR_EL2_NS | E.HPFAR_EL2_FIPA_MASK)
#: HPFAR_EL2.FIPA [47:4] -> IPA [55:12], as :func:`~kvmcore_arm64.esr.hpfar_to_ipa` computes it.
_FIPA_MASK, _FIPA_TO_IPA = E.HPFAR_EL2_FIPA_MASK, 12 - E.HPFAR_EL2_FIPA_SHIFT


def decode_fault(vcpu: kvmcore.VCPU, raw: Mapping[str, Any]) -> Arm64Fault:
    """The ``decode_fault`` hook: ESR_EL2/HPFAR_EL2/FAR_EL2 -> :class:`Arm64Fault`.

    Mirrors what ``kvm_handle_guest_abort()`` reads first: ``kvm_vcpu_get_esr()``,
    ``kvm_vcpu_get_fault_ipa()`` (HPFAR.FIPA << 12), ``kvm_vcpu_get_hfar()``, then
    ``gfn = ipa >> PAGE_SHIFT``, ``kvm_is_write_fault()`` and
    ``kvm_vcpu_trap_is_exec_fault()`` (those from ESR alone: :func:`_abort_fields`). Only EC
    0x20 (IABT_LOW) and 0x24 (DABT_LOW) reach that function (``arm_exit_handlers[]``): any
    other class raises :class:`DecodeError` naming it, as does a malformed register.

    A plain abort (registers and ``data`` only, each a 64-bit int, HPFAR with no RES0 bit) is validated by
    one test and decoded in one go; everything else takes :func:`_decode_fault`, which checks
    step by step and names what is wrong. Both give the same fault (the property test in
    ``tests/test_arm64_fault_decode.py``).
    """
    esr = raw.get("esr")
    hpfar = raw.get("hpfar")
    far = raw.get("far")
    data = raw.get("data", 0)
    if (
        raw.keys() <= _PLAIN_KEYS
        and esr.__class__ is int
        and hpfar.__class__ is int
        and not esr & _NOT_U64
        and not hpfar & _HPFAR_INVALID
        and (far is None or (far.__class__ is int and not far & _NOT_U64))
        and data.__class__ is int
        and not data & _NOT_U64
    ):
        exec_, write, syndrome, hpfar_trusted, info = _abort_fields(esr)
        ipa = (hpfar & _FIPA_MASK) << _FIPA_TO_IPA
        # the VM's PAGE_SHIFT is one of the granules' (12, 14, 16): the plugin's configure_vm
        return Arm64Fault(  # type: ignore[call-arg]  # mypy cannot count fields through *syndrome
            ipa >> vcpu.vm.page_shift, exec_, write, False, *syndrome,
            ipa, ipa if far is None else ipa | (far & E.FAR_TO_FIPA_OFFSET_MASK), far, hpfar, hpfar_trusted, data, info,
        )  # fmt: skip
    return _decode_fault(vcpu, raw)


def _decode_fault(vcpu: kvmcore.VCPU, raw: Mapping[str, Any]) -> Arm64Fault:
    """:func:`decode_fault` step by step, for any input: the modelling inputs ``private`` and
    ``data``, and the errors (:func:`check_raw`, then the ESR, then HPFAR)."""
    check_raw(raw)
    exec_, write, syndrome, hpfar_trusted, info = _abort_fields(raw["esr"])
    hpfar = raw["hpfar"]
    far = raw.get("far")
    ipa = E.hpfar_to_ipa(hpfar)
    gpa = ipa | (far & E.FAR_TO_FIPA_OFFSET_MASK) if far is not None else ipa
    private = raw_private(raw)
    if private and not vcpu.vm.has_proposal("arm64-private"):
        raise kvmcore.DecodeError(
            "private=1: upstream arm64 has no private memory (is_private is never set); "
            "it is kvmcore's proposal 'arm64-private', which is off for this VM"
        )
    # positional, in field order (keywords cost more for 23 fields)
    return Arm64Fault(  # type: ignore[call-arg]  # mypy cannot count fields through *syndrome
        E.gpa_to_gfn(ipa, vcpu.vm.page_shift), exec_, write, private, *syndrome,
        ipa, gpa, far, hpfar, hpfar_trusted, raw.get("data", 0), info,
    )


__all__ = ["BLOCK_SIZES", "GRANULE_SHIFTS", "REGISTERS", "Arm64Fault", "decode_fault"]
