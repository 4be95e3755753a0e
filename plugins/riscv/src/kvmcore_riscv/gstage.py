"""RISC-V's faultin path: ``gstage_page_fault()`` and ``kvm_riscv_mmu_map()``, plus the parts of
the generic KVM Userfault design that upstream RISC-V lacks.

Upstream (6.12, 6.18, 7.3: ``arch/riscv/kvm/vcpu_exit.c`` and ``mmu.c``; where they differ
the code asks :mod:`kvmcore_riscv.kernels`):

1. no memslot, or a store to a slot that is not writable (``KVM_MEM_READONLY``): a load or
   store is emulated as MMIO (``kvm_riscv_vcpu_mmio_load/store()``); a fetch fails with
   -EOPNOTSUPP (6.12, 6.18) or gets an instruction access fault reflected (7.3);
2. otherwise ``kvm_riscv_mmu_map()`` (``kvm_riscv_gstage_map()`` in 6.12): find the VMA,
   fault the page in, SIGBUS on hwpoison, map it (hugetlbfs blocks, THP blocks on 7.3,
   PAGE_SIZE under dirty logging, read-only for a read under dirty logging, always
   executable).

Beyond upstream, each gated by its proposal (no upstream counterpart on RISC-V, taken from
the generic path x86 and arm64 share): "riscv-private", the private/shared mismatch and
private faults through guest_memfd, both ending in ``KVM_EXIT_MEMORY_FAULT``;
"riscv-userfault", KVM Userfault's ``kvm_do_userfault()`` just before the page is faulted
in, where arm64 v3 puts it.

Every path returns a named outcome (``docs/arch/riscv.md`` lists them with their kernel
counterparts).
"""

from __future__ import annotations

import errno

import kvmcore
from kvmcore import (
    KVM_PFN_ERR_HWPOISON,
    KVM_PFN_NOSLOT,
    DecodeError,
    Exit,
    KvmError,
    Mapped,
    Retry,
    is_error_noslot_pfn,
    kvm_do_userfault,
    kvm_faultin_pfn,
    kvm_gmem_get_pfn,
    kvm_handle_signal_exit,
    kvm_prepare_memory_fault_exit,
    kvm_prepare_mmio_exit,
    send_sig_mceerr,
)
from kvmcore.abi import EFAULT, EOPNOTSUPP, KVM_EXIT_MEMORY_FAULT, KVM_MEM_USERFAULT

from . import kernels
from .fault import RiscvFault
from .htinst import MmioEmulationError, mmio_access

#: G-stage block sizes kvmcore tries: 1 GiB and 2 MiB leaves (Sv39x4 and wider; Sv48x4's
#: 512 GiB leaf is not tried, as KVM never maps one).
GSTAGE_BLOCK_SIZES = (1 << 30, 1 << 21)
#: scause KVM reflects into the guest for a fetch from an unbacked GPA (7.2).
EXC_INST_ACCESS = 1


def gstage_page_fault(vcpu: kvmcore.VCPU, fault: RiscvFault) -> kvmcore.FaultinResult:
    """Mirrors ``gstage_page_fault()`` (``arch/riscv/kvm/vcpu_exit.c``), with kvmcore's
    extensions for private memory in front of it.

    Order: [ext] private/shared mismatch -> [ext] private faults (no slot, userfault,
    guest_memfd) -> no memslot or a store to a read-only slot (MMIO emulation, or a fetch
    from nowhere) -> :func:`kvm_riscv_mmu_map`.
    """
    # the proposal set tested directly: has_proposal() without its check of a known name
    if "riscv-private" in vcpu.vm.proposals:
        if fault.is_private != vcpu.vm.mem_is_private(fault.gfn):
            return private_mismatch(vcpu, fault)
        if fault.is_private:
            return private_faultin(vcpu, fault)
    slot = fault.slot
    if slot is None or (fault.write and slot.readonly):
        return noslot_or_readonly(vcpu, fault)
    return kvm_riscv_mmu_map(vcpu, fault)


