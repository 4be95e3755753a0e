"""x86 TDP fault-path behaviour that no other test pinned (found by mutating ``mmu.py``).

Each test fails under a specific change to ``kvmcore_x86/mmu.py`` that left the rest of the
suite green; expected values come from the kernel source named in the test
(``/work/kernel-source/{6.12,7.3}/arch/x86/kvm``, ``include/linux/kvm_host.h``), worked by hand.
"""

from __future__ import annotations

import errno

import pytest
from kvmcore_x86 import mmu

import kvmcore
from kvmcore import abi

MB = 1 << 20
RAM = 0x4000_0000  # 1 GiB: 2 MiB and 1 GiB aligned
EQ_READ = 0x181  # bit 0 ACC_READ | bit 7 GVA_IS_VALID | bit 8 GVA_TRANSLATED
EQ_WRITE = 0x182  # bit 1 ACC_WRITE | bits 7, 8


# --- lpage_info: the huge pages at a slot's ends ----------------------------------------------
@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_no_huge_page_over_the_tail_of_a_slot(kernel) -> None:
    # arch/x86/kvm/x86.c:kvm_alloc_memslot_metadata(): for each level, "if ((slot->base_gfn +
    # npages) & (KVM_PAGES_PER_HPAGE(level) - 1)) linfo[lpages - 1].disallow_lpage = 1": a
    # huge page the slot does not cover whole is never mapped. A 3 MiB slot at 1 GiB backed by
    # 2 MiB host pages: the 2 MiB page at RAM is whole (2 MiB leaf); the one at RAM + 2 MiB
    # has only 1 MiB in the slot (4K leaf, whatever the host's page size).
    vm = kvmcore.VM("x86", kernel=kernel)
    hva = vm.host.mmap(4 * MB, page_size=2 * MB)
    vm.set_user_memory_region(0, RAM, 3 * MB, hva)
    vcpu = vm.create_vcpu()
    assert vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x1000}).mapped.size == 2 * MB
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 2 * MB + 0x1000})
    assert (res.outcome, res.mapped.size) == ("mapped", 4096)


def test_no_huge_page_over_the_head_of_a_slot() -> None:
    # kvm_alloc_memslot_metadata(): "if (slot->base_gfn & (KVM_PAGES_PER_HPAGE(level) - 1))
    # linfo[0].disallow_lpage = 1". A slot at RAM + 1 MiB (hva RAM-congruent: hva + 1 MiB) of
    # 3 MiB: the 2 MiB page at RAM is cut at its head (4K leaf); RAM + 2 MiB..4 MiB is whole.
    vm = kvmcore.VM("x86", kernel="7.3")
    hva = vm.host.mmap(4 * MB, page_size=2 * MB)
    vm.set_user_memory_region(0, RAM + MB, 3 * MB, hva + MB)
    vcpu = vm.create_vcpu()
    assert vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + MB + 0x1000}).mapped.size == 4096
    assert vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 2 * MB}).mapped.size == 2 * MB


def test_fetch_maps_a_huge_page_without_the_nx_mitigation() -> None:
    # 7.3 arch/x86/kvm/mmu/mmu.c:kvm_mmu_hugepage_adjust(): "fault->huge_page_disallowed =
    # fault->exec && fault->nx_huge_page_workaround_enabled;" with kvm.nx_huge_pages off a
    # fetch (exit qualification 0x184: ACC_INSTR | bits 7, 8, not present) gets the 2 MiB leaf
    # like any access, and make_spte() keeps it executable.
    vm = kvmcore.VM("x86", kernel="7.3", nx_huge_pages=False)
    hva = vm.host.mmap(2 * MB, page_size=2 * MB)
    vm.set_user_memory_region(0, RAM, 2 * MB, hva)
    res = vm.create_vcpu().handle_fault({"exit_qualification": 0x184, "gpa": RAM + 0x5000})
    f = res.fault
    assert (f.huge_page_disallowed, f.req_level, f.goal_level) == (False, 2, 2)
    assert (res.mapped.size, res.mapped.exec) == (2 * MB, True)
    # "fault->pfn &= ~mask" with mask = KVM_PAGES_PER_HPAGE(goal_level) - 1 = 511: the leaf
    # starts at the host pfn of the 2 MiB page's head, not of the faulting 4K page (head + 5)
    head_pfn, _ = vm.host.hva_to_pfn(hva, False)
    assert res.mapped.pfn == head_pfn
    assert vm.host.hva_to_pfn(hva + 0x5000, False)[0] == head_pfn + 5


