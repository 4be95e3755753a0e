"""Build throwaway distributions (dist-info + modules) in a directory put on sys.path."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import kvmcore

ARCH_SOURCE = '''
from dataclasses import dataclass
import kvmcore
from kvmcore import ArchInfo, Memslot, hookimpl

@dataclass(slots=True)
class {cls}:
    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: {slot_type} = None

@hookimpl
def arch_info():
    return ArchInfo(name={name!r}, fault_type={cls}, registers=("gpa",))

@hookimpl
def decode_fault(vcpu, raw):
    return {cls}(gfn=raw["gpa"] >> 12, exec=False, write=bool(raw.get("write", 0)), is_private=False)
'''


def arch_module(name: str, slot_type: str = "Memslot | None") -> str:
    return ARCH_SOURCE.format(cls=f"{name.capitalize()}Fault", name=name, slot_type=slot_type)


def make_dist(root: Path, dist: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str], version: str = "0.1.0") -> None:
    """Write ``modules`` and a ``<dist>-<version>.dist-info`` declaring ``entry_points`` under ``root``."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


def activate(root: Path, monkeypatch) -> None:
    """Put ``root`` first on sys.path and forget every cached entry point and arch."""
    monkeypatch.syspath_prepend(str(root))
    kvmcore.reset_plugins()


def forget(modules: list[str]) -> None:
    for module in modules:
        sys.modules.pop(module, None)
