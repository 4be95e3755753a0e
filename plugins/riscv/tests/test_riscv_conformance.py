"""The RISC-V plugin against kvmcore's conformance suite, for each modelled kernel."""

from __future__ import annotations

import pytest

from kvmcore.testing.suite import *  # noqa: F403


@pytest.fixture
def kvmcore_arch_plugin() -> str:
    return "riscv"


@pytest.fixture(params=["6.12", "6.18", "7.3"])
def kvmcore_vm_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"kernel": request.param}
