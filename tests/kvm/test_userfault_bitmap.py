"""The KVM Userfault v3 bitmap as the kernel reads it (found by mutating ``kvmcore/kvm/userfault.py``).

The bitmap is an array of unsigned longs in userspace (``test_bit()`` on ``unsigned long *``):
on a little-endian host, page *i* is bit ``i % 64`` of long ``i // 64``, which is bit
``i % 8`` of byte ``i // 8`` of the buffer whatever type the VMM used to build it.
"""

from __future__ import annotations

from array import array

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
