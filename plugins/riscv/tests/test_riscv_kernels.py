"""RISC-V guest-page-fault outcomes that differ by kernel version, or that kvmcore got wrong.

Expected values are worked by hand from the kernel source named in each test (6.12 and 7.3
from ``/work/kernel-source``; 6.18 from the patch mails cited in ``kvmcore_riscv.kernels``),
never read back from kvmcore.
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore import abi

MiB = 1 << 20
LOAD, STORE, FETCH = 0x15, 0x17, 0x14  # scause 21, 23, 20
LW_A0 = 0x00002503  # transformed htinst of "lw a0"
RAM = 0x8000_0000


def trap(scause: int, gpa: int, htinst: int = LW_A0) -> dict[str, int]:
    """Trap CSRs for gpa: htval = gpa >> 2, stval = gpa (vsatp Bare)."""
    return {"scause": scause, "htval": gpa >> 2, "stval": gpa, "htinst": htinst}


def make(kernel: str, **proposals) -> tuple[kvmcore.VM, kvmcore.VCPU]:
    vm = kvmcore.VM("riscv", kernel=kernel, **proposals)
    return vm, vm.create_vcpu()


@pytest.mark.parametrize(("kernel", "size"), [("6.12", 2 * MiB), ("6.18", 2 * MiB), ("7.3", 4096)])
def test_hugetlb_block_on_a_misaligned_slot(kernel, size) -> None:
    # 6.12 kvm_riscv_gstage_map() / 6.18 kvm_riscv_mmu_map(): vma_pagesize = huge_page_shift()
    # of the hugetlbfs VMA, no memslot check; gfn = (gpa & huge_page_mask) >> PAGE_SHIFT, so
    # the block maps the pfn of the aligned-down gfn's hva. 7.3: hugetlb_mapping_size() ->
    # fault_supports_gstage_huge_mapping() fails (hva 4K into the huge page, gpa 2M aligned).
    vm, vcpu = make(kernel)
    hva = vm.host.mmap(4 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva + 0x1000)
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x10_0000))
    assert (res.outcome, res.mapped.size) == ("mapped", size)
    if size == 2 * MiB:
        # the leaf's first page is what gfn_to_pfn_prot() gave for gfn RAM>>12: hva + 0x1000
        entry = vm.stage2.lookup(RAM >> 12)
        assert entry.pfn_of(RAM >> 12) == vm.host.hva_to_pfn(hva + 0x1000, False)[0]


@pytest.mark.parametrize(("kernel", "size"), [("6.12", 4096), ("6.18", 4096), ("7.3", 2 * MiB)])
def test_thp_blocks_only_from_6_19(kernel, size) -> None:
    # 6.12/6.18: a VMA that is not hugetlbfs gives vma_pagesize = PAGE_SIZE and nothing more.
    # 7.3 kvm_riscv_mmu_map(): !logging && !is_hugetlb && PAGE_SIZE ->
    # transparent_hugepage_adjust() -> PMD_SIZE when get_hva_mapping_size() >= PMD_SIZE.
    vm, vcpu = make(kernel)
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB, thp=True)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x3000))
    assert (res.outcome, res.mapped.size) == ("mapped", size)


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
def test_hwpoison_lsb_is_the_hugetlb_shift_even_when_logging(kernel) -> None:
    # send_sig_mceerr(BUS_MCEERR_AR, hva, vma_pageshift): vma_pageshift is huge_page_shift()
    # of the VMA, set before "if (logging ...) vma_pagesize = PAGE_SIZE" changes only the size.
    # Then KVM_RUN ends with -EINTR / KVM_EXIT_INTR (kvm_handle_signal_exit()).
    vm, vcpu = make(kernel)
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, flags=abi.KVM_MEM_LOG_DIRTY_PAGES)
    vm.host.memory_failure(hva + 0x5000)
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x5000))
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EINTR, abi.KVM_EXIT_INTR, "hwpoison_sigbus")
    assert (res.signal.addr, res.signal.lsb) == (hva + 0x5000, 21)


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
def test_readonly_slot_with_dirty_logging_keeps_blocks(kernel) -> None:
    # logging = dirty_bitmap (6.12) / kvm_slot_dirty_track_enabled() (7.3) && !KVM_MEM_READONLY
    vm, vcpu = make(kernel)
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, flags=abi.KVM_MEM_READONLY | abi.KVM_MEM_LOG_DIRTY_PAGES)
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x5000))
    assert (res.outcome, res.mapped.size, res.mapped.writable) == ("mapped", 2 * MiB, False)


def test_private_input_needs_the_riscv_private_proposal() -> None:
    # Upstream RISC-V has no memory attributes and no guest_memfd (arch/riscv/kvm/Kconfig).
    vm = kvmcore.VM("riscv", proposals=())
    with pytest.raises(kvmcore.DecodeError, match="riscv-private"):
        vm.create_vcpu().handle_fault({**trap(LOAD, RAM), "private": 1})


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        # 6.12 kvm_riscv_gstage_map(): gfn = (gpa & huge_page_mask) >> PAGE_SHIFT = 0x80000, before
        # the slot; gfn_to_pfn_prot() finds no memslot there -> KVM_PFN_NOSLOT -> -EFAULT.
        ("6.12", ("efault", None)),
        # 6.18 kvm_riscv_mmu_map(): __kvm_faultin_pfn(memslot, 0x80000) -> __gfn_to_hva_many()
        # has no bounds check: hva = userspace_addr - 2 MiB = the 1 GiB page's start, mapped
        # as a 1 GiB block.
        ("6.18", ("mapped", 1 << 30)),
        # 7.3: hugetlb_mapping_size(): 1 GiB fails fault_supports_gstage_huge_mapping() (the
        # block is not inside the 2 MiB slot), 2 MiB passes (gpa and hva both 2 MiB mod 1 GiB).
        ("7.3", ("mapped", 2 * MiB)),
    ],
)
def test_1g_hugetlb_page_behind_a_small_slot(kernel, expected) -> None:
    vm, vcpu = make(kernel)
    hva = vm.host.mmap(1 << 30, page_size=1 << 30)
    vm.set_user_memory_region(0, RAM + 2 * MiB, 2 * MiB, hva + 2 * MiB)
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x20_3000))
    assert (res.outcome, res.mapped.size if res.mapped else None) == expected
