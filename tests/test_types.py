"""The dataclasses whose ``__init__`` is written out and whose ``__repr__``, ``__eq__`` and
``__hash__`` are kvmcore's shared ones (kvmcore/_dataclass_methods.py): each must behave exactly
as the methods ``@dataclass`` generates for the same fields. The oracle is the standard library: ``dataclasses.make_dataclass``
builds, from each class's own field list and parameters, the class ``@dataclass`` would have made.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest

import kvmcore
from kvmcore import _syndrome, _types
from kvmcore.kvm import host_mm, proposals, stage2, version
from kvmcore.plugin import status


class Fault:
    """Some fault type, for ArchInfo.fault_type."""


#: class -> two full argument tuples; every one-field change of the first is also tried.
SAMPLES: dict[type, tuple[tuple[Any, ...], ...]] = {
    _types.Mapped: ((0x1234, True, 4096, False, "mapped"),),
    _types.Retry: (("retry", "access flag"),),
    _types.Exit: ((-14, "userfault", "bitmap bit set"),),
    _types.MemoryFault: ((1 << 3, 0x40001000, 4096),),
    _types.Signal: (("SIGBUS", "BUS_MCEERR_AR", 0x7F0000001000, 12),),
    _types.FaultResult: (({"gfn": 1}, -14, 39, "userfault", None, None, ""),),
    _types.TraceEvent: (("guest_fault", {"ipa": 0x1000}, {"esr": 0x93C08007}),),
    _types.ArchInfo: (
        (
            "toy",
            Fault,
            12,
            48,
            ("r1",),
            "a toy",
            {"granule": ("4K",)},
            ("private",),
            ("not_present",),
            ("v3-helper",),
            {"toy_fault": "gpa 0x[0-9a-f]+"},
        ),
        (
            "toy",
            Fault,
            12,
            48,
            ("r1",),
            "a toy",
            (),
            ("private",),
            ("not_present",),
            ("v3-helper",),
            (),
        ),
    ),
    proposals.Proposal: (("p", "P", "mail", "summary", ("arm64",), False, ("q",), ("r",), "why"),),
    stage2.Stage2Entry: ((0x40000, 0x1234, 4096, True, False, True),),
    host_mm.Vma: ((0x7F0000000000, 0x7F0000200000, 3, 4096, 0x100, True),),
    _syndrome.Syndrome: (("arm64", {"ec": 0x24}, {"ec": "exception class"}, True, None),),
    status.PluginStatus: (
        ("arm64", "arch", "kvmcore-arm64", "0.1.0", "kvmcore_arm64.plugin", ["a"], ["b"], None),
    ),
}


def _values(obj: Any) -> tuple[Any, ...]:
    """A real instance's field values, as sample arguments (read with getattr, not its methods)."""
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


def _plugin_samples() -> None:
    """The arches' written-out types, sampled from real decodes (inputs only: both the class
    and its generated twin are built from them)."""
    from kvmcore_arm64 import esr
    from kvmcore_riscv.fault_type import RiscvFault
    from kvmcore_x86.fault import X86Fault

    SAMPLES[esr.FscInfo] = (_values(esr.fsc_info(0x07)), _values(esr.fsc_info(0x10)))
    SAMPLES[esr.EsrInfo] = (
        _values(esr.decode_esr(0x93C08007)),
        _values(esr.decode_esr(0x92000061)),
    )
    for arch, raw, cls in (
        ("arm64", {"esr": 0x93C08007, "far": 0x40001008, "hpfar": 0x400010}, None),
        (
            "riscv",
            {"scause": 21, "htval": 0x10000000, "stval": 0x40000000, "htinst": 0},
            RiscvFault,
        ),
        ("x86", {"vendor": "vmx", "exit_qualification": 0x182, "gpa": 0xFD000000}, X86Fault),
    ):
        fault = kvmcore.load_arch(arch).decode_fault(kvmcore.VM(arch).create_vcpu(), raw)
        assert cls is None or type(fault) is cls
        SAMPLES[type(fault)] = (_values(fault),)


_plugin_samples()
WRITTEN_OUT = tuple(SAMPLES)
#: Only __init__ written out (their own __repr__/__eq__/__hash__ are not the generated ones).
INIT_ONLY = {
    _types.Memslot: (1, 0x40000, 512, 0x7F0000000000, 0, 12, None, 0, None, None),
    version.KernelVersion: (6, 18),
}


