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

from kvmcore._dataclass_methods import fields_eq, fields_hash, fields_repr


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore._dataclass_methods
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
    #: Why it applies only to ``arches`` (said when a VM of another arch asks for it).
    arch_reason: str = ""

    def __init__(
        self,
        name: str,
        title: str,
        source: str,
        summary: str,
        arches: tuple[str, ...] | None = None,
        default: bool = True,
        conflicts: tuple[str, ...] = (),
        requires: tuple[str, ...] = (),
        arch_reason: str = "",
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "summary", summary)
        object.__setattr__(self, "arches", arches)
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "conflicts", conflicts)
        object.__setattr__(self, "requires", requires)
        object.__setattr__(self, "arch_reason", arch_reason)

    __repr__ = fields_repr
    __eq__ = fields_eq
    __hash__ = fields_hash

    def applies_to(self, arch: str) -> bool:
        return self.arches is None or arch in self.arches


_ALL: tuple[Proposal, ...] = (
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

_EXIT_DESIGNS = (
    # -- the memory-fault exit designs of the thread (docs/designs.md, kvmcore/kvm/designs.py) --
    Proposal(
        "v3-helper",
        "v3's common kvm_prepare_memory_fault_exit()",
        "[PATCH v3 03/15] KVM: arm64: x86: Require \"struct kvm_page_fault\" for memory fault exits "
        "(Sean Christopherson, in James Houghton's KVM Userfault v3, 18 Jun 2025)",
        "Common code fills flags (PRIVATE), gpa (gfn << PAGE_SHIFT) and size (PAGE_SIZE) from the "
        "arch's struct kvm_page_fault, whose gfn/exec/write/is_private/slot it asserts; arches "
        "wrap it. Without it (or arch-hook) each call site passes its own gpa/size/private, as "
        "upstream's kvm_prepare_memory_fault_exit(vcpu, gpa, size, w, x, private) does.",
        conflicts=("arch-hook",),
    ),
    Proposal(
        "arch-hook",
        "Common gpa/size, kvm_arch_prepare_memory_fault_exit() computes every flag",
        "Sean Christopherson's compromise, reply to v3 03/15 (aFNmci0s1_P845XZ@google.com, "
        "18 Jun 2025), after Oliver Upton's review",
        "Common code fills exit_reason, gpa and size, zeroes flags and calls the arch hook "
        "kvm_arch_prepare_memory_fault_exit(vcpu, fault), which computes every flag (x86: "
        "PRIVATE; arm64's may stay empty). Only gfn needs asserting in common code.",
        default=False,
        conflicts=("v3-helper",),
    ),
    Proposal(
        "arm64-esr",
        "A sanitised ESR_EL2 (with ISS2) in every arm64 memory-fault exit",
        "Oliver Upton, review of v3 03/15 (aFMaxi5LDr4HHbMR@linux.dev, aFNIPXoEb5iCjt_L@linux.dev, "
        "18 Jun 2025): 'for every KVM_EXIT_MEMORY_FAULT we provide as much syndrome information "
        "as possible'",
        "memory_fault grows a u64 esr at kvm_run offset 56 on arm64: ESR_EL2 & the sanitise mask "
        "(EC, IL, WnR, CM, S1PTW, FnV, FSC, ISS2 TnD/TagAccess/GCS/AssuredOnly/Overlay/DirtyBit), "
        "on every memory-fault exit, userfault and private or not.",
        arches=("arm64",),
        default=False,
        conflicts=("syndrome",),
        arch_reason="ESR_EL2 is arm64's exception syndrome register; x86 and RISC-V report "
        "faults in other registers (kvmcore's 'syndrome' proposal carries theirs)",
    ),
    Proposal(
        "rwx-flags",
        "R/W/X access bits in memory_fault.flags",
        "Sean Christopherson, reply to [PATCH v4 03/16] KVM: Add KVM_CAP_MEMORY_FAULT_INFO "
        "(ZIn6VQSebTRN1jtX@google.com, 14 Jun 2023); Anish Moorthy's [PATCH v5 04/17] "
        "(8 Sep 2023); Sean again on 13 Aug 2024 (ZrtskXJ6jH90pqB2@google.com)",
        "memory_fault.flags bit 0 READ, bit 1 WRITE, bit 2 EXEC (the bits upstream reserves with "
        "'RWX flags are not (yet) defined'): exactly one, describing the access that faulted.",
        default=False,
    ),
    Proposal(
        "annotate-efault",
        "Every -EFAULT of the stage-2 fault path is a KVM_EXIT_MEMORY_FAULT",
        "Anish Moorthy, [PATCH v2 0/3] Set up KVM_EXIT_MEMORY_FAULTs when arm64/x86 stage-2 fault "
        "handlers fail (9 Aug 2024), after the 2023 annotated-EFAULT series ([PATCH v5 00/17], "
        "8 Sep 2023: 'bare EFAULTs should be considered bugs')",
        "x86 kvm_handle_error_pfn() and every -EFAULT of arm64 user_mem_abort() fill "
        "memory_fault (no VMA: size 0, 'unknown size'; no pfn: the VMA page size); kvmcore "
        "annotates any other bare -EFAULT of the fault path with the common helper.",
        default=False,
    ),
)

#: Why two proposals cannot both be on (said when a VM asks for both).
CONFLICT_REASONS: Mapping[frozenset[str], str] = MappingProxyType({
    frozenset(("v3-helper", "arch-hook")): "both say who computes memory_fault.flags (common code "
    "from struct kvm_page_fault, or the arch's kvm_arch_prepare_memory_fault_exit())",
    frozenset(("arm64-esr", "syndrome")): "both put data right after memory_fault.size, at kvm_run "
    "offset 56 (a u64 esr, or kvmcore's syndrome header and words)",
})

_ALL = _ALL + _EXIT_DESIGNS

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
            why = f": {proposal.arch_reason}" if proposal.arch_reason else ""
            raise ValueError(
                f"proposals: {name!r} applies to {', '.join(proposal.arches or ())} only, not {arch!r}{why}"
            )
        for other in proposal.conflicts:
            if other in names:
                why = CONFLICT_REASONS.get(frozenset((name, other)), "")
                raise ValueError(f"proposals: {name!r} and {other!r} conflict{': ' + why if why else ''}; turn one off")
        missing = [r for r in proposal.requires if r not in names]
        if missing:
            raise ValueError(f"proposals: {name!r} needs {', '.join(map(repr, missing))} on too")
    return names
