"""Bad input never yields a traceback, and nothing is allocated from a size the kernel would
refuse (issue 14): unknown arches and settings in scenarios and in ``--set``, deeply nested
TOML, and hostile scenarios run under an address-space limit in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from clitools import cli

import kvmcore

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "tests" / "cli" / "traces" / "arm64-ftrace.txt"
INSTALLED = ", ".join(kvmcore.installed_arches())
needs_arches = pytest.mark.skipif(not {"arm64", "x86", "riscv"} <= set(kvmcore.installed_arches()),
                                  reason="needs the three in-tree arch plugins")


def scenario(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


SLOT = """
[[memslots]]
gpa = 0x40000000
size = "2M"
[[steps]]
access = "read"
gpa = 0x40001000
"""


@needs_arches
@pytest.mark.parametrize(("text", "message"), [
    ("[vm.arm46]\ngranule = '16K'\n" + SLOT, "vm.arm46: unknown arch 'arm46'; installed arches: " + INSTALLED),
    ("[vm.arm64]\ngranul = '16K'\n" + SLOT, "vm.arm64.granul: unknown setting for arch 'arm64'; its settings: granule, "),
    ("[vm.x86]\nvendr = 'svm'\n" + SLOT, "vm.x86.vendr: unknown setting for arch 'x86'; its settings: vendor, "),
    (SLOT + "[[steps]]\nraw.x68 = { error_code = 0x182 }\n", "steps[2].raw.x68: unknown arch 'x68'; installed arches: " + INSTALLED),
])
def test_unknown_arch_or_setting_in_a_scenario(tmp_path: Path, text: str, message: str) -> None:
    status, out, err = cli(["run", scenario(tmp_path, text)])
    assert status == 1 and out == ""
    assert message in err, err


def test_an_arch_named_in_arch_may_have_a_table_even_if_not_installed(tmp_path: Path) -> None:
    status, out, err = cli(["run", scenario(tmp_path, 'arch = ["mips"]\n[vm.mips]\nx = 1\n' + SLOT), "--json"])
    assert status == 1
    assert "unknown arch 'mips'" in json.loads(out)["arches"][0]["error"]


@needs_arches
@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "granul=16K"], "--set granul: no installed arch has this VM setting (settings by arch: arm64: granule, "),
    (["--arch", "arm64", "--set", "granul=16K"], "arch 'arm64': bad VM setting: "),
    (["--arch", "arm64", "--set", "granule=3K"], "arch 'arm64': bad VM setting: "),
    (["--memslots", "MEMSLOTS", "--set", "vendr=svm"], "--set vendr: no installed arch has this VM setting"),
    (["--memslots", "BADSLOTS"], "--memslots: "),
])
def test_unknown_set_in_every_replay_mode(tmp_path: Path, argv: list[str], message: str) -> None:
    memslots = scenario(tmp_path, SLOT)
    bad = tmp_path / "bad.toml"
    bad.write_text("[vm.arm64]\ngranul = '16K'\n")
    argv = [memslots if a == "MEMSLOTS" else str(bad) if a == "BADSLOTS" else a for a in argv]
    status, out, err = cli(["replay", str(TRACE), "--no-progress", *argv])
    assert status == 1 and out == ""
    assert message in err, err
    if "granul" in " ".join(argv) and "--arch" in argv:
        assert "granul" in err  # the key is named


@pytest.mark.parametrize("depth", [50, 400, 5000, 100_000])
def test_deeply_nested_toml_is_a_clear_error(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("name = " + "[" * depth + "1" + "]" * depth + "\n")
    status, out, err = cli(["run", str(path)])
    assert status == 1
    assert ("nested too deeply" in err) or ("name = [" in err and "expected a string" in err), err
    assert len(err) < 1000  # the value is cut short in the message


#: Scenarios sized to make a careless model allocate gigabytes. Each line is one scenario's
#: memslots; the expected refusal comes from the kernel's limits, cited.
HOSTILE = {
    # kvm_set_memory_region(): npages > KVM_MEM_MAX_NR_PAGES ((1 << 31) - 1) is -EINVAL, checked
    # before the userfault bitmap (1 bit per page) is sized
    "slot beyond KVM_MEM_MAX_NR_PAGES, userfault all": '[[memslots]]\ngpa = 0\nsize = "16T"\nuserfault = "all"\n',
    # the largest slot the kernel accepts with 4K pages: a 256 MiB bitmap, filled by whole bytes
    "largest valid slot, userfault all": '[[memslots]]\ngpa = 0\nsize = 0x7fffffff000\nuserfault = "all"\n',
    # a second maximal bitmap exceeds the runner's budget (one maximal bitmap)
    "two maximal userfault slots": ('[[memslots]]\ngpa = 0\nsize = 0x7fffffff000\nuserfault = "all"\n'
                                    '[[memslots]]\ngpa = 0x800000000000\nsize = 0x7fffffff000\nuserfault = "all"\n'),
    # forty maximal dirty-logging slots: 10 GiB of dirty bitmaps; the VM's budget makes the
    # second one ENOMEM, as kvm_alloc_dirty_bitmap() fails when the allocation does
    "forty maximal dirty-logging slots": "".join(
        f'[[memslots]]\nslot = {i}\ngpa = {i << 44:#x}\nsize = 0x7fffffff000\nflags = ["LOG_DIRTY_PAGES"]\n' for i in range(40)),
    # guest_memfd_offset + size must fit in u64 (kvm_set_memory_region()); the file is sized from it
    "guest_memfd offset near 2**64": '[[memslots]]\ngpa = 0\nsize = "2M"\nguest_memfd = true\nguest_memfd_offset = 0xfffffffffff00000\n',
    # a size too large for any arithmetic
    "size of 2**200": '[[memslots]]\ngpa = 0\nsize = ' + str(1 << 200) + '\nuserfault = "all"\n',
}
LIMIT = 768 << 20  # bytes of address space for the whole interpreter (about 30 MiB in use idle)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_scenarios_run_in_bounded_memory(tmp_path: Path, name: str) -> None:
    # arm64's IPA space sized for the largest slots (its default is 40 bits)
    path = scenario(tmp_path, "[vm.arm64]\nipa_bits = 52\n" + HOSTILE[name] + '[[steps]]\naccess = "read"\ngpa = 0x1000\n')
    child = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))
        from kvmcore.cli.main import main
        sys.exit(main(["run", {path!r}, "--arch", "all", "--json"]))
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
    if name == "size of 2**200":  # refused when the scenario is read: no report at all
        assert proc.returncode == 1 and proc.stdout == ""
        assert "memslots[1].size" in proc.stderr and "__u64" in proc.stderr, proc.stderr
        return
    report = json.loads(proc.stdout)
    errors = {c["arch"]: c["error"] for c in report["arches"]}
    if name != "largest valid slot, userfault all":
        assert all(errors.values()), errors  # refused on every arch, each saying why
    if name == "slot beyond KVM_MEM_MAX_NR_PAGES, userfault all":
        assert all("exceed KVM_MEM_MAX_NR_PAGES" in e for e in errors.values()), errors
    if name == "forty maximal dirty-logging slots":
        assert all("ENOMEM" in e and "memslots[2]" in e for e in errors.values()), errors
    if name == "two maximal userfault slots":
        assert all("memslots[2]" in e and "userfault bitmaps would take" in e for e in errors.values()), errors


def test_a_huge_line_without_an_event_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    """Found by the replay fuzz campaign: 2 MB of ': kvm_exit: ' repeated (no timestamp, so the
    tolerant searches ran over it) peaked at 41 MB. Such a line is skipped, named by its length,
    before any search; memory stays within a few copies of the line."""
    import tracemalloc

    from kvmcore.cli import replay as R

    trace = tmp_path / "huge.txt"
    trace.write_bytes(b": kvm_exit: " * 164560 + b"\n\n")  # 1,974,720 characters, then a blank line
    R.replay(str(trace), progress=False)  # first call: plugin imports, not the line's cost
    tracemalloc.start()
    try:
        summary = R.replay(str(trace), progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (summary.lines, summary.skipped, summary.header_lines, summary.events) == (2, 1, 1, 0)
    assert "a line of 1,974,721 characters" in summary.skipped_examples[0][1]
    assert peak < 12 * 1_974_721, f"peak {peak:,} bytes"


@needs_arches
@pytest.mark.parametrize("value", ["0x" + "f" * 4000, "1" * 5000])
def test_a_register_value_of_thousands_of_digits_is_a_clear_error(value: str) -> None:
    """Found by the decode fuzz campaign: esr=0x<4,000 hex digits> decoded, then --json crashed
    printing the echoed register (Python's int-to-decimal limit of 4,300 digits). Register values
    longer than a 64-bit register written in binary are refused first, naming the register."""
    status, out, err = cli(["decode", "arm64", f"esr={value}", "hpfar=0x400010", "--json"])
    assert status == 1
    obj = json.loads(out)
    assert obj["guest_fault"] is False and f"register esr: a value of {len(value):,} characters" in obj["error"]


def test_json_output_prints_an_int_json_cannot_write_as_digits() -> None:
    from kvmcore.cli.format import jsonable

    huge = 1 << 20000  # 6,021 decimal digits: past the 4,300-digit int-to-str limit
    assert json.loads(json.dumps(jsonable({"v": huge, "small": 7}))) == {"v": "0x1" + "0" * 5000, "small": 7}
