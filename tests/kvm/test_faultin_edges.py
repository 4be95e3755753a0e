"""Behaviour of ``kvmcore/kvm/faultin.py`` that no other test pinned (found by mutating it).

Each test fails under a specific change to ``faultin.py`` that left the rest of the suite
green. The contract checks of ``kvm_prepare_memory_fault_exit()`` are kvmcore's own (the kernel
has one helper and no wrappers): the expected value is the field the wrapper changed. The
block-size cases of ``kvm_mapping_size()`` are worked by hand from its rule, which is arm64's
``fault_supports_stage2_huge_mapping()`` plus ``host_pfn_mapping_level()``'s cap.
"""

from __future__ import annotations

import pytest

import kvmcore
from kvmcore import FaultContractError, hookimpl
from kvmcore.abi import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEMORY_ATTRIBUTE_PRIVATE

MiB = 1 << 20
GiB = 1 << 30
RAM = 0x4000_0000  # 1 GiB aligned
SIZES = (GiB, 2 * MiB)  # the core default's GENERIC_BLOCK_SIZES


# --- kvm_prepare_memory_fault_exit(): the wrappers' contract ---------------------------------
class ChangeField:
    def __init__(self, how: str) -> None:
        self.how = how

    @hookimpl(wrapper=True)
    def prepare_memory_fault_exit(self, vcpu, fault):
        common = yield
        mf = vcpu.kvm_run.memory_fault
        if self.how == "flags":
            mf.flags |= 0x8
        elif self.how == "size":
            mf.size = 0x2000
        elif self.how == "exit_reason":
            vcpu.kvm_run.exit_reason = 0
        elif self.how == "none":
            return None
        return common


@pytest.mark.parametrize(
    ("how", "message"),
    [
        # a shared access to the private gfn 0x4: flags 0, gpa 0x4000, size 0x1000 as set
        ("flags", r"field 'memory_fault.flags' must be 0x0 as the common helper set it.*found 0x8"),
        ("size", r"field 'memory_fault.size' must be 0x1000 as the common helper set it.*found 0x2000"),
        ("exit_reason", r"field 'exit_reason' must be KVM_EXIT_MEMORY_FAULT \(39\).*found 0"),
        ("none", r"field 'prepare_memory_fault_exit' must be a MemoryFault result, found None"),
    ],
)
def test_a_wrapper_changing_the_common_exit_is_named(toy, vm, vcpu, how, message) -> None:
    vm.set_user_memory_region(0, 0, 0x10000)
    vm.set_memory_attributes(0x4000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    toy.pm.register(ChangeField(how), name="change")
    try:
        with pytest.raises(FaultContractError, match=message):
            vcpu.handle_fault({"gpa": 0x4000})
    finally:
        toy.pm.unregister(name="change")


# --- kvm_do_userfault() -----------------------------------------------------------------------
def test_no_userfault_without_a_memslot(vm, vcpu) -> None:
    # KVM Userfault v3: the bitmap belongs to a memslot; a fault with none (MMIO) is never a
    # userfault, and the call prepares no exit.
    fault = vm.arch.decode_fault(vcpu, {"gpa": 0x9000_0000})
    fault.slot = None
    assert kvmcore.kvm_do_userfault(vcpu, fault) is False
    assert vcpu.kvm_run.exit_reason == 0


# --- kvm_mapping_size() -----------------------------------------------------------------------
def slot_over(vm: kvmcore.VM, gpa: int, size: int, host_page: int, hva_offset: int = 0, flags: int = 0):
    """A memslot at gpa whose hva is hva_offset bytes past a 1 GiB-aligned host mapping."""
    hva = vm.host.mmap(4 * GiB, page_size=host_page)
    start = (hva + GiB - 1) & ~(GiB - 1)
    return vm.set_user_memory_region(0, gpa, size, start + hva_offset, flags)


@pytest.mark.parametrize(
    ("gpa", "size", "host_page", "hva_offset", "fault_gpa", "expected"),
    [
        # a 1 GiB slot over 2 MiB host pages: 1 GiB is larger than the host's mapping, 2 MiB fits
        (RAM, GiB, 2 * MiB, 0, RAM + 0x30_5000, 2 * MiB),
        # a 1 GiB slot over 1 GiB host pages: the 1 GiB block
        (RAM, GiB, GiB, 0, RAM + 0x30_5000, GiB),
        # the block starting at the slot's first gpa is inside it (start >= guest_phys_addr)
        (RAM, 4 * MiB, 2 * MiB, 0, RAM, 2 * MiB),
        # ... and the one ending at its last byte (start + size <= end)
        (RAM, 4 * MiB, 2 * MiB, 0, RAM + 4 * MiB - 0x1000, 2 * MiB),
        # 3 MiB slot: the second 2 MiB block would end 1 MiB past the slot
        (RAM, 3 * MiB, 2 * MiB, 0, RAM + 2 * MiB, 4096),
        # a slot at RAM + 4K whose hva is 4K into a huge page: congruent; its block at
        # RAM + 2 MiB is whole, the one at RAM is cut at the head
        (RAM + 0x1000, 4 * MiB, 2 * MiB, 0x1000, RAM + 2 * MiB + 0x5000, 2 * MiB),
        (RAM + 0x1000, 4 * MiB, 2 * MiB, 0x1000, RAM + 0x5000, 4096),
        # gpa 2 MiB aligned, hva 4K into a huge page: not congruent
        (RAM, 4 * MiB, 2 * MiB, 0x1000, RAM + 2 * MiB + 0x5000, 4096),
    ],
)
def test_kvm_mapping_size(gpa, size, host_page, hva_offset, fault_gpa, expected) -> None:
    vm = kvmcore.VM("arm64")
    slot = slot_over(vm, gpa, size, host_page, hva_offset)
    assert kvmcore.kvm_mapping_size(vm, slot, fault_gpa >> 12, SIZES) == expected


def test_kvm_mapping_size_is_page_size_while_logging() -> None:
    # dirty logging forces PAGE_SIZE (arm64 memslot_is_logging() -> force_pte)
    vm = kvmcore.VM("arm64")
    slot = slot_over(vm, RAM, 4 * MiB, 2 * MiB, flags=KVM_MEM_LOG_DIRTY_PAGES)
    assert kvmcore.kvm_mapping_size(vm, slot, (RAM + 0x5000) >> 12, SIZES) == 4096
