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


def outcome(decode, raw: dict) -> object:
    """The fault ``decode`` gives, or the type and message of what it raises."""
    try:
        return decode(raw)
    except Exception as exc:  # noqa: BLE001  # compared, never swallowed
        return type(exc), str(exc)


# anything a caller may pass: out-of-range ints (negative, 2**64 and beyond), bools, floats,
# strings, None
WEIRD = st.integers(min_value=-(1 << 66), max_value=1 << 66) | st.sampled_from([True, False, 1.0, None, "21", -1, 1 << 64])


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = WEIRD) -> st.SearchStrategy:
    """``good`` three times in four, else ``bad``."""
    return st.one_of(good, good, good, bad)


# mostly plain traps (the four CSRs, maybe data), some with a weird value, a missing CSR, sepc, a
# modelling input or an unknown key
RAWS = st.builds(
    lambda scause, htval, stval, htinst, extra, drop: {
        k: v
        for k, v in {"scause": scause, "htval": htval, "stval": stval, **({} if htinst is None else {"htinst": htinst}), **extra}.items()
        if k != drop
    },
    mostly(st.sampled_from([20, 21, 23, 5, 1 << 63 | 5])), mostly(st.sampled_from([0, 0x10000, (1 << 57) - 1, 1 << 57]) | U64),
    mostly(st.sampled_from([0, 0x40000003]) | U64),
    st.none() | mostly(st.sampled_from([0, 0x3000, 0x3020, 0x3003, 0x2083, 0x00A53023, 0x0005B503, 0x4001]) | U64),
    st.dictionaries(st.sampled_from(["data", "data", "sepc", *R.MODEL_KEYS, "x"]), mostly(U64), max_size=2),
    st.sampled_from([None, None, None, None, None, "scause", "htval", "stval"]),
)  # fmt: skip


@given(RAWS)
def test_the_plain_trap_short_cut_equals_the_step_by_step_decode(raw) -> None:
    """decode_riscv_fault's one-test validation and one-go decode (a plain trap) give what the
    step-by-step _decode_riscv_fault gives, the same fault or the same error, for any raw."""
    assert outcome(R.decode_riscv_fault, raw) == outcome(R._decode_riscv_fault, raw)


@pytest.mark.parametrize("raw", [
    {"scause": 21, "htval": 1 << 57, "stval": 0},  # htval wider than 57 bits
    {"scause": 21, "htval": -4, "stval": 0},
    {"scause": 21, "htval": 0x10000, "stval": 1 << 64},
    {"scause": 21, "htval": 0x10000, "stval": 0, "htinst": -1},
    {"scause": -21, "htval": 0x10000, "stval": 0},
    {"scause": True, "htval": 0x10000, "stval": 0},
    {"scause": 23, "htval": 0x10000, "stval": 0, "data": -1},
])  # fmt: skip
def test_a_csr_the_short_cut_refuses_gets_the_step_by_step_error(raw) -> None:
    """Each of these fails one of the short cut's tests: the error names the CSR (a hand-written
    expectation) and is the step-by-step path's, word for word."""
    with pytest.raises(DecodeError) as got:
        R.decode_riscv_fault(raw)
    name = next(k for k, v in raw.items() if v not in (21, 23, 0x10000, 0))
    assert str(got.value).startswith(f"{name}=")
    assert outcome(R._decode_riscv_fault, raw) == (DecodeError, str(got.value))
