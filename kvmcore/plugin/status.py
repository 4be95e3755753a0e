"""A row of ``kvmcore plugins`` (:func:`kvmcore.list_plugins`); its own module so that loading an
arch, which does not need it, does not define it (each dataclass costs a fraction of a millisecond
of start-up, its methods compiled from source)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvmcore._dataclass_methods import fields_eq, fields_repr
from kvmcore._types import _FACTORY


@dataclass(slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore._dataclass_methods
class PluginStatus:
    """A row of ``kvmcore plugins``: an installed plugin and whether it loaded."""

    name: str
    kind: str  # "arch" or "extension"
    dist: str | None
    version: str | None
    module: str
    hooks: list[str] = field(default_factory=list)
    wrappers: list[str] = field(default_factory=list)
    error: str | None = None

    def __init__(
        self,
        name: str,
        kind: str,
        dist: str | None,
        version: str | None,
        module: str,
        hooks: list[str] = _FACTORY,
        wrappers: list[str] = _FACTORY,
        error: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.dist = dist
        self.version = version
        self.module = module
        self.hooks = [] if hooks is _FACTORY else hooks
        self.wrappers = [] if wrappers is _FACTORY else wrappers
        self.error = error

    __repr__ = fields_repr
    __eq__ = fields_eq

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "distribution": self.dist,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "wrappers": self.wrappers,
            "error": self.error,
        }
