"""x86 fault handling end to end: ``vcpu.handle_fault(raw)`` for every outcome.

Raw registers are written by hand with their bits in a comment (Intel SDM "Exit Qualification
for EPT Violations", AMD APM #NPF error code); expected PFERR words and outcomes come from the
reference's tables (kvm-fault-facts.md 3.2-3.5), never from the code under test.
"""

from __future__ import annotations

import errno

import pytest
from kvmcore_x86 import mmu
from kvmcore_x86.fault import X86Fault

import kvmcore
from kvmcore import abi

EFAULT, EHWPOISON, EINTR = errno.EFAULT, 133, errno.EINTR
MB = 1 << 20
GB = 1 << 30

# Exit qualifications (VMX):
EQ_READ = 0x181  # bit 0 ACC_READ | bit 7 GVA_IS_VALID | bit 8 GVA_TRANSLATED
EQ_WRITE = 0x182  # bit 1 ACC_WRITE | bits 7, 8
EQ_FETCH = 0x184  # bit 2 ACC_INSTR | bits 7, 8
EQ_WRITE_NMI = 0x1182  # EQ_WRITE | bit 12 NMI unblocking
# PFERR words KVM builds (6.18: read -> USER quirk; bits 7+8 -> GUEST_FINAL, bit 32)
PFERR_W_FINAL = 0x1_0000_0002  # WRITE | GUEST_FINAL
PRIVATE = 1 << 49  # PFERR_PRIVATE_ACCESS

# #NPF error codes (SVM):
NPF_WRITE = 0x1_0000_0006  # RW (1) | US (2) | GUEST_FINAL (32)
NPF_READ = 0x1_0000_0004  # US | GUEST_FINAL
NPF_ENC_WRITE = 0x5_0000_0006  # RW | US | GUEST_FINAL | ENC (34)
NPF_RSVD_READ = 0x1_0000_000D  # P (0) | US | RSV (3) | GUEST_FINAL


def make_vcpu(**settings) -> kvmcore.VCPU:
    return kvmcore.VM("x86", **settings).create_vcpu()


def slot(vcpu, gpa=0x10_0000, size=2 * MB, **kw):
    return vcpu.vm.set_user_memory_region(kw.pop("id", 0), gpa, size, **kw)


# --- mapped -------------------------------------------------------------------------------
def test_not_present_write_maps_a_4k_page() -> None:
    vcpu = make_vcpu()
    slot(vcpu)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_1008})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "mapped")
    f = res.fault
    assert isinstance(f, X86Fault)
    assert (f.gfn, f.gpa, f.addr, f.error_code) == (0x101, 0x10_1008, 0x10_1008, PFERR_W_FINAL)
    assert (f.write, f.exec, f.present, f.user, f.rsvd, f.is_private) == (True, False, False, False, False, False)
    assert (f.fault_kind, f.vendor, f.exit_qualification, f.npf_error_code) == ("not_present", "vmx", EQ_WRITE, None)
    assert (f.max_level, f.req_level, f.goal_level, f.is_tdp, f.prefetch) == (3, 1, 1, True, False)
    assert res.mapped.size == 4096 and res.mapped.writable and res.mapped.exec
    entry = vcpu.vm.stage2.lookup(0x101)
    assert entry is not None and entry.writable and entry.exec
    kvmcore.check_fault(f, "x86", X86Fault)


@pytest.mark.parametrize(
    ("kernel", "eq", "error_code", "user"),
    [
        # 0x181 read: 6.12 arch/x86/kvm/vmx/common.h __vmx_handle_ept_violation(): read -> USER,
        # bits 7 and 8 of the exit qualification -> GUEST_FINAL
        ("6.12", EQ_READ, 0x1_0000_0004, True),
        # 6.18 (stable fix d0164c161923): USER (quirk) | GUEST_FINAL
        ("6.18", EQ_READ, 0x1_0000_0004, True),
        # 7.3 common.h: read no longer maps to USER; FINAL only
        ("7.3", EQ_READ, 0x1_0000_0000, False),
        # 0x381 = read | bits 7, 8 | bit 9 GVA_USER: 7.3 takes USER from bit 9 under FINAL
        ("7.3", 0x381, 0x1_0000_0004, True),
        # 0x182 write: WRITE | FINAL on 6.12 and 6.18
        ("6.12", EQ_WRITE, PFERR_W_FINAL, False),
        ("6.18", EQ_WRITE, PFERR_W_FINAL, False),
        # 0x81 = read | bit 7 without bit 8: a paging-structure access -> GUEST_PAGE (bit 33) on 6.18
        ("6.18", 0x81, 0x2_0000_0004, True),
    ],
)
def test_kernel_setting_changes_the_error_code(kernel, eq, error_code, user) -> None:
    vcpu = make_vcpu(kernel=kernel)
    slot(vcpu)
    res = vcpu.handle_fault({"exit_qualification": eq, "gpa": 0x10_0000})
    assert (res.fault.error_code, res.fault.user) == (error_code, user)
    assert res.outcome == "mapped"


