"""``kvmcore decode`` as people use it: a lone register, a pasted log line, many lines on stdin,
``--short``, colour; and the ``parse_log_text`` hook of each arch.

Expected values are worked out by hand from the architecture manuals (the comments show the
bits), never from kvmcore's output.
"""

from __future__ import annotations

import json
import os

from clitools import kvmcore_cli as cli
from clitools import needs

import kvmcore

pytestmark = needs()


# --- the hook ----------------------------------------------------------------------------------
def test_hook_parse_log_text_arm64() -> None:
    arch = kvmcore.load_arch("arm64")
    # KVM's kvm_handle_guest_abort() message: the ESR_EL2 value is what we want, EC/xFSC repeat it
    assert arch.parse_log_text("kvm [2212]: Unsupported FSC: EC=0x24 xFSC=0x21 ESR_EL2=0x92000061") == [
        {"esr": 0x92000061}]
    # mem_abort_decode(): "  ESR = 0x0000000096000045"
    assert arch.parse_log_text("  ESR = 0x0000000096000045") == [{"esr": 0x96000045}]
    # die(): the ESR printed in hex without 0x
    assert arch.parse_log_text("Internal error: Oops: 0000000096000045 [#1] SMP") == [{"esr": 0x96000045}]
    # kvm_guest_fault text: hpfar = ipa >> 12 << 4 (HPFAR_EL2.FIPA is bits 47:4 = IPA[55:12])
    assert arch.parse_log_text("ipa 0x9000000, hsr 0x93810046, hxfar 0xffff80008000a000, pc 0xffffc0c8a1b2c3d4") == [
        {"esr": 0x93810046, "far": 0xFFFF80008000A000, "hpfar": 0x90000}]
    assert arch.parse_log_text("nothing to see here") == []  # the facade: [] for none


def test_hook_parse_log_text_x86() -> None:
    arch = kvmcore.load_arch("x86")
    # old kvm_exit: "reason %s rip 0x%lx info %llx %llx"; on VMX info1 is the exit qualification
    # and info2 the interruption info, not a GPA (vmx_get_exit_info())
    assert arch.parse_log_text("kvm_exit: reason EPT_VIOLATION rip 0xffffffff8104f6a6 info 181 0") == [
        {"vendor": "vmx", "exit_qualification": 0x181}]
    assert arch.parse_log_text("EPT_VIOLATION ... info 181 0") == [{"vendor": "vmx", "exit_qualification": 0x181}]
    # SVM: info1 = EXITINFO1 (the #NPF error code), info2 = EXITINFO2 (the faulting GPA)
    assert arch.parse_log_text("reason npf rip 0xffffffff810f5a4e info 100000004 fee000b0") == [
        {"vendor": "svm", "error_code": 0x100000004, "gpa": 0xFEE000B0}]
    assert arch.parse_log_text("[48232:36034161] exit qualification = 0x83") == [
        {"vendor": "vmx", "exit_qualification": 0x83}]
    assert arch.parse_log_text("hello world") == []


def test_hook_parse_log_text_riscv() -> None:
    arch = kvmcore.load_arch("riscv")
    assert arch.parse_log_text("SCAUSE=0x15 STVAL=0xffffffc800000004 HTVAL=0x4000000 HTINST=0x0") == [
        {"scause": 0x15, "stval": 0xFFFFFFC800000004, "htval": 0x4000000, "htinst": 0}]
    # QEMU's trace: cause is scause (0x14 = 20, instruction guest-page fault), tval stval, epc sepc
    text = ("riscv_cpu_do_interrupt: hart:0, async:0, cause:0000000000000014, epc:0xffffffff802fec76, "
            "tval:0xffffffff802ff000, desc=guest_exec_page_fault")
    assert arch.parse_log_text(text) == [{"scause": 0x14, "sepc": 0xFFFFFFFF802FEC76, "stval": 0xFFFFFFFF802FF000}]
    # "cause" outside QEMU's trace is too common a word to read as scause
    assert arch.parse_log_text("root cause: 0x15 bytes") == []