# --- __kvm_mmu_faultin_pfn() ----------------------------------------------------------------
def test_shared_fault_in_a_gmem_only_slot_takes_the_guest_memfd_pfn() -> None:
    # 7.3 arch/x86/kvm/mmu/mmu.c:__kvm_mmu_faultin_pfn(): "if (fault->is_private ||
    # kvm_memslot_is_gmem_only(fault->slot)) return kvm_mmu_faultin_pfn_gmem(vcpu, fault);":
    # the pfn is kvm_gmem_get_pfn()'s, page 3 of the file -> pfn_base + 3, not the host page
    # behind the slot's userspace_addr; map_writable = !READONLY.
    vm = kvmcore.VM("x86", kernel="7.3", vm_type="sw_protected")
    fd = vm.create_guest_memfd(2 * MB, flags=abi.GUEST_MEMFD_FLAG_MMAP)
    vm.set_user_memory_region(0, RAM, 2 * MB, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    res = vm.create_vcpu().handle_fault({"exit_qualification": EQ_WRITE, "gpa": RAM + 0x3000})
    assert (res.outcome, res.mapped.pfn, res.mapped.writable, res.mapped.size) == (
        "mapped_gmem", vm.guest_memfd(fd).pfn_base + 3, True, 4096)


def test_userfault_with_an_unreadable_bitmap_is_a_bare_efault() -> None:
    # KVM Userfault v3 kvm_do_userfault(): a bitmap that cannot be read returns true with no
    # memory fault exit prepared, so __kvm_mmu_faultin_pfn() returns -EFAULT and kvm_run is
    # left as KVM_RUN set it (KVM_EXIT_UNKNOWN). A readable, marked bit is KVM_EXIT_MEMORY_FAULT.
    vm = kvmcore.VM("x86")
    bitmap = bytearray(b"\xff" * 64)
    vm.set_user_memory_region(0, RAM, 2 * MB, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x1000})
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EFAULT, abi.KVM_EXIT_MEMORY_FAULT, "userfault")
    assert "could not be read" not in (res.detail or "")
    vm.memslots.by_id[0].userfault_bitmap.release()
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": RAM + 0x1000})
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EFAULT, abi.KVM_EXIT_UNKNOWN, "userfault")
    assert "could not be read" in res.detail


# --- kvm_handle_error_pfn() ---------------------------------------------------------------
def test_sigpending_pfn_is_kvm_exit_intr() -> None:
    # 7.3 arch/x86/kvm/mmu/mmu.c:kvm_handle_error_pfn(): "if (fault->pfn ==
    # KVM_PFN_ERR_SIGPENDING) { kvm_handle_signal_exit(vcpu); return -EINTR; }" and
    # kvm_handle_signal_exit() sets exit_reason = KVM_EXIT_INTR (10). kvmcore's host memory
    # never yields this pfn (no FOLL_INTERRUPTIBLE wait), so the function is called directly.
    vm = kvmcore.VM("x86")
    vm.set_user_memory_region(0, RAM, 2 * MB)
    vcpu = vm.create_vcpu()
    fault = vm.arch.decode_fault(vcpu, {"exit_qualification": EQ_READ, "gpa": RAM})
    fault.slot = vm.memslots.by_id[0]
    fault.pfn = kvmcore.KVM_PFN_ERR_SIGPENDING
    res = mmu.kvm_handle_error_pfn(vcpu, fault)
    assert (res.ret, res.outcome, vcpu.kvm_run.exit_reason) == (-errno.EINTR, "signal_pending", 10)


