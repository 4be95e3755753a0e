"""The arm64 stage-2 abort path (``arch/arm64/kvm/mmu.c``, ``mmio.c``), per kernel version.

:func:`kvm_handle_guest_abort` is the ``faultin_pfn`` hook. It orders the checks as the
kernel does and hands RAM faults to :func:`gmem_abort` or :func:`user_mem_abort`; MMIO goes to
:func:`io_mem_abort`, access-flag faults to :func:`handle_access_fault`. Where 6.12, 6.18 and
7.3 differ, the code asks :mod:`kvmcore_arm64.kernels` (one function per difference, citing
each version's source). Every way out has an outcome name (``docs/arch/arm64.md`` lists them).

Not modelled: nested virtualisation (shadow stage 2, ``kvm_walk_nested_s2()``), protected
VMs (pKVM, ``pkvm_mem_abort()``), in-kernel MMIO devices (``kvm_io_bus``: every MMIO access
exits), VM_PFNMAP / device mappings, MTE, ``ARM64_HAS_CACHE_DIC`` (exec permission is granted
only to exec faults), ``mmu_invalidate_retry()`` (kvmcore is single-threaded) and tracepoints.

Beyond upstream, each gated by its proposal: private memory ("arm64-private": the checks
marked so below) and KVM Userfault ("userfault", v3's ``kvm_do_userfault()``).
"""

from __future__ import annotations

