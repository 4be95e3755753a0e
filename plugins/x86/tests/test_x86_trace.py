"""Tracepoint text parsing and vendor_hint().

Lines are the reference's section 6 examples (built from the TP_printk formats).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_x86.pferr import pferr_from_trace_flags
from kvmcore_x86.svm import decode_npf
from kvmcore_x86.trace import EVENTS, parse_event, vendor_hint
from kvmcore_x86.vmx import decode_ept_violation

from kvmcore import DecodeError


def test_kvm_page_fault_vmx_example():
    text = "vcpu 0 rip 0xffffffff81a3c2d0 address 0x00000000fd000000 error_code 0x182"
    assert parse_event("kvm_page_fault", text) == {
        "event": "kvm_page_fault",
        "vcpu_id": 0,
        "guest_rip": 0xFFFFFFFF81A3C2D0,
        "fault_address": 0xFD000000,
        "error_code": 0x182,
        "vcpu": 0,  # the replay's names for the vCPU and the pc
        "pc": 0xFFFFFFFF81A3C2D0,
    }


def test_kvm_page_fault_svm_example():
    text = "vcpu 1 rip 0xffffffff8100abcd address 0x00000000c0000000 error_code 0x100000006"
    assert parse_event("kvm:kvm_page_fault", text) == {
        "event": "kvm_page_fault",
        "vcpu_id": 1,
        "guest_rip": 0xFFFFFFFF8100ABCD,
        "fault_address": 0xC0000000,
        "error_code": 0x100000006,
        "vcpu": 1,
        "pc": 0xFFFFFFFF8100ABCD,
    }


def test_kvm_page_fault_old_format():
    # Before 2021 the event printed only "address %lx error_code %x".
    assert parse_event("kvm_page_fault", "address fd000000 error_code 182") == {
        "event": "kvm_page_fault",
        "vcpu_id": None,
        "guest_rip": None,
        "fault_address": 0xFD000000,
        "error_code": 0x182,
    }


def test_trace_to_decode_chain():
    vmx = parse_event("kvm_page_fault", "vcpu 0 rip 0xffffffff81a3c2d0 address 0x00000000fd000000 error_code 0x182")
    assert vendor_hint(vmx["error_code"]) == "vmx"
    assert decode_ept_violation(vmx["error_code"]).data_write
    svm = parse_event("kvm_page_fault", "vcpu 1 rip 0xffffffff8100abcd address 0x00000000c0000000 error_code 0x100000006")
    assert vendor_hint(svm["error_code"]) == "svm"
    assert decode_npf(svm["error_code"]).guest_final


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mmio write len 4 gpa 0x9000000 val 0x41", {"type": 2, "type_name": "write", "len": 4, "gpa": 0x9000000, "val": 0x41}),
        ("mmio unsatisfied-read len 4 gpa 0x9000018 val 0x0", {"type": 0, "type_name": "unsatisfied-read", "len": 4, "gpa": 0x9000018, "val": 0x0}),
        ("mmio read len 4 gpa 0x9000018 val 0x90", {"type": 1, "type_name": "read", "len": 4, "gpa": 0x9000018, "val": 0x90}),
        ("mmio 0x3 len 8 gpa 0xfee00000 val 0xffffffffffffffff", {"type": 3, "type_name": "0x3", "len": 8, "gpa": 0xFEE00000, "val": (1 << 64) - 1}),
    ],
)
def test_kvm_mmio(text, expected):
    assert parse_event("kvm_mmio", text) == {"event": "kvm_mmio", **expected}


@pytest.mark.parametrize(
    ("text", "reason", "exit_reason", "errno"),
    [
        ("reason KVM_EXIT_MMIO (6)", "KVM_EXIT_MMIO", 6, None),
        ("reason KVM_EXIT_ARM_NISV (28)", "KVM_EXIT_ARM_NISV", 28, None),
        ("reason error (14)", "error", None, 14),  # memory-fault exit, -EFAULT
        ("reason error (133)", "error", None, 133),  # -EHWPOISON
        ("reason restart (4)", "restart", None, 4),  # -EINTR
        ("reason 0x27 (39)", "0x27", 39, None),  # past the symbol table: raw hex
    ],
)
def test_kvm_userspace_exit(text, reason, exit_reason, errno):
    assert parse_event("kvm_userspace_exit", text) == {
        "event": "kvm_userspace_exit",
        "reason": reason,
        "exit_reason": exit_reason,
        "errno": errno,
    }


def test_fast_page_fault_example():
    text = (
        "vcpu 0 gva fd000000 error_code W|U sptep 00000000a1b2c3d4 old 0x6000000123456b77 "
        "new 6000000123456b77 spurious 0 fixed 1"
    )
    assert parse_event("kvmmmu:fast_page_fault", text) == {
        "event": "fast_page_fault",
        "vcpu_id": 0,
        "cr2_or_gpa": 0xFD000000,
        "error_code": 0x6,  # W 0x2 | U 0x4
        "error_code_flags": "W|U",
        "sptep": "00000000a1b2c3d4",
        "old_spte": 0x6000000123456B77,
        "new_spte": 0x6000000123456B77,
        "spurious": False,
        "fixed": True,
    }


def test_fast_page_fault_empty_flags_and_zero_old():
    # error_code 0 prints nothing; %#llx prints 0 without 0x
    text = "vcpu 3 gva 1000 error_code  sptep 0000000012345678 old 0 new 0 spurious 1 fixed 0"
    parsed = parse_event("fast_page_fault", text)
    assert parsed["error_code"] == 0 and parsed["error_code_flags"] == ""
    assert parsed["old_spte"] == 0 and parsed["spurious"] and not parsed["fixed"]


def test_fast_page_fault_unknown_flag():
    text = "vcpu 0 gva fd000000 error_code W|Q sptep 00000000a1b2c3d4 old 0 new 0 spurious 0 fixed 0"
    with pytest.raises(ValueError, match="fast_page_fault") as info:
        parse_event("fast_page_fault", text)
    assert "'Q'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "access"),
    [("gfn fd000 pfn 123456 level 1 access 7", 7), ("gfn fd000 pfn 123456 level 1", None)],
)
def test_kvm_mmu_spte_requested(text, access):
    assert parse_event("kvm_mmu_spte_requested", text) == {
        "event": "kvm_mmu_spte_requested",
        "gfn": 0xFD000,
        "pfn": 0x123456,
        "level": 1,
        "access": access,
    }


@pytest.mark.parametrize("event", ["kvm_guest_fault", "kvm_mmio_nisv", "arm64:kvm_access_fault", ""])
def test_unknown_events(event):
    assert parse_event(event, "anything at all") is None


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ("kvm_page_fault", "vcpu 0 rip 0xffffffff81a3c2d0 address 0x00000000fd000000"),
        ("kvm_page_fault", "vcpu x rip 0x1 address 0x2 error_code 0x3"),
        ("kvm_page_fault", ""),
        ("kvm_mmio", "mmio poke len 4 gpa 0x9000000 val 0x41"),
        ("kvm_userspace_exit", "reason KVM_EXIT_MMIO"),
        ("kvm_mmu_spte_requested", "gfn fd000 pfn 123456"),
        ("fast_page_fault", "vcpu 0 gva fd000000"),
    ],
)
def test_malformed_names_event_and_text(event, text):
    with pytest.raises(ValueError) as info:
        parse_event(event, text)
    assert event in str(info.value) and repr(text) in str(info.value)


def test_events_listed():
    assert set(EVENTS) == {"kvm_page_fault", "kvm_mmio", "kvm_userspace_exit", "fast_page_fault", "kvm_mmu_spte_requested",
                           "kvm_exit", "kvm_nested_vmexit"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("", 0), ("P", 0x1), ("W|U", 0x6), ("P|W|U|PK|SS|SGX|RSVD|F", 0x807F), ("P|0x100000000", 0x100000001)],
)
def test_pferr_from_trace_flags(text, value):
    assert pferr_from_trace_flags(text) == value


@pytest.mark.parametrize(
    ("error_code", "hint"),
    [
        (0x182, "vmx"),  # bits 7/8: reserved in #NPF and AMD #PF
        (0x8181, "vmx"),  # bit 15 guest-paging verification (Intel SGX bit in #PF)
        (0x10002, "vmx"),  # bit 16
        (0x100000006, "svm"),  # bit 32 GUEST_FINAL
        (0x200000007, "svm"),  # bit 33 GUEST_PAGE
        (0x2000500000006, "svm"),  # bit 49 PRIVATE_ACCESS + bit 34 ENC
        (0x80000007, "svm"),  # bit 31 RMP, even in a 32-bit truncated line
        (0x6, None),  # W|U as PFERR, or R|W... as an exit qualification: ambiguous
        (0x2, None),  # TDX private write, or a PFERR write
        (0x0, None),
        (0x7F, None),  # bits 0-6 only
        (0x100000182, None),  # both vendors' bits: neither
        (1 << 20, None),  # reserved on both
        (1 << 40, None),
        ((1 << 48) | 0x100000006, None),  # bit 48 is never traced
    ],
)
def test_vendor_hint(error_code, hint):
    assert vendor_hint(error_code) == hint


def test_vendor_hint_refuses_non_u64():
    with pytest.raises(DecodeError):
        vendor_hint(-1)


u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(st.integers(min_value=0, max_value=(1 << 32) - 1), u64, u64, u64)
def test_kvm_page_fault_round_trip(vcpu, rip, address, error_code):
    text = f"vcpu {vcpu} rip {rip:#x} address 0x{address:016x} error_code {error_code:#x}"
    parsed = parse_event("kvm_page_fault", text)
    assert (parsed["vcpu_id"], parsed["guest_rip"], parsed["fault_address"], parsed["error_code"]) == (
        vcpu, rip, address, error_code
    )


@given(u64)
def test_vendor_hint_consistent_with_decoders(v):
    hint = vendor_hint(v)
    if hint == "svm":
        decode_npf(v)  # an "svm" value is always a valid #NPF error code
        with pytest.raises(DecodeError):
            decode_ept_violation(v)
    elif hint == "vmx":
        with pytest.raises(DecodeError):
            decode_npf(v)

