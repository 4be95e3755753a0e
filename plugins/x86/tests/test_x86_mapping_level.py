"""Which leaf size an x86 TDP fault installs: ``kvm_mmu_hugepage_adjust()`` and
``kvm_mmu_max_mapping_level()`` (``arch/x86/kvm/mmu/mmu.c``), per kernel version.

Expected sizes are worked by hand from the source cited in each test; none comes from
kvmcore.
"""

from __future__ import annotations

import pytest

import kvmcore
from kvmcore import abi

MB = 1 << 20
RAM = 0x4000_0000  # 1 GiB: 2 MiB and 1 GiB aligned
EQ_READ = 0x181  # ACC_READ | GVA_IS_VALID | GVA_TRANSLATED
EQ_WRITE = 0x182
ALL = ("6.12", "6.18", "7.3")


def hugetlb_vm(kernel: str, vm_type: str = "sw_protected", flags: int = 0, **kw) -> tuple[kvmcore.VM, kvmcore.VCPU]:
    vm = kvmcore.VM("x86", kernel=kernel, vm_type=vm_type)
    hva = vm.host.mmap(4 * MB, page_size=2 * MB)
    vm.set_user_memory_region(0, RAM, 4 * MB, hva, flags=flags, **kw)
    return vm, vm.create_vcpu()


@pytest.mark.parametrize("kernel", ALL)
def test_no_shared_huge_page_over_a_private_gfn(kernel) -> None:
    # kvm_arch_post_set_memory_attributes() -> hugepage_set_mixed() when hugepage_has_attrs()
    # is false for the 2 MiB range; lpage_info_slot()->disallow_lpage then stops the level
    # loop of kvm_mmu_max_mapping_level() (__kvm_mmu_max_mapping_level() in 6.12) at 4K.
    vm, vcpu = hugetlb_vm(kernel)
    vm.set_memory_attributes(RAM + 0x1F_F000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x1000})
    assert (res.outcome, res.mapped.size) == ("mapped", 4096)
    # the second 2 MiB has no private gfn: the host's 2 MiB page gives a 2 MiB leaf
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x20_1000})
    assert (res.outcome, res.mapped.size) == ("mapped", 2 * MB)
    # converting the page back to shared clears the mixed flag (hugepage_clear_mixed())
    vm.set_memory_attributes(RAM + 0x1F_F000, 0x1000, 0)
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x2000})
    assert res.mapped.size == 2 * MB


@pytest.mark.parametrize("kernel", ALL)
def test_shared_fault_in_a_guest_memfd_slot_uses_the_host_mapping(kernel) -> None:
    # A guest_memfd slot without GUEST_MEMFD_FLAG_MMAP: a shared fault goes to
    # __kvm_faultin_pfn() (host memory), and kvm_mmu_max_mapping_level() takes
    # host_pfn_mapping_level() since !is_private && !kvm_memslot_is_gmem_only(): 2 MiB.
    vm = kvmcore.VM("x86", kernel=kernel, vm_type="sw_protected")
    fd = vm.create_guest_memfd(4 * MB)
    hva = vm.host.mmap(4 * MB, page_size=2 * MB)
    vm.set_user_memory_region(0, RAM, 4 * MB, hva, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    res = vm.create_vcpu().handle_fault({"exit_qualification": EQ_WRITE, "gpa": RAM + 0x3000})
    assert (res.outcome, res.mapped.size) == ("mapped", 2 * MB)


@pytest.mark.parametrize("kernel", ALL)
def test_readonly_slot_with_dirty_logging_maps_4k(kernel) -> None:
    # kvm_mmu_hugepage_adjust(): "if (kvm_slot_dirty_track_enabled(slot)) return;", which
    # tests the KVM_MEM_LOG_DIRTY_PAGES flag whatever KVM_MEM_READONLY says (unlike arm64's
    # and RISC-V's memslot_is_logging()).
    vm, vcpu = hugetlb_vm(kernel, vm_type="default", flags=abi.KVM_MEM_READONLY | abi.KVM_MEM_LOG_DIRTY_PAGES)
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x1000})
    assert (res.outcome, res.mapped.size) == ("mapped", 4096)


def test_misaligned_slot_edges_map_4k() -> None:
    # kvm_alloc_memslot_metadata(): lpage_info disallowed for the head/tail huge pages a slot
    # does not cover whole, and everywhere when gfn and hva are not congruent.
    vm = kvmcore.VM("x86", kernel="7.3")
    hva = vm.host.mmap(6 * MB, page_size=2 * MB)
    vm.set_user_memory_region(0, RAM + 0x1000, 4 * MB, hva + 0x1000)  # congruent, head/tail partial
    vcpu = vm.create_vcpu()
    assert vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x2000}).mapped.size == 4096
    assert vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x20_1000}).mapped.size == 2 * MB
    vm2 = kvmcore.VM("x86", kernel="7.3")
    hva2 = vm2.host.mmap(6 * MB, page_size=2 * MB)
    vm2.set_user_memory_region(0, RAM, 4 * MB, hva2 + 0x1000)  # not congruent
    res = vm2.create_vcpu().handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x20_1000})
    assert res.mapped.size == 4096


def test_tdx_vm_type_needs_6_16() -> None:
    # 6.12 arch/x86/include/uapi/asm/kvm.h defines KVM_X86_SW_PROTECTED_VM (1) and
    # KVM_X86_SNP_VM (4) but no KVM_X86_TDX_VM (5, in 7.3): KVM_CREATE_VM refuses type 5.
    with pytest.raises(ValueError, match="tdx"):
        kvmcore.VM("x86", kernel="6.12", vm_type="tdx")
    assert kvmcore.VM("x86", kernel="6.18", vm_type="tdx").settings["vendor"] == "vmx"


def test_syndrome_words_only_with_the_syndrome_proposal() -> None:
    # sw_protected: kvm_mmu_page_fault() sets PFERR_PRIVATE_ACCESS from the gfn's attributes; the
    # slot has no guest_memfd -> kvm_mmu_faultin_pfn_gmem(): kvm_mmu_prepare_memory_fault_exit()
    # fills exit_reason and memory_fault only; the syndrome after it is kvmcore's proposal.
    for proposals, flags in ((None, abi.KVMCORE_SYNDROME_VALID), ((), 0)):
        vm = kvmcore.VM("x86", vm_type="sw_protected", proposals=proposals)
        vm.set_user_memory_region(0, RAM, 2 * MB)
        vm.set_memory_attributes(RAM, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        vcpu = vm.create_vcpu()
        res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM})
        assert (res.outcome, vcpu.kvm_run.syndrome.flags) == ("private_no_gmem", flags)
