"""What check-host feeds the model for each access (no /dev/kvm needed). Expected values from the
Intel SDM (vol. 3, "Exit Qualification for EPT Violations": bit 0 read, 1 write, 2 fetch, 7 GLA
valid, 8 the access was to the final translation) and the AMD APM (vol. 2, #NPF EXITINFO1: bit 1
R/W, 2 U/S (always 1: nested walks are user accesses), 4 I/D, 32 the fault was on the final
guest physical address)."""

from __future__ import annotations

import pytest

from kvmcore.cli.host_accesses import CONFIGS, AccessCase, model_raw

NO_SLOT = next(c for c in CONFIGS if c.no_slot)
RW = next(c for c in CONFIGS if c.name == "rw")


@pytest.mark.parametrize("access,width,raw", [
    ("read", 4, {"exit_qualification": 0x181, "gpa": 0x1000_0000, "len": 4}),
    ("write", 2, {"exit_qualification": 0x182, "gpa": 0x1000_0000, "len": 2, "data": 0x7788}),
    ("fetch", 8, {"exit_qualification": 0x184, "gpa": 0x1000_0000}),
])
def test_vmx_input(access: str, width: int, raw: dict) -> None:
    assert model_raw("vmx", AccessCase(NO_SLOT, access, width)) == raw


@pytest.mark.parametrize("access,width,raw", [
    ("read", 8, {"vendor": "svm", "error_code": 0x1_0000_0004, "gpa": 0x20_0000, "len": 8}),
    ("write", 1, {"vendor": "svm", "error_code": 0x1_0000_0006, "gpa": 0x20_0000, "len": 1, "data": 0x88}),
    ("fetch", 8, {"vendor": "svm", "error_code": 0x1_0000_0014, "gpa": 0x20_0000}),
])
def test_svm_and_pvm_input(access: str, width: int, raw: dict) -> None:
    assert model_raw("svm", AccessCase(RW, access, width)) == raw
