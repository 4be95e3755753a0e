"""The memory-fault exit designs of the KVM Userfault v3 review thread, as one VM sees them.

The designs are proposals (``kvmcore.PROPOSALS``: ``v3-helper``, ``arch-hook``, ``arm64-esr``,
``rwx-flags``, ``annotate-efault``, plus kvmcore's ``syndrome``); a VM's ``proposals`` decide
which are on, and :func:`exit_design` turns them into the :class:`ExitDesign` the exit path
reads (computed once per VM, so the fault path tests plain attributes). ``docs/designs.md``
states each design's source, rules and byte offsets.

Who owns what (the rule the core and the conformance kit check, by design):

* ``upstream`` (neither helper proposal on) and ``v3-helper``: common code owns
  ``exit_reason``, ``memory_fault.flags``, ``gpa`` and ``size``;
* ``arch-hook``: common code owns ``exit_reason``, ``gpa``, ``size`` and the software flag
  USERFAULT; the arch's ``kvm_arch_prepare_memory_fault_exit`` hook owns flags bits 0-3
  (RWX only with ``rwx-flags``, PRIVATE);
* wrappers of ``prepare_memory_fault_exit`` own only what their design adds after
  ``memory_fault``: the syndrome extension (``syndrome``) or the esr word (``arm64-esr``), and
  nothing at all in upstream mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from kvmcore import abi

V3_HELPER = "v3-helper"
ARCH_HOOK = "arch-hook"
ARM64_ESR = "arm64-esr"
RWX_FLAGS = "rwx-flags"
ANNOTATE_EFAULT = "annotate-efault"
SYNDROME = "syndrome"
#: The proposals that shape the memory-fault exit (an arch declares which it implements in
#: ``ArchInfo.designs``; ``syndrome`` is kvmcore's and every in-tree arch implements it).
EXIT_DESIGNS = (V3_HELPER, ARCH_HOOK, ARM64_ESR, RWX_FLAGS, ANNOTATE_EFAULT)
#: What an arch plugin that says nothing implements: everything common code does alone.
DEFAULT_ARCH_DESIGNS = (V3_HELPER, RWX_FLAGS, ANNOTATE_EFAULT)

#: Who computes memory_fault.flags: the three answers of the thread.
HELPER_UPSTREAM = "upstream"
HELPER_V3 = V3_HELPER
HELPER_ARCH_HOOK = ARCH_HOOK

#: Flags bits an arch hook may set under ``arch-hook`` (RWX only with ``rwx-flags``).
ARCH_HOOK_FLAGS = abi.KVM_MEMORY_EXIT_FLAG_PRIVATE | abi.KVM_MEMORY_EXIT_FLAG_RWX_MASK


class ExitDesign(NamedTuple):
    """The memory-fault exit path of one VM (``vm.exit_design``).

    ``helper``: who computes ``memory_fault.flags`` (``"upstream"``, ``"v3-helper"``,
    ``"arch-hook"``); ``rwx``: flags bits 0-2 describe the access; ``syndrome``: kvmcore's
    extension after ``memory_fault``; ``arm64_esr``: the sanitised ESR at offset 56;
    ``annotate_efault``: no bare -EFAULT leaves the fault path.

    An immutable named tuple rather than a frozen dataclass: this module is imported on every
    start-up, where a frozen dataclass costs several times as much to define.
    """

    helper: str = HELPER_UPSTREAM
    rwx: bool = False
    syndrome: bool = False
    arm64_esr: bool = False
    annotate_efault: bool = False

    @property
    def name(self) -> str:
        """``"v3-helper+syndrome"``, ``"upstream"``...: the helper, then what is added."""
        parts = [self.helper]
        parts += [n for n, on in ((RWX_FLAGS, self.rwx), (SYNDROME, self.syndrome), (ARM64_ESR, self.arm64_esr),
                                  (ANNOTATE_EFAULT, self.annotate_efault)) if on]
        return "+".join(parts)


    @property
    def wrapper_may_write(self) -> str:
        """What wrappers of ``prepare_memory_fault_exit`` may write, in words."""
        if self.syndrome:
            return "the syndrome extension (kvm_run bytes 56-95)"
        if self.arm64_esr:
            return "memory_fault.esr (kvm_run bytes 56-63)"
        return "nothing in kvm_run"

    @property
    def flags_owner(self) -> str:
        """Who computes ``memory_fault.flags``: ``"common code"`` or ``"the arch hook"``."""
        return "the arch hook" if self.helper == HELPER_ARCH_HOOK else "common code"

    def ownership_rule(self) -> str:
        """The ownership rule of this design, for error messages."""
        flags = (
            "the arch's kvm_arch_prepare_memory_fault_exit() computes flags bits 0-3, common code "
            "exit_reason, gpa, size and USERFAULT"
            if self.helper == HELPER_ARCH_HOOK
            else "common code owns exit_reason, flags, gpa and size"
        )
        return f"under design {self.name!r} {flags}; wrappers may write {self.wrapper_may_write}"


def exit_design(proposals: Iterable[str]) -> ExitDesign:
    """The :class:`ExitDesign` for a VM's proposals (already checked by ``resolve_proposals``)."""
    names = frozenset(proposals)
    helper = HELPER_ARCH_HOOK if ARCH_HOOK in names else HELPER_V3 if V3_HELPER in names else HELPER_UPSTREAM
    return ExitDesign(helper, RWX_FLAGS in names, SYNDROME in names, ARM64_ESR in names, ANNOTATE_EFAULT in names)


def check_arch_designs(arch: str, declared: Iterable[str], proposals: Iterable[str]) -> None:
    """Refuse an exit design the arch plugin does not implement (``ArchInfo.designs``)."""
    have = frozenset(declared)
    missing = [n for n in EXIT_DESIGNS if n in frozenset(proposals) and n not in have]
    if missing:
        raise ValueError(
            f"proposals: arch {arch!r} does not implement {', '.join(map(repr, missing))} "
            f"(its ArchInfo.designs: {', '.join(sorted(have)) or 'none'})"
        )


def access_flags(write: bool, exec_: bool) -> int:
    """``rwx-flags``: exactly one of READ (bit 0), WRITE (bit 1), EXEC (bit 2).

    Sean Christopherson's rule (13 Aug 2024, the same as Anish Moorthy's v5): WRITE if the
    access wrote, else EXEC if it fetched, else READ.
    """
    if write:
        return abi.KVM_MEMORY_EXIT_FLAG_WRITE
    if exec_:
        return abi.KVM_MEMORY_EXIT_FLAG_EXEC
    return abi.KVM_MEMORY_EXIT_FLAG_READ


__all__ = [
    "ANNOTATE_EFAULT",
    "ARCH_HOOK",
    "ARCH_HOOK_FLAGS",
    "ARM64_ESR",
    "DEFAULT_ARCH_DESIGNS",
    "EXIT_DESIGNS",
    "RWX_FLAGS",
    "SYNDROME",
    "V3_HELPER",
    "ExitDesign",
    "access_flags",
    "check_arch_designs",
    "exit_design",
]