def private_mismatch(vcpu: kvmcore.VCPU, fault: RiscvFault) -> Exit:
    """kvmcore extension; mirrors the mismatch check of x86's ``kvm_mmu_faultin_pfn()``
    (``kvm_mmu_prepare_memory_fault_exit()`` + -EFAULT): the access's private/shared view
    differs from the gfn's ``KVM_MEMORY_ATTRIBUTE_PRIVATE``. Upstream RISC-V has no private
    memory, so never takes this path."""
    kvm_prepare_memory_fault_exit(vcpu, fault)
    return Exit(
        -EFAULT,
        "private_mismatch",
        f"{'private' if fault.is_private else 'shared'} access to a "
        f"{'shared' if fault.is_private else 'private'} gfn {fault.gfn:#x}",
    )


def private_faultin(vcpu: kvmcore.VCPU, fault: RiscvFault) -> kvmcore.FaultinResult:
    """kvmcore extension; mirrors x86's ``kvm_mmu_faultin_pfn_gmem()`` and arm64's
    ``gmem_abort()``: a private fault is served by ``kvm_gmem_get_pfn()``; every failure is a
    memory-fault exit (flags PRIVATE). Userfault is checked first, as in
    ``__kvm_mmu_faultin_pfn()``. A private page is never MMIO.
    """
    vm = vcpu.vm
    slot = fault.slot
    if slot is None:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(
            -EFAULT, "private_no_slot", f"private access to gfn {fault.gfn:#x} with no memslot"
        )
    if "riscv-userfault" in vm.proposals and kvm_do_userfault(vcpu, fault):
        return _userfault(vcpu)
    if not slot.has_gmem():
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_no_gmem", f"slot {slot.id} has no guest_memfd")
    try:
        pfn = kvm_gmem_get_pfn(vm, slot, fault.gfn)
    except KvmError as err:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-err.errno, "gmem_error", str(err))
    return Mapped(pfn, True, vm.page_size, exec=True, outcome="mapped_private")


def _userfault(vcpu: kvmcore.VCPU) -> Exit:
    """kvmcore extension: ``kvm_do_userfault()`` returned true; the caller returns -EFAULT."""
    if vcpu.kvm_run.exit_reason != KVM_EXIT_MEMORY_FAULT:
        return Exit(
            -EFAULT, "userfault", "the userfault bitmap could not be read: bare -EFAULT"
        )
    return Exit(-EFAULT, "userfault")


def noslot_or_readonly(vcpu: kvmcore.VCPU, fault: RiscvFault) -> kvmcore.FaultinResult:
    """Mirrors the first branch of ``gstage_page_fault()``: ``kvm_is_error_hva(hva)`` (no
    memslot) or a store with ``!writable`` (a ``KVM_MEM_READONLY`` slot).

    * load -> ``kvm_riscv_vcpu_mmio_load()``, store -> ``kvm_riscv_vcpu_mmio_store()``
      (:func:`mmio_access`): ``KVM_EXIT_MMIO`` at ``kernel_gpa`` with the decoded length;
      unknown instruction -> -EOPNOTSUPP; GPA not aligned to the length -> -EIO. The kernel
      first tries ``kvm_io_bus_read/write(KVM_MMIO_BUS)``; kvmcore has no in-kernel devices,
      so every access exits.
    * htinst bit 0 clear and no ``insn``: KVM reads the instruction at sepc from guest memory
      (``kvm_riscv_vcpu_unpriv_read()``); kvmcore cannot, so the fault ends as ``emulate``.
    * fetch (only possible with no memslot): the ``default: return -EOPNOTSUPP`` of 6.12 and
      6.18; 7.3 reflects an instruction access fault into the guest
      (``kernels.fetch_outside_memslots_injects``).
    """
    if fault.exec:
        if kernels.fetch_outside_memslots_injects(vcpu.vm):
            return Retry(
                "exec_no_slot_inject",
                f"fetch from unbacked gpa {fault.kernel_gpa:#x}: 7.3 reflects an instruction "
                f"access fault (scause {EXC_INST_ACCESS}, EXC_INST_ACCESS) into the guest",
            )
        return Exit(
            -EOPNOTSUPP,
            "exec_no_slot",
            f"instruction guest-page fault on unbacked gpa {fault.kernel_gpa:#x}: "
            'gstage_page_fault() returns -EOPNOTSUPP ("VCPU exit error -95")',
        )
    why = "no memslot" if fault.slot is None else f"store to read-only slot {fault.slot.id}"
    try:
        mmio = mmio_access(
            fault.htinst, fault.insn, is_write=fault.write, fault_addr=fault.kernel_gpa
        )
    except MmioEmulationError as err:
        outcome = "mmio_unsupported_insn" if err.errno == errno.EOPNOTSUPP else "mmio_misaligned"
        return Exit(-err.errno, outcome, str(err))
    except DecodeError:
        # mmio_access needs the instruction KVM would read at sepc (htinst bit 0 clear).
        sepc = "sepc" if fault.sepc is None else f"sepc={fault.sepc:#x}"
        return Retry(
            "emulate",
            f"{why}, htinst={fault.htinst:#x} carries no instruction: KVM reads the instruction at "
            f"{sepc} from guest memory (kvm_riscv_vcpu_unpriv_read()) and emulates it; pass the "
            "raw key insn to model the MMIO access",
        )
    data = (fault.data or 0) if mmio.is_write else 0
    kvm_prepare_mmio_exit(vcpu, fault.kernel_gpa, mmio.len, mmio.is_write, data)
    return Exit(
        0,
        "mmio",
        f"{why}: {mmio.mnemonic} x{mmio.reg}, {mmio.len}-byte "
        f"{'store' if mmio.is_write else 'load'} at {fault.kernel_gpa:#x} "
        f"({'kvm_riscv_vcpu_mmio_store' if mmio.is_write else 'kvm_riscv_vcpu_mmio_load'})",
    )


