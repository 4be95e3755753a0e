"""arm64 stage-2 abort outcomes that differ by kernel version, or that kvmcore got wrong.

Every expected value comes from the kernel source named in the test (6.12 and 7.3 from
``/work/kernel-source``, 6.18 from the merged patch mails cited in
``kvmcore_arm64.kernels``), worked by hand; none is read back from kvmcore.
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore import abi

MiB = 1 << 20
RAM = 0x4000_0000
ALL = ("6.12", "6.18", "7.3")

# 0x93C08007: DABT_LOW IL ISV SAS=3 SF WnR=0 FSC=0x07 (64-bit LDR, translation L3)
READ8 = 0x93C08007
# 0x9200000F: DABT_LOW IL, ISV=0, WnR=0, FSC=0x0F: a *read* permission fault at L3
READ_PERM = 0x9200000F
# 0x92000035: DABT_LOW IL, FSC=0x35 (ESR_ELx_FSC_EXCL_ATOMIC)
EXCL_ATOMIC = 0x92000035


def make(kernel: str, **settings) -> tuple[kvmcore.VM, kvmcore.VCPU]:
    vm = kvmcore.VM("arm64", kernel=kernel, **settings)
    return vm, vm.create_vcpu()


def hpfar(ipa: int) -> int:
    return (ipa >> 12) << 4


# --- read permission fault ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        # 6.12 arch/arm64/kvm/mmu.c:user_mem_abort(): "if (fault_is_perm && !write_fault &&
        # !exec_fault) { kvm_err("Unexpected L2 read permission error\n"); return -EFAULT; }"
        ("6.12", (-errno.EFAULT, abi.KVM_EXIT_UNKNOWN, "read_perm_fault")),
        # 6.18/7.3 kvm_handle_guest_abort(): only VM_WARN_ON_ONCE(perm && !write && !exec);
        # user_mem_abort() then relaxes the 4K leaf (vma_pagesize == fault_granule == 4K).
        ("6.18", (0, None, "permission_relaxed")),
        ("7.3", (0, None, "permission_relaxed")),
    ],
)
def test_read_permission_fault(kernel, expected) -> None:
    vm, vcpu = make(kernel)
    vm.set_user_memory_region(0, RAM, 2 * MiB)
    assert vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM)}).outcome == "mapped"
    res = vcpu.handle_fault({"esr": READ_PERM, "hpfar": hpfar(RAM)})
    assert (res.ret, res.exit_reason, res.outcome) == expected


# --- hardware memory error on shared memory --------------------------------------------------
@pytest.mark.parametrize("kernel", ALL)
def test_hwpoison_ends_kvm_run_with_eintr(kernel) -> None:
    # user_mem_abort() (6.12, 6.18) / kvm_s2_fault_pin_pfn() (7.3): KVM_PFN_ERR_HWPOISON ->
    # kvm_send_hwpoison_signal(hva, vma_shift) and return 0 -> 1; kvm_arch_vcpu_ioctl_run()'s
    # loop calls xfer_to_guest_mode_handle_work(): SIGPENDING -> kvm_handle_signal_exit()
    # (exit_reason KVM_EXIT_INTR) and -EINTR. No KVM_EXIT_MEMORY_FAULT.
    vm, vcpu = make(kernel)
    slot = vm.set_user_memory_region(0, RAM, 2 * MiB)
    vm.host.memory_failure(slot.userspace_addr + 0x2000)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x2000)})
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EINTR, abi.KVM_EXIT_INTR, "hwpoison_sigbus")
    assert (res.signal.code, res.signal.addr, res.signal.lsb) == ("BUS_MCEERR_AR", slot.userspace_addr + 0x2000, 12)


@pytest.mark.parametrize("kernel", ALL)
def test_hwpoison_lsb_thp_is_page_shift_hugetlb_is_block_shift(kernel) -> None:
    # get_vma_page_shift(): huge_page_shift() only for is_vm_hugetlb_page(); a THP VMA gives
    # PAGE_SHIFT, and kvm_send_hwpoison_signal() gets that vma_shift: 12 for THP, 21 for a
    # 2 MiB hugetlbfs page (both versions: 7.3 passes __ffs(vma_pagesize), the same value).
    for thp, lsb in ((True, 12), (False, 21)):
        vm, vcpu = make(kernel)
        hva = vm.host.mmap(2 * MiB, page_size=2 * MiB, thp=thp)
        vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
        vm.host.memory_failure(hva + 0x3000)
        res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x3000)})
        assert (res.outcome, res.signal.lsb) == ("hwpoison_sigbus", lsb)


# --- mapping sizes --------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ALL)
def test_readonly_slot_with_dirty_logging_keeps_blocks(kernel) -> None:
    # memslot_is_logging() = memslot->dirty_bitmap && !(memslot->flags & KVM_MEM_READONLY):
    # a READONLY slot is never "logging", so its hugetlbfs 2 MiB page maps as a block.
    vm, vcpu = make(kernel)
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, flags=abi.KVM_MEM_READONLY | abi.KVM_MEM_LOG_DIRTY_PAGES)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x5000)})
    assert (res.outcome, res.mapped.size, res.mapped.writable) == ("mapped", 2 * MiB, False)


@pytest.mark.parametrize("kernel", ALL)
def test_thp_maps_a_pmd_block(kernel) -> None:
    # A THP VMA: vma_shift = PAGE_SHIFT without force_pte, so transparent_hugepage_adjust():
    # fault_supports_stage2_huge_mapping(PMD_SIZE) and get_user_mapping_size() >= PMD_SIZE.
    vm, vcpu = make(kernel)
    hva = vm.host.mmap(4 * MiB, page_size=2 * MiB, thp=True)
    vm.set_user_memory_region(0, RAM, 4 * MiB, hva)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x20_5000)})
    assert (res.outcome, res.mapped.size) == ("mapped", 2 * MiB)


@pytest.mark.parametrize("thp", [False, True])
def test_block_needs_congruent_gpa_and_hva(thp) -> None:
    # fault_supports_stage2_huge_mapping(): (gpa_start & (map_size - 1)) != (uaddr_start &
    # (map_size - 1)) -> false. A slot whose hva starts 4K into a huge page maps 4K pages.
    vm, vcpu = make("7.3")
    hva = vm.host.mmap(4 * MiB, page_size=2 * MiB, thp=thp)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva + 0x1000)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x10_0000)})
    assert res.mapped.size == 4096


@pytest.mark.parametrize("thp", [False, True])
def test_block_allowed_where_gpa_and_hva_are_equally_misaligned(thp) -> None:
    # fault_supports_stage2_huge_mapping() compares gpa_start (base_gfn << PAGE_SHIFT) and
    # uaddr_start modulo map_size, not each with 0: a slot at RAM + 4K whose hva is also 4K into
    # a huge page is congruent. Its size 4 MiB covers [RAM + 4K, RAM + 4 MiB + 4K), so the
    # block [RAM + 2 MiB, RAM + 4 MiB) lies inside it and maps as one 2 MiB block.
    vm, vcpu = make("7.3")
    hva = vm.host.mmap(6 * MiB, page_size=2 * MiB, thp=thp)
    vm.set_user_memory_region(0, RAM + 0x1000, 4 * MiB, hva + 0x1000)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 2 * MiB + 0x5000)})
    assert (res.outcome, res.mapped.size) == ("mapped", 2 * MiB)


@pytest.mark.parametrize("thp", [False, True])
def test_no_block_over_the_tail_of_a_slot(thp) -> None:
    # fault_supports_stage2_huge_mapping(): uaddr_end = uaddr_start + npages * PAGE_SIZE; the
    # block must end at or before it. A 3 MiB slot: the fault at RAM + 2 MiB + 20K would need
    # the block [RAM + 2 MiB, RAM + 4 MiB), which ends 1 MiB past the slot: 4K pages. The
    # first 2 MiB of the same slot still map as a block.
    vm, vcpu = make("7.3")
    hva = vm.host.mmap(4 * MiB, page_size=2 * MiB, thp=thp)
    vm.set_user_memory_region(0, RAM, 3 * MiB, hva)
    assert vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 2 * MiB + 0x5000)}).mapped.size == 4096
    assert vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x5000)}).mapped.size == 2 * MiB


def test_contiguous_pte_hugetlb_maps_pages_and_skips_thp() -> None:
    # 4K granule: CONT_PTE_SHIFT = 16 (64 KiB hugetlbfs). user_mem_abort()'s switch:
    # "case CONT_PTE_SHIFT: vma_shift = PAGE_SHIFT; force_pte = true;", so no THP promotion.
    vm, vcpu = make("7.3")
    hva = vm.host.mmap(2 * MiB, page_size=64 << 10)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x3000)})
    assert res.mapped.size == 4096


def test_contiguous_pmd_hugetlb_maps_a_pmd_block() -> None:
    # 4K granule: CONT_PMD_SHIFT = 25 (32 MiB hugetlbfs): "case CONT_PMD_SHIFT: vma_shift =
    # PMD_SHIFT;" then the PMD case keeps it if the slot allows a 2 MiB block.
    vm, vcpu = make("7.3")
    hva = vm.host.mmap(32 * MiB, page_size=32 * MiB)
    vm.set_user_memory_region(0, RAM, 32 * MiB, hva)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x3000)})
    assert res.mapped.size == 2 * MiB


def test_dirty_logging_write_to_block_maps_a_page() -> None:
    # logging_active: force_pte, vma_shift = PAGE_SHIFT; a write permission fault on the 2 MiB
    # block (FSC 0x0E, level 2: fault_granule 2 MiB) != vma_pagesize 4K -> stage2_map of 4K.
    vm, vcpu = make("7.3")
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    slot = vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    assert vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM)}).mapped.size == 2 * MiB
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, flags=abi.KVM_MEM_LOG_DIRTY_PAGES)
    vm.stage2.map(RAM >> 12, vm.host.hva_to_pfn(slot.userspace_addr, False)[0], 2 * MiB, False, False)
    res = vcpu.handle_fault({"esr": 0x9381004E, "hpfar": hpfar(RAM + 0x1000)})  # STR, perm L2
    assert (res.outcome, res.mapped.size, res.mapped.writable) == ("mapped", 4096, True)


# --- synchronous external aborts ------------------------------------------------------------
# 0x93C00250: DABT_LOW IL ISV SAS=3 EA WnR FSC=0x10 (SEA, not on a walk)
SEA_STORE = 0x93C00250


@pytest.mark.parametrize("kernel", ["6.12", "6.18"])
def test_sea_is_an_serror_before_6_19(kernel) -> None:
    # 6.12 asm/kvm_ras.h:kvm_handle_guest_sea() is apei_claim_sea() only; unclaimed ->
    # kvm_inject_vabt(). KVM_CAP_ARM_SEA_TO_USER does not exist (merged for 6.19): EINVAL.
    vm, vcpu = make(kernel)
    with pytest.raises(kvmcore.KvmError) as err:
        vm.enable_cap(abi.KVM_CAP_ARM_SEA_TO_USER)
    assert err.value.errno == errno.EINVAL
    res = vcpu.handle_fault({"esr": SEA_STORE, "far": 0xFFFF_0000_1234, "hpfar": hpfar(RAM)})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "sea_injected")


def test_sea_exits_to_userspace_on_7_3() -> None:
    # 7.3 arch/arm64/kvm/mmu.c:kvm_handle_guest_sea(): not claimed, !host_owns_sea(), flag set
    # -> exit_reason KVM_EXIT_ARM_SEA (41), arm_sea.esr = esr & (EC|IL|FnV|EA|CM|WnR|FSC|SET):
    # 0x93C00250 -> 0x92000250 (ISV and SAS dropped); gva = FAR (FnV clear); gpa = IPA with
    # KVM_EXIT_ARM_SEA_FLAG_GPA_VALID; return 0.
    vm, vcpu = make("7.3")
    vm.enable_cap(abi.KVM_CAP_ARM_SEA_TO_USER)
    res = vcpu.handle_fault({"esr": SEA_STORE, "far": 0xFFFF_0000_1234, "hpfar": hpfar(RAM + 0x7000)})
    assert (res.ret, res.exit_reason, res.outcome) == (0, 41, "sea_exit")
    sea = vcpu.kvm_run.arm_sea
    assert (sea.flags, sea.esr, sea.gva, sea.gpa) == (1, 0x92000250, 0xFFFF_0000_1234, RAM + 0x7000)


def test_sea_without_the_cap_or_on_host_tables_is_injected_on_7_3() -> None:
    # Without KVM_ARCH_FLAG_EXIT_SEA -> kvm_inject_serror(). host_owns_sea(): SEA on a walk
    # (FSC 0x15, level 1) with S1PTW (ESR bit 7) -> the host's -> kvm_inject_serror().
    vm, vcpu = make("7.3")
    res = vcpu.handle_fault({"esr": SEA_STORE, "hpfar": hpfar(RAM)})
    assert res.outcome == "sea_injected"
    vm.enable_cap(abi.KVM_CAP_ARM_SEA_TO_USER)
    res = vcpu.handle_fault({"esr": 0x92000095, "hpfar": hpfar(RAM)})
    assert (res.exit_reason, res.outcome) == (None, "sea_injected")


# --- LD64B/ST64B* and exclusive/atomic faults (7.x) -----------------------------------------
# 0x93C00847: DABT_LOW IL ISV SAS=3 WnR, ESR[12:11] = 0b01, FSC=0x07
ST64B = 0x93C00847


@pytest.mark.parametrize(
    ("kernel", "exit_reason", "outcome"),
    [
        # 6.12/6.18 arch/arm64/kvm/mmio.c:io_mem_abort(): ISV=1 -> an ordinary MMIO exit
        ("6.12", abi.KVM_EXIT_MMIO, "mmio"),
        ("6.18", abi.KVM_EXIT_MMIO, "mmio"),
        # 7.3 io_mem_abort(): DFSC 0b000100..0b001111 and ESR[12:11] != 0 -> KVM_EXIT_ARM_LDST64B
        ("7.3", 42, "ldst64b"),
    ],
)
def test_ld64b_st64b_outside_memslots(kernel, exit_reason, outcome) -> None:
    vm, vcpu = make(kernel)
    res = vcpu.handle_fault({"esr": ST64B, "far": 0x900_0010, "hpfar": hpfar(0x900_0000)})
    assert (res.ret, res.exit_reason, res.outcome) == (0, exit_reason, outcome)
    if outcome == "ldst64b":  # arm_nisv.esr_iss = esr & ~ESR_ELx_FSC; fault_ipa with FAR[11:0]
        assert (vcpu.kvm_run.arm_nisv.esr_iss, vcpu.kvm_run.arm_nisv.fault_ipa) == (0x93C00840, 0x900_0010)


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        # 6.12/6.18 kvm_handle_guest_abort(): FSC 0x35 is none of translation/permission/AF
        ("6.12", (-errno.EFAULT, abi.KVM_EXIT_UNKNOWN, "unsupported_fsc")),
        ("6.18", (-errno.EFAULT, abi.KVM_EXIT_UNKNOWN, "unsupported_fsc")),
        # 7.3: esr_fsc_is_excl_atomic_fault() passes; kvm_s2_fault_compute_prot() ->
        # kvm_inject_dabt_excl_atomic(), return 1
        ("7.3", (0, None, "excl_atomic_injected")),
    ],
)
def test_exclusive_atomic_fault_on_ram(kernel, expected) -> None:
    vm, vcpu = make(kernel)
    vm.set_user_memory_region(0, RAM, 2 * MiB)
    res = vcpu.handle_fault({"esr": EXCL_ATOMIC, "hpfar": hpfar(RAM)})
    assert (res.ret, res.exit_reason, res.outcome) == expected


# --- proposals ------------------------------------------------------------------------------
def test_private_input_needs_the_arm64_private_proposal() -> None:
    # Upstream arm64 never sets is_private (no KVM_GENERIC_MEMORY_ATTRIBUTES in its Kconfig).
    vm = kvmcore.VM("arm64", proposals=())
    with pytest.raises(kvmcore.DecodeError, match="arm64-private"):
        vm.create_vcpu().handle_fault({"esr": READ8, "hpfar": hpfar(RAM), "private": 1})


# --- guest_memfd slots (gmem_abort(), 6.18+) ------------------------------------------------
# 0x8200000F: IABT_LOW IL IFSC=0x0F (permission fault L3: XN at stage 2)
FETCH_PERM = 0x8200000F
EHWPOISON = 133  # asm-generic errno.h


@pytest.mark.parametrize("kernel", ["6.18", "7.3"])
def test_gmem_abort_hwpoison_is_a_memory_fault(kernel) -> None:
    # gmem_abort(): kvm_gmem_get_pfn() fails -> kvm_prepare_memory_fault_exit(vcpu, fault_ipa,
    # PAGE_SIZE, write, exec, false) and return the errno: -EHWPOISON, flags 0 (not private),
    # no SIGBUS (the signal path is user_mem_abort()'s only).
    vm, vcpu = make(kernel)
    fd = vm.create_guest_memfd(1 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.guest_memfd(fd).memory_failure(0x6000)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(0x8000_6000)})
    assert (res.ret, res.exit_reason, res.outcome, res.signal) == (-EHWPOISON, abi.KVM_EXIT_MEMORY_FAULT, "gmem_error", None)
    mf = vcpu.kvm_run.memory_fault
    assert (mf.flags, mf.gpa, mf.size) == (0, 0x8000_6000, 0x1000)


@pytest.mark.parametrize("kernel", ["6.18", "7.3"])
def test_gmem_abort_fetch_after_read_adds_exec(kernel) -> None:
    # A read maps R|W (not READONLY) without X. The fetch's permission fault: 6.18's
    # gmem_abort() maps PAGE_SIZE anew with R|W|X; 7.3's kvm_pgtable_stage2_relax_perms() adds
    # X to R|W. Both leave a 4K leaf R|W|X.
    vm, vcpu = make(kernel)
    fd = vm.create_guest_memfd(1 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    first = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(0x8000_2000)})
    assert (first.outcome, first.mapped.writable, first.mapped.exec) == ("mapped_gmem", True, False)
    res = vcpu.handle_fault({"esr": FETCH_PERM, "hpfar": hpfar(0x8000_2000)})
    assert (res.outcome, res.mapped.size, res.mapped.writable, res.mapped.exec) == ("mapped_gmem", 4096, True, True)


@pytest.mark.parametrize(
    ("granule", "hugetlb", "size"),
    [
        # 16K pages: CONT_PTE_SHIFT = 7 + 14 = 21, so a 2 MiB hugetlbfs page is CONT_PTE ->
        # PAGE_SHIFT with force_pte (no THP promotion); PMD_SHIFT = 25: a 32 MiB block.
        ("16K", 2 * MiB, 16 << 10),
        ("16K", 32 * MiB, 32 * MiB),
        # 64K pages: CONT_PTE_SHIFT = 5 + 16 = 21 (2 MiB, again pages); PMD_SHIFT = 29 (512 MiB)
        ("64K", 2 * MiB, 64 << 10),
        ("64K", 512 * MiB, 512 * MiB),
    ],
)
def test_hugetlb_sizes_per_granule(granule, hugetlb, size) -> None:
    # asm/pgtable-hwdef.h: CONT_PTE_SHIFT = CONFIG_ARM64_CONT_PTE_SHIFT + PAGE_SHIFT (Kconfig:
    # 7 for 16K, 5 for 64K, 4 for 4K pages); user_mem_abort()'s vma_shift switch.
    vm, vcpu = make("7.3", granule=granule)
    hva = vm.host.mmap(max(hugetlb, 2 * MiB), page_size=hugetlb)
    vm.set_user_memory_region(0, 1 << 30, max(hugetlb, 2 * MiB), hva)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar((1 << 30) + 0x10000)})
    assert (res.outcome, res.mapped.size) == ("mapped", size)


def test_syndrome_words_only_with_the_syndrome_proposal() -> None:
    # The syndrome after memory_fault is kvmcore's proposal; upstream 7.3 gmem_abort() fills
    # only exit_reason and memory_fault (kvm_prepare_memory_fault_exit()), the rest stays 0.
    for proposals, flags in ((None, abi.KVMCORE_SYNDROME_VALID), ((), 0)):
        vm = kvmcore.VM("arm64", proposals=proposals)
        fd = vm.create_guest_memfd(1 * MiB, abi.GUEST_MEMFD_FLAG_MMAP)  # arm64 gmem slots must be mappable (mmu.c)
        vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
        vm.guest_memfd(fd).memory_failure(0)
        vcpu = vm.create_vcpu()
        res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(0x8000_0000)})
        assert (res.outcome, vcpu.kvm_run.syndrome.flags, vcpu.kvm_run.syndrome.syndrome[0] != 0) == (
            "gmem_error", flags, flags != 0)
