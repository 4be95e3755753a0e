from __future__ import annotations

from collections.abc import Iterator

import pytest
from needs_kvm import NO_KVM

from kvmcore import KvmError


@pytest.fixture
def system() -> Iterator[object]:
    if NO_KVM:
        pytest.skip(NO_KVM)
    from kvmcore.realkvm.kvm import System

    try:
        sys_ = System()
    except KvmError as exc:  # pragma: no cover - e.g. a container without the device's cgroup access
        pytest.skip(f"/dev/kvm cannot be opened: {exc}")
    with sys_:
        yield sys_
