"""A row of ``kvmcore plugins`` (:func:`kvmcore.list_plugins`); its own module so that loading an
arch, which does not need it, does not define it (each dataclass costs a fraction of a millisecond
of start-up, its methods compiled from source)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
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
