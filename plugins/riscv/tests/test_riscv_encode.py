"""encode_guest_page_fault: hand-worked CSR values and encode -> decode round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_riscv.encode import encode_guest_page_fault, transformed_htinst
from kvmcore_riscv.htinst import mmio_access
from kvmcore_riscv.trap import decode_guest_page_fault


@pytest.mark.parametrize(
    "args,kwargs,expected",
    [
        # The reference example: sb a1 to GPA 0x10000000 at GVA 0xffffffc800000000 ->
        # scause 0x17, htval 0x4000000, htinst 0x00b00023.
        (
            (0x10000000, "write"),
            {"size": 1, "reg": 11, "gva": 0xFFFFFFC800000000},
            {"scause": 0x17, "htval": 0x4000000, "stval": 0xFFFFFFC800000000, "htinst": 0x00B00023},
        ),
        # Default: lw a0 (reg 10, size 4) -> 0x00002503; gva defaults to the gpa.
        (
            (0x9000000, "read"),
            {},
            {"scause": 0x15, "htval": 0x2400000, "stval": 0x9000000, "htinst": 0x00002503},
        ),
        # lbu a0: funct3 100 -> 0x4000 | 10<<7 | 0x03 = 0x00004503
        (
            (0x9000005, "read"),
            {"size": 1, "signed": False},
            {"scause": 0x15, "htval": 0x2400001, "stval": 0x9000005, "htinst": 0x00004503},
        ),
        # c.ld a5 -> ld x15 -> 0x00003783, bit 1 cleared -> 0x00003781
        (
            (0x10000008, "read"),
            {"size": 8, "reg": 15, "compressed": True},
            {"scause": 0x15, "htval": 0x4000002, "stval": 0x10000008, "htinst": 0x00003781},
        ),
        # c.sd s1 -> sd x9 -> 0x00903023 -> 0x00903021
        (
            (0x10000010, "write"),
            {"size": 8, "reg": 9, "compressed": True},
            {"scause": 0x17, "htval": 0x4000004, "stval": 0x10000010, "htinst": 0x00903021},
        ),
        # sd ra without htinst information
        (
            (0x10000000, "write"),
            {"size": 8, "reg": 1, "htinst": False},
            {"scause": 0x17, "htval": 0x4000000, "stval": 0x10000000, "htinst": 0},
        ),
        # exec: instruction guest-page fault, htinst 0, sepc = the fetch address
        (
            (0x80200000, "exec"),
            {},
            {
                "scause": 0x14,
                "htval": 0x20080000,
                "stval": 0x80200000,
                "htinst": 0,
                "sepc": 0x80200000,
            },
        ),
    ],
)
def test_encode_by_hand(args, kwargs, expected):
    assert encode_guest_page_fault(*args, **kwargs) == expected


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((0x1000, "rw"), {}, r"access='rw'"),
        ((0x1000, "read"), {"size": 3}, r"size=3"),
        ((0x1000, "write"), {"size": 16}, r"size=16"),
        ((0x1000, "read"), {"reg": 32}, r"reg=32"),
        ((0x1000, "read"), {"reg": -1}, r"reg=-1"),
        ((1 << 59, "read"), {}, r"gpa="),
        ((-1, "read"), {}, r"gpa=-1"),
        ((0x1000, "read"), {"gva": 0x2004}, r"low 12 bits must match"),
        ((0x1000, "read"), {"gva": 1 << 64}, r"gva="),
        ((0x1000, "read"), {"size": 8, "signed": False}, r"LDU"),
        ((0x1000, "read"), {"size": 1, "compressed": True}, r"no 1-byte read form"),
        ((0x1000, "write"), {"size": 2, "compressed": True}, r"no 2-byte write form"),
        ((0x1000, "read"), {"size": 4, "signed": False, "compressed": True}, r"C.LWU"),
        ((0x1000, "read"), {"reg": 0, "compressed": True}, r"reg=0"),
    ],
)
def test_encode_refuses_impossible(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        encode_guest_page_fault(*args, **kwargs)


def test_transformed_htinst_refuses_two_register_and_unknown():
    with pytest.raises(ValueError, match="amoadd.w"):
        transformed_htinst("amoadd.w", 1)
    with pytest.raises(ValueError, match="nope"):
        transformed_htinst("nope", 1)
    with pytest.raises(ValueError, match="no compressed form"):
        transformed_htinst("lb", 1, compressed=True)
    with pytest.raises(ValueError, match="addr_offset=32"):
        transformed_htinst("lw", 1, addr_offset=32)
    # lw a0 with Addr. Offset 2: 0x00002503 | 2 << 15 = 0x00012503
    assert transformed_htinst("lw", 10, addr_offset=2) == 0x00012503


SIZES = st.sampled_from([1, 2, 4, 8])


@st.composite
def faults(draw):
    access = draw(st.sampled_from(["read", "write", "exec"]))
    gpa = draw(st.integers(min_value=0, max_value=(1 << 59) - 1))
    gva = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=(1 << 52) - 1)))
    if gva is not None:
        gva = gva << 12 | gpa & 0xFFF
    compressed = draw(st.booleans())
    size = draw(st.sampled_from([4, 8]) if compressed else SIZES)
    reg = draw(st.integers(min_value=1 if compressed else 0, max_value=31))
    signed = True if compressed or size == 8 else draw(st.booleans())
    return gpa, access, dict(size=size, gva=gva, reg=reg, compressed=compressed, signed=signed)


@given(faults())
def test_round_trip(fault):
    gpa, access, kw = fault
    csrs = encode_guest_page_fault(gpa, access, **kw)
    f = decode_guest_page_fault(csrs["scause"], csrs["htval"], csrs["stval"], csrs["htinst"])
    assert f.gpa == gpa and f.gfn == gpa >> 12
    assert f.gva == (gpa if kw["gva"] is None else kw["gva"])
    assert f.write is (access == "write")
    assert f.exec is (access == "exec")
    if access == "exec":
        assert f.htinst_kind == "zero" and csrs["sepc"] == f.gva
        return
    assert f.htinst_kind == "transformed"
    assert f.access_size == kw["size"]
    assert f.insn_length == (2 if kw["compressed"] else 4)
    assert (f.rs2 if access == "write" else f.rd) == kw["reg"]
    if access == "read":
        assert f.sign_extend is (kw["signed"] and kw["size"] < 8)
    # KVM's MMIO emulation reads the same access out of the transformed htinst.
    acc = mmio_access(csrs["htinst"], is_write=access == "write")
    assert (acc.len, acc.reg, acc.insn_len) == (kw["size"], kw["reg"], f.insn_length)


@given(faults())
def test_round_trip_without_htinst(fault):
    gpa, access, kw = fault
    csrs = encode_guest_page_fault(gpa, access, **{**kw, "htinst": False})
    f = decode_guest_page_fault(csrs["scause"], csrs["htval"], csrs["stval"], csrs["htinst"])
    assert (f.gfn, f.write, f.exec, f.htinst_kind, f.access_size) == (
        gpa >> 12,
        access == "write",
        access == "exec",
        "zero",
        None,
    )
