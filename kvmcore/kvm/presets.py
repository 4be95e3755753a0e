"""The columns of ``kvmcore compare``: named selections of the memory-fault exit designs
(:mod:`kvmcore.kvm.designs`), each a set of proposals (``docs/designs.md``).

Its own module because only ``kvmcore compare`` uses it: the VM, and so ``kvmcore decode``,
does not define these (a dataclass costs a fraction of a millisecond of start-up).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvmcore.kvm.designs import (
    ANNOTATE_EFAULT,
    ARCH_HOOK,
    ARM64_ESR,
    EXIT_DESIGNS,
    RWX_FLAGS,
    SYNDROME,
    V3_HELPER,
)


@dataclass(frozen=True, slots=True)
class DesignPreset:
    """One column of ``kvmcore compare``: a design of the thread as a set of proposals.

    ``adds`` are turned on over the arch's feature proposals (the defaults minus every exit
    design and ``syndrome``); ``upstream`` means ``proposals=()`` (the kernel as it is).
    """

    name: str
    title: str
    adds: tuple[str, ...] = ()
    upstream: bool = False
    #: The arches it applies to (None: all), with why not for the others.
    arches: tuple[str, ...] | None = None
    arch_reason: str = ""

    def proposals(self, defaults: Iterable[str]) -> tuple[str, ...]:
        """The ``proposals=`` for a VM of an arch whose default proposals are ``defaults``."""
        if self.upstream:
            return ()
        shaping = set(EXIT_DESIGNS) | {SYNDROME}
        base = sorted(n for n in defaults if n not in shaping)
        return tuple(base + [n for n in self.adds if n not in base])


PRESETS: dict[str, DesignPreset] = {
    p.name: p
    for p in (
        DesignPreset("upstream", "the kernel as it is (proposals=())", upstream=True),
        DesignPreset("v3", "KVM Userfault v3: the common helper (patch 03)", (V3_HELPER,)),
        DesignPreset("kvmcore", "v3 plus kvmcore's syndrome extension (the default)", (V3_HELPER, SYNDROME)),
        DesignPreset("compromise", "common gpa/size, kvm_arch_prepare_memory_fault_exit() for flags", (ARCH_HOOK,)),
        DesignPreset(
            "arm64-esr", "Oliver Upton: arch-computed flags and a sanitised ESR in every exit", (ARCH_HOOK, ARM64_ESR),
            arches=("arm64",), arch_reason="ESR_EL2 exists only on arm64",
        ),
        DesignPreset("rwx", "v3 plus R/W/X access bits in flags", (V3_HELPER, RWX_FLAGS)),
        DesignPreset("annotate-efault", "v3 plus a memory-fault exit for every -EFAULT", (V3_HELPER, ANNOTATE_EFAULT)),
    )
}
