"""Argument checks of the public API: the type and the range of a value, named in the error.

A Python caller can pass what no ioctl can receive (a float, ``None``, an integer wider than
the ``__u64`` field): that is a ``TypeError`` or ``ValueError`` naming the function and the
parameter. Values that fit the field but that the kernel refuses stay the caller's business:
each call raises ``KvmError`` with the ioctl's errno for them.
"""

from __future__ import annotations

from typing import Any


def integer(func: str, name: str, value: Any) -> int:
    """``value`` if it is an int (not a bool); ``TypeError`` naming ``func`` and ``name``."""
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)  # IntEnum, IntFlag
    prefix = f"{func}: " if func else ""
    raise TypeError(f"{prefix}{name} must be an int, got {type(value).__name__} {value!r:.60}")

