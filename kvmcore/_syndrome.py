"""``describe_syndrome``'s result, :class:`Syndrome`: raw registers decoded for a person.

Not in :mod:`kvmcore._types`: handling a fault and listing plugins never use it, and defining
a dataclass compiles its methods, so ``kvmcore`` imports this module on first use of
``kvmcore.Syndrome`` (``kvmcore.__getattr__``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
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
