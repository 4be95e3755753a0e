"""``decode_fault``'s memo of the exit registers' decoding gives what the step-by-step decode
gives: the same fault, the same error and the same warnings, on first and on repeated inputs,
valid or not, on every kind of VM."""

from __future__ import annotations

import warnings

from hypothesis import given, settings
from hypothesis import strategies as st
from kvmcore_x86 import decode

import kvmcore
from kvmcore import abi

VM_SETTINGS = (
    {}, {"vendor": "svm"}, {"vm_type": "snp"}, {"vm_type": "sw_protected"}, {"vm_type": "tdx"},
    {"kernel": "6.12"}, {"kernel": "6.18"}, {"kernel": "7.3", "mbec": True}, {"nx_huge_pages": True},
)  # fmt: skip
PRIVATE_GPA = 0x4000_1000  # private on the sw_protected VM


def _vcpu(index: int) -> kvmcore.VCPU:
    vm = kvmcore.VM("x86", **VM_SETTINGS[index])
    if vm.settings["vm_type"] == "sw_protected":
        vm.set_memory_attributes(PRIVATE_GPA, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    return vm.create_vcpu()


VCPUS = [_vcpu(i) for i in range(len(VM_SETTINGS))]

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
ODD = st.sampled_from([None, True, False, 1.0, "1", -1, 1 << 64])
# Per key: values that decode (exit qualifications, #NPF error codes with and without
# synthetic bits, TDX shared and private GPAs...) and values that do not.
VALUES = {
    "gpa": st.sampled_from([0, 0x1008, PRIVATE_GPA, PRIVATE_GPA | 1 << 51, 1 << 52]) | st.integers(0, (1 << 52) - 1),
    "exit_qualification": st.sampled_from([0x181, 0x182, 0x184, 0x189, 0x1182, 0x283, 0x41, 0x80, 0x100, 1, 2, 4])
    | st.integers(0, 1 << 17),
    "error_code": st.sampled_from([4, 6, 7, 0x1_0000_0004, 0x5_0000_0006, 0x1_0000_000D, 0x1_8000_0004,
                                   1 << 48 | 4, 1 << 49 | 6, 1 << 40]) | U64,
    "exit_reason": st.sampled_from([48, 49, 12]),
    "gla": st.sampled_from([0, 0x7FFF_F000]) | U64,
    "len": st.sampled_from([1, 2, 4, 8, 3]),
    "data": st.sampled_from([0, 0xFF]) | U64,
    "private": st.sampled_from([0, 1, 2]),
    "vendor": st.sampled_from(["vmx", "svm", "arm"]),
    "bogus": st.just(1),
}  # fmt: skip


@st.composite
def raws(draw: st.DrawFn) -> dict[str, object]:
    """An EPT violation or #NPF, with extra keys, sometimes one odd value."""
    raw: dict[str, object] = {"gpa": draw(VALUES["gpa"])}
    register = draw(st.sampled_from(["exit_qualification", "error_code"]))
    raw[register] = draw(VALUES[register])
    for key in draw(st.lists(st.sampled_from(list(VALUES)), max_size=3, unique=True)):
        raw[key] = draw(VALUES[key])
    if draw(st.integers(0, 4)) == 0:
        raw[draw(st.sampled_from(sorted(raw)))] = draw(ODD)
    return raw


def _outcome(function, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = repr(function(*args))
        except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
            result = (type(exc), str(exc))
    return result, [(w.category, str(w.message)) for w in caught]


@settings(max_examples=500)
@given(raws())
def test_memo_gives_the_step_by_step_result(raw) -> None:
    # the input without each of its keys, then whole, on every VM in turn, twice: what one
    # input or VM left in the memo must never answer for another
    inputs = [{k: v for k, v in raw.items() if k != key} for key in raw] + [raw]
    expected = [_outcome(decode._decode_fault, vcpu.vm, r, None) for r in inputs for vcpu in VCPUS]
    for _ in range(2):
        assert [_outcome(decode.decode_fault, vcpu, r) for r in inputs for vcpu in VCPUS] == expected


def test_memo_is_used_for_plain_inputs_and_not_for_others() -> None:
    vm = VCPUS[0].vm
    assert decode._exit_key(vm, {"gpa": 0x1000, "exit_qualification": 0x181}) is not None
    for raw in ({"gpa": 0x1000, "exit_qualification": True}, {"gpa": 0x1000, "exit_qualification": None},
                {"gpa": 0x1000, "exit_qualification": 0x181, "private": True}, {"gpa": 0x1000, "x": 1}):
        assert decode._exit_key(vm, raw) is None
    assert decode._exit_key(VCPUS[4].vm, {"gpa": 0x1000, "exit_qualification": 0x181}) is None  # TDX