def test_mbec_user_exec_bit_sets_present_on_7_2() -> None:
    # 0x41 = bit 0 read | bit 6 PROT_USER_EXEC: PRESENT only when MBEC is on (7.2)
    with_mbec = make_vcpu(kernel="7.3", mbec=True)
    without = make_vcpu(kernel="7.3")
    for vcpu in (with_mbec, without):
        slot(vcpu)
    assert with_mbec.handle_fault({"exit_qualification": 0x41, "gpa": 0x10_0000}).fault.error_code == 0x1
    f = without.handle_fault({"exit_qualification": 0x41, "gpa": 0x10_0000}).fault
    assert (f.error_code, f.present, f.fault_kind) == (0, False, "not_present")


def test_read_only_protection_fault_kinds() -> None:
    vcpu = make_vcpu()
    slot(vcpu)
    # 0x1aa = write | PROT_READ (3) | PROT_EXEC (5) | bits 7, 8: PRESENT | WRITE | FINAL
    f = vcpu.handle_fault({"exit_qualification": 0x1AA, "gpa": 0x10_0000}).fault
    assert (f.error_code, f.fault_kind) == (0x1_0000_0003, "write_protect")
    # 0x19c = fetch | PROT_READ | PROT_WRITE | bits 7, 8: PRESENT | FETCH | FINAL
    f = vcpu.handle_fault({"exit_qualification": 0x19C, "gpa": 0x10_0000}).fault
    assert (f.error_code, f.fault_kind, f.exec) == (0x1_0000_0011, "exec_protect", True)


def test_svm_fault_is_decoded_by_register_or_setting() -> None:
    vcpu = make_vcpu(vendor="svm")
    slot(vcpu)
    res = vcpu.handle_fault({"error_code": NPF_WRITE, "gpa": 0x10_2000})
    f = res.fault
    assert (f.vendor, f.error_code, f.npf_error_code, f.exit_qualification) == ("svm", NPF_WRITE, NPF_WRITE, None)
    assert (f.write, f.user, f.present, res.outcome) == (True, True, False, "mapped")
    # a VMX VM given only error_code decodes it as SVM (the register names the vendor)
    vcpu2 = make_vcpu()
    slot(vcpu2)
    assert vcpu2.handle_fault({"error_code": NPF_READ, "gpa": 0x10_0000}).fault.vendor == "svm"


# --- huge pages ---------------------------------------------------------------------------
def test_2m_aligned_slot_on_2m_host_mapping_maps_2m() -> None:
    vcpu = make_vcpu()
    hva = vcpu.vm.host.mmap(4 * MB, page_size=2 * MB)
    slot(vcpu, 0x4000_0000, 4 * MB, userspace_addr=hva)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x4020_1008})
    f = res.fault
    assert (f.req_level, f.goal_level) == (2, 2)
    assert res.mapped.size == 2 * MB
    assert res.mapped.pfn % 512 == 0 and f.pfn == res.mapped.pfn
    entry = vcpu.vm.stage2.lookup(0x40201)
    assert entry.size == 2 * MB and entry.gfn == 0x40200


def test_unaligned_slot_falls_back_to_4k() -> None:
    vcpu = make_vcpu()
    hva = vcpu.vm.host.mmap(4 * MB, page_size=2 * MB)
    # gpa 1 MiB into a 2 MiB frame while the hva is 2 MiB aligned: not congruent
    slot(vcpu, 0x4010_0000, 4 * MB, userspace_addr=hva)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x4030_0000})
    assert (res.fault.req_level, res.fault.goal_level, res.mapped.size) == (1, 1, 4096)


