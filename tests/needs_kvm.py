"""Whether the tests that open /dev/kvm can run here, and why not."""

from __future__ import annotations

import os

import pytest


def _why_no_kvm() -> str | None:
    if os.uname().machine != "x86_64":
        return f"the real-KVM backend's guest is x86-64 only (this machine is {os.uname().machine})"
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist on this machine"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


NO_KVM = _why_no_kvm()
needs_kvm = pytest.mark.skipif(NO_KVM is not None, reason=NO_KVM or "")
