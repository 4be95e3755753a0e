"""The raw-input checks every arch's decode_fault shares."""

from __future__ import annotations

import pytest

import kvmcore
from kvmcore import DecodeError


def test_check_raw_keys_names_unknown_and_missing_keys() -> None:
    regs, extra = ("esr", "far", "hpfar"), ("private", "data")
    kvmcore.check_raw_keys({"esr": 1, "hpfar": 2, "private": 1}, arch="arm64", registers=regs, extra_keys=extra, required=("esr", "hpfar"))
    with pytest.raises(DecodeError) as info:
        kvmcore.check_raw_keys({"esr": 1, "hpfar_el2": 2}, arch="arm64", registers=regs, extra_keys=extra)
    assert str(info.value) == "unknown raw key(s) 'hpfar_el2': arm64 takes the registers esr, far, hpfar and the modelling inputs private, data"
    with pytest.raises(DecodeError) as info:
        kvmcore.check_raw_keys({"far": 0}, arch="arm64", registers=regs, required=("esr", "hpfar"))
    assert str(info.value) == "missing register(s) esr, hpfar: arm64 needs esr, hpfar"


@pytest.mark.parametrize("value,expected", [(0, False), (1, True), (True, True), (False, False)])
def test_raw_private_accepts_zero_and_one(value, expected) -> None:
    assert kvmcore.raw_private({"private": value}) is expected
    assert kvmcore.raw_private({}) is False


@pytest.mark.parametrize("value", [2, -1, "1", 1.0, None])
def test_raw_private_refuses_anything_else(value) -> None:
    with pytest.raises(DecodeError) as info:
        kvmcore.raw_private({"private": value})
    assert str(info.value) == f"private={value!r}: expected 0 (shared) or 1 (private)"


def test_shown_text_is_the_repr_up_to_200_characters_then_cut_with_the_length() -> None:
    assert kvmcore.shown_text("ipa 0x1000") == "'ipa 0x1000'"
    assert kvmcore.shown_text("x" * 200) == "'" + "x" * 200 + "'"
    assert kvmcore.shown_text("y" * 12_345) == "'" + "y" * 200 + "'... (12,345 characters)"
