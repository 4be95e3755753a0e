"""EPT-violation exit qualification decoding and the PFERR word KVM builds from it.

Every expected value below is worked out by hand from the SDM table "Exit Qualification for
EPT Violations" and from the kernel source quoted in the reference (section 3.3); the bits are
spelled out in the comments. None is computed by the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_x86.vmx import (
    EptViolation,
    decode_ept_violation,
    ept_violation_to_pferr,
    tdx_ept_violation_to_pferr,
    tdx_exit_qualification,
)

from kvmcore import DecodeError

# Baseline: nothing set. Fields the SDM leaves undefined in that state are None.
_BASE = {
    "data_read": False,
    "data_write": False,
    "insn_fetch": False,
    "ept_readable": False,
    "ept_writable": False,
    "ept_executable": False,
    "ept_user_executable": None,
    "gla_valid": False,
    "gla_translated": None,
    "adv_user": None,
    "adv_writable": None,
    "adv_nx": None,
    "nmi_unblocking": False,
    "shadow_stack": False,
    "supervisor_shadow_stack": None,
    "guest_paging_verification": False,
    "async_to_instruction": False,
}
# Bits 7 and 8 both set: the linear address is valid and translated; bits 9-11 are defined.
_FINAL = {"gla_valid": True, "gla_translated": True, "adv_user": False, "adv_writable": False, "adv_nx": False}
# Bit 7 only: access to a paging-structure entry; bits 9-11 undefined.
_WALK = {"gla_valid": True, "gla_translated": False}


def _expect(eq: int, **fields: object) -> EptViolation:
    return EptViolation(exit_qualification=eq, **{**_BASE, **fields})


DECODE_CASES = [
    # 0x182 = bit1 WRITE | bit7 GLA valid | bit8 translated (reference's VMX trace example)
    (0x182, {}, _expect(0x182, data_write=True, **_FINAL)),
    # 0x181 = bit0 READ | bit7 | bit8
    (0x181, {}, _expect(0x181, data_read=True, **_FINAL)),
    # 0x184 = bit2 FETCH | bit7 | bit8
    (0x184, {}, _expect(0x184, insn_fetch=True, **_FINAL)),
    # 0x183 = bit0 READ | bit1 WRITE (read-modify-write) | bit7 | bit8
    (0x183, {}, _expect(0x183, data_read=True, data_write=True, **_FINAL)),
    # 0x18a = bit1 WRITE | bit3 PROT_READ | bit7 | bit8: write to a read-only (R) page
    (0x18a, {}, _expect(0x18a, data_write=True, ept_readable=True, **_FINAL)),
    # 0x1aa = bit1 WRITE | bit3 PROT_READ | bit5 PROT_EXEC | bit7 | bit8: write to an R-X page
    (0x1aa, {}, _expect(0x1aa, data_write=True, ept_readable=True, ept_executable=True, **_FINAL)),
    # 0x19c = bit2 FETCH | bit3 PROT_READ | bit4 PROT_WRITE | bit7 | bit8: fetch from an RW- page
    (0x19c, {}, _expect(0x19c, insn_fetch=True, ept_readable=True, ept_writable=True, **_FINAL)),
    # 0x1bc = bit2 FETCH | bits 3,4,5 PROT RWX | bit7 | bit8
    (0x1bc, {}, _expect(0x1bc, insn_fetch=True, ept_readable=True, ept_writable=True, ept_executable=True, **_FINAL)),
    # 0x2c = bit2 FETCH | bit3 PROT_READ | bit5 PROT_EXEC, no linear address
    (0x2c, {}, _expect(0x2c, insn_fetch=True, ept_readable=True, ept_executable=True)),
    # 0x81 = bit0 READ | bit7: guest page-table read during the walk (bit 8 clear)
    (0x81, {}, _expect(0x81, data_read=True, **_WALK)),
    # 0x83 = bit0 READ | bit1 WRITE | bit7: A/D-bit update in a guest paging structure
    (0x83, {}, _expect(0x83, data_read=True, data_write=True, **_WALK)),
    # 0x8b = bit0 | bit1 | bit3 PROT_READ | bit7: A/D update to a read-only page-table page
    (0x8b, {}, _expect(0x8b, data_read=True, data_write=True, ept_readable=True, **_WALK)),
    # 0x1 = bit0 READ, bit 7 clear (e.g. a PDPTE load by MOV CR3): no linear address
    (0x1, {}, _expect(0x1, data_read=True)),
    # 0x2 = bit1 WRITE only (what TDX forces for private GPAs)
    (0x2, {}, _expect(0x2, data_write=True)),
    # 0x3 = bit0 | bit1, no linear address
    (0x3, {}, _expect(0x3, data_read=True, data_write=True)),
    # 0x4 = bit2 FETCH only
    (0x4, {}, _expect(0x4, insn_fetch=True)),
    # 0x382 = bit1 WRITE | bit7 | bit8 | bit9 user-mode linear address
    (0x382, {}, _expect(0x382, data_write=True, **{**_FINAL, "adv_user": True})),
    # 0x582 = bit1 WRITE | bit7 | bit8 | bit10 linear address writable
    (0x582, {}, _expect(0x582, data_write=True, **{**_FINAL, "adv_writable": True})),
    # 0x984 = bit2 FETCH | bit7 | bit8 | bit11 linear address execute-disable
    (0x984, {}, _expect(0x984, insn_fetch=True, **{**_FINAL, "adv_nx": True})),
    # 0xf81 = bit0 READ | bits 7,8 | bits 9,10,11
    (0xF81, {}, _expect(0xF81, data_read=True, gla_valid=True, gla_translated=True, adv_user=True, adv_writable=True, adv_nx=True)),
    # 0xe81 = bit0 READ | bit7 | bits 9,10,11: bit 8 clear so bits 9-11 are undefined -> None
    (0xE81, {}, _expect(0xE81, data_read=True, **_WALK)),
    # 0xe01 = bit0 READ | bits 9,10,11, bit 7 clear: 9-11 undefined, bit 8 undefined
    (0xE01, {}, _expect(0xE01, data_read=True)),
    # 0x182 on a CPU without advanced VM-exit info: bits 9-11 undefined -> None
    (0x182, {"advanced_info": False}, _expect(0x182, data_write=True, gla_valid=True, gla_translated=True)),
    # 0x1182 = bit1 WRITE | bit7 | bit8 | bit12 NMI unblocking due to IRET
    (0x1182, {}, _expect(0x1182, data_write=True, nmi_unblocking=True, **_FINAL)),
    # 0x2182 = bit1 WRITE | bit7 | bit8 | bit13 shadow-stack access
    (0x2182, {}, _expect(0x2182, data_write=True, shadow_stack=True, **_FINAL)),
    # 0x4182 = bit1 | bit7 | bit8 | bit14: EPTP bit 7 not set, so bit 14 is undefined -> None
    (0x4182, {}, _expect(0x4182, data_write=True, **_FINAL)),
    # 0x4182 with supervisor shadow-stack control enabled: bit 14 = SSS of the leaf EPTE
    (0x4182, {"eptp_sss": True}, _expect(0x4182, data_write=True, supervisor_shadow_stack=True, **_FINAL)),
    # 0x182 with eptp_sss: bit 14 clear -> False, not None
    (0x182, {"eptp_sss": True}, _expect(0x182, data_write=True, supervisor_shadow_stack=False, **_FINAL)),
    # 0x8181 = bit0 READ | bit7 | bit8 | bit15 guest-paging verification
    (0x8181, {}, _expect(0x8181, data_read=True, guest_paging_verification=True, **_FINAL)),
    # 0x10002 = bit1 WRITE | bit16 asynchronous to instruction execution (e.g. PT output)
    (0x10002, {}, _expect(0x10002, data_write=True, async_to_instruction=True)),
    # 0x1c2 = bit1 WRITE | bit6 user-exec | bit7 | bit8: MBEC off -> bit 6 undefined -> None
    (0x1C2, {}, _expect(0x1C2, data_write=True, **_FINAL)),
    # 0x1c2 with MBEC on: bit 6 = user-executable
    (0x1C2, {"mbec": True}, _expect(0x1C2, data_write=True, ept_user_executable=True, **_FINAL)),
    # 0x182 with MBEC on: bit 6 clear -> False
    (0x182, {"mbec": True}, _expect(0x182, data_write=True, ept_user_executable=False, **_FINAL)),
    # 0x1ffff = every defined bit 0-16
    (
        0x1FFFF,
        {},
        _expect(
            0x1FFFF,
            data_read=True, data_write=True, insn_fetch=True,
            ept_readable=True, ept_writable=True, ept_executable=True,
            gla_valid=True, gla_translated=True, adv_user=True, adv_writable=True, adv_nx=True,
            nmi_unblocking=True, shadow_stack=True, guest_paging_verification=True,
            async_to_instruction=True,
        ),
    ),
    # 0x1ffff with MBEC and EPTP SSS: bits 6 and 14 become defined
    (
        0x1FFFF,
        {"mbec": True, "eptp_sss": True},
        _expect(
            0x1FFFF,
            data_read=True, data_write=True, insn_fetch=True,
            ept_readable=True, ept_writable=True, ept_executable=True, ept_user_executable=True,
            gla_valid=True, gla_translated=True, adv_user=True, adv_writable=True, adv_nx=True,
            nmi_unblocking=True, shadow_stack=True, supervisor_shadow_stack=True,
            guest_paging_verification=True, async_to_instruction=True,
        ),
    ),
]


@pytest.mark.parametrize(("eq", "options", "expected"), DECODE_CASES, ids=lambda v: hex(v) if isinstance(v, int) else None)
def test_decode_ept_violation(eq, options, expected):
    assert decode_ept_violation(eq, **options) == expected


@pytest.mark.parametrize(
    ("eq", "fragment"),
    [
        (0x0, "no access bit"),  # nothing at all
        (0x180, "no access bit"),  # bits 7+8 but no access bit
        (0x38, "no access bit"),  # PROT R|W|X only
        (0x1000, "no access bit"),  # bit 12 only
        (0x102, "bit 8"),  # 0x102 = WRITE | bit8 without bit7
        (0x101, "bit 8"),  # 0x101 = READ | bit8 without bit7
        ((1 << 17) | 0x2, "reserved"),  # bit 17: first reserved bit
        ((1 << 31) | 0x182, "reserved"),
        ((1 << 32) | 0x182, "reserved"),  # looks like GUEST_FINAL: not an exit qualification
        ((1 << 63) | 0x2, "reserved"),
    ],
)
def test_decode_ept_violation_refuses(eq, fragment):
    with pytest.raises(DecodeError, match=fragment) as info:
        decode_ept_violation(eq)
    assert f"{eq:#x}" in str(info.value)


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_decode_ept_violation_refuses_out_of_range(bad):
    with pytest.raises(DecodeError, match="exit_qualification=") as info:
        decode_ept_violation(bad)
    assert f"{bad:#x}" in str(info.value)


@pytest.mark.parametrize("bad", ["0x182", 1.0, None])
def test_decode_ept_violation_refuses_non_int(bad):
    with pytest.raises(TypeError, match="exit_qualification must be an int"):
        decode_ept_violation(bad)


def test_to_dict():
    # 0x182 = WRITE | bit7 | bit8; keys are the fields in declaration order
    d = decode_ept_violation(0x182).to_dict()
    assert list(d) == ["exit_qualification", *_BASE]
    assert d == {"exit_qualification": 0x182, **_BASE, "data_write": True, **_FINAL}


def test_present_property():
    assert decode_ept_violation(0x18A).present  # bit3 PROT_READ
    assert not decode_ept_violation(0x182).present  # no PROT bit


# --- PFERR construction -------------------------------------------------------------------
#
# eq = access | prot << 3 | 0x180 (bits 7+8: translated linear address). access: bit0 R,
# bit1 W, bit2 X; prot: bit3 R, bit4 W, bit5 X. Each row gives the PFERR word for prot == 0
# and for any prot != 0 (PRESENT is "any of bits 3-5", so every non-zero prot gives the same).
#   6.17: R->USER 0x4, W->WRITE 0x2, X->FETCH 0x10, prot->PRESENT 0x1; FINAL never (bug).
#   6.18: as 6.17, plus GUEST_FINAL 1<<32 (bit 7 and bit 8 set).
#   7.2:  R->nothing, W->0x2, X->0x10, prot->0x1, GUEST_FINAL; USER only from bit 9 (clear).
PFERR_TABLE = {
    "6.17": [
        (0x0, 0x1),  # a=0 -
        (0x4, 0x5),  # a=1 R
        (0x2, 0x3),  # a=2 W
        (0x6, 0x7),  # a=3 RW
        (0x10, 0x11),  # a=4 X
        (0x14, 0x15),  # a=5 RX
        (0x12, 0x13),  # a=6 WX
        (0x16, 0x17),  # a=7 RWX
    ],
    "6.18": [
        (0x100000000, 0x100000001),
        (0x100000004, 0x100000005),
        (0x100000002, 0x100000003),
        (0x100000006, 0x100000007),
        (0x100000010, 0x100000011),
        (0x100000014, 0x100000015),
        (0x100000012, 0x100000013),
        (0x100000016, 0x100000017),
    ],
    "7.2": [
        (0x100000000, 0x100000001),
        (0x100000000, 0x100000001),
        (0x100000002, 0x100000003),
        (0x100000002, 0x100000003),
        (0x100000010, 0x100000011),
        (0x100000010, 0x100000011),
        (0x100000012, 0x100000013),
        (0x100000012, 0x100000013),
    ],
}
_COMBOS = [(kernel, a, p) for kernel in PFERR_TABLE for a in range(8) for p in range(8)]


@pytest.mark.parametrize(("kernel", "access", "prot"), _COMBOS)
def test_pferr_every_access_and_prot_combination(kernel, access, prot):
    eq = access | prot << 3 | 0x180
    expected = PFERR_TABLE[kernel][access][prot != 0]
    assert ept_violation_to_pferr(eq, kernel=kernel) == expected


# Without bits 7/8 no GUEST_FINAL/PAGE on any kernel: 6.18 and 7.2 lose 1<<32 from the table.
@pytest.mark.parametrize(("kernel", "access", "prot"), _COMBOS)
def test_pferr_without_linear_address(kernel, access, prot):
    eq = access | prot << 3
    expected = PFERR_TABLE[kernel][access][prot != 0] & 0xFFFFFFFF
    assert ept_violation_to_pferr(eq, kernel=kernel) == expected


@pytest.mark.parametrize(
    ("eq", "kernel", "expected"),
    [
        # 0x182 (reference example): W | bit7 | bit8
        (0x182, "6.17", 0x2),  # WRITE; FINAL lost to the GVA_IS_VALID bug
        (0x182, "6.18", 0x100000002),  # WRITE | GUEST_FINAL
        (0x182, "7.2", 0x100000002),  # WRITE | GUEST_FINAL
        # 0x83 = R | W | bit7 (A/D update in the guest walk)
        (0x83, "6.17", 0x6),  # USER | WRITE
        (0x83, "6.18", 0x200000006),  # USER | WRITE | GUEST_PAGE
        (0x83, "7.2", 0x200000002),  # WRITE | GUEST_PAGE
        # 0x8b = R | W | PROT_READ | bit7
        (0x8B, "6.18", 0x200000007),  # PRESENT | WRITE | USER | GUEST_PAGE
        # 0x382 = W | bit7 | bit8 | bit9 GVA_USER
        (0x382, "6.17", 0x2),
        (0x382, "6.18", 0x100000002),  # bit 9 ignored before 7.2
        (0x382, "7.2", 0x100000006),  # WRITE | USER | GUEST_FINAL
        # 0x281 = R | bit7 | bit9, bit 8 clear: 7.2 takes USER only under FINAL
        (0x281, "7.2", 0x200000000),  # GUEST_PAGE
        (0x281, "6.18", 0x200000004),  # USER (read quirk) | GUEST_PAGE
        # 0x1c1 = R | bit6 user-exec | bit7 | bit8: bit 6 is not in PROT_MASK
        (0x1C1, "6.18", 0x100000004),  # USER | GUEST_FINAL, no PRESENT
        (0x1C1, "7.2", 0x100000000),  # GUEST_FINAL, no PRESENT without MBEC
        # bits 12-16 never reach the PFERR word: 0x1f182 = W | 7 | 8 | 12..16
        (0x1F182, "6.18", 0x100000002),
    ],
)
def test_pferr_specific(eq, kernel, expected):
    assert ept_violation_to_pferr(eq, kernel=kernel) == expected


def test_pferr_mbec_on_7_2():
    # 0x1c1 = R | bit6 | bit7 | bit8; MBEC makes bit 6 count for PRESENT
    assert ept_violation_to_pferr(0x1C1, kernel="7.2", mbec=True) == 0x100000001
    # 0x1c4 = X | bit6 | bit7 | bit8 -> FETCH | PRESENT | FINAL
    assert ept_violation_to_pferr(0x1C4, kernel="7.2", mbec=True) == 0x100000011


@pytest.mark.parametrize("kernel", ["6.17", "6.18"])
def test_pferr_mbec_needs_7_2(kernel):
    with pytest.raises(ValueError, match="7.2"):
        ept_violation_to_pferr(0x1C1, kernel=kernel, mbec=True)


@pytest.mark.parametrize("kernel", ["6.16", "6.15", "", "7.2.13", "latest"])
def test_pferr_unknown_kernel_lists_accepted(kernel):
    with pytest.raises(ValueError) as info:
        ept_violation_to_pferr(0x182, kernel=kernel)
    message = str(info.value)
    assert all(k in message for k in ("'6.17'", "'6.18'", "'7.2'"))


def test_pferr_does_not_validate_like_the_kernel():
    # __vmx_handle_ept_violation() checks nothing: 0 gives 0, reserved bits are ignored.
    assert ept_violation_to_pferr(0x0) == 0x0
    assert ept_violation_to_pferr((1 << 40) | 0x2) == 0x2
    with pytest.raises(DecodeError):
        ept_violation_to_pferr(-1)


def test_pferr_private():
    # 0x2 private -> WRITE | PFERR_PRIVATE_ACCESS (1<<49)
    assert ept_violation_to_pferr(0x2, private=True) == 0x2000000000002
    assert ept_violation_to_pferr(0x182, kernel="6.17", private=True) == 0x2000000000002


def test_tdx_exit_qualification():
    # private GPA: the TDX module's value is replaced by EPT_VIOLATION_ACC_WRITE (0x2)
    assert tdx_exit_qualification(0x1AB, private=True) == 0x2
    assert tdx_exit_qualification(0x184, private=True) == 0x2  # even a fetch
    # shared GPA: passed through
    assert tdx_exit_qualification(0x181, private=False) == 0x181
    # shared fetch: KVM_BUG_ON -> -EIO
    with pytest.raises(DecodeError, match="KVM_BUG_ON"):
        tdx_exit_qualification(0x184, private=False)


def test_tdx_ept_violation_to_pferr():
    # private read: forced to 0x2 -> WRITE | PRIVATE_ACCESS; no GVA bits left -> no FINAL
    assert tdx_ept_violation_to_pferr(0x181, private=True) == 0x2000000000002
    # shared write 0x182 -> WRITE | GUEST_FINAL
    assert tdx_ept_violation_to_pferr(0x182, private=False) == 0x100000002
    # shared read 0x181 on 6.17 -> USER (quirk), FINAL lost
    assert tdx_ept_violation_to_pferr(0x181, private=False, kernel="6.17") == 0x4


# --- properties ---------------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
low17 = st.integers(min_value=0, max_value=(1 << 17) - 1)


def _valid_by_sdm(v: int) -> bool:
    # bits 63:17 clear, not (bit 8 without bit 7), some access bit 0-2
    return v >> 17 == 0 and not (v & 0x100 and not v & 0x80) and v & 0x7 != 0


@given(st.one_of(u64, low17))
def test_every_u64_decodes_or_raises_decode_error(v):
    try:
        decoded = decode_ept_violation(v)
    except DecodeError:
        assert not _valid_by_sdm(v)
        return
    assert _valid_by_sdm(v)
    assert decoded.exit_qualification == v
    assert (decoded.data_read, decoded.data_write, decoded.insn_fetch) == (bool(v & 1), bool(v & 2), bool(v & 4))
    assert decoded.gla_valid == bool(v & 0x80)
    assert (decoded.adv_user is None) == (v & 0x180 != 0x180)


@given(u64, st.sampled_from(["6.17", "6.18", "7.2"]))
def test_to_pferr_total_and_only_known_bits(v, kernel):
    error_code = ept_violation_to_pferr(v, kernel=kernel)
    # PRESENT 0x1, WRITE 0x2, USER 0x4, FETCH 0x10, GUEST_FINAL 1<<32, GUEST_PAGE 1<<33
    assert error_code & ~0x300000017 == 0
    assert not (error_code & (1 << 32) and error_code & (1 << 33))
