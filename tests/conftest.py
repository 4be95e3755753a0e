from __future__ import annotations

import sys
from pathlib import Path

import pytest

import kvmcore

sys.path.insert(0, str(Path(__file__).parent))
import toyarch  # noqa: E402


@pytest.fixture(autouse=True)
def _no_tracing_leak():
    yield
    kvmcore.disable_hook_tracing()


@pytest.fixture
def toy() -> kvmcore.Arch:
    return kvmcore.load_arch(toyarch)


@pytest.fixture
def vm(toy: kvmcore.Arch) -> kvmcore.VM:
    return kvmcore.VM(toy)


@pytest.fixture
def vcpu(vm: kvmcore.VM) -> kvmcore.VCPU:
    return vm.create_vcpu()


# The fuzzing harness (tests/fuzz) runs each property test with hypothesis's default budget
# in CI; `--hypothesis-profile=long` is a campaign (see docs/robustness.md). Registered here,
# the tests' root conftest, so that the option finds it whichever tests are selected.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
