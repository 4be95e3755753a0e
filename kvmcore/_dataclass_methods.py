"""``__repr__``, ``__eq__`` and ``__hash__`` for a dataclass declared with ``repr=False,
eq=False``: what ``@dataclass`` generates, worked out from the class's fields.

CPython 3.11's ``@dataclass`` compiles every method it generates from source text when the
class is made, 2-4 M instructions a class: with some twenty types on its path that was a sixth
of ``kvmcore decode``'s start-up. kvmcore's types on that path (the fault path's results, the
arches' fault and syndrome types...) write their ``__init__`` out, since it runs on every fault,
and take these three, shared, instead of a generated copy each::

    @dataclass(slots=True, init=False, repr=False, eq=False)
    class Mapped:
        pfn: int
        ...
        def __init__(self, pfn: int, ...) -> None: ...

        __repr__ = kvmcore.fields_repr
        __eq__ = kvmcore.fields_eq

and a frozen one also ``__hash__ = kvmcore.fields_hash``. They stay dataclasses (``fields()``,
``replace()``, ``asdict()``, pickling); ``tests/test_types.py`` holds every such class to what
``dataclasses.make_dataclass`` generates for the same fields. The field names a class's
methods read are worked out at its first call, once.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

#: class -> (names in repr, their values, the values compared, the values hashed)
_READERS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]], Callable[[Any], tuple[Any, ...]],
                           Callable[[Any], tuple[Any, ...]]]] = {}


def _values(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A reader of the tuple of ``names``' values (``attrgetter`` gives one name's value bare)."""
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    if not names:
        return lambda obj: ()
    return attrgetter(*names)


def _readers(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]], Callable[[Any], tuple[Any, ...]],
                                 Callable[[Any], tuple[Any, ...]]]:
    readers = _READERS.get(cls)
    if readers is None:
        found = fields(cls)
        shown = [f.name for f in found if f.repr]
        readers = _READERS[cls] = (
            tuple(shown),
            _values(shown),
            _values([f.name for f in found if f.compare]),
            # dataclass hashes the fields with hash=True, or hash=None (the default) and compare=True
            _values([f.name for f in found if (f.compare if f.hash is None else f.hash)]),
        )
    return readers


@reprlib.recursive_repr()  # as @dataclass's: "..." for an object met again inside its own repr
def fields_repr(self: object) -> str:
    """``Class(field=value, ...)`` over the fields shown in a repr (``@dataclass``'s ``__repr__``)."""
    names, values, _, _ = _readers(self.__class__)
    return f"{self.__class__.__qualname__}({', '.join(f'{n}={v!r}' for n, v in zip(names, values(self), strict=True))})"


def fields_eq(self: object, other: object) -> bool:
    """Equal to an object of the same class whose compared fields are equal, as tuples compare;
    ``NotImplemented`` for another class (``@dataclass``'s ``__eq__``)."""
    if other.__class__ is self.__class__:
        compared = _readers(self.__class__)[2]
        return compared(self) == compared(other)
    return NotImplemented


def fields_hash(self: object) -> int:
    """The hash of the tuple of the hashed fields (``@dataclass(frozen=True)``'s ``__hash__``)."""
    return hash(_readers(self.__class__)[3](self))
