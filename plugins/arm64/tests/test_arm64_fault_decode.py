"""``fault.decode_fault``'s short cuts give what the plain reading gives: the one-step key check
accepts what ``kvmcore.check_raw_keys`` accepts, and the fault built positionally from the
per-ESR fields equals the one built field by field from :mod:`kvmcore_arm64.esr`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_arm64 import esr as E
from kvmcore_arm64 import fault as F

import kvmcore
from kvmcore import DecodeError

VCPUS = {granule: kvmcore.VM("arm64", granule=granule).create_vcpu() for granule in ("4K", "16K", "64K")}
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
# data/instruction aborts (translation, permission, access flag, S1PTW, ISV, CM, SEA...), other
# classes, RES0 bits, and anything 32-bit
ESRS = st.sampled_from([
    0x93C08007, 0x92000007, 0x9200004F, 0x9300008B, 0x82000006, 0x8200000F, 0x96000046, 0x92000107,
    0x92000010, 0x92000187, 0x8600000F, 0x56000000, 0x1 << 56,
]) | st.integers(min_value=0, max_value=(1 << 32) - 1)  # fmt: skip
HPFARS = st.sampled_from([0, 0x400010, 1 << 63 | 0x400010, 0xFFFF_FFFF_FFF0, 1 << 50]) | U64


@given(st.lists(st.sampled_from([*F.REGISTERS, *F.MODEL_KEYS, "x"]), unique=True))
def test_key_check_accepts_what_check_raw_keys_accepts(keys) -> None:
    raw = dict.fromkeys(keys, 0)
    try:
        kvmcore.check_raw_keys(raw, arch="arm64", registers=F.REGISTERS, extra_keys=F.MODEL_KEYS, required=F.REQUIRED)
    except DecodeError:
        with pytest.raises(DecodeError):
            F.check_raw(raw)
    else:
        F.check_raw(raw)


def reference(vcpu: kvmcore.VCPU, raw: dict[str, int]) -> F.Arm64Fault:
    """decode_fault read field by field (keywords), for inputs check_raw accepts."""
    info = E.decode_guest_abort(raw["esr"])
    ipa = E.hpfar_to_ipa(raw["hpfar"])
    far = raw.get("far")
    return F.Arm64Fault(
        gfn=E.gpa_to_gfn(ipa, vcpu.vm.page_shift), exec=E.is_exec_fault(info), write=E.is_write_fault(info),
        is_private=kvmcore.raw_private(raw), esr=info.esr, ec=info.ec, fsc=info.fsc,  # type: ignore[arg-type]
        fault_kind=info.fault_kind, fault_level=info.fault_level,  # type: ignore[arg-type]
        s1ptw=bool(info.s1ptw), is_iabt=not info.is_data_abort, isv=info.isv, wnr=info.wnr, cm=info.cm,
        access_size=info.access_size, srt=info.srt, ipa=ipa,
        gpa=ipa | (far & 0xFFF) if far is not None else ipa, far=far, hpfar=raw["hpfar"],
        hpfar_trusted=E.hpfar_trusted(info), data=raw.get("data", 0), info=info,
    )


@given(
    st.sampled_from(sorted(VCPUS)), ESRS, HPFARS, st.none() | U64, st.none() | U64,
    st.sampled_from([None, 0, 1, True, 2]),
)
def test_decode_fault_equals_the_field_by_field_reading(granule, esr, hpfar, far, data, private) -> None:
    vcpu = VCPUS[granule]
    raw = {"esr": esr, "hpfar": hpfar}
    raw.update((k, v) for k, v in (("far", far), ("data", data), ("private", private)) if v is not None)
    try:
        expected = reference(vcpu, raw)
    except DecodeError as err:
        with pytest.raises(DecodeError) as got:
            F.decode_fault(vcpu, raw)
        assert str(got.value) == str(err)
        return
    for _ in range(2):  # the second time from the per-ESR cache
        assert F.decode_fault(vcpu, raw) == expected


def outcome(decode, vcpu: kvmcore.VCPU, raw: dict) -> object:
    """The fault ``decode`` gives, or the type and message of what it raises."""
    try:
        return decode(vcpu, raw)
    except Exception as exc:  # noqa: BLE001  # compared, never swallowed
        return type(exc), str(exc)


# anything a caller may pass: out-of-range ints (negative, 2**64 and beyond), bools, floats,
# strings, None
WEIRD = st.integers(min_value=-(1 << 66), max_value=1 << 66) | st.sampled_from(
    [True, False, 1.0, None, "0x93c08007", -1, 1 << 64]
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = WEIRD) -> st.SearchStrategy:
    """``good`` three times in four, else ``bad``."""
    return st.one_of(good, good, good, bad)


# mostly plain aborts (esr, hpfar, maybe far and data), some with a weird value, a missing
# register, a modelling input or an unknown key
RAWS = st.builds(
    lambda esr, hpfar, far, extra, drop: {
        k: v for k, v in {"esr": esr, "hpfar": hpfar, **({} if far is None else {"far": far}), **extra}.items() if k != drop
    },
    mostly(ESRS), mostly(HPFARS), st.none() | mostly(U64),
    st.dictionaries(st.sampled_from(["data", "data", "private", "x"]), mostly(U64), max_size=2),
    st.sampled_from([None, None, None, None, None, "esr", "hpfar"]),
)  # fmt: skip


@given(st.sampled_from(sorted(VCPUS)), RAWS)
def test_the_plain_abort_short_cut_equals_the_step_by_step_decode(granule, raw) -> None:
    """decode_fault's one-test validation and one-go decode (a plain abort) give what the
    step-by-step _decode_fault gives, the same fault or the same error, for any raw mapping."""
    vcpu = VCPUS[granule]
    assert outcome(F.decode_fault, vcpu, raw) == outcome(F._decode_fault, vcpu, raw)


@pytest.mark.parametrize("raw", [
    {"esr": 0x93C08007, "hpfar": 1 << 64},  # beyond 64 bits
    {"esr": 0x93C08007, "hpfar": -0x10},  # negative
    {"esr": 0x93C08007, "hpfar": 0x400011},  # RES0 bit 0
    {"esr": 0x93C08007, "hpfar": 0x400010, "far": -1},
    {"esr": -1, "hpfar": 0x400010},
    {"esr": 1 << 64, "hpfar": 0x400010},
    {"esr": True, "hpfar": 0x400010},
    {"esr": 0x93C08007, "hpfar": 0x400010, "data": -1},
    {"esr": 0x93C08007, "hpfar": 0x400010, "data": 1 << 64},
])  # fmt: skip
def test_a_register_the_short_cut_refuses_gets_the_step_by_step_error(raw) -> None:
    """Each of these fails one of the short cut's tests: the error names the register (a
    hand-written expectation) and is the step-by-step path's, word for word."""
    vcpu = VCPUS["4K"]
    with pytest.raises(DecodeError) as got:
        F.decode_fault(vcpu, raw)
    name = next(k for k, v in raw.items() if v not in (0x93C08007, 0x400010))
    assert str(got.value).startswith(f"{name}=")
    assert outcome(F._decode_fault, vcpu, raw) == (DecodeError, str(got.value))
