"""Helpers every arch's faultin path uses, named after the kernel functions they mirror.

An arch's ``faultin_pfn`` calls them in its own kernel's order; the core's default
``faultin_pfn`` (``kvmcore.kvm.default_hooks``) is one such ordering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvmcore._types import KVM_PFN_ERR_RO_FAULT, MemoryFault, Memslot, Signal
from kvmcore.abi import (
    EFAULT,
    EINTR,
    KVM_EXIT_INTR,
    KVM_EXIT_MEMORY_FAULT,
    KVM_EXIT_MMIO,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_EXIT_FLAG_USERFAULT,
    KVM_RUN_EXIT_OFFSET,
    MEMORY_FAULT_STRUCT,
    MMIO_STRUCT,
)
from kvmcore.errors import FaultContractError, KvmError
from kvmcore.kvm.userfault import test_bit

#: The exit union's offset in ``struct kvm_run`` and the layouts written there in one call each
#: (the same bytes as the ctypes fields; see kvmcore.abi).
_EXIT = KVM_RUN_EXIT_OFFSET
_MMIO = MMIO_STRUCT
_MF = MEMORY_FAULT_STRUCT

if TYPE_CHECKING:
    from kvmcore.kvm.kvm_main import VCPU, VM


def kvm_prepare_memory_fault_exit(vcpu: VCPU, fault: Any) -> MemoryFault:
    """Fill ``vcpu.kvm_run`` for ``KVM_EXIT_MEMORY_FAULT`` through the hook (wrappers included).

    Mirrors ``kvm_prepare_memory_fault_exit()``: returns nothing the caller must use; the
    caller picks the errno (``-EFAULT``, ``-EHWPOISON``) and may add flags afterwards. Checks
    that no wrapper changed the common fields. What follows ``memory_fault.size`` belongs to the
    VM's exit design (docs/designs.md): with ``syndrome`` off (upstream mode) nothing writes it,
    as upstream's helper writes nothing there; the in-tree wrappers check ``vm.exit_design`` and
    the conformance kit fails a wrapper that writes there anyway.
    """
    common = vcpu.vm.arch.prepare_memory_fault_exit(vcpu, fault)
    run = vcpu.kvm_run
    if common is None:
        raise FaultContractError(vcpu.vm.arch.name, "prepare_memory_fault_exit", "a MemoryFault result", "None")
    if run.exit_reason != KVM_EXIT_MEMORY_FAULT:
        raise FaultContractError(
            vcpu.vm.arch.name, "exit_reason",
            f"KVM_EXIT_MEMORY_FAULT (39) ({vcpu.vm.exit_design.ownership_rule()})", str(run.exit_reason),
        )
    found = _MF.unpack_from(run, _EXIT)  # (flags, gpa, size)
    wanted = (common.flags, common.gpa, common.size)
    if found != wanted:
        for name, value, expected in zip(("flags", "gpa", "size"), found, wanted, strict=True):
            if value != expected:
                raise FaultContractError(
                    vcpu.vm.arch.name,
                    f"memory_fault.{name}",
                    f"{expected:#x} as the common helper set it: a wrapper changed it "
                    f"({vcpu.vm.exit_design.ownership_rule()})",
                    f"{value:#x}",
                )
    return common


def kvm_do_userfault(vcpu: VCPU, fault: Any) -> bool:
    """Mirrors ``kvm_do_userfault()`` (KVM Userfault v3): must this fault exit to userspace?

    True when the slot has ``KVM_MEM_USERFAULT`` and the gfn's bit is set: the memory fault
    exit is prepared and ``KVM_MEMORY_EXIT_FLAG_USERFAULT`` added; the caller returns
    ``-EFAULT``. Also True, with no exit prepared, when the bitmap cannot be read (a bare
    ``-EFAULT``, as for an invalid bitmap pointer).
    """
    slot: Memslot | None = fault.slot
    if slot is None or not slot.flags & KVM_MEM_USERFAULT:
        return False
    try:
        marked = test_bit(slot.userfault_bitmap, fault.gfn - slot.base_gfn)  # type: ignore[arg-type]
    except (ValueError, IndexError, TypeError):
        return True
    if not marked:
        return False
    kvm_prepare_memory_fault_exit(vcpu, fault)
    run = vcpu.kvm_run
    flags, gpa, size = _MF.unpack_from(run, _EXIT)
    _MF.pack_into(run, _EXIT, flags | KVM_MEMORY_EXIT_FLAG_USERFAULT, gpa, size)
    return True


def kvm_faultin_pfn(vm: VM, slot: Memslot, gfn: int, write: bool, hva: int | None = None) -> tuple[int, bool]:
    """Mirrors ``__kvm_faultin_pfn()`` for shared memory: ``(pfn, writable)`` or an error pfn.

    A write to a ``KVM_MEM_READONLY`` slot gives ``KVM_PFN_ERR_RO_FAULT`` (the kernel's
    ``KVM_HVA_ERR_RO_BAD``); otherwise the host mapping decides (``hva_to_pfn()``). ``hva``:
    ``__gfn_to_hva_memslot(slot, gfn)`` if the caller already has it (computed otherwise).
    """
    if write and slot.flags & KVM_MEM_READONLY:
        return KVM_PFN_ERR_RO_FAULT, False
    pfn, writable = vm.host.hva_to_pfn(slot.gfn_to_hva(gfn) if hva is None else hva, write)
    if slot.flags & KVM_MEM_READONLY:
        writable = False
    return pfn, writable


def kvm_gmem_get_pfn(vm: VM, slot: Memslot, gfn: int) -> int:
    """Mirrors ``kvm_gmem_get_pfn()``: the private pfn, or ``KvmError`` with the errno.

    ``EFAULT`` when the slot has no guest_memfd, ``EHWPOISON`` for a poisoned page.
    """
    gmem = slot.gmem
    if gmem is None:
        raise KvmError(EFAULT, f"slot {slot.id} has no guest_memfd")
    offset = ((gfn - slot.base_gfn) << slot.page_shift) + slot.gmem_pgoff
    return gmem.get_pfn(offset)


def kvm_prepare_mmio_exit(vcpu: VCPU, phys_addr: int, length: int, is_write: bool, data: int = 0) -> None:
    """Fill ``kvm_run.mmio`` for ``KVM_EXIT_MMIO`` (what ``io_mem_abort()``/the emulator do).

    ``data`` is the value a write stores (little-endian in ``mmio.data``); reads leave it 0
    for userspace to fill.
    """
    run = vcpu.kvm_run
    run.exit_reason = KVM_EXIT_MMIO
    value = data & ((1 << (8 * min(length, 8))) - 1) if is_write else 0
    _MMIO.pack_into(run, _EXIT, phys_addr, value, length, 1 if is_write else 0)


def kvm_mapping_size(vm: VM, slot: Memslot, gfn: int, sizes: tuple[int, ...], host_size: int | None = None) -> int:
    """The largest stage-2 block from ``sizes`` (descending) that can map ``gfn``; else PAGE_SIZE.

    A block is allowed when, as ``fault_supports_stage2_huge_mapping()`` (arm64) and the
    ``lpage_info`` checks (x86) require: the slot is neither dirty-logging nor userfault
    (both force PAGE_SIZE); the block lies inside the slot; gpa and hva are congruent
    modulo the block size; and the host maps the hva with at least that page size
    (``host_pfn_mapping_level()``). ``host_size``: the page size of the hva's VMA if the
    caller already looked it up (``vma.page_size``; looked up otherwise).
    """
    page_size = vm.page_size
    if slot.flags & (KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_USERFAULT) or slot.gmem is not None:
        return page_size
    if host_size is None:
        host_size = vm.host.mapping_size(slot.gfn_to_hva(gfn))
    if host_size <= page_size:  # no block fits a base-page host mapping
        return page_size
    gpa = gfn << vm.page_shift
    for size in sizes:
        if size <= page_size or size > host_size:
            continue
        mask = size - 1
        if (slot.userspace_addr - (slot.base_gfn << vm.page_shift)) & mask:
            continue
        start = gpa & ~mask
        if start >= slot.guest_phys_addr and start + size <= slot.guest_phys_addr + slot.memory_size:
            return size
    return page_size


def kvm_handle_signal_exit(vcpu: VCPU) -> int:
    """Mirrors ``kvm_handle_signal_exit()``: ``exit_reason = KVM_EXIT_INTR``; returns ``-EINTR``.

    What KVM_RUN ends with when a signal is pending, e.g. the SIGBUS of a hwpoisoned page.
    """
    vcpu.kvm_run.exit_reason = KVM_EXIT_INTR
    return -EINTR


def send_sig_mceerr(vcpu: VCPU, hva: int, lsb: int) -> Signal:
    """Mirrors ``send_sig_mceerr(BUS_MCEERR_AR, hva, lsb)``: SIGBUS to the vCPU thread."""
    sig = Signal("SIGBUS", "BUS_MCEERR_AR", hva, lsb)
    vcpu.pending_signal = sig
    return sig