# --- kvmcore decode ------------------------------------------------------------------------------
def test_decode_lone_esr_exits_0_with_unknowns() -> None:
    # esr=0x92000061: [31:26] 0x24 DABT_LOW, [24] ISV 0, [6] WnR 1 (0x61 = 0110 0001),
    # [5:0] DFSC 0x21 alignment fault; no HPFAR: the IPA and gfn cannot be known
    proc = cli("decode", "arm64", "esr=0x92000061", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["ec"] == 0x24 and obj["fsc"] == 0x21 and obj["wnr"] is True and obj["isv"] is False
    assert obj["gpa"] is None and obj["gfn"] is None and "hpfar" in obj["partial"]
    human = cli("decode", "arm64", "esr=0x92000061")
    assert human.returncode == 0 and "unknown" in human.stdout


def test_decode_lone_exit_qualification() -> None:
    # 0x181: bit 0 data read, bit 7 GLA valid, bit 8 access to the translated address (SDM Table 28-7)
    proc = cli("decode", "x86", "exit_qualification=0x181", "--short")
    assert proc.returncode == 0, proc.stderr
    assert "read" in proc.stdout and "gpa unknown" in proc.stdout


def test_decode_lone_scause() -> None:
    # scause 0x15 = 21: load guest-page fault; no htval/stval: GPA unknown
    proc = cli("decode", "riscv", "scause=0x15", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["access"] == "load" and obj["gpa"] is None


def test_decode_pasted_log_lines() -> None:
    proc = cli("decode", "arm64", "kvm [2212]: Unsupported FSC: EC=0x24 xFSC=0x21 ESR_EL2=0x92000061", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["raw"] == {"esr": 0x92000061} and obj["fault_kind"] == "alignment"
    # ESR 0x96000045: EC 0x25 DABT_CUR - the faulting kernel's own abort, not a stage-2 guest fault
    proc = cli("decode", "arm64", "ESR = 0x0000000096000045", "--json")
    assert proc.returncode == 1 and "DABT_CUR" in proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["ec"] == 0x25 and obj["fsc"] == 0x05 and obj["fault_level"] == 1 and obj["wnr"] is True
    proc = cli("decode", "x86", "EPT_VIOLATION ... info 181 0", "--short")
    assert proc.returncode == 0 and "final translation" in proc.stdout  # bits 7 and 8 set
    line = ("qemu-system-x86-1060614 [036] 2316032.840657: kvm_page_fault: vcpu 3 rip 0x7f80ed32638b "
            "address 0x00000003f7369712 error_code 0x181")
    proc = cli("decode", "x86", line, "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["gfn"] == 0x3F7369 and obj["write"] is False and obj["exec"] is False  # gpa >> 12
    proc = cli("decode", "riscv", "SCAUSE=0x17 STVAL=0x1004 HTVAL=0x4000400 HTINST=0x0", "--json")
    obj = json.loads(proc.stdout)
    # GPA = htval << 2 | stval[1:0] = 0x10001000 | 0 ; scause 23 = store: write
    assert obj["gpa"] == 0x10001000 and obj["write"] is True


def test_decode_many_from_stdin_one_line_each() -> None:
    stdin = ("> esr=0x93c08006 far=0x1008 hpfar=0x40010\n"
             "[  123.456789] kvm [99]: Unsupported FSC: EC=0x24 xFSC=0x21 ESR_EL2=0x92000061\n"
             "\n"
             "# a comment\n"
             "esr=0x92000061\n")
    proc = cli("decode", "arm64", "-", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    # 0x93c08006: DABT_LOW, WnR 0, DFSC 0x06 translation L2; hpfar 0x40010 -> IPA 0x4001000
    assert "translation read" in lines[0] and "gpa 0x4001008" in lines[0]
    assert "alignment write" in lines[1] and "gpa unknown" in lines[1]
    proc = cli("decode", "arm64", "-", "--json", stdin="esr=0x93c08006 hpfar=0x40010\nnot registers\n")
    assert proc.returncode == 1 and "no registers found" in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["gfn"] == 0x4001


def test_decode_input_file(tmp_path) -> None:
    path = tmp_path / "esr.txt"
    path.write_text("ESR_EL2=0x92000061\n")
    proc = cli("decode", "arm64", "--input", str(path))
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1
    proc = cli("decode", "arm64", "--input", str(tmp_path / "missing.txt"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_decode_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    from kvmcore.cli.decode import Paint

    class Tty:
        def isatty(self) -> bool:
            return True

    os.environ.pop("NO_COLOR", None)
    assert Paint(Tty()).flag("x") == "\x1b[1;33mx\x1b[0m"
    os.environ["NO_COLOR"] = "1"
    try:
        assert Paint(Tty()).flag("x") == "x"
    finally:
        del os.environ["NO_COLOR"]
    proc = cli("decode", "arm64", "esr=0x93c08006", "hpfar=0x40010")
    assert "\x1b[" not in proc.stdout  # a pipe: no colour


def test_decode_control_characters_are_escaped() -> None:
    proc = cli("decode", "arm64", "\x1b[31mgarbage\x07")
    assert proc.returncode == 1 and "\x1b" not in proc.stderr and "\\x1b" in proc.stderr


# --- kvmcore run - -----------------------------------------------------------------------------
def test_run_reads_a_scenario_from_stdin() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples" / "mmio.toml").read_text()
    proc = cli("run", "-", "--arch", "arm64", "--json", stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert "<stdin>" in cli("run", "-", "--arch", "arm64", stdin=text).stdout
    bad = cli("run", "-", stdin="bad = [\n")
    assert bad.returncode == 1 and "<stdin>" in bad.stderr and "TOML syntax error" in bad.stderr
