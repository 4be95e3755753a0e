"""Tests for kvmcore_arm64.trace (examples from the reference, section 6.3)."""

from __future__ import annotations

import pytest
from kvmcore_arm64 import esr as E
from kvmcore_arm64.trace import EVENTS, parse_event


def test_kvm_guest_fault_reference_example() -> None:
    text = "ipa 0x9000000, hsr 0x93810046, hxfar 0xffff80008000a000, pc 0xffffc0c8a1b2c3d4"
    d = parse_event("kvm_guest_fault", text)
    assert d == {"ipa": 0x9000000, "hsr": 0x93810046, "hxfar": 0xFFFF80008000A000,
                 "vcpu_pc": 0xFFFFC0C8A1B2C3D4}
    # and the syndrome decodes as the reference describes it
    info = E.decode_esr(d["hsr"])
    assert (info.ec, info.isv, info.sas, info.srt, info.wnr, info.fsc) == (0x24, True, 2, 1,
                                                                          True, 0x06)


def test_kvm_guest_fault_padding_and_zero() -> None:
    # %#08lx pads to 8 characters including "0x"; %#llx of 0 may print "0" or "0x0"
    d = parse_event("kvm_guest_fault", "ipa 0, hsr 0x93c08006, hxfar 0x001008, pc 0x0")
    assert d == {"ipa": 0, "hsr": 0x93C08006, "hxfar": 0x1008, "vcpu_pc": 0}


def test_kvm_mmio_nisv_reference_example() -> None:
    text = ("ipa 0x00000009000000, esr 0x00000092000046, far 0xffff80008000a000, "
            "pc 0xffffc0c8a1b2c3d4")
    assert parse_event("kvm_mmio_nisv", text) == {
        "ipa": 0x9000000, "esr": 0x92000046, "far": 0xFFFF80008000A000,
        "vcpu_pc": 0xFFFFC0C8A1B2C3D4,
    }


def test_kvm_access_fault() -> None:
    assert parse_event("kvm_access_fault", "IPA: 40a31000") == {"ipa": 0x40A31000}


def test_kvm_exit() -> None:
    text = "TRAP: HSR_EC: 0x0024 (DABT_LOW), PC: 0xffffc0c8a1b2c3d4"
    assert parse_event("kvm_exit", text) == {
        "exception_type": "TRAP", "esr_ec": 0x24, "esr_ec_name": "DABT_LOW",
        "vcpu_pc": 0xFFFFC0C8A1B2C3D4,
    }
    d = parse_event("kvm_exit", "IRQ: HSR_EC: 0x0000 (UNKNOWN), PC: 0x0000000040001234")
    assert d == {"exception_type": "IRQ", "esr_ec": 0, "esr_ec_name": "UNKNOWN",
                 "vcpu_pc": 0x40001234}
    # the class name matches the decoder's table
    assert E.EC_NAMES[0x24] == "DABT_LOW"


def test_kvm_entry_and_mmio_emulate() -> None:
    assert parse_event("kvm_entry", "PC: 0xffffc0c8a1b2c3d4") == {"vcpu_pc": 0xFFFFC0C8A1B2C3D4}
    text = "Emulate MMIO at: 0xffffc0c8a1b2c3d4 (instr: b9000041, cpsr: 600003c5)"
    assert parse_event("kvm_mmio_emulate", text) == {
        "vcpu_pc": 0xFFFFC0C8A1B2C3D4, "instr": 0xB9000041, "cpsr": 0x600003C5,
    }


@pytest.mark.parametrize("event", ["kvm_page_fault", "kvm_mmio", "kvm_userspace_exit", ""])
def test_unknown_events(event: str) -> None:
    assert parse_event(event, "vcpu 0 rip 0x0 address 0x0 error_code 0x0") is None


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ("kvm_guest_fault", "ipa 0x9000000, hsr 0x93810046"),
        ("kvm_guest_fault", "ipa zz, hsr 0x93810046, hxfar 0x0, pc 0x0"),
        ("kvm_mmio_nisv", ""),
        ("kvm_access_fault", "IPA: 0x40a31000"),  # %lx: no prefix
        ("kvm_exit", "TRAP: HSR_EC: 0x24 (DABT_LOW), PC: 0x1"),  # %04x: at least 4 digits
        ("kvm_entry", "PC: 1234"),
    ],
)
def test_malformed(event: str, text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_event(event, text)
    assert event in str(exc.value) and repr(text) in str(exc.value)


def test_events_list() -> None:
    assert set(EVENTS) >= {"kvm_guest_fault", "kvm_mmio_nisv", "kvm_access_fault", "kvm_exit"}

