"""The arm64 stage-2 abort path (``arch/arm64/kvm/mmu.c``, ``mmio.c``), with KVM Userfault v3.

:func:`kvm_handle_guest_abort` is the ``faultin_pfn`` hook. It orders the checks as the
6.17-era kernel does (project reference, section 4.5) and hands RAM faults to
:func:`gmem_abort` or :func:`user_mem_abort`; MMIO goes to :func:`io_mem_abort`, access-flag
faults to :func:`handle_access_fault`. Every function names the kernel function it mirrors and
every way out has an outcome name (``docs/arch/arm64.md`` lists them).

Not modelled: nested virtualisation (shadow stage 2, ``kvm_walk_nested_s2()``), protected
VMs (pKVM), in-kernel MMIO devices (``kvm_io_bus``: every MMIO access exits), VM_PFNMAP
device mappings, MTE, ``ARM64_HAS_CACHE_DIC`` (exec permission is granted only to exec
faults), ``mmu_invalidate_retry()`` (kvmcore is single-threaded) and tracepoints.

kvmcore extensions (not upstream arm64, which never sets ``is_private``): the
private/shared checks marked "kvmcore extension" below.
"""

from __future__ import annotations

import kvmcore
from kvmcore import Exit, FaultinResult, KvmError, Mapped, Retry, abi

from . import esr as E
from .fault import BLOCK_SIZES, Arm64Fault


# --- kvm_handle_guest_abort() ---------------------------------------------------------------
def kvm_handle_guest_abort(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> FaultinResult:
    """Mirrors ``kvm_handle_guest_abort()`` (6.17-era form, reference 4.5).

    1. SEA (``kvm_vcpu_abt_issea()``) -> :func:`kvm_handle_guest_sea`.
    2. Translation fault beyond the IPA space: at or above the host's sanitised PARange
       (``get_kvm_ipa_limit()``, modelled as ``ArchInfo.phys_bits`` = 52) ->
       ``kvm_inject_size_fault()``; between the VM's IPA size (``VTCR_EL2.T0SZ``, the
       ``ipa_bits`` setting) and that -> an external abort injected at ``ipa | FAR[11:0]``.
    3. Not a translation, permission or access-flag fault -> "Unsupported FSC", -EFAULT.
    4. (kvmcore extension) private/shared mismatch; private access with no memslot.
    5. No memslot (``kvm_is_error_hva()``) or a write to a READONLY memslot: IABT ->
       -ENOEXEC -> injected instruction abort; S1PTW -> injected data abort; no memslot
       and CM=1 -> skip the cache maintenance instruction; otherwise :func:`io_mem_abort`.
    6. Access-flag fault -> :func:`handle_access_fault`.
    7. Translation or permission fault on RAM: (kvmcore extension) a private access to a
       slot without guest_memfd; ``kvm_slot_has_gmem()`` -> :func:`gmem_abort`, else
       :func:`user_mem_abort`.
    """
    vm = vcpu.vm
    info = fault.info
    if E.is_sea(info):
        return kvm_handle_guest_sea(vcpu, fault)

    if E.is_translation_fault(info):
        if fault.ipa >= 1 << vm.arch.info.phys_bits:
            return Retry(
                "size_fault_injected",
                f"IPA {fault.ipa:#x} is beyond the {vm.arch.info.phys_bits}-bit PARange: "
                "kvm_inject_size_fault()",
            )
        ipa_bits = vm.settings["ipa_bits"]
        if fault.ipa >= 1 << ipa_bits:
            which = "instruction" if fault.is_iabt else "data"
            return Retry(
                "ipa_range_sea_injected",
                f"IPA {fault.ipa:#x} is beyond the VM's {ipa_bits}-bit IPA space: external "
                f"{which} abort injected at {fault.gpa:#x}",
            )

    if not (E.is_translation_fault(info) or E.is_permission_fault(info) or E.is_access_flag_fault(info)):
        return Exit(
            -abi.EFAULT,
            "unsupported_fsc",
            f"Unsupported FSC: EC={fault.ec:#x} xFSC={fault.fsc:#x} ESR_EL2={fault.esr:#x}",
        )

    slot = fault.slot
    # kvmcore extension: checked before the no-slot branch, as x86's kvm_mmu_faultin_pfn()
    # does, so that a private access is never emulated as MMIO.
    if fault.is_private != vm.mem_is_private(fault.gfn):
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-abi.EFAULT, "private_mismatch", "kvmcore extension: access and memory attribute disagree")
    if slot is None and fault.is_private:
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-abi.EFAULT, "private_no_slot", "kvmcore extension: private access with no memslot")

    # gfn_to_hva_memslot_prot(): an error hva without a slot, writable unless READONLY
    if slot is None or (fault.write and slot.readonly):
        if fault.is_iabt:
            # -ENOEXEC from kvm_handle_guest_abort(), turned into kvm_inject_pabt()
            return Retry("iabt_injected", "instruction fetch outside RAM: external instruction abort injected")
        if fault.s1ptw:
            return Retry("dabt_injected", "stage-1 walk outside RAM: external data abort injected at FAR")
        if slot is None and fault.cm:
            return Retry("cache_maintenance_skipped", "cache maintenance outside memslots: instruction skipped")
        return io_mem_abort(vcpu, fault)

    if E.is_access_flag_fault(info):
        return handle_access_fault(vcpu, fault)

    if fault.is_private and not slot.has_gmem():
        # kvmcore extension, after x86's kvm_mmu_faultin_pfn_gmem() check
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-abi.EFAULT, "private_no_gmem", "kvmcore extension: private access to a slot without guest_memfd")
    if slot.has_gmem():
        return gmem_abort(vcpu, fault)
    return user_mem_abort(vcpu, fault)


