"""The fault-path result types whose dataclass methods are written out (kvmcore/_types.py):
each must behave exactly as the ``__init__``, ``__repr__`` and ``__eq__`` that ``@dataclass``
generates for the same fields. The oracle is the standard library: ``dataclasses.make_dataclass``
builds, from each class's own field list, the class ``@dataclass(slots=True)`` would have made.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

import pytest

import kvmcore
from kvmcore import _types

WRITTEN_OUT = (_types.Mapped, _types.Retry, _types.Exit, _types.MemoryFault, _types.Signal, _types.FaultResult)


def generated(cls: type) -> type:
    """What ``@dataclass(slots=True)`` makes of ``cls``'s fields, under the same name."""
    spec = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            spec.append((f.name, f.type))
        else:
            spec.append((f.name, f.type, dataclasses.field(default=f.default)))
    return dataclasses.make_dataclass(cls.__name__, spec, slots=True)


def samples(cls: type) -> list[tuple]:
    """Two argument tuples per class (all fields given), differing in one field each time."""
    base = {
        "Mapped": (0x1234, True, 4096, False, "mapped"),
        "Retry": ("retry", "access flag"),
        "Exit": (-14, "userfault", "bitmap bit set"),
        "MemoryFault": (1 << 3, 0x40001000, 4096),
        "Signal": ("SIGBUS", "BUS_MCEERR_AR", 0x7F0000001000, 12),
        "FaultResult": ({"gfn": 1}, -14, 39, "userfault", None, None, ""),
    }[cls.__name__]
    out = [base]
    for i in range(len(base)):
        changed = list(base)
        changed[i] = {int: lambda v: v + 1, bool: lambda v: not v, str: lambda v: v + "x"}.get(type(base[i]), lambda v: "other")(base[i])
        out.append(tuple(changed))
    return out


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda c: c.__name__)
def test_written_out_methods_are_the_generated_ones(cls: type) -> None:
    ref = generated(cls)
    assert dataclasses.is_dataclass(cls)
    assert "__slots__" in vars(cls) and tuple(cls.__slots__) == tuple(ref.__slots__)
    assert cls.__match_args__ == ref.__match_args__
    assert cls.__hash__ is None and ref.__hash__ is None
    mine, theirs = inspect.signature(cls), inspect.signature(ref)
    assert [(p.name, p.kind, p.default) for p in mine.parameters.values()] == [
        (p.name, p.kind, p.default) for p in theirs.parameters.values()
    ]
    args = samples(cls)
    for a in args:
        assert repr(cls(*a)) == repr(ref(*a))
        # keywords and defaults bind as in the generated __init__
        assert repr(cls(**dict(zip(mine.parameters, a, strict=True)))) == repr(ref(*a))
        for b in args:
            assert (cls(*a) == cls(*b)) is (ref(*a) == ref(*b))
            assert (cls(*a) != cls(*b)) is (ref(*a) != ref(*b))
        assert cls(*a).__eq__(ref(*a)) is NotImplemented  # another class, even with the same fields
        assert cls(*a) != a
    required = [p for p in mine.parameters.values() if p.default is inspect.Parameter.empty]
    for wrong in ((*args[0], 0), args[0][: len(required) - 1] if required else None):
        if wrong is not None:
            with pytest.raises(TypeError):
                ref(*wrong)
            with pytest.raises(TypeError):
                cls(*wrong)


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda c: c.__name__)
def test_written_out_classes_still_work_with_the_dataclass_functions(cls: type) -> None:
    a = samples(cls)[0]
    value = cls(*a)
    names = [f.name for f in dataclasses.fields(cls)]
    assert dataclasses.astuple(value) == copy.deepcopy(a)
    assert list(dataclasses.asdict(value)) == names
    assert dataclasses.replace(value, **{names[1]: samples(cls)[2][1]}) == cls(*samples(cls)[2])
    assert pickle.loads(pickle.dumps(value)) == value
    assert getattr(kvmcore, cls.__name__) is cls
