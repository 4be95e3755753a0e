"""kvmcore's conformance suite, run against this plugin (the core ships the tests)."""

from __future__ import annotations

import kvmcore
import pytest
from kvmcore.testing.suite import *  # noqa: F403


@pytest.fixture
def kvmcore_arch_plugin() -> str:
    return "example"  # the installed entry point; or return the module kvmcore_example.plugin


def test_reserved_status_bits_are_a_decode_error(kvmcore_vcpu: kvmcore.VCPU) -> None:
    with pytest.raises(kvmcore.DecodeError, match=r"status=0x80: reserved bits 0x80 are set"):
        kvmcore_vcpu.handle_fault({"gpa": 0x1000, "status": 0x80})
