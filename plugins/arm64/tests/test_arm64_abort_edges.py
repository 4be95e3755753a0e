"""arm64 abort-path behaviour that no other test pinned (found by mutating ``abort.py``).

Each test fails under a specific change to ``kvmcore_arm64/abort.py`` that left the rest of
the suite green; its expected values come from the kernel source named in it
(``/work/kernel-source/{6.12,7.3}/arch/arm64``), worked by hand, never read back from kvmcore.

ESR values used below (ESR_EL2 = EC[31:26] | IL[25] | ISS[24:0]): EC 0x24 (DABT_LOW) << 26 =
0x90000000, EC 0x20 (IABT_LOW) << 26 = 0x80000000, IL = 0x02000000, ISV = 0x01000000,
SAS=3 = 0x00C00000, SF = 0x8000, WnR = 0x40, FSC in [5:0].
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore import abi

MiB = 1 << 20
GiB = 1 << 30
RAM = 0x4000_0000
# 0x82000035: IABT_LOW IL, IFSC = 0x35
FETCH_EXCL_ATOMIC = 0x82000035


def hpfar(ipa: int) -> int:
    return (ipa >> 12) << 4  # HPFAR_EL2.FIPA [47:4] = IPA[55:12]


# --- kvm_handle_guest_abort(): the FSC filter -----------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "on_ram", "outside"),
    [
        # 6.12 arch/arm64/kvm/mmu.c:kvm_handle_guest_abort(): FSC 0x35 is no translation,
        # permission or access-flag fault: kvm_err("Unsupported FSC: ..."), -EFAULT
        ("6.12", (-errno.EFAULT, "unsupported_fsc"), (-errno.EFAULT, "unsupported_fsc")),
        # 7.3 kvm_handle_guest_abort(): esr_fsc_is_excl_atomic_fault() (asm/esr.h) is
        # "esr & ESR_ELx_FSC == ESR_ELx_FSC_EXCL_ATOMIC", whatever the EC, so an instruction
        # abort with IFSC 0x35 passes the filter too. On RAM: user_mem_abort() ->
        # kvm_s2_fault_compute_prot() -> kvm_inject_dabt_excl_atomic(), return 1. Outside
        # memslots: is_iabt -> -ENOEXEC -> kvm_inject_sea_iabt(), return 1.
        ("7.3", (0, "excl_atomic_injected"), (0, "iabt_injected")),
    ],
)
def test_fetch_with_ifsc_0x35_follows_the_fsc_check(kernel, on_ram, outside) -> None:
    vm = kvmcore.VM("arm64", kernel=kernel)
    vm.set_user_memory_region(0, RAM, 2 * MiB)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": FETCH_EXCL_ATOMIC, "hpfar": hpfar(RAM + 0x1000)})
    assert (res.ret, res.outcome) == on_ram
    res = vcpu.handle_fault({"esr": FETCH_EXCL_ATOMIC, "hpfar": hpfar(0x900_0000)})
    assert (res.ret, res.outcome) == outside


# --- kvm_handle_guest_sea() (7.3) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("esr", "outcome"),
    [
        # 7.3 arch/arm64/kvm/mmu.c:host_owns_sea() (FEAT_RAS, not in a hyp context):
        # esr_fsc_is_sea_ttw(esr) && (esr & ESR_ELx_S1PTW); esr_fsc_is_sea_ttw() (asm/esr.h) is
        # FSC == ESR_ELx_FSC_SEA_TTW(n) = 0x14 + n for n = -1..3, i.e. 0x13..0x17.
        # DABT_LOW IL (0x92000000) | S1PTW (0x80) | FSC:
        (0x92000093, "sea_injected"),  # SEA_TTW(-1) on a stage-1 walk: the host's
        (0x92000097, "sea_injected"),  # SEA_TTW(3): the host's
        (0x92000090, "sea_exit"),  # FSC 0x10 (SEA, not on a walk) with S1PTW: the guest's
        (0x92000098, "sea_exit"),  # FSC 0x18 (parity/ECC, not on a walk): the guest's
        (0x9200009C, "sea_exit"),  # FSC 0x1C (ECC on a walk, L0) is no SEA_TTW: the guest's
        (0x92000014, "sea_exit"),  # SEA_TTW(0) without S1PTW: cannot be told from stage 1
    ],
)
def test_host_owns_only_sea_ttw_on_a_stage1_walk(esr, outcome) -> None:
    vm = kvmcore.VM("arm64", kernel="7.3")
    vm.enable_cap(abi.KVM_CAP_ARM_SEA_TO_USER)
    res = vm.create_vcpu().handle_fault({"esr": esr, "hpfar": hpfar(RAM)})
    assert (res.ret, res.outcome) == (0, outcome)


def test_sea_exit_keeps_only_the_masked_esr_bits() -> None:
    # 7.3 kvm_handle_guest_sea(): esr_mask = ESR_ELx_EC_MASK (0x3F << 26) | ESR_ELx_IL (1 << 25)
    # | ESR_ELx_FnV (1 << 10) | ESR_ELx_EA (1 << 9) | ESR_ELx_CM (1 << 8) | ESR_ELx_WNR (1 << 6)
    # | ESR_ELx_FSC (0x3F), plus ESR_ELx_SET_MASK (3 << 11) as kvm_has_ras(). An ESR with every
    # ISS bit that a data abort can carry, and ISS2 bit 32:
    #   (1 << 32) | DABT_LOW IL 0x92000000 | ISV 0x01000000 | SAS=3 0x00C00000 | SSE 0x00200000
    #   | SRT=31 0x001F0000 | SF 0x8000 | AR 0x4000 | bit 13 0x2000 | SET=3 0x1800 | EA 0x200
    #   | CM 0x100 | S1PTW 0x80 | WnR 0x40 | FSC 0x10 = 0x1_93FFFBD0
    # masked: 0x92000000 | 0x1800 | 0x200 | 0x100 | 0x40 | 0x10 = 0x92001B50
    vm = kvmcore.VM("arm64", kernel="7.3")
    vm.enable_cap(abi.KVM_CAP_ARM_SEA_TO_USER)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": 0x1_93FF_FBD0, "far": 0xFFFF_0000_4321, "hpfar": hpfar(RAM)})
    sea = vcpu.kvm_run.arm_sea
    # the IPA is known (FSC 0x10 without FnV: __fault_safe_to_translate()): flags
    # KVM_EXIT_ARM_SEA_FLAG_GPA_VALID (1), gpa = HPFAR's IPA
    assert (res.exit_reason, sea.esr, sea.gva, sea.flags, sea.gpa) == (
        abi.KVM_EXIT_ARM_SEA, 0x9200_1B50, 0xFFFF_0000_4321, 1, RAM)
    # 0x92000650 = EA FnV WnR FSC 0x10: FnV is kept in esr, and "if (!(esr & ESR_ELx_FnV))
    # run->arm_sea.gva = kvm_vcpu_get_hfar(vcpu)" leaves gva 0 (the memset). hyp/fault.h:
    # __fault_safe_to_translate() is false for EXTABT with FnV, so __get_fault_info() leaves
    # hpfar_el2 0 (no HPFAR_EL2_NS): kvm_vcpu_get_fault_ipa() is INVALID_GPA -> flags 0, gpa 0,
    # whatever the previous exit left there
    res = vcpu.handle_fault({"esr": 0x9200_0650, "far": 0xFFFF_0000_4321, "hpfar": hpfar(RAM)})
    assert (res.outcome, sea.esr, sea.gva, sea.flags, sea.gpa) == ("sea_exit", 0x9200_0650, 0, 0, 0)
    # FAR not given (the model's "unknown"): gva 0 as for FnV
    vcpu.handle_fault({"esr": 0x9200_0250, "far": 0x1000, "hpfar": hpfar(RAM)})
    assert sea.gva == 0x1000
    res = vcpu.handle_fault({"esr": 0x9200_0250, "hpfar": hpfar(RAM)})
    assert (res.outcome, sea.gva, sea.flags, sea.gpa) == ("sea_exit", 0, 1, RAM)


# --- kvm_handle_guest_abort(): the IPA range check -----------------------------------------
@pytest.mark.parametrize(("esr", "which"), [(0x82000007, "instruction"), (0x93C08007, "data")])
def test_ipa_beyond_the_vm_injects_the_abort_of_the_access(esr, which) -> None:
    # 7.3 kvm_handle_guest_abort(): a translation fault at or above BIT(VTCR_EL2_IPA) but
    # inside the PARange -> fault_ipa |= FAR[11:0]; kvm_inject_sea(vcpu, is_iabt, fault_ipa):
    # an instruction abort for IABT_LOW (0x82000007: IFSC translation L3), a data abort for
    # DABT_LOW (0x93C08007: LDR x0, translation L3). ipa 1 << 40 (ipa_bits 40): hpfar 1 << 32;
    # FAR 0x234 -> injected at 0x10000000234.
    vcpu = kvmcore.VM("arm64", kernel="7.3").create_vcpu()
    res = vcpu.handle_fault({"esr": esr, "far": 0x234, "hpfar": 1 << 32})
    assert (res.ret, res.outcome) == (0, "ipa_range_sea_injected")
    assert f"external {which} abort injected at 0x10000000234" in res.detail


# --- io_mem_abort(): LD64B/ST64B* (7.3) ------------------------------------------------------
@pytest.mark.parametrize(
    ("fsc", "exit_reason", "outcome"),
    [
        # 7.3 arch/arm64/kvm/mmio.c:io_mem_abort(), ISV=1: "switch (kvm_vcpu_trap_get_fault(vcpu))
        # { case 0b000100 ... 0b001111: case 0b101010 ... 0b101011: if (FIELD_GET(GENMASK(12,
        # 11), esr)) -> KVM_EXIT_ARM_LDST64B". The ends of both ranges that reach io_mem_abort():
        (0x04, abi.KVM_EXIT_ARM_LDST64B, "ldst64b"),  # translation L0
        (0x0F, abi.KVM_EXIT_ARM_LDST64B, "ldst64b"),  # permission L3
        (0x2B, abi.KVM_EXIT_ARM_LDST64B, "ldst64b"),  # translation L-1
        # FSC 0x35 passes kvm_handle_guest_abort()'s check on 7.3 but is in neither range:
        # an ordinary MMIO exit despite ESR[12:11]
        (0x35, abi.KVM_EXIT_MMIO, "mmio"),
    ],
)
def test_ldst64b_fsc_ranges(fsc, exit_reason, outcome) -> None:
    # 0x93C00840 | FSC: DABT_LOW IL ISV SAS=3 WnR, ESR[12:11] = 0b01, no memslot at 0x9000000
    vcpu = kvmcore.VM("arm64", kernel="7.3").create_vcpu()
    res = vcpu.handle_fault({"esr": 0x93C0_0840 | fsc, "far": 0x900_0010, "hpfar": hpfar(0x900_0000)})
    assert (res.ret, res.exit_reason, res.outcome) == (0, exit_reason, outcome)
    if outcome == "ldst64b":  # esr_iss = esr & ~ESR_ELx_FSC
        assert vcpu.kvm_run.arm_nisv.esr_iss == 0x93C0_0840


# --- gmem_abort() ---------------------------------------------------------------------------
@pytest.mark.parametrize(("kernel", "exec_kept"), [("6.18", False), ("7.3", True)])
def test_gmem_write_permission_fault_after_a_fetch(kernel, exec_kept) -> None:
    # A fetch maps the guest_memfd page R|W|X (not READONLY; exec_fault). A write permission
    # fault on it (0x9381004F: STR w1, permission L3) builds prot = R|W (no exec_fault):
    # 6.18's gmem_abort() kvm_pgtable_stage2_map()s the page anew with that prot, dropping X
    # (kvmcore_arm64.kernels.gmem_perm_fault_relaxes cites the v14 patch); 7.3
    # arch/arm64/kvm/mmu.c:gmem_abort(): "if (perm_fault) kvm_pgtable_stage2_relax_perms()"
    # only adds permissions, so X stays.
    vm = kvmcore.VM("arm64", kernel=kernel)
    fd = vm.create_guest_memfd(1 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": 0x82000007, "hpfar": hpfar(0x8000_2000)})
    assert (res.outcome, res.mapped.writable, res.mapped.exec) == ("mapped_gmem", True, True)
    res = vcpu.handle_fault({"esr": 0x9381004F, "hpfar": hpfar(0x8000_2000)})
    assert (res.outcome, res.mapped.writable, res.mapped.exec) == ("mapped_gmem", True, exec_kept)
    entry = vm.stage2.lookup(0x80002)
    assert (entry.writable, entry.exec) == (True, exec_kept)


def test_gmem_error_is_never_private_in_upstream_exit_design() -> None:
    # 7.3 gmem_abort(): kvm_gmem_get_pfn() fails -> kvm_prepare_memory_fault_exit(vcpu,
    # fault_ipa, PAGE_SIZE, write_fault, exec_fault, false): is_private is false at the call
    # site, so even a private access (kvmcore's "arm64-private" proposal, with no exit-design
    # proposal: the upstream helper) gets flags 0. Poisoned page 6 of a private range:
    # -EHWPOISON, gpa 0x80006000 (HPFAR's IPA), size 4096.
    vm = kvmcore.VM("arm64", proposals=("arm64-private",))
    fd = vm.create_guest_memfd(1 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(0x8000_0000, 1 * MiB, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vm.guest_memfd(fd).memory_failure(0x6000)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": 0x93810047, "far": 0x6008, "hpfar": hpfar(0x8000_6000), "private": 1})
    mf = vcpu.kvm_run.memory_fault
    assert (res.ret, res.outcome, mf.flags, mf.gpa, mf.size) == (-133, "gmem_error", 0, 0x8000_6000, 4096)


# --- user_mem_abort(): which block the memslot allows ---------------------------------------
# 0x93C08007: LDR x0, translation L3 (a read); 0x9381004E: STR w1, permission fault L2 (a write
# on a 2 MiB block: kvm_vcpu_trap_get_perm_fault_granule() = BIT(ARM64_HW_PGTABLE_LEVEL_SHIFT(2))
# = 2 MiB with 4K pages)
READ8 = 0x93C08007
WRITE_PERM_L2 = 0x9381004E


@pytest.mark.parametrize("thp", [False, True])
def test_no_block_where_gpa_and_hva_disagree_even_inside_the_slot(thp) -> None:
    # fault_supports_stage2_huge_mapping(): "if ((gpa_start & (map_size - 1)) != (uaddr_start &
    # (map_size - 1))) return false;" comes before, and apart from, the range check. A 4 MiB
    # slot at RAM (2 MiB aligned) whose hva starts 4K into a huge page: the fault at
    # RAM + 2 MiB + 20K has hva & ~(2 MiB - 1) = the huge page at +2 MiB, which lies inside
    # [uaddr_start, uaddr_end) (the range check alone would allow it), but gpa and hva are not
    # congruent: 4K.
    vm = kvmcore.VM("arm64", kernel="7.3")
    hva = vm.host.mmap(6 * MiB, page_size=2 * MiB, thp=thp)
    vm.set_user_memory_region(0, RAM, 4 * MiB, hva + 0x1000)
    res = vm.create_vcpu().handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 2 * MiB + 0x5000)})
    assert (res.outcome, res.mapped.size) == ("mapped", 4096)


@pytest.mark.parametrize("thp", [False, True])
def test_no_block_over_the_head_of_a_slot(thp) -> None:
    # fault_supports_stage2_huge_mapping(): "return (hva & ~(map_size - 1)) >= uaddr_start &&
    # (hva & ~(map_size - 1)) + map_size <= uaddr_end;". A congruent slot at RAM + 4K (hva 4K
    # into a huge page), 4 MiB: the fault at RAM + 20K would need the block starting at RAM,
    # 4K before the slot: 4K pages (the block at RAM + 2 MiB is whole and maps, as
    # test_arm64_kernels.py's test_block_allowed_where_gpa_and_hva_are_equally_misaligned shows).
    vm = kvmcore.VM("arm64", kernel="7.3")
    hva = vm.host.mmap(6 * MiB, page_size=2 * MiB, thp=thp)
    vm.set_user_memory_region(0, RAM + 0x1000, 4 * MiB, hva + 0x1000)
    res = vm.create_vcpu().handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x5000)})
    assert (res.outcome, res.mapped.size) == ("mapped", 4096)


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_pud_hugetlb_falls_back_to_a_pmd_block(kernel) -> None:
    # user_mem_abort() (6.12) / kvm_s2_resolve_vma_size() (7.3): "case PUD_SHIFT: if
    # (fault_supports_stage2_huge_mapping(memslot, hva, PUD_SIZE)) break; fallthrough; case
    # CONT_PMD_SHIFT: vma_shift = PMD_SHIFT; fallthrough; case PMD_SHIFT: ...". A 1 GiB
    # hugetlbfs page behind a 4 MiB slot: the 1 GiB block is not inside the slot, the 2 MiB
    # one is: a PMD block.
    vm = kvmcore.VM("arm64", kernel=kernel)
    hva = vm.host.mmap(1 << 30, page_size=1 << 30)
    vm.set_user_memory_region(0, RAM, 4 * MiB, hva)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x30_5000)})
    assert (res.outcome, res.mapped.size) == ("mapped", 2 * MiB)
    # the fallthrough sets vma_shift = PMD_SHIFT, which is also the SIGBUS lsb of a poisoned
    # page there (6.12 kvm_send_hwpoison_signal(hva, vma_shift); 7.3 __ffs(vma_pagesize)): 21
    vm.host.memory_failure(hva + 0x10_0000)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x10_0000)})
    assert res.signal == kvmcore.Signal("SIGBUS", "BUS_MCEERR_AR", hva + 0x10_0000, 21)


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_hwpoison_lsb_of_a_cont_pmd_hugetlb_page_is_the_pmd_shift(kernel) -> None:
    # CONT_PMD_SHIFT (25, 32 MiB hugetlbfs with 4K pages) becomes vma_shift = PMD_SHIFT (21);
    # the SIGBUS lsb is that shift: 6.12 kvm_send_hwpoison_signal(hva, vma_shift), 7.3
    # kvm_send_hwpoison_signal(s2fd->hva, __ffs(s2vi->vma_pagesize)) = 21.
    vm = kvmcore.VM("arm64", kernel=kernel)
    hva = vm.host.mmap(32 * MiB, page_size=32 * MiB)
    vm.set_user_memory_region(0, RAM, 32 * MiB, hva)
    vm.host.memory_failure(hva + 0x3000)
    res = vm.create_vcpu().handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x3000)})
    assert (res.outcome, res.signal) == ("hwpoison_sigbus", kvmcore.Signal("SIGBUS", "BUS_MCEERR_AR", hva + 0x3000, 21))


@pytest.mark.parametrize(("host_page", "slot_hva_offset"), [(64 << 10, 0), (2 * MiB, 0x1000)])
def test_permission_fault_on_a_block_maps_a_page_where_the_vma_forces_pages(host_page, slot_hva_offset) -> None:
    # 7.3 kvm_s2_resolve_vma_size(): CONT_PTE_SHIFT (64 KiB hugetlbfs), or a PMD hugetlbfs page
    # the memslot cannot map as a block (hva 4K into it), end in "vma_shift = PAGE_SHIFT;
    # s2vi->max_map_size = PAGE_SIZE" (6.12: force_pte = true). kvm_s2_fault_map(): "if
    # (mapping_size == PAGE_SIZE && s2vi->max_map_size != PAGE_SIZE) { if (perm_fault_granule
    # > PAGE_SIZE) mapping_size = perm_fault_granule; ..." is skipped, so a write permission
    # fault reported on a 2 MiB block (a stale block, installed by hand here) maps one 4K page
    # writable rather than relaxing the 2 MiB block (mapping_size != perm_fault_granule).
    vm = kvmcore.VM("arm64", kernel="7.3")
    hva = vm.host.mmap(4 * MiB, page_size=host_page)
    slot = vm.set_user_memory_region(0, RAM, 2 * MiB, hva + slot_hva_offset)
    vm.stage2.map(RAM >> 12, vm.host.hva_to_pfn(slot.userspace_addr, False)[0], 2 * MiB, False, False)
    res = vm.create_vcpu().handle_fault({"esr": WRITE_PERM_L2, "hpfar": hpfar(RAM + 0x1000)})
    assert (res.outcome, res.mapped.size, res.mapped.writable) == ("mapped", 4096, True)


@pytest.mark.parametrize("esr", [0x9381004F, 0x8200000F])
def test_write_or_exec_permission_faults_are_no_read_permission_error_on_6_12(esr) -> None:
    # 6.12 user_mem_abort(): "if (fault_is_perm && !write_fault && !exec_fault) { kvm_err(
    # "Unexpected L2 read permission error\n"); return -EFAULT; }" -- a write (0x9381004F: STR
    # w1, permission L3) or a fetch (0x8200000F: IABT, permission L3) permission fault on a
    # mapped 4K page relaxes it instead (vma_pagesize == fault_granule == 4K).
    vm = kvmcore.VM("arm64", kernel="6.12", proposals=())
    vm.set_user_memory_region(0, RAM, 2 * MiB)
    vcpu = vm.create_vcpu()
    assert vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x1000)}).outcome == "mapped"
    res = vcpu.handle_fault({"esr": esr, "hpfar": hpfar(RAM + 0x1000)})
    assert (res.ret, res.outcome) == (0, "permission_relaxed")


def test_userfault_unreadable_bitmap_detail() -> None:
    # KVM Userfault v3: kvm_do_userfault() returns true without preparing an exit when the
    # bitmap cannot be read; user_mem_abort() returns -EFAULT with kvm_run untouched. kvmcore
    # says why in the detail; a readable marked bit gives a memory fault exit and no such note.
    vm = kvmcore.VM("arm64")
    bitmap = bytearray(b"\xff" * 8)
    vm.set_user_memory_region(0, RAM, 64 * 0x1000, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x1000)})
    assert (res.exit_reason, res.outcome) == (abi.KVM_EXIT_MEMORY_FAULT, "userfault")
    assert "could not be read" not in (res.detail or "")
    vm.memslots.by_id[0].userfault_bitmap.release()
    res = vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM + 0x1000)})
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EFAULT, abi.KVM_EXIT_UNKNOWN, "userfault")
    assert "could not be read" in res.detail


def test_annotate_efault_reports_the_block_size_of_a_hugetlb_vma() -> None:
    # The annotate-efault design (Anish Moorthy, "[PATCH v2 3/3] KVM: arm64: Perform memory
    # fault exits when stage-2 handler EFAULTs"): when __kvm_faultin_pfn() fails,
    # kvm_prepare_memory_fault_exit(vcpu, fault_ipa, vma_pagesize, ...). A store to a
    # read-only 2 MiB hugetlbfs mapping: size 0x200000 (not PAGE_SIZE, which is what the
    # common fallback for a bare -EFAULT would write), gpa = fault_ipa = 0x40001000, flags 0.
    vm = kvmcore.VM("arm64", proposals=("v3-helper", "annotate-efault"))
    hva = vm.host.mmap(2 * MiB, kvmcore.PROT_READ, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": 0x93810047, "hpfar": hpfar(RAM + 0x1000)})
    mf = vcpu.kvm_run.memory_fault
    assert (res.ret, res.outcome, res.exit_reason) == (-errno.EFAULT, "efault", abi.KVM_EXIT_MEMORY_FAULT)
    assert (mf.flags, mf.gpa, mf.size) == (0, RAM + 0x1000, 2 * MiB)
    assert "annotate-efault" in res.detail


def test_annotate_efault_gpa_is_the_hpfar_ipa_with_16k_pages() -> None:
    # The same patch passes fault_ipa (HPFAR_EL2.FIPA << 12, 4K-aligned) as the gpa, not
    # gfn << PAGE_SHIFT: with 16K pages, ipa 0x40005000 is gfn 0x10001 (0x40004000). No VMA
    # behind the hva ("Failed to find VMA"): size 0.
    vm = kvmcore.VM("arm64", granule="16K", proposals=("v3-helper", "annotate-efault"))
    slot = vm.set_user_memory_region(0, RAM, 1 * MiB)
    vm.host.munmap(slot.userspace_addr, 1 * MiB)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": 0x93810047, "hpfar": hpfar(RAM + 0x5000)})
    mf = vcpu.kvm_run.memory_fault
    assert (res.ret, res.outcome, mf.gpa, mf.size) == (-errno.EFAULT, "no_vma", RAM + 0x5000, 0)


# --- user_mem_abort(): permission faults on THP memory --------------------------------------
def test_write_permission_fault_on_a_thp_page_maps_the_pmd_block() -> None:
    # 7.3 kvm_s2_fault_map(): a THP VMA gives vma_pagesize PAGE_SIZE with max_map_size PUD_SIZE;
    # "if (mapping_size == PAGE_SIZE && s2vi->max_map_size != PAGE_SIZE) { if
    # (perm_fault_granule > PAGE_SIZE) ... else mapping_size = transparent_hugepage_adjust()".
    # A write permission fault on a read-only 4K leaf (0x9381004F: permission L3, granule 4K,
    # which is not > PAGE_SIZE) therefore takes the THP path: 2 MiB, and since 2 MiB !=
    # perm_fault_granule it is kvm_pgtable_stage2_map()ped as a writable block, not relaxed.
    vm = kvmcore.VM("arm64", kernel="7.3")
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB, thp=True)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    vm.stage2.map((RAM >> 12) + 1, vm.host.hva_to_pfn(hva + 0x1000, False)[0], 4096, False, False)
    res = vm.create_vcpu().handle_fault({"esr": 0x9381004F, "hpfar": hpfar(RAM + 0x1000)})
    assert (res.outcome, res.mapped.size, res.mapped.writable) == ("mapped", 2 * MiB, True)


def test_fetch_permission_fault_on_a_thp_block_relaxes_the_block() -> None:
    # A read maps the THP as a 2 MiB block (transparent_hugepage_adjust()). A fetch then takes
    # a permission fault at level 2 (0x8200000E): perm_fault_granule 2 MiB > PAGE_SIZE, so
    # mapping_size = 2 MiB = perm_fault_granule -> kvm_pgtable_stage2_relax_perms() adds X.
    vm = kvmcore.VM("arm64", kernel="7.3")
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB, thp=True)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    vcpu = vm.create_vcpu()
    assert vcpu.handle_fault({"esr": READ8, "hpfar": hpfar(RAM)}).mapped.size == 2 * MiB
    res = vcpu.handle_fault({"esr": 0x8200000E, "hpfar": hpfar(RAM + 0x1230)})
    assert (res.outcome, res.mapped.size, res.mapped.exec) == ("permission_relaxed", 2 * MiB, True)


@pytest.mark.parametrize(("granule", "hugetlb", "lsb"), [("16K", GiB, 25), ("64K", 16 * GiB, 29)])
def test_hwpoison_lsb_of_cont_pmd_hugetlb_per_granule(granule, hugetlb, lsb) -> None:
    # asm/pgtable-hwdef.h: CONT_PMD_SHIFT = CONT_PMD_SHIFT_per_granule + PMD_SHIFT: 16K pages:
    # 5 + 25 = 30 (1 GiB hugetlbfs), 64K pages: 5 + 29 = 34 (16 GiB). The switch turns it into
    # vma_shift = PMD_SHIFT, the SIGBUS lsb of a poisoned page: 25 and 29.
    vm = kvmcore.VM("arm64", kernel="7.3", granule=granule)
    hva = vm.host.mmap(hugetlb, page_size=hugetlb)
    vm.set_user_memory_region(0, 1 << 36, hugetlb, hva)
    vm.host.memory_failure(hva + 0x10000)
    res = vm.create_vcpu().handle_fault({"esr": READ8, "hpfar": hpfar((1 << 36) + 0x10000)})
    assert res.signal == kvmcore.Signal("SIGBUS", "BUS_MCEERR_AR", hva + 0x10000, lsb)


@pytest.mark.parametrize(("granule", "page"), [("16K", 16 << 10), ("64K", 64 << 10)])
def test_cont_pte_hugetlb_forces_pages_per_granule(granule, page) -> None:
    # CONT_PTE_SHIFT = 7 + 14 = 21 (16K pages) and 5 + 16 = 21 (64K pages): a 2 MiB hugetlbfs
    # page is CONT_PTE, so "vma_shift = PAGE_SHIFT; max_map_size = PAGE_SIZE" (7.3): a write
    # permission fault reported at level 2 (a stale block of 32 MiB / 512 MiB, installed by hand)
    # maps one page writable instead of taking the fault granule.
    vm = kvmcore.VM("arm64", kernel="7.3", granule=granule)
    hva = vm.host.mmap(4 * MiB, page_size=2 * MiB)
    slot = vm.set_user_memory_region(0, 1 << 36, 2 * MiB, hva)
    block = 1 << ((vm.page_shift - 3) * 2 + 3)  # ARM64_HW_PGTABLE_LEVEL_SHIFT(2)
    vm.stage2.map((1 << 36) >> vm.page_shift, vm.host.hva_to_pfn(slot.userspace_addr, False)[0], block, False, False)
    res = vm.create_vcpu().handle_fault({"esr": WRITE_PERM_L2, "hpfar": hpfar((1 << 36) + page)})
    assert (res.outcome, res.mapped.size, res.mapped.writable) == ("mapped", page, True)