def fault_supports_gstage_huge_mapping(slot: kvmcore.Memslot, hva: int, map_size: int) -> bool:
    """Mirrors ``fault_supports_gstage_huge_mapping()`` (7.3): gpa and hva congruent modulo
    ``map_size``, and ``ALIGN(uaddr_start) <= hva < ALIGN_DOWN(uaddr_end)``."""
    mask = map_size - 1
    uaddr_start = slot.userspace_addr
    uaddr_end = uaddr_start + slot.memory_size
    if (slot.guest_phys_addr & mask) != (uaddr_start & mask):
        return False
    return ((uaddr_start + mask) & ~mask) <= hva < (uaddr_end & ~mask)


def hugetlb_mapping_size(slot: kvmcore.Memslot, hva: int, map_size: int, page_size: int) -> int:
    """Mirrors ``hugetlb_mapping_size()`` (7.3): PUD -> PMD -> PAGE_SIZE, the first block
    :func:`fault_supports_gstage_huge_mapping` accepts; other sizes unchanged."""
    for size in GSTAGE_BLOCK_SIZES:
        if map_size >= size and fault_supports_gstage_huge_mapping(slot, hva, size):
            return size
    return page_size if map_size in GSTAGE_BLOCK_SIZES else map_size


def transparent_hugepage_adjust(vm: kvmcore.VM, slot: kvmcore.Memslot, hva: int) -> int:
    """Mirrors ``transparent_hugepage_adjust()`` (7.3): PMD_SIZE when the block fits the
    memslot and the host maps the hva with at least a PMD (``get_hva_mapping_size()``);
    otherwise the host's size if smaller (PAGE_SIZE here), else PAGE_SIZE."""
    pmd_size = 1 << 21
    if fault_supports_gstage_huge_mapping(slot, hva, pmd_size):
        size = vm.host.mapping_size(hva)
        return pmd_size if size >= pmd_size else vm.page_size
    return vm.page_size


