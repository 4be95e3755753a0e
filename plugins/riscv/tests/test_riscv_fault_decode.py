"""``fault.decode_riscv_fault``'s short cuts give what the plain reading gives: the one-step key
check accepts what ``kvmcore.check_raw_keys`` accepts, and the fault built positionally equals
the one built field by field from :func:`kvmcore_riscv.trap.decode_guest_page_fault`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_riscv import fault as R
from kvmcore_riscv.trap import decode_guest_page_fault

import kvmcore
from kvmcore import DecodeError

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
KEYS = [*R.REGISTERS, *R.MODEL_KEYS, "x"]


@given(st.lists(st.sampled_from(KEYS), unique=True), st.sampled_from([R.REQUIRED, ("scause",)]))
def test_key_check_accepts_what_check_raw_keys_accepts(keys, required) -> None:
    raw = dict.fromkeys(keys, 0)
    try:
        kvmcore.check_raw_keys(raw, arch="RISC-V", registers=R.REGISTERS, extra_keys=R.MODEL_KEYS, required=required)
    except DecodeError:
        with pytest.raises(DecodeError):
            R.check_raw(raw, required)
    else:
        R.check_raw(raw, required)


def reference(raw: dict[str, int]) -> R.RiscvFault:
    """decode_riscv_fault read field by field (keywords), for inputs check_raw accepts."""
    t = decode_guest_page_fault(raw["scause"], raw["htval"], raw["stval"], raw.get("htinst", 0))
    fields = {name: getattr(t, name) for name in t.__dataclass_fields__}
    private = kvmcore.raw_private(raw)
    model = {}
    for name, limit in (("sepc", (1 << 64) - 1), ("insn", 0xFFFFFFFF), ("data", (1 << 64) - 1)):
        value = model[name] = raw.get(name)
        if value is not None and (type(value) is not int or not 0 <= value <= limit):
            raise DecodeError(f"{name}={value!r}")
    return R.RiscvFault(
        gfn=t.gfn, exec=t.exec, write=t.write, is_private=private, fault_kind="guest_page_fault_" + t.access,
        **fields, **model,
    )


@given(
    st.sampled_from([20, 21, 23, 5, 1 << 63 | 5]), st.sampled_from([0, 0x10000, 1 << 55]) | U64,
    st.sampled_from([0, 0x40000003]) | U64,
    st.sampled_from([None, 0, 0x3000, 0x3020, 0x3003, 0x2083, 0x00A53023, 0x0005B503, 0x4001]) | U64,
    st.none() | U64, st.none() | st.sampled_from([0x0005B503, 1 << 32]), st.none() | U64,
    st.sampled_from([None, 0, 1, True, 2]),
)
def test_decode_equals_the_field_by_field_reading(scause, htval, stval, htinst, sepc, insn, data, private) -> None:
    raw = {"scause": scause, "htval": htval, "stval": stval}
    optional = {"htinst": htinst, "sepc": sepc, "insn": insn, "data": data, "private": private}
    raw.update((k, v) for k, v in optional.items() if v is not None)
    try:
        expected = reference(raw)
    except DecodeError:
        with pytest.raises(DecodeError):
            R.decode_riscv_fault(raw)
        return
    assert R.decode_riscv_fault(raw) == expected
