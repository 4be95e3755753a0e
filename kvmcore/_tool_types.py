"""The value types of two tool hooks: ``encode_fault``'s input (:class:`Access`) and
``describe_syndrome``'s result (:class:`Syndrome`).

Handling a fault uses neither, so they are not in :mod:`kvmcore._types`: ``kvmcore`` imports
this module on first use of either name (``kvmcore.__getattr__``), which ``kvmcore plugins``
and a VM that only handles faults never make (defining a dataclass compiles its methods).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvmcore._types import ACCESS_KINDS, STAGE2_CAUSES


@dataclass(frozen=True, slots=True)
class Access:
    """A logical guest access for ``encode_fault``: what the guest did and why stage 2 faults.

    ``size`` and ``data`` describe the load/store for MMIO emulation; ``private`` marks an
    access to private (guest_memfd-backed, encrypted) memory where the arch can express it.
    """

    gpa: int
    kind: str = "read"  # one of ACCESS_KINDS
    cause: str = "not_present"  # one of STAGE2_CAUSES
    private: bool = False
    size: int = 4
    data: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ACCESS_KINDS:
            raise ValueError(f"Access kind {self.kind!r}: expected one of {', '.join(ACCESS_KINDS)}")
        if self.cause not in STAGE2_CAUSES:
            raise ValueError(f"Access cause {self.cause!r}: expected one of {', '.join(STAGE2_CAUSES)}")

    @property
    def write(self) -> bool:
        return self.kind == "write"

    @property
    def exec(self) -> bool:
        return self.kind == "exec"


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
