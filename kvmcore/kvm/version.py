"""The kernel version a VM models: ``kvmcore.VM("x86", kernel="6.18")``, ``vm.kernel``.

kvmcore models the kernels in :data:`KERNEL_VERSIONS`, each read from its own source
(``docs/versions.md``). A behaviour that differs between them is gated by comparing
``vm.kernel`` with a tuple (``vm.kernel >= (6, 18)``) in one function or table per concern,
whose docstring cites the source file and function of each version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The kernels kvmcore models, oldest first; the newest is the default.
KERNEL_VERSIONS: tuple[str, ...] = ("6.12", "6.18", "7.3")
DEFAULT_KERNEL = KERNEL_VERSIONS[-1]


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)  # see kvmcore._types
class KernelVersion:
    """A kernel release ``major.minor``, comparable with another one, a ``(major, minor)``
    tuple or a ``"major.minor"`` string; ``str()`` gives ``"6.18"``.

    ``KernelVersion(6, 15)`` may name any release (for comparisons); a VM accepts only the
    modelled ones (:meth:`parse`). It hashes as its tuple.
    """

    major: int
    minor: int

    def __init__(self, major: int, minor: int) -> None:
        object.__setattr__(self, "major", major)
        object.__setattr__(self, "minor", minor)

    @classmethod
    def parse(cls, value: Any, param: str = "kernel") -> KernelVersion:
        """A modelled version from ``"6.18"``, ``(6, 18)`` or a ``KernelVersion``.

        Raises ValueError naming ``param`` and the modelled versions for anything else.
        """
        version = _coerce(value)
        if version is None or str(version) not in KERNEL_VERSIONS:
            raise ValueError(
                f"{param}={value!r}: kvmcore models the kernels {', '.join(KERNEL_VERSIONS)} "
                f"(default {DEFAULT_KERNEL})"
            )
        return version

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __repr__(self) -> str:
        return f"KernelVersion('{self}')"

    def __hash__(self) -> int:
        return hash((self.major, self.minor))

    def _key(self, other: Any) -> tuple[int, int] | None:
        # the common forms first (``vm.kernel >= (6, 18)`` runs on fault paths): a version, or a
        # tuple of two non-negative plain ints, exactly what _coerce() accepts for them
        cls = other.__class__
        if cls is KernelVersion:
            return (other.major, other.minor)
        if cls is tuple and len(other) == 2:
            major, minor = other
            if major.__class__ is int and minor.__class__ is int and major >= 0 and minor >= 0:
                return other
        version = _coerce(other)
        return None if version is None else (version.major, version.minor)

    def __eq__(self, other: object) -> bool:
        key = self._key(other)
        return NotImplemented if key is None else (self.major, self.minor) == key

    def __lt__(self, other: Any) -> bool:
        key = self._key(other)
        return NotImplemented if key is None else (self.major, self.minor) < key

    def __le__(self, other: Any) -> bool:
        key = self._key(other)
        return NotImplemented if key is None else (self.major, self.minor) <= key

    def __gt__(self, other: Any) -> bool:
        key = self._key(other)
        return NotImplemented if key is None else (self.major, self.minor) > key

    def __ge__(self, other: Any) -> bool:
        key = self._key(other)
        return NotImplemented if key is None else (self.major, self.minor) >= key


def _coerce(value: Any) -> KernelVersion | None:
    """``value`` as a KernelVersion, or None if it is not a version in any accepted form."""
    if isinstance(value, KernelVersion):
        return value
    if isinstance(value, str):
        major, dot, minor = value.strip().partition(".")
        if dot and major.isdigit() and minor.isdigit():
            return KernelVersion(int(major), int(minor))
        return None
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return KernelVersion(value[0], value[1])
    return None