# --- kvm_mmu_faultin_pfn(): the mismatch message ----------------------------------------------
def test_private_mismatch_says_which_way() -> None:
    # kvm_mmu_faultin_pfn(): "fault->is_private != kvm_mem_is_private(kvm, fault->gfn)" in
    # either direction; the detail names the access and what the attributes say. A private
    # access (raw key) to a shared gfn on a SW-protected VM; a shared one on SNP, whose #NPF
    # error code 0x100000006 (RW | US | GUEST_FINAL) has no ENC bit, to a private gfn.
    vm = kvmcore.VM("x86", vm_type="sw_protected")
    vm.set_user_memory_region(0, RAM, 2 * MB)
    res = vm.create_vcpu().handle_fault({"exit_qualification": EQ_WRITE, "gpa": RAM + 0x1000, "private": 1})
    assert (res.outcome, res.detail) == ("private_mismatch", "private access to a gfn whose attributes say shared")
    vm = kvmcore.VM("x86", vm_type="snp")
    vm.set_user_memory_region(0, RAM, 2 * MB)
    vm.set_memory_attributes(RAM + 0x2000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vm.create_vcpu().handle_fault({"error_code": 0x1_0000_0006, "gpa": RAM + 0x2000})
    assert (res.outcome, res.detail) == ("private_mismatch", "shared access to a gfn whose attributes say private")


# --- the exit designs' x86 parts ------------------------------------------------------------
@pytest.mark.parametrize(("access", "flags"), [("read", 0x11), ("write", 0x12), ("exec", 0x14)])
def test_arch_hook_rwx_flags_from_the_pferr_word(access, flags) -> None:
    # The design arch-hook + rwx-flags: x86's kvm_arch_prepare_memory_fault_exit() takes the
    # access from the PFERR word KVM built: PFERR_WRITE_MASK -> WRITE, PFERR_FETCH_MASK -> EXEC,
    # else READ (Sean, 14 Jun 2023: "R = BIT(0), W = BIT(1), X = BIT(2)"), with USERFAULT 0x10.
    vm = kvmcore.VM("x86", proposals=("userfault", "arch-hook", "rwx-flags"))
    bitmap = bytearray(b"\xff" * 64)
    vm.set_user_memory_region(0, RAM, 2 * MB, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    vcpu = vm.create_vcpu()
    raw = vm.arch.encode_fault(vcpu, kvmcore.Access(RAM + 0x1008, access))
    res = vcpu.handle_fault(raw)
    mf = vcpu.kvm_run.memory_fault
    assert (res.ret, res.outcome, mf.flags, mf.gpa, mf.size) == (-errno.EFAULT, "userfault", flags, RAM + 0x1000, 0x1000)


def test_vmx_syndrome_without_a_linear_address() -> None:
    # kvmcore's syndrome for VMX (docs/syndrome.md): [2] is the guest linear address only when
    # one is known; an exit qualification of 0x2 (a write, bit 7 clear: no linear address)
    # leaves [2] = 0. [0] = 0x2, [1] = the PFERR word: WRITE (0x2) only, no GUEST_FINAL
    # without bit 8 (6.18 common.h).
    vm = kvmcore.VM("x86", kernel="6.18")
    bitmap = bytearray(b"\xff" * 64)
    vm.set_user_memory_region(0, RAM, 2 * MB, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"exit_qualification": 0x2, "gpa": RAM + 0x1010})
    assert res.outcome == "userfault"
    syn = vcpu.kvm_run.syndrome
    assert (syn.arch, list(syn.syndrome)) == (abi.KVMCORE_SYNDROME_ARCH_X86_VMX, [0x2, 0x2, 0, 0])
