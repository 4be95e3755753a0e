"""RISC-V G-stage fault behaviour that no other test pinned (found by mutating ``gstage.py``).

Each test fails under a specific change to ``kvmcore_riscv/gstage.py`` that left the rest of
the suite green; expected values come from the kernel source named in the test
(``/work/kernel-source/{6.12,7.3}/arch/riscv/kvm``) or from the proposal it cites, worked by hand.
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore import abi

MiB = 1 << 20
GiB = 1 << 30
LOAD, STORE, FETCH = 0x15, 0x17, 0x14  # scause 21, 23, 20
LW_A0 = 0x00002503  # transformed htinst of "lw a0": funct3 010, rd 10, opcode 0000011
SW_A1 = 0x00B02023  # transformed htinst of "sw a1": rs2 11, funct3 010, opcode 0100011
RAM = 0x8000_0000  # 2 GiB: 2 MiB and 1 GiB aligned


def trap(scause: int, gpa: int, htinst: int = LW_A0, **extra: int) -> dict[str, int]:
    """Trap CSRs for gpa: htval = gpa >> 2, stval = gpa (vsatp Bare)."""
    return {"scause": scause, "htval": gpa >> 2, "stval": gpa, "htinst": htinst, **extra}


# --- fault_supports_gstage_huge_mapping() (7.3) ---------------------------------------------
# 7.3 arch/riscv/kvm/mmu.c:fault_supports_gstage_huge_mapping(): "if ((gpa_start & (map_size
# - 1)) != (uaddr_start & (map_size - 1))) return false; return (hva >= ALIGN(uaddr_start,
# map_size)) && (hva < ALIGN_DOWN(uaddr_end, map_size));" used by hugetlb_mapping_size() for
# hugetlbfs and transparent_hugepage_adjust() for THP, both with PMD_SIZE = 2 MiB here.
@pytest.mark.parametrize("thp", [False, True])
@pytest.mark.parametrize(
    ("slot_gpa", "slot_size", "hva_offset", "fault_gpa", "size"),
    [
        # 3 MiB slot at RAM, hva 2 MiB aligned: hva of RAM is ALIGN(uaddr_start) itself: block
        (RAM, 3 * MiB, 0, RAM, 2 * MiB),
        # ... hva of RAM + 2 MiB is ALIGN_DOWN(uaddr_end) = uaddr_start + 2 MiB: not below it
        (RAM, 3 * MiB, 0, RAM + 2 * MiB, 4096),
        # 4 MiB congruent slot at RAM + 4K (hva 4K into a huge page): RAM + 20K lies below
        # ALIGN(uaddr_start) = the next 2 MiB boundary: pages; RAM + 2 MiB + 20K is a block
        (RAM + 0x1000, 4 * MiB, 0x1000, RAM + 0x5000, 4096),
        (RAM + 0x1000, 4 * MiB, 0x1000, RAM + 2 * MiB + 0x5000, 2 * MiB),
        # 4 MiB slot at RAM with hva 4K into a huge page: inside the range, but gpa and hva
        # are not congruent: pages
        (RAM, 4 * MiB, 0x1000, RAM + 2 * MiB + 0x5000, 4096),
    ],
)
def test_block_needs_congruence_and_a_whole_block_in_the_slot(thp, slot_gpa, slot_size, hva_offset, fault_gpa, size) -> None:
    vm = kvmcore.VM("riscv", kernel="7.3")
    hva = vm.host.mmap(6 * MiB, page_size=2 * MiB, thp=thp)
    vm.set_user_memory_region(0, slot_gpa, slot_size, hva + hva_offset)
    res = vm.create_vcpu().handle_fault(trap(LOAD, fault_gpa))
    assert (res.outcome, res.mapped.size) == ("mapped", size)


def test_2m_hugetlb_page_in_a_1g_slot_maps_2m() -> None:
    # 7.3 hugetlb_mapping_size(): "switch (map_size) { case PUD_SIZE: ...; case PMD_SIZE: if
    # (fault_supports_gstage_huge_mapping(memslot, hva, PMD_SIZE)) return PMD_SIZE;": a 2 MiB
    # hugetlbfs page never tries the 1 GiB block, even where a 1 GiB-aligned 1 GiB slot would
    # allow one.
    vm = kvmcore.VM("riscv", kernel="7.3")
    hva = vm.host.mmap(2 * GiB, page_size=2 * MiB)
    start = (hva + GiB - 1) & ~(GiB - 1)  # the 1 GiB-aligned GiB inside the mapping
    vm.set_user_memory_region(0, RAM, GiB, start)
    res = vm.create_vcpu().handle_fault(trap(LOAD, RAM + 0x30_5000))
    assert (res.outcome, res.mapped.size) == ("mapped", 2 * MiB)


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_64k_hugetlb_page_is_an_invalid_vma_page_size(kernel) -> None:
    # 6.12 kvm_riscv_gstage_map() / 7.3 kvm_riscv_mmu_map(): "if (vma_pagesize != PUD_SIZE &&
    # vma_pagesize != PMD_SIZE && vma_pagesize != PAGE_SIZE) { kvm_err("Invalid VMA page size
    # 0x%lx\n", vma_pagesize); return -EFAULT; }" -- a 64 KiB (Svnapot) hugetlbfs page; 7.3's
    # hugetlb_mapping_size() returns it unchanged ("default: return map_size;").
    vm = kvmcore.VM("riscv", kernel=kernel)
    hva = vm.host.mmap(1 * MiB, page_size=64 << 10)
    vm.set_user_memory_region(0, RAM, 1 * MiB, hva)
    res = vm.create_vcpu().handle_fault(trap(LOAD, RAM + 0x3000))
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EFAULT, abi.KVM_EXIT_UNKNOWN, "efault")
    assert res.detail == "Invalid VMA page size 0x10000"


def test_dirty_logging_keeps_thp_memory_at_page_size() -> None:
    # 7.3 kvm_riscv_mmu_map(): "if (logging || ...) vma_pagesize = PAGE_SIZE;" and the THP
    # promotion is "if (!logging && !is_hugetlb && vma_pagesize == PAGE_SIZE)"; a read under
    # logging maps read-only ("if (logging && !is_write) writable = false;").
    vm = kvmcore.VM("riscv", kernel="7.3")
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB, thp=True)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, flags=abi.KVM_MEM_LOG_DIRTY_PAGES)
    res = vm.create_vcpu().handle_fault(trap(LOAD, RAM + 0x3000))
    assert (res.outcome, res.mapped.size, res.mapped.writable) == ("mapped", 4096, False)


@pytest.mark.parametrize("thp", [False, True])
def test_userfault_slot_maps_pages(thp) -> None:
    # "riscv-userfault" (kvmcore's extension, after KVM Userfault v3 patch 06 on arm64, which
    # forces PAGE_SIZE on a KVM_MEM_USERFAULT slot like dirty logging): an unmarked page of a
    # slot backed by 2 MiB pages (hugetlbfs or THP) maps 4K, never a block.
    vm = kvmcore.VM("riscv", kernel="7.3")
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB, thp=thp)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bytearray(64))
    res = vm.create_vcpu().handle_fault(trap(LOAD, RAM + 0x3000))
    assert (res.outcome, res.mapped.size) == ("mapped", 4096)


# --- gstage_page_fault(): MMIO ---------------------------------------------------------------
def test_mmio_store_and_load_details_and_data() -> None:
    # 7.3 arch/riscv/kvm/vcpu_exit.c:gstage_page_fault(): no memslot -> a load goes to
    # kvm_riscv_vcpu_mmio_load(), a store to kvm_riscv_vcpu_mmio_store(). A store whose value
    # the raw input does not give (no "data") exits with 4 zero bytes; the detail names the
    # kernel function.
    vcpu = kvmcore.VM("riscv").create_vcpu()
    res = vcpu.handle_fault(trap(STORE, 0x1000_0010, SW_A1))
    mmio = vcpu.kvm_run.mmio
    assert (res.outcome, mmio.len, mmio.is_write, bytes(mmio.data)) == ("mmio", 4, 1, bytes(8))
    assert res.detail == "no memslot: sw x11, 4-byte store at 0x10000010 (kvm_riscv_vcpu_mmio_store)"
    res = vcpu.handle_fault(trap(LOAD, 0x1000_0010))
    assert res.detail == "no memslot: lw x10, 4-byte load at 0x10000010 (kvm_riscv_vcpu_mmio_load)"


def test_emulate_without_sepc_says_so() -> None:
    # htinst bit 0 clear and no instruction: KVM reads the instruction at sepc
    # (kvm_riscv_vcpu_unpriv_read()); with no sepc in the input the detail names the CSR only.
    vcpu = kvmcore.VM("riscv").create_vcpu()
    res = vcpu.handle_fault(trap(LOAD, 0x1000_0000, 0))
    assert res.outcome == "emulate"
    assert "at sepc from guest memory" in res.detail


# --- kvmcore extensions: private memory, userfault ------------------------------------------
def test_private_mismatch_detail_says_which_way() -> None:
    # "riscv-private": x86's kvm_mmu_faultin_pfn() check; the detail names the access and the gfn.
    vm = kvmcore.VM("riscv")
    vm.set_user_memory_region(0, RAM, 2 * MiB)
    vm.set_memory_attributes(RAM + 0x1_0000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x1_0010))
    assert (res.outcome, res.detail) == ("private_mismatch", "shared access to a private gfn 0x80010")
    res = vcpu.handle_fault(trap(STORE, RAM + 0x2_0000, SW_A1, private=1))
    assert (res.outcome, res.detail) == ("private_mismatch", "private access to a shared gfn 0x80020")


def test_private_fetch_maps_executable() -> None:
    # kvm_riscv_mmu_map() maps every G-stage leaf executable (7.3: kvm_riscv_gstage_map_page(...,
    # page_exec = true)); "riscv-private" maps guest_memfd pages the same way: R|W|X, 4K.
    vm = kvmcore.VM("riscv")
    fd = vm.create_guest_memfd(2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(RAM, 2 * MiB, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vm.create_vcpu().handle_fault(trap(FETCH, RAM + 0x7000, 0, private=1))
    assert (res.outcome, res.mapped.pfn, res.mapped.writable, res.mapped.exec, res.mapped.size) == (
        "mapped_private", vm.guest_memfd(fd).pfn_base + 7, True, True, 4096)


@pytest.mark.parametrize("private", [0, 1])
def test_unreadable_userfault_bitmap_detail(private) -> None:
    # KVM Userfault v3 kvm_do_userfault(): an unreadable bitmap is a bare -EFAULT (no exit
    # prepared); a marked bit is KVM_EXIT_MEMORY_FAULT. Shared faults (kvm_riscv_mmu_map()) and
    # private ones (guest_memfd) alike.
    vm = kvmcore.VM("riscv")
    fd = vm.create_guest_memfd(64 * 0x1000)
    flags = abi.KVM_MEM_USERFAULT | (abi.KVM_MEM_GUEST_MEMFD if private else 0)
    slot = vm.set_user_memory_region(0, RAM, 64 * 0x1000, flags=flags, guest_memfd=fd if private else None,
                                     userfault_bitmap=bytearray(b"\xff" * 8))
    if private:
        vm.set_memory_attributes(RAM, 64 * 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x1000, private=private))
    assert (res.exit_reason, res.outcome) == (abi.KVM_EXIT_MEMORY_FAULT, "userfault")
    assert "could not be read" not in (res.detail or "")
    slot.userfault_bitmap.release()
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x1000, private=private))
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EFAULT, abi.KVM_EXIT_UNKNOWN, "userfault")
    assert "could not be read" in res.detail


def test_private_access_to_a_slot_without_guest_memfd_is_a_memory_fault_exit() -> None:
    # "riscv-private" mirrors x86's kvm_mmu_faultin_pfn_gmem(): "if (!kvm_slot_has_gmem(slot))
    # { kvm_mmu_prepare_memory_fault_exit(vcpu, fault); return -EFAULT; }": exit 39, flags
    # PRIVATE (0x8), the page's gpa, PAGE_SIZE.
    vm = kvmcore.VM("riscv")
    vm.set_user_memory_region(0, RAM, 2 * MiB)
    vm.set_memory_attributes(RAM + 0x3000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault(trap(LOAD, RAM + 0x3010, private=1))
    mf = vcpu.kvm_run.memory_fault
    assert (res.ret, res.outcome, res.exit_reason) == (-errno.EFAULT, "private_no_gmem", abi.KVM_EXIT_MEMORY_FAULT)
    assert (mf.flags, mf.gpa, mf.size) == (0x8, RAM + 0x3000, 0x1000)
