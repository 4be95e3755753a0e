"""RISC-V kvm_entry / kvm_exit tracepoint text (arch/riscv/kvm/trace.h)."""

from __future__ import annotations

import pytest
from kvmcore_riscv.trace import parse_event
from kvmcore_riscv.trap import decode_guest_page_fault

REFERENCE_EXIT = "SEPC:0xffffffff80a0b1c2, SCAUSE:0x17, STVAL:0xffffffc800000000, HTVAL:0x4000000, HTINST:0xb00023"


def test_kvm_exit_reference_example():
    assert parse_event("kvm_exit", REFERENCE_EXIT) == {
        "sepc": 0xFFFFFFFF80A0B1C2,
        "scause": 0x17,
        "stval": 0xFFFFFFC800000000,
        "htval": 0x4000000,
        "htinst": 0xB00023,
    }


def test_kvm_exit_feeds_the_decoder():
    e = parse_event("kvm_exit", REFERENCE_EXIT + "\n")
    f = decode_guest_page_fault(e["scause"], e["htval"], e["stval"], e["htinst"])
    assert f.gpa == 0x10000000 and f.write and f.rs2 == 11


def test_kvm_exit_interrupt_and_zero_fields():
    # A timer interrupt exit: scause bit 63 | 5, everything else 0 (%lx prints "0").
    assert parse_event(
        "kvm_exit",
        "SEPC:0xffffffff80001000, SCAUSE:0x8000000000000005, STVAL:0x0, HTVAL:0x0, HTINST:0x0",
    ) == {"sepc": 0xFFFFFFFF80001000, "scause": (1 << 63) | 5, "stval": 0, "htval": 0, "htinst": 0}


@pytest.mark.parametrize(
    "text,pc",
    [
        # "PC: 0x016%lx": the characters 0x016, then the PC unpadded.
        ("PC: 0x016ffffffff80a0b1c2", 0xFFFFFFFF80A0B1C2),
        ("PC: 0x01680200000", 0x80200000),
        ("PC: 0x0160", 0),
        # A kernel that printed %016lx correctly: 16 digits, not readable as the typo
        # (after "016" would come a leading zero).
        ("PC: 0x0000000080200000", 0x80200000),
        ("PC: 0x0160000000001234", 0x0160000000001234),
    ],
)
def test_kvm_entry(text, pc):
    assert parse_event("kvm_entry", text) == {"pc": pc}


@pytest.mark.parametrize(
    "event", ["kvm_mmio", "kvm_userspace_exit", "kvm_guest_fault", "kvm_page_fault", ""]
)
def test_unknown_events_are_none(event):
    assert parse_event(event, "anything") is None


@pytest.mark.parametrize(
    "event,text",
    [
        ("kvm_exit", "SEPC:0x1"),
        ("kvm_exit", REFERENCE_EXIT.replace("HTINST", "HTINSN")),
        ("kvm_exit", REFERENCE_EXIT.replace("0x17", "0x1ffffffffffffffff")),  # 17 hex digits
        ("kvm_exit", REFERENCE_EXIT.replace("0x17", "23")),
        ("kvm_exit", "TRAP: HSR_EC: 0x0024 (DABT_LOW), PC: 0xffffc0c8a1b2c3d4"),  # arm64's kvm_exit
        ("kvm_entry", "PC: 0x80200000"),  # neither the typo nor 16 digits
        ("kvm_entry", "PC: 0x016"),
        ("kvm_entry", "PC: 0x01600ff"),  # %lx never prints a leading zero
        ("kvm_entry", "pc 0x016ff"),
    ],
)
def test_malformed_names_event_and_text(event, text):
    with pytest.raises(ValueError) as exc:
        parse_event(event, text)
    assert event in str(exc.value) and repr(text) in str(exc.value)

