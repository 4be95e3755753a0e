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
