"""The RISC-V faultin path, outcome by outcome.

Expected values come from the privileged spec (trap CSRs, htinst transformation), the RV
instruction encodings worked by hand in the comments, and the project reference (§5.2 for
gstage_page_fault()/kvm_riscv_mmu_map(), §1.3/§2.3 for memory-fault exits, docs/syndrome.md).
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore.abi import (
    KVM_EXIT_MEMORY_FAULT,
    KVM_EXIT_MMIO,
    KVM_EXIT_UNKNOWN,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

KiB, MiB = 1 << 10, 1 << 20
EHWPOISON = 133  # asm-generic errno.h
EFAULT, EOPNOTSUPP, EIO = 14, 95, 5
LOAD, STORE, FETCH = 0x15, 0x17, 0x14  # scause 21, 23, 20

# Transformed htinst values (immediate zeroed, rs1 = Addr. Offset 0, bit 1 = 1 for 32-bit):
SB_A1 = 0x00B00023  # sb a1: rs2 = 11 (0xb << 20), funct3 000, opcode 0100011
SW_A1 = 0x00B02023  # sw a1: rs2 = 11, funct3 010 (0x2000), opcode 0x23
LW_A0 = 0x00002503  # lw a0: funct3 010 (0x2000), rd = 10 (0x500), opcode 0000011
LD_A5 = 0x00003783  # ld a5: funct3 011 (0x3000), rd = 15 (0x780), opcode 0x03
C_LW_A0 = 0x00002501  # c.lw a0 -> lw x10 with bit 1 cleared (compressed original)
C_SD_A1 = 0x00B03021  # c.sd a1 -> sd x11 (0xb03023) with bit 1 cleared
AMOADD_W = 0x00B0252F  # amoadd.w a0, a1: funct5 0, rs2 11, funct3 010, rd 10, opcode 0101111
PSEUDO_RV64_READ = 0x00003000  # implicit 64-bit VS-stage PTE read (priv spec table)


@pytest.fixture
def vm() -> kvmcore.VM:
    return kvmcore.VM("riscv")


@pytest.fixture
def vcpu(vm: kvmcore.VM) -> kvmcore.VCPU:
    return vm.create_vcpu()


def trap(
    scause: int, gpa: int, htinst: int = 0, *, stval: int | None = None, **extra: int
) -> dict[str, int]:
    """Trap CSRs for gpa: htval = gpa >> 2; stval defaults to gpa (vsatp Bare)."""
    return {
        "scause": scause,
        "htval": gpa >> 2,
        "stval": gpa if stval is None else stval,
        "htinst": htinst,
        **extra,
    }


def mmio(vcpu: kvmcore.VCPU) -> tuple[int, int, int, int, list[int]]:
    run = vcpu.kvm_run
    return run.exit_reason, run.mmio.phys_addr, run.mmio.len, run.mmio.is_write, list(run.mmio.data)


def memory_fault(vcpu: kvmcore.VCPU) -> tuple[int, int, int, int]:
    run = vcpu.kvm_run
    return run.exit_reason, run.memory_fault.flags, run.memory_fault.gpa, run.memory_fault.size


def syndrome(vcpu: kvmcore.VCPU) -> tuple[int, int, list[int]]:
    s = vcpu.kvm_run.syndrome
    return s.flags, s.arch, list(s.syndrome)


# --- the fault fields ----------------------------------------------------------------------


def test_reference_store_fields(vcpu) -> None:
    # Reference §6.4: sb a1,0(a0) to GPA 0x10000000; htval = 0x10000000 >> 2 = 0x4000000.
    raw = {"scause": 0x17, "stval": 0xFFFFFFC800000000, "htval": 0x4000000, "htinst": 0xB00023}
    fault = vcpu.vm.arch.decode_fault(vcpu, raw)
    assert (fault.gfn, fault.write, fault.exec, fault.is_private, fault.slot) == (
        0x10000,
        True,
        False,
        False,
        None,
    )
    assert (fault.scause, fault.scause_name, fault.access, fault.fault_kind) == (
        23,
        "EXC_STORE_GUEST_PAGE_FAULT",
        "store",
        "guest_page_fault_store",
    )
    assert (fault.gpa, fault.kernel_gpa, fault.gva) == (0x10000000, 0x10000000, 0xFFFFFFC800000000)
    assert (fault.htinst_kind, fault.insn_length, fault.access_size, fault.rs2, fault.rd) == (
        "transformed",
        4,
        1,
        11,
        None,
    )
    assert (fault.sepc, fault.insn, fault.data) == (None, None, None)


def test_pseudoinstruction_gpa_is_pte_aligned(vcpu) -> None:
    # Implicit PTE read: htval = 0x80001008 >> 2 = 0x20000402; stval = the VA being translated
    # (low bits 0b11). The kernel's fault_addr ORs them in; the PTE address does not.
    fault = vcpu.vm.arch.decode_fault(
        vcpu, trap(LOAD, 0x80001008, PSEUDO_RV64_READ, stval=0x7FFF_F003)
    )
    assert (fault.gpa, fault.kernel_gpa, fault.htinst_kind, fault.access_size) == (
        0x80001008,
        0x8000100B,
        "pseudo",
        8,
    )


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"scause": 0x15, "stval": 0}, r"missing register\(s\) htval: "),
        ({"scause": 0x15, "htval": 0, "stval": 0, "hinst": 0}, r"unknown raw key\(s\) 'hinst'"),
        (
            {"scause": 0x15, "htval": 0, "stval": 0, "private": 2},
            r"^private=2: expected 0 \(shared\) or 1 \(private\)$",
        ),
        (
            {"scause": 0x15, "htval": 0, "stval": 0, "insn": 1 << 32},
            r"^insn=4294967296: not a 16- or 32-bit",
        ),
        (
            {"scause": 0x9, "htval": 0, "stval": 0},
            r"^scause=0x9: .*\[EXC_HYPERVISOR_SYSCALL\] is not a guest-page fault",
        ),
    ],
)
def test_decode_errors_name_the_register(vcpu, raw, message) -> None:
    with pytest.raises(kvmcore.DecodeError, match=message):
        vcpu.handle_fault(raw)


# --- MMIO: no memslot or a store to a read-only slot ------------------------------------------


def test_reference_store_is_an_mmio_exit_with_len_1(vcpu) -> None:
    raw = {
        "scause": 0x17,
        "stval": 0xFFFFFFC800000000,
        "htval": 0x4000000,
        "htinst": 0xB00023,
        "data": 0x1241,
    }
    res = vcpu.handle_fault(raw)
    assert (res.ret, res.exit_reason, res.outcome) == (0, KVM_EXIT_MMIO, "mmio")
    # SB stores the low byte of a1 only
    assert mmio(vcpu) == (KVM_EXIT_MMIO, 0x10000000, 1, 1, [0x41, 0, 0, 0, 0, 0, 0, 0])


def test_uncompressed_load(vcpu) -> None:
    res = vcpu.handle_fault(trap(LOAD, 0x10000008, LD_A5))
    assert (res.ret, res.outcome, res.fault.rd, res.fault.insn_length) == (0, "mmio", 15, 4)
    assert mmio(vcpu) == (KVM_EXIT_MMIO, 0x10000008, 8, 0, [0] * 8)


def test_compressed_load(vcpu) -> None:
    res = vcpu.handle_fault(trap(LOAD, 0x10000004, C_LW_A0))
    assert (res.outcome, res.fault.rd, res.fault.insn_length, res.fault.sign_extend) == (
        "mmio",
        10,
        2,
        True,
    )
    assert mmio(vcpu) == (KVM_EXIT_MMIO, 0x10000004, 4, 0, [0] * 8)


def test_compressed_store(vcpu) -> None:
    res = vcpu.handle_fault(trap(STORE, 0x10000010, C_SD_A1, data=0x1122334455667788))
    assert (res.outcome, res.fault.rs2, res.fault.insn_length) == ("mmio", 11, 2)
    assert mmio(vcpu) == (
        KVM_EXIT_MMIO,
        0x10000010,
        8,
        1,
        [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
    )


@pytest.mark.parametrize("htinst", [0, PSEUDO_RV64_READ])
def test_htinst_without_instruction_is_emulate(vcpu, htinst) -> None:
    # bit 0 clear: KVM reads the instruction at sepc from guest memory
    res = vcpu.handle_fault(trap(LOAD, 0x10000000, htinst, sepc=0xFFFFFFFF80001000))
    assert (res.ret, res.exit_reason, res.outcome, res.resumed) == (0, None, "emulate", True)
    assert "sepc=0xffffffff80001000" in res.detail and "kvm_riscv_vcpu_unpriv_read" in res.detail
    assert vcpu.kvm_run.exit_reason == KVM_EXIT_UNKNOWN


def test_instruction_from_guest_memory_32bit(vcpu) -> None:
    # sw a1, 4(a0): imm[4:0]=4 (0x200), rs1=10 (0x50000), rs2=11 (0xb00000), funct3 010, 0x23
    res = vcpu.handle_fault(trap(STORE, 0x10000004, 0, insn=0x00B52223, data=0xDEADBEEF))
    assert res.outcome == "mmio"
    assert mmio(vcpu) == (KVM_EXIT_MMIO, 0x10000004, 4, 1, [0xEF, 0xBE, 0xAD, 0xDE, 0, 0, 0, 0])


def test_instruction_from_guest_memory_compressed(vcpu) -> None:
    # c.sw a1, 4(a0): 110 | uimm[5:3]=0 | rs1'=010 (0x100) | uimm[2]=1 (0x40) | uimm[6]=0 |
    # rs2'=011 (0xc) | 00 -> 0xc14c
    res = vcpu.handle_fault(trap(STORE, 0x10000004, 0, insn=0xC14C, data=0x01020304))
    assert res.outcome == "mmio"
    assert mmio(vcpu) == (KVM_EXIT_MMIO, 0x10000004, 4, 1, [4, 3, 2, 1, 0, 0, 0, 0])


def test_unknown_instruction_is_eopnotsupp(vcpu) -> None:
    res = vcpu.handle_fault(trap(STORE, 0x10000000, AMOADD_W))
    assert (res.ret, res.exit_reason, res.outcome) == (
        -EOPNOTSUPP,
        KVM_EXIT_UNKNOWN,
        "mmio_unsupported_insn",
    )


def test_misaligned_mmio_is_eio(vcpu) -> None:
    # lw to GPA 0x10000002: htval = 0x4000000, stval low bits 0b10 -> fault_addr 0x10000002
    res = vcpu.handle_fault(trap(LOAD, 0x10000002, LW_A0))
    assert (res.fault.kernel_gpa, res.ret, res.exit_reason, res.outcome) == (
        0x10000002,
        -EIO,
        KVM_EXIT_UNKNOWN,
        "mmio_misaligned",
    )


def test_store_to_readonly_slot_is_mmio_and_load_maps_readonly(vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0x80000000, 2 * MiB, flags=KVM_MEM_READONLY)
    res = vcpu.handle_fault(trap(STORE, 0x80000100, SW_A1, data=7))
    assert (res.ret, res.outcome) == (0, "mmio")
    assert mmio(vcpu) == (KVM_EXIT_MMIO, 0x80000100, 4, 1, [7, 0, 0, 0, 0, 0, 0, 0])
    res = vcpu.handle_fault(trap(LOAD, 0x80000100, LW_A0))
    assert (res.outcome, res.mapped.writable) == ("mapped", False)


@pytest.mark.parametrize("kernel", ["6.12", "6.18"])
def test_exec_from_unbacked_gpa(kernel) -> None:
    # arch/riscv/kvm/vcpu_exit.c:gstage_page_fault() (6.12): the switch on scause has
    # "default: return -EOPNOTSUPP" for EXC_INST_GUEST_PAGE_FAULT outside memslots.
    vcpu = kvmcore.VM("riscv", kernel=kernel).create_vcpu()
    res = vcpu.handle_fault(trap(FETCH, 0x10000000, sepc=0x10000000))
    assert (res.ret, res.exit_reason, res.outcome) == (
        -EOPNOTSUPP,
        KVM_EXIT_UNKNOWN,
        "exec_no_slot",
    )


def test_exec_from_unbacked_gpa_on_7_3_injects_access_fault() -> None:
    # 7.3 arch/riscv/kvm/vcpu_exit.c:gstage_page_fault(): case EXC_INST_GUEST_PAGE_FAULT ->
    # kvm_riscv_vcpu_trap_redirect() with scause EXC_INST_ACCESS, return 1 (the guest resumes).
    vcpu = kvmcore.VM("riscv", kernel="7.3").create_vcpu()
    res = vcpu.handle_fault(trap(FETCH, 0x10000000))
    assert (res.ret, res.exit_reason, res.outcome) == (0, None, "exec_no_slot_inject")
    assert "EXC_INST_ACCESS" in res.detail


# --- kvm_riscv_mmu_map() ----------------------------------------------------------------------


def test_load_maps_a_page_executable(vm, vcpu) -> None:
    slot = vm.set_user_memory_region(0, 0x80000000, 2 * MiB)
    res = vcpu.handle_fault(trap(LOAD, 0x80003010, LW_A0))
    host_pfn, _ = vm.host.hva_to_pfn(slot.userspace_addr + 0x3000, False)
    assert (res.outcome, res.resumed) == ("mapped", True)
    entry = vm.stage2.lookup(0x80003)
    assert (entry.pfn, entry.size, entry.writable, entry.exec) == (host_pfn, 4 * KiB, True, True)


def test_exec_fault_maps(vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0x80000000, 2 * MiB)
    res = vcpu.handle_fault(trap(FETCH, 0x80000000))
    assert (res.outcome, res.mapped.exec) == ("mapped", True)


def test_2m_aligned_slot_on_2m_host_mapping_maps_a_block(vm, vcpu) -> None:
    hva = vm.host.mmap(4 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, 0x80000000, 4 * MiB, hva)
    res = vcpu.handle_fault(trap(LOAD, 0x80201000, LW_A0))
    assert (res.outcome, res.mapped.size) == ("mapped", 2 * MiB)
    entry = vm.stage2.lookup(0x80201)
    host_pfn, _ = vm.host.hva_to_pfn(hva + 0x201000, False)
    assert (entry.gfn, entry.size, entry.pfn_of(0x80201)) == (0x80200, 2 * MiB, host_pfn)


def test_4k_host_mapping_maps_a_page(vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0x80000000, 4 * MiB)
    assert vcpu.handle_fault(trap(LOAD, 0x80201000, LW_A0)).mapped.size == 4 * KiB


def test_dirty_logging_maps_pages_and_reads_readonly(vm, vcpu) -> None:
    hva = vm.host.mmap(4 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, 0x80000000, 4 * MiB, hva, flags=KVM_MEM_LOG_DIRTY_PAGES)
    res = vcpu.handle_fault(trap(LOAD, 0x80201000, LW_A0))
    assert (res.mapped.size, res.mapped.writable) == (4 * KiB, False)
    res = vcpu.handle_fault(trap(STORE, 0x80202000, SW_A1))
    assert (res.mapped.size, res.mapped.writable) == (4 * KiB, True)
    log = vm.get_dirty_log(0)
    # page 0x202 of the slot: byte 0x202 >> 3 = 0x40, bit 2
    assert log[0x40] == 0x04 and sum(log) == 0x04


def test_hwpoison_sends_sigbus_and_kvm_run_returns_eintr(vm, vcpu) -> None:
    # arch/riscv/kvm/mmu.c:kvm_riscv_mmu_map() (kvm_riscv_gstage_map() in 6.12):
    # KVM_PFN_ERR_HWPOISON -> send_sig_mceerr(BUS_MCEERR_AR, hva, vma_pageshift); return 0.
    # kvm_arch_vcpu_ioctl_run() (vcpu.c) then finds the signal in
    # xfer_to_guest_mode_handle_work(): kvm_handle_signal_exit(), KVM_EXIT_INTR, -EINTR.
    slot = vm.set_user_memory_region(0, 0x80000000, 2 * MiB)
    vm.host.memory_failure(slot.userspace_addr + 0x3000)
    res = vcpu.handle_fault(trap(LOAD, 0x80003000, LW_A0))
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EINTR, 10, "hwpoison_sigbus")  # KVM_EXIT_INTR
    assert res.signal == kvmcore.Signal("SIGBUS", "BUS_MCEERR_AR", slot.userspace_addr + 0x3000, 12)


def test_hwpoison_on_a_2m_host_page_reports_its_shift(vm, vcpu) -> None:
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, 0x80000000, 2 * MiB, hva)
    vm.host.memory_failure(hva + 0x5000)
    res = vcpu.handle_fault(trap(LOAD, 0x80005000, LW_A0))
    assert (res.outcome, res.signal.addr, res.signal.lsb) == ("hwpoison_sigbus", hva + 0x5000, 21)


def test_no_permission_and_no_vma_are_bare_efault(vm, vcpu) -> None:
    slot = vm.set_user_memory_region(0, 0x80000000, 2 * MiB)
    vm.host.mprotect(slot.userspace_addr, 0x1000, kvmcore.PROT_NONE)
    res = vcpu.handle_fault(trap(LOAD, 0x80000000, LW_A0))
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_UNKNOWN, "efault")
    vm.host.munmap(slot.userspace_addr + 0x1000, 0x1000)
    res = vcpu.handle_fault(trap(LOAD, 0x80001000, LW_A0))
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_UNKNOWN, "no_vma")
    assert "Failed to find VMA" in res.detail


# --- kvmcore extensions: userfault, private memory, the syndrome ------------------------------


def test_userfault_on_a_load(vm, vcpu) -> None:
    bitmap = bytearray(8)  # 16 pages -> one unsigned long
    vm.set_user_memory_region(
        0, 0x80000000, 16 * 4 * KiB, flags=KVM_MEM_USERFAULT, userfault_bitmap=bitmap
    )
    bitmap[0] = 0x08  # gfn offset 3
    res = vcpu.handle_fault(trap(LOAD, 0x80003ABC, LW_A0))
    assert (res.ret, res.outcome) == (-EFAULT, "userfault")
    # KVM_MEMORY_EXIT_FLAG_USERFAULT = 1 << 4; gpa page-aligned; size PAGE_SIZE
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x10, 0x80003000, 0x1000)
    # syndrome: VALID, KVMCORE_SYNDROME_ARCH_RISCV = 4, scause, htinst
    assert syndrome(vcpu) == (1, 4, [0x15, LW_A0, 0, 0])
    assert vcpu.handle_fault(trap(LOAD, 0x80002000, LW_A0)).outcome == "mapped"  # bit 2 clear
    bitmap[0] = 0
    assert vcpu.handle_fault(trap(LOAD, 0x80003ABC, LW_A0)).outcome == "mapped"


def test_userfault_is_not_checked_for_mmio(vm, vcpu) -> None:
    bitmap = bytearray(b"\xff" * 8)
    vm.set_user_memory_region(
        0,
        0x80000000,
        16 * 4 * KiB,
        flags=KVM_MEM_USERFAULT | KVM_MEM_READONLY,
        userfault_bitmap=bitmap,
    )
    assert vcpu.handle_fault(trap(STORE, 0x80001000, SW_A1)).outcome == "mmio"


def test_wrapper_fills_syndrome_and_leaves_common_fields(vm, vcpu) -> None:
    fault = vm.arch.decode_fault(vcpu, trap(STORE, 0x80004123, SW_A1, stval=0x80004123, private=1))
    fault.slot = None
    vcpu.kvm_run.syndrome.syndrome[3] = 0xDEAD  # stale: cleared by the common helper
    common = kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
    # the common helper's values: flags PRIVATE (0x8), gpa = gfn << 12, size PAGE_SIZE
    assert common == kvmcore.MemoryFault(0x8, 0x80004000, 0x1000)
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x80004000, 0x1000)
    assert syndrome(vcpu) == (1, 4, [0x17, SW_A1, 0, 0])


def test_private_mismatch(vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0x80000000, 2 * MiB)
    vm.set_memory_attributes(0x80010000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault(trap(LOAD, 0x80010010, LW_A0))  # shared access, private gfn
    assert (res.ret, res.outcome) == (-EFAULT, "private_mismatch")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x0, 0x80010000, 0x1000)
    assert syndrome(vcpu) == (1, 4, [0x15, LW_A0, 0, 0])
    res = vcpu.handle_fault(trap(STORE, 0x80020000, SW_A1, private=1))  # private access, shared gfn
    assert (res.ret, res.outcome) == (-EFAULT, "private_mismatch")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x80020000, 0x1000)


def test_private_faults_through_guest_memfd(vm, vcpu) -> None:
    fd = vm.create_guest_memfd(2 * MiB)
    vm.set_user_memory_region(0, 0x80000000, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(0x80000000, 2 * MiB, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    gmem = vm.guest_memfd(fd)
    res = vcpu.handle_fault(trap(STORE, 0x80005000, SW_A1, private=1))
    assert (res.outcome, res.mapped.pfn, res.mapped.size, res.mapped.writable) == (
        "mapped_private",
        gmem.pfn_base + 5,
        4 * KiB,
        True,
    )
    gmem.memory_failure(0x6000)
    res = vcpu.handle_fault(trap(LOAD, 0x80006000, LW_A0, private=1))
    assert (res.ret, res.outcome) == (-EHWPOISON, "gmem_error")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x80006000, 0x1000)
    assert syndrome(vcpu) == (1, 4, [0x15, LW_A0, 0, 0])


def test_private_without_slot_or_guest_memfd(vm, vcpu) -> None:
    vm.set_memory_attributes(0x10000000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault(trap(LOAD, 0x10000000, LW_A0, private=1))
    assert (res.ret, res.outcome) == (-EFAULT, "private_no_slot")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x10000000, 0x1000)
    vm.set_user_memory_region(0, 0x80000000, 2 * MiB)
    vm.set_memory_attributes(0x80000000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault(trap(LOAD, 0x80000000, LW_A0, private=1))
    assert (res.ret, res.outcome) == (-EFAULT, "private_no_gmem")


def test_private_userfault_flags(vm, vcpu) -> None:
    fd = vm.create_guest_memfd(0x10000)
    bitmap = bytearray(b"\xff" * 8)
    vm.set_user_memory_region(
        0,
        0,
        0x10000,
        flags=KVM_MEM_GUEST_MEMFD | KVM_MEM_USERFAULT,
        guest_memfd=fd,
        userfault_bitmap=bitmap,
    )
    vm.set_memory_attributes(0, 0x10000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault(trap(LOAD, 0x2000, LW_A0, private=1))
    assert (res.ret, res.outcome) == (-EFAULT, "userfault")
    assert memory_fault(vcpu) == (
        KVM_EXIT_MEMORY_FAULT,
        0x18,
        0x2000,
        0x1000,
    )  # PRIVATE | USERFAULT


def test_errnos_are_the_kernels() -> None:
    assert (errno.EFAULT, errno.EOPNOTSUPP, errno.EIO) == (EFAULT, EOPNOTSUPP, EIO)


def test_unreadable_userfault_bitmap_is_bare_efault(vm, vcpu) -> None:
    bitmap = bytearray(b"\xff" * 8)
    slot = vm.set_user_memory_region(
        0, 0x80000000, 16 * 4 * KiB, flags=KVM_MEM_USERFAULT, userfault_bitmap=bitmap
    )
    slot.userfault_bitmap.release()  # as an invalid bitmap pointer: __get_user() faults
    res = vcpu.handle_fault(trap(LOAD, 0x80001000, LW_A0))
    assert (res.ret, res.exit_reason, res.outcome) == (-EFAULT, KVM_EXIT_UNKNOWN, "userfault")