def test_4k_host_mapping_gives_4k() -> None:
    vcpu = make_vcpu()
    slot(vcpu, 0x4000_0000, 4 * MB)  # fresh 4K-page anonymous memory
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x4000_0000})
    assert (res.fault.req_level, res.mapped.size) == (1, 4096)


def test_1g_mapping() -> None:
    vcpu = make_vcpu()
    hva = vcpu.vm.host.mmap(GB, page_size=GB)
    slot(vcpu, GB, GB, userspace_addr=hva)
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": GB + 0x1234_5678})
    assert (res.fault.req_level, res.fault.goal_level, res.mapped.size) == (3, 3, GB)


def test_userfault_and_dirty_logging_slots_stay_4k() -> None:
    vcpu = make_vcpu()
    hva = vcpu.vm.host.mmap(2 * MB, page_size=2 * MB)
    bitmap = bytearray(64)  # 512 pages -> 8 longs; no bit set
    slot(vcpu, 0x4000_0000, 2 * MB, userspace_addr=hva, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x4000_0000})
    assert (res.outcome, res.fault.req_level, res.fault.goal_level, res.mapped.size) == ("mapped", 1, 1, 4096)

    vcpu2 = make_vcpu()
    hva2 = vcpu2.vm.host.mmap(2 * MB, page_size=2 * MB)
    slot(vcpu2, 0x4000_0000, 2 * MB, userspace_addr=hva2, flags=abi.KVM_MEM_LOG_DIRTY_PAGES)
    res = vcpu2.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x4000_3000})
    assert res.mapped.size == 4096
    assert vcpu2.vm.get_dirty_log(0)[0] == 0x08  # page 3 dirty


def test_nx_huge_pages() -> None:
    vcpu = make_vcpu(nx_huge_pages=True)
    hva = vcpu.vm.host.mmap(2 * MB, page_size=2 * MB)
    slot(vcpu, 0x4000_0000, 2 * MB, userspace_addr=hva)
    # a read: 2M, but make_spte() clears exec on a huge page
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": 0x4000_0000})
    assert (res.mapped.size, res.mapped.exec) == (2 * MB, False)
    # a fetch: huge_page_disallowed -> 4K executable, req_level 2 but goal_level 1
    res = vcpu.handle_fault({"exit_qualification": 0x19C, "gpa": 0x4000_5000})
    f = res.fault
    assert (f.huge_page_disallowed, f.req_level, f.goal_level) == (True, 2, 1)
    assert (res.mapped.size, res.mapped.exec) == (4096, True)


# --- MMIO and emulation -------------------------------------------------------------------
def test_no_slot_write_with_len_is_an_mmio_exit() -> None:
    vcpu = make_vcpu()
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0xFD00_0010, "len": 4, "data": 0x41})
    assert (res.ret, res.exit_reason, res.outcome) == (0, abi.KVM_EXIT_MMIO, "mmio")
    mmio = vcpu.kvm_run.mmio
    assert (mmio.phys_addr, mmio.len, mmio.is_write, bytes(mmio.data)) == (0xFD00_0010, 4, 1, b"\x41" + bytes(7))


def test_no_slot_read_without_len_goes_to_the_emulator() -> None:
    vcpu = make_vcpu()
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": 0xFD00_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "emulate")
    assert "kvm_handle_noslot_fault" in res.detail
    assert vcpu.kvm_run.exit_reason == abi.KVM_EXIT_UNKNOWN


def test_no_slot_fetch_is_left_to_the_emulator() -> None:
    res = make_vcpu().handle_fault({"exit_qualification": EQ_FETCH, "gpa": 0xFD00_0000, "len": 4})
    assert res.outcome == "emulate" and "fetch" in res.detail


def test_ept_misconfig_is_an_mmio_spte() -> None:
    vcpu = make_vcpu()
    # exit reason 49: handle_ept_misconfig() -> kvm_mmu_page_fault(gpa, PFERR_RSVD_MASK)
    res = vcpu.handle_fault({"exit_reason": 49, "gpa": 0xFD00_0004, "len": 2})
    assert (res.fault.error_code, res.fault.rsvd, res.fault.fault_kind) == (0x8, True, "rsvd")
    assert (res.outcome, res.exit_reason, vcpu.kvm_run.mmio.len, vcpu.kvm_run.mmio.is_write) == ("mmio", 6, 2, 0)
    assert "handle_mmio_page_fault" in res.detail


