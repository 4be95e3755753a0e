"""Where the arm64 stage-2 abort path differs between the kernels kvmcore models.

One function per concern; each reads ``vm.kernel`` and its docstring names the source of
every version (6.12 and 7.3 read from their ``arch/arm64/kvm/mmu.c`` / ``mmio.c``; 6.18 from
the 2025 patch mails that were merged for it, as cited). :mod:`kvmcore_arm64.abort` asks
these and nothing else about the version. ``docs/arch/arm64.md`` ("Per kernel version")
lists the same differences.
"""

from __future__ import annotations

import kvmcore


def read_perm_fault_fails(vm: kvmcore.VM) -> bool:
    """A stage-2 permission fault that is neither a write nor an exec: does KVM fail it?

    * 6.12: ``user_mem_abort()`` prints "Unexpected L2 read permission error" and returns
      -EFAULT (KVM_RUN fails, ``exit_reason`` untouched).
    * 6.18, 7.3: ``kvm_handle_guest_abort()`` has ``VM_WARN_ON_ONCE(perm fault && !write &&
      !exec)`` and goes on to ``user_mem_abort()``/``gmem_abort()`` (the kvm_err was dropped
      in 6.17 with the "struct kvm_page_fault" rework).
    """
    return vm.kernel < (6, 18)


def has_gmem_abort(vm: kvmcore.VM) -> bool:
    """Does ``kvm_handle_guest_abort()`` send faults on a guest_memfd slot to ``gmem_abort()``?

    * 6.12: no: arm64 selects no ``KVM_PRIVATE_MEM`` (``arch/arm64/kvm/Kconfig``), so
      ``check_memory_region_flags()`` refuses ``KVM_MEM_GUEST_MEMFD`` and no such slot exists
      upstream (only kvmcore's "arm64-private" proposal makes one).
    * 6.18: yes, "KVM: arm64: Handle guest_memfd-backed guest page faults" (Fuad Tabba,
      guest_memfd mmap series v14-v17, Jul 2025): ``if (kvm_slot_has_gmem(memslot))
      gmem_abort()``.
    * 7.3: yes (``arch/arm64/kvm/mmu.c: kvm_handle_guest_abort()``).
    """
    return vm.kernel >= (6, 18)


def gmem_perm_fault_relaxes(vm: kvmcore.VM) -> bool:
    """A permission fault in ``gmem_abort()``: relax the leaf, or map a new page?

    * 6.18: ``gmem_abort()`` always calls ``kvm_pgtable_stage2_map(..., PAGE_SIZE, ...)``
      (the v14 patch), replacing the leaf with the new permissions.
    * 7.3: ``if (perm_fault) kvm_pgtable_stage2_relax_perms()`` (``arch/arm64/kvm/mmu.c:
      gmem_abort()``): permissions are only added.
    """
    return vm.kernel >= (7, 0)


def sea_exits_to_user(vm: kvmcore.VM) -> bool:
    """Can a synchronous external abort become ``KVM_EXIT_ARM_SEA``?

    * 6.12: ``kvm_handle_guest_sea(addr, esr)`` (``asm/kvm_ras.h``) is only
      ``apei_claim_sea()``; unclaimed -> ``kvm_inject_vabt()``.
    * 6.18: the same (the exit is "KVM: arm64: VM exit to userspace to handle SEA", Jiaqi Yan,
      merged for 6.19).
    * 7.3: ``kvm_handle_guest_sea()`` (``arch/arm64/kvm/mmu.c``): unclaimed, not
      ``host_owns_sea()`` and ``KVM_CAP_ARM_SEA_TO_USER`` enabled -> ``KVM_EXIT_ARM_SEA``.
    """
    return vm.kernel >= (6, 19)


def ldst64b_exits(vm: kvmcore.VM) -> bool:
    """Is an LD64B/ST64B* outside memslots (ISV=1, ESR[12:11] != 0) ``KVM_EXIT_ARM_LDST64B``?

    * 6.12, 6.18: no, ``io_mem_abort()`` has no such case: it is an ordinary MMIO exit.
    * 7.3: ``io_mem_abort()`` (``arch/arm64/kvm/mmio.c``): for DFSC 0b000100-0b001111 or
      0b101010-0b101011 with ESR[12:11] set, ``KVM_EXIT_ARM_LDST64B`` with
      ``arm_nisv.esr_iss = esr & ~FSC`` ("KVM: arm64: Add exit to userspace on {LD,ST}64B*
      outside of memslots", merged for 7.0).
    """
    return vm.kernel >= (7, 0)


def excl_atomic_fault_handled(vm: kvmcore.VM) -> bool:
    """Is DFSC 0x35 (unsupported exclusive or atomic access) a supported stage-2 fault?

    * 6.12, 6.18: no: "Unsupported FSC", -EFAULT (``kvm_handle_guest_abort()``).
    * 7.3: ``esr_fsc_is_excl_atomic_fault()`` passes the FSC check; on a memslot
      ``kvm_s2_fault_compute_prot()`` injects it back (``kvm_inject_dabt_excl_atomic()``)
      ("KVM: arm64: Handle DABT caused by LS64* instructions on unsupported memory", 7.0).
    """
    return vm.kernel >= (7, 0)


def sea_injection_name(vm: kvmcore.VM) -> str:
    """What the injected external abort is called (the behaviour is the same).

    6.12: ``kvm_inject_pabt()`` / ``kvm_inject_dabt()``; 6.18, 7.3: ``kvm_inject_sea_iabt()``
    / ``kvm_inject_sea_dabt()`` (renamed in 6.17).
    """
    return "kvm_inject_sea" if vm.kernel >= (6, 17) else "kvm_inject_pabt/dabt"


__all__ = [
    "excl_atomic_fault_handled",
    "gmem_perm_fault_relaxes",
    "has_gmem_abort",
    "ldst64b_exits",
    "read_perm_fault_fails",
    "sea_exits_to_user",
    "sea_injection_name",
]
