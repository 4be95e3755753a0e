"""The arm64 fault path (kvm_handle_guest_abort / io_mem_abort / user_mem_abort / gmem_abort):
one test or more per outcome, expected values from the project reference (sections 1.3, 1.6,
2.3, 4) and the Arm ARM, worked by hand in the comments.

ESR bits used below (ESR_EL2 = ISS2[55:32] | EC[31:26] | IL[25] | ISS[24:0]):

    EC 0x24 (DABT_LOW) << 26 = 0x90000000      EC 0x20 (IABT_LOW) << 26 = 0x80000000
    IL  = 0x02000000   ISV = 0x01000000   SAS=0/1/2/3 = 0x0/0x00400000/0x00800000/0x00C00000
    SRT = n << 16      SF  = 0x8000       FnV = 0x400   EA = 0x200   CM = 0x100
    S1PTW = 0x80       WnR = 0x40         FSC: 0x06/0x07 translation L2/L3, 0x0B access
    flag L3, 0x0E/0x0F permission L2/L3, 0x10 SEA, 0x14 SEA on walk L0, 0x21 alignment,
    0x00 address size L0, 0x2A translation L-2
    HPFAR_EL2 = (ipa >> 12) << 4 (FIPA [47:4] = IPA[55:12])
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore.abi import (
    KVM_CAP_ARM_NISV_TO_USER,
    KVM_EXIT_ARM_NISV,
    KVM_EXIT_INTR,
    KVM_EXIT_MEMORY_FAULT,
    KVM_EXIT_MMIO,
    KVM_EXIT_UNKNOWN,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVMCORE_SYNDROME_ARCH_ARM64,
    KVMCORE_SYNDROME_VALID,
)

MiB = 1 << 20
GiB = 1 << 30
EFAULT = errno.EFAULT  # 14
ENOSYS = errno.ENOSYS  # 38
EHWPOISON = 133  # asm-generic; Python's errno module lacks it
RAM = 0x4000_0000  # slot 0: 4 MiB of RAM at 1 GiB

# 0x93C08007: DABT_LOW IL ISV SAS=3 SF SRT=0 WnR=0 FSC=0x07 -> 64-bit LDR x0, translation L3
READ8 = 0x93C08007
# 0x93810047: DABT_LOW IL ISV SAS=2 SRT=1 WnR FSC=0x07 -> 32-bit STR w1, translation L3
WRITE4 = 0x93810047
# 0x9381004F: same store, FSC=0x0F -> permission fault L3
WRITE4_PERM = 0x9381004F
# 0x82000007: IABT_LOW IL IFSC=0x07 -> instruction fetch, translation L3
FETCH = 0x82000007
# 0x8200000F: IABT_LOW IL IFSC=0x0F -> instruction fetch, permission fault L3 (XN at stage 2)
FETCH_PERM = 0x8200000F


def memory_fault(vcpu: kvmcore.VCPU) -> tuple[int, int, int, int]:
    run = vcpu.kvm_run
    return run.exit_reason, run.memory_fault.flags, run.memory_fault.gpa, run.memory_fault.size


def syndrome(vcpu: kvmcore.VCPU) -> tuple[int, int, int, int, int, int]:
    s = vcpu.kvm_run.syndrome
    return s.flags, s.arch, s.syndrome[0], s.syndrome[1], s.syndrome[2], s.syndrome[3]


@pytest.fixture
def vm() -> kvmcore.VM:
    return kvmcore.VM("arm64")


@pytest.fixture
def vcpu(vm: kvmcore.VM) -> kvmcore.VCPU:
    return vm.create_vcpu()


@pytest.fixture
def ram(vm: kvmcore.VM) -> kvmcore.Memslot:
    return vm.set_user_memory_region(0, RAM, 4 * MiB)


# --- decode ---------------------------------------------------------------------------------
def test_decode_fields(vcpu, ram) -> None:
    # far 0xffff80008000a004: FAR[11:0] = 0x004; hpfar 0x400010 -> ipa 0x40001000
    res = vcpu.handle_fault({"esr": WRITE4, "far": 0xFFFF_8000_8000_A004, "hpfar": 0x40_0010})
    f = res.fault
    assert (f.gfn, f.write, f.exec, f.is_private, f.slot) == (0x40001, True, False, False, ram)
    assert (f.esr, f.ec, f.fsc, f.fault_kind, f.fault_level) == (WRITE4, 0x24, 0x07, "translation", 3)
    assert (f.isv, f.wnr, f.cm, f.s1ptw, f.is_iabt) == (True, True, False, False, False)
    assert (f.access_size, f.srt) == (4, 1)
    assert (f.ipa, f.gpa, f.far, f.hpfar, f.hpfar_trusted) == (
        0x4000_1000, 0x4000_1004, 0xFFFF_8000_8000_A004, 0x40_0010, True)
    assert f.info.ec_name == "DABT_LOW"
    kvmcore.check_fault(f, "arm64", type(f))  # the KVMCORE_DEBUG contract check


def test_decode_instruction_abort_and_s1ptw(vcpu) -> None:
    f = vcpu.vm.arch.decode_fault(vcpu, {"esr": FETCH, "far": 0x1234, "hpfar": 0x10})
    # IABT: exec, never a write; ISV/WnR/CM undefined (None); gpa = 0x1000 | 0x234
    assert (f.exec, f.write, f.is_iabt, f.isv, f.wnr, f.cm, f.access_size, f.gpa) == (
        True, False, True, None, None, None, None, 0x1234)
    # 0x9200008F: DABT S1PTW=1 permission L3 -> a write (the walker's AF/DBM update), not exec
    f = vcpu.vm.arch.decode_fault(vcpu, {"esr": 0x9200008F, "hpfar": 0x10})
    assert (f.write, f.exec, f.s1ptw, f.far, f.gpa) == (True, False, True, None, 0x1000)
    # 0x920000C7 = S1PTW | WnR | FSC 0x07 (translation): with S1PTW only a permission fault
    # is a write, whatever WnR says
    f = vcpu.vm.arch.decode_fault(vcpu, {"esr": 0x920000C7, "hpfar": 0x10})
    assert (f.write, f.wnr) == (False, True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"far": 0, "hpfar": 0x10}, r"^missing register\(s\) esr: "),
        ({"esr": READ8, "far": 0}, r"^missing register\(s\) hpfar: "),
        ({"esr": 0x5A000000, "hpfar": 0x10}, r"^esr=0x5a000000: EC 0x16 \(HVC64\) is not an abort$"),
        ({"esr": 0x96000045, "hpfar": 0x10}, r"EC 0x25 \(DABT_CUR\) is an abort taken from the current EL"),
        ({"esr": READ8, "hpfar": 0x10, "hpfar_el2": 1}, r"^unknown raw key\(s\) 'hpfar_el2'"),
        ({"esr": READ8, "hpfar": 0x10, "private": 2}, r"^private=2: expected 0 \(shared\) or 1 \(private\)$"),
        ({"esr": READ8, "hpfar": 0xF}, r"^hpfar=0xf: RES0 bits set"),
        ({"esr": -1, "hpfar": 0x10}, r"^esr=-1: not a 64-bit register value$"),
    ],
)
def test_hook_decode_fault_errors(vcpu, raw, message) -> None:
    with pytest.raises(kvmcore.DecodeError, match=message):
        vcpu.handle_fault(raw)


# --- SEA, IPA range, FSC filter -----------------------------------------------------------
@pytest.mark.parametrize("esr", [0x92000010, 0x92000014, 0x82000010])
def test_sea_injected_or_claimed(esr) -> None:
    # 0x92000010 DABT SEA not on a walk; 0x92000014 SEA on walk L0; 0x82000010 IABT SEA
    vcpu = kvmcore.VM("arm64").create_vcpu()
    res = vcpu.handle_fault({"esr": esr, "hpfar": 0x40_0010})
    assert (res.ret, res.exit_reason, res.outcome, res.resumed) == (0, None, "sea_injected", True)
    vcpu = kvmcore.VM("arm64", sea="claimed").create_vcpu()
    res = vcpu.handle_fault({"esr": esr, "hpfar": 0x40_0010})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "sea_claimed")


def test_translation_fault_beyond_ipa_space() -> None:
    vcpu = kvmcore.VM("arm64").create_vcpu()  # ipa_bits 40 by default
    # ipa 1 << 40: hpfar = (1 << 40 >> 12) << 4 = 1 << 32 -> inside PARange (52), outside the VM
    res = vcpu.handle_fault({"esr": READ8, "far": 0x10, "hpfar": 1 << 32})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "ipa_range_sea_injected")
    assert "0x10000000010" in res.detail  # injected at ipa | FAR[11:0]
    # ipa 1 << 52: hpfar = 1 << 44 -> beyond the sanitised PARange: address size fault
    res = vcpu.handle_fault({"esr": FETCH, "hpfar": 1 << 44})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "size_fault_injected")
    # a 48-bit VM: ipa 1 << 40 is inside its IPA space, no memslot -> MMIO
    vcpu = kvmcore.VM("arm64", ipa_bits=48).create_vcpu()
    assert vcpu.handle_fault({"esr": READ8, "hpfar": 1 << 32}).outcome == "mmio"
    # only translation faults are range-checked: a permission fault there goes on (MMIO here)
    vcpu = kvmcore.VM("arm64").create_vcpu()
    assert vcpu.handle_fault({"esr": WRITE4_PERM, "hpfar": 1 << 32}).outcome == "mmio"


@pytest.mark.parametrize(
    "esr",
    [
        0x92000021,  # alignment fault
        0x92000000,  # address size fault L0
        0x9200002A,  # translation fault L-2: KVM's predicate covers only -1..3
        0x92000011,  # synchronous tag check fault
        0x92000030,  # TLB conflict abort
    ],
)
def test_unsupported_fsc_is_bare_efault(vcpu, ram, esr) -> None:
    res = vcpu.handle_fault({"esr": esr, "hpfar": 0x40_0010})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_UNKNOWN, "unsupported_fsc")
    assert res.detail == f"Unsupported FSC: EC=0x24 xFSC={esr & 0x3F:#x} ESR_EL2={esr:#x}"


# --- no memslot / write to a READONLY memslot ---------------------------------------------
def test_mmio_write_with_syndrome(vcpu) -> None:
    # the reference's kvm_guest_fault example: 0x93810046 = STR w1, 4 bytes, translation L2,
    # ipa 0x9000000 (hpfar 0x90000), far ...a004 -> phys_addr 0x9000004
    res = vcpu.handle_fault({"esr": 0x93810046, "far": 0xFFFF_8000_8000_A004, "hpfar": 0x9_0000, "data": 0x41})
    assert (res.ret, res.exit_reason, res.outcome) == (0, KVM_EXIT_MMIO, "mmio")
    mmio = vcpu.kvm_run.mmio
    assert (mmio.phys_addr, mmio.len, mmio.is_write, bytes(mmio.data)) == (
        0x900_0004, 4, 1, b"\x41\x00\x00\x00\x00\x00\x00\x00")


def test_mmio_read_one_byte(vcpu) -> None:
    # 0x93020007: ISV SAS=0 (1 byte) SRT=2 WnR=0 translation L3 -> LDRB w2
    res = vcpu.handle_fault({"esr": 0x93020007, "far": 0x9000018, "hpfar": 0x9_0000})
    mmio = vcpu.kvm_run.mmio
    assert (res.outcome, mmio.phys_addr, mmio.len, mmio.is_write, bytes(mmio.data)) == (
        "mmio", 0x900_0018, 1, 0, bytes(8))
    # an 8-byte store of 0x1122334455667788 (0x93C08047: SAS=3 SF WnR) keeps all 8 bytes
    vcpu.handle_fault({"esr": 0x93C08047, "far": 0x9000008, "hpfar": 0x9_0000, "data": 0x1122334455667788})
    assert (mmio.len, bytes(mmio.data)) == (8, bytes.fromhex("8877665544332211"))


def test_nisv_exit_with_cap(vm, vcpu) -> None:
    vm.enable_cap(KVM_CAP_ARM_NISV_TO_USER)
    # 0x92000647: DABT IL ISV=0 FnV EA WnR translation L3 (an STP, say)
    # esr_iss = ESR & (CM 0x100 | WnR 0x40 | FSC 0x3F) = 0x47: FnV and EA are dropped
    res = vcpu.handle_fault({"esr": 0x92000647, "far": 0xFFFF_0000_0000_0FF8, "hpfar": 0x9_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (0, KVM_EXIT_ARM_NISV, "nisv")
    nisv = vcpu.kvm_run.arm_nisv
    assert (nisv.esr_iss, nisv.fault_ipa) == (0x47, 0x900_0FF8)


def test_nisv_without_cap_is_enosys(vcpu) -> None:
    res = vcpu.handle_fault({"esr": 0x92000647, "far": 0xFF8, "hpfar": 0x9_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (-ENOSYS, KVM_EXIT_UNKNOWN, "nisv_enosys")


def test_instruction_fetch_outside_ram_injects_iabt(vcpu) -> None:
    assert vcpu.handle_fault({"esr": FETCH, "hpfar": 0x9_0000}).outcome == "iabt_injected"
    # 0x82000087: IABT with S1PTW: still an IABT (kvm_vcpu_trap_is_iabt), checked first
    res = vcpu.handle_fault({"esr": 0x82000087, "hpfar": 0x9_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "iabt_injected")


def test_stage1_walk_outside_ram_injects_dabt(vcpu) -> None:
    # 0x92000087: DABT S1PTW translation L3 (the guest's page tables are not in RAM)
    res = vcpu.handle_fault({"esr": 0x92000087, "hpfar": 0x9_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "dabt_injected")


def test_cache_maintenance_outside_memslots_is_skipped(vm, vcpu) -> None:
    vm.enable_cap(KVM_CAP_ARM_NISV_TO_USER)
    # 0x92000147: CM WnR translation L3, ISV=0 (DC CIVAC to a device address)
    res = vcpu.handle_fault({"esr": 0x92000147, "hpfar": 0x9_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "cache_maintenance_skipped")


def test_readonly_memslot(vm, vcpu) -> None:
    vm.enable_cap(KVM_CAP_ARM_NISV_TO_USER)
    slot = vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB, flags=KVM_MEM_READONLY)
    # a read maps read-only
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x80_0010})
    assert (res.outcome, res.mapped.writable, res.fault.slot) == ("mapped", False, slot)
    # a store with syndrome -> KVM_EXIT_MMIO at the full address (ROM emulation)
    res = vcpu.handle_fault({"esr": WRITE4_PERM, "far": 0x8000_1ABC, "hpfar": 0x80_0010, "data": 7})
    assert (res.outcome, vcpu.kvm_run.mmio.phys_addr, vcpu.kvm_run.mmio.is_write) == ("mmio", 0x8000_1ABC, 1)
    # cache maintenance to a READONLY slot is a write fault too and is not skipped (a slot
    # exists): 0x92000146 = CM WnR translation L2, ISV=0 -> NISV, esr_iss = 0x146
    res = vcpu.handle_fault({"esr": 0x92000146, "far": 0x40, "hpfar": 0x80_0020})
    assert (res.outcome, vcpu.kvm_run.arm_nisv.esr_iss, vcpu.kvm_run.arm_nisv.fault_ipa) == (
        "nisv", 0x146, 0x8000_2040)
    # a stage-1 walk that must update a descriptor (S1PTW permission = write) -> injected DABT
    assert vcpu.handle_fault({"esr": 0x9200008F, "hpfar": 0x80_0030}).outcome == "dabt_injected"
    # a stage-1 walk that only reads (S1PTW translation) maps the page read-only
    res = vcpu.handle_fault({"esr": 0x92000087, "hpfar": 0x80_0040})
    assert (res.outcome, res.mapped.writable) == ("mapped", False)


# --- access flag --------------------------------------------------------------------------
def test_access_flag_fixed_in_place(vm, vcpu, ram) -> None:
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0030})
    pfn = res.mapped.pfn
    # age the page: clear the young bit. 1 << 2 is kvmcore's S2_YOUNG, not exported yet.
    assert vm.stage2.set_flags(0x40003, clear_bits=1 << 2)
    assert vm.stage2.lookup(0x40003).young is False
    # 0x93C0800B: the same load, FSC 0x0B (access flag L3)
    res = vcpu.handle_fault({"esr": 0x93C0800B, "hpfar": 0x40_0030})
    assert (res.ret, res.exit_reason, res.outcome, res.mapped) == (0, None, "access_flag_fixed", None)
    entry = vm.stage2.lookup(0x40003)
    assert (entry.young, entry.pfn, entry.writable, entry.exec, entry.size) == (True, pfn, True, False, 0x1000)
    # nothing mapped: nothing to do, resume (the guest will take a translation fault)
    assert vcpu.handle_fault({"esr": 0x93C0800B, "hpfar": 0x40_0040}).outcome == "access_flag_fixed"
    assert vm.stage2.lookup(0x40004) is None


def test_access_flag_fault_outside_memslots_goes_to_mmio(vcpu) -> None:
    assert vcpu.handle_fault({"esr": 0x93C0800B, "hpfar": 0x9_0000}).outcome == "mmio"


# --- private/shared (kvmcore extension) -----------------------------------------------------
def test_private_mismatch_memory_fault(vm, vcpu, ram) -> None:
    vm.set_memory_attributes(0x4000_2000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    # a shared access to a private page: flags 0, gpa page-aligned, size PAGE_SIZE
    res = vcpu.handle_fault({"esr": READ8, "far": 0x2010, "hpfar": 0x40_0020})
    assert (res.ret, res.outcome) == (-EFAULT, "private_mismatch")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x0, 0x4000_2000, 0x1000)
    # a private access to a shared page: flags = KVM_MEMORY_EXIT_FLAG_PRIVATE (0x8)
    res = vcpu.handle_fault({"esr": WRITE4, "far": 0x3000, "hpfar": 0x40_0030, "private": 1})
    assert (res.ret, res.outcome) == (-EFAULT, "private_mismatch")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x4000_3000, 0x1000)
    # the syndrome words: 0x93810047 sanitised = EC|IL (0x92000000) | WnR 0x40 | FSC 0x07
    assert syndrome(vcpu) == (KVMCORE_SYNDROME_VALID, KVMCORE_SYNDROME_ARCH_ARM64, 0x92000047, 0x4000_3000, 0, 0)


def test_private_access_without_slot_or_gmem(vm, vcpu, ram) -> None:
    vm.set_memory_attributes(0x9000_0000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x90_0000, "private": 1})
    assert (res.ret, res.outcome) == (-EFAULT, "private_no_slot")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x9000_0000, 0x1000)
    vm.set_memory_attributes(RAM, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0000, "private": 1})
    assert (res.ret, res.outcome) == (-EFAULT, "private_no_gmem")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, RAM, 0x1000)


# --- guest_memfd (gmem_abort) -------------------------------------------------------------
def test_gmem_abort_maps_page_size(vm, vcpu) -> None:
    fd = vm.create_guest_memfd(4 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 4 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    gmem = vm.guest_memfd(fd)
    # shared memory from guest_memfd (6.18: every fault in a gmem slot goes to gmem_abort)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x80_0050})
    assert (res.outcome, res.mapped.pfn, res.mapped.size, res.mapped.writable, res.mapped.exec) == (
        "mapped_gmem", gmem.pfn_base + 5, 0x1000, True, False)
    # private (kvmcore's input) once the range is private
    vm.set_memory_attributes(0x8020_0000, 2 * MiB, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"esr": FETCH, "hpfar": 0x80_2000, "private": 1})
    assert (res.outcome, res.mapped.pfn, res.mapped.size, res.mapped.exec) == (
        "mapped_private", gmem.pfn_base + 0x200, 0x1000, True)


def test_gmem_error_is_a_memory_fault_with_its_errno(vm, vcpu) -> None:
    fd = vm.create_guest_memfd(1 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.guest_memfd(fd).memory_failure(0x6000)
    res = vcpu.handle_fault({"esr": WRITE4, "far": 0x6008, "hpfar": 0x80_0060})
    assert (res.ret, res.exit_reason, res.outcome) == (-EHWPOISON, KVM_EXIT_MEMORY_FAULT, "gmem_error")
    # 6.18 passes is_private=false: flags 0
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x0, 0x8000_6000, 0x1000)
    assert syndrome(vcpu)[:4] == (KVMCORE_SYNDROME_VALID, KVMCORE_SYNDROME_ARCH_ARM64, 0x92000047, 0x8000_6008)


@pytest.mark.parametrize("setting", ["hooked", "v3"])
def test_gmem_abort_userfault(setting: str) -> None:
    """Default: userfault checked before kvm_gmem_get_pfn() (the follow-up v3's cover letter
    asks for); "v3": the posted series, where gmem_abort() ignores the bitmap."""
    vm = kvmcore.VM("arm64", userfault_gmem=setting)
    vcpu = vm.create_vcpu()
    fd = vm.create_guest_memfd(64 * 0x1000)
    bitmap = bytearray(b"\xff" * 8)
    vm.set_user_memory_region(
        1, 0x8000_0000, 64 * 0x1000, flags=KVM_MEM_GUEST_MEMFD | KVM_MEM_USERFAULT,
        guest_memfd=fd, userfault_bitmap=bitmap,
    )
    vm.set_memory_attributes(0x8000_1000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    shared = vcpu.handle_fault({"esr": READ8, "hpfar": 0x80_0000})
    private = vcpu.handle_fault({"esr": READ8, "hpfar": 0x80_0010, "private": 1})
    if setting == "v3":
        assert (shared.outcome, private.outcome) == ("mapped_gmem", "mapped_private")
        return
    assert (private.ret, private.outcome) == (-errno.EFAULT, "userfault")
    # USERFAULT (0x10) | PRIVATE (0x8), gpa of gfn 0x80001, one 4K page
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x18, 0x8000_1000, 0x1000)
    assert (shared.ret, shared.outcome) == (-errno.EFAULT, "userfault")
    bitmap[0] = 0xFC  # the VMM cleared bits 0 and 1 (store-release in a real VMM)
    assert vcpu.handle_fault({"esr": READ8, "hpfar": 0x80_0010, "private": 1}).outcome == "mapped_private"


# --- user_mem_abort -----------------------------------------------------------------------
def test_translation_fault_maps(vm, vcpu, ram) -> None:
    res = vcpu.handle_fault({"esr": WRITE4, "far": 0x4000_1004, "hpfar": 0x40_0010})
    host_pfn, _ = vm.host.hva_to_pfn(ram.userspace_addr + 0x1000, False)
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "mapped")
    assert (res.mapped.pfn, res.mapped.writable, res.mapped.size, res.mapped.exec) == (host_pfn, True, 0x1000, False)
    # an instruction fetch maps executable
    res = vcpu.handle_fault({"esr": FETCH, "hpfar": 0x40_0020})
    assert (res.outcome, res.mapped.exec) == ("mapped", True)


def test_permission_fault_relaxes_the_mapping(vm, vcpu, ram) -> None:
    # a data read maps the page without exec; the fetch that follows takes a permission
    # fault and gets exec added, keeping write
    vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0010})
    assert vm.stage2.lookup(0x40001).exec is False
    res = vcpu.handle_fault({"esr": FETCH_PERM, "hpfar": 0x40_0010})
    assert (res.outcome, res.mapped.exec, res.mapped.writable, res.mapped.size) == (
        "permission_relaxed", True, True, 0x1000)
    entry = vm.stage2.lookup(0x40001)
    assert (entry.exec, entry.writable) == (True, True)


def test_dirty_logging_maps_reads_read_only_then_relaxes(vm, vcpu) -> None:
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    slot = vm.set_user_memory_region(0, RAM, 2 * MiB, hva, KVM_MEM_LOG_DIRTY_PAGES)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0090})
    assert (res.outcome, res.mapped.writable, res.mapped.size) == ("mapped", False, 0x1000)
    assert not any(slot.dirty_bitmap)
    res = vcpu.handle_fault({"esr": WRITE4_PERM, "hpfar": 0x40_0090})
    assert (res.outcome, res.mapped.writable, res.mapped.size) == ("permission_relaxed", True, 0x1000)
    assert vm.get_dirty_log(0)[1] == 0x02  # gfn offset 9 = byte 1, bit 1


def test_relaxing_only_adds_permissions(vm, vcpu) -> None:
    vm.set_user_memory_region(0, RAM, 64 * 0x1000, flags=KVM_MEM_LOG_DIRTY_PAGES)
    # page 1: a fetch maps exec, read-only (logging, not a write); a store then adds W, keeps X
    assert vcpu.handle_fault({"esr": FETCH, "hpfar": 0x40_0010}).mapped.writable is False
    res = vcpu.handle_fault({"esr": WRITE4_PERM, "hpfar": 0x40_0010})
    assert (res.outcome, res.mapped.writable, res.mapped.exec) == ("permission_relaxed", True, True)
    # page 2: a store maps writable, no exec; a fetch then adds X and keeps W although a
    # non-write fault in a logging slot would map read-only
    assert vcpu.handle_fault({"esr": WRITE4, "hpfar": 0x40_0020}).mapped.writable is True
    res = vcpu.handle_fault({"esr": FETCH_PERM, "hpfar": 0x40_0020})
    assert (res.outcome, res.mapped.writable, res.mapped.exec) == ("permission_relaxed", True, True)
    entry = vm.stage2.lookup(0x40002)
    assert (entry.writable, entry.exec) == (True, True)


def test_dirty_logging_splits_a_block_on_write(vm, vcpu) -> None:
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    assert vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0010}).mapped.size == 2 * MiB
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, KVM_MEM_LOG_DIRTY_PAGES)  # write-protects
    # 0x9381004E: the store, permission fault at level 2 (the 2 MiB block); the mapping size
    # is PAGE_SIZE now, not the 2 MiB granule, so a 4K page is mapped instead of relaxing
    res = vcpu.handle_fault({"esr": 0x9381004E, "hpfar": 0x40_0010})
    assert (res.outcome, res.mapped.writable, res.mapped.size) == ("mapped", True, 0x1000)


def test_permission_fault_on_a_block_relaxes_the_block(vm, vcpu) -> None:
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0010})
    # 0x8200000E: fetch, permission fault L2: granule 2 MiB == mapping size -> relax
    res = vcpu.handle_fault({"esr": 0x8200000E, "hpfar": 0x40_1230})
    assert (res.outcome, res.mapped.size, res.mapped.exec) == ("permission_relaxed", 2 * MiB, True)
    assert vm.stage2.lookup(0x40000).exec is True


@pytest.mark.parametrize(
    ("host_page", "slot_size", "expected"),
    [(2 * MiB, 4 * MiB, 2 * MiB), (GiB, GiB, GiB), (0x1000, 4 * MiB, 0x1000), (64 * 1024, 4 * MiB, 0x1000)],
)
def test_block_sizes_4k_granule(vm, vcpu, host_page, slot_size, expected) -> None:
    hva = vm.host.mmap(slot_size, page_size=host_page)
    vm.set_user_memory_region(0, RAM, slot_size, hva)
    # ipa 0x40123000: hpfar 0x401230
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_1230})
    assert (res.fault.gfn, res.mapped.size) == (0x40123, expected)


def test_16k_granule() -> None:
    vm = kvmcore.VM("arm64", granule="16K")
    vcpu = vm.create_vcpu()
    hva = vm.host.mmap(32 * MiB, page_size=32 * MiB)
    vm.set_user_memory_region(0, RAM, 32 * MiB, hva)
    # ipa 0x40123000 (hpfar 0x401230): gfn = 0x40123000 >> 14 = 0x10048; block 32 MiB
    res = vcpu.handle_fault({"esr": READ8, "far": 0x123, "hpfar": 0x40_1230})
    assert (res.fault.gfn, res.fault.gpa, res.mapped.size) == (0x10048, 0x4012_3123, 32 * MiB)
    assert vm.stage2.lookup(0x10048).gfn == 0x10000  # 32 MiB / 16 KiB = 0x800 pages, aligned down
    # base-page host memory: one 16K page
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x80_0050})
    assert (res.fault.gfn, res.mapped.size) == (0x20001, 0x4000)  # 0x80005000 >> 14


def test_64k_granule() -> None:
    vm = kvmcore.VM("arm64", granule="64K")
    vcpu = vm.create_vcpu()
    hva = vm.host.mmap(512 * MiB, page_size=512 * MiB)
    vm.set_user_memory_region(0, RAM, 512 * MiB, hva)
    # ipa 0x40123000: gfn = 0x40123000 >> 16 = 0x4012; block 512 MiB
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_1230})
    assert (res.fault.gfn, res.mapped.size) == (0x4012, 512 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x80_0050})
    assert (res.fault.gfn, res.mapped.size) == (0x8000, 0x10000)


def test_no_vma_is_bare_efault(vm, vcpu, ram) -> None:
    vm.host.munmap(ram.userspace_addr + 0x2000, 0x1000)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0020})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_UNKNOWN, "no_vma")
    assert res.detail == f"Failed to find VMA for hva {ram.userspace_addr + 0x2000:#x}"


def test_hwpoison_sends_sigbus_and_kvm_run_returns_eintr(vm, vcpu, ram) -> None:
    # arch/arm64/kvm/mmu.c:user_mem_abort(): KVM_PFN_ERR_HWPOISON -> kvm_send_hwpoison_signal(hva,
    # vma_shift); return 0. kvm_arch_vcpu_ioctl_run() (arm.c) loops while ret > 0 and
    # xfer_to_guest_mode_handle_work() sees the pending SIGBUS: kvm_handle_signal_exit() sets
    # KVM_EXIT_INTR and KVM_RUN returns -EINTR (6.12 kernel/entry/kvm.c, 7.3 kvm_host.h).
    hva = ram.userspace_addr + 0x1000
    vm.host.memory_failure(hva)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0010})
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EINTR, KVM_EXIT_INTR, "hwpoison_sigbus")
    assert res.signal == kvmcore.Signal("SIGBUS", "BUS_MCEERR_AR", hva, 12)


def test_hwpoison_lsb_is_the_block_shift(vm, vcpu) -> None:
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva)
    vm.host.memory_failure(hva + 0x3000)
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0030})
    assert res.signal == kvmcore.Signal("SIGBUS", "BUS_MCEERR_AR", hva + 0x3000, 21)


def test_other_error_pfn_is_bare_efault(vm, vcpu, ram) -> None:
    vm.host.mprotect(ram.userspace_addr, 0x1000, kvmcore.PROT_READ)
    res = vcpu.handle_fault({"esr": WRITE4, "hpfar": 0x40_0000})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_UNKNOWN, "efault")
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0000})
    assert (res.outcome, res.mapped.writable) == ("mapped", False)


# --- KVM Userfault v3 ---------------------------------------------------------------------
def test_userfault_on_translation_fault(vm, vcpu) -> None:
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    bitmap = bytearray(64)  # 512 pages
    vm.set_user_memory_region(0, RAM, 2 * MiB, hva, KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    kvmcore.set_userfault_bits(bitmap, [1])  # page 1 = byte 0 bit 1
    assert bitmap[0] == 0x02
    # READ8 at ipa 0x40001000, far offset 0x008
    res = vcpu.handle_fault({"esr": READ8, "far": 0x4000_1008, "hpfar": 0x40_0010})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_MEMORY_FAULT, "userfault")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x10, 0x4000_1000, 0x1000)
    # syndrome: 0x93C08007 & (EC|IL|WnR|CM|S1PTW|FnV|FSC): ISV, SAS=3 and SF dropped -> 0x92000007
    assert syndrome(vcpu) == (KVMCORE_SYNDROME_VALID, KVMCORE_SYNDROME_ARCH_ARM64, 0x92000007, 0x4000_1008, 0, 0)
    # page 2 is not marked: mapped, PAGE_SIZE although the host has 2 MiB pages
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0020})
    assert (res.outcome, res.mapped.size) == ("mapped", 0x1000)
    # the VMM fetched page 1 and cleared the bit
    bitmap[0] = 0
    res = vcpu.handle_fault({"esr": READ8, "far": 0x4000_1008, "hpfar": 0x40_0010})
    assert (res.outcome, res.mapped.size, res.exit_reason) == ("mapped", 0x1000, None)


def test_userfault_on_permission_fault(vm, vcpu) -> None:
    bitmap = bytearray(8)
    vm.set_user_memory_region(0, RAM, 64 * 0x1000, None, KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_USERFAULT,
                              userfault_bitmap=bitmap)
    assert vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0050}).mapped.writable is False
    kvmcore.set_userfault_bits(bitmap, [5])
    res = vcpu.handle_fault({"esr": WRITE4_PERM, "far": 0x5FFC, "hpfar": 0x40_0050})
    assert (res.ret, res.outcome) == (-EFAULT, "userfault")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x10, 0x4000_5000, 0x1000)
    # 0x9381004F sanitised: 0x92000000 | WnR 0x40 | FSC 0x0F
    assert syndrome(vcpu)[2:4] == (0x9200004F, 0x4000_5FFC)


def test_userfault_16k_granule_reports_the_16k_page() -> None:
    vm = kvmcore.VM("arm64", granule="16K")
    vcpu = vm.create_vcpu()
    bitmap = bytearray(8)
    vm.set_user_memory_region(0, RAM, 64 * 0x4000, flags=KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    # ipa 0x40005000 -> gfn 0x10001 -> page 1 of the slot; gpa = 0x10001 << 14 = 0x40004000
    kvmcore.set_userfault_bits(bitmap, [1])
    res = vcpu.handle_fault({"esr": READ8, "far": 0x5008, "hpfar": 0x40_0050})
    assert res.outcome == "userfault"
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x10, 0x4000_4000, 0x4000)
    assert syndrome(vcpu)[3] == 0x4000_5008


def test_userfault_is_not_checked_before_mmio_access_flag_or_vma(vm, vcpu) -> None:
    bitmap = bytearray(b"\xff" * 8)
    slot = vm.set_user_memory_region(0, RAM, 64 * 0x1000, flags=KVM_MEM_USERFAULT | KVM_MEM_READONLY,
                                     userfault_bitmap=bitmap)
    # write to a READONLY slot: MMIO, never a userfault
    assert vcpu.handle_fault({"esr": WRITE4, "hpfar": 0x40_0010}).outcome == "mmio"
    # access-flag fault: handle_access_fault()
    assert vcpu.handle_fault({"esr": 0x93C0800B, "hpfar": 0x40_0010}).outcome == "access_flag_fixed"
    # no VMA: "Failed to find VMA" comes first
    vm.host.munmap(slot.userspace_addr, 0x1000)
    assert vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0000}).outcome == "no_vma"


def test_userfault_unreadable_bitmap_is_bare_efault(vm, vcpu) -> None:
    bitmap = bytearray(8)
    vm.set_user_memory_region(0, RAM, 64 * 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    vm.memslots.by_id[0].userfault_bitmap.release()
    res = vcpu.handle_fault({"esr": READ8, "hpfar": 0x40_0010})
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_UNKNOWN, "userfault")


# --- the memory-fault exit wrapper ----------------------------------------------------------
def test_hook_prepare_memory_fault_exit_wrapper_keeps_common_fields(vm, vcpu, ram) -> None:
    f = vm.arch.decode_fault(vcpu, {"esr": 0x000002009381004F, "far": 0x7ABC, "hpfar": 0x40_0070})
    f.slot = ram
    # the hook directly: the common part is exactly what the core helper writes
    common = vm.arch.prepare_memory_fault_exit(vcpu, f)
    assert common == kvmcore.MemoryFault(0x0, 0x4000_7000, 0x1000)
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x0, 0x4000_7000, 0x1000)
    # 0x000002009381004F: ISS2 TagAccess (bit 41) | STR w1 permission L3; sanitised keeps
    # TagAccess: 0x0000020000000000 | 0x92000000 | 0x40 | 0x0F = 0x000002009200004F
    assert syndrome(vcpu) == (KVMCORE_SYNDROME_VALID, KVMCORE_SYNDROME_ARCH_ARM64,
                              0x000002009200004F, 0x4000_7ABC, 0, 0)
    # an instruction abort keeps EC, IL, S1PTW, FnV and the FSC: 0x82000007 unchanged
    f = vm.arch.decode_fault(vcpu, {"esr": FETCH, "hpfar": 0x40_0070})
    f.slot = ram
    kvmcore.kvm_prepare_memory_fault_exit(vcpu, f)
    assert syndrome(vcpu)[2:4] == (0x82000007, 0x4000_7000)