def test_stale_mmio_spte_takes_the_normal_path() -> None:
    vcpu = make_vcpu(vendor="svm")
    slot(vcpu, 0xFD00_0000, 0x1000)
    res = vcpu.handle_fault({"error_code": NPF_RSVD_READ, "gpa": 0xFD00_0000})
    assert res.outcome == "mapped"


def test_rsvd_on_private_is_a_bare_efault() -> None:
    vcpu = make_vcpu()
    res = vcpu.handle_fault({"exit_reason": 49, "gpa": 0xFD00_0000, "private": 1})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, 0, "rsvd_private")


def test_readonly_slot_write_becomes_an_mmio_write() -> None:
    vcpu = make_vcpu()
    slot(vcpu, flags=abi.KVM_MEM_READONLY)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_0008, "len": 8, "data": 0x1122334455667788})
    assert (res.ret, res.exit_reason, res.outcome) == (0, abi.KVM_EXIT_MMIO, "mmio_readonly_slot")
    assert (vcpu.kvm_run.mmio.phys_addr, vcpu.kvm_run.mmio.is_write) == (0x10_0008, 1)
    assert bytes(vcpu.kvm_run.mmio.data) == (0x1122334455667788).to_bytes(8, "little")
    # without the access width: the emulator's job
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_0008})
    assert res.outcome == "emulate" and "KVM_MEM_READONLY" in res.detail
    # a read maps read-only
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": 0x10_0008})
    assert (res.outcome, res.mapped.writable) == ("mapped", False)


@pytest.mark.parametrize(("settings", "raw"), [
    ({"vm_type": "tdx"}, {"exit_qualification": EQ_WRITE, "gpa": (1 << 51) | 0xFD00_0000, "len": 4}),
    ({"vm_type": "snp"}, {"error_code": NPF_WRITE, "gpa": 0xFD00_0000, "len": 4}),
])
def test_protected_state_vms_cannot_emulate(settings, raw) -> None:
    res = make_vcpu(**settings).handle_fault(raw)
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "emulate_retry")


def test_emulation_on_a_private_fault_is_a_memory_fault_exit(monkeypatch) -> None:
    # No modelled path asks to emulate a private fault; kvm_mmu_do_page_fault() guards anyway.
    vcpu = make_vcpu()
    fault = vcpu.vm.arch.decode_fault(vcpu, {"exit_qualification": EQ_WRITE, "gpa": 0x10_0000, "private": 1})
    monkeypatch.setattr(mmu, "kvm_tdp_page_fault", lambda vcpu, fault: mmu.Emulate("readonly_slot"))
    r = mmu.kvm_mmu_do_page_fault(vcpu, fault)
    assert (r.ret, r.outcome) == (-EFAULT, "private_emulation")
    assert vcpu.kvm_run.exit_reason == abi.KVM_EXIT_MEMORY_FAULT
    assert vcpu.kvm_run.memory_fault.flags == abi.KVM_MEMORY_EXIT_FLAG_PRIVATE


# --- private memory -----------------------------------------------------------------------
def test_private_shared_mismatch_both_ways() -> None:
    # private memory needs a VM type with it: kvm_arch_has_private_mem() (arch/x86/kvm/x86.c)
    vcpu = make_vcpu(vm_type="sw_protected")
    slot(vcpu)
    # private access (raw key) to a shared gfn
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_1000, "private": 1})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, abi.KVM_EXIT_MEMORY_FAULT, "private_mismatch")
    mf = vcpu.kvm_run.memory_fault
    assert (mf.flags, mf.gpa, mf.size) == (abi.KVM_MEMORY_EXIT_FLAG_PRIVATE, 0x10_1000, 0x1000)
    # shared access to a private gfn: on SNP the #NPF error code has no ENC bit
    vcpu = make_vcpu(vm_type="snp")
    slot(vcpu)
    vcpu.vm.set_memory_attributes(0x10_2000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"error_code": NPF_WRITE, "gpa": 0x10_2abc})
    assert res.outcome == "private_mismatch" and vcpu.kvm_run.memory_fault.flags == 0
    assert vcpu.kvm_run.memory_fault.gpa == 0x10_2000


