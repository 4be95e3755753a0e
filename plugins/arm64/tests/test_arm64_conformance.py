"""The arm64 plugin against kvmcore's conformance suite (SQLAlchemy style: the core ships the
tests, each arch runs them from its own test file), under each stage-2 granule."""

from __future__ import annotations

import pytest

from kvmcore.testing.suite import *  # noqa: F403


@pytest.fixture
def kvmcore_arch_plugin() -> str:
    return "arm64"


@pytest.fixture(params=["4K", "16K", "64K"])
def kvmcore_vm_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"granule": request.param}
