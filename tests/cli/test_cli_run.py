"""``kvmcore run`` on the built-in example, the shipped examples and bad scenarios (subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import ARCHES, kvmcore_cli, needs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
needs_all = needs()
needs_arm64 = needs("arm64")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


@needs_all
def test_builtin_example_side_by_side() -> None:
    proc = kvmcore_cli("run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.strip().startswith("arm64") and "riscv" in line)
    assert header.split() == ["arm64", "riscv", "x86"]  # one column per arch
    # the post-copy step: KVM_EXIT_MEMORY_FAULT (39), -EFAULT, flags KVM_MEMORY_EXIT_FLAG_USERFAULT (1 << 4)
    assert "MEMORY_FAULT (39)" in out and "flags 0x10 USERFAULT" in out and "errno EFAULT" in out
    assert "MMIO (6)" in out and "SIGBUS BUS_MCEERR_AR" in out
    assert "all expectations met" in out


@needs_all
def test_builtin_example_json() -> None:
    proc = kvmcore_cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["ok"] is True and [a["arch"] for a in obj["arches"]] == ["arm64", "riscv", "x86"]
    step2 = obj["steps"][1]
    for arch in ARCHES:
        res = step2["results"][arch]
        assert res["exit_reason"] == 39 and res["ret"] == -14
        assert res["memory_fault"] == {"flags": 0x10, "flag_names": ["USERFAULT"], "gpa": 0x40401000, "size": 0x1000}
        assert res["syndrome"]["words"][0] != 0
    # the UART write: KVM_EXIT_MMIO (6), 4 bytes, data 0x41 little-endian in mmio.data
    mmio = obj["steps"][6]["results"]["x86"]["mmio"]
    assert mmio == {"phys_addr": 0x9000000, "len": 4, "is_write": True, "data": 0x41}


@needs_all
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_shipped_examples_pass_on_every_arch(example: Path) -> None:
    proc = kvmcore_cli("run", str(example), "--arch", "all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all expectations met" in proc.stdout


@needs_all
def test_postcopy_round_trips_counted() -> None:
    proc = kvmcore_cli("run", str(ROOT / "examples/postcopy-userfault.toml"), "--arch", "arm64", "--json")
    obj = json.loads(proc.stdout)
    first = obj["steps"][0]["results"]["arm64"]
    assert first["round_trips"] == 1 and first["exit_reason"] is None and first["mapped"]["size"] == 0x1000
    assert first["vmm_history"][0]["flags"] == 0x10


@needs_arm64
def test_failed_expectation_exits_1_naming_fault_and_difference(tmp_path: Path) -> None:
    path = write(tmp_path, """
arch = "arm64"
[[memslots]]
gpa = 0x40000000
size = "2M"
[[steps]]
name = "plain read"
access = "read"
gpa = 0x40000000
expect = { exit_reason = "MMIO" }
""")
    proc = kvmcore_cli("run", path)
    assert proc.returncode == 1
    assert "step 1 ('plain read') on arm64: exit_reason: expected KVM_EXIT_MMIO (6), got none" in proc.stderr
    assert "FAIL" in proc.stdout


def test_malformed_toml_shows_file_line_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'arch = "arm64"\n[[memslots]]\ngpa = = 1\n')
    proc = kvmcore_cli("run", path)
    assert proc.returncode == 1
    assert f"{path}:3:7: TOML syntax error" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_key_names_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, '[[steps]]\naccess = "read"\ngpa = 0x1000\ncuase = "no_slot"\n')
    proc = kvmcore_cli("run", path)
    assert proc.returncode == 1
    assert "steps[1].cuase: unknown key; expected one of:" in proc.stderr and "cause" in proc.stderr


def test_bad_value_names_path_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, '[[steps]]\naccess = "read"\ngpa = 0x1000\nexpect = { exit_reason = "MEMORY_FALT" }\n')
    proc = kvmcore_cli("run", path)
    assert proc.returncode == 1
    assert 'steps[1].expect.exit_reason = "MEMORY_FALT": expected' in proc.stderr
    path = write(tmp_path, '[[memslots]]\ngpa = 0x1000\nsize = "2X"\n')
    proc = kvmcore_cli("run", path)
    assert 'memslots[1].size = "2X": expected a size' in proc.stderr


@needs_arm64
def test_kvm_error_from_a_memslot_is_reported_with_its_place(tmp_path: Path) -> None:
    path = write(tmp_path, """
arch = "arm64"
[[memslots]]
slot = 0
gpa = 0x40000000
size = "2M"
[[memslots]]
slot = 1
gpa = 0x40100000
size = "2M"
""")
    proc = kvmcore_cli("run", path)
    assert proc.returncode == 1
    assert "memslots[2] (slot 1): KVM_SET_USER_MEMORY_REGION2 failed: [Errno 17] EEXIST" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_arm64
def test_kvm_error_in_a_step_names_the_step(tmp_path: Path) -> None:
    path = write(tmp_path, """
arch = "arm64"
[[steps]]
set_attributes = { gpa = 0x1001, size = "4K" }
""")
    proc = kvmcore_cli("run", path)
    assert proc.returncode == 1
    assert "step 1" in proc.stderr and "EINVAL" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_file_and_unknown_arch(tmp_path: Path) -> None:
    proc = kvmcore_cli("run", str(tmp_path / "nope.toml"))
    assert proc.returncode == 1 and "cannot read scenario" in proc.stderr
    proc = kvmcore_cli("run", "--arch", "mips")
    assert proc.returncode == 1 and "unknown arch 'mips'" in proc.stderr


@needs_arm64
def test_trace_hooks_go_to_stderr() -> None:
    proc = kvmcore_cli("run", str(ROOT / "examples/mmio.toml"), "--arch", "arm64", "--trace-hooks")
    assert proc.returncode == 0, proc.stderr
    assert "decode_fault" in proc.stderr and "decode_fault" not in proc.stdout


def test_host_thp_backs_a_slot_with_transparent_huge_pages(tmp_path: Path) -> None:
    # arm64 user_mem_abort(): a THP VMA gives vma_shift = PAGE_SHIFT, then
    # transparent_hugepage_adjust() maps PMD_SIZE (2 MiB) since the host maps it with a PMD.
    path = write(tmp_path, """
arch = "arm64"
[[memslots]]
gpa = 0x40000000
size = "2M"
host_page_size = "2M"
host_thp = true
[[steps]]
name = "read"
access = "read"
gpa = 0x40003000
expect = { mapped_size = "2M" }
""")
    proc = kvmcore_cli("run", path)
    assert proc.returncode == 0, proc.stderr
    assert "host pages 2M (THP)" in proc.stdout
    bad = write(tmp_path, """
arch = "arm64"
[[memslots]]
gpa = 0x40000000
size = "2M"
host_thp = true
""")
    proc = kvmcore_cli("run", bad)
    assert proc.returncode != 0 and "host_thp: needs host_page_size" in proc.stderr