def test_private_without_slot_and_without_gmem() -> None:
    vcpu = make_vcpu(vm_type="sw_protected")
    vcpu.vm.set_memory_attributes(0xE000_0000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0xE000_0000, "private": 1, "len": 4})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, 39, "private_no_slot")
    assert vcpu.kvm_run.memory_fault.flags == abi.KVM_MEMORY_EXIT_FLAG_PRIVATE
    slot(vcpu)
    vcpu.vm.set_memory_attributes(0x10_0000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_0000, "private": 1})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, 39, "private_no_gmem")


def gmem_vm(**settings):
    settings.setdefault("vm_type", "sw_protected")  # a VM type with private memory
    vcpu = make_vcpu(**settings)
    vm = vcpu.vm
    fd = vm.create_guest_memfd(2 * MB)
    slot(vcpu, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(0x10_0000, 2 * MB, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    return vcpu, fd


def test_private_fault_maps_guest_memfd_at_4k() -> None:
    vcpu, fd = gmem_vm()
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_3000, "private": 1})
    f = res.fault
    assert (res.outcome, f.is_private, f.error_code) == ("mapped_private", True, PFERR_W_FINAL | PRIVATE)
    assert (f.max_level, f.goal_level, res.mapped.size, res.mapped.writable) == (1, 1, 4096, True)
    assert res.mapped.pfn == vcpu.vm.guest_memfd(fd).pfn_base + 3


def test_gmem_hwpoison_is_a_memory_fault_exit_with_ehwpoison() -> None:
    vcpu, fd = gmem_vm()
    vcpu.vm.guest_memfd(fd).memory_failure(0x5000)
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": 0x10_5000, "private": 1})
    assert (res.ret, res.exit_reason, res.outcome) == (-EHWPOISON, 39, "gmem_error")
    assert vcpu.kvm_run.memory_fault.flags == abi.KVM_MEMORY_EXIT_FLAG_PRIVATE


def test_sw_protected_vm_takes_private_from_attributes() -> None:
    vcpu, _ = gmem_vm(vm_type="sw_protected")
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_0000})  # no raw private
    assert (res.fault.is_private, res.outcome) == (True, "mapped_private")
    # RSVD faults are shared-only: the attribute is not applied
    res = vcpu.handle_fault({"exit_reason": 49, "gpa": 0x10_1000})
    assert res.fault.is_private is False


def test_snp_enc_bit_makes_the_fault_private() -> None:
    vcpu, _ = gmem_vm(vm_type="snp")
    assert vcpu.vm.settings["vendor"] == "svm"
    res = vcpu.handle_fault({"error_code": NPF_ENC_WRITE, "gpa": 0x10_0000})
    assert res.fault.error_code == NPF_ENC_WRITE | PRIVATE
    assert (res.fault.is_private, res.outcome) == (True, "mapped_private")
    # the same access without ENC is shared: a mismatch on a private gfn
    res = vcpu.handle_fault({"error_code": NPF_WRITE, "gpa": 0x10_1000})
    assert (res.fault.is_private, res.outcome) == (False, "private_mismatch")
    # ENC outside SNP does not make a fault private (SEV/SEV-ES on SNP hardware)
    svm = make_vcpu(vendor="svm")
    slot(svm)
    assert svm.handle_fault({"error_code": NPF_ENC_WRITE, "gpa": 0x10_0000}).fault.is_private is False


def test_tdx_shared_bit_decides_private_and_is_stripped() -> None:
    vcpu, _ = gmem_vm(vm_type="tdx")
    # private GPA (bit 51 clear): exit qualification forced to ACC_WRITE, even for a read
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": 0x10_4000})
    f = res.fault
    assert (f.is_private, f.write, f.exit_qualification, f.error_code) == (True, True, 0x2, 0x2 | PRIVATE)
    assert res.outcome == "mapped_private"
    # shared GPA (bit 51 set): the gfn is stripped, the attributes say private -> mismatch
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": (1 << 51) | 0x10_4000})
    assert (res.fault.gfn, res.fault.addr, res.fault.is_private) == (0x104, (1 << 51) | 0x10_4000, False)
    assert res.outcome == "private_mismatch" and vcpu.kvm_run.memory_fault.gpa == 0x10_4000
    # a fetch from shared TD memory is KVM_BUG_ON
    with pytest.raises(kvmcore.DecodeError, match="KVM_BUG_ON"):
        vcpu.handle_fault({"exit_qualification": EQ_FETCH, "gpa": (1 << 51) | 0x10_4000})


