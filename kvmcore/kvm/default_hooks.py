"""The core's own hook implementations, registered ``trylast`` in every arch's plugin manager.

The common memory-fault exit helper is a hookimpl like any other (datasette's "dogfooding"):
arches wrap it, or answer ``faultin_pfn``/``configure_vm`` first to replace the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from kvmcore._types import (
    KVM_PFN_ERR_HWPOISON,
    KVM_PFN_ERR_RO_FAULT,
    Exit,
    FaultinResult,
    Mapped,
    MemoryFault,
    is_error_noslot_pfn,
)
from kvmcore.abi import (
    EFAULT,
    EHWPOISON,
    KVM_EXIT_MEMORY_FAULT,
    KVM_MEMORY_EXIT_FLAG_PRIVATE,
    KVM_RUN_EXIT_OFFSET,
    KVMCORE_SYNDROME_ARCH_NONE,
    KVMCORE_SYNDROME_WORDS,
    MEMORY_FAULT_STRUCT,
    MEMORY_FAULT_SYNDROME_STRUCT,
)
from kvmcore.errors import FaultContractError, KvmError
from kvmcore.kvm.designs import ARCH_HOOK_FLAGS, HELPER_ARCH_HOOK, ExitDesign, access_flags
from kvmcore.kvm.faultin import (
    kvm_do_userfault,
    kvm_faultin_pfn,
    kvm_gmem_get_pfn,
    kvm_mapping_size,
    kvm_prepare_memory_fault_exit,
    kvm_prepare_mmio_exit,
)

if TYPE_CHECKING:
    from kvmcore.kvm.kvm_main import VCPU, VM

hookimpl = pluggy.HookimplMarker("kvmcore")

#: Block sizes the generic path tries (x86/arm64-4K/riscv-Sv39 share 2 MiB and 1 GiB).
GENERIC_BLOCK_SIZES = (1 << 30, 1 << 21)


@hookimpl(trylast=True)
def prepare_memory_fault_exit(vcpu: VCPU, fault: Any) -> MemoryFault:
    """The common ``kvm_prepare_memory_fault_exit()``, as the VM's exit design has it.

    Every design: ``exit_reason = KVM_EXIT_MEMORY_FAULT``, ``gpa = gfn << PAGE_SHIFT``,
    ``size = PAGE_SIZE`` (what x86's ``kvm_mmu_prepare_memory_fault_exit()`` passes upstream
    and what v3's helper computes). Flags:

    * ``upstream`` / ``v3-helper``: PRIVATE if ``fault.is_private`` ("RWX flags are not (yet)
      defined"), plus READ/WRITE/EXEC with ``rwx-flags``;
    * ``arch-hook``: 0, then the arch's ``kvm_arch_prepare_memory_fault_exit()`` ORs in every
      flag (checked by :func:`_arch_flags`).

    With ``syndrome`` the extension after ``memory_fault`` is cleared, so no stale syndrome
    survives; in the other designs common code writes nothing beyond ``size``.
    """
    vm = vcpu.vm
    design = vm.exit_design
    run = vcpu.kvm_run
    run.exit_reason = KVM_EXIT_MEMORY_FAULT
    gpa = fault.gfn << vm.page_shift
    size = vm.page_size
    arch_hook = design.helper == HELPER_ARCH_HOOK
    if arch_hook:
        flags = 0
    else:
        # RWX flags are not (yet) defined or communicated to userspace (unless rwx-flags).
        flags = KVM_MEMORY_EXIT_FLAG_PRIVATE if fault.is_private else 0
        if design.rwx:
            flags |= access_flags(fault.write, fault.exec)
    # memory_fault (and, with syndrome, the cleared extension after it) in one write
    if design.syndrome:
        _MF_SYNDROME.pack_into(run, _EXIT, flags, gpa, size, 0, KVMCORE_SYNDROME_ARCH_NONE, *_NO_WORDS)
    else:
        _MF.pack_into(run, _EXIT, flags, gpa, size)
    if arch_hook:
        vm.arch.kvm_arch_prepare_memory_fault_exit(vcpu, fault)
        _arch_flags(vcpu, design, gpa, size)
        flags = _MF.unpack_from(run, _EXIT)[0]
    return MemoryFault(flags, gpa, size)


_EXIT = KVM_RUN_EXIT_OFFSET
_MF = MEMORY_FAULT_STRUCT
_MF_SYNDROME = MEMORY_FAULT_SYNDROME_STRUCT
_NO_WORDS = (0,) * KVMCORE_SYNDROME_WORDS


def _arch_flags(vcpu: VCPU, design: ExitDesign, gpa: int, size: int) -> None:
    """After ``kvm_arch_prepare_memory_fault_exit()``: the hook set only the bits it owns."""
    run = vcpu.kvm_run
    mf = run.exit.memory_fault
    arch = vcpu.vm.arch.name
    allowed = ARCH_HOOK_FLAGS if design.rwx else KVM_MEMORY_EXIT_FLAG_PRIVATE
    checks = (
        ("exit_reason", run.exit_reason, KVM_EXIT_MEMORY_FAULT),
        ("memory_fault.gpa", mf.gpa, gpa),
        ("memory_fault.size", mf.size, size),
    )
    for field, found, expected in checks:
        if found != expected:
            raise FaultContractError(
                arch, f"kvm_arch_prepare_memory_fault_exit: {field}",
                f"{expected:#x} ({design.ownership_rule()})", f"{found:#x}",
            )
    if mf.flags & ~allowed:
        raise FaultContractError(
            arch, "kvm_arch_prepare_memory_fault_exit: memory_fault.flags",
            f"only bits {allowed:#x} ({design.ownership_rule()}"
            + ("" if design.rwx else "; RWX bits 0-2 stay reserved without rwx-flags") + ")",
            f"{mf.flags:#x}",
        )


@hookimpl(trylast=True)
def kvm_arch_prepare_memory_fault_exit(vcpu: VCPU, fault: Any) -> None:
    """The ``__weak`` default: no flags (an arch that declares ``arch-hook`` implements it)."""


@hookimpl(trylast=True)
def configure_vm(vm: VM, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Accept exactly the settings the arch declares in ``ArchInfo.settings``; fill defaults."""
    declared = vm.arch.info.settings
    result = {name: values[0] for name, values in declared.items()}
    for name, value in settings.items():
        if name not in declared:
            accepted = ", ".join(sorted(declared)) or "none"
            raise ValueError(f"arch {vm.arch.name!r} has no VM setting {name!r} (accepted: {accepted})")
        if value not in declared[name]:
            raise ValueError(
                f"arch {vm.arch.name!r}: setting {name}={value!r} is not one of "
                f"{', '.join(repr(v) for v in declared[name])}"
            )
        result[name] = value
    return result


@hookimpl(trylast=True)
def faultin_pfn(vcpu: VCPU, fault: Any) -> FaultinResult:
    """The generic faultin path: what the KVM Userfault design does on an arch with no quirks.

    Order (x86's ``kvm_mmu_faultin_pfn()``/``__kvm_mmu_faultin_pfn()``, the fullest
    statement of the common checks): private/shared mismatch; no memslot (MMIO, or a memory
    fault if private); userfault; private faults through guest_memfd; shared faults through
    the host mapping. A poisoned page exits with ``-EHWPOISON`` and a memory fault (the
    direction the generic design points; x86 and arm64 send SIGBUS instead).
    """
    vm = vcpu.vm
    slot = fault.slot
    gfn = fault.gfn
    if fault.is_private != vm.mem_is_private(gfn):
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_mismatch")
    if slot is None:
        if fault.is_private:
            kvm_prepare_memory_fault_exit(vcpu, fault)
            return Exit(-EFAULT, "private_no_slot")
        kvm_prepare_mmio_exit(vcpu, gfn << vm.page_shift, 0, fault.write)
        return Exit(0, "mmio", "the generic path does not know the access width: mmio.len is 0")
    if kvm_do_userfault(vcpu, fault):
        return Exit(-EFAULT, "userfault")
    if fault.is_private:
        if not slot.has_gmem():
            kvm_prepare_memory_fault_exit(vcpu, fault)
            return Exit(-EFAULT, "private_no_gmem")
        try:
            pfn = kvm_gmem_get_pfn(vm, slot, gfn)
        except KvmError as err:
            kvm_prepare_memory_fault_exit(vcpu, fault)
            return Exit(-(err.errno or EFAULT), "gmem_error", str(err))
        return Mapped(pfn, not slot.readonly, vm.page_size, outcome="mapped_private")
    pfn, writable = kvm_faultin_pfn(vm, slot, gfn, fault.write)
    if pfn == KVM_PFN_ERR_RO_FAULT:
        kvm_prepare_mmio_exit(vcpu, gfn << vm.page_shift, 0, True)
        return Exit(0, "mmio_readonly_slot")
    if pfn == KVM_PFN_ERR_HWPOISON:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EHWPOISON, "hwpoison")
    if is_error_noslot_pfn(pfn):
        return Exit(-EFAULT, "efault", "no usable host mapping (bare -EFAULT, no memory_fault info)")
    size = kvm_mapping_size(vm, slot, gfn, GENERIC_BLOCK_SIZES)
    return Mapped(pfn, writable, size)
