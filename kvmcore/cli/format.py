"""Text and JSON forms shared by the ``kvmcore`` subcommands: values, flags, sizes, errnos."""

from __future__ import annotations

from typing import Any

from kvmcore import abi
from kvmcore.errors import strerror
from kvmcore.kvm.host_mm import PROT_EXEC, PROT_READ, PROT_WRITE


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value``: dataclasses and mappings become objects, enums their
    names, ints stay ints (JSON numbers; one of more than 4096 bits, which ``json`` cannot print
    as digits, becomes a hex string), bytes become hex strings, anything else ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        if type(value) is int and value.bit_length() > 4096:  # beyond what json can print as digits
            return hex(value)
        return value
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    import dataclasses
    import enum

    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


def fmt_value(value: Any) -> str:
    """Human form of a field value: ints in hex, bools as 0/1, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        if 0 <= value < 10:
            return str(value)  # the same in hex and decimal
        return f"{value:#x}" if value >= 0 else f"-{-value:#x}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)


def print_json(obj: Any) -> None:
    import json

    print(json.dumps(jsonable(obj), indent=2))


def reason_text(reason: int | None) -> str:
    if reason is None:
        return "none (the guest resumes)"
    return f"{abi.exit_reason_name(reason)} ({reason})"


def ret_text(ret: int | None) -> str:
    if not ret:
        return "0"
    return f"-{strerror(ret)} ({ret})"


def size_text(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size:#x}"


def flag_list(flags: int, names: dict[str, int]) -> list[str]:
    out = [name for name, bit in names.items() if flags & bit]
    rest = flags & ~sum(names.values())
    if rest:
        out.append(f"{rest:#x}")
    return out


def flag_names(flags: int, names: dict[str, int]) -> str:
    if not flags:
        return "0"
    return f"{flags:#x} (" + "|".join(flag_list(flags, names)) + ")"


def prot_text(prot: int) -> str:
    return "".join(c for c, bit in (("r", PROT_READ), ("w", PROT_WRITE), ("x", PROT_EXEC)) if prot & bit) or "none"


def toml_text(value: Any, limit: int = 200) -> str:
    """``value`` as TOML would spell it, for messages: cut to ``limit`` characters, nested
    values beyond a few levels and long arrays shown as ``...`` (input may be hostile)."""
    text = _toml_text(value, 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _toml_text(value: Any, depth: int) -> str:
    if depth > 4:
        return "..."
    if isinstance(value, str):
        return '"' + value[:200].replace('"', '\\"') + ('..."' if len(value) > 200 else '"')
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        items = [f"{k} = {_toml_text(v, depth + 1)}" for k, v in list(value.items())[:8]]
        return "{" + ", ".join(items + (["..."] if len(value) > 8 else [])) + "}"
    if isinstance(value, list):
        items = [_toml_text(v, depth + 1) for v in value[:8]]
        return "[" + ", ".join(items + (["..."] if len(value) > 8 else [])) + "]"
    if isinstance(value, int) and value.bit_length() > 256:
        return f"{value:#x}"[:70] + "..."
    return str(value)
