"""Checks every arch's ``decode_fault`` makes of its raw input, in one place.

Raw input is register name -> value plus kvmcore's modelling inputs (``ArchInfo.extra_keys``:
``private``, ``data``...). A typo (``hpfar_el2``) or a missing register is a ``DecodeError``
that names it, never a silently ignored key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kvmcore.errors import DecodeError


def check_raw_keys(
    raw: Mapping[str, Any],
    *,
    arch: str,
    registers: Iterable[str],
    extra_keys: Iterable[str] = (),
    required: Iterable[str] = (),
    needs: str = "",
) -> None:
    """Refuse keys that are neither registers nor modelling inputs, and missing registers.

    :param needs: the end of the missing-register message, e.g. ``"an arm64 stage-2 abort
        needs esr (ESR_EL2) and hpfar (HPFAR_EL2)"``.
    """
    registers, extra_keys = tuple(registers), tuple(extra_keys)
    unknown = [k for k in raw if k not in registers and k not in extra_keys]
    if unknown:
        inputs = f" and the modelling inputs {', '.join(extra_keys)}" if extra_keys else ""
        raise DecodeError(
            f"unknown raw key(s) {', '.join(map(repr, unknown))}: {arch} takes the registers "
            f"{', '.join(registers)}{inputs}"
        )
    missing = [k for k in required if k not in raw]
    if missing:
        raise DecodeError(f"missing register(s) {', '.join(missing)}: {needs or arch + ' needs ' + ', '.join(required)}")


def raw_private(raw: Mapping[str, Any]) -> bool:
    """kvmcore's modelling input ``private``: 0 (shared, the default) or 1 (private)."""
    value = raw.get("private", 0)
    if type(value) not in (int, bool) or value not in (0, 1):
        raise DecodeError(f"private={value!r}: expected 0 (shared) or 1 (private)")
    return bool(value)


#: How much of a malformed text :func:`shown_text` shows.
SHOWN_TEXT = 200


def shown_text(text: str) -> str:
    """``repr(text)`` for an error message, cut to :data:`SHOWN_TEXT` characters with the full
    length said: a pasted megabyte stays out of the message (``kvmcore replay`` keeps parse
    errors; the conformance check ``[trace-errors]`` holds every arch to this)."""
    if len(text) <= SHOWN_TEXT:
        return repr(text)
    return f"{text[:SHOWN_TEXT]!r}... ({len(text):,} characters)"