def kvm_riscv_mmu_map(vcpu: kvmcore.VCPU, fault: RiscvFault) -> kvmcore.FaultinResult:
    """Mirrors ``kvm_riscv_mmu_map()`` (6.18, 7.3; ``kvm_riscv_gstage_map()`` in 6.12) for a
    shared fault on a memslot.

    1. VMA lookup: "Failed to find VMA" -> bare -EFAULT (``no_vma``).
    2. ``vma_pagesize``: the hugetlbfs page size (``is_vm_hugetlb_page()``), else PAGE_SIZE;
       PAGE_SIZE under dirty logging (``dirty_bitmap`` and not READONLY). 7.3 checks the
       memslot (``hugetlb_mapping_size()``); 6.12/6.18 map the VMA's size at the aligned-down
       GPA whatever the slot's alignment (``kernels.gstage_huge_mapping_checked``), faulting
       in the aligned-down gfn: through its own memslot on 6.12 (none: -EFAULT), through the
       faulting memslot's hva arithmetic on 6.18 (``kernels.faultin_uses_the_fault_memslot``).
    3. ("riscv-userfault") ``kvm_do_userfault()``.
    4. ``__kvm_faultin_pfn()`` (``gfn_to_pfn_prot()`` in 6.12): hwpoison ->
       ``send_sig_mceerr(BUS_MCEERR_AR, hva, vma_pageshift)`` (the hugetlbfs shift, even under
       dirty logging) and return 0; the run loop sees the signal
       (``xfer_to_guest_mode_handle_work()`` -> ``kvm_handle_signal_exit()``): KVM_RUN
       returns -EINTR with ``KVM_EXIT_INTR``. Another error pfn -> bare -EFAULT.
    5. Read-only for a read under dirty logging.
    6. 7.3 only (``kernels.thp_blocks``): not logging, not hugetlbfs, PAGE_SIZE ->
       ``transparent_hugepage_adjust()``.
    7. Map, always executable. The mmu-notifier retry is not modelled, nor 7.3's
       ``kvm_riscv_mmu_dirty_log_write_fault_fast()`` (it makes an existing leaf writable:
       the same end state as mapping it again).
    """
    vm = vcpu.vm
    slot = fault.slot
    assert slot is not None
    gfn = fault.gfn
    hva = slot.gfn_to_hva(gfn)
    vma = vm.host.find_vma(hva)
    if vma is None:
        return Exit(-EFAULT, "no_vma", f"Failed to find VMA for hva {hva:#x}")
    logging = slot.dirty_bitmap is not None and not slot.readonly
    is_hugetlb = vma.page_size > vm.page_size and not vma.thp
    vma_pageshift = vma.page_size.bit_length() - 1 if is_hugetlb else vm.page_shift
    size = 1 << vma_pageshift
    # "riscv-userfault": a KVM_MEM_USERFAULT slot maps PAGE_SIZE, as v3 forces on arm64
    if logging or slot.flags & KVM_MEM_USERFAULT:
        size = vm.page_size
    elif is_hugetlb and kernels.gstage_huge_mapping_checked(vm):
        size = hugetlb_mapping_size(slot, hva, size, vm.page_size)
    if size not in GSTAGE_BLOCK_SIZES and size != vm.page_size:
        return Exit(-EFAULT, "efault", f"Invalid VMA page size {size:#x}")
    # the gfn KVM faults in: aligned down for a block (every version)
    fault_gfn = gfn & ~((size >> vm.page_shift) - 1)
    fault_slot: kvmcore.Memslot | None = slot
    if fault_gfn < slot.base_gfn and not kernels.faultin_uses_the_fault_memslot(vm):
        fault_slot = vm.memslots.find(fault_gfn)

    if "riscv-userfault" in vm.proposals and kvm_do_userfault(vcpu, fault):
        return _userfault(vcpu)
    if fault_slot is None:
        pfn, writable = KVM_PFN_NOSLOT, False
    else:
        pfn, writable = kvm_faultin_pfn(vm, fault_slot, fault_gfn, fault.write)
    if pfn == KVM_PFN_ERR_HWPOISON:
        send_sig_mceerr(vcpu, hva, vma_pageshift)
        ret = kvm_handle_signal_exit(vcpu)
        return Exit(
            ret,
            "hwpoison_sigbus",
            f"send_sig_mceerr(BUS_MCEERR_AR, {hva:#x}, {vma_pageshift}); the pending signal ends "
            "KVM_RUN with -EINTR (KVM_EXIT_INTR)",
        )
    if is_error_noslot_pfn(pfn):
        return Exit(
            -EFAULT, "efault", f"__kvm_faultin_pfn() failed for gfn {fault_gfn:#x} (bare -EFAULT)"
        )
    if logging and not fault.write:
        writable = False
    if (
        not logging
        and not slot.flags & KVM_MEM_USERFAULT
        and not is_hugetlb
        and size == vm.page_size
        and kernels.thp_blocks(vm)
    ):
        size = transparent_hugepage_adjust(vm, slot, hva)  # pfn and gpa aligned down alike
    # the core maps fault.gfn: give it the pfn the block puts there (pfn belongs to fault_gfn)
    return Mapped(pfn + (gfn - fault_gfn), writable, size, True)  # positional: keywords cost more


__all__ = [
    "GSTAGE_BLOCK_SIZES",
    "fault_supports_gstage_huge_mapping",
    "gstage_page_fault",
    "hugetlb_mapping_size",
    "kvm_riscv_mmu_map",
    "noslot_or_readonly",
    "private_faultin",
    "private_mismatch",
    "transparent_hugepage_adjust",
]
