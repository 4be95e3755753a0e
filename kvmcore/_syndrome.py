"""``describe_syndrome``'s result, :class:`Syndrome`: raw registers decoded for a person.

Not in :mod:`kvmcore._types`: handling a fault and listing plugins never use it, and defining
a dataclass compiles its methods, so ``kvmcore`` imports this module on first use of
``kvmcore.Syndrome`` (``kvmcore.__getattr__``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvmcore._dataclass_methods import fields_eq, fields_hash, fields_repr


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore._dataclass_methods
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

    __repr__ = fields_repr
    __eq__ = fields_eq
    __hash__ = fields_hash
