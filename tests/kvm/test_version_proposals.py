"""``vm.kernel`` and ``vm.proposals``: parsing, comparison, resolution and their errors."""

from __future__ import annotations

import pytest

import kvmcore
from kvmcore import KERNEL_VERSIONS, PROPOSALS, KernelVersion


def test_modelled_versions_and_default() -> None:
    assert KERNEL_VERSIONS == ("6.12", "6.18", "7.3")
    assert str(kvmcore.VM("arm64").kernel) == "7.3"


@pytest.mark.parametrize("value", ["6.12", "6.18", "7.3", (6, 18), KernelVersion(7, 3)])
def test_kernel_accepts_each_form(value) -> None:
    vm = kvmcore.VM("x86", kernel=value)
    assert str(vm.kernel) in KERNEL_VERSIONS
    assert isinstance(vm.kernel, KernelVersion)


@pytest.mark.parametrize("value", ["6.17", "7.2", "6", "", "latest", (6,), (6, 18, 1), 6.18, None, True])
def test_kernel_refuses_unmodelled_versions_naming_the_parameter(value) -> None:
    with pytest.raises(ValueError, match=r"kernel=.*6\.12, 6\.18, 7\.3"):
        kvmcore.VM("riscv", kernel=value)


def test_comparisons_with_tuples_strings_and_versions() -> None:
    v = KernelVersion.parse("6.18")
    assert v == (6, 18) and v == "6.18" and v == KernelVersion(6, 18)
    assert v > (6, 12) and v >= (6, 18) and v < (7, 3) and v <= "7.3" and not v > (6, 18)
    assert (6, 12) < v  # reflected
    assert v != (6, 19) and v != "bogus" and v != 6
    assert str(v) == "6.18" and repr(v) == "KernelVersion('6.18')"
    assert hash(v) == hash((6, 18))
    assert sorted([KernelVersion(7, 3), KernelVersion(6, 12), KernelVersion(6, 18)]) == [(6, 12), (6, 18), (7, 3)]
    with pytest.raises(TypeError):
        v < 6.2  # noqa: B015


def test_default_proposals_per_arch() -> None:
    # v3-helper: the memory-fault exit design kvmcore models by default (docs/designs.md)
    assert kvmcore.VM("x86").proposals == {"userfault", "syndrome", "v3-helper"}
    assert kvmcore.VM("arm64").proposals == {"userfault", "syndrome", "v3-helper", "arm64-private"}
    assert kvmcore.VM("riscv").proposals == {
        "userfault", "syndrome", "v3-helper", "riscv-userfault", "riscv-gmem", "riscv-private",
    }  # fmt: skip


def test_upstream_mode_and_has_proposal() -> None:
    vm = kvmcore.VM("arm64", kernel="6.18", proposals=())
    assert vm.proposals == frozenset()
    assert not vm.has_proposal("userfault")
    vm = kvmcore.VM("arm64", proposals=["syndrome"])
    assert vm.has_proposal("syndrome") and not vm.has_proposal("arm64-private")
    with pytest.raises(ValueError, match="'userfalt'.*known: userfault"):
        vm.has_proposal("userfalt")


@pytest.mark.parametrize(
    ("arch", "proposals", "match"),
    [
        ("x86", ["userfault", "nope"], r"unknown 'nope' \(known: userfault"),
        ("x86", "userfault", "not a string"),
        ("x86", 3, "iterable"),
        ("x86", ["riscv-gmem"], "'riscv-gmem' applies to riscv only, not 'x86'"),
        ("riscv", ["riscv-userfault"], "'riscv-userfault' needs 'userfault'"),
        ("riscv", ["riscv-private"], "'riscv-private' needs 'riscv-gmem'"),
    ],
)
def test_bad_proposals_name_the_problem(arch, proposals, match) -> None:
    with pytest.raises(ValueError, match=match):
        kvmcore.VM(arch, proposals=proposals)


def test_conflicts_are_refused(monkeypatch) -> None:
    from kvmcore.kvm import proposals as mod

    a = mod.Proposal("a", "A", "test", "", conflicts=("b",))
    b = mod.Proposal("b", "B", "test", "")
    monkeypatch.setattr(mod, "PROPOSALS", {"a": a, "b": b})
    assert mod.resolve_proposals("x86", ["a"]) == {"a"}
    with pytest.raises(ValueError, match="'a' and 'b' conflict"):
        mod.resolve_proposals("x86", ["a", "b"])


def test_every_proposal_says_where_it_comes_from() -> None:
    for name, proposal in PROPOSALS.items():
        assert proposal.name == name and proposal.title and proposal.source and proposal.summary
        assert not hasattr(proposal, "__dict__")
        for other in (*proposal.conflicts, *proposal.requires):
            assert other in PROPOSALS