def test_tdx_48_bit_gpaw_moves_the_shared_bit() -> None:
    vcpu = make_vcpu(vm_type="tdx", tdx_gpaw=48)
    slot(vcpu)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": (1 << 47) | 0x10_0000})
    assert (res.fault.gfn, res.fault.is_private, res.outcome) == (0x100, False, "mapped")


def test_6_18_gmem_only_slot_serves_shared_faults_from_guest_memfd() -> None:
    # include/linux/kvm_host.h:kvm_memslot_is_gmem_only() and arch/x86/kvm/mmu/mmu.c:
    # __kvm_mmu_faultin_pfn() "if (fault->is_private || kvm_memslot_is_gmem_only(slot))" (6.18, 7.3)
    for kernel, outcome in (("6.18", "mapped_gmem"), ("7.3", "mapped_gmem")):
        vcpu = make_vcpu(kernel=kernel, vm_type="sw_protected")
        fd = vcpu.vm.create_guest_memfd(2 * MB, flags=abi.GUEST_MEMFD_FLAG_MMAP)
        slot(vcpu, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
        res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_0000})
        assert (res.outcome, res.fault.is_private) == (outcome, False)


# --- userfault ------------------------------------------------------------------------------
def test_userfault_exit_with_syndrome() -> None:
    vcpu = make_vcpu()
    bitmap = bytearray(64)
    slot(vcpu, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    kvmcore.set_userfault_bits(bitmap, [2])
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE_NMI, "gpa": 0x10_2010, "gla": 0x7FFF_0010})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, 39, "userfault")
    mf = vcpu.kvm_run.memory_fault
    assert (mf.flags, mf.gpa, mf.size) == (abi.KVM_MEMORY_EXIT_FLAG_USERFAULT, 0x10_2000, 0x1000)
    syn = vcpu.kvm_run.syndrome
    assert (syn.flags, syn.arch) == (abi.KVMCORE_SYNDROME_VALID, abi.KVMCORE_SYNDROME_ARCH_X86_VMX)
    assert list(syn.syndrome) == [EQ_WRITE, PFERR_W_FINAL, 0x7FFF_0010, 0]  # bit 12 cleared
    # a neighbouring page without its bit maps normally
    assert vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_3000}).outcome == "mapped"


def test_mismatch_and_no_slot_win_over_userfault() -> None:
    vcpu = make_vcpu()
    bitmap = bytearray(64)
    slot(vcpu, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    kvmcore.set_userfault_bits(bitmap, range(512))
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_0000, "private": 1})
    assert res.outcome == "private_mismatch"
    assert vcpu.kvm_run.memory_fault.flags == abi.KVM_MEMORY_EXIT_FLAG_PRIVATE  # no USERFAULT bit
    assert vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0xFD00_0000, "len": 4}).outcome == "mmio"


def test_private_userfault_flags() -> None:
    vcpu = make_vcpu(vm_type="sw_protected")
    fd = vcpu.vm.create_guest_memfd(2 * MB)
    bitmap = bytearray(64)
    slot(vcpu, flags=abi.KVM_MEM_GUEST_MEMFD | abi.KVM_MEM_USERFAULT, guest_memfd=fd, userfault_bitmap=bitmap)
    vcpu.vm.set_memory_attributes(0x10_0000, 2 * MB, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    kvmcore.set_userfault_bits(bitmap, [0])
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": 0x10_0000})
    assert res.outcome == "userfault"
    assert vcpu.kvm_run.memory_fault.flags == 0x18  # PRIVATE | USERFAULT


# --- error pfns -------------------------------------------------------------------------------
def test_hwpoison_sends_sigbus_and_ends_kvm_run_with_eintr() -> None:
    vcpu = make_vcpu()
    s = slot(vcpu)
    hva = s.userspace_addr + 0x4000
    vcpu.vm.host.memory_failure(hva)
    res = vcpu.handle_fault({"exit_qualification": EQ_READ, "gpa": 0x10_4abc})
    assert (res.ret, res.exit_reason, res.outcome) == (-EINTR, abi.KVM_EXIT_INTR, "hwpoison_sigbus")
    assert res.signal == kvmcore.Signal("SIGBUS", "BUS_MCEERR_AR", hva, 12)
    assert vcpu.kvm_run.syndrome.flags == 0  # no memory fault exit was prepared


def test_other_error_pfn_is_a_bare_efault() -> None:
    vcpu = make_vcpu()
    hva = vcpu.vm.host.mmap(0x1000, prot=kvmcore.PROT_READ)
    slot(vcpu, 0x10_0000, 0x1000, userspace_addr=hva)
    res = vcpu.handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0x10_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, 0, "efault")
    assert vcpu.kvm_run.exit_reason == abi.KVM_EXIT_UNKNOWN
    assert vcpu.kvm_run.memory_fault.flags == 0 and vcpu.kvm_run.memory_fault.gpa == 0


