"""The x86 plugin as kvmcore sees it: entry point, ArchInfo, settings, encode/decode round trip,
``describe_syndrome`` and ``parse_trace_event``. Expected values are hand-worked from the SDM/APM
bits and the reference's trace examples (kvm-fault-facts.md 6.2)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from kvmcore_x86.fault import X86Fault

import kvmcore
from kvmcore import Access, abi

PRIVATE = 1 << 49
VMX_FIELDS = [
    "vendor", "data_read", "data_write", "insn_fetch", "ept_readable", "ept_writable",
    "ept_executable", "ept_user_executable", "gla_valid", "gla_translated", "adv_user",
    "adv_writable", "adv_nx", "nmi_unblocking", "shadow_stack", "supervisor_shadow_stack",
    "guest_paging_verification", "error_code", "pferr", "gfn", "gpa", "write", "exec", "is_private",
    "page_walk",
]  # fmt: skip
SVM_FIELDS = [
    "vendor", "present", "write", "user", "rsvd", "fetch", "pk", "shadow_stack", "rmp",
    "guest_final", "guest_page", "enc", "sizem", "vmpl", "error_code", "pferr", "gfn", "gpa",
    "exec", "is_private", "page_walk",
]  # fmt: skip


@pytest.fixture(scope="module")
def arch() -> kvmcore.Arch:
    return kvmcore.load_arch("x86")


# --- loading ----------------------------------------------------------------------------------
def test_found_through_its_entry_point(arch) -> None:
    assert "x86" in kvmcore.installed_arches()
    assert arch.plugin.__name__ == "kvmcore_x86.plugin"
    assert arch.dist == "kvmcore-x86"
    hooks, wrappers = arch.hooks_of(arch.plugin)
    assert hooks == ["arch_info", "decode_fault", "decode_fault_batch", "describe_syndrome", "encode_fault", "faultin_pfn",
                     "kvm_arch_prepare_memory_fault_exit", "parse_log_text", "parse_trace_event", "prepare_memory_region"]
    assert wrappers == ["configure_vm", "prepare_memory_fault_exit"]


def test_arch_info(arch) -> None:
    info = arch.info
    assert (info.name, info.fault_type, info.page_shift, info.phys_bits) == ("x86", X86Fault, 12, 52)
    assert info.registers == ("vendor", "exit_qualification", "gpa", "gla", "error_code")
    assert "access_flag" not in info.causes
    assert "kernel" not in info.settings and info.settings["vendor"] == ("vmx", "svm")
    assert info.settings["vm_type"] == ("default", "sw_protected", "snp", "tdx")
    assert info.settings["mbec"] == (False, True)


def test_fault_type_has_the_contract_annotations() -> None:
    kvmcore.check_fault_type(X86Fault, "x86")
    names = [f.name for f in dataclasses.fields(X86Fault)]
    assert names[:5] == ["gfn", "exec", "write", "is_private", "slot"]
    for name in ("addr", "error_code", "present", "rsvd", "user", "prefetch", "is_tdp", "max_level",
                 "req_level", "goal_level", "pfn", "map_writable", "vendor", "exit_qualification",
                 "npf_error_code", "gpa", "gla", "fault_kind"):
        assert name in names
    assert not hasattr(X86Fault(0, False, False, False, None, 0, 0, False, False, False, "vmx", 0, "x"), "__dict__")


def test_every_outcome_is_documented() -> None:
    import pathlib
    import re

    from kvmcore_x86 import mmu

    doc = (pathlib.Path(__file__).parents[3] / "docs" / "arch" / "x86.md").read_text()
    for outcome in mmu.OUTCOMES:
        assert f"| `{outcome}` |" in doc, outcome
    source = pathlib.Path(mmu.__file__).read_text()
    named = set(re.findall(r'(?:Exit\(-?[\w.]+, |Retry\(|outcome = )"(\w+)"', source))
    named |= set(mmu._MMIO_OUTCOME.values())
    assert named <= set(mmu.OUTCOMES), named - set(mmu.OUTCOMES)


# --- settings -----------------------------------------------------------------------------------
def test_default_settings() -> None:
    assert kvmcore.VM("x86").settings == {
        "vendor": "vmx", "vm_type": "default", "mbec": False,
        "nx_huge_pages": False, "tdx_gpaw": 52,
    }  # fmt: skip


def test_vm_type_implies_the_vendor() -> None:
    assert kvmcore.VM("x86", vm_type="snp").settings["vendor"] == "svm"
    assert kvmcore.VM("x86", vm_type="tdx").settings["vendor"] == "vmx"


@pytest.mark.parametrize(("settings", "match"), [
    ({"vm_type": "snp", "vendor": "vmx"}, "needs vendor='svm'"),
    ({"vm_type": "tdx", "vendor": "svm"}, "needs vendor='vmx'"),
    ({"mbec": True, "kernel": "6.12"}, "mbec=True needs"),
    ({"mbec": True, "kernel": "7.3", "vendor": "svm"}, "mbec=True needs"),
    ({"mbec": True, "kernel": "6.18"}, "mbec=True needs"),
    ({"kernel": "6.19"}, "kernel='6.19'"),
    # 6.12 arch/x86/include/uapi/asm/kvm.h defines no KVM_X86_TDX_VM
    ({"vm_type": "tdx", "kernel": "6.12"}, "has no KVM_X86_TDX_VM"),
    ({"granule": "4K"}, "no VM setting 'granule'"),
])
def test_bad_settings(settings, match) -> None:
    with pytest.raises(ValueError, match=match):
        kvmcore.VM("x86", **settings)


# --- encode_fault -------------------------------------------------------------------------------
@pytest.mark.parametrize(("vendor", "kind", "cause", "expected"), [
    # VMX: access bit | PROT bits | bits 7+8; SVM: US | GUEST_FINAL | RW/ID | P
    ("vmx", "read", "not_present", {"exit_qualification": 0x181}),
    ("vmx", "write", "read_only", {"exit_qualification": 0x1AA, "len": 4, "data": 0x55}),
    ("vmx", "exec", "no_exec", {"exit_qualification": 0x19C}),
    ("vmx", "write", "no_slot", {"exit_qualification": 0x182, "len": 4, "data": 0x55}),
    ("svm", "read", "no_slot", {"error_code": 0x1_0000_0004, "len": 4}),
    ("svm", "write", "not_present", {"error_code": 0x1_0000_0006}),
    ("svm", "exec", "not_present", {"error_code": 0x1_0000_0014}),
])
def test_encode(vendor, kind, cause, expected) -> None:
    vcpu = kvmcore.VM("x86", vendor=vendor).create_vcpu()
    raw = vcpu.vm.arch.encode_fault(vcpu, Access(0x10_1008, kind, cause, data=0x55))
    assert raw == {"vendor": vendor, "gpa": 0x10_1008, **expected}


def test_encode_private() -> None:
    vmx = kvmcore.VM("x86").create_vcpu()
    assert vmx.vm.arch.encode_fault(vmx, Access(0x1000, "read", private=True))["private"] == 1
    snp = kvmcore.VM("x86", vm_type="snp").create_vcpu()
    raw = snp.vm.arch.encode_fault(snp, Access(0x1000, "write", private=True))
    assert raw == {"vendor": "svm", "error_code": 0x5_0000_0006, "gpa": 0x1000}  # ENC (34)
    tdx = kvmcore.VM("x86", vm_type="tdx").create_vcpu()
    assert tdx.vm.arch.encode_fault(tdx, Access(0x1000, "write", private=True))["gpa"] == 0x1000
    assert tdx.vm.arch.encode_fault(tdx, Access(0x1000, "read"))["gpa"] == (1 << 51) | 0x1000


@pytest.mark.parametrize(("settings", "access", "match"), [
    ({}, Access(0x1000, "read", "access_flag"), "no access-flag fault"),
    ({}, Access(0x1000, "read", "read_only"), "impossible"),
    ({"vm_type": "tdx"}, Access(0x1000, "read", private=True), "as a write"),
    ({"vm_type": "tdx"}, Access(0x1000, "exec"), "KVM_BUG_ON"),
    ({"vm_type": "tdx"}, Access((1 << 51) | 0x1000, "write"), "shared bit"),
    ({}, Access(0x1000, "write", "no_slot", size=3), "size"),
])
def test_encode_refuses(settings, access, match) -> None:
    vcpu = kvmcore.VM("x86", **settings).create_vcpu()
    with pytest.raises(ValueError, match=match):
        vcpu.vm.arch.encode_fault(vcpu, access)


@pytest.mark.parametrize(("vm_type", "vendor"), [
    ("default", "vmx"), ("default", "svm"), ("sw_protected", "vmx"), ("snp", "svm"), ("tdx", "vmx"),
])
def test_round_trip(vm_type, vendor) -> None:
    vm = kvmcore.VM("x86", vm_type=vm_type, vendor=vendor)
    vcpu = vm.create_vcpu()
    if vm_type == "sw_protected":
        vm.set_memory_attributes(0x20_0000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    checked = 0
    for kind, cause, private in itertools.product(("read", "write", "exec"), vm.arch.info.causes, (False, True)):
        gpa = 0x20_0abc if private else 0x10_0abc
        access = Access(gpa, kind, cause, private=private)
        try:
            raw = vm.arch.encode_fault(vcpu, access)
        except ValueError:
            continue
        fault = vm.arch.decode_fault(vcpu, raw)
        assert (fault.gfn, fault.write, fault.exec, fault.is_private) == (gpa >> 12, access.write, access.exec, private), raw
        kvmcore.check_fault(fault, "x86", X86Fault)
        checked += 1
    assert checked >= 5


# --- describe_syndrome ----------------------------------------------------------------------------
def test_describe_vmx_exit_qualification(arch) -> None:
    vm = kvmcore.VM("x86")
    s = arch.describe_syndrome(vm, {"exit_qualification": 0x1182, "gpa": 0xFD00_0000})
    assert (s.arch, s.guest_fault, s.error) == ("x86", True, None)
    assert list(s.fields) == VMX_FIELDS and set(s.meanings) == set(VMX_FIELDS)
    f = s.fields
    assert (f["data_write"], f["gla_valid"], f["gla_translated"], f["nmi_unblocking"]) == (True, True, True, True)
    assert (f["ept_user_executable"], f["supervisor_shadow_stack"]) == (None, None)  # no MBEC, no EPTP bit 7
    assert (f["adv_user"], f["adv_writable"], f["adv_nx"]) == (False, False, False)
    assert (f["error_code"], f["pferr"]) == (0x1_0000_0002, ["WRITE", "GUEST_FINAL"])
    assert (f["gfn"], f["gpa"], f["write"], f["exec"], f["is_private"]) == (0xFD000, 0xFD00_0000, True, False, False)


def test_describe_svm_and_snp(arch) -> None:
    snp = kvmcore.VM("x86", vm_type="snp")
    s = arch.describe_syndrome(snp, {"error_code": 0x5_0000_0006, "gpa": 0x1000})
    assert list(s.fields) == SVM_FIELDS and set(s.meanings) == set(SVM_FIELDS)
    f = s.fields
    assert (f["present"], f["write"], f["user"], f["guest_final"], f["enc"]) == (False, True, True, True, True)
    assert f["error_code"] == 0x5_0000_0006 | PRIVATE
    assert f["pferr"] == ["WRITE", "USER", "GUEST_FINAL", "GUEST_ENC", "PRIVATE_ACCESS"]
    assert (f["is_private"], f["exec"]) == (True, False)


def test_describe_trace_error_codes(arch) -> None:
    vm = kvmcore.VM("x86")  # a VMX VM: only consulted when the bits do not tell
    # the reference's SVM trace example: W|U|GUEST_FINAL -> vendor_hint says svm
    s = arch.describe_syndrome(vm, {"error_code": 0x1_0000_0006, "gpa": 0xC000_0000})
    assert (s.fields["vendor"], s.fields["error_code"]) == ("svm", 0x1_0000_0006)
    # the VMX example 0x182 is an exit qualification (bit 7 only VMX defines)
    s = arch.describe_syndrome(vm, {"error_code": 0x182})
    assert (s.fields["vendor"], s.fields["data_write"]) == ("vmx", True)
    # 0x6 could be either: the VM's vendor decides; with no VM it cannot be told
    assert arch.describe_syndrome(vm, {"error_code": 0x6}).fields["vendor"] == "vmx"
    s = arch.pm.hook.describe_syndrome(vm=None, raw={"error_code": 0x6})
    assert (s.guest_fault, s.fields["vendor"]) == (False, None) and "cannot tell the vendor" in s.error
    # a traced SNP private fault keeps its PRIVATE bit
    s = arch.describe_syndrome(vm, {"vendor": "svm", "error_code": 0x5_0000_0004 | PRIVATE})
    assert s.fields["is_private"] is True and s.fields["error_code"] == 0x5_0000_0004 | PRIVATE
    # 32-bit truncated: bits 32+ unknown
    s = arch.describe_syndrome(vm, {"vendor": "svm", "error_code": 0x6, "truncated": 1})
    assert (s.fields["guest_final"], s.fields["enc"]) == (None, None)


def test_describe_not_a_guest_fault(arch) -> None:
    vm = kvmcore.VM("x86")
    s = arch.describe_syndrome(vm, {"exit_qualification": 0x180})  # no access bit
    assert (s.guest_fault, s.fields["vendor"], s.fields["error_code"]) == (False, "vmx", None)
    assert "no access bit" in s.error
    with pytest.raises(kvmcore.DecodeError, match="missing"):
        arch.describe_syndrome(vm, {"gpa": 0})


# --- parse_trace_event -------------------------------------------------------------------------------
def test_trace_kvm_page_fault(arch) -> None:
    ev = arch.parse_trace_event(
        "kvm_page_fault", "vcpu 0 rip 0xffffffff81a3c2d0 address 0x00000000fd000000 error_code 0x182"
    )
    assert ev.kind == "guest_fault"
    assert ev.raw == {"vendor": "vmx", "exit_qualification": 0x182, "gpa": 0xFD00_0000}
    assert ev.fields["guest_rip"] == 0xFFFFFFFF81A3C2D0
    ev = arch.parse_trace_event(
        "kvm_page_fault", "vcpu 1 rip 0xffffffff8100abcd address 0x00000000c0000000 error_code 0x2000500000006"
    )
    assert ev.raw == {"vendor": "svm", "error_code": 0x5_0000_0006, "gpa": 0xC000_0000}  # PRIVATE stripped
    ev = arch.parse_trace_event("kvm_page_fault", "vcpu 0 rip 0x1000 address 0x0000000000001000 error_code 0x2")
    # 0x2 is W in both formats (SDM Table 28-7 bit 1 data write; APM #NPF bit 1 RW): the vendor
    # setting decides how decode_fault reads it (raw traced=1).
    assert (ev.kind, ev.raw) == ("guest_fault_ambiguous", {"error_code": 0x2, "gpa": 0x1000, "traced": 1})


def test_trace_replays_into_a_fault(arch) -> None:
    vm = kvmcore.VM("x86", vm_type="snp")
    fd = vm.create_guest_memfd(0x1000)
    vm.set_user_memory_region(0, 0xC000_0000, 0x1000, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(0xC000_0000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    ev = arch.parse_trace_event(
        "kvm:kvm_page_fault", "vcpu 1 rip 0xffffffff8100abcd address 0x00000000c0000000 error_code 0x2000500000006"
    )
    res = vm.create_vcpu().handle_fault(ev.raw)
    assert (res.outcome, res.fault.is_private) == ("mapped_private", True)


def test_trace_other_events(arch) -> None:
    assert arch.parse_trace_event("kvm_mmio", "mmio write len 4 gpa 0x9000000 val 0x41").kind == "mmio"
    ev = arch.parse_trace_event("kvm_userspace_exit", "reason error (14)")
    assert (ev.kind, ev.fields["errno"], ev.raw) == ("exit", 14, None)
    ev = arch.parse_trace_event(
        "kvmmmu:fast_page_fault",
        "vcpu 0 gva fd000000 error_code W|U sptep 00000000a1b2c3d4 old 0x6000000123456b77 new 6000000123456b77 spurious 0 fixed 1",
    )
    assert (ev.kind, ev.fields["error_code"]) == ("fast_page_fault", 0x6)
    ev = arch.parse_trace_event("kvm_mmu_spte_requested", "gfn fd000 pfn 123456 level 1 access 7")
    assert (ev.kind, ev.fields["level"]) == ("spte_requested", 1)
    with pytest.raises(ValueError, match="kvm_exit"):  # x86's kvm_exit, cut short: malformed
        arch.parse_trace_event("kvm_exit", "reason EPT_VIOLATION")
    with pytest.raises(ValueError, match="kvm_page_fault"):
        arch.parse_trace_event("kvm_page_fault", "garbage")


def test_hook_prepare_memory_region_limits_the_gpa_space() -> None:
    """kvm_arch_prepare_memory_region(): the x86 GPA limit (EINVAL)."""
    import errno

    import kvmcore

    vm = kvmcore.VM("x86")
    vm.set_user_memory_region(0, (1 << 52) - 0x1000, 0x1000)
    try:
        vm.set_user_memory_region(1, 1 << 52, 0x1000)
    except kvmcore.KvmError as exc:
        assert exc.errno == errno.EINVAL
    else:
        raise AssertionError("a slot beyond the GPA space was accepted")
