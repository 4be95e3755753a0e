"""The fault contract (our KVM_ASSERT_TYPE_IS): refusals at load and, in debug mode, at run time."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Optional

import pytest
import toyarch

import kvmcore
from kvmcore import ArchInfo, FaultContractError, Memslot, hookimpl


def plugin_with(fault_type: type, name: str = "bad") -> types.SimpleNamespace:
    """An arch plugin object whose only difference from the toy arch is its fault type."""

    class Plugin:
        @hookimpl
        def arch_info(self) -> ArchInfo:
            return ArchInfo(name=name, fault_type=fault_type)

        decode_fault = staticmethod(toyarch.decode_fault)

    Plugin.__name__ = f"kvmcore_{name}"
    return Plugin()


@dataclass(slots=True)
class NoSlot:
    gfn: int
    exec: bool
    write: bool
    is_private: bool


@dataclass(slots=True)
class IntWrite:
    gfn: int
    exec: bool
    write: int  # the kernel's __typecheck would refuse int for bool
    is_private: bool
    slot: Memslot | None = None


@dataclass(slots=True)
class BoolGfn:
    gfn: bool
    exec: bool
    write: bool
    is_private: bool
    slot: Memslot | None = None


@dataclass(slots=True)
class SlotNotOptional:
    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: Memslot


@dataclass(slots=True)
class OptionalSpelling:
    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: Optional[Memslot] = None  # noqa: UP045 - the old spelling is the same type


class NotADataclass:
    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: Memslot | None


@pytest.mark.parametrize(
    "fault_type,field,expected,found",
    [
        (NoSlot, "slot", "Memslot | None", "no such field in NoSlot"),
        (IntWrite, "write", "bool", "int"),
        (BoolGfn, "gfn", "int", "bool"),
        (SlotNotOptional, "slot", "Memslot | None", "Memslot"),
    ],
)
def test_contract_refuses_at_load(fault_type: type, field: str, expected: str, found: str) -> None:
    with pytest.raises(FaultContractError) as info:
        kvmcore.VM(plugin_with(fault_type))
    err = info.value
    assert (err.plugin, err.field, err.expected, err.found) == ("bad", field, expected, found)
    assert str(err) == f"arch plugin 'bad' breaks the fault contract: field {field!r} must be {expected}, found {found}"


def test_contract_refuses_a_class_that_is_not_a_dataclass() -> None:
    with pytest.raises(FaultContractError, match=r"field 'fault_type' must be a dataclass, found class NotADataclass"):
        kvmcore.VM(plugin_with(NotADataclass))


def test_contract_accepts_optional_spelling() -> None:
    vm = kvmcore.VM(plugin_with(OptionalSpelling, name="ok"))
    assert vm.arch.name == "ok"


def test_every_decoded_fault_is_checked_debug_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin whose annotations are right but whose decode puts an int in ``write``: the
    facade's cheap ``type(x) is bool`` checks catch it on every call, KVMCORE_DEBUG or not."""

    class Liar:
        @hookimpl
        def arch_info(self) -> ArchInfo:
            return ArchInfo(name="liar", fault_type=toyarch.ToyFault)

        @hookimpl
        def decode_fault(self, vcpu, raw):
            return toyarch.ToyFault(gfn=raw["gpa"] >> 12, exec=False, write=1, is_private=False)  # type: ignore[arg-type]

    raw = {"gpa": 0x1000}
    for debug in ("0", "1"):
        monkeypatch.setenv("KVMCORE_DEBUG", debug)
        vcpu = kvmcore.VM(Liar()).create_vcpu()
        with pytest.raises(kvmcore.PluginError, match=r"hook decode_fault: .*'liar'.*field 'write' must be bool, found int 1"):
            vcpu.handle_fault(raw)


@dataclass
class Base:
    gfn: int
    exec: int  # the subclass's annotation wins, as in typing.get_type_hints


@dataclass(slots=True)
class Inherited(Base):
    exec: bool
    write: bool
    is_private: bool
    slot: Optional[Memslot] = None  # noqa: UP045 - the old spelling is the same type
    info: NoSuchName | None = None  # type: ignore[name-defined]  # noqa: F821 - not a common field


@pytest.mark.parametrize("fault_type", [NoSlot, IntWrite, BoolGfn, SlotNotOptional, OptionalSpelling, toyarch.ToyFault])
def test_only_the_common_annotations_are_evaluated_as_get_type_hints_does(fault_type: type) -> None:
    """typing.get_type_hints is the oracle for the five fields the contract reads."""
    import typing

    from kvmcore.plugin.contract import common_type_hints

    expected = {k: v for k, v in typing.get_type_hints(fault_type).items() if k in kvmcore.COMMON_FIELDS}
    assert common_type_hints(fault_type) == expected


def test_installed_fault_types_have_the_common_annotations_get_type_hints_finds() -> None:
    import typing

    from kvmcore.plugin.contract import common_type_hints

    arches = kvmcore.installed_arches()
    assert arches
    for name in arches:
        fault_type = kvmcore.load_arch(name).info.fault_type
        expected = {k: v for k, v in typing.get_type_hints(fault_type).items() if k in kvmcore.COMMON_FIELDS}
        assert common_type_hints(fault_type) == expected, name


def test_an_annotation_outside_the_contract_is_not_evaluated() -> None:
    """Like KVM_ASSERT_TYPE_IS, only the five fields are checked: ``info`` names a type the
    module does not define (as a fault module importing its tables lazily would)."""
    from kvmcore.plugin.contract import common_type_hints

    assert common_type_hints(Inherited) == {"gfn": int, "exec": bool, "write": bool, "is_private": bool,
                                            "slot": Optional[Memslot]}  # noqa: UP045
    vm = kvmcore.VM(plugin_with(Inherited, name="ok"))
    assert vm.arch.name == "ok"


def test_an_unresolvable_common_annotation_is_refused() -> None:
    @dataclass(slots=True)
    class Unresolvable:
        gfn: int
        exec: bool
        write: NoSuchType  # type: ignore[name-defined]  # noqa: F821
        is_private: bool
        slot: Memslot | None = None

    with pytest.raises(FaultContractError) as info:
        kvmcore.VM(plugin_with(Unresolvable))
    assert (info.value.field, info.value.expected) == ("annotations", "resolvable type hints")
    assert "NoSuchType" in info.value.found


def test_a_nested_forward_reference_is_resolved_as_get_type_hints_resolves_it() -> None:
    """``Optional["Memslot"]`` (no postponed annotations): the five-field evaluation leaves the
    inner string unresolved, and the check falls back to typing.get_type_hints, as before."""
    namespace: dict[str, object] = {"dataclass": dataclass, "Optional": Optional, "Memslot": Memslot}
    exec(  # noqa: S102 - a class whose annotations are evaluated at definition, unlike this module's
        "@dataclass(slots=True)\n"
        "class NestedForwardRef:\n"
        "    gfn: int\n    exec: bool\n    write: bool\n    is_private: bool\n"
        "    slot: Optional['Memslot'] = None\n",
        namespace,
    )
    fault_type = namespace["NestedForwardRef"]
    assert isinstance(fault_type, type)
    fault_type.__module__ = __name__  # get_type_hints resolves 'Memslot' in this module, which imports it
    kvmcore.check_fault_type(fault_type, "ok")
    assert kvmcore.VM(plugin_with(fault_type, name="ok")).arch.name == "ok"
