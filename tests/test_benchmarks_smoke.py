"""The performance suite still runs: ``benchmarks/run.py --quick`` end to end (a few seconds).

Asserts only that it ran and produced every figure; no timing is checked (CI machines vary).
Plus behaviour checks of the core fast paths the suite's work added (stage-2 value sharing,
the host's last-VMA cache, the empty-attributes shortcut).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import kvmcore

ROOT = Path(__file__).resolve().parent.parent
ARCH_FIGURES = ("decode_per_s", "mapped_per_s", "handwired_per_s", "overhead_ratio", "userfault_roundtrips_per_s")
SLOT_COUNTS = ("1", "100", "10000", "32764")


FLOORED = ("arm64", "x86", "riscv")


def _ratio(stats: dict) -> None:
    """median/min/max of a ratio against a floor, over at least one sample pair."""
    assert stats["samples"] >= 1 and 0 < stats["min"] <= stats["median"] <= stats["max"], stats


def _figure(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out),
         "--plugin", str(ROOT / "tests" / "toyarch.py")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_quick_run_has_every_figure(quick_run: tuple[dict, str]) -> None:
    result, table = quick_run
    assert {"machine", "arches", "replay", "scaling", "startup"} <= result.keys()
    assert result["machine"]["python"] and result["machine"]["cpus"]
    assert len(result["machine"]["load_average_before"]) == 3 and len(result["machine"]["load_average_after"]) == 3
    assert "toy" in result["arches"], result["notes"]  # the test-only arch always loads
    for name in kvmcore.installed_arches():
        # every installed arch has figures, or a note saying why it was skipped
        assert name in result["arches"] or any(f"arch {name}:" in n for n in result["notes"]), name
    for name, figures in result["arches"].items():
        for key in ARCH_FIGURES:
            assert _figure(figures.get(key)), (name, key, figures)
        if name in FLOORED:  # arches the floor knows: every fault path has a ratio to its floor
            for key in ("mapped_ratio", "userfault_ratio", "mmio_ratio", "handwired_ratio"):
                _ratio(figures[key])
    scaling = result["scaling"]
    assert sorted(scaling["slots"], key=int) == list(SLOT_COUNTS)
    assert all(_figure(v) for v in scaling["slots"].values()), scaling["slots"]
    assert _figure(scaling["bytes_untouched_1tib"]) and _figure(scaling["bytes_per_mapped_page"])
    # replay and start-up need the CLI: a number, or null with a note saying why
    for key in ("events_per_s", "peak_rss_mb"):
        value = result["replay"][key]
        assert _figure(value) or (value is None and any(n.startswith("replay:") for n in result["notes"])), result
    if result["replay"]["events_per_s"] is not None:
        _ratio(result["replay"]["ratio"])
    if result["startup"]:
        for key in ("decode_ratio", "plugins_ratio"):
            _ratio(result["startup"][key])
    else:
        assert any(n.startswith("startup:") for n in result["notes"]), result
    assert "verdicts:" in table and "machine:" in table and "load average before" in table


# --- behaviour of the core fast paths -----------------------------------------------------------
def test_stage2_shared_values_keep_pfns_and_flags() -> None:
    s2 = kvmcore.Stage2(12)
    s2.map(0x10_0000, 0x5, 4096, writable=True)  # pfn below gfn: a negative offset
    s2.map(0x10_0001, 0x6, 4096, writable=True)  # same offset: the packed value is shared
    s2.map(0x10_0002, 0x900, 4096, writable=False, exec=False)
    s2.map(0x20_0123, 0x400_0123, 2 << 20, writable=True)  # a 2 MiB block
    assert s2.lookup(0x10_0000) == kvmcore.Stage2Entry(0x10_0000, 0x5, 4096, True, True, True)
    assert s2.lookup(0x10_0001).pfn == 0x6
    assert s2.lookup(0x10_0002) == kvmcore.Stage2Entry(0x10_0002, 0x900, 4096, False, False, True)
    block = s2.lookup(0x20_0123)
    assert (block.gfn, block.pfn, block.size) == (0x20_0000, 0x400_0000, 2 << 20)
    assert block.pfn_of(0x20_0123) == 0x400_0123
    assert s2.set_flags(0x10_0001, clear_bits=1)  # S2_WRITABLE
    assert not s2.lookup(0x10_0001).writable and s2.lookup(0x10_0000).writable
    assert [e.gfn for e in s2.entries()] == [0x10_0000, 0x10_0001, 0x10_0002, 0x20_0000]
    assert s2.unmap_range(0x10_0000, 0x10_0002) == 2 and len(s2) == 2


def test_host_vma_cache_follows_changes() -> None:
    host = kvmcore.HostMemory(12, lambda start, end: None)
    hva = host.mmap(4 << 20)
    pfn, writable = host.hva_to_pfn(hva + 4096, write_fault=True)
    assert writable and host.find_vma(hva).start == hva
    host.mprotect(hva, 1 << 20, kvmcore.PROT_READ)  # splits the cached VMA
    assert host.hva_to_pfn(hva + 4096, write_fault=True) == (kvmcore.KVM_PFN_ERR_FAULT, False)
    assert host.hva_to_pfn(hva + 4096, write_fault=False) == (pfn, False)
    assert host.hva_to_pfn(hva + (2 << 20), write_fault=True)[1]
    host.munmap(hva, 4 << 20)
    assert host.find_vma(hva) is None and host.mapping_size(hva) == 0
    assert host.hva_to_pfn(hva, write_fault=False) == (kvmcore.KVM_PFN_ERR_FAULT, False)


def test_attributes_shortcut_when_empty() -> None:
    from kvmcore.kvm.memory_attributes import MemoryAttributes

    attrs = MemoryAttributes()
    assert attrs.get(5) == 0
    attrs.set(4, 8, kvmcore.abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert attrs.get(5) == kvmcore.abi.KVM_MEMORY_ATTRIBUTE_PRIVATE and attrs.get(8) == 0
    attrs.set(4, 8, 0)
    assert attrs.get(5) == 0 and attrs.ranges() == []


def test_memslot_region_cache_follows_changes(vm: kvmcore.VM) -> None:
    page = vm.page_size
    for slot in range(80):  # small slots, several per 512-page region; > 64 turns the cache on
        vm.set_user_memory_region(slot, (1 << 30) + slot * 4 * page, 2 * page)
    assert vm.memslots.find == vm.memslots._find_cached
    find = vm.gfn_to_memslot
    base = (1 << 30) // page
    for _ in range(2):  # filling the cache, then from it
        assert [find(base + 4 * s + 1).id for s in range(80)] == list(range(80))
    assert find(base + 2) is None and find(base + 6) is None  # the gaps between slots
    vm.set_user_memory_region(5, (1 << 30) + 5 * 4 * page + page, 2 * page)  # move slot 5 one page up
    assert find(base + 20) is None and find(base + 21).id == 5 and find(base + 22).id == 5
    vm.set_user_memory_region(7, (1 << 30) + 7 * 4 * page, 0)  # delete slot 7
    assert find(base + 28) is None and find(base + 32).id == 8
    for slot in range(8, 80):
        vm.set_user_memory_region(slot, 0, 0)
    assert "find" not in vars(vm.memslots) and find(base + 1).id == 0  # few slots: plain search again


def test_host_region_cache_follows_changes() -> None:
    host = kvmcore.HostMemory(12, lambda start, end: None)
    hvas = [host.mmap(1 << 20) for _ in range(80)]  # > 64 VMAs turn the region cache on
    assert host.find_vma == host._find_vma_cached
    for _ in range(2):
        assert all(host.find_vma(h + 4096).start == h for h in hvas)
    host.munmap(hvas[3], 1 << 20)
    assert host.find_vma(hvas[3] + 4096) is None and host.find_vma(hvas[4]).start == hvas[4]
    host.munmap(hvas[5] + (512 << 10), 512 << 10)  # the upper half of a mapping
    assert host.find_vma(hvas[5] + (600 << 10)) is None and host.find_vma(hvas[5]).end == hvas[5] + (512 << 10)


def _bench_process():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_process
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_process


def test_startup_install_falls_back_with_a_note_when_there_is_no_checkout(tmp_path: Path) -> None:
    notes: list[str] = []
    assert _bench_process().installed_copy(tmp_path / "not-a-checkout", tmp_path, notes) is None
    assert len(notes) == 1 and notes[0].startswith("startup: no non-editable install could be built (")
    assert notes[0].endswith("; the installed command was measured")


@pytest.mark.slow
def test_startup_install_is_a_non_editable_copy_that_runs(tmp_path: Path) -> None:
    """The full run's start-up venv: every in-tree arch listed by the installed copy, whose modules
    are files in the venv (not the checkout's), and nothing left in the checkout (no build/)."""
    before = {p for p in ROOT.rglob("build") if p.is_dir()}
    notes: list[str] = []
    python = _bench_process().installed_copy(ROOT, tmp_path, notes)
    assert python is not None, notes
    proc = subprocess.run([str(python.with_name("kvmcore")), "plugins", "--json"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout) if row["kind"] == "arch"}
    assert set(rows) >= {"arm64", "x86", "riscv"} and not any(row.get("error") for row in rows.values())
    where = subprocess.run([str(python), "-c", "import kvmcore, kvmcore_arm64; print(kvmcore.__file__, kvmcore_arm64.__file__)"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path).stdout.split()
    assert len(where) == 2 and all(path.startswith(str(tmp_path / "venv")) for path in where), where
    assert {p for p in ROOT.rglob("build") if p.is_dir()} == before


def test_the_inlined_arm64_bound_still_answers_as_the_model() -> None:
    """benchmarks/inlined_bound.py is a bound only while its one-function arm64 mapped fault
    gives vcpu.handle_fault's FaultResult (and, built with no objects, its pfn and stage-2
    leaves); it checks that on every input before timing."""
    pytest.importorskip("kvmcore_arm64")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inlined_bound.py"), "--passes", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "inlined" in proc.stdout and "no objects" in proc.stdout and "x the floor" in proc.stdout


@pytest.mark.parametrize("figure, loop", [("mapped", "pipeline"), ("userfault", "floor"), ("mmio", "mmio")])
def test_fault_instructions_child_runs_one_loop(figure: str, loop: str) -> None:
    """``benchmarks/fault_instructions.py`` counts a child that builds the figure as run.py does
    and runs one of its loops on N inputs (here without valgrind): it must reach that loop."""
    pytest.importorskip("kvmcore_arm64")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fault_instructions.py"), "--child", "arm64", figure, loop, "16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.splitlines() == [f"{loop}: 16 inputs"]


def test_replay_quick_runs(tmp_path: Path) -> None:
    """``benchmarks/replay_quick.py`` (the replay verdict alone) runs and prints the floor, kvmcore
    with its ratio, and the per-line scan when asked; no timing is checked."""
    trace = tmp_path / "quick.trace"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "replay_quick.py"), "--events", "2000", "--rounds", "1",
         "--per-line", "--trace", str(trace)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["floor", "kvmcore", "per-line"]
    assert "the floor" in lines[1] and lines[3].startswith("kvmcore over the per-line scan: ")
    assert trace.stat().st_size > 2000 * 100  # the generated trace: 2,000 lines of about 125 characters
