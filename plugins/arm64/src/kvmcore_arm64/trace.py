"""Parse the TP_printk text of arm64 KVM tracepoints (arch/arm64/kvm/trace_arm.h).

Only the text after ``event_name: `` is handled; the ftrace / trace-cmd / perf line prefix is
the caller's job. Keys are the tracepoint's own field names (``vcpu_pc``, ``hsr``, ``hxfar``,
``ipa``...), values are ints (registers) or strings (symbolic names).

Formats (unchanged since at least 6.x):

* ``kvm_guest_fault``:  ``"ipa %#llx, hsr %#08lx, hxfar %#08lx, pc %#016lx"``
* ``kvm_mmio_nisv``:    ``"ipa %#016lx, esr %#016lx, far %#016lx, pc %#016lx"``
* ``kvm_access_fault``: ``"IPA: %lx"``
* ``kvm_exit``:         ``"%s: HSR_EC: 0x%04x (%s), PC: 0x%016lx"``
* ``kvm_entry``:        ``"PC: 0x%016lx"``
* ``kvm_mmio_emulate``: ``"Emulate MMIO at: 0x%016lx (instr: %08lx, cpsr: %08lx)"``
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kvmcore import shown_text

# "%#x": the kernel's vsprintf prints "0x" even for 0; accept a bare "0" as glibc would print.
_HEX_PFX = r"(0x[0-9a-fA-F]+|0)"
_HEX = r"([0-9a-fA-F]+)"

_GUEST_FAULT = re.compile(
    rf"ipa {_HEX_PFX}, hsr {_HEX_PFX}, hxfar {_HEX_PFX}, pc {_HEX_PFX}"
)
_MMIO_NISV = re.compile(rf"ipa {_HEX_PFX}, esr {_HEX_PFX}, far {_HEX_PFX}, pc {_HEX_PFX}")
_ACCESS_FAULT = re.compile(rf"IPA: {_HEX}")
# The exception type and class are __print_symbolic(): a name, or the raw value in hex.
_EXIT = re.compile(r"([^:]+): HSR_EC: 0x([0-9a-fA-F]{4,}) \(([^()]+)\), PC: 0x([0-9a-fA-F]+)")
_ENTRY = re.compile(r"PC: 0x([0-9a-fA-F]+)")
_MMIO_EMULATE = re.compile(
    r"Emulate MMIO at: 0x([0-9a-fA-F]+) \(instr: ([0-9a-fA-F]+), cpsr: ([0-9a-fA-F]+)\)"
)


def _h(s: str) -> int:
    return int(s, 16)


def _guest_fault(m: re.Match[str]) -> dict[str, Any]:
    # the hottest line of a replay: int() inline rather than through _h
    ipa, hsr, hxfar, pc = m.groups()
    return {"ipa": int(ipa, 16), "hsr": int(hsr, 16), "hxfar": int(hxfar, 16), "vcpu_pc": int(pc, 16)}


def _mmio_nisv(m: re.Match[str]) -> dict[str, Any]:
    return {"ipa": _h(m[1]), "esr": _h(m[2]), "far": _h(m[3]), "vcpu_pc": _h(m[4])}


def _access_fault(m: re.Match[str]) -> dict[str, Any]:
    return {"ipa": _h(m[1])}


def _exit(m: re.Match[str]) -> dict[str, Any]:
    return {
        "exception_type": m[1],  # kvm_arm_exception_type symbol of ``ret``: TRAP, IRQ, ...
        "esr_ec": _h(m[2]),
        "esr_ec_name": m[3],  # kvm_arm_exception_class symbol: DABT_LOW, IABT_LOW, ...
        "vcpu_pc": _h(m[4]),
    }


def _entry(m: re.Match[str]) -> dict[str, Any]:
    return {"vcpu_pc": _h(m[1])}


def _mmio_emulate(m: re.Match[str]) -> dict[str, Any]:
    return {"vcpu_pc": _h(m[1]), "instr": _h(m[2]), "cpsr": _h(m[3])}


_PARSERS: dict[str, tuple[re.Pattern[str], Callable[[re.Match[str]], dict[str, Any]]]] = {
    "kvm_guest_fault": (_GUEST_FAULT, _guest_fault),
    "kvm_mmio_nisv": (_MMIO_NISV, _mmio_nisv),
    "kvm_access_fault": (_ACCESS_FAULT, _access_fault),
    "kvm_exit": (_EXIT, _exit),
    "kvm_entry": (_ENTRY, _entry),
    "kvm_mmio_emulate": (_MMIO_EMULATE, _mmio_emulate),
}

#: The events :func:`parse_event` understands.
EVENTS: tuple[str, ...] = tuple(_PARSERS)


def guest_fault_fields(text: str) -> dict[str, Any]:
    """``kvm_guest_fault``'s fields (:func:`parse_event`'s, plus ``pc``, the name ``kvmcore
    replay`` reads for per-pc counts): the hottest text of a replay, parsed without the table."""
    m = _GUEST_FAULT.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"malformed kvm_guest_fault text: {shown_text(text)}")
    ipa, hsr, hxfar, pc = m.groups()
    vcpu_pc = int(pc, 16)
    return {"ipa": int(ipa, 16), "hsr": int(hsr, 16), "hxfar": int(hxfar, 16), "vcpu_pc": vcpu_pc, "pc": vcpu_pc}


def parse_event(event_name: str, text: str) -> dict[str, Any] | None:
    """Parse one arm64 tracepoint's text into a dict; None for an event arm64 does not define.

    Raises ``ValueError`` naming the event and the text when the text does not match the
    event's TP_printk format.

    >>> parse_event("kvm_access_fault", "IPA: 40a31000")
    {'ipa': 1084428288}
    """
    entry = _PARSERS.get(event_name)
    if entry is None:
        return None
    pattern, build = entry
    m = pattern.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"malformed {event_name} text: {shown_text(text)}")
    return build(m)


__all__ = ["EVENTS", "guest_fault_fields", "parse_event"]
