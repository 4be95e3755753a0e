"""``encode_fault``'s input, :class:`Access`: a logical guest access (the conformance kit and
``kvmcore run`` make them).

Not in :mod:`kvmcore._types`: handling a fault never uses it, and defining a dataclass
compiles its methods, so ``kvmcore`` imports this module on first use of ``kvmcore.Access``
(``kvmcore.__getattr__``).
"""

from __future__ import annotations

from dataclasses import dataclass

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
