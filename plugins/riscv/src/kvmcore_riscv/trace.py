"""Parse the text of RISC-V KVM tracepoints (``arch/riscv/kvm/trace.h``, TRACE_SYSTEM kvm).

Only the text after ``event_name: `` is parsed. Formats (merged upstream, unchanged through 7.2):

* ``kvm_entry``: ``"PC: 0x016%lx"``. The ``016`` is a typo for ``%016lx``: the kernel prints the
  characters ``0x016`` then the unpadded hex PC, e.g. ``PC: 0x016ffffffff80a0b1c2`` for
  PC 0xffffffff80a0b1c2.
* ``kvm_exit``: ``"SEPC:0x%lx, SCAUSE:0x%lx, STVAL:0x%lx, HTVAL:0x%lx, HTINST:0x%lx"``.

RISC-V emits no ``kvm_mmio`` and no guest-fault event; everything else returns None here.
"""

from __future__ import annotations

import re

from kvmcore import shown_text

_HEX = r"0x([0-9a-fA-F]{1,16})"
_KVM_EXIT = re.compile(rf"SEPC:{_HEX}, SCAUSE:{_HEX}, STVAL:{_HEX}, HTVAL:{_HEX}, HTINST:{_HEX}")
#: "0x016" then %lx (no leading zeros unless the value is 0). A kernel with the typo fixed would
#: print exactly 16 digits after "0x"; that form is accepted too (see parse_kvm_entry).
_KVM_ENTRY_TYPO = re.compile(r"PC: 0x016(0|[1-9a-fA-F][0-9a-fA-F]{0,15})")
_KVM_ENTRY_FIXED = re.compile(r"PC: 0x([0-9a-fA-F]{16})")

KVM_EXIT_FIELDS = ("sepc", "scause", "stval", "htval", "htinst")


def _malformed(event: str, text: str, expected: str) -> ValueError:
    return ValueError(f"{event}: malformed text {shown_text(text)}; expected {expected!r}")


def parse_kvm_exit(text: str) -> dict[str, int]:
    """``{"sepc", "scause", "stval", "htval", "htinst"}`` (the TP_STRUCT__entry names) as ints."""
    m = _KVM_EXIT.fullmatch(text.strip())
    if m is None:
        raise _malformed(
            "kvm_exit", text, "SEPC:0x%lx, SCAUSE:0x%lx, STVAL:0x%lx, HTVAL:0x%lx, HTINST:0x%lx"
        )
    return {name: int(v, 16) for name, v in zip(KVM_EXIT_FIELDS, m.groups(), strict=True)}


def parse_kvm_entry(text: str) -> dict[str, int]:
    """``{"pc": int}`` from ``PC: 0x016<hex>`` (the upstream typo).

    A text of exactly 16 hex digits after ``0x`` that does not read as the typo form (e.g. a
    kernel printing ``%016lx`` correctly and a PC that starts with a 0 digit other than "016")
    is read as ``%016lx``. Where both readings fit (16 digits starting ``016``), the typo wins:
    it is what every kernel up to at least 7.2 prints.
    """
    s = text.strip()
    m = _KVM_ENTRY_TYPO.fullmatch(s) or _KVM_ENTRY_FIXED.fullmatch(s)
    if m is None:
        raise _malformed("kvm_entry", text, "PC: 0x016%lx")
    return {"pc": int(m.group(1), 16)}


_PARSERS = {"kvm_exit": parse_kvm_exit, "kvm_entry": parse_kvm_entry}

#: The events :func:`parse_event` understands.
EVENTS: tuple[str, ...] = tuple(_PARSERS)


def parse_event(event_name: str, text: str) -> dict[str, int] | None:
    """Parse one RISC-V KVM event's text; None for an event RISC-V does not define.

    Raises ValueError naming the event and the text when a known event is malformed.

    >>> parse_event("kvm_entry", "PC: 0x01680200000")
    {'pc': 2149580800}
    """
    parser = _PARSERS.get(event_name)
    if parser is None:
        return None
    return parser(text)


__all__ = ["EVENTS", "parse_event", "parse_kvm_entry", "parse_kvm_exit"]
