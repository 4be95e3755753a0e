"""Argument checks of the public API: the type and the range of a value, named in the error.

A Python caller can pass what no ioctl can receive (a float, ``None``, an integer wider than
the ``__u64`` field): that is a ``TypeError`` or ``ValueError`` naming the function and the
parameter. Values that fit the field but that the kernel refuses stay the caller's business:
each call raises ``KvmError`` with the ioctl's errno for them.
"""

from __future__ import annotations

from typing import Any

U64_MAX = (1 << 64) - 1


def integer(func: str, name: str, value: Any) -> int:
    """``value`` if it is an int (not a bool); ``TypeError`` naming ``func`` and ``name``."""
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)  # IntEnum, IntFlag
    raise TypeError(f"{func}: {name} must be an int, got {type(value).__name__} {value!r:.60}")


def u64(func: str, name: str, value: Any) -> int:
    """An int that fits the ioctl's ``__u64`` field (0 to 2**64-1); ``ValueError`` otherwise."""
    value = integer(func, name, value)
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"{func}: {name} {value:#x} does not fit the ioctl's __u64 field (0 to 2**64-1)")
    return value


def u32(func: str, name: str, value: Any) -> int:
    """An int that fits a ``__u32`` field."""
    value = integer(func, name, value)
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{func}: {name} {value:#x} does not fit the ioctl's __u32 field (0 to 2**32-1)")
    return value