def generated(cls: type) -> type:
    """What ``@dataclass`` makes of ``cls``'s fields, with ``cls``'s frozen/eq/slots, same name."""
    spec: list[Any] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            spec.append((f.name, f.type, dataclasses.field(default=f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            spec.append((f.name, f.type, dataclasses.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, f.type))
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    # Memslot and KernelVersion have eq=False (their own __eq__, or identity)
    return dataclasses.make_dataclass(
        cls.__name__, spec, frozen=params.frozen, eq=cls not in INIT_ONLY, slots=True
    )


def variants(cls: type, bases: tuple[tuple[Any, ...], ...] | None = None) -> list[tuple[Any, ...]]:
    """Each sample, then each one-field change of it."""
    out: list[tuple[Any, ...]] = []
    for base in SAMPLES[cls] if bases is None else bases:
        out.append(base)
        for i, value in enumerate(base):
            changed = list(base)
            if type(value) is bool:
                changed[i] = not value
            elif type(value) is int:
                changed[i] = value + 1
            elif type(value) is str:
                changed[i] = value + "x"
            else:
                changed[i] = None if value is not None else "other"
            out.append(tuple(changed))
    return out


def hash_or_error(obj: Any) -> Any:
    """``hash(obj)``, or the TypeError's type when a field is unhashable (a dict, say)."""
    try:
        return hash(obj)
    except TypeError as exc:
        return type(exc)


def parameters(f: Any) -> list[tuple[str, Any, str]]:
    return [(p.name, p.kind, repr(p.default)) for p in inspect.signature(f).parameters.values()]


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda c: c.__name__)
def test_written_out_methods_are_the_generated_ones(cls: type) -> None:
    ref = generated(cls)
    assert dataclasses.is_dataclass(cls)
    assert "__slots__" in vars(cls) and tuple(cls.__slots__) == tuple(ref.__slots__)
    assert cls.__match_args__ == ref.__match_args__  # type: ignore[attr-defined]
    frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert (cls.__hash__ is None) is (ref.__hash__ is None) is (not frozen)
    assert parameters(cls) == parameters(ref)
    names = list(inspect.signature(cls).parameters)
    args = variants(cls)
    for a in args:
        mine, theirs = cls(*a), ref(*a)
        assert repr(mine) == repr(theirs)
        assert repr(cls(**dict(zip(names, a, strict=True)))) == repr(theirs)  # by keyword
        for b in args:
            assert (mine == cls(*b)) is (theirs == ref(*b))
            assert (mine != cls(*b)) is (theirs != ref(*b))
        assert mine.__eq__(theirs) is NotImplemented  # another class, even with the same fields
        assert mine != a
        if frozen:
            for obj in (mine, theirs):
                with pytest.raises(dataclasses.FrozenInstanceError):
                    setattr(obj, names[0], a[0])
                with pytest.raises(dataclasses.FrozenInstanceError):
                    delattr(obj, names[0])
            assert hash_or_error(mine) == hash_or_error(theirs)
    required = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.default is inspect.Parameter.empty
    ]
    for wrong in ((*args[0], 0), args[0][: len(required) - 1] if required else None):
        if wrong is not None:
            with pytest.raises(TypeError):
                ref(*wrong)
            with pytest.raises(TypeError):
                cls(*wrong)


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda c: c.__name__)
def test_defaults_are_the_generated_ones(cls: type) -> None:
    """Omitted arguments: the same values, and a fresh object from each default_factory."""
    ref = generated(cls)
    sig = inspect.signature(cls)
    required = [name for name, p in sig.parameters.items() if p.default is inspect.Parameter.empty]
    a = SAMPLES[cls][0][: len(required)]
    assert repr(cls(*a)) == repr(ref(*a))
    factories = [
        f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING
    ]
    for name in factories:
        assert getattr(cls(*a), name) is not getattr(cls(*a), name)


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda c: c.__name__)
def test_written_out_classes_still_work_with_the_dataclass_functions(cls: type) -> None:
    a = SAMPLES[cls][0]
    value = cls(*a)
    names = [f.name for f in dataclasses.fields(cls)]
    ref = generated(cls)(*a)
    assert dataclasses.astuple(value) == dataclasses.astuple(ref)
    assert (
        dataclasses.asdict(value) == dataclasses.asdict(ref)
        and list(dataclasses.asdict(value)) == names
    )
    other = variants(cls, (a,))[-1]
    assert dataclasses.replace(value, **{names[-1]: other[-1]}) == cls(*other)
    assert pickle.loads(pickle.dumps(value)) == value


