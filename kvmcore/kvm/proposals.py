"""Proposals: unmerged designs and kvmcore's own extensions a VM may turn on (``vm.proposals``).

kvmcore exists to explore designs that are not upstream, so the ones it models are on by
default; ``kvmcore.VM(arch, proposals=())`` is *upstream mode*, the named kernel exactly.
Each proposal is named here, with where it comes from; code gates on
``vm.has_proposal(name)``, never on an arch name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Proposal:
    """One design beyond upstream that the model can turn on or off."""

    #: Short name used in ``proposals=``, ``--proposals`` and scenarios: ``"userfault"``.
    name: str
    title: str
    #: Where it comes from: the patch mail's subject and date, or "kvmcore" for our own.
    source: str
    summary: str
    #: The arches it applies to; None: every arch.
    arches: tuple[str, ...] | None = None
    #: On when ``proposals=None`` (the default)?
    default: bool = True
    #: Proposals that cannot be on together with this one.
    conflicts: tuple[str, ...] = ()
    #: Proposals that must be on for this one to be on.
    requires: tuple[str, ...] = ()

    def applies_to(self, arch: str) -> bool:
        return self.arches is None or arch in self.arches


_ALL = (
    Proposal(
        "userfault",
        "KVM Userfault",
        "[PATCH v3 00/15] KVM: Introduce KVM Userfault (James Houghton, 18 Jun 2025)",
        "KVM_MEM_USERFAULT (memslot flag bit 3) and userfault_bitmap in "
        "kvm_userspace_memory_region2: a vCPU access to a page whose bit is set exits with "
        "KVM_EXIT_MEMORY_FAULT, flag KVM_MEMORY_EXIT_FLAG_USERFAULT (bit 4). Upstream: flag bit 3 "
        "is EINVAL (check_memory_region_flags()).",
    ),
    Proposal(
        "syndrome",
        "Syndrome in KVM_EXIT_MEMORY_FAULT",
        "kvmcore (docs/syndrome.md; no patch posted)",
        "KVM_EXIT_MEMORY_FAULT also carries the arch's sanitised fault syndrome "
        "(run->kvmcore.syndrome after memory_fault). Upstream: those bytes stay zero.",
    ),
    Proposal(
        "riscv-userfault",
        "KVM Userfault on RISC-V",
        "kvmcore (v3 covers x86 and arm64 only: CONFIG_KVM_GENERIC_PAGE_FAULT)",
        "gstage_page_fault() checks the userfault bitmap as v3's user_mem_abort() does, so "
        "KVM_MEM_USERFAULT works on RISC-V.",
        arches=("riscv",),
        requires=("userfault",),
    ),
    Proposal(
        "riscv-gmem",
        "guest_memfd on RISC-V",
        "kvmcore (arch/riscv/kvm/Kconfig selects no KVM_GUEST_MEMFD up to 7.3)",
        "KVM_CREATE_GUEST_MEMFD and KVM_MEM_GUEST_MEMFD slots on RISC-V. Upstream: the ioctl "
        "is not handled on RISC-V and the flag is EINVAL.",
        arches=("riscv",),
    ),
    Proposal(
        "arm64-private",
        "Private memory on arm64",
        "kvmcore (arm64 selects no KVM_GENERIC_MEMORY_ATTRIBUTES up to 7.3)",
        "KVM_SET_MEMORY_ATTRIBUTES with KVM_MEMORY_ATTRIBUTE_PRIVATE and private faults "
        "through guest_memfd on arm64 (and guest_memfd itself on 6.12, which predates arm64's). "
        "Upstream: no memory attributes on arm64, every fault is shared.",
        arches=("arm64",),
    ),
    Proposal(
        "riscv-private",
        "Private memory on RISC-V",
        "kvmcore (riscv selects no KVM_GENERIC_MEMORY_ATTRIBUTES up to 7.3)",
        "KVM_SET_MEMORY_ATTRIBUTES with KVM_MEMORY_ATTRIBUTE_PRIVATE and private faults "
        "through guest_memfd on RISC-V. Upstream: no memory attributes on RISC-V.",
        arches=("riscv",),
        requires=("riscv-gmem",),
    ),
)

#: Every proposal kvmcore models, by name.
PROPOSALS: Mapping[str, Proposal] = MappingProxyType({p.name: p for p in _ALL})


def default_proposals(arch: str) -> frozenset[str]:
    """The proposals on when a VM of ``arch`` is made with ``proposals=None``."""
    return frozenset(p.name for p in _ALL if p.default and p.applies_to(arch))


def resolve_proposals(arch: str, proposals: Iterable[str] | None) -> frozenset[str]:
    """``vm.proposals`` for ``VM(arch, proposals=...)``: None -> the defaults for the arch,
    an iterable of names -> exactly those (``()`` is upstream mode).

    Raises ValueError naming an unknown name, one that does not apply to ``arch``, a
    conflicting pair, or a proposal named without one it requires.
    """
    if proposals is None:
        return default_proposals(arch)
    if isinstance(proposals, str):
        raise ValueError(
            f"proposals={proposals!r}: expected a list of names such as ['userfault'], not a string"
        )
    try:
        names = frozenset(proposals)
    except TypeError:
        raise ValueError(f"proposals={proposals!r}: expected None or an iterable of proposal names") from None
    unknown = sorted(str(n) for n in names if n not in PROPOSALS)
    if unknown:
        raise ValueError(
            f"proposals: unknown {', '.join(map(repr, unknown))} (known: {', '.join(PROPOSALS)})"
        )
    for name in sorted(names):
        proposal = PROPOSALS[name]
        if not proposal.applies_to(arch):
            raise ValueError(
                f"proposals: {name!r} applies to {', '.join(proposal.arches or ())} only, not {arch!r}"
            )
        for other in proposal.conflicts:
            if other in names:
                raise ValueError(f"proposals: {name!r} and {other!r} conflict; turn one off")
        missing = [r for r in proposal.requires if r not in names]
        if missing:
            raise ValueError(f"proposals: {name!r} needs {', '.join(map(repr, missing))} on too")
    return names
