"""``--kernel``, ``--upstream`` and ``--proposals``: which kernel and proposals a command models.

Shared by ``kvmcore decode``, ``run`` and ``replay``; a scenario may name them too (top-level
``kernel`` and ``proposals``), the command line wins.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import kvmcore


class ModelChoice(NamedTuple):
    """The kernel (None: the default, the newest) and proposals (None: each arch's defaults).

    A named tuple (defined on every ``kvmcore decode``, where a frozen dataclass costs several
    times as much to define)."""

    kernel: str | None = None
    proposals: tuple[str, ...] | None = None

    def over(self, other: ModelChoice) -> ModelChoice:
        """This choice, with ``other`` filling what this one leaves open."""
        return ModelChoice(
            self.kernel if self.kernel is not None else other.kernel,
            self.proposals if self.proposals is not None else other.proposals,
        )

    def vm_kwargs(self, arch: str) -> dict[str, Any]:
        """``kernel=``/``proposals=`` for ``kvmcore.VM(arch, ...)``: proposals that do not apply to
        ``arch`` are left out, so one list can serve several arches."""
        kwargs: dict[str, Any] = {}
        if self.kernel is not None:
            kwargs["kernel"] = self.kernel
        if self.proposals is not None:
            kwargs["proposals"] = tuple(p for p in self.proposals if kvmcore.PROPOSALS[p].applies_to(arch))
        return kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", metavar="VERSION", choices=kvmcore.KERNEL_VERSIONS,
                        help=f"kernel to model: {', '.join(kvmcore.KERNEL_VERSIONS)} (default {kvmcore.KERNEL_VERSIONS[-1]})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--upstream", action="store_true", help="upstream mode: no proposals, that kernel exactly")
    group.add_argument("--proposals", metavar="A,B", help=f"exactly these proposals ({', '.join(kvmcore.PROPOSALS)})")


def from_args(args: argparse.Namespace) -> ModelChoice:
    """The choice the command line makes; ValueError naming an unknown proposal."""
    proposals: tuple[str, ...] | None = None
    if args.upstream:
        proposals = ()
    elif args.proposals is not None:
        proposals = tuple(p.strip() for p in args.proposals.split(",") if p.strip())
        check_names(proposals, "--proposals")
    return ModelChoice(args.kernel, proposals)


def check_names(names: tuple[str, ...], where: str) -> None:
    unknown = [n for n in names if n not in kvmcore.PROPOSALS]
    if unknown:
        raise ValueError(f"{where}: unknown proposal {unknown[0]!r} (known: {', '.join(kvmcore.PROPOSALS)})")


def describe(vm: Any) -> str:
    """``kernel 7.3, proposals: syndrome, userfault`` or ``kernel 6.18, upstream (no proposals)``."""
    names = sorted(vm.proposals)
    return f"kernel {vm.kernel}, " + (f"proposals: {', '.join(names)}" if names else "upstream (no proposals)")


def as_dict(vm: Any) -> dict[str, Any]:
    return {"kernel": str(vm.kernel), "proposals": sorted(vm.proposals)}