def kvm_handle_guest_sea(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> Retry:
    """Mirrors ``kvm_handle_guest_sea()`` (6.15-6.18): ``apei_claim_sea()`` decides.

    The VM setting ``sea`` stands for the host's RAS firmware: ``"claimed"`` -> the host
    handled the error, the guest resumes; ``"unclaimed"`` (default) -> ``kvm_inject_vabt()``
    (an SError into the guest), resume. (7.2's KVM_EXIT_ARM_SEA exit is after 6.18.)
    """
    if vcpu.vm.settings["sea"] == "claimed":
        return Retry("sea_claimed", "apei_claim_sea() claimed the error; the guest resumes")
    return Retry("sea_injected", f"{fault.info.fsc_name}: not claimed by the host, SError injected")


# --- io_mem_abort() -------------------------------------------------------------------------
def io_mem_abort(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> Exit:
    """Mirrors ``io_mem_abort()`` (mmio.c) for an access KVM cannot complete in the kernel.

    ISV=0 (no instruction syndrome: LDP/STP, writeback forms): with
    ``KVM_CAP_ARM_NISV_TO_USER`` enabled, ``KVM_EXIT_ARM_NISV`` with
    ``esr_iss = ESR & (CM | WnR | FSC)`` and the full ``fault_ipa``, KVM_RUN returns 0;
    otherwise -ENOSYS. ISV=1: ``KVM_EXIT_MMIO`` with ``len = 1 << SAS``, ``is_write = WnR``
    and, for a write, the stored value (raw key ``data``). In-kernel devices
    (``kvm_io_bus``) are not modelled, so every ISV=1 access exits.
    """
    run = vcpu.kvm_run
    if not fault.isv:
        if vcpu.vm.has_cap(abi.KVM_CAP_ARM_NISV_TO_USER):
            run.exit_reason = abi.KVM_EXIT_ARM_NISV
            run.arm_nisv.esr_iss = E.nisv_sanitised_iss(fault.esr)
            run.arm_nisv.fault_ipa = fault.gpa
            return Exit(0, "nisv")
        return Exit(-abi.ENOSYS, "nisv_enosys", "Data abort outside memslots with no valid syndrome info")
    kvmcore.kvm_prepare_mmio_exit(vcpu, fault.gpa, fault.access_size, bool(fault.wnr), fault.data)  # type: ignore[arg-type]
    return Exit(0, "mmio")


# --- handle_access_fault() ------------------------------------------------------------------
def handle_access_fault(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> Retry:
    """Mirrors ``handle_access_fault()``: ``kvm_pgtable_stage2_mkyoung()`` and resume.

    The leaf covering the gfn is re-installed unchanged, which sets its access flag
    (``Stage2.map`` always does; the flag constants of ``kvmcore.Stage2`` are not public).
    Nothing mapped (the mapping went away meanwhile): nothing to do, the guest faults again.
    """
    stage2 = vcpu.vm.stage2
    entry = stage2.lookup(fault.gfn)
    if entry is None:
        return Retry("access_flag_fixed", "no stage-2 mapping to make young")
    if not entry.young:
        stage2.map(entry.gfn, entry.pfn, entry.size, entry.writable, entry.exec)
    return Retry("access_flag_fixed")


# --- gmem_abort() ---------------------------------------------------------------------------
def gmem_abort(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> Mapped | Exit:
    """Mirrors ``gmem_abort()`` (6.18, guest_memfd mmap series): memory from guest_memfd.

    Always PAGE_SIZE; writable unless the slot is READONLY; executable for exec faults.
    ``kvm_gmem_get_pfn()`` failing -> ``KVM_EXIT_MEMORY_FAULT`` with that errno (-EHWPOISON,
    -EFAULT), flags 0 (6.18 passes ``is_private = false``; with kvmcore's ``private`` input
    the PRIVATE flag is set).

    Userfault: KVM Userfault v3 does not hook ``gmem_abort()``; its cover letter says the
    guest_memfd path "would also need userfault handling" once Fuad Tabba's series lands.
    kvmcore models that follow-up by default (VM setting ``userfault_gmem="hooked"``: the
    check sits just before ``kvm_gmem_get_pfn()``, as it sits before ``__kvm_faultin_pfn()``
    in ``user_mem_abort()``), so a private userfault exits with flags 0x18 as on x86;
    ``userfault_gmem="v3"`` reproduces the posted series, where the bit is ignored.

    Simpler than 6.18: the exit's gpa is ``gfn << PAGE_SHIFT`` (the common helper), where
    6.18 reports the 4K-aligned fault IPA (they differ only with 16K/64K granules).
    """
    vm = vcpu.vm
    if vm.settings["userfault_gmem"] == "hooked" and kvmcore.kvm_do_userfault(vcpu, fault):
        return Exit(-kvmcore.abi.EFAULT, "userfault")
    try:
        pfn = kvmcore.kvm_gmem_get_pfn(vm, fault.slot, fault.gfn)  # type: ignore[arg-type]
    except KvmError as err:
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-err.errno, "gmem_error", str(err))
    writable = not fault.slot.readonly  # type: ignore[union-attr]
    outcome = "mapped_private" if fault.is_private else "mapped_gmem"
    return Mapped(pfn, writable, vm.page_size, exec=fault.exec, outcome=outcome)


# --- user_mem_abort() -----------------------------------------------------------------------
def perm_fault_granule(fault: Arm64Fault, page_shift: int) -> int:
    """Mirrors ``kvm_vcpu_trap_get_perm_fault_granule()``: the size of the leaf that faulted.

    ``BIT(ARM64_HW_PGTABLE_LEVEL_SHIFT(level))``, with the level from the FSC:
    ``(PAGE_SHIFT - 3) * (4 - level) + 3`` (4K: level 3 -> 4K, 2 -> 2M, 1 -> 1G).
    """
    level = fault.fault_level if fault.fault_level is not None else 3
    return 1 << ((page_shift - 3) * (4 - level) + 3)


def user_mem_abort(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> FaultinResult:
    """Mirrors ``user_mem_abort()`` (6.17 context) with KVM Userfault v3's check.

    1. The VMA of the hva: none -> "Failed to find VMA", bare -EFAULT.
    2. Mapping size: PAGE_SIZE when the slot logs dirty pages or has KVM_MEM_USERFAULT,
       else the largest stage-2 block of the granule that the host page and the memslot
       alignment allow (``kvmcore.kvm_mapping_size``).
    3. ``kvm_do_userfault()``, just before ``__kvm_faultin_pfn()`` (v3).
    4. ``__kvm_faultin_pfn()``: HWPOISON -> ``kvm_send_hwpoison_signal()`` (SIGBUS
       BUS_MCEERR_AR with the mapping's shift), resume, no memory-fault exit; any other
       error pfn -> bare -EFAULT.
    5. Dirty logging and not a write fault -> map read-only. Exec only for an exec fault.
    6. A permission fault whose leaf size (from the FSC level) equals the mapping size
       relaxes the existing leaf (``kvm_pgtable_stage2_relax_perms()``: permissions are only
       added); otherwise ``kvm_pgtable_stage2_map()``.

    A read permission fault (neither write nor exec) is a ``VM_WARN_ON_ONCE`` in 6.17 and
    goes on (6.15/6.16 returned -EFAULT after "Unexpected L2 read permission error").
    """
    vm = vcpu.vm
    slot = fault.slot
    assert slot is not None
    gfn = fault.gfn
    is_perm = E.is_permission_fault(fault.info)

    # one hva and one VMA lookup serve the whole fault, as the kernel's vma_lookup() does
    hva = slot.gfn_to_hva(gfn)
    vma = vm.host.find_vma(hva)
    if vma is None:
        return Exit(-abi.EFAULT, "no_vma", f"Failed to find VMA for hva {hva:#x}")
    logging_active = slot.dirty_bitmap is not None and not slot.readonly  # memslot_is_logging()
    vma_pagesize = kvmcore.kvm_mapping_size(vm, slot, gfn, BLOCK_SIZES[vm.page_shift], vma.page_size)

    if slot.flags & abi.KVM_MEM_USERFAULT and kvmcore.kvm_do_userfault(vcpu, fault):
        if vcpu.kvm_run.exit_reason != abi.KVM_EXIT_MEMORY_FAULT:
            return Exit(-abi.EFAULT, "userfault", "the userfault bitmap could not be read: bare -EFAULT")
        return Exit(-abi.EFAULT, "userfault")

    pfn, writable = kvmcore.kvm_faultin_pfn(vm, slot, gfn, fault.write, hva)
    if pfn == kvmcore.KVM_PFN_ERR_HWPOISON:
        kvmcore.send_sig_mceerr(vcpu, hva, vma_pagesize.bit_length() - 1)
        return Retry("hwpoison_sigbus", "kvm_send_hwpoison_signal(): SIGBUS BUS_MCEERR_AR to the vCPU thread")
    if kvmcore.is_error_noslot_pfn(pfn):
        return Exit(-abi.EFAULT, "efault", "no usable host mapping (bare -EFAULT, no memory_fault info)")

    if logging_active and not fault.write:
        writable = False

    if is_perm and vma_pagesize == perm_fault_granule(fault, vm.page_shift):
        entry = vm.stage2.lookup(gfn)
        if entry is not None:
            return Mapped(
                pfn,
                writable or entry.writable,
                vma_pagesize,
                exec=fault.exec or entry.exec,
                outcome="permission_relaxed",
            )
    return Mapped(pfn, writable, vma_pagesize, exec=fault.exec)


__all__ = [
    "gmem_abort",
    "handle_access_fault",
    "io_mem_abort",
    "kvm_handle_guest_abort",
    "kvm_handle_guest_sea",
    "perm_fault_granule",
    "user_mem_abort",
]
