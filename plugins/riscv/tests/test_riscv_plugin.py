"""The plugin as kvmcore sees it: entry point, ArchInfo, encode/decode round trips,
describe_syndrome and parse_trace_event. Expected CSR values are worked by hand from the
privileged spec and the reference (§5.1, §6.4)."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from kvmcore_riscv import plugin
from kvmcore_riscv.fault import RiscvFault

import kvmcore
from kvmcore import Access


@pytest.fixture
def arch() -> kvmcore.Arch:
    return kvmcore.load_arch("riscv")


@pytest.fixture
def vm() -> kvmcore.VM:
    return kvmcore.VM("riscv")


@pytest.fixture
def vcpu(vm: kvmcore.VM) -> kvmcore.VCPU:
    return vm.create_vcpu()


# --- loading ----------------------------------------------------------------------------------


def test_found_through_its_entry_point(arch) -> None:
    assert "riscv" in kvmcore.installed_arches()
    assert arch.plugin is plugin
    assert (arch.dist, arch.name) == ("kvmcore-riscv", "riscv")
    hooks, wrappers = arch.hooks_of(plugin)
    assert hooks == sorted(
        [
            "arch_info",
            "decode_fault",
            "decode_fault_batch",
            "faultin_pfn", "kvm_arch_prepare_memory_fault_exit",
            "encode_fault",
            "describe_syndrome",
            "parse_trace_event",
            "parse_log_text",
            "prepare_memory_region",
        ]
    )
    assert wrappers == ["prepare_memory_fault_exit"]


def test_arch_info(arch) -> None:
    info = arch.info
    assert (info.name, info.fault_type, info.page_shift, info.phys_bits) == (
        "riscv",
        RiscvFault,
        12,
        59,
    )
    assert info.registers == ("scause", "htval", "stval", "htinst", "sepc")
    assert info.causes == ("not_present", "no_slot")
    assert dict(info.settings) == {}


def test_fault_type_has_the_exact_common_annotations() -> None:
    assert dataclasses.is_dataclass(RiscvFault) and "__slots__" in vars(RiscvFault)
    hints = typing.get_type_hints(RiscvFault)
    assert (hints["gfn"], hints["exec"], hints["write"], hints["is_private"]) == (
        int,
        bool,
        bool,
        bool,
    )
    assert hints["slot"] == typing.Optional[kvmcore.Memslot]  # noqa: UP045
    kvmcore.check_fault_type(RiscvFault, "riscv")


def test_settings(vm) -> None:
    assert vm.settings == {}
    assert str(vm.kernel) == "7.3" and str(kvmcore.VM("riscv", kernel="6.18").kernel) == "6.18"
    with pytest.raises(ValueError, match="kernel"):
        kvmcore.VM("riscv", kernel="6.1")


def test_decoded_faults_pass_the_runtime_contract(arch, vcpu) -> None:
    fault = arch.decode_fault(vcpu, {"scause": 0x15, "htval": 0x400, "stval": 0x1000, "private": 1})
    kvmcore.check_fault(fault, "riscv", RiscvFault)
    assert (fault.gfn, fault.is_private, fault.htinst, fault.htinst_kind) == (1, True, 0, "zero")


# --- encode_fault -----------------------------------------------------------------------------


def test_encode_reference_store(arch, vcpu) -> None:
    # a 1-byte write of 0x41 to 0x10000000: sb a0 -> rs2 = 10 (0xa << 20) | funct3 000 | 0x23
    raw = arch.encode_fault(vcpu, Access(0x10000000, "write", size=1, data=0x41))
    assert raw == {
        "scause": 0x17,
        "htval": 0x4000000,
        "stval": 0x10000000,
        "htinst": 0x00A00023,
        "data": 0x41,
    }


def test_encode_private_exec(arch, vcpu) -> None:
    raw = arch.encode_fault(vcpu, Access(0x80002000, "exec", private=True))
    assert raw == {
        "scause": 0x14,
        "htval": 0x20000800,
        "stval": 0x80002000,
        "htinst": 0,
        "sepc": 0x80002000,
        "private": 1,
    }


@pytest.mark.parametrize("kind", ["read", "write", "exec"])
@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("gpa", [0, 0x80003FFC, (1 << 59) - 8])
def test_encode_decode_round_trip(arch, vcpu, kind, private, gpa) -> None:
    access = Access(gpa, kind, private=private, size=4, data=0x1234)
    fault = arch.decode_fault(vcpu, arch.encode_fault(vcpu, access))
    assert (fault.gfn, fault.write, fault.exec, fault.is_private) == (
        gpa >> 12,
        kind == "write",
        kind == "exec",
        private,
    )


@pytest.mark.parametrize("cause", ["read_only", "no_exec", "access_flag"])
def test_encode_refuses_causes_riscv_cannot_express(arch, vcpu, cause) -> None:
    with pytest.raises(ValueError, match=rf"^cause='{cause}': RISC-V cannot express it"):
        arch.encode_fault(vcpu, Access(0x1000, "write", cause=cause))


def test_encode_refuses_a_gpa_beyond_sv57x4(arch, vcpu) -> None:
    with pytest.raises(ValueError, match=r"gpa="):
        arch.encode_fault(vcpu, Access(1 << 59))


# --- describe_syndrome ------------------------------------------------------------------------


def test_describe_reference_store(arch, vm) -> None:
    raw = {"scause": 0x17, "stval": 0xFFFFFFC800000000, "htval": 0x4000000, "htinst": 0xB00023}
    s = arch.describe_syndrome(vm, raw)
    assert (s.arch, s.guest_fault, s.error) == ("riscv", True, None)
    assert s.fields == {
        "scause": 0x17,
        "scause_name": "EXC_STORE_GUEST_PAGE_FAULT",
        "access": "store",
        "gpa": 0x10000000,
        "gva": 0xFFFFFFC800000000,
        "htinst_kind": "transformed",
        "insn_length": 4,
        "access_size": 1,
        "rs2": 11,
        "sign_extend": None,
        "addr_offset": 0,
        "gfn": 0x10000,
        "write": True,
        "exec": False,
        "is_private": False,
        # htinst 0xb00023: bit 0 set, opcode 0x23 STORE: a transformed instruction, so an explicit
        # access (not the VS-stage walk)
        "page_walk": False,
    }
    assert set(s.meanings) == set(s.fields) and all(s.meanings.values())


def test_describe_load_with_pseudoinstruction_adds_kernel_gpa(arch, vm) -> None:
    # htval 0x20000402 -> PTE at 0x80001008; stval low bits 0b11 -> kernel fault_addr 0x8000100b
    s = arch.describe_syndrome(
        vm, {"scause": 0x15, "htval": 0x20000402, "stval": 0x7FFFF003, "htinst": 0x3000}
    )
    assert (s.fields["gpa"], s.fields["kernel_gpa"], s.fields["rd"], s.fields["access_size"]) == (
        0x80001008,
        0x8000100B,
        None,
        8,
    )
    assert "kernel_gpa" in s.meanings


@pytest.mark.parametrize(
    "scause,name",
    [
        (0x9, "EXC_HYPERVISOR_SYSCALL"),
        (0x16, "EXC_VIRTUAL_INST_FAULT"),
        ((1 << 63) | 5, "IRQ_S_TIMER"),
    ],
)
def test_describe_other_causes(arch, vm, scause, name) -> None:
    s = arch.describe_syndrome(vm, {"scause": scause})
    assert (s.guest_fault, s.fields["scause"], s.fields["scause_name"]) == (False, scause, name)
    assert "is not a guest-page fault (20, 21 or 23)" in s.error


def test_describe_refused_guest_page_fault(arch, vm) -> None:
    # a transformed store (sb) cannot accompany a load guest-page fault
    s = arch.describe_syndrome(vm, {"scause": 0x15, "htval": 0, "stval": 0, "htinst": 0xB00023})
    assert (s.guest_fault, s.fields["scause_name"]) == (False, "EXC_LOAD_GUEST_PAGE_FAULT")
    assert s.error.startswith("htinst=0xb00023: transformed sb")


def test_describe_needs_the_registers(arch, vm) -> None:
    # A lone scause 0x17 = 23: EXC_STORE_GUEST_PAGE_FAULT (privileged spec, Table "hypervisor
    # exception codes"): the access is a store, so write; the GPA needs htval and stval: unknown.
    syn = arch.describe_syndrome(vm, {"scause": 0x17})
    assert syn.guest_fault is True
    assert (syn.fields["access"], syn.fields["write"], syn.fields["exec"]) == ("store", True, False)
    assert syn.fields["gpa"] is None and syn.fields["gfn"] is None and syn.fields["gva"] is None
    with pytest.raises(kvmcore.DecodeError, match=r"missing register\(s\) scause"):
        arch.describe_syndrome(vm, {})


# --- parse_trace_event ------------------------------------------------------------------------


def test_trace_kvm_exit_guest_fault(arch) -> None:
    text = "SEPC:0xffffffff80a0b1c2, SCAUSE:0x17, STVAL:0xffffffc800000000, HTVAL:0x4000000, HTINST:0xb00023"
    ev = arch.parse_trace_event("kvm_exit", text)
    assert ev.kind == "guest_fault"
    assert ev.raw == {
        "sepc": 0xFFFFFFFF80A0B1C2,
        "scause": 0x17,
        "stval": 0xFFFFFFC800000000,
        "htval": 0x4000000,
        "htinst": 0xB00023,
    }


def test_trace_replay_decodes(arch, vcpu) -> None:
    text = "SEPC:0xffffffff80a0b1c2, SCAUSE:0x17, STVAL:0xffffffc800000000, HTVAL:0x4000000, HTINST:0xb00023"
    res = vcpu.handle_fault(arch.parse_trace_event("kvm_exit", text).raw)
    assert (res.outcome, vcpu.kvm_run.mmio.phys_addr, vcpu.kvm_run.mmio.len) == (
        "mmio",
        0x10000000,
        1,
    )


def test_trace_kvm_exit_other_cause_and_entry(arch) -> None:
    ev = arch.parse_trace_event(
        "kvm_exit", "SEPC:0x80200000, SCAUSE:0xa, STVAL:0x0, HTVAL:0x0, HTINST:0x0"
    )
    assert (ev.kind, ev.raw, ev.fields["scause"]) == ("exit", None, 10)
    ev = arch.parse_trace_event("kvm_entry", "PC: 0x016ffffffff80a0b1c2")
    assert (ev.kind, ev.fields, ev.raw) == ("entry", {"pc": 0xFFFFFFFF80A0B1C2}, None)


def test_trace_unknown_and_malformed(arch) -> None:
    assert arch.parse_trace_event("kvm_mmio", "mmio write len 4 gpa 0x9000000 val 0x41") is None
    with pytest.raises(ValueError, match="kvm_exit"):
        arch.parse_trace_event("kvm_exit", "SEPC:0x1")


def test_hook_prepare_memory_region_limits_the_gpa_space() -> None:
    """kvm_arch_prepare_memory_region(): the riscv GPA limit (EFAULT)."""
    import errno

    import kvmcore

    vm = kvmcore.VM("riscv")
    vm.set_user_memory_region(0, (1 << 59) - 0x2000, 0x1000)
    try:
        vm.set_user_memory_region(1, (1 << 59) - 0x1000, 0x1000)
    except kvmcore.KvmError as exc:
        assert exc.errno == errno.EFAULT
    else:
        raise AssertionError("a slot beyond the GPA space was accepted")


def test_plugin_scause_numbers_are_the_trap_causes() -> None:
    """plugin.py writes the three guest-page-fault causes out (so that loading the plugin does
    not import the trap decoder): 20 fetch, 21 load, 23 store/AMO (privileged spec, scause
    exception codes; arch/riscv/include/asm/csr.h EXC_*_GUEST_PAGE_FAULT)."""
    from kvmcore_riscv import trap

    assert plugin._SCAUSE_ACCESS_FLAG == {
        20: kvmcore.abi.KVM_MEMORY_EXIT_FLAG_EXEC,
        21: kvmcore.abi.KVM_MEMORY_EXIT_FLAG_READ,
        23: kvmcore.abi.KVM_MEMORY_EXIT_FLAG_WRITE,
    }
    assert (trap.EXC_INST_GUEST_PAGE_FAULT, trap.EXC_LOAD_GUEST_PAGE_FAULT, trap.EXC_STORE_GUEST_PAGE_FAULT) == (20, 21, 23)
    assert set(trap.GUEST_PAGE_FAULT_ACCESS) == set(plugin._SCAUSE_ACCESS_FLAG)