@pytest.mark.parametrize("cls", list(INIT_ONLY), ids=lambda c: c.__name__)
def test_written_out_init_is_the_generated_one(cls: type) -> None:
    ref = generated(cls)
    assert parameters(cls) == parameters(ref)
    a = INIT_ONLY[cls]
    names = [f.name for f in dataclasses.fields(cls)]
    assert [getattr(cls(*a), n) for n in names] == [getattr(ref(*a), n) for n in names]
    if cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(*a), names[0], 0)


def test_public_names_are_these_classes() -> None:
    for cls in (*WRITTEN_OUT, *INIT_ONLY):
        if cls.__module__.startswith("kvmcore."):
            assert getattr(kvmcore, cls.__name__) is cls


# --- the shared methods themselves, on fields with every option ------------------------------------
@dataclasses.dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)
class _Options:
    a: int
    hidden: int = dataclasses.field(default=0, repr=False)
    loose: int = dataclasses.field(default=0, compare=False)
    unhashed: int = dataclasses.field(default=0, hash=False)
    hashed_only: int = dataclasses.field(default=0, compare=False, hash=True)

    def __init__(self, a: int, hidden: int = 0, loose: int = 0, unhashed: int = 0, hashed_only: int = 0) -> None:
        for name, value in (("a", a), ("hidden", hidden), ("loose", loose), ("unhashed", unhashed), ("hashed_only", hashed_only)):
            object.__setattr__(self, name, value)

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq
    __hash__ = kvmcore.fields_hash


@dataclasses.dataclass(slots=True, init=False, repr=False, eq=False)
class _One:
    x: float

    def __init__(self, x: float) -> None:
        self.x = x

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq


@dataclasses.dataclass(slots=True, init=False, repr=False, eq=False)
class _Empty:
    def __init__(self) -> None:
        pass

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq


def test_shared_methods_follow_each_field_option() -> None:
    """repr=False hides a field, compare=False leaves it out of ==, hash=False/True takes it out
    of or into the hash: what @dataclass generates for the same fields (make_dataclass)."""
    twin = dataclasses.make_dataclass(
        "_Options",
        [("a", int), ("hidden", int, dataclasses.field(default=0, repr=False)),
         ("loose", int, dataclasses.field(default=0, compare=False)),
         ("unhashed", int, dataclasses.field(default=0, hash=False)),
         ("hashed_only", int, dataclasses.field(default=0, compare=False, hash=True))],
        frozen=True,
    )
    values = (1, 2, 3, 4, 5)
    assert repr(_Options(*values)) == repr(twin(*values)).replace(twin.__qualname__, "_Options") == "_Options(a=1, loose=3, unhashed=4, hashed_only=5)"
    for i in range(len(values)):
        changed = tuple(v + 10 if k == i else v for k, v in enumerate(values))
        assert (_Options(*values) == _Options(*changed)) == (twin(*values) == twin(*changed)), i
        assert (hash(_Options(*values)) == hash(_Options(*changed))) == (hash(twin(*values)) == hash(twin(*changed))), i
    assert hash(_Options(*values)) == hash(twin(*values))  # both hash the tuple (a, hidden, hashed_only)


def test_shared_methods_with_one_field_and_none() -> None:
    """One field compares as a 1-tuple (the same NaN object is equal to itself, as @dataclass's
    ``(self.x,) == (other.x,)``); no fields: every two are equal; another class: NotImplemented."""
    nan = float("nan")
    assert _One(nan) == _One(nan) and _One(1.0) != _One(2.0)
    assert repr(_One(1.5)) == "_One(x=1.5)" and repr(_Empty()) == "_Empty()"
    assert _Empty() == _Empty() and _One.__hash__ is None
    assert kvmcore.fields_eq(_One(1.0), _Empty()) is NotImplemented
