"""``describe_syndrome``'s result, :class:`Syndrome`: raw registers decoded for a person.

Not in :mod:`kvmcore._types`: handling a fault and listing plugins never use it, and defining
a dataclass compiles its methods, so ``kvmcore`` imports this module on first use of
``kvmcore.Syndrome`` (``kvmcore.__getattr__``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)  # methods written out: see kvmcore._types
class Syndrome:
    """A person-readable decode of raw registers (the ``describe_syndrome`` hook's result).

    ``fields`` maps field names to JSON-ready values (``None`` where the architecture leaves
    a field undefined); ``meanings`` gives a one-line meaning per field; ``guest_fault``
    says whether the registers describe a guest memory fault, and ``error`` why not.
    """

    arch: str
    fields: Mapping[str, Any]
    meanings: Mapping[str, str]
    guest_fault: bool
    error: str | None = None

    def __init__(
        self,
        arch: str,
        fields: Mapping[str, Any],
        meanings: Mapping[str, str],
        guest_fault: bool,
        error: str | None = None,
    ) -> None:
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "meanings", meanings)
        object.__setattr__(self, "guest_fault", guest_fault)
        object.__setattr__(self, "error", error)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(arch={self.arch!r}, fields={self.fields!r}, meanings={self.meanings!r}, guest_fault={self.guest_fault!r}, error={self.error!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return (self.arch, self.fields, self.meanings, self.guest_fault, self.error) == (
                other.arch,
                other.fields,
                other.meanings,
                other.guest_fault,
                other.error,
            )
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.arch, self.fields, self.meanings, self.guest_fault, self.error))
