"""#NPF error-code decoding, npf_interception()'s PFERR word, and the PFERR names.

Expected values are worked out by hand from the PFERR bit positions (reference 3.2) and the
APM #NPF error-code bits; the bits are spelled out in the comments.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_x86 import pferr
from kvmcore_x86.pferr import pferr_names
from kvmcore_x86.svm import NpfErrorCode, NpfSyntheticBitsWarning, decode_npf, npf_to_pferr

from kvmcore import DecodeError

_BASE = {
    "present": False,
    "write": False,
    "user": False,
    "rsvd": False,
    "fetch": False,
    "pk": False,
    "shadow_stack": False,
    "rmp": False,
    "guest_final": False,
    "guest_page": False,
    "enc": False,
    "sizem": False,
    "vmpl": False,
    "implicit_access": False,
    "private_access": False,
    "truncated": False,
}
_HIGH_UNKNOWN = {k: None for k in ("guest_final", "guest_page", "enc", "sizem", "vmpl", "implicit_access", "private_access")}


def _expect(ec: int, **fields: object) -> NpfErrorCode:
    return NpfErrorCode(error_code=ec, **{**_BASE, **fields})


DECODE_CASES = [
    # 0x100000006 = bit1 W | bit2 U | bit32 GUEST_FINAL (reference's SVM trace example)
    (0x100000006, False, _expect(0x100000006, write=True, user=True, guest_final=True)),
    # 0x100000004 = U | FINAL: read of a not-present GPA
    (0x100000004, False, _expect(0x100000004, user=True, guest_final=True)),
    # 0x100000005 = P | U | FINAL: read, entry present
    (0x100000005, False, _expect(0x100000005, present=True, user=True, guest_final=True)),
    # 0x100000007 = P | W | U | FINAL: write to a read-only NPT entry
    (0x100000007, False, _expect(0x100000007, present=True, write=True, user=True, guest_final=True)),
    # 0x100000014 = U | bit4 ID | FINAL: fetch from a not-present GPA
    (0x100000014, False, _expect(0x100000014, user=True, fetch=True, guest_final=True)),
    # 0x100000015 = P | U | ID | FINAL: fetch from an NX NPT entry
    (0x100000015, False, _expect(0x100000015, present=True, user=True, fetch=True, guest_final=True)),
    # 0x10000000d = P | U | bit3 RSV | FINAL: KVM's MMIO SPTE (reserved bits) hit
    (0x10000000D, False, _expect(0x10000000D, present=True, user=True, rsvd=True, guest_final=True)),
    # 0x200000006 = W | U | bit33 GUEST_PAGE: A/D update of a not-present guest page table
    (0x200000006, False, _expect(0x200000006, write=True, user=True, guest_page=True)),
    # 0x200000007 = P | W | U | GUEST_PAGE: write to a write-protected guest page table
    (0x200000007, False, _expect(0x200000007, present=True, write=True, user=True, guest_page=True)),
    # 0x20000000c = U | RSV | GUEST_PAGE
    (0x20000000C, False, _expect(0x20000000C, user=True, rsvd=True, guest_page=True)),
    # 0x500000006 = W | U | FINAL | bit34 ENC: encrypted (C-bit) access
    (0x500000006, False, _expect(0x500000006, write=True, user=True, guest_final=True, enc=True)),
    # 0x2000500000006 = 0x500000006 | bit49 PRIVATE_ACCESS: as traced for an SNP private fault
    (0x2000500000006, False, _expect(0x2000500000006, write=True, user=True, guest_final=True, enc=True, private_access=True)),
    # 0x980000005 = P | U | bit31 RMP | FINAL | bit35 SIZEM: PVALIDATE size mismatch
    (0x980000005, False, _expect(0x980000005, present=True, user=True, rmp=True, guest_final=True, sizem=True)),
    # 0x1180000007 = P | W | U | RMP | FINAL | bit36 VMPL
    (0x1180000007, False, _expect(0x1180000007, present=True, write=True, user=True, rmp=True, guest_final=True, vmpl=True)),
    # 0x100000044 = U | bit6 SS | FINAL: shadow-stack access
    (0x100000044, False, _expect(0x100000044, user=True, shadow_stack=True, guest_final=True)),
    # 0x100000024 = U | bit5 PK | FINAL
    (0x100000024, False, _expect(0x100000024, user=True, pk=True, guest_final=True)),
    # 0x1000100000006 = W | U | FINAL | bit48 IMPLICIT_ACCESS (synthetic; decodable)
    (0x1000100000006, False, _expect(0x1000100000006, write=True, user=True, guest_final=True, implicit_access=True)),
    # 0x6 = W | U with no stage bit: decodes (the APM rule is not checkable), stage bits False
    (0x6, False, _expect(0x6, write=True, user=True)),
    # 0x0: nothing set
    (0x0, False, _expect(0x0)),
    # 0x3001f8000007f = bits 0-6 | 31 | 32-36 | 48 | 49: every accepted bit
    (
        0x3001F8000007F,
        False,
        NpfErrorCode(0x3001F8000007F, *([True] * 15), False),
    ),
    # truncated 0x6 = W | U as printed by a 32-bit trace field: bits 32+ unknown
    (0x6, True, _expect(0x6, write=True, user=True, truncated=True, **_HIGH_UNKNOWN)),
    # truncated 0x80000007 = P | W | U | bit31 RMP
    (0x80000007, True, _expect(0x80000007, present=True, write=True, user=True, rmp=True, truncated=True, **_HIGH_UNKNOWN)),
    # truncated 0x0
    (0x0, True, _expect(0x0, truncated=True, **_HIGH_UNKNOWN)),
]


@pytest.mark.parametrize(("ec", "truncated", "expected"), DECODE_CASES)
def test_decode_npf(ec, truncated, expected):
    assert decode_npf(ec, truncated=truncated) == expected


@pytest.mark.parametrize(
    ("ec", "fragment"),
    [
        (0x100000086, "reserved"),  # bit 7
        (0x100000106, "reserved"),  # bit 8 (an EPT GVA_TRANSLATED look-alike)
        (0x100008006, "reserved"),  # bit 15: Intel's SGX bit
        ((1 << 17) | 0x6, "reserved"),
        ((1 << 30) | 0x6, "reserved"),
        ((1 << 37) | 0x100000006, "reserved"),
        ((1 << 47) | 0x100000006, "reserved"),
        ((1 << 50) | 0x100000006, "reserved"),
        ((1 << 63), "reserved"),
    ],
)
def test_decode_npf_refuses_reserved(ec, fragment):
    with pytest.raises(DecodeError, match=fragment) as info:
        decode_npf(ec)
    assert f"{ec:#x}" in str(info.value)


def test_decode_npf_truncated_refuses_high_bits():
    with pytest.raises(DecodeError, match="32-bit"):
        decode_npf(0x100000006, truncated=True)


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_decode_npf_refuses_out_of_range(bad):
    with pytest.raises(DecodeError, match="error_code="):
        decode_npf(bad)


@pytest.mark.parametrize("bad", ["0x6", 6.0, None])
def test_decode_npf_refuses_non_int(bad):
    with pytest.raises(TypeError, match="error_code must be an int"):
        decode_npf(bad)


def test_to_dict():
    # 0x100000006 = W | U | FINAL
    d = decode_npf(0x100000006).to_dict()
    assert list(d) == ["error_code", *_BASE]
    assert d == {"error_code": 0x100000006, **_BASE, "write": True, "user": True, "guest_final": True}


@pytest.mark.parametrize(
    ("ec", "snp", "expected"),
    [
        (0x100000006, False, 0x100000006),  # passed through
        (0x100000006, True, 0x100000006),  # SNP but ENC clear: not private
        (0x500000006, False, 0x500000006),  # ENC on a non-SNP VM (SEV on SNP hardware): not private
        (0x500000006, True, 0x2000500000006),  # SNP + ENC (bit 34) -> + PRIVATE_ACCESS (bit 49)
        (0x980000005, True, 0x980000005),  # RMP/SIZEM pass through; ENC clear
        (0x10000000D, False, 0x10000000D),  # RSVD (MMIO) passes through
        ((1 << 40) | 0x6, False, (1 << 40) | 0x6),  # reserved bits are not checked by KVM
    ],
)
def test_npf_to_pferr(ec, snp, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert npf_to_pferr(ec, snp=snp) == expected


@pytest.mark.parametrize(
    ("ec", "snp", "expected"),
    [
        (0x2000100000006, False, 0x100000006),  # hardware bit 49: WARN, cleared
        (0x1000100000006, False, 0x100000006),  # hardware bit 48: WARN, cleared
        (0x3000100000006, False, 0x100000006),  # both
        (0x2000500000006, True, 0x2000500000006),  # cleared, then re-added by the SNP ENC rule
    ],
)
def test_npf_to_pferr_warns_on_synthetic_bits(ec, snp, expected):
    with pytest.warns(NpfSyntheticBitsWarning, match="synthetic"):
        assert npf_to_pferr(ec, snp=snp) == expected


# --- PFERR constants and names ------------------------------------------------------------


def test_pferr_values():
    assert pferr.PFERR_PRESENT_MASK == 0x1
    assert pferr.PFERR_WRITE_MASK == 0x2
    assert pferr.PFERR_USER_MASK == 0x4
    assert pferr.PFERR_RSVD_MASK == 0x8
    assert pferr.PFERR_FETCH_MASK == 0x10
    assert pferr.PFERR_PK_MASK == 0x20
    assert pferr.PFERR_SS_MASK == 0x40
    assert pferr.PFERR_SGX_MASK == 0x8000
    assert pferr.PFERR_GUEST_RMP_MASK == 0x80000000
    assert pferr.PFERR_GUEST_FINAL_MASK == 0x100000000
    assert pferr.PFERR_GUEST_PAGE_MASK == 0x200000000
    assert pferr.PFERR_GUEST_FAULT_STAGE_MASK == 0x300000000
    assert pferr.PFERR_GUEST_ENC_MASK == 0x400000000
    assert pferr.PFERR_GUEST_SIZEM_MASK == 0x800000000
    assert pferr.PFERR_GUEST_VMPL_MASK == 0x1000000000
    assert pferr.PFERR_IMPLICIT_ACCESS == 0x1000000000000
    assert pferr.PFERR_PRIVATE_ACCESS == 0x2000000000000
    assert pferr.PFERR_SYNTHETIC_MASK == 0x3000000000000


@pytest.mark.parametrize(
    ("error_code", "names"),
    [
        (0x100000007, ["PRESENT", "WRITE", "USER", "GUEST_FINAL"]),
        (0x0, []),
        (0x10, ["FETCH"]),
        (0x8000, ["SGX"]),
        (0x2000500000006, ["WRITE", "USER", "GUEST_FINAL", "GUEST_ENC", "PRIVATE_ACCESS"]),
        (0x980000005, ["PRESENT", "USER", "GUEST_RMP", "GUEST_FINAL", "GUEST_SIZEM"]),
        ((1 << 20) | 0x1, ["PRESENT", "BIT20"]),
        ((1 << 63) | (1 << 48), ["IMPLICIT_ACCESS", "BIT63"]),
    ],
)
def test_pferr_names(error_code, names):
    assert pferr_names(error_code) == names


def test_pferr_names_refuses_non_u64():
    with pytest.raises(DecodeError):
        pferr_names(-1)


# --- properties ---------------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
# Reserved #NPF bits, by hand: 7-30, 37-47, 50-63.
RESERVED = sum(1 << b for b in [*range(7, 31), *range(37, 48), *range(50, 64)])
# Any value built only from the accepted bits 0-6, 31-36, 48-49.
accepted = st.integers(min_value=0, max_value=(1 << 64) - 1).map(lambda v: v & ~RESERVED)


@given(st.one_of(u64, accepted))
def test_every_u64_decodes_or_raises_decode_error(v):
    try:
        decoded = decode_npf(v)
    except DecodeError:
        assert v & RESERVED
        return
    assert not v & RESERVED
    assert decoded.error_code == v
    assert (decoded.present, decoded.write, decoded.user, decoded.fetch) == (
        bool(v & 1), bool(v & 2), bool(v & 4), bool(v & 0x10)
    )
    assert decoded.guest_final == bool(v >> 32 & 1)
    assert decoded.private_access == bool(v >> 49 & 1)


@given(st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_every_u32_decodes_truncated_or_raises(v):
    try:
        decoded = decode_npf(v, truncated=True)
    except DecodeError:
        assert v & RESERVED
        return
    assert decoded.truncated and decoded.guest_final is None


@given(u64, st.booleans())
def test_npf_to_pferr_total(v, snp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NpfSyntheticBitsWarning)
        out = npf_to_pferr(v, snp=snp)
    # Only bit 49 can be added (SNP + ENC); bit 48 is always cleared.
    assert out & ~(1 << 49) == v & ~(3 << 48)
    assert bool(out >> 49 & 1) == (snp and bool(v >> 34 & 1))
