"""RISC-V's faultin path: ``gstage_page_fault()`` and ``kvm_riscv_mmu_map()``, plus the parts of
the generic KVM Userfault design that upstream RISC-V lacks.

Upstream (6.15-6.18, ``arch/riscv/kvm/vcpu_exit.c`` and ``mmu.c``):

1. no memslot, or a store to a slot that is not writable (``KVM_MEM_READONLY``): a load or
   store is emulated as MMIO (``kvm_riscv_vcpu_mmio_load/store()``), a fetch fails with
   -EOPNOTSUPP;
2. otherwise ``kvm_riscv_mmu_map()`` (named ``kvm_riscv_gstage_map()`` up to 6.16): find the
   VMA, fault the page in, SIGBUS on hwpoison, map it (a hugetlb block if possible, PAGE_SIZE
   under dirty logging, read-only for a read under dirty logging, always executable).

kvmcore extensions (no upstream counterpart on RISC-V, taken from the generic path x86 and
arm64 share, each marked "kvmcore extension" below): the private/shared mismatch and private
faults through guest_memfd, both ending in ``KVM_EXIT_MEMORY_FAULT``, and KVM Userfault's
``kvm_do_userfault()`` just before the page is faulted in, where arm64 v3 puts it.

Every path returns a named outcome (``docs/arch/riscv.md`` lists them with their kernel
counterparts).
"""

from __future__ import annotations

import errno

import kvmcore
from kvmcore import Exit, Mapped, Retry, abi

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
    kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
    return Exit(
        -abi.EFAULT,
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
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(
            -abi.EFAULT, "private_no_slot", f"private access to gfn {fault.gfn:#x} with no memslot"
        )
    if kvmcore.kvm_do_userfault(vcpu, fault):
        return _userfault(vcpu)
    if not slot.has_gmem():
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-abi.EFAULT, "private_no_gmem", f"slot {slot.id} has no guest_memfd")
    try:
        pfn = kvmcore.kvm_gmem_get_pfn(vm, slot, fault.gfn)
    except kvmcore.KvmError as err:
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-err.errno, "gmem_error", str(err))
    return Mapped(pfn, True, vm.page_size, exec=True, outcome="mapped_private")


def _userfault(vcpu: kvmcore.VCPU) -> Exit:
    """kvmcore extension: ``kvm_do_userfault()`` returned true; the caller returns -EFAULT."""
    if vcpu.kvm_run.exit_reason != abi.KVM_EXIT_MEMORY_FAULT:
        return Exit(
            -abi.EFAULT, "userfault", "the userfault bitmap could not be read: bare -EFAULT"
        )
    return Exit(-abi.EFAULT, "userfault")


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
      6.18 (arch/riscv/kvm/vcpu_exit.c: gstage_page_fault()); 7.3 (same function) reflects an
      instruction access fault into the guest.
    """
    if fault.exec:
        if vcpu.vm.kernel >= (7, 3):
            return Retry(
                "exec_no_slot_inject",
                f"fetch from unbacked gpa {fault.kernel_gpa:#x}: 7.3 reflects an instruction "
                f"access fault (scause {EXC_INST_ACCESS}, EXC_INST_ACCESS) into the guest",
            )
        return Exit(
            -abi.EOPNOTSUPP,
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
    except kvmcore.DecodeError:
        # mmio_access needs the instruction KVM would read at sepc (htinst bit 0 clear).
        sepc = "sepc" if fault.sepc is None else f"sepc={fault.sepc:#x}"
        return Retry(
            "emulate",
            f"{why}, htinst={fault.htinst:#x} carries no instruction: KVM reads the instruction at "
            f"{sepc} from guest memory (kvm_riscv_vcpu_unpriv_read()) and emulates it; pass the "
            "raw key insn to model the MMIO access",
        )
    data = (fault.data or 0) if mmio.is_write else 0
    kvmcore.kvm_prepare_mmio_exit(vcpu, fault.kernel_gpa, mmio.len, mmio.is_write, data)
    return Exit(
        0,
        "mmio",
        f"{why}: {mmio.mnemonic} x{mmio.reg}, {mmio.len}-byte "
        f"{'store' if mmio.is_write else 'load'} at {fault.kernel_gpa:#x} "
        f"({'kvm_riscv_vcpu_mmio_store' if mmio.is_write else 'kvm_riscv_vcpu_mmio_load'})",
    )


def kvm_riscv_mmu_map(vcpu: kvmcore.VCPU, fault: RiscvFault) -> kvmcore.FaultinResult:
    """Mirrors ``kvm_riscv_mmu_map()`` (``arch/riscv/kvm/mmu.c``, 6.17; ``kvm_riscv_gstage_map()``
    before) for a shared fault on a memslot.

    Order: VMA lookup ("Failed to find VMA" -> bare -EFAULT, ``no_vma``); mapping size; [ext]
    ``kvm_do_userfault()``; ``__kvm_faultin_pfn()`` (hwpoison -> SIGBUS and resume, another
    error pfn -> bare -EFAULT); read-only for a read under dirty logging; map, always
    executable. The mmu-notifier retry is not modelled.
    """
    vm = vcpu.vm
    slot = fault.slot
    assert slot is not None
    gfn = fault.gfn
    hva = slot.gfn_to_hva(gfn)
    vma_pagesize = vm.host.mapping_size(hva)
    if not vma_pagesize:
        return Exit(-abi.EFAULT, "no_vma", f"Failed to find VMA for hva {hva:#x}")
    size = kvmcore.kvm_mapping_size(vm, slot, gfn, GSTAGE_BLOCK_SIZES, vma_pagesize)  # one VMA lookup
    # kvmcore extension: KVM Userfault, where arm64 v3 checks it (just before faultin)
    if slot.flags & abi.KVM_MEM_USERFAULT and kvmcore.kvm_do_userfault(vcpu, fault):
        return _userfault(vcpu)
    pfn, writable = kvmcore.kvm_faultin_pfn(vm, slot, gfn, fault.write, hva)
    if pfn == kvmcore.KVM_PFN_ERR_HWPOISON:
        lsb = vma_pagesize.bit_length() - 1
        kvmcore.send_sig_mceerr(vcpu, hva, lsb)
        return Retry("hwpoison_sigbus", f"send_sig_mceerr(BUS_MCEERR_AR, {hva:#x}, {lsb})")
    if kvmcore.is_error_noslot_pfn(pfn):
        return Exit(
            -abi.EFAULT, "efault", f"__kvm_faultin_pfn() failed for hva {hva:#x} (bare -EFAULT)"
        )
    logging = slot.dirty_bitmap is not None and not slot.readonly
    if logging and not fault.write:
        writable = False
    return Mapped(pfn, writable, size, exec=True)


__all__ = [
    "GSTAGE_BLOCK_SIZES",
    "gstage_page_fault",
    "kvm_riscv_mmu_map",
    "noslot_or_readonly",
    "private_faultin",
    "private_mismatch",
]
