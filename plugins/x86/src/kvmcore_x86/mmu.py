"""The x86 TDP fault path after decode: ``kvm_mmu_page_fault()`` down to the SPTE.

Functions are named after, and ordered as, ``arch/x86/kvm/mmu/mmu.c`` (6.18, with KVM
Userfault v3's ``kvm_do_userfault()`` at the top of ``__kvm_mmu_faultin_pfn()``)::

    kvm_mmu_page_fault                 RSVD -> handle_mmio_page_fault; EMULATE -> emulator
      kvm_mmu_do_page_fault            EMULATE on a private fault -> memory fault exit
        kvm_tdp_page_fault             (page-track and fast_page_fault() not modelled)
          kvm_mmu_faultin_pfn          private/shared mismatch; no memslot
            __kvm_mmu_faultin_pfn      userfault; guest_memfd or host memory
            kvm_handle_error_pfn       SIGPENDING, RO_FAULT, HWPOISON, other errors
          kvm_tdp_mmu_map              kvm_mmu_hugepage_adjust; MMIO SPTE or leaf SPTE

The kernel's ``RET_PF_CONTINUE`` is ``None`` here, ``RET_PF_EMULATE`` an ``Emulate`` value,
and every way the fault ends is a named ``kvmcore.Mapped``/``Retry``/``Exit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import kvmcore
from kvmcore import (
    KVM_PFN_ERR_HWPOISON,
    KVM_PFN_ERR_RO_FAULT,
    KVM_PFN_ERR_SIGPENDING,
    KVM_PFN_NOSLOT,
    Exit,
    KvmError,
    Mapped,
    Retry,
    is_error_noslot_pfn,
    is_error_pfn,
    kvm_do_userfault,
    kvm_faultin_pfn,
    kvm_gmem_get_pfn,
    kvm_prepare_memory_fault_exit,
    kvm_prepare_mmio_exit,
    send_sig_mceerr,
)
from kvmcore.abi import (
    EFAULT,
    EINTR,
    GUEST_MEMFD_FLAG_MMAP,
    KVM_EXIT_INTR,
    KVM_EXIT_MEMORY_FAULT,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_EXIT_FLAG_EXEC,
    KVM_MEMORY_EXIT_FLAG_PRIVATE,
    KVM_MEMORY_EXIT_FLAG_READ,
    KVM_MEMORY_EXIT_FLAG_WRITE,
    KVMCORE_SYNDROME_ARCH_X86_SVM,
    KVMCORE_SYNDROME_ARCH_X86_VMX,
    KVMCORE_SYNDROME_VALID,
)
from kvmcore_x86.fault import (
    LEVEL_SIZE,
    PG_LEVEL_1G,
    PG_LEVEL_2M,
    PG_LEVEL_4K,
    X86Fault,
)
from kvmcore_x86.pferr import PFERR_FETCH_MASK, PFERR_PRIVATE_ACCESS, PFERR_WRITE_MASK
from kvmcore_x86.vmx import INTR_INFO_UNBLOCK_NMI

#: Every outcome this path names (``docs/arch/x86.md`` lists each with its kernel counterpart).
OUTCOMES = (
    "mapped", "mapped_private", "mapped_gmem", "mmio", "mmio_readonly_slot", "emulate",
    "emulate_retry", "private_mismatch", "private_no_slot", "userfault", "private_no_gmem",
    "gmem_error", "private_emulation", "hwpoison_sigbus", "signal_pending", "efault", "rsvd_private",
)  # fmt: skip

#: VM types whose guest state KVM cannot read, so it cannot emulate an instruction:
#: ``check_emulate_instruction()`` answers X86EMUL_RETRY_INSTR (TDX: vt_; SEV-ES/SNP: svm_).
PROTECTED_STATE_VM_TYPES = ("snp", "tdx")


@dataclass(frozen=True, slots=True)
class Emulate:
    """``RET_PF_EMULATE``: the fault leaves the MMU for ``x86_emulate_instruction()``.

    ``why`` is ``"no_slot"`` (MMIO SPTE just installed), ``"mmio_spte"`` (a cached MMIO SPTE
    hit, RSVD fault) or ``"readonly_slot"`` (a write to a KVM_MEM_READONLY slot).
    """

    why: str


_EMULATE_DETAIL = {
    "no_slot": "no memslot: kvm_handle_noslot_fault() cached the MMIO info and an MMIO SPTE was installed",
    "mmio_spte": "RSVD fault on a cached MMIO SPTE (handle_mmio_page_fault)",
    "readonly_slot": "write to a KVM_MEM_READONLY slot (KVM_PFN_ERR_RO_FAULT)",
}
_MMIO_OUTCOME = {"no_slot": "mmio", "mmio_spte": "mmio", "readonly_slot": "mmio_readonly_slot"}


def kvm_mmu_page_fault(vcpu: kvmcore.VCPU, fault: X86Fault) -> kvmcore.FaultinResult:
    """Mirrors ``kvm_mmu_page_fault()`` after the error code is final (see ``decode.py``).

    A reserved-bit fault (EPT misconfiguration, #NPF RSV) is an MMIO SPTE: with PRIVATE too it
    is ``WARN_ON_ONCE`` and a bare -EFAULT (``"rsvd_private"``); otherwise
    ``handle_mmio_page_fault()`` decides between emulation and the normal path.
    ``RET_PF_EMULATE`` goes to ``x86_emulate_instruction()``.
    """
    if fault.rsvd:
        if fault.is_private:
            return Exit(-EFAULT, "rsvd_private", "WARN_ON_ONCE: reserved-bit fault on private memory (emulated MMIO is shared-only)")
        r = handle_mmio_page_fault(vcpu, fault)
        if r is not None:
            return x86_emulate_instruction(vcpu, fault, r)
    r2 = kvm_mmu_do_page_fault(vcpu, fault)
    if isinstance(r2, Emulate):
        return x86_emulate_instruction(vcpu, fault, r2)
    return r2


def handle_mmio_page_fault(vcpu: kvmcore.VCPU, fault: X86Fault) -> Emulate | None:
    """Mirrors ``handle_mmio_page_fault()`` for a direct MMU.

    kvmcore keeps no MMIO SPTEs, so it infers one: with no memslot at the gfn the SPTE KVM
    installed for it is current -> ``RET_PF_EMULATE``. With a memslot there now, the SPTE's
    memslot generation is stale (``check_mmio_spte()`` fails) -> ``RET_PF_INVALID``: ``None``,
    the normal fault path runs.
    """
    if fault.slot is None:
        return Emulate("mmio_spte")
    return None


def kvm_mmu_do_page_fault(vcpu: kvmcore.VCPU, fault: X86Fault) -> kvmcore.FaultinResult | Emulate:
    """Mirrors ``kvm_mmu_do_page_fault()``: run the TDP handler; emulation requested for a
    private fault is "unexpected emulation request on private memory": memory fault exit,
    -EFAULT (``"private_emulation"``)."""
    r = kvm_tdp_page_fault(vcpu, fault)
    if isinstance(r, Emulate) and fault.is_private:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_emulation", f"unexpected emulation request on private memory ({r.why})")
    return r


def kvm_tdp_page_fault(vcpu: kvmcore.VCPU, fault: X86Fault) -> kvmcore.FaultinResult | Emulate:
    """Mirrors ``kvm_tdp_page_fault()`` -> ``kvm_tdp_mmu_page_fault()``: faultin, then map.

    Not modelled: the page-track write-protect check, ``fast_page_fault()``, the MTRR level
    cap and the ``is_page_fault_stale()`` retry.
    """
    r = kvm_mmu_faultin_pfn(vcpu, fault)
    if r is not None:
        return r
    return kvm_tdp_mmu_map(vcpu, fault)


def kvm_mmu_faultin_pfn(vcpu: kvmcore.VCPU, fault: X86Fault) -> kvmcore.FaultinResult | Emulate | None:
    """Mirrors ``kvm_mmu_faultin_pfn()``, in its order:

    1. ``fault->is_private != kvm_mem_is_private(gfn)``: memory fault exit, -EFAULT
       (``"private_mismatch"``); userspace converts the range and retries;
    2. no memslot: ``kvm_handle_noslot_fault()``;
    3. ``__kvm_mmu_faultin_pfn()``;
    4. an error pfn: ``kvm_handle_error_pfn()``.

    (KVM_MEMSLOT_INVALID, the APIC-access page and the mmu-notifier retry are not modelled.)
    """
    vm = vcpu.vm
    if fault.is_private != vm.mem_is_private(fault.gfn):
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(
            -EFAULT,
            "private_mismatch",
            f"{'private' if fault.is_private else 'shared'} access to a gfn whose attributes say "
            f"{'shared' if fault.is_private else 'private'}",
        )
    if fault.slot is None:
        return kvm_handle_noslot_fault(vcpu, fault)
    r = __kvm_mmu_faultin_pfn(vcpu, fault)
    if r is not None:
        return r
    if is_error_pfn(fault.pfn):
        return kvm_handle_error_pfn(vcpu, fault)
    return None


def kvm_handle_noslot_fault(vcpu: kvmcore.VCPU, fault: X86Fault) -> Exit | None:
    """Mirrors ``kvm_handle_noslot_fault()``.

    Private: memory fault exit, -EFAULT (``"private_no_slot"``). Shared: cache the MMIO info,
    ``pfn = KVM_PFN_NOSLOT`` and continue; ``kvm_tdp_mmu_map()`` installs an MMIO SPTE and
    returns ``RET_PF_EMULATE``. (The direct ``RET_PF_EMULATE`` when MMIO caching is off or the
    gfn is above host MAXPHYADDR ends the same way here.)
    """
    if fault.is_private:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_no_slot", "private access to a gfn with no memslot")
    fault.slot = None
    fault.pfn = KVM_PFN_NOSLOT
    fault.map_writable = False
    return None


def kvm_memslot_is_gmem_only(vm: kvmcore.VM, slot: kvmcore.Memslot) -> bool:
    """Mirrors ``kvm_memslot_is_gmem_only()``: the slot's guest_memfd was created with
    ``GUEST_MEMFD_FLAG_MMAP`` (``INIT_SHARED`` in 7.x), so shared faults are served from it too.

    Version gate: 6.12 has no such slots (``__kvm_faultin_pfn()`` sends only private faults to
    guest_memfd); 6.18 and 7.3 do (``kvm_memslot_is_gmem_only()`` in ``include/linux/kvm_host.h``,
    used by ``__kvm_mmu_faultin_pfn()`` and ``kvm_mmu_max_mapping_level()``).
    """
    return slot.gmem is not None and vm.kernel >= (6, 18) and bool(slot.gmem.flags & GUEST_MEMFD_FLAG_MMAP)


def __kvm_mmu_faultin_pfn(vcpu: kvmcore.VCPU, fault: X86Fault) -> kvmcore.FaultinResult | None:
    """Mirrors ``__kvm_mmu_faultin_pfn()`` (KVM Userfault v3).

    1. ``kvm_do_userfault()``: -EFAULT (``"userfault"``), with a memory fault exit flagged
       USERFAULT, or bare when the bitmap cannot be read;
    2. private, or (6.18+) a gmem-only slot: ``kvm_mmu_faultin_pfn_gmem()``;
    3. shared: ``__kvm_faultin_pfn()`` (``kvm_faultin_pfn``) fills ``pfn`` and
       ``map_writable``; async #PF and FOLL_INTERRUPTIBLE retries are not modelled.
    """
    vm = vcpu.vm
    slot = fault.slot
    assert slot is not None
    if slot.flags & KVM_MEM_USERFAULT and kvm_do_userfault(vcpu, fault):
        if vcpu.kvm_run.exit_reason == KVM_EXIT_MEMORY_FAULT:
            return Exit(-EFAULT, "userfault")
        return Exit(-EFAULT, "userfault", "the userfault bitmap could not be read: bare -EFAULT")
    if fault.is_private or kvm_memslot_is_gmem_only(vm, slot):
        return kvm_mmu_faultin_pfn_gmem(vcpu, fault)
    fault.pfn, fault.map_writable = kvm_faultin_pfn(vm, slot, fault.gfn, fault.write)
    return None


def kvm_mmu_faultin_pfn_gmem(vcpu: kvmcore.VCPU, fault: X86Fault) -> Exit | None:
    """Mirrors ``kvm_mmu_faultin_pfn_private()`` (6.16-6.17) / ``kvm_mmu_faultin_pfn_gmem()`` (6.18).

    A slot without guest_memfd: memory fault exit, -EFAULT (``"private_no_gmem"``). A
    ``kvm_gmem_get_pfn()`` error: memory fault exit with its errno, e.g. -EHWPOISON
    (``"gmem_error"``). Otherwise ``map_writable = !READONLY`` and ``max_level`` from the
    folio order: kvmcore's guest_memfd has no huge folios, so 4K.
    """
    vm = vcpu.vm
    slot = fault.slot
    assert slot is not None
    if not slot.has_gmem():
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-EFAULT, "private_no_gmem", f"slot {slot.id} has no guest_memfd")
    try:
        fault.pfn = kvm_gmem_get_pfn(vm, slot, fault.gfn)
    except KvmError as err:
        kvm_prepare_memory_fault_exit(vcpu, fault)
        return Exit(-err.errno, "gmem_error", str(err))
    fault.map_writable = not slot.readonly
    fault.max_level = PG_LEVEL_4K  # kvm_max_level_for_order(0)
    return None


def kvm_handle_error_pfn(vcpu: kvmcore.VCPU, fault: X86Fault) -> kvmcore.FaultinResult | Emulate:
    """Mirrors ``kvm_handle_error_pfn()`` (6.18).

    * ``KVM_PFN_ERR_SIGPENDING``: ``kvm_handle_signal_exit()``: KVM_EXIT_INTR, -EINTR
      (``"signal_pending"``).
    * ``KVM_PFN_ERR_RO_FAULT`` (write to a READONLY slot): ``RET_PF_EMULATE`` without caching
      MMIO info; the emulator's write finds no writable RAM and becomes an MMIO write.
    * ``KVM_PFN_ERR_HWPOISON``: ``kvm_send_hwpoison_signal()`` = ``send_sig_mceerr(BUS_MCEERR_AR,
      hva, PAGE_SHIFT)`` and ``RET_PF_RETRY``. The vCPU does not re-enter: the run loop sees the
      pending SIGBUS (``kvm_handle_signal_exit()``), so KVM_RUN returns -EINTR with
      ``exit_reason = KVM_EXIT_INTR`` and no memory fault exit. kvmcore reports that end
      (``"hwpoison_sigbus"``) rather than the intermediate retry.
    * Anything else (no VMA, no permission): a bare -EFAULT (``"efault"``), ``kvm_run`` not
      annotated: ``exit_reason`` stays KVM_EXIT_UNKNOWN.
    """
    pfn = fault.pfn
    if pfn == KVM_PFN_ERR_SIGPENDING:
        vcpu.kvm_run.exit_reason = KVM_EXIT_INTR
        return Exit(-EINTR, "signal_pending")
    if pfn == KVM_PFN_ERR_RO_FAULT:
        return Emulate("readonly_slot")
    if pfn == KVM_PFN_ERR_HWPOISON:
        slot = fault.slot
        assert slot is not None
        hva = slot.gfn_to_hva(fault.gfn)
        send_sig_mceerr(vcpu, hva, vcpu.vm.page_shift)
        vcpu.kvm_run.exit_reason = KVM_EXIT_INTR
        return Exit(
            -EINTR,
            "hwpoison_sigbus",
            f"SIGBUS (BUS_MCEERR_AR) for hva {hva:#x}; RET_PF_RETRY, then the pending signal ends KVM_RUN",
        )
    return Exit(-EFAULT, "efault", "no usable host mapping (bare -EFAULT, no memory_fault info)")


def kvm_arch_has_private_mem(vm: kvmcore.VM) -> bool:
    """Mirrors x86 ``kvm_arch_has_private_mem()``: every VM type but the default one."""
    return bool(vm.settings["vm_type"] != "default")


def lpage_disallowed(vm: kvmcore.VM, slot: kvmcore.Memslot, gfn: int, size: int) -> bool:
    """Mirrors ``lpage_info_slot(gfn, slot, level)->disallow_lpage`` for a leaf of ``size``.

    Set by ``kvm_alloc_memslot_metadata()`` when the slot's gfn and hva are not congruent
    modulo the huge page, and for the huge pages at the slot's head and tail that the slot
    does not cover whole; and, on VMs with private memory, ``KVM_LPAGE_MIXED_FLAG``
    (``kvm_arch_post_set_memory_attributes()`` / ``hugepage_has_attrs()``) when the gfns of the
    huge page do not all have the same memory attributes: no shared huge page over a private
    gfn, and no private one over a shared gfn. The same in 6.12, 6.18 and 7.3.
    """
    pages = size >> vm.page_shift
    if (slot.base_gfn ^ (slot.userspace_addr >> vm.page_shift)) & (pages - 1):
        return True
    head = gfn & ~(pages - 1)
    if head < slot.base_gfn or head + pages > slot.end_gfn:
        return True
    return kvm_arch_has_private_mem(vm) and not vm.attributes.uniform(head, head + pages)


def kvm_mmu_max_mapping_level(vcpu: kvmcore.VCPU, fault: X86Fault) -> int:
    """Mirrors ``kvm_mmu_max_mapping_level()`` (6.18, 7.3; ``__kvm_mmu_max_mapping_level()`` in 6.12).

    The largest level up to ``fault->max_level`` whose ``lpage_info`` allows it
    (:func:`lpage_disallowed`); then a private fault, or (6.18+) any fault on a gmem-only slot,
    is capped by guest_memfd (``kvm_gmem_max_mapping_level()``: the folio order, always 4K in
    kvmcore, which has no huge folios), and a shared one by the host's own mapping
    (``host_pfn_mapping_level()``). 6.12 returns the ``lpage_info`` level for a private fault
    without looking further, which ends the same way since its ``max_level`` is already the
    folio's (``kvm_max_private_mapping_level()``).
    """
    vm = vcpu.vm
    slot = fault.slot
    assert slot is not None
    level = PG_LEVEL_4K
    for candidate in (PG_LEVEL_1G, PG_LEVEL_2M):
        if candidate <= fault.max_level and not lpage_disallowed(vm, slot, fault.gfn, LEVEL_SIZE[candidate]):
            level = candidate
            break
    if level == PG_LEVEL_4K:
        return PG_LEVEL_4K
    if fault.is_private or kvm_memslot_is_gmem_only(vm, slot):
        return min(level, fault.max_level)
    host_size = vm.host.mapping_size(slot.gfn_to_hva(fault.gfn))
    host_level = PG_LEVEL_1G if host_size >= LEVEL_SIZE[PG_LEVEL_1G] else PG_LEVEL_2M if host_size >= LEVEL_SIZE[PG_LEVEL_2M] else PG_LEVEL_4K
    return min(level, host_level)


def kvm_mmu_hugepage_adjust(vcpu: kvmcore.VCPU, fault: X86Fault) -> None:
    """Mirrors ``kvm_mmu_hugepage_adjust()``: fill ``req_level`` and ``goal_level``.

    ``huge_page_disallowed`` for an exec fault with the NX-hugepage mitigation on. No huge page
    when ``max_level`` is 4K (guest_memfd), the pfn is an error/noslot pfn, the slot tracks
    dirty pages (``kvm_slot_dirty_track_enabled()``: the flag, so a READONLY slot that logs
    dirty pages maps 4K too), or (KVM Userfault v3, "userfault") it is a KVM_MEM_USERFAULT
    slot. Otherwise ``req_level`` is :func:`kvm_mmu_max_mapping_level` and ``goal_level``
    follows unless huge pages are disallowed; ``pfn`` is aligned down to the huge page.
    """
    fault.huge_page_disallowed = fault.exec and fault.nx_huge_page_workaround_enabled
    if fault.max_level == PG_LEVEL_4K or is_error_noslot_pfn(fault.pfn):
        return
    slot = fault.slot
    assert slot is not None
    if slot.flags & (KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_USERFAULT):
        return
    fault.req_level = kvm_mmu_max_mapping_level(vcpu, fault)
    if fault.req_level == PG_LEVEL_4K or fault.huge_page_disallowed:
        return
    fault.goal_level = fault.req_level
    fault.pfn &= ~((LEVEL_SIZE[fault.goal_level] >> vcpu.vm.page_shift) - 1)


def kvm_tdp_mmu_map(vcpu: kvmcore.VCPU, fault: X86Fault) -> Mapped | Emulate:
    """Mirrors ``kvm_tdp_mmu_map()`` and ``tdp_mmu_map_handle_target_level()``.

    A noslot pfn gets an MMIO SPTE (``make_mmio_spte()``) and ``RET_PF_EMULATE``. Otherwise a
    leaf at ``goal_level``: writable per ``map_writable``, executable (EPT/NPT map ACC_ALL)
    except a huge page under the NX-hugepage mitigation (``make_spte()`` clears exec).
    Outcomes: ``"mapped"`` (host memory), ``"mapped_private"`` (guest_memfd, private),
    ``"mapped_gmem"`` (guest_memfd, shared, gmem-only slot).
    """
    kvm_mmu_hugepage_adjust(vcpu, fault)
    if fault.pfn == KVM_PFN_NOSLOT:
        return Emulate("no_slot")
    slot = fault.slot
    if fault.is_private:
        outcome = "mapped_private"
    elif slot is not None and kvm_memslot_is_gmem_only(vcpu.vm, slot):
        outcome = "mapped_gmem"
    else:
        outcome = "mapped"
    huge = fault.goal_level > PG_LEVEL_4K
    # pfn, writable, size, exec, outcome (positional: keywords cost more)
    return Mapped(
        fault.pfn,
        fault.map_writable,
        LEVEL_SIZE[fault.goal_level],
        not (huge and fault.nx_huge_page_workaround_enabled),
        outcome,
    )


def x86_emulate_instruction(vcpu: kvmcore.VCPU, fault: X86Fault, emulate: Emulate) -> kvmcore.FaultinResult:
    """The part of ``x86_emulate_instruction()`` a page fault reaches, as far as kvmcore models it.

    * TDX and SNP: KVM cannot read guest state, ``check_emulate_instruction()`` says
      X86EMUL_RETRY_INSTR and the guest resumes (``"emulate_retry"``). For MMIO the installed
      MMIO SPTE then raises #VE (TDX) / #VC (SEV-ES/SNP) in the guest, whose handler asks for
      MMIO with a TDVMCALL / the GHCB.
    * An instruction fetch, or an access whose width the raw input did not give (``len``): the
      fault leaves the page-fault path for the instruction emulator, ``Retry("emulate")``.
    * Otherwise the emulated access has no in-kernel device: ``KVM_EXIT_MMIO`` at the faulting
      gpa with ``len`` and, for a write, ``data`` (``"mmio"``, or ``"mmio_readonly_slot"``).
    """
    detail = _EMULATE_DETAIL[emulate.why]
    if vcpu.vm.settings["vm_type"] in PROTECTED_STATE_VM_TYPES:
        return Retry("emulate_retry", f"{detail}; guest state is protected, X86EMUL_RETRY_INSTR")
    if fault.exec:
        return Retry("emulate", f"{detail}; instruction fetch: the emulator cannot fetch from MMIO")
    if fault.mmio_len is None:
        return Retry("emulate", f"{detail}; access width unknown (raw 'len' not given): left to the emulator")
    kvm_prepare_mmio_exit(vcpu, fault.gpa, fault.mmio_len, fault.write, fault.mmio_data)
    return Exit(0, _MMIO_OUTCOME[emulate.why], detail)


def memory_fault_flags(vcpu: kvmcore.VCPU, fault: X86Fault) -> int:
    """What x86's ``kvm_arch_prepare_memory_fault_exit()`` ORs into ``memory_fault.flags``
    (the design ``arch-hook``): PRIVATE for ``PFERR_PRIVATE_ACCESS`` (Sean: "the x86 hook adds
    PRIVATE") and, with ``rwx-flags``, the access from the PFERR word KVM built: WRITE for
    ``PFERR_WRITE_MASK``, EXEC for ``PFERR_FETCH_MASK``, READ otherwise."""
    error_code = fault.error_code
    flags = KVM_MEMORY_EXIT_FLAG_PRIVATE if error_code & PFERR_PRIVATE_ACCESS else 0
    if vcpu.vm.exit_design.rwx:
        if error_code & PFERR_WRITE_MASK:
            flags |= KVM_MEMORY_EXIT_FLAG_WRITE
        elif error_code & PFERR_FETCH_MASK:
            flags |= KVM_MEMORY_EXIT_FLAG_EXEC
        else:
            flags |= KVM_MEMORY_EXIT_FLAG_READ
    return flags


def fill_syndrome(vcpu: kvmcore.VCPU, fault: X86Fault) -> None:
    """kvmcore's syndrome extension for x86 (``docs/syndrome.md``), after the common helper ran.

    VMX (arch 2): ``[0]`` the exit qualification KVM used with bit 12 (NMI unblocking, vCPU
    event state, not a property of the access) cleared, 0 for an EPT misconfiguration;
    ``[1]`` the PFERR word; ``[2]`` the guest linear address when bit 7 says it is valid.
    SVM (arch 3): ``[0]`` EXITINFO1 as hardware reported it; ``[1]`` the PFERR word.
    """
    syndrome = vcpu.kvm_run.syndrome
    words = syndrome.syndrome
    if fault.vendor == "vmx":
        syndrome.arch = KVMCORE_SYNDROME_ARCH_X86_VMX
        words[0] = (fault.exit_qualification or 0) & ~INTR_INFO_UNBLOCK_NMI
        words[1] = fault.error_code
        words[2] = fault.gla if fault.gla is not None else 0
    else:
        syndrome.arch = KVMCORE_SYNDROME_ARCH_X86_SVM
        words[0] = fault.npf_error_code or 0
        words[1] = fault.error_code
        words[2] = 0
    words[3] = 0
    syndrome.flags = KVMCORE_SYNDROME_VALID


__all__ = [
    "OUTCOMES",
    "PROTECTED_STATE_VM_TYPES",
    "Emulate",
    "fill_syndrome",
    "memory_fault_flags",
    "handle_mmio_page_fault",
    "kvm_handle_error_pfn",
    "kvm_handle_noslot_fault",
    "lpage_disallowed",
    "kvm_memslot_is_gmem_only",
    "kvm_mmu_do_page_fault",
    "kvm_mmu_faultin_pfn",
    "kvm_arch_has_private_mem",
    "kvm_mmu_faultin_pfn_gmem",
    "kvm_mmu_hugepage_adjust",
    "kvm_mmu_max_mapping_level",
    "kvm_mmu_page_fault",
    "kvm_tdp_mmu_map",
    "kvm_tdp_page_fault",
    "x86_emulate_instruction",
]
