"""``kvmcore replay``'s block fast path (kvmcore/cli/replay_block.py) against its oracle, the
per-line scan: the summary (``as_dict()`` and the text render) must be identical, whatever the
block size, on the real corpus and on generated arm64, x86 and riscv traces with fault loops,
several vCPUs, reads and writes, bad syndromes, unknown and malformed lines, mail quoting and
wrapped lines at block edges. Plus what the fast path is for: it counts most lines of a
canonical trace itself (checked by counting the lines the per-line scan is handed).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from clitools import needs

import kvmcore
from kvmcore.cli import replay as R
from kvmcore.cli import replay_block as B

TRACES = Path(__file__).parent / "traces"
REAL = sorted(TRACES.glob("real/*.txt")) + sorted(TRACES.glob("*.txt"))
#: Block sizes (characters): tiny ones cut nearly every line, and lines, at block edges.
BLOCKS = (1, 7, 64, 333, 4096, None)


def summary(path: Path, **kw: Any) -> tuple[dict[str, Any], str, R.Summary]:
    s = R.replay(str(path), progress=False, **kw)
    d = s.as_dict()
    d.pop("seconds")
    return d, s.render().split("\n", 1)[1], s  # the first line has the time


def assert_same(path: Path, blocks: tuple[int | None, ...] = BLOCKS, **kw: Any) -> R.Summary:
    want = summary(path, per_line=True, **kw)
    for size in blocks:
        got = summary(path, per_line=False, block_size=size, **kw)
        assert got[0] == want[0], f"{path.name}, block size {size}: as_dict differs"
        assert got[1] == want[1], f"{path.name}, block size {size}: render differs"
        assert got[2].accounted() == want[2].accounted()
    return want[2]


# --- generated traces --------------------------------------------------------------------------
ARM64_READ, ARM64_WRITE = 0x93800007, 0x93C00047  # DABT_LOW (EC 0x24), translation fault level 3
ARM64_IABT = 0x82000006  # IABT_LOW, translation fault level 2
ARM64_NOT_ABORT = 0x5A000000  # EC 0x16, HVC64: not a guest abort (decode_fault refuses it)


def arm64_line(thread: str, cpu: int, ts: float, ipa: int, hsr: int, pc: int, *, upper: bool = False) -> str:
    """``kvm_guest_fault`` as arch/arm64/kvm/trace_arm.h prints it ("ipa %#llx, hsr %#08lx,
    hxfar %#08lx, pc %#016lx"), in an ftrace ``trace`` line."""
    text = f"ipa {ipa:#x}, hsr {hsr:#08x}, hxfar {ipa:#08x}, pc {pc:#016x}"
    if upper:
        text = text.upper().replace("0X", "0x").replace("IPA", "ipa").replace("HSR", "hsr").replace("HXFAR", "hxfar").replace("PC ", "pc ")
    return f" {thread:>16}    [{cpu:03d}] .....  {ts:.6f}: kvm_guest_fault: {text}\n"


def arm64_trace(seed: int, n: int, threads: tuple[str, ...] = ("CPU 0/KVM-812", "CPU 1/KVM-813", "CPU 2/KVM-814")) -> str:
    rnd = random.Random(seed)
    out = ["# tracer: nop\n", "#\n"]
    ts = 100.0
    loop: list[Any] = []
    for _ in range(n):
        ts += 1e-6
        t = rnd.randrange(3)  # the CPU (and the thread, if there are three)
        r = rnd.random()
        if loop and rnd.random() < 0.8:  # a fault loop: the same fault again on the same vCPU
            out.append(arm64_line(*loop[:2], ts, *loop[2:]))
            if rnd.random() < 0.1:
                loop = []
            continue
        page = rnd.randrange(64)
        ipa = 0x4000_0000 + (page << 12)
        a = rnd.random()
        hsr = ARM64_WRITE if a < 0.25 else ARM64_IABT if a < 0.3 else ARM64_NOT_ABORT if a < 0.33 else ARM64_READ
        pc = 0xFFFF_8000_1000_0000 + (rnd.randrange(8) << 2)
        if r < 0.06:
            out.append(f" {threads[t % len(threads)]:>16}    [{t:03d}] .....  {ts:.6f}: kvm_exit: TRAP: HSR_EC: 0x0024 (DABT_LOW), PC: {pc:#018x}\n")
        elif r < 0.08:
            out.append("some text a person wrote between the lines\n")
        elif r < 0.09:
            out.append("\n")
        elif r < 0.11:  # wrapped by a mail client at a blank: the tail on the next line
            line = arm64_line(threads[t % len(threads)], t, ts, ipa, hsr, pc).rstrip("\n")
            cut = line.rindex(" ", 0, 76)
            out.append(line[:cut] + "\n" + line[cut + 1:] + "\n")
        elif r < 0.12:
            out.append("> " + arm64_line(threads[t % len(threads)], t, ts, ipa, hsr, pc).partition(": ")[2])  # quoted, no prefix
        elif r < 0.13:
            out.append(arm64_line(threads[t % len(threads)], t, ts, ipa, hsr, pc, upper=True))
        elif r < 0.14:  # malformed: a field missing
            out.append(arm64_line(threads[t % len(threads)], t, ts, ipa, hsr, pc).replace(", hxfar", ""))
        elif r < 0.15:
            out.append(f" {threads[t % len(threads)]:>16}    [{t:03d}] .....  {ts:.6f}: kvm_mmio: mmio write len 4 gpa 0x9000000 val 0x41\n")
        else:
            if r > 0.9:
                loop = [threads[t % len(threads)], t, ipa, hsr, pc]
            out.append(arm64_line(threads[t % len(threads)], t, ts, ipa, hsr, pc))
    return "".join(out)


def x86_trace(seed: int, n: int) -> str:
    """``kvm_page_fault`` ("vcpu %u rip 0x%lx address 0x%016llx error_code 0x%llx", 6.15+) and
    ``kvm_exit`` lines (arch/x86/kvm/trace.h), some exits an EPT violation waiting for its fault."""
    rnd = random.Random(seed)
    out = []
    ts = 1523.0
    for _ in range(n):
        ts += 1e-6
        v = rnd.randrange(4)
        gpa = 0x1_0000_0000 + (rnd.randrange(32) << 12)
        code = rnd.choice([0x181, 0x182, 0x184, 0x183])  # EPT violation exit qualifications
        rip = 0xFFFF_FFFF_81A3_C2D0 + rnd.randrange(4)
        head = f" CPU {v}/KVM-4711   [00{v}] d..1. {ts:.6f}: "
        r = rnd.random()
        if r < 0.1:
            out.append(head + f"kvm_exit: vcpu {v} reason EPT_VIOLATION rip 0x{rip:x} info1 0x{code:016x} "
                       f"info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000\n")
        elif r < 0.15:
            out.append(head + f"kvm_exit: vcpu {v} reason HLT rip 0x{rip:x} info1 0x0000000000000000 "
                       f"info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000\n")
        elif r < 0.17:
            out.append("junk in the middle\n")
        else:
            count = 4 if r > 0.95 else 1  # a fault loop on this vCPU
            for _ in range(count):
                out.append(head + f"kvm_page_fault: vcpu {v} rip 0x{rip:x} address 0x{gpa:016x} error_code 0x{code:x}\n")
    return "".join(out)


def riscv_trace(seed: int, n: int) -> str:
    """``kvm_exit`` ("SEPC:0x%lx, SCAUSE:0x%lx, STVAL:0x%lx, HTVAL:0x%lx, HTINST:0x%lx",
    arch/riscv/kvm/trace.h): guest-page faults (scause 20/21/23) and other exits."""
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        scause = rnd.choice([21, 23, 20, 21, 8, 21])  # 8: an ecall from VS-mode, not a fault
        htval = (0x8000_0000 + (rnd.randrange(16) << 12)) >> 2
        out.append(f"  qemu-system-ris-901   [001] .....  {50 + k * 1e-6:.6f}: kvm_exit: SEPC:0xffffffff80a0b1c2, "
                   f"SCAUSE:0x{scause:x}, STVAL:0x{rnd.randrange(4):x}, HTVAL:0x{htval:x}, HTINST:0x0\n")
    return "".join(out)


# --- the tests ---------------------------------------------------------------------------------
@needs()
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_corpus_same_summary(path: Path) -> None:
    assert_same(path)


@needs()
@pytest.mark.parametrize("seed", range(4))
def test_generated_arm64_same_summary(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "arm64.trace"
    path.write_text(arm64_trace(seed, 3000))
    s = assert_same(path)
    assert s.loops and s.undecodable and s.unwrapped and s.quoted_lines and s.skipped  # what the trace holds
    assert s.accounted() == s.lines


@needs()
@pytest.mark.parametrize("seed", range(3))
def test_generated_x86_same_summary(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "x86.trace"
    path.write_text(x86_trace(seed, 2000))
    for settings in ({"vendor": "vmx"}, None):  # without a vendor some faults are ambiguous
        s = assert_same(path, arch="x86", settings=settings)
        assert s.accounted() == s.lines
    assert s.paired_exits and s.loops


@needs()
def test_generated_riscv_same_summary(tmp_path: Path) -> None:
    path = tmp_path / "riscv.trace"
    path.write_text(riscv_trace(1, 2000))
    s = assert_same(path)
    assert sum(s.by_arch_kind["riscv"].values()) == 2000


def test_one_thread_is_the_prefix_every_line_shares() -> None:
    """Hand-worked blocks: the threads column is the first line's text through its first ``[``
    when every line starts with it (any CPU), else None (the thread group is matched)."""
    a0 = " CPU 0/KVM-812    [000] .....  1.000001: kvm_guest_fault: ipa 0x1000\n"
    a1 = " CPU 0/KVM-812    [001] .....  1.000002: kvm_guest_fault: ipa 0x2000\n"
    b = " CPU 1/KVM-813    [001] .....  1.000003: kvm_guest_fault: ipa 0x3000\n"
    prefix = " CPU 0/KVM-812    ["
    text = a0 + a1 + a0
    assert B.one_thread(text, 0, len(text), 3) == [prefix] * 3
    text = "x\n" + a1 + a0  # a block that starts after the first line of the read
    assert B.one_thread(text, 2, len(text), 2) == [prefix] * 2
    assert B.one_thread(a0, 0, len(a0), 1) == [prefix]
    text = a0 + b + a0  # another thread in the middle (first and last lines agree)
    assert B.one_thread(text, 0, len(text), 3) is None
    text = a0 + a1 + b  # another thread last
    assert B.one_thread(text, 0, len(text), 3) is None
    text = a0 + "some text a person wrote\n" + a1
    assert B.one_thread(text, 0, len(text), 3) is None
    colon = "host: CPU 0/KVM-812 [000] 1.5: kvm_guest_fault: ipa 0x1000\n"  # ':' before the '['
    assert B.one_thread(colon * 2, 0, 2 * len(colon), 2) is None
    no_cpu = "CPU 0/KVM-812 1.5: kvm_guest_fault: ipa 0x1000\n"  # no '[' in the first line
    assert B.one_thread(no_cpu * 2, 0, 2 * len(no_cpu), 2) is None


@needs()
@pytest.mark.parametrize("threads", [("CPU 0/KVM-812",), ("qemu-kvm[1]-77",), ("[x]",)])
def test_one_thread_traces_same_summary(tmp_path: Path, threads: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """Traces of one thread on three CPUs (what :func:`replay_block.one_thread` takes; a comm
    with a ``[`` of its own; a thread that is only ``[cpu]``-like), with loops, other events,
    prose, wrapped and quoted lines: the same summary as the per-line scan."""
    taken = []
    original = B.one_thread

    def spy(*args: Any) -> Any:
        found = original(*args)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(B, "one_thread", spy)
    path = tmp_path / "one.trace"
    path.write_text(arm64_trace(7, 3000, threads))
    s = assert_same(path, arch="arm64")  # (arch "auto" reads a short trace whole, in one block)
    assert any(taken) and s.loops and s.accounted() == s.lines
    lines = [arm64_line(threads[0], i % 4, 1 + i * 1e-6, 0x4000_0000 + (i % 50 << 12), ARM64_READ, 0xFFFF_8000_1000_0000)
             for i in range(4000)]
    path.write_text("".join(lines))  # nothing but one thread's faults: every block takes it
    taken.clear()
    s = assert_same(path, blocks=(4096, None), arch="arm64")
    assert taken and all(taken)
    assert s.by_arch_kind["arm64"] == {"guest_fault": 4000}


@needs()
def test_bench_trace_same_summary_and_mostly_fast(tmp_path: Path) -> None:
    """The benchmark's trace (benchmarks/bench_process.py's generator, uniform over 65,536 pages)."""
    bench_process = benchmark_generators()

    path = tmp_path / "bench.trace"
    # the benchmark's 65,536 pages repeat every 65,536 lines; over 1,024 pages the texts of these
    # 20,000 lines repeat about 20 times each, as the benchmark's million lines do 15 times
    pages = bench_process.TRACE_PAGES
    bench_process.TRACE_PAGES = 1024
    try:
        bench_process.write_trace(path, kvmcore.load_arch("arm64"), 20_000)
    finally:
        bench_process.TRACE_PAGES = pages
    assert_same(path, blocks=(4096, None), arch="arm64")
    handed = count_per_line(path, arch="arm64")
    # per block: the line a read cut in two, the first and the last line of the block
    assert handed <= 3 * (path.stat().st_size // B.BLOCK_SIZE + 2)


def test_texts_that_never_repeat_go_to_the_per_line_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults on new pages at new pcs: no text repeats, so once the text memo holds half its
    capacity, a block of new texts (every one judged, none counted twice) sends the next block to
    the per-line scan, which costs less a line (then the fast path tries again, backing off 1,
    2, 4... blocks). A memo of 8,192 texts: half full after the first block."""
    monkeypatch.setattr(B, "TEXT_MEMO_SIZE", 8192)
    bench_process = benchmark_generators()

    path = tmp_path / "distinct.trace"
    bench_process.write_trace(path, kvmcore.load_arch("arm64"), 20_000, distinct=True)
    assert_same(path, blocks=(4096, None), arch="arm64")
    first_block = path.read_bytes()[: B.BLOCK_SIZE].count(b"\n")
    assert count_per_line(path, arch="arm64") >= first_block - 8  # the whole second block


def benchmark_generators() -> Any:
    """``benchmarks/bench_process.py``, the module that writes the benchmark's traces."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_process

    return bench_process


def count_per_line(path: Path, **kw: Any) -> int:
    """Lines the block fast path hands to the per-line scan."""
    seen = []
    original = R._Scan.run

    def run(self: Any, records: Any, *args: Any) -> None:
        def counted() -> Any:
            for record in records:
                seen.append(record[0])
                yield record
        original(self, counted(), *args)

    R._Scan.run = run  # type: ignore[method-assign]
    try:
        R.replay(str(path), progress=False, **kw)
    finally:
        R._Scan.run = original  # type: ignore[method-assign]
    return len(seen)


@needs()
def test_sketch_and_caps_fall_back_in_order(tmp_path: Path) -> None:
    """Counts that depend on the order of the lines: the hot-gfn counter turning into a
    Space-Saving sketch (a tiny --memory), more distinct PCs than MAX_PCS, more threads than
    MAX_NAMES: the fast path leaves those lines to the per-line scan, the summary is the same."""
    rnd = random.Random(7)
    lines = []
    for k in range(R.MAX_PCS + 3000):
        thread = f"CPU {k % 300}/KVM-{1000 + k % 300}"
        lines.append(arm64_line(thread, k % 300, 10 + k * 1e-6, 0x4000_0000 + (rnd.randrange(5000) << 12), ARM64_READ,
                                0xFFFF_0000_0000_0000 + 4 * k))
    path = tmp_path / "wide.trace"
    path.write_text("".join(lines))
    s = assert_same(path, blocks=(4096, None), memory=64 << 10)
    assert not s.hot["arm64"].exact and len(s.rips["arm64"]) == R.MAX_PCS


@needs()
def test_per_line_forced_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "arm64.trace"
    path.write_text(arm64_trace(3, 500))
    lines = len(path.read_text().splitlines())
    monkeypatch.setenv(B.PER_LINE_ENV, "1")
    assert count_per_line(path) == lines  # every line
    monkeypatch.setenv(B.PER_LINE_ENV, "0")
    assert count_per_line(path) < lines / 2


def select(texts: B.TextPattern, block: str) -> list[tuple[str, str]]:
    """``(thread, "event: text")`` per line of ``block`` as the fast path selects them (both
    line patterns), ``("", "")`` for a line it leaves to the per-line scan."""
    n = block.count("\n")
    out = []
    for rx in (B.LINE_RE, B.SAFE_LINE_RE):
        found = rx.findall(block)
        if len(found) != n:
            continue
        picked = []
        for thread, rest in found:
            key = texts.key(rest) if rest else None
            picked.append((thread, key) if key is not None else ("", ""))
        out.append(picked)
    assert out and all(p == out[-1] for p in out)  # the safe pattern agrees wherever both apply
    return out[0]


def test_block_pattern_agrees_with_the_event_regex() -> None:
    """Hand-made lines: where the block pattern takes a line, EVENT_RE finds the same event and
    text (the per-line scan's view); lines it must leave alone are not taken."""
    texts = B.TextPattern({"kvm_guest_fault": ["ipa 0x[0-9a-f]+"]})
    taken = [" CPU 0/KVM-1 [000] ..... 1.5: kvm_guest_fault: ipa 0x10  ",
             "x 2: kvm:kvm_guest_fault: ipa 0x10",
             "  12: kvm_guest_fault: ipa 0x10"]
    left = ["a: b 1.0: kvm_guest_fault: ipa 0x10",  # a colon before the timestamp
            " 1.0: kvm_guest_fault:ipa 0x10",  # no blank after the event
            " 1.0: kvm_guest_fault: ipa 0x10 more",
            " 1.2.3: kvm_guest_fault: ipa 0x10",
            " 1.0: other_fault: ipa 0x10",
            " 1.0: kvm_guest_fault:x: ipa 0x10",
            " 1.0: kvm_guest_fault:\tipa 0x10",  # stricter than EVENT_RE: the per-line scan takes it
            " 1.0: KVM:kvm_guest_fault: ipa 0x10x"]
    for line in taken:
        (thread, key), = select(texts, line + "\n")
        m = R._EVENT_RE.search(line)
        assert m is not None and m[3] == "kvm_guest_fault" and thread == line[:m.start()]
        assert key.partition(":")[2].strip() == line[m.end():].rstrip()
    for line in left:
        assert select(texts, line + "\n") == [("", "")]


def test_arch_info_trace_patterns_checked() -> None:
    from kvmcore.plugin.isolation import _check_trace_patterns, trace_pattern_error

    assert _check_trace_patterns({"kvm guest": "x"}) is not None  # at load: names and strings
    assert _check_trace_patterns({"kvm_guest_fault": 5}) is not None
    assert _check_trace_patterns(["kvm_guest_fault"]) is not None
    assert _check_trace_patterns({"kvm_guest_fault": "ipa ("}) is None  # compiled by replay only
    assert "capturing group" in (trace_pattern_error("kvm_guest_fault", "ipa (0x[0-9a-f]+)") or "")
    assert "not a regular expression" in (trace_pattern_error("kvm_guest_fault", "ipa (") or "")
    assert trace_pattern_error("kvm_guest_fault", "ipa (?:0x[0-9a-f]+)") is None


@needs()
@pytest.mark.parametrize("name", ["arm64", "x86", "riscv"])
def test_plugin_patterns_select_what_the_parser_parses(name: str) -> None:
    """Each in-tree plugin's canonical pattern takes the lines of the real traces that the
    kernel printed in that form, and the arch's parser (the oracle) parses every one of them."""
    arch = kvmcore.load_arch(name)
    patterns = arch.info.trace_patterns
    assert patterns
    texts = B.TextPattern({e: [p] for e, p in patterns.items()})
    taken = 0
    for path in REAL:
        for line in path.read_text(errors="replace").splitlines():
            for _thread, key in select(texts, line + "\n"):
                if key:
                    event, _, text = key.partition(":")
                    assert arch.parse_trace_event(event, text.strip()) is not None, line
                    taken += 1
    generated = {"arm64": arm64_trace(1, 200), "x86": x86_trace(1, 200), "riscv": riscv_trace(1, 200)}[name]
    for _thread, key in select(texts, generated):
        if key:
            event, _, text = key.partition(":")
            assert arch.parse_trace_event(event, text.strip()) is not None
            taken += 1
    assert taken > 0
    assert all(re.compile(p).groups == 0 for p in patterns.values())  # no capturing group


@needs()
def test_parallel_ranges_count_as_the_serial_per_line_scan(tmp_path: Path) -> None:
    """--jobs: each byte range goes through the block fast path; the merged summary is the
    serial per-line one (a trace without fault loops, which ranges do not follow across)."""
    from kvmcore.cli import replay_parallel

    bench_process = benchmark_generators()

    path = tmp_path / "bench.trace"
    bench_process.write_trace(path, kvmcore.load_arch("arm64"), 6000)
    want = summary(path, per_line=True)
    for jobs in (2, 3):
        got = replay_parallel.replay_parallel(str(path), jobs, path.stat().st_size, "auto", None, {}, 10, 64 << 20)
        assert got is not None
        d = got.as_dict()
        d.pop("seconds")
        assert d == want[0]


@needs("arm64")
def test_many_short_lines_stay_in_bounded_memory(tmp_path: Path) -> None:
    """A block of very short lines is matched in parts (MAX_BLOCK_LINES): a 1 MiB read of blank
    lines does not become a million-entry column."""
    import tracemalloc

    path = tmp_path / "blank.trace"
    fault = arm64_line("CPU 0/KVM-812", 0, 1.0, 0x4000_0000, ARM64_READ, 0xFFFF_8000_1000_0000)
    path.write_text("\n" * 120_000 + fault * 50 + "\n" * 40_000 + fault * 50)
    assert_same(path, blocks=(None,), arch="arm64")
    R.replay(str(path), progress=False, arch="arm64")  # warm: the arch and its modules loaded
    tracemalloc.start()
    try:
        R.replay(str(path), progress=False, arch="arm64", per_line=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes"


@needs("arm64")
def test_events_run_finds_the_same_loops(tmp_path: Path) -> None:
    """--events decodes every fault on its own (no memo); fault loops are the same faults in a
    row by their registers and pc, so its summary is the one without --events (before, a run
    with --events found no loop at all: loops compared memo entries)."""
    pytest.importorskip("pyarrow")
    path = tmp_path / "loops.trace"
    rnd = random.Random(5)
    lines = []
    for k in range(300):
        ipa = 0x4000_0000 + (rnd.randrange(8) << 12)
        for _ in range(rnd.choice([1, 1, 4])):  # a loop of 4 now and then
            lines.append(arm64_line(f"CPU {k % 2}/KVM-81{k % 2}", k % 2, 1 + len(lines) * 1e-6, ipa, ARM64_READ,
                                    0xFFFF_8000_1000_0000))
    path.write_text("".join(lines))
    plain = summary(path)
    with_events = summary(path, events=str(tmp_path / "out.parquet"))
    assert plain[2].loops
    with_events[0]["notes"] = [n for n in with_events[0]["notes"] if "guest fault events to" not in n]
    assert with_events[0] == plain[0]


@needs("arm64")
def test_exits_and_entries_between_the_faults(tmp_path: Path) -> None:
    """A trace as `trace-cmd record -e kvm` gives it: kvm_exit, kvm_guest_fault, kvm_entry for
    every fault (arch/arm64/kvm/trace_arm.h formats). The exits and entries are in the arch's
    trace_patterns too (counted only), so the fast path keeps whole blocks; same summary."""
    out = []
    for i in range(6000):
        ts, pc = 10 + i * 3e-6, 0xFFFF_C0C8_A1B2_0000 + ((i & 15) << 2)
        ipa = 0x4000_0000 + ((i * 7 % 512) << 12)
        head = f" CPU {i % 2}/KVM-81{i % 2}    [00{i % 2}] ....."
        out.append(f"{head} {ts:.6f}: kvm_exit: TRAP: HSR_EC: 0x0024 (DABT_LOW), PC: {pc:#018x}\n")
        out.append(f"{head} {ts + 1e-6:.6f}: kvm_guest_fault: ipa {ipa:#x}, hsr {ARM64_READ:#08x}, hxfar {ipa:#08x}, "
                   f"pc {pc:#016x}\n")
        out.append(f"{head} {ts + 2e-6:.6f}: kvm_entry: PC: {pc:#018x}\n")
    path = tmp_path / "triplets.trace"
    path.write_text("".join(out))
    s = assert_same(path, blocks=(4096, None), arch="arm64")
    assert s.by_arch_kind["arm64"] == {"exit": 6000, "guest_fault": 6000, "entry": 6000}
    assert count_per_line(path, arch="arm64") < 100


@needs("arm64")
def test_a_broken_pattern_leaves_its_lines_to_the_per_line_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin's trace_patterns entry that is not a regular expression (or has a capturing
    group) is named in a note; its event's lines are read one by one, the summary unchanged."""
    from kvmcore_arm64 import plugin

    path = tmp_path / "arm64.trace"
    path.write_text(arm64_trace(2, 400))
    want = summary(path, per_line=True)
    monkeypatch.setitem(plugin.TRACE_PATTERNS, "kvm_guest_fault", "ipa (0x")
    got = summary(path, per_line=False)
    notes = [n for n in got[0]["notes"] if "trace_patterns['kvm_guest_fault']" in n]
    assert len(notes) == 1 and "not a regular expression" in notes[0]
    got[0]["notes"] = [n for n in got[0]["notes"] if n not in notes]
    assert got[0] == want[0]


def test_without_the_c_counting_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``collections._count_elements`` is private to CPython: without it the fast path counts
    with the same loop in Python, and gives the same summary (collections.Counter the oracle)."""
    from collections import Counter

    counts: dict[Any, int] = {"a": 2}
    B._count_elements_py(counts, ["a", "b", "a", 7])
    assert counts == Counter(a=2) + Counter(["a", "b", "a", 7])
    monkeypatch.setattr(B, "_count_elements", B._count_elements_py)
    path = tmp_path / "t"
    path.write_text("".join(arm64_line("CPU 0/KVM-7", 0, 1.0 + i * 1e-6, (0x40000 + i % 50) << 12,
                                       ARM64_READ if i % 3 else ARM64_WRITE, 0xFFFF800010000000 + (i % 7) * 4)
                            for i in range(3000)))
    assert_same(path, blocks=(4096, None), arch="arm64")


def test_new_texts_are_judged_until_the_memo_is_half_full(tmp_path: Path) -> None:
    """Below half the memo's capacity (65,536 texts) new texts stay on the fast path: repeats can
    only show within the memo's horizon (a trace going over the same pages again), and the extra
    cost of judging them is bounded by that half."""
    bench_process = benchmark_generators()

    path = tmp_path / "distinct.trace"
    bench_process.write_trace(path, kvmcore.load_arch("arm64"), 20_000, distinct=True)
    assert 20_000 < B.TEXT_MEMO_SIZE // 2
    handed = count_per_line(path, arch="arm64")
    assert handed <= 3 * (path.stat().st_size // B.BLOCK_SIZE + 2)  # each read's first, last, cut lines


@needs()
def test_lines_without_a_colon_and_texts_not_canonical(tmp_path: Path) -> None:
    """A line with no colon (blank, a ``#`` header without one) lets the cheap line pattern run
    into the next line: that block is split again by the pattern confined to one line, and its
    canonical lines are still counted by the fast path. A pattern event whose text is not in the
    kernel's canonical form (upper-case hex, a field missing) goes to the per-line scan, and is
    remembered as such: the summary is the per-line scan's."""
    lines = []
    for k in range(3000):
        lines.append(arm64_line("CPU 0/KVM-812", k & 1, 100.0 + k * 1e-6, 0x4000_0000 + ((k % 50) << 12),
                                ARM64_READ, 0xFFFF_8000_1000_0000))
        if k % 500 == 7:
            lines.append("\n")  # no colon: LINE_RE's match runs into the next line
            lines.append("#   |  |\n")
        if k % 300 == 11:  # kvm_guest_fault, not canonical: the per-line scan parses it
            lines.append(arm64_line("CPU 0/KVM-812", 0, 100.5, 0x4000_1000, ARM64_READ, 0xFFFF_8000_1000_0000, upper=True))
            lines.append(" CPU 0/KVM-812 [000] ..... 100.6: kvm_guest_fault: ipa 0x40001000, hsr 0x93800007\n")
    path = tmp_path / "gaps.trace"
    path.write_text("".join(lines))
    s = assert_same(path)
    assert s.events == 3000 + 10  # and the ten upper-case texts, which the parser accepts
    assert count_per_line(path) < len(lines) // 10  # the canonical lines are still counted in bulk
    text = "".join(lines[:40])
    texts = B.TextPattern({"kvm_guest_fault": [kvmcore.load_arch("arm64").info.trace_patterns["kvm_guest_fault"]]})
    assert len(B.LINE_RE.findall(text)) < text.count("\n")  # the cheap pattern ran over a blank line
    picked = select(texts, text)  # the confined pattern, one answer per line
    # the first 40 lines: 36 canonical, a blank, a "#" line, the upper-case and the short text
    assert [key for _, key in picked].count("") == 4


@needs()
def test_an_event_line_longer_than_any_event_is_skipped_whole(tmp_path: Path) -> None:
    """The kernel prints an event into a trace_seq of 8 KiB (include/linux/trace_seq.h), so a
    100,000-character ``kvm_guest_fault`` line is not one: it is skipped by its length before
    its text is copied or parsed (a pasted megabyte costs no copies of itself)."""
    good = arm64_line("CPU 0/KVM-812", 0, 100.0, 0x4000_0000, ARM64_READ, 0xFFFF_8000_1000_0000)
    long = good.rstrip("\n") + "x" * (100_000 - len(good)) + "\n"
    path = tmp_path / "long.trace"
    path.write_text(good + long + good)
    s = assert_same(path, blocks=(64, None))
    assert s.events == 2 and s.skipped == 1
    lineno, reason, _ = s.skipped_examples[0]
    assert lineno == 2 and reason.startswith("a line of 100,000 characters")
