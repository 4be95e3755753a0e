"""``kvmcore replay`` on real excerpts as people posted them (``traces/real``, see SOURCES.md).

Every expected value is worked out by hand from the architecture manuals (the comment next to
it shows the bits): Intel SDM Vol. 3C Table 28-7 (EPT-violation exit qualification), AMD APM
Vol. 2 15.25.6 (#NPF EXITINFO1), Arm ARM ESR_ELx (EC, ISS: ISV, WnR, S1PTW, DFSC/IFSC), RISC-V
privileged spec (scause codes, htval = GPA >> 2). Nothing here was copied from kvmcore's output.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from clitools import needs

from kvmcore.cli import replay as R

REAL = Path(__file__).resolve().parent / "traces" / "real"
FILES = sorted(p.name for p in REAL.glob("*.txt"))

pytestmark = needs()


def replay(name: str, **kw) -> dict:
    return R.replay(str(REAL / name), progress=False, **kw).as_dict()


def faults(obj: dict) -> dict[tuple[str, str, bool], int]:
    return {(f["fault_kind"], f["access"], f["private"]): f["count"] for f in obj["faults"]}


def gfns(obj: dict, arch: str = "x86") -> dict[int, int]:
    return {row["gfn"]: row["count"] for row in obj["hot_gfns"][arch]["top"]}


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("unwrap", [True, False])
def test_every_line_of_every_excerpt_is_accounted_for(name: str, unwrap: bool) -> None:
    """``lines`` is the file's own line count (its newlines, plus a last line without one) and
    every line has exactly one fate, also when the file ends in a wrapped event (two excerpts do:
    the rejoined event once took the line number of its first part)."""
    data = (REAL / name).read_bytes()
    expected = data.count(b"\n") + (not data.endswith(b"\n"))
    summary = R.replay(str(REAL / name), progress=False, unwrap=unwrap)
    assert summary.lines == expected and summary.accounted() == expected


def test_corpus_is_big_enough_and_sourced() -> None:
    sources = (REAL / "SOURCES.md").read_text()
    assert len(FILES) >= 20
    for name in FILES:
        assert f"`{name}`" in sources, f"{name} has no line in SOURCES.md"
    for arch in ("x86-vmx", "x86-svm", "arm64", "riscv"):
        assert any(name.startswith(arch) for name in FILES)


@pytest.mark.parametrize("name", FILES)
def test_strict_passes(name: str, capsys) -> None:
    assert importlib.import_module("kvmcore.cli.main").main(["replay", str(REAL / name), "--strict", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["malformed"] == 0


# --- x86, Intel VMX ----------------------------------------------------------------------------
def test_gvisor_kvm_exit_paired_with_old_kvm_page_fault() -> None:
    obj = replay("x86-vmx-gvisor-6757-ept-exits.txt")
    assert obj["arch_mode"] == "auto (x86)"
    assert obj["arch_decided_by"][0]["event"] == "kvm_exit" and obj["arch_decided_by"][0]["line"] == 4
    # info1 0x181 = bits 0 (read), 7 (GLA valid), 8 (translated address): a read, final translation;
    # bits 3-5 clear: nothing mapped (not present). The kvm_page_fault after it is the same fault.
    assert faults(obj) == {("not_present", "read", False): 1}
    assert obj["paired_exits"] == 1
    assert gfns(obj) == {0x3FEF42812: 1}  # address 3fef42812000 >> 12
    assert obj["page_walk"]["x86"] == {"final_translation": 1, "guest_page_walk": 0, "unknown": 0}
    assert obj["userspace_exits"] == {"error -EFAULT (14)": 2}


def test_osdev_trace_cmd_report() -> None:
    obj = replay("x86-vmx-osdev-57777-trace-cmd.txt")
    # 0x181: read (bit 0); 0x182: write (bit 1); both with bits 7+8: final translation
    assert faults(obj) == {("not_present", "read", False): 2, ("not_present", "write", False): 1}
    assert gfns(obj) == {0x3F7369: 1, 0x3F9CE5: 1, 0x3F7208: 1}  # 0x3f7369712 >> 12 ...
    assert obj["faults_by_vcpu"]["x86"] == {"vcpu 3": 3}
    assert obj["malformed"] == 0 and obj["skipped"] >= 4  # the shell prompt and <snip...> lines


def test_kvm_page_fault_format_mail() -> None:
    obj = replay("x86-vmx-kvm-page-fault-format-2022.txt")
    # three 0x181 (read) and four 0x182 (write), every one GLA valid + translated
    assert faults(obj) == {("not_present", "read", False): 3, ("not_present", "write", False): 4}
    assert gfns(obj)[0xFEE00] == 2  # 0xfee000b0 >> 12: the local APIC page, twice
    assert obj["faults_by_vcpu"]["x86"] == {"vcpu 5": 4, "vcpu 7": 1, "vcpu 1": 1, "vcpu 6": 1}


def test_nested_hlt_loop() -> None:
    obj = replay("x86-vmx-nested-hlt-loop-2025.txt")
    # 0x181 at 0x1050: read, final. 0x1aa = bits 1 (write), 3 (readable), 5 (executable), 7, 8:
    # a write to a present read+exec page -> a write-protection fault, at 0xf78 (gfn 0).
    assert faults(obj) == {("not_present", "read", False): 1, ("write_protect", "write", False): 1}
    assert gfns(obj) == {0x1: 1, 0x0: 1}
    # kvm_exit and kvm_nested_vmexit print the same exit: one fault each time, not two
    assert obj["paired_exits"] == 2
    # the 0x1aa exit at 140.314732 has no kvm_page_fault after it; VMX's kvm_exit lacks the GPA
    assert sum(obj["exits_without_fault_event"].values()) == 1


def test_spurious_ept_loop_wrapped_by_mail() -> None:
    obj = replay("x86-vmx-spurious-ept-loop-wrapped.txt")
    # 7 kvm_page_fault lines, each with its kvm_exit: 0x184 = bit 2 (instruction fetch) + 7 + 8
    assert faults(obj) == {("not_present", "exec", False): 7}
    assert gfns(obj) == {0x20FE: 7}  # 0x20fe612 >> 12
    assert obj["unwrapped_lines"] > 0 and obj["malformed"] == 0
    loops = {lp["vcpu"]: lp["longest"] for lp in obj["fault_loops"]}
    assert loops == {"vcpu 4": 4, "vcpu 7": 3}  # vcpu 4 faults 4 times in a row, vcpu 7 3 times
    assert all(lp["pc"] == 0xFFFFFFFF820FE612 and lp["kvm"] for lp in obj["fault_loops"])
    unwrapped = R.replay(str(REAL / "x86-vmx-spurious-ept-loop-wrapped.txt"), progress=False, unwrap=False).as_dict()
    assert unwrapped["unwrapped_lines"] == 0 and unwrapped["malformed"] > 0


def test_noah_log_exit_qualification_is_a_page_walk() -> None:
    obj = replay("x86-vmx-noah-81-ept-violation-log.txt")
    logs = obj["log_syndromes"]
    assert len(logs) == 5
    for item in logs:
        # 0x83 = bits 0, 1 (read and write), 7 (GLA valid), bit 8 clear: the access was to a guest
        # paging structure (an A/D-bit update of the guest page walk); gpa 0x7fc0000000 >> 12
        assert item["gfn"] == 0x7FC0000 and item["access"] == "write" and item["page_walk"] is True


def test_shadow_paging_pf_error_code_is_ambiguous() -> None:
    obj = replay("x86-shadow-pf-loop-smep-2023.txt")
    # 0x10 has only a bit both formats define (PFERR FETCH / EPT "writable"): not decoded alone
    assert obj["ambiguous_faults"] == 1 and obj["faults"] == []


# --- x86, AMD SVM ------------------------------------------------------------------------------
def test_bugzilla_npf_quoted_printable_and_truncated_error_code() -> None:
    obj = replay("x86-svm-bugzilla-213781-npf-qp.txt")
    # EXITINFO1 0x100000014 = bits 2 (U), 4 (ID: fetch), 32 (GUEST_FINAL); GPA 0xfc000
    assert faults(obj) == {("not_present", "exec", False): 2}
    assert gfns(obj) == {0xFC: 2}
    # kvm_page_fault printed "error_code 14": the low 32 bits; the exit gives all 64
    assert obj["paired_exits"] == 2 and obj["widened_error_codes"] == 2
    assert obj["page_walk"]["x86"]["final_translation"] == 2
    assert obj["unwrapped_lines"] >= 6  # "reason =" / "npf" / "rip ..." and the rest
    assert obj["userspace_exits"] == {"KVM_EXIT_INTERNAL_ERROR (17)": 1}


def test_npf_three_vcpus() -> None:
    obj = replay("x86-svm-npf-3vcpus-2020.txt")
    # info 100000014 fd000 (old format): U + fetch + GUEST_FINAL at gfn 0xfd, on three threads
    assert faults(obj) == {("not_present", "exec", False): 3}
    assert obj["paired_exits"] == 3 and obj["widened_error_codes"] == 3
    assert sorted(obj["faults_by_vcpu"]["x86"].values()) == [1, 1, 1]


def test_nested_svm_exit_npf_is_a_page_walk_fault() -> None:
    obj = replay("x86-svm-nested-smm-exit-npf-quoted.txt")
    # 0x200000006 = bits 1 (W), 2 (U), 33 (GUEST_PAGE): a write during the guest's own page walk;
    # kvm_exit, kvm_nested_vmexit and kvm_page_fault ("error_code 6") are one fault
    assert faults(obj) == {("not_present", "write", False): 1}
    assert gfns(obj) == {0x1AB: 1}
    assert obj["page_walk"]["x86"] == {"final_translation": 0, "guest_page_walk": 1, "unknown": 0}
    assert obj["widened_error_codes"] == 1 and obj["quoted_lines"] > 0


def test_trace_cmd_cant_find_field_noise() -> None:
    obj = replay("x86-svm-nested-cant-find-field-2020.txt")
    # 0x200000006 at 0x641000: W+U+GUEST_PAGE; 0x100000014 at 0x400000: U+fetch+GUEST_FINAL
    assert faults(obj) == {("not_present", "write", False): 1, ("not_present", "exec", False): 1}
    assert gfns(obj) == {0x641: 1, 0x400: 1}
    assert obj["page_walk"]["x86"] == {"final_translation": 1, "guest_page_walk": 1, "unknown": 0}


def test_upm_mapgpa_error_code_needs_the_vendor() -> None:
    obj = replay("x86-svm-upm-mapgpa-2022-quoted.txt")
    assert obj["ambiguous_faults"] == 1  # "error_code 4": bit 2 in both formats
    svm = replay("x86-svm-upm-mapgpa-2022-quoted.txt", settings={"vendor": "svm"})
    # as an #NPF error code, 0x4 is U only: a read of a page with nothing mapped, gfn 0x84d
    assert faults(svm) == {("not_present", "read", False): 1} and gfns(svm) == {0x84D: 1}
    vmx = replay("x86-svm-upm-mapgpa-2022-quoted.txt", settings={"vendor": "vmx"})
    # as an EPT exit qualification, bit 2 is an instruction fetch
    assert faults(vmx) == {("not_present", "exec", False): 1}


def test_snp_accept_memory_private_faults() -> None:
    obj = replay("x86-svm-snp-accept-memory-2023.txt", settings={"vm_type": "snp"})
    # 0x500000004 = bits 2 (U), 32 (GUEST_FINAL), 34 (ENC: encrypted): on an SNP VM the C-bit
    # access is private (npf_interception() -> PFERR_PRIVATE_ACCESS)
    assert faults(obj) == {("not_present", "read", True): 4}
    assert gfns(obj) == {0x18CBC00: 1, 0x18CBDFF: 1, 0x18CBE00: 1, 0x18CBFFF: 1}
    assert obj["faults_by_vcpu"]["x86"] == {"vcpu 219": 4}


# --- arm64 -------------------------------------------------------------------------------------
def test_arm64_guest_fault_with_timestamps_only() -> None:
    obj = replay("arm64-mmio-trap-count-report.txt")
    assert obj["arch_mode"] == "auto (arm64)"
    # hsr 0x93800006: EC 0x24 DABT_LOW, ISV 1, SAS 0b10 (4 bytes), WnR 0 (read), DFSC 0x06
    # (translation fault, level 2), S1PTW 0; IPA 0x1c010000 -> gfn 0x1c010
    assert faults(obj) == {("translation", "read", False): 1}
    assert gfns(obj, "arm64") == {0x1C010: 1}
    assert obj["page_walk"]["arm64"] == {"final_translation": 1, "guest_page_walk": 0, "unknown": 0}
    assert obj["userspace_exits"] == {"KVM_EXIT_MMIO (6)": 1, "restart -EINTR": 1}


def test_arm64_guest_dmesg_esr() -> None:
    obj = replay("arm64-fcos-965-guest-dmesg.txt")
    logs = obj["log_syndromes"]
    # "ESR = 0x96000044" and "Oops: 96000044": EC 0x25 (DABT taken at the current EL, so not a
    # stage-2 guest fault), WnR 1, DFSC 0x04 = translation fault level 0
    assert [item["registers"] for item in logs] == ["esr=0x96000044", "esr=0x96000044"]
    assert all(not item["guest_fault"] and item["fault_kind"] == "translation" for item in logs)
    assert obj["faults"] == []


def test_arm64_ubicloud_iabt() -> None:
    obj = replay("arm64-ubicloud-1113-guest-dmesg.txt")
    # 0x8600000e: EC 0x21 IABT_CUR, IFSC 0x0e = permission fault level 2
    assert {item["fault_kind"] for item in obj["log_syndromes"]} == {"permission"}
    assert all(not item["guest_fault"] for item in obj["log_syndromes"])


def test_arm64_sel4_loader_esr_el1() -> None:
    obj = replay("arm64-sel4-microkit-423-kvm-loader.txt")
    # esr_el1 0x86000004: EC 0x21 IABT_CUR, IFSC 0x04 translation fault level 0
    (item,) = obj["log_syndromes"]
    assert item["registers"] == "esr=0x86000004" and item["fault_kind"] == "translation"


# --- RISC-V ------------------------------------------------------------------------------------
def test_riscv_kvm_error_print() -> None:
    obj = replay("riscv-kvm-dbltrp-2024.txt")
    # SEPC= and SCAUSE= are on consecutive kvm [93] lines: one register set. scause 0x10 = 16,
    # not a guest-page fault (20, 21, 23)
    (item,) = obj["log_syndromes"]
    assert item["registers"] == "sepc=0x802000d8 scause=0x10 stval=0x0 htval=0x3 htinst=0x0"
    assert item["guest_fault"] is False


def test_riscv_qemu_guest_exec_page_fault() -> None:
    obj = replay("riscv-qemu-1155-guest-exec-page-fault.txt")
    # cause 0x14 = 20: instruction guest-page fault (a fetch); no htval in QEMU's line: gpa unknown
    assert len(obj["log_syndromes"]) == 2
    assert all(item["access"] == "exec" and item["gfn"] is None for item in obj["log_syndromes"])


def test_riscv_xvisor_register_dump_over_lines() -> None:
    obj = replay("riscv-xvisor-qemu-devel-2022-quoted.txt")
    item = obj["log_syndromes"][-1]
    # scause 0x17 = 23: store/AMO guest-page fault; GPA = htval << 2 | stval[1:0]
    # = 0xee6b2be << 2 | (0x3b9acaf8 & 3) = 0x3b9acaf8 -> gfn 0x3b9ac
    assert item["gfn"] == 0x3B9AC and item["access"] == "write" and item["guest_fault"] is True
    assert obj["quoted_lines"] > 0
