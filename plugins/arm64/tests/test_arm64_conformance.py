"""The arm64 plugin against kvmcore's conformance suite (SQLAlchemy style: the core ships the
tests, each arch runs them from its own test file), under each stage-2 granule and kernel."""

from __future__ import annotations

import pytest

from kvmcore.testing.suite import *  # noqa: F403


@pytest.fixture
def kvmcore_arch_plugin() -> str:
    return "arm64"


@pytest.fixture(params=[(g, k) for k in ("6.12", "6.18", "7.3") for g in ("4K", "16K", "64K")], ids=lambda p: f"{p[0]}-{p[1]}")
def kvmcore_vm_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    granule, kernel = request.param
    return {"granule": granule, "kernel": kernel}