import kvmcore
from kvmcore import (
    KVM_PFN_ERR_HWPOISON,
    Exit,
    FaultinResult,
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
from kvmcore.abi import (
    EFAULT,
    ENOSYS,
    KVM_CAP_ARM_NISV_TO_USER,
    KVM_CAP_ARM_SEA_TO_USER,
    KVM_EXIT_ARM_LDST64B,
    KVM_EXIT_ARM_NISV,
    KVM_EXIT_ARM_SEA,
    KVM_EXIT_ARM_SEA_FLAG_GPA_VALID,
    KVM_EXIT_MEMORY_FAULT,
    KVM_MEM_USERFAULT,
)

from . import esr as E
from . import kernels
from .fault import Arm64Fault

#: DFSC of an unsupported exclusive or atomic access (``ESR_ELx_FSC_EXCL_ATOMIC``, 7.x).
FSC_EXCL_ATOMIC = 0x35

# --- kvm_handle_guest_abort() ---------------------------------------------------------------
def kvm_handle_guest_abort(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> FaultinResult:
    """Mirrors ``kvm_handle_guest_abort()`` (``arch/arm64/kvm/mmu.c``, 6.12 / 6.18 / 7.3).

    1. SEA (``kvm_vcpu_abt_issea()``) -> :func:`kvm_handle_guest_sea`. (6.12 runs the IPA
       range check first, but it only applies to translation faults, which are never SEAs.)
    2. Translation fault beyond the IPA space: at or above the host's sanitised PARange
       (``get_kvm_ipa_limit()``, modelled as ``ArchInfo.phys_bits`` = 52) ->
       ``kvm_inject_size_fault()``; between the VM's IPA size and that -> an external abort
       injected at ``ipa | FAR[11:0]``.
    3. Not a translation, permission or access-flag fault (nor, 7.3, FSC 0x35) ->
       "Unsupported FSC", -EFAULT.
    4. ("arm64-private") private/shared mismatch; private access with no memslot.
    5. No memslot (``kvm_is_error_hva()``) or a write to a READONLY memslot: IABT ->
       -ENOEXEC -> injected instruction abort; S1PTW -> injected data abort; no memslot
       and CM=1 -> skip the cache maintenance instruction; otherwise :func:`io_mem_abort`.
    6. Access-flag fault -> :func:`handle_access_fault`.
    7. ("arm64-private") a private access to a slot without guest_memfd;
       ``kvm_slot_has_gmem()`` (6.18+) -> :func:`gmem_abort`, else :func:`user_mem_abort`.
    """
    vm = vcpu.vm
    info = fault.info
    if E.is_sea(info):
        return kvm_handle_guest_sea(vcpu, fault)

    translation = E.is_translation_fault(info)  # a pure function of the ESR: asked once
    if translation:
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
                f"{which} abort injected at {fault.gpa:#x} ({kernels.sea_injection_name(vm)})",
            )

    # esr_fsc_is_excl_atomic_fault() masks ESR_ELx_FSC only: an IABT with IFSC 0x35 passes too
    excl_atomic = fault.fsc == FSC_EXCL_ATOMIC and kernels.excl_atomic_fault_handled(vm)
    if not (
        translation or E.is_permission_fault(info) or E.is_access_flag_fault(info) or excl_atomic
    ):
        return Exit(
            -EFAULT,
            "unsupported_fsc",
            f"Unsupported FSC: EC={fault.ec:#x} xFSC={fault.fsc:#x} ESR_EL2={fault.esr:#x}",
        )

    slot = fault.slot
    private_on = "arm64-private" in vm.proposals  # has_proposal() without its name check (a known name)
    # "arm64-private": checked before the no-slot branch, as x86's kvm_mmu_faultin_pfn()
    # does, so that a private access is never emulated as MMIO.
    if private_on and fault.is_private != vm.mem_is_private(fault.gfn):
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_mismatch", "proposal arm64-private: access and memory attribute disagree")
    if private_on and slot is None and fault.is_private:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_no_slot", "proposal arm64-private: private access with no memslot")

    # gfn_to_hva_memslot_prot(): an error hva without a slot, writable unless READONLY
    if slot is None or (fault.write and slot.readonly):
        if fault.is_iabt:
            # -ENOEXEC from kvm_handle_guest_abort(), turned into an injected abort at FAR
            return Retry(
                "iabt_injected",
                f"instruction fetch outside RAM: external instruction abort injected ({kernels.sea_injection_name(vm)})",
            )
        if fault.s1ptw:
            return Retry("dabt_injected", "stage-1 walk outside RAM: external data abort injected at FAR")
        if slot is None and fault.cm:
            return Retry("cache_maintenance_skipped", "cache maintenance outside memslots: instruction skipped")
        return io_mem_abort(vcpu, fault)

    if E.is_access_flag_fault(info):
        return handle_access_fault(vcpu, fault)

    has_gmem = slot.has_gmem()
    if private_on and fault.is_private and not has_gmem:
        # "arm64-private", after x86's kvm_mmu_faultin_pfn_gmem() check
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_no_gmem", "proposal arm64-private: private access to a slot without guest_memfd")
    if has_gmem and (kernels.has_gmem_abort(vm) or private_on):
        return gmem_abort(vcpu, fault)
    return user_mem_abort(vcpu, fault)


def host_owns_sea(fault: Arm64Fault) -> bool:
    """Mirrors ``host_owns_sea()`` (7.3) on a CPU with FEAT_RAS and no nested guest: an SEA on
    a table walk (DFSC SEA_TTW, levels -1..3) with S1PTW set hit the host's own stage-2
    tables, so KVM keeps it (injects an SError) rather than exiting."""
    return 0x13 <= fault.fsc <= 0x17 and fault.s1ptw


def kvm_handle_guest_sea(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> FaultinResult:
    """Mirrors ``kvm_handle_guest_sea()``; ``apei_claim_sea()`` decides first.

    The VM setting ``sea`` stands for the host's RAS firmware: ``"claimed"`` -> the host
    handled the error, the guest resumes. ``"unclaimed"`` (default): 6.12/6.18 inject an
    SError (``kvm_inject_vabt()``) and resume; 7.3 does the same unless
    ``KVM_CAP_ARM_SEA_TO_USER`` is enabled and the SEA is not the host's
    (:func:`host_owns_sea`): then ``KVM_EXIT_ARM_SEA`` (``kernels.sea_exits_to_user``), with
    ``arm_sea.esr = ESR & (EC|IL|FnV|EA|CM|WnR|FSC|SET)``, ``gva = FAR`` unless FnV and
    ``gpa`` (flag GPA_VALID) when the IPA is known; KVM_RUN returns 0.
    """
    vm = vcpu.vm
    if vm.settings["sea"] == "claimed":
        return Retry("sea_claimed", "apei_claim_sea() claimed the error; the guest resumes")
    if kernels.sea_exits_to_user(vm) and vm.has_cap(KVM_CAP_ARM_SEA_TO_USER) and not host_owns_sea(fault):
        info = fault.info
        run = vcpu.kvm_run
        run.exit_reason = KVM_EXIT_ARM_SEA
        sea = run.arm_sea
        # EC | IL | FnV | EA | CM | WnR | FSC, and SET ([12:11]) as the guest has FEAT_RAS
        sea.esr = fault.esr & ((0x3F << 26) | (1 << 25) | (1 << 10) | (1 << 9) | (1 << 8) | (1 << 6) | 0x3F | (3 << 11))
        sea.gva = 0 if info.fnv or fault.far is None else fault.far
        sea.flags = 0
        sea.gpa = 0
        if E.fault_safe_to_translate(info):
            sea.flags = KVM_EXIT_ARM_SEA_FLAG_GPA_VALID
            sea.gpa = fault.ipa
        return Exit(0, "sea_exit", f"{info.fsc_name}: unclaimed, KVM_EXIT_ARM_SEA (KVM_CAP_ARM_SEA_TO_USER)")
    return Retry("sea_injected", f"{fault.info.fsc_name}: not claimed by the host, SError injected")


# --- io_mem_abort() -------------------------------------------------------------------------
def io_mem_abort(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> Exit:
    """Mirrors ``io_mem_abort()`` (mmio.c) for an access KVM cannot complete in the kernel.

    ISV=0 (no instruction syndrome: LDP/STP, writeback forms): with
    ``KVM_CAP_ARM_NISV_TO_USER`` enabled, ``KVM_EXIT_ARM_NISV`` with
    ``esr_iss = ESR & (CM | WnR | FSC)`` and the full ``fault_ipa``, KVM_RUN returns 0;
    otherwise -ENOSYS. 7.3 only (``kernels.ldst64b_exits``): a translation, access-flag or
    permission DFSC with ESR[12:11] (LST) set is an LD64B/ST64B*: ``KVM_EXIT_ARM_LDST64B`` with
    ``arm_nisv.esr_iss = ESR & ~FSC``. ISV=1 otherwise: ``KVM_EXIT_MMIO`` with
    ``len = 1 << SAS``, ``is_write = WnR`` and, for a write, the stored value (raw key
    ``data``). In-kernel devices (``kvm_io_bus``) are not modelled, so every access exits.
    """
    run = vcpu.kvm_run
    if not fault.isv:
        if vcpu.vm.has_cap(KVM_CAP_ARM_NISV_TO_USER):
            run.exit_reason = KVM_EXIT_ARM_NISV
            run.arm_nisv.esr_iss = E.nisv_sanitised_iss(fault.esr)
            run.arm_nisv.fault_ipa = fault.gpa
            return Exit(0, "nisv")
        return Exit(-ENOSYS, "nisv_enosys", "Data abort outside memslots with no valid syndrome info")
    if (
        kernels.ldst64b_exits(vcpu.vm)
        and (0x04 <= fault.fsc <= 0x0F or 0x2A <= fault.fsc <= 0x2B)
        and (fault.esr >> 11) & 3
    ):
        run.exit_reason = KVM_EXIT_ARM_LDST64B
        run.arm_nisv.esr_iss = fault.esr & ~0x3F
        run.arm_nisv.fault_ipa = fault.gpa
        return Exit(0, "ldst64b", "LD64B/ST64B* outside memslots (ESR[12:11] set): KVM_EXIT_ARM_LDST64B")
    kvm_prepare_mmio_exit(vcpu, fault.gpa, fault.access_size, bool(fault.wnr), fault.data)  # type: ignore[arg-type]
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
    """Mirrors ``gmem_abort()`` (6.18: Fuad Tabba's guest_memfd mmap series; 7.3
    ``arch/arm64/kvm/mmu.c``): memory from guest_memfd. (6.12 has none: ``kernels.has_gmem_abort``.)

    Always PAGE_SIZE; writable unless the slot is READONLY; executable for exec faults. A
    permission fault maps the page anew on 6.18 and relaxes the leaf on 7.3
    (``kernels.gmem_perm_fault_relaxes``: only adds permissions); the outcome is the same
    ``mapped_gmem`` since a guest_memfd slot is never READONLY. ``kvm_gmem_get_pfn()``
    failing -> ``KVM_EXIT_MEMORY_FAULT`` with that errno (-EHWPOISON, -EFAULT), flags 0
    (the kernel passes ``is_private = false``; with "arm64-private" the PRIVATE flag is set).

    Userfault ("userfault" proposal): KVM Userfault v3 does not hook ``gmem_abort()``; its
    cover letter says the guest_memfd path "would also need userfault handling" once Fuad
    Tabba's series lands. kvmcore models that follow-up by default (VM setting
    ``userfault_gmem="hooked"``: the check sits just before ``kvm_gmem_get_pfn()``);
    ``userfault_gmem="v3"`` reproduces the posted series, where the bit is ignored.

    The exit's fields follow the VM's exit design (docs/designs.md): with v3's helper or the
    compromise, ``gpa = gfn << PAGE_SHIFT`` and PRIVATE for a private access; in upstream mode
    (neither on) the call site's own arguments, as 6.18/7.3 pass them:
    ``kvm_prepare_memory_fault_exit(vcpu, fault_ipa, PAGE_SIZE, write_fault, exec_fault, false)``,
    i.e. the 4K-aligned HPFAR IPA (which differs from ``gfn << PAGE_SHIFT`` with a 16K or 64K
    granule) and never PRIVATE.
    """
    vm = vcpu.vm
    if vm.settings["userfault_gmem"] == "hooked" and kvm_do_userfault(vcpu, fault):
        return Exit(-kvmcore.abi.EFAULT, "userfault")
    try:
        pfn = kvm_gmem_get_pfn(vm, fault.slot, fault.gfn)  # type: ignore[arg-type]
    except KvmError as err:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        if vm.exit_design.helper == "upstream":
            mf = vcpu.kvm_run.memory_fault
            mf.gpa = fault.ipa  # fault_ipa: HPFAR_EL2.FIPA << 12
            mf.flags &= ~kvmcore.abi.KVM_MEMORY_EXIT_FLAG_PRIVATE  # is_private = false
        return Exit(-err.errno, "gmem_error", str(err))
    writable = not fault.slot.readonly  # type: ignore[union-attr]
    exec_ = fault.exec
    if E.is_permission_fault(fault.info) and kernels.gmem_perm_fault_relaxes(vm):
        entry = vm.stage2.lookup(fault.gfn)
        if entry is not None:  # kvm_pgtable_stage2_relax_perms(): permissions are only added
            writable = writable or entry.writable
            exec_ = exec_ or entry.exec
    outcome = "mapped_private" if fault.is_private else "mapped_gmem"
    return Mapped(pfn, writable, vm.page_size, exec_, outcome)


# --- user_mem_abort() -----------------------------------------------------------------------
def perm_fault_granule(fault: Arm64Fault, page_shift: int) -> int:
    """Mirrors ``kvm_vcpu_trap_get_perm_fault_granule()``: the size of the leaf that faulted.

    ``BIT(ARM64_HW_PGTABLE_LEVEL_SHIFT(level))``, with the level from the FSC:
    ``(PAGE_SHIFT - 3) * (4 - level) + 3`` (4K: level 3 -> 4K, 2 -> 2M, 1 -> 1G).
    """
    level = fault.fault_level if fault.fault_level is not None else 3
    return 1 << ((page_shift - 3) * (4 - level) + 3)


def level_shift(page_shift: int, level: int) -> int:
    """``ARM64_HW_PGTABLE_LEVEL_SHIFT(level)``: 4K granule: PMD 21 (level 2), PUD 30 (level 1)."""
    return (page_shift - 3) * (4 - level) + 3


def cont_shifts(page_shift: int) -> tuple[int, int]:
    """``(CONT_PTE_SHIFT, CONT_PMD_SHIFT)`` of a granule (``asm/pgtable-hwdef.h``): 16, 128 or
    32 contiguous PTEs and 16, 32 or 32 contiguous PMDs for 4K, 16K and 64K pages."""
    cont_pte = {12: 4, 14: 7, 16: 5}[page_shift]
    cont_pmd = {12: 4, 14: 5, 16: 5}[page_shift]
    return page_shift + cont_pte, level_shift(page_shift, 2) + cont_pmd


#: Per granule (PAGE_SHIFT 12, 14, 16): (PMD shift, PUD shift, CONT_PTE_SHIFT, CONT_PMD_SHIFT),
#: from :func:`level_shift` and :func:`cont_shifts`, computed once instead of per fault.
_BLOCK_SHIFTS = {
    ps: (level_shift(ps, 2), level_shift(ps, 1), *cont_shifts(ps)) for ps in (12, 14, 16)
}


def memslot_is_logging(slot: kvmcore.Memslot) -> bool:
    """Mirrors ``memslot_is_logging()``: a dirty bitmap and not READONLY (a read-only slot
    that logs dirty pages is not "logging": it keeps its block mappings)."""
    return slot.dirty_bitmap is not None and not slot.readonly


def fault_supports_stage2_huge_mapping(vm: kvmcore.VM, slot: kvmcore.Memslot, hva: int, map_size: int) -> bool:
    """Mirrors ``fault_supports_stage2_huge_mapping()``: PAGE_SIZE always; a block only when
    the memslot's gpa and hva are congruent modulo ``map_size`` and the aligned block lies
    inside the slot's hva range."""
    if map_size == vm.page_size:
        return True
    mask = map_size - 1
    uaddr_start = slot.userspace_addr
    uaddr_end = uaddr_start + (slot.npages << vm.page_shift)  # size = memslot->npages * PAGE_SIZE
    if ((slot.base_gfn << vm.page_shift) & mask) != (uaddr_start & mask):  # gpa_start
        return False
    block = hva & ~mask
    return block >= uaddr_start and block + map_size <= uaddr_end


def get_vma_page_shift(vm: kvmcore.VM, vma: kvmcore.Vma) -> int:
    """Mirrors ``get_vma_page_shift()``: the hugetlbfs page shift, else PAGE_SHIFT (a THP
    VMA is a normal VMA; its blocks come from :func:`transparent_hugepage_adjust`)."""
    if vma.page_size > vm.page_size and not vma.thp:
        return vma.page_size.bit_length() - 1
    return vm.page_shift


def resolve_vma_shift(vm: kvmcore.VM, slot: kvmcore.Memslot, hva: int, vma: kvmcore.Vma, force_pte: bool) -> tuple[int, bool]:
    """The ``switch (vma_shift)`` of ``user_mem_abort()`` (6.12, 6.18) /
    ``kvm_s2_resolve_vma_size()`` (7.3): ``(vma_shift, force_pte)``.

    PUD (4K granule): kept if :func:`fault_supports_stage2_huge_mapping`, else as PMD;
    CONT_PMD -> PMD; PMD: kept if supported, else PAGE_SHIFT with force_pte; CONT_PTE ->
    PAGE_SHIFT with force_pte. Dirty logging or (v3) a userfault slot start at PAGE_SHIFT with
    force_pte. A hugetlbfs size the kernel does not offer is taken as PAGE_SHIFT (the kernel
    WARNs; no such VMA exists on arm64).
    """
    page_shift = vm.page_shift
    if force_pte:
        return page_shift, True
    if vma.page_size <= vm.page_size or vma.thp:
        # get_vma_page_shift() gives PAGE_SHIFT, which is none of the block shifts below
        # (PMD/PUD/CONT_PTE/CONT_PMD are all larger for every granule): the switch's default
        return page_shift, False
    shift = get_vma_page_shift(vm, vma)
    pmd, pud, cont_pte, cont_pmd = _BLOCK_SHIFTS[page_shift]
    if shift == pud and page_shift == 12:
        if fault_supports_stage2_huge_mapping(vm, slot, hva, 1 << pud):
            return pud, False
        shift = pmd
    if shift == cont_pmd:
        shift = pmd
    if shift == pmd:
        if fault_supports_stage2_huge_mapping(vm, slot, hva, 1 << pmd):
            return pmd, False
        return vm.page_shift, True
    if shift == cont_pte:
        return vm.page_shift, True
    return vm.page_shift, False


def transparent_hugepage_adjust(vm: kvmcore.VM, slot: kvmcore.Memslot, hva: int) -> int:
    """Mirrors ``transparent_hugepage_adjust()``: PMD_SIZE when the block fits the memslot
    (:func:`fault_supports_stage2_huge_mapping`) and the host maps the hva with at least a
    PMD (``get_user_mapping_size()``); otherwise PAGE_SIZE. Only PMD-sized THPs."""
    pmd_size = 1 << _BLOCK_SHIFTS[vm.page_shift][0]
    if fault_supports_stage2_huge_mapping(vm, slot, hva, pmd_size):
        if vm.host.mapping_size(hva) >= pmd_size:
            return pmd_size
    return vm.page_size


def user_mem_abort(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> FaultinResult:
    """Mirrors ``user_mem_abort()`` (6.12, 6.18; 7.3 splits it into ``kvm_s2_fault_pin_pfn()``,
    ``kvm_s2_fault_compute_prot()`` and ``kvm_s2_fault_map()`` with the same order).

    1. 6.12 only (``kernels.read_perm_fault_fails``): a permission fault that is neither a
       write nor an exec -> "Unexpected L2 read permission error", bare -EFAULT.
    2. The VMA of the hva: none -> "Failed to find VMA", bare -EFAULT.
    3. ``vma_shift`` (:func:`resolve_vma_shift`): hugetlbfs blocks if the memslot allows them;
       PAGE_SIZE with force_pte under dirty logging (:func:`memslot_is_logging`) or, v3, on
       a KVM_MEM_USERFAULT slot.
    4. ("userfault") ``kvm_do_userfault()``, just before ``__kvm_faultin_pfn()`` (v3).
    5. ``__kvm_faultin_pfn()``: HWPOISON -> ``kvm_send_hwpoison_signal(hva, vma_shift)``
       (SIGBUS BUS_MCEERR_AR, lsb = the shift from step 3: 12 for a THP or a page) and
       "resume"; the run loop then finds the signal pending
       (``xfer_to_guest_mode_handle_work()`` -> ``kvm_handle_signal_exit()``), so KVM_RUN
       returns -EINTR with ``KVM_EXIT_INTR``. Any other error pfn -> bare -EFAULT.
    6. 7.3 only: FSC 0x35 (``kernels.excl_atomic_fault_handled``) -> the abort is injected
       back (``kvm_inject_dabt_excl_atomic()``), resume.
    7. Dirty logging and not a write fault -> map read-only. Exec only for an exec fault.
    8. Not forced to pages and the VMA gave PAGE_SIZE: a permission fault on a larger leaf
       takes that leaf's size; otherwise :func:`transparent_hugepage_adjust`.
    9. A permission fault whose leaf size equals the mapping size relaxes the existing leaf
       (``kvm_pgtable_stage2_relax_perms()``: permissions are only added); otherwise
       ``kvm_pgtable_stage2_map()``.
    """
    vm = vcpu.vm
    slot = fault.slot
    assert slot is not None
    gfn = fault.gfn
    is_perm = E.is_permission_fault(fault.info)
    if is_perm and not fault.write and not fault.exec and kernels.read_perm_fault_fails(vm):
        if vm.exit_design.annotate_efault:
            annotate_efault(vcpu, fault, 0)
        return Exit(-EFAULT, "read_perm_fault", "Unexpected L2 read permission error")

    # one hva and one VMA lookup serve the whole fault, as the kernel's vma_lookup() does
    hva = slot.gfn_to_hva(gfn)
    vma = vm.host.find_vma(hva)
    if vma is None:
        if vm.exit_design.annotate_efault:
            annotate_efault(vcpu, fault, 0)
        return Exit(-EFAULT, "no_vma", f"Failed to find VMA for hva {hva:#x}")
    logging_active = memslot_is_logging(slot)
    # v3 (patch 06): a KVM_MEM_USERFAULT slot forces PAGE_SIZE like dirty logging
    userfault_slot = bool(slot.flags & KVM_MEM_USERFAULT)
    vma_shift, force_pte = resolve_vma_shift(vm, slot, hva, vma, logging_active or userfault_slot)

    if slot.flags & KVM_MEM_USERFAULT and kvm_do_userfault(vcpu, fault):
        if vcpu.kvm_run.exit_reason != KVM_EXIT_MEMORY_FAULT:
            return Exit(-EFAULT, "userfault", "the userfault bitmap could not be read: bare -EFAULT")
        return Exit(-EFAULT, "userfault")

    pfn, writable = kvm_faultin_pfn(vm, slot, gfn, fault.write, hva)
    if pfn == KVM_PFN_ERR_HWPOISON:
        send_sig_mceerr(vcpu, hva, vma_shift)
        ret = kvm_handle_signal_exit(vcpu)
        return Exit(
            ret,
            "hwpoison_sigbus",
            f"kvm_send_hwpoison_signal(): SIGBUS BUS_MCEERR_AR (lsb {vma_shift}) for hva {hva:#x}; "
            "the pending signal ends KVM_RUN with -EINTR (KVM_EXIT_INTR)",
        )
    if is_error_noslot_pfn(pfn):
        if vm.exit_design.annotate_efault:
            annotate_efault(vcpu, fault, 1 << vma_shift)  # vma_pagesize
            return Exit(-EFAULT, "efault", "no usable host mapping (annotate-efault: memory_fault filled)")
        return Exit(-EFAULT, "efault", "no usable host mapping (bare -EFAULT, no memory_fault info)")

    if fault.fsc == FSC_EXCL_ATOMIC and kernels.excl_atomic_fault_handled(vm):
        return Retry("excl_atomic_injected", "unsupported exclusive/atomic access: kvm_inject_dabt_excl_atomic()")

    if logging_active and not fault.write:
        writable = False

    vma_pagesize = 1 << vma_shift
    fault_granule = perm_fault_granule(fault, vm.page_shift) if is_perm else 0
    if vma_pagesize == vm.page_size and not force_pte:
        if is_perm and fault_granule > vm.page_size:
            vma_pagesize = fault_granule
        else:
            vma_pagesize = transparent_hugepage_adjust(vm, slot, hva)

    if is_perm and vma_pagesize == fault_granule:
        entry = vm.stage2.lookup(gfn)
        if entry is not None:
            return Mapped(
                pfn,
                writable or entry.writable,
                vma_pagesize,
                exec=fault.exec or entry.exec,
                outcome="permission_relaxed",
            )
    return Mapped(pfn, writable, vma_pagesize, fault.exec)  # positional: keywords cost more


def annotate_efault(vcpu: kvmcore.VCPU, fault: Arm64Fault, size: int) -> None:
    """The design ``annotate-efault`` in ``user_mem_abort()``: Anish Moorthy's "[PATCH v2 3/3]
    KVM: arm64: Perform memory fault exits when stage-2 handler EFAULTs" (9 Aug 2024) calls
    ``kvm_prepare_memory_fault_exit(vcpu, fault_ipa, size, write_fault, exec_fault, false)``
    before each -EFAULT: ``size`` 0 where it is not known yet ("Failed to find VMA"), the VMA
    page size where it is (``__kvm_faultin_pfn()`` failed). kvmcore runs the VM's exit helper,
    then writes the call site's gpa (``fault_ipa``: the 4K-aligned HPFAR IPA, not
    ``gfn << PAGE_SHIFT``) and size, as the patch's arguments would.
    """
    kvm_prepare_memory_fault_exit(vcpu, fault)
    mf = vcpu.kvm_run.memory_fault
    mf.gpa = fault.ipa
    mf.size = size


__all__ = [
    "FSC_EXCL_ATOMIC",
    "annotate_efault",
    "fault_supports_stage2_huge_mapping",
    "get_vma_page_shift",
    "gmem_abort",
    "handle_access_fault",
    "host_owns_sea",
    "io_mem_abort",
    "kvm_handle_guest_abort",
    "kvm_handle_guest_sea",
    "memslot_is_logging",
    "perm_fault_granule",
    "resolve_vma_shift",
    "transparent_hugepage_adjust",
    "user_mem_abort",
]
