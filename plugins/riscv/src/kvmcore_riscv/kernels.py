"""Where the RISC-V guest-page-fault path differs between the kernels kvmcore models.

One function per concern; each reads ``vm.kernel`` and its docstring names the source of every
version (6.12 and 7.3 read from ``arch/riscv/kvm/vcpu_exit.c`` and ``mmu.c``; 6.18 from the
patch mails, as cited). :mod:`kvmcore_riscv.gstage` asks these and nothing else about the
version. ``docs/arch/riscv.md`` ("Per kernel version") lists the same differences.
"""

from __future__ import annotations

import kvmcore


def fetch_outside_memslots_injects(vm: kvmcore.VM) -> bool:
    """An instruction guest-page fault (scause 20) with no memslot behind the GPA.

    * 6.12: ``gstage_page_fault()``: ``default: return -EOPNOTSUPP`` (KVM_RUN fails with
      -EOPNOTSUPP, "VCPU exit error -95").
    * 6.18: the same, believed: the reflection below is in 7.2 and 7.3 but not in any 2025
      RISC-V KVM series kvmcore found for 6.18 (unverified).
    * 7.3: ``gstage_page_fault()`` reflects an instruction access fault (``EXC_INST_ACCESS``,
      scause 1) into the guest with ``kvm_riscv_vcpu_trap_redirect()`` and resumes.
    """
    return vm.kernel >= (7, 0)


def gstage_huge_mapping_checked(vm: kvmcore.VM) -> bool:
    """Does a hugetlbfs VMA's block size depend on the memslot's alignment?

    * 6.12 (``kvm_riscv_gstage_map()``) and 6.18 (``kvm_riscv_mmu_map()``): no: a 2 MiB or
      1 GiB hugetlbfs VMA is mapped with a block of that size at the aligned-down GPA,
      whatever the memslot's gpa/hva alignment or bounds.
    * 7.3 (``kvm_riscv_mmu_map()``): ``hugetlb_mapping_size()`` steps PUD -> PMD -> PAGE_SIZE
      until ``fault_supports_gstage_huge_mapping()`` accepts the block (gpa and hva congruent,
      block inside the slot). It came after the THP patch (6.19), whose
      ``fault_supports_gstage_huge_mapping(memslot, hva)`` had no size argument yet.
    """
    return vm.kernel >= (6, 19)


def faultin_uses_the_fault_memslot(vm: kvmcore.VM) -> bool:
    """Which memslot translates the (block-aligned) gfn that is faulted in?

    * 6.12 ``kvm_riscv_gstage_map()``: ``gfn_to_pfn_prot(kvm, gfn, ...)`` looks the gfn up
      again (``gfn_to_memslot()``): no memslot there -> ``KVM_PFN_NOSLOT`` -> -EFAULT.
    * 6.18, 7.3 ``kvm_riscv_mmu_map()``: ``__kvm_faultin_pfn(memslot, gfn, ...)`` (since the
      6.13 conversion away from ``gfn_to_pfn_prot()``) with the faulting memslot, whose
      ``__gfn_to_hva_many()`` does not check bounds: an aligned-down gfn before the slot gives
      the hva the same distance before ``userspace_addr``. (7.3 only gets there with a block
      inside the slot.)
    """
    return vm.kernel >= (6, 13)


def thp_blocks(vm: kvmcore.VM) -> bool:
    """Are transparent huge pages mapped with G-stage blocks?

    * 6.12, 6.18: no: a VMA that is not hugetlbfs gives ``vma_pagesize = PAGE_SIZE``.
    * 7.3: ``transparent_hugepage_adjust()`` (``arch/riscv/kvm/mmu.c``; "RISC-V: KVM:
      Transparent huge page support", Nov 2025, merged for 6.19): PMD_SIZE when
      ``fault_supports_gstage_huge_mapping()`` and ``get_hva_mapping_size()`` allow it.
    """
    return vm.kernel >= (6, 19)


__all__ = [
    "faultin_uses_the_fault_memslot",
    "fetch_outside_memslots_injects",
    "gstage_huge_mapping_checked",
    "thp_blocks",
]