# --- the memory fault exit wrapper --------------------------------------------------------------
def test_wrapper_fills_svm_words_and_leaves_common_fields() -> None:
    vcpu = make_vcpu(vm_type="snp")
    slot(vcpu)
    vcpu.vm.set_memory_attributes(0x10_0000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"error_code": NPF_WRITE, "gpa": 0x10_0123})
    assert res.outcome == "private_mismatch"
    mf = vcpu.kvm_run.memory_fault
    assert (mf.flags, mf.gpa, mf.size) == (0, 0x10_0000, 0x1000)
    syn = vcpu.kvm_run.syndrome
    assert (syn.flags, syn.arch, list(syn.syndrome)) == (1, 3, [NPF_WRITE, NPF_WRITE, 0, 0])


def test_wrapper_returns_the_common_result_unchanged() -> None:
    vcpu = make_vcpu(kernel="6.18")
    fault = vcpu.vm.arch.decode_fault(vcpu, {"exit_qualification": 0x81, "gpa": 0x10_0000, "gla": 0x1000})
    common = kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
    assert common == kvmcore.MemoryFault(0, 0x10_0000, 0x1000)
    # 0x81: bit 7 without bit 8 -> GLA valid; PFERR USER | GUEST_PAGE (6.18)
    assert list(vcpu.kvm_run.syndrome.syndrome) == [0x81, 0x2_0000_0004, 0x1000, 0]


def test_gla_is_kept_only_when_bit_7_says_valid() -> None:
    vcpu = make_vcpu()
    f = vcpu.vm.arch.decode_fault(vcpu, {"exit_qualification": 0x2, "gpa": 0x1000, "gla": 0xdead000})
    assert f.gla is None


# --- decode errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "match"), [
    ({"exit_qualification": EQ_WRITE}, "gpa: missing"),
    ({"vendor": "vmx", "gpa": 0}, "exit_qualification: missing"),
    ({"vendor": "svm", "gpa": 0}, "error_code: missing"),
    ({"vendor": "arm", "gpa": 0}, "vendor='arm'"),
    ({"exit_qualification": EQ_WRITE, "gpa": 1 << 52}, "gpa=0x10000000000000"),
    ({"exit_qualification": "0x182", "gpa": 0}, "exit_qualification must be an int"),
    ({"exit_qualification": 1 << 17 | EQ_WRITE, "gpa": 0}, "reserved bits"),
    ({"exit_qualification": 0x180, "gpa": 0}, "no access bit"),
    ({"error_code": 1 << 40, "gpa": 0}, "reserved #NPF"),
    ({"exit_qualification": EQ_WRITE, "error_code": 2, "gpa": 0}, "ambiguous"),
    ({"exit_qualification": EQ_WRITE, "gpa": 0, "esr": 1}, "unknown raw key\\(s\\) 'esr': x86 takes the registers vendor, exit_qualification"),
    ({"exit_qualification": EQ_WRITE, "gpa": 0, "len": 3}, "len=3"),
    ({"exit_qualification": EQ_WRITE, "gpa": 0, "private": 2}, "private=2"),
    ({"exit_reason": 30, "gpa": 0}, "exit_reason=30"),
])
def test_decode_errors_name_the_register(raw, match) -> None:
    with pytest.raises(kvmcore.DecodeError, match=match):
        make_vcpu().handle_fault(raw)


def test_vendor_must_fit_the_vm_type() -> None:
    with pytest.raises(kvmcore.DecodeError, match="AMD"):
        make_vcpu(vm_type="snp").handle_fault({"exit_qualification": EQ_WRITE, "gpa": 0})
    with pytest.raises(kvmcore.DecodeError, match="Intel"):
        make_vcpu(vm_type="tdx").handle_fault({"error_code": NPF_WRITE, "gpa": 0})
