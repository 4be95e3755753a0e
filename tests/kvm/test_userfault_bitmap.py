"""The KVM Userfault v3 bitmap as the kernel reads it (found by mutating ``kvmcore/kvm/userfault.py``).

The bitmap is an array of unsigned longs in userspace (``test_bit()`` on ``unsigned long *``):
on a little-endian host, page *i* is bit ``i % 64`` of long ``i // 64``, which is bit
``i % 8`` of byte ``i // 8`` of the buffer whatever type the VMM used to build it.
"""

from __future__ import annotations

from array import array

import pytest

import kvmcore
from kvmcore.abi import KVM_EXIT_MEMORY_FAULT, KVM_MEM_USERFAULT

RAM = 0x4000_0000


def test_a_bitmap_of_longs_is_read_bit_by_bit() -> None:
    # array('Q'): one 64-bit long per 64 pages. Long 0 = 1 << 12 marks page 12 only (byte 1,
    # bit 4); long 1 = 1 << 3 marks page 64 + 3 = 67.
    bitmap = array("Q", [1 << 12, 1 << 3])
    vm = kvmcore.VM("arm64")
    vm.set_user_memory_region(0, RAM, 128 * 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    vcpu = vm.create_vcpu()
    outcomes = {}
    for page in (4, 12, 13, 3, 67, 68):
        ipa = RAM + page * 0x1000
        outcomes[page] = vcpu.handle_fault({"esr": 0x93C08007, "hpfar": (ipa >> 12) << 4}).outcome
    assert outcomes == {4: "mapped", 12: "userfault", 13: "mapped", 3: "mapped", 67: "userfault", 68: "mapped"}
    vcpu.handle_fault({"esr": 0x93C08007, "hpfar": ((RAM + 67 * 0x1000) >> 12) << 4})
    mf = vcpu.kvm_run.memory_fault
    assert (vcpu.kvm_run.exit_reason, mf.flags, mf.gpa) == (KVM_EXIT_MEMORY_FAULT, 0x10, RAM + 67 * 0x1000)


def bits(buf: bytearray) -> set[int]:
    """The page indexes whose bit is set: bit i % 8 of byte i // 8 (test_bit(), little-endian)."""
    return {i for i in range(len(buf) * 8) if buf[i // 8] >> (i % 8) & 1}


def test_set_userfault_bits_ranges_by_hand() -> None:
    buf = bytearray(8)  # 64 pages
    kvmcore.set_userfault_bits(buf, range(5, 27))  # head byte 0 bits 5-7, bytes 1-2 whole, byte 3 bits 0-2
    assert bits(buf) == set(range(5, 27))
    assert bytes(buf[:4]) == bytes([0xE0, 0xFF, 0xFF, 0x07])
    kvmcore.set_userfault_bits(buf, range(9, 12), value=False)  # inside one byte: bits 1-3 of byte 1
    assert buf[1] == 0xF1
    kvmcore.set_userfault_bits(buf, range(16, 24), value=False)  # exactly byte 2
    assert bits(buf) == set(range(5, 9)) | set(range(12, 16)) | set(range(24, 27))
    kvmcore.set_userfault_bits(buf, range(0, 64))  # the whole bitmap, start and stop at its ends
    assert bytes(buf) == b"\xff" * 8
    kvmcore.set_userfault_bits(buf, range(63, 64), value=False)
    kvmcore.set_userfault_bits(buf, range(3, 3), value=False)  # empty: nothing changes
    assert bytes(buf) == b"\xff" * 7 + b"\x7f"


def test_set_userfault_bits_lists_and_bounds() -> None:
    buf = bytearray(2)  # 16 pages
    kvmcore.set_userfault_bits(buf, [0, 7, 8, 15])
    assert bytes(buf) == bytes([0x81, 0x81])
    kvmcore.set_userfault_bits(buf, [7, 8], value=False)
    assert bytes(buf) == bytes([0x01, 0x80])
    for bad in ([16], [-1], range(0, 17), range(-1, 3)):
        with pytest.raises(ValueError, match="outside the bitmap's 16 bits"):
            kvmcore.set_userfault_bits(buf, bad)
    assert bytes(buf) == bytes([0x01, 0x80])  # nothing written by a refused call
