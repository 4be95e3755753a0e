"""Encoders: what hardware reports for an access, and the round trip encode -> decode -> PFERR.

Expected syndromes are worked out by hand from the SDM/APM bit positions.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_x86.encode import encode_ept_violation, encode_npf
from kvmcore_x86.svm import decode_npf, npf_to_pferr
from kvmcore_x86.vmx import decode_ept_violation, ept_violation_to_pferr

GPA = 0xFD000000

# (access, cause, exit qualification, PFERR word on 6.18). Bits: 0 R, 1 W, 2 X access;
# 3 R, 4 W, 5 X permission; 7+8 translated linear address. PFERR: 0x1 P, 0x2 W, 0x4 U (read
# quirk), 0x10 F, 1<<32 GUEST_FINAL.
VMX_CASES = [
    ("read", "not_present", 0x181, 0x100000004),  # R | 7 | 8 -> USER | FINAL
    ("write", "not_present", 0x182, 0x100000002),  # W | 7 | 8 -> WRITE | FINAL
    ("exec", "not_present", 0x184, 0x100000010),  # X | 7 | 8 -> FETCH | FINAL
    ("read", "no_slot", 0x181, 0x100000004),
    ("write", "no_slot", 0x182, 0x100000002),
    ("exec", "no_slot", 0x184, 0x100000010),
    ("write", "read_only", 0x1AA, 0x100000003),  # W | PROT R+X | 7 | 8 -> WRITE | PRESENT | FINAL
    ("exec", "no_exec", 0x19C, 0x100000011),  # X | PROT R+W | 7 | 8 -> FETCH | PRESENT | FINAL
]

# (access, cause, #NPF error code). 0x4 US is set for every guest access, 1<<32 GUEST_FINAL.
SVM_CASES = [
    ("read", "not_present", 0x100000004),  # U | FINAL
    ("write", "not_present", 0x100000006),  # W | U | FINAL
    ("exec", "not_present", 0x100000014),  # U | ID | FINAL
    ("read", "no_slot", 0x100000004),
    ("write", "no_slot", 0x100000006),
    ("exec", "no_slot", 0x100000014),
    ("write", "read_only", 0x100000007),  # P | W | U | FINAL
    ("exec", "no_exec", 0x100000015),  # P | U | ID | FINAL
]

IMPOSSIBLE = [
    ("read", "read_only"),  # a read-only entry allows reads
    ("exec", "read_only"),  # ... and fetches (R+X / NX=0)
    ("read", "no_exec"),  # a no-exec entry allows reads
    ("write", "no_exec"),  # ... and writes
]


@pytest.mark.parametrize(("access", "cause", "eq", "pferr"), VMX_CASES)
def test_encode_ept_violation(access, cause, eq, pferr):
    assert encode_ept_violation(GPA, access, cause) == {"vendor": "vmx", "exit_qualification": eq, "gpa": GPA}


def test_encode_ept_violation_gla():
    assert encode_ept_violation(GPA, "write", "not_present", gla=0xFFFF888000001000) == {
        "vendor": "vmx",
        "exit_qualification": 0x182,
        "gpa": GPA,
        "gla": 0xFFFF888000001000,
    }


@pytest.mark.parametrize(("access", "cause", "eq", "pferr"), VMX_CASES)
def test_vmx_round_trip(access, cause, eq, pferr):
    exit = encode_ept_violation(GPA, access, cause)
    decoded = decode_ept_violation(exit["exit_qualification"])
    assert decoded.data_read == (access == "read")
    assert decoded.data_write == (access == "write")
    assert decoded.insn_fetch == (access == "exec")
    assert decoded.present == (cause in ("read_only", "no_exec"))
    assert decoded.gla_valid and decoded.gla_translated
    error_code = ept_violation_to_pferr(exit["exit_qualification"])
    assert error_code == pferr
    assert bool(error_code & 0x2) == (access == "write")  # PFERR_WRITE_MASK
    assert bool(error_code & 0x10) == (access == "exec")  # PFERR_FETCH_MASK
    assert bool(error_code & 0x1) == (cause in ("read_only", "no_exec"))  # PFERR_PRESENT_MASK


@pytest.mark.parametrize(("access", "cause", "ec"), SVM_CASES)
def test_encode_npf(access, cause, ec):
    assert encode_npf(GPA, access, cause) == {"vendor": "svm", "error_code": ec, "gpa": GPA}


@pytest.mark.parametrize(("access", "cause", "ec"), SVM_CASES)
def test_svm_round_trip(access, cause, ec):
    exit = encode_npf(GPA, access, cause)
    decoded = decode_npf(exit["error_code"])
    assert decoded.write == (access == "write")
    assert decoded.fetch == (access == "exec")
    assert decoded.present == (cause in ("read_only", "no_exec"))
    assert decoded.user and decoded.guest_final and not decoded.guest_page
    assert npf_to_pferr(exit["error_code"]) == ec  # passed through unchanged


def test_encode_npf_private():
    # W | U | FINAL | bit34 ENC
    exit = encode_npf(GPA, "write", "not_present", private=True)
    assert exit == {"vendor": "svm", "error_code": 0x500000006, "gpa": GPA}
    assert decode_npf(exit["error_code"]).enc
    # SNP: ENC -> PRIVATE_ACCESS (bit 49)
    assert npf_to_pferr(exit["error_code"], snp=True) == 0x2000500000006


@pytest.mark.parametrize("encoder", [encode_ept_violation, encode_npf])
@pytest.mark.parametrize(("access", "cause"), IMPOSSIBLE)
def test_impossible_combinations(encoder, access, cause):
    with pytest.raises(ValueError, match="impossible") as info:
        encoder(GPA, access, cause)
    assert access in str(info.value) and cause in str(info.value)


@pytest.mark.parametrize("encoder", [encode_ept_violation, encode_npf])
@pytest.mark.parametrize("access", ["read", "write", "exec"])
def test_access_flag_is_not_an_x86_fault(encoder, access):
    with pytest.raises(ValueError, match="access-flag"):
        encoder(GPA, access, "access_flag")


@pytest.mark.parametrize("encoder", [encode_ept_violation, encode_npf])
@pytest.mark.parametrize(
    ("gpa", "access", "cause", "fragment"),
    [
        (GPA, "fetch", "not_present", "access='fetch'"),
        (GPA, "write", "missing", "cause='missing'"),
        (-1, "write", "not_present", "gpa=-0x1"),
        (1 << 52, "write", "not_present", "gpa="),
    ],
)
def test_bad_arguments(encoder, gpa, access, cause, fragment):
    with pytest.raises(ValueError, match=fragment):
        encoder(gpa, access, cause)


@pytest.mark.parametrize("encoder", [encode_ept_violation, encode_npf])
def test_non_int_gpa(encoder):
    with pytest.raises(TypeError, match="gpa must be an int"):
        encoder("0x1000", "write", "not_present")


def test_bad_gla():
    with pytest.raises(ValueError, match="gla="):
        encode_ept_violation(GPA, "write", "not_present", gla=-5)


@given(
    st.integers(min_value=0, max_value=(1 << 52) - 1),
    st.sampled_from([(a, c) for a, c, _, _ in VMX_CASES]),
)
def test_round_trip_any_gpa(gpa, case):
    access, cause = case
    vmx = encode_ept_violation(gpa, access, cause)
    svm = encode_npf(gpa, access, cause)
    assert vmx["gpa"] == svm["gpa"] == gpa
    v = ept_violation_to_pferr(vmx["exit_qualification"], kernel="7.2")
    s = npf_to_pferr(svm["error_code"])
    # Both vendors agree on WRITE, FETCH, PRESENT and GUEST_FINAL (mask 0x100000013).
    assert v & 0x100000013 == s & 0x100000013
