"""Conversions between kvmcore's neutral objects and arm64 raw registers: ``encode_fault``
(``kvmcore.Access`` -> ESR/FAR/HPFAR) and ``parse_trace_event`` (tracepoint text -> raw)."""

from __future__ import annotations

from typing import Any

import kvmcore
from kvmcore import TraceEvent

from .encode import encode_abort
from .esr import HPFAR_EL2_FIPA_SHIFT
from .trace import guest_fault_fields, parse_event

#: arm64 tracepoint -> ``TraceEvent.kind``.
TRACE_KINDS = {
    "kvm_guest_fault": "guest_fault",
    "kvm_mmio_nisv": "nisv",
    "kvm_access_fault": "access_fault",
    "kvm_exit": "exit",
    "kvm_entry": "entry",
    "kvm_mmio_emulate": "mmio_emulate",
}


def encode_access(access: kvmcore.Access) -> dict[str, int]:
    """The registers an arm64 CPU reports for ``access`` (the ``encode_fault`` hook).

    :func:`kvmcore_arm64.encode.encode_abort` builds ESR/FAR/HPFAR (``no_slot`` is a
    translation fault, like ``not_present``); ``private`` adds the modelling input
    ``"private": 1`` and a write adds ``"data"``. An instruction fetch has no access size,
    so ``access.size`` is ignored for ``exec``. ``ValueError`` (from ``encode_abort``) for
    what arm64 cannot express: a read or exec failing a read-only check, a data access
    failing an exec check, a size other than 1/2/4/8, a gpa of 2**56 or more.
    """
    if access.kind == "exec":
        raw = encode_abort(access.gpa, access.kind, access.cause)
    else:
        raw = encode_abort(access.gpa, access.kind, access.cause, size=access.size)
    if access.private:
        raw["private"] = 1
    if access.write:
        raw["data"] = access.data
    return raw


def _hpfar(ipa: int) -> int:
    """HPFAR_EL2 for an IPA: FIPA [47:4] = IPA[55:12]."""
    return ipa >> 12 << HPFAR_EL2_FIPA_SHIFT


def trace_event(event: str, text: str) -> kvmcore.TraceEvent | None:
    """One arm64 tracepoint line (text after ``event: ``) as a ``kvmcore.TraceEvent``.

    ``kvm_guest_fault`` -> kind ``guest_fault`` with raw ``esr`` = hsr, ``far`` = hxfar,
    ``hpfar`` from ipa; ``kvm_mmio_nisv`` -> ``nisv`` with the same raw registers;
    ``kvm_access_fault`` -> ``access_fault``; ``kvm_exit`` -> ``exit``; ``kvm_entry``,
    ``kvm_mmio_emulate`` -> ``entry``, ``mmio_emulate``. None for another event; ``ValueError``
    naming the event for malformed text.
    """
    if event == "kvm_guest_fault":  # the hottest event of a replay: no table lookups
        f = guest_fault_fields(text)
        return TraceEvent("guest_fault", f, {"esr": f["hsr"], "far": f["hxfar"], "hpfar": _hpfar(f["ipa"])})
    fields: dict[str, Any] | None = parse_event(event, text)
    if fields is None:
        return None
    raw = None
    if "vcpu_pc" in fields:
        fields["pc"] = fields["vcpu_pc"]  # the name kvmcore replay reads for per-pc counts
    if event == "kvm_guest_fault":
        raw = {"esr": fields["hsr"], "far": fields["hxfar"], "hpfar": _hpfar(fields["ipa"])}
    elif event == "kvm_mmio_nisv":
        raw = {"esr": fields["esr"], "far": fields["far"], "hpfar": _hpfar(fields["ipa"])}
    return TraceEvent(TRACE_KINDS[event], fields, raw)


__all__ = ["TRACE_KINDS", "encode_access", "trace_event"]
