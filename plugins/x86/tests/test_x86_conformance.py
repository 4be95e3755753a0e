"""The x86 plugin against kvmcore's conformance suite, on each vendor and VM type, and on
6.12 for the VM types it has (no TDX before 6.16)."""

from __future__ import annotations

import pytest

from kvmcore.testing.suite import *  # noqa: F403

VMS = {
    "vmx": {"vendor": "vmx"},
    "svm": {"vendor": "svm"},
    "sw_protected": {"vm_type": "sw_protected"},
    "snp": {"vm_type": "snp"},
    "tdx": {"vm_type": "tdx"},
    "vmx-6.12": {"vendor": "vmx", "kernel": "6.12"},
    "snp-6.12": {"vm_type": "snp", "kernel": "6.12"},
    "sw_protected-6.18": {"vm_type": "sw_protected", "kernel": "6.18"},
}


@pytest.fixture
def kvmcore_arch_plugin() -> str:
    return "x86"


@pytest.fixture(params=list(VMS))
def kvmcore_vm_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    return VMS[request.param]
