"""The arm64 plugin as kvmcore sees it: entry point, ArchInfo, VM settings, hooks, and the
encode / describe / trace conversions (expected values from the reference, sections 4 and 6.3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kvmcore
from kvmcore import Access, DecodeError


@pytest.fixture
def arch() -> kvmcore.Arch:
    return kvmcore.load_arch("arm64")


# --- loading and ArchInfo -------------------------------------------------------------------
def test_found_through_its_entry_point(arch) -> None:
    assert "arm64" in kvmcore.installed_arches()
    assert (arch.name, arch.dist, arch.version) == ("arm64", "kvmcore-arm64", "0.1.0")
    assert arch.plugin.__name__ == "kvmcore_arm64.plugin"
    assert kvmcore.VM("arm64").arch is arch
    row = next(r for r in kvmcore.list_plugins() if r.name == "arm64")
    assert row.error is None
    assert row.hooks == ["arch_info", "decode_fault", "decode_fault_batch", "describe_syndrome", "encode_fault",
                         "faultin_pfn", "kvm_arch_prepare_memory_fault_exit", "parse_log_text", "parse_trace_event",
                         "prepare_memory_region"]
    assert row.wrappers == ["configure_vm", "prepare_memory_fault_exit"]


def test_hook_arch_info(arch) -> None:
    info = arch.info
    assert (info.name, info.page_shift, info.phys_bits, info.registers) == ("arm64", 12, 52, ("esr", "far", "hpfar"))
    assert info.fault_type.__name__ == "Arm64Fault"
    assert dict(info.settings) == {
        "granule": ("4K", "16K", "64K"),
        "ipa_bits": (40, 32, 36, 42, 44, 48, 52),
        "sea": ("unclaimed", "claimed"),
        "userfault_gmem": ("hooked", "v3"),
    }
    assert info.description
    kvmcore.check_fault_type(info.fault_type, "arm64")


@pytest.mark.parametrize(("granule", "shift"), [("4K", 12), ("16K", 14), ("64K", 16)])
def test_hook_configure_vm_sets_page_shift(granule, shift) -> None:
    vm = kvmcore.VM("arm64", granule=granule)
    assert (vm.page_shift, vm.page_size, vm.stage2.page_shift, vm.host.page_shift) == (shift, 1 << shift, shift, shift)
    assert vm.settings == {"granule": granule, "ipa_bits": 40, "sea": "unclaimed", "userfault_gmem": "hooked"}


def test_hook_configure_vm_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"setting granule='8K' is not one of '4K', '16K', '64K'"):
        kvmcore.VM("arm64", granule="8K")
    with pytest.raises(ValueError, match=r"has no VM setting 'page_size' \(accepted: granule, ipa_bits, sea, userfault_gmem\)"):
        kvmcore.VM("arm64", page_size=4096)
    assert kvmcore.VM("arm64", ipa_bits=52, sea="claimed").settings["ipa_bits"] == 52


def test_debug_contract_check(monkeypatch) -> None:
    # KVMCORE_DEBUG=1 checks every decoded fault against the contract
    monkeypatch.setenv("KVMCORE_DEBUG", "1")
    from kvmcore_arm64 import plugin

    vm = kvmcore.VM(plugin)  # a fresh Arch (load_arch's is cached), built with the env var set
    assert vm.arch.debug is True
    vm.set_user_memory_region(0, 0x4000_0000, 0x20_0000)
    assert vm.create_vcpu().handle_fault({"esr": 0x93C08007, "hpfar": 0x40_0010}).outcome == "mapped"


def test_package_root_is_light() -> None:
    code = (
        "import sys, kvmcore_arm64; "
        "assert kvmcore_arm64.decode_esr(0x93810046).fault_kind == 'translation'; "
        "assert 'kvmcore_arm64.plugin' not in sys.modules and 'kvmcore_arm64.abort' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin_imports_no_private_core_module_or_other_plugin() -> None:
    from pathlib import Path

    import kvmcore_arm64

    for path in Path(kvmcore_arm64.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "kvmcore._" not in text, path.name
        assert "kvmcore_x86" not in text and "kvmcore_riscv" not in text, path.name


# --- encode_fault -------------------------------------------------------------------------
def test_hook_encode_fault(arch) -> None:
    vm = kvmcore.VM(arch)
    vcpu = vm.create_vcpu()
    # a 4-byte store of 0x41 to a device (no slot): DABT_LOW IL ISV SAS=2 SRT=0 WnR FSC 0x07
    # = 0x90000000 | 0x02000000 | 0x01000000 | 0x00800000 | 0x40 | 0x07 = 0x93800047
    raw = arch.encode_fault(vcpu, Access(0x900_0004, "write", "no_slot", data=0x41))
    assert raw == {"esr": 0x93800047, "far": 0x900_0004, "hpfar": 0x9_0000, "data": 0x41}
    res = vcpu.handle_fault(raw)
    mmio = vcpu.kvm_run.mmio
    assert (res.outcome, mmio.phys_addr, mmio.len, mmio.data[0]) == ("mmio", 0x900_0004, 4, 0x41)
    # a private fetch: IABT_LOW IL FSC 0x07 = 0x82000007 plus the modelling input
    raw = arch.encode_fault(vcpu, Access(0x8000_1000, "exec", "not_present", private=True, size=8))
    assert raw == {"esr": 0x82000007, "far": 0x8000_1000, "hpfar": 0x80_0010, "private": 1}
    f = arch.decode_fault(vcpu, raw)
    assert (f.gfn, f.write, f.exec, f.is_private) == (0x80001, False, True, True)
    # an access-flag read, 2 bytes: 0x93000000 | SAS=1 0x00400000 | FSC 0x0B = 0x9340000B
    assert arch.encode_fault(vcpu, Access(0x4000_0000, "read", "access_flag", size=2))["esr"] == 0x9340000B


@pytest.mark.parametrize(
    ("access", "message"),
    [
        (Access(0x1000, "read", "read_only"), "a read never fails a read-only"),
        (Access(0x1000, "exec", "read_only"), "an instruction fetch never fails a write-permission"),
        (Access(0x1000, "write", "no_exec"), "only an instruction fetch fails an execute-permission"),
        (Access(0x1000, "write", "not_present", size=3), r"size=3: a data access is 1, 2, 4 or 8 bytes"),
        (Access(1 << 56, "read"), r"must be an int in \[0, 2\*\*56\)"),
    ],
)
def test_hook_encode_fault_refuses_what_arm64_cannot_express(arch, access, message) -> None:
    vcpu = kvmcore.VM(arch).create_vcpu()
    with pytest.raises(ValueError, match=message):
        arch.encode_fault(vcpu, access)


@pytest.mark.parametrize("granule", ["4K", "16K", "64K"])
@pytest.mark.parametrize("kind", ["read", "write", "exec"])
@pytest.mark.parametrize("private", [False, True])
def test_encode_decode_round_trip(granule, kind, private) -> None:
    vm = kvmcore.VM("arm64", granule=granule)
    vcpu = vm.create_vcpu()
    gpa = 0x1_2345_6789
    f = vm.arch.decode_fault(vcpu, vm.arch.encode_fault(vcpu, Access(gpa, kind, private=private)))
    assert (f.gfn, f.write, f.exec, f.is_private, f.gpa) == (
        gpa >> vm.page_shift, kind == "write", kind == "exec", private, gpa)


# --- describe_syndrome --------------------------------------------------------------------
ISSUE_KEYS = ("ec ec_name il iss iss2 isv sas sse srt sf ar vncr set fnv ea cm s1ptw wnr fsc "
              "fsc_name fault_kind fault_level guest_fault ipa gfn write exec is_private").split()


def test_hook_describe_syndrome_guest_abort(arch) -> None:
    vm = kvmcore.VM(arch)
    # the reference's kvm_guest_fault example, with FAR offset 0x004
    syn = arch.describe_syndrome(vm, {"esr": 0x93810046, "far": 0xFFFF_8000_8000_A004, "hpfar": 0x9_0000})
    assert (syn.arch, syn.guest_fault, syn.error) == ("arm64", True, None)
    f = syn.fields
    assert set(ISSUE_KEYS) <= set(f)
    expected = dict(ec=0x24, ec_name="DABT_LOW", il=True, iss=0x1810046, iss2=0, isv=True, sas=2,
                    sse=False, srt=1, sf=False, ar=False, vncr=False, set=None, fnv=False, ea=False,
                    cm=False, s1ptw=False, wnr=True, fsc=0x06, fault_kind="translation",
                    fault_level=2, guest_fault=True, ipa=0x900_0000, gpa=0x900_0004, gfn=0x9000,
                    write=True, exec=False, is_private=False)
    assert {k: f[k] for k in expected} == expected
    assert set(syn.meanings) == set(f) and all(syn.meanings.values())
    json.dumps(f)  # JSON-ready


def test_hook_describe_syndrome_not_a_guest_abort(arch) -> None:
    vm = kvmcore.VM(arch, granule="64K")
    syn = arch.describe_syndrome(vm, {"esr": 0x5A000000})
    assert (syn.guest_fault, syn.error) == (False, "esr=0x5a000000: EC 0x16 (HVC64) is not an abort")
    assert (syn.fields["ec"], syn.fields["ec_name"], syn.fields["fsc"], syn.fields["write"], syn.fields["exec"]) == (
        0x16, "HVC64", None, False, False)
    assert "ipa" not in syn.fields and "gfn" not in syn.fields
    # gfn follows the granule: ipa 0x40123000 >> 16 = 0x4012
    syn = arch.describe_syndrome(vm, {"esr": 0x82000007, "hpfar": 0x40_1230, "private": 1})
    assert (syn.fields["gfn"], syn.fields["exec"], syn.fields["is_private"]) == (0x4012, True, True)


def test_hook_describe_syndrome_errors(arch) -> None:
    vm = kvmcore.VM(arch)
    with pytest.raises(DecodeError, match=r"^missing register esr"):
        arch.describe_syndrome(vm, {"hpfar": 0x10})
    with pytest.raises(DecodeError, match=r"bits \[63:56\] are RES0"):
        arch.describe_syndrome(vm, {"esr": 1 << 56})
    with pytest.raises(DecodeError, match=r"^unknown raw key\(s\) 'scause'"):
        arch.describe_syndrome(vm, {"esr": 0, "scause": 1})


# --- parse_trace_event --------------------------------------------------------------------
def test_hook_parse_trace_event_guest_fault_replays(arch) -> None:
    text = "ipa 0x9000000, hsr 0x93810046, hxfar 0xffff80008000a000, pc 0xffffc0c8a1b2c3d4"
    ev = arch.parse_trace_event("kvm_guest_fault", text)
    assert ev.kind == "guest_fault"
    assert ev.raw == {"esr": 0x93810046, "far": 0xFFFF_8000_8000_A000, "hpfar": 0x9_0000}
    assert ev.fields["vcpu_pc"] == 0xFFFF_C0C8_A1B2_C3D4
    vcpu = kvmcore.VM(arch).create_vcpu()
    res = vcpu.handle_fault(ev.raw)
    assert (res.outcome, vcpu.kvm_run.mmio.phys_addr, vcpu.kvm_run.mmio.len) == ("mmio", 0x900_0000, 4)


def test_hook_parse_trace_event_other_events(arch) -> None:
    text = "ipa 0x00000009000000, esr 0x00000092000046, far 0xffff80008000a000, pc 0xffffc0c8a1b2c3d4"
    ev = arch.parse_trace_event("kvm_mmio_nisv", text)
    assert (ev.kind, ev.raw) == ("nisv", {"esr": 0x92000046, "far": 0xFFFF_8000_8000_A000, "hpfar": 0x9_0000})
    ev = arch.parse_trace_event("kvm_access_fault", "IPA: 40a31000")
    assert (ev.kind, ev.fields, ev.raw) == ("access_fault", {"ipa": 0x40A3_1000}, None)
    ev = arch.parse_trace_event("kvm_exit", "TRAP: HSR_EC: 0x0024 (DABT_LOW), PC: 0xffffc0c8a1b2c3d4")
    assert (ev.kind, ev.fields["esr_ec"], ev.fields["esr_ec_name"]) == ("exit", 0x24, "DABT_LOW")
    assert arch.parse_trace_event("kvm_page_fault", "vcpu 0 rip 0x0 address 0x0 error_code 0x0") is None
    with pytest.raises(ValueError, match="malformed kvm_guest_fault text"):
        arch.parse_trace_event("kvm_guest_fault", "ipa zzz")


# --- docs -----------------------------------------------------------------------------------
def _docs() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[3] / "docs" / "arch" / "arm64.md").read_text()


def test_every_outcome_is_documented() -> None:
    import re
    from pathlib import Path

    import kvmcore_arm64

    source = (Path(kvmcore_arm64.__file__).parent / "abort.py").read_text()
    outcomes = set(re.findall(r'(?:Retry\(|Exit\([^,()]+,)\s*"(\w+)"', source))
    outcomes |= set(re.findall(r'outcome="(\w+)"', source)) | set(re.findall(r'"(mapped\w*)"', source))
    outcomes.add("mapped")  # Mapped's default outcome
    assert {"sea_injected", "mmio", "nisv", "userfault", "hwpoison_sigbus", "permission_relaxed",
            "mapped_gmem", "gmem_error"} <= outcomes
    table = _docs().split("## Outcomes", 1)[1].split("\n## ", 1)[0]
    missing = sorted(o for o in outcomes if f"`{o}`" not in table)
    assert not missing, f"docs/arch/arm64.md's outcome table lacks {missing}"


def test_docs_example_prints_its_comment() -> None:
    import contextlib
    import io
    import re

    block = re.search(r"```python\n(.*?)```", _docs(), re.S).group(1)
    expected = [line.split("# ", 1)[1].strip() for line in block.splitlines() if line.startswith("print(")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "arm64.md", "exec"), {})
    assert out.getvalue().split("\n")[:-1] == expected


def test_hook_prepare_memory_region_refuses_slots_beyond_the_ipa_space() -> None:
    """kvm_arch_prepare_memory_region(): (base_gfn + npages) > kvm_phys_size >> PAGE_SHIFT -> -EFAULT."""
    import errno

    vm = kvmcore.VM("arm64", ipa_bits=32)  # 4 GiB of IPA space
    vm.set_user_memory_region(0, 0xFFE0_0000, 0x20_0000)  # ends exactly at 1 << 32: allowed
    with pytest.raises(kvmcore.KvmError) as info:
        vm.set_user_memory_region(1, 0x1_0000_0000, 0x1000)  # starts at 1 << 32
    assert info.value.errno == errno.EFAULT
    with pytest.raises(kvmcore.KvmError) as info:
        vm.set_user_memory_region(0, 0xFFF0_0000, 0x20_0000, vm.memslots.by_id[0].userspace_addr)  # move past it
    assert info.value.errno == errno.EFAULT
