"""``kvmcore decode`` and ``kvmcore plugins`` run as a user runs them (subprocess).

Expected values are worked out by hand from the architecture manuals / the project reference,
never by running the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from clitools import ARCHES, kvmcore_cli, needs

# esr=0x93c08006 = 1001 0011 1100 0000 1000 0000 0000 0110
#   [31:26] 100100 = 0x24 DABT_LOW    [25] IL = 1     [24] ISV = 1
#   [23:22] SAS = 0b11 = 3 (8 bytes)  [21] SSE = 0    [20:16] SRT = 0    [15] SF = 1
#   [6] WnR = 0 (a read)              [5:0] DFSC = 0x06: translation fault, level 2
# hpfar=0x40010: FIPA [47:4] = 0x4001 = IPA[55:12] -> IPA 0x4001000; gpa = IPA | FAR[11:0] = 0x4001008
ARM64_ARGS = ("decode", "arm64", "esr=0x93c08006", "far=0x1008", "hpfar=0x40010")


@needs("arm64")
def test_decode_arm64_json_fields() -> None:
    proc = kvmcore_cli(*ARM64_ARGS, "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["arch"] == "arm64"
    assert obj["gfn"] == 0x4001 and obj["gpa"] == 0x4001008
    assert (obj["write"], obj["exec"], obj["is_private"]) == (False, False, False)
    assert obj["ec"] == 0x24 and obj["ec_name"] == "DABT_LOW"
    assert obj["isv"] is True and obj["sas"] == 3 and obj["srt"] == 0 and obj["sf"] is True
    assert obj["wnr"] is False and obj["fsc"] == 0x06 and obj["fault_level"] == 2
    assert obj["fault_kind"] == "translation"
    assert isinstance(obj["esr"], int) and obj["esr"] == 0x93C08006  # a JSON number, not a string
    assert "slot" not in obj


@needs("arm64")
def test_decode_arm64_human_hex_and_meanings() -> None:
    proc = kvmcore_cli(*ARM64_ARGS)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert "0x93c08006" in lines["esr"]
    assert "0x24" in lines["ec"] and "DABT_LOW" in lines["ec_name"]
    assert "0x4001008" in lines["gpa"]
    assert "ISS[24]" in lines["isv"]  # the meaning column


@needs("arm64")
def test_decode_granule_setting_changes_gfn() -> None:
    # 16K granule: PAGE_SHIFT 14, gfn = 0x4001000 >> 14 = 0x1000
    proc = kvmcore_cli(*ARM64_ARGS, "--set", "granule=16K", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["gfn"] == 0x1000


@needs("arm64")
def test_decode_not_a_memory_fault_exits_1_with_reason() -> None:
    # esr=0x5a000000: [31:26] = 0b010110 = 0x16, HVC64 - a hypercall, not an abort
    proc = kvmcore_cli("decode", "arm64", "esr=0x5a000000", "hpfar=0")
    assert proc.returncode == 1
    assert "HVC64" in proc.stdout  # what could be decoded is still printed
    assert "EC 0x16 (HVC64) is not an abort" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs("x86")
def test_decode_x86_string_value_stays_string() -> None:
    # EPT exit qualification 0x182: bit 1 data write, bit 7 GVA valid, bit 8 GVA translated
    proc = kvmcore_cli("decode", "x86", "vendor=vmx", "exit_qualification=0x182", "gpa=0xfd000000", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["arch"] == "x86" and obj["gfn"] == 0xFD000 and obj["write"] is True and obj["exec"] is False
    assert obj["raw"]["vendor"] == "vmx"


@needs("riscv")
def test_decode_riscv_store_guest_page_fault() -> None:
    # scause 0x17 = 23, store/AMO guest-page fault; GPA = htval << 2 = 0x10000000
    proc = kvmcore_cli("decode", "riscv", "scause=0x17", "htval=0x4000000", "stval=0xffffffc800000000",
                       "htinst=0xb00023", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["gpa"] == 0x10000000 and obj["gfn"] == 0x10000 and obj["write"] is True


def test_decode_unknown_arch() -> None:
    proc = kvmcore_cli("decode", "mips", "cause=0x8")
    assert proc.returncode == 1
    assert "unknown arch 'mips'" in proc.stderr and "installed arches:" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs("arm64")
def test_decode_bad_register_value() -> None:
    proc = kvmcore_cli("decode", "arm64", "esr=0x93zz", "hpfar=0x40010")
    assert proc.returncode == 1
    assert "bad value for register esr: '0x93zz' is not a number" in proc.stderr


@needs("arm64")
def test_decode_unknown_register_and_missing_equals() -> None:
    proc = kvmcore_cli("decode", "arm64", "esx=0x1")
    assert proc.returncode == 1 and "no register 'esx'" in proc.stderr
    proc = kvmcore_cli("decode", "arm64", "esr")
    assert proc.returncode == 1 and "expected NAME=VALUE" in proc.stderr


@needs("arm64")
def test_decode_bad_setting() -> None:
    proc = kvmcore_cli(*ARM64_ARGS, "--set", "granule=8K")
    assert proc.returncode == 1
    assert "granule" in proc.stderr and "8K" in proc.stderr and "Traceback" not in proc.stderr


def test_usage_errors_exit_2() -> None:
    assert kvmcore_cli().returncode == 2
    assert kvmcore_cli("decode").returncode == 2
    assert kvmcore_cli("frobnicate").returncode == 2


@pytest.mark.parametrize("command", ["plugins", "decode", "run", "replay"])
def test_every_subcommand_has_help_with_an_example(command: str) -> None:
    proc = kvmcore_cli(command, "--help")
    assert proc.returncode == 0
    assert "example" in proc.stdout and "kvmcore " + command in proc.stdout


@needs(*ARCHES)
def test_plugins_lists_real_arches() -> None:
    proc = kvmcore_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    for name in ARCHES:
        row = rows[name]
        assert row["kind"] == "arch" and row["distribution"] == f"kvmcore-{name}" and row["error"] is None
        assert "decode_fault" in row["hooks"] and "prepare_memory_fault_exit" in row["wrappers"]
    human = kvmcore_cli("plugins")
    assert human.returncode == 0 and "kvmcore-arm64" in human.stdout and "wraps:" in human.stdout


def test_plugins_reports_a_broken_plugin(tmp_path) -> None:
    # a throwaway distribution whose arch module fails to import (see tests/fakedist.py)
    sys.path.insert(0, str(tmp_path))
    try:
        from fakedist import make_dist
    finally:
        sys.path.pop(0)
    make_dist(tmp_path, "kvmcore-fake-broken", {"kvmcore.arch": {"broken": "kvmcore_fake_broken"}},
              {"kvmcore_fake_broken": "raise ImportError('needs libfoo')\n"})
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "kvmcore.cli", "plugins"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0
    assert "broken" in proc.stdout and "FAILED TO LOAD" in proc.stdout and "needs libfoo" in proc.stdout


@needs("arm64")
@pytest.mark.parametrize(
    "argv",
    [
        ("decode", "arm64", "--short", "esr=0x93c08006", "far=0x1008", "hpfar=0x40010"),
        ("decode", "arm64", "esr=0x93c08006", "--short", "far=0x1008", "hpfar=0x40010"),
        ("decode", "--short", "arm64", "esr=0x93c08006", "far=0x1008", "hpfar=0x40010"),
    ],
    ids=["option-after-arch", "option-among-registers", "option-first"],
)
def test_decode_options_among_the_registers(argv: tuple[str, ...]) -> None:
    """An option anywhere among the positionals is an option. argparse's plain parse bound the
    REG=VALUE list empty at ARCH when an option followed it, then refused every value after the
    option as "unrecognized arguments" (on every Python version)."""
    proc = kvmcore_cli(*argv)
    assert proc.returncode == 0, proc.stderr
    # the worked example above: a read, translation fault at level 2, gpa 0x4001008, gfn 0x4001
    assert proc.stdout.startswith("arm64 esr=0x93c08006 far=0x1008 hpfar=0x40010: translation read, gpa 0x4001008, gfn 0x4001")


@needs("arm64")
def test_decode_without_arch_names_only_arch_as_missing() -> None:
    """The REG=VALUE list may be empty (then stdin or --input, or the "no registers" message):
    only ARCH is a required argument."""
    proc = kvmcore_cli("decode")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "kvmcore decode: error: the following arguments are required: ARCH"
