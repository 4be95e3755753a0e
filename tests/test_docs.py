"""Docs are tested (datasette's idea): every hook is documented with its exact signature and
has a test named after it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import toyarch

import kvmcore

ROOT = Path(__file__).resolve().parent.parent


def hook_signatures() -> dict[str, str]:
    arch = kvmcore.load_arch(toyarch)
    hooks = {}
    for name in dir(arch.pm.hook):
        caller = getattr(arch.pm.hook, name)
        if getattr(caller, "spec", None) is not None:
            hooks[name] = f"{name}({', '.join(caller.spec.argnames)})"
    return hooks


def test_hook_names_match_the_public_list() -> None:
    assert sorted(hook_signatures()) == sorted(kvmcore.HOOK_NAMES)


@pytest.mark.parametrize("name,signature", sorted(hook_signatures().items()))
def test_every_hook_is_documented_with_its_signature(name: str, signature: str) -> None:
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert f"\n## {signature}\n" in text, f"docs/hooks.md needs a section '## {signature}'"


@pytest.mark.parametrize("name", sorted(kvmcore.HOOK_NAMES))
def test_every_hook_has_a_test(name: str) -> None:
    pattern = re.compile(rf"def test_hook_\w*{name}")
    sources = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    assert pattern.search(sources), f"add a test function named test_hook_..{name}.. in tests/"
