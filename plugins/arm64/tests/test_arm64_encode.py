"""Tests for kvmcore_arm64.encode: hand-checked encodings and an encode -> decode round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_arm64 import esr as E
from kvmcore_arm64.encode import encode_abort

HAND_CHECKED = [
    # write, 4 bytes, w1, not present at gpa 0x9000000:
    #   EC 0x24<<26 = 0x90000000 | IL 0x02000000 | ISV 0x01000000 | SAS=2 0x00800000
    #   | SRT=1 0x00010000 | WnR 0x40 | FSC 0x07 = 0x93810047
    #   hpfar = (0x9000000 >> 12) << 4 = 0x9000 << 4 = 0x90000
    (dict(gpa=0x9000000, access="write", cause="not_present", srt=1),
     dict(esr=0x93810047, far=0x9000000, hpfar=0x90000)),
    # read, 8 bytes, x0, not present at 0x4001008:
    #   0x93000000 | SAS=3 0x00C00000 | SF 0x8000 | FSC 0x07 = 0x93C08007; hpfar 0x40010
    (dict(gpa=0x4001008, access="read", cause="not_present", size=8),
     dict(esr=0x93C08007, far=0x4001008, hpfar=0x40010)),
    # write, 1 byte, w3, read-only memslot page:
    #   0x93000000 | SAS=0 | SRT=3 0x00030000 | WnR 0x40 | FSC 0x0F = 0x9303004F
    (dict(gpa=0x80000000, access="write", cause="read_only", size=1, srt=3),
     dict(esr=0x9303004F, far=0x80000000, hpfar=0x800000)),
    # read, 2 bytes, w31 (wzr), access flag:
    #   0x93000000 | SAS=1 0x00400000 | SRT=31 0x001F0000 | FSC 0x0B = 0x935F000B
    (dict(gpa=0x40A31000, access="read", cause="access_flag", size=2, srt=31),
     dict(esr=0x935F000B, far=0x40A31000, hpfar=0x40A310)),
    # write, no memslot, explicit guest VA in FAR: same syndrome as not_present
    (dict(gpa=0x9000010, access="write", cause="no_slot", far=0xFFFF80008000A010),
     dict(esr=0x93800047, far=0xFFFF80008000A010, hpfar=0x90000)),
    # exec, not present: EC 0x20<<26 = 0x80000000 | IL 0x02000000 | FSC 0x07 = 0x82000007
    (dict(gpa=0x40080000, access="exec", cause="not_present"),
     dict(esr=0x82000007, far=0x40080000, hpfar=0x400800)),
    # exec, stage-2 execute-never: FSC 0x0F -> 0x8200000F
    (dict(gpa=0x40080000, access="exec", cause="no_exec"),
     dict(esr=0x8200000F, far=0x40080000, hpfar=0x400800)),
    # exec, access flag: 0x8200000B
    (dict(gpa=0x1000, access="exec", cause="access_flag"),
     dict(esr=0x8200000B, far=0x1000, hpfar=0x10)),
    # 52-bit gpa 0x000f_ffff_ffff_f000, write 4 bytes:
    #   hpfar = 0xff_ffff_ffff << 4 = 0xfff_ffff_fff0
    (dict(gpa=0x000FFFFFFFFFF000, access="write", cause="not_present"),
     dict(esr=0x93800047, far=0x000FFFFFFFFFF000, hpfar=0x00000FFFFFFFFFF0)),
]


@pytest.mark.parametrize(("kwargs", "regs"), HAND_CHECKED)
def test_hand_checked(kwargs: dict, regs: dict) -> None:
    assert encode_abort(**kwargs) == regs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(gpa=0x1000, access="exec", cause="read_only"), "'exec' with cause='read_only'"),
        (dict(gpa=0x1000, access="read", cause="read_only"), "'read' with cause='read_only'"),
        (dict(gpa=0x1000, access="write", cause="no_exec"), "'write' with cause='no_exec'"),
        (dict(gpa=0x1000, access="exec", cause="not_present", size=8), "access='exec' with size"),
        (dict(gpa=0x1000, access="exec", cause="not_present", srt=2), "srt=2"),
        (dict(gpa=0x1000, access="read", cause="not_present", size=3), "size=3"),
        (dict(gpa=0x1000, access="read", cause="not_present", srt=32), "srt=32"),
        (dict(gpa=-1, access="read", cause="not_present"), "gpa=-1"),
        (dict(gpa=1 << 56, access="read", cause="not_present"), "gpa="),
        (dict(gpa=0x1000, access="fetch", cause="not_present"), "access='fetch'"),
        (dict(gpa=0x1000, access="read", cause="bogus"), "cause='bogus'"),
        (dict(gpa=0x1000, access="read", cause="not_present", far=1 << 64), "far="),
    ],
)
def test_impossible_combinations(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_abort(**kwargs)


VALID = [(a, c) for a in ("read", "write") for c in ("not_present", "no_slot", "access_flag")]
VALID += [("write", "read_only")]
VALID += [("exec", c) for c in ("not_present", "no_slot", "no_exec", "access_flag")]


@given(
    gpa=st.integers(min_value=0, max_value=(1 << 52) - 1),
    combo=st.sampled_from(VALID),
    size=st.sampled_from([1, 2, 4, 8]),
    srt=st.integers(min_value=0, max_value=31),
    page_shift=st.sampled_from([12, 14, 16]),
)
def test_round_trip(gpa: int, combo: tuple[str, str], size: int, srt: int,
                    page_shift: int) -> None:
    access, cause = combo
    if access == "exec":
        size, srt = 4, 0
    regs = encode_abort(gpa, access, cause, size=size, srt=srt)
    info = E.decode_guest_abort(regs["esr"])
    ipa = E.fault_ipa(regs["hpfar"], regs["far"])
    assert ipa == gpa
    assert E.gpa_to_gfn(ipa, page_shift) == gpa >> page_shift
    assert E.is_write_fault(info) is (access == "write")
    assert E.is_exec_fault(info) is (access == "exec")
    assert info.s1ptw is False
    if access != "exec":
        assert info.access_size == size and info.srt == srt and info.sf is (size == 8)
    kind = {"not_present": "translation", "no_slot": "translation",
            "read_only": "permission", "no_exec": "permission",
            "access_flag": "access_flag"}[cause]
    assert info.fault_kind == kind and info.fault_level == 3
    # HPFAR is trusted for translation/AF faults; a permission fault (no S1PTW) is re-walked
    assert E.hpfar_trusted(info) is (kind != "permission")
