"""Fuzzing ``kvmcore replay``: trace files of random bytes, huge lines, NUL, invalid UTF-8,
terminal escape sequences and near misses of real event lines.

Properties: exit status 0, 1 or 2 and no traceback (``fuzzcli.check_common``); the JSON summary
accounts for every line read (events + header lines + lost-event markers + skipped lines +
events no arch decodes == lines, and lines is the file's line count as Python's universal
newlines split it); memory stays within a bound proportional to the input.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

from fuzzcli import run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import kvmcore

TRACES = Path(__file__).parent.parent / "cli" / "traces"
#: Real event lines from the test traces (every arch's formats): the seeds of the near misses.
REAL_LINES = sorted({line for f in sorted(TRACES.glob("*.txt")) for line in f.read_text().splitlines() if ": kvm" in line}
                    # pasted input as people post it: mail quoting, wrapped tails, kernel-log lines with registers
                    | {line for f in sorted(TRACES.glob("real/*.txt")) for line in f.read_text().splitlines() if line.strip()})
PREFIX = "       CPU 0/KVM-812     [001] .....    88.120001: "
EVENTS = ["kvm_guest_fault", "kvm_page_fault", "kvm_exit", "kvm_entry", "kvm_mmio", "kvm_userspace_exit",
          "kvm_access_fault", "kvm_mmio_nisv", "kvm_mmio_emulate", "fast_page_fault", "kvm:kvm_exit", "broken_fault"]
JUNK = st.sampled_from(["\x00", "\x1b[2J", "\x1b]0;title\x07", "\r", "\x85", "\u2028", "\ufeff", "\udcff", "%s%n",
                        "0x" + "f" * 40, "-1", "99999999999999999999999", "LOST 5 EVENTS", "CPU:3 [LOST 18446744073709551615 EVENTS]",
                        "#", " ", ":", "0x", "reason", "error_code", "(", ")"])


def mutate(line: str, edits: list[tuple[int, int, str]]) -> str:
    for pos, cut, text in edits:
        pos %= len(line) + 1
        line = line[:pos] + text + line[pos + cut:]
    return line


NEAR_MISS = st.builds(
    mutate,
    st.sampled_from(REAL_LINES),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 8), st.one_of(JUNK, st.text(max_size=6))), max_size=3),
)
EVENT_TEXT = st.builds(lambda ev, text: PREFIX + ev + ": " + text, st.sampled_from(EVENTS), st.text(max_size=80))
LINE = st.one_of(
    NEAR_MISS.map(lambda s: s.encode("utf-8", "surrogatepass")),
    EVENT_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda n, c: c * n, st.integers(0, 300_000), st.sampled_from([b"A", b"\x00", b"\xff", b"0x1 ", b": kvm_exit: "])),
)
#: What the file ends each line with (bare \r and \r\n too: universal newlines split on both).
ENDINGS = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r", b""])


def expected_lines(data: bytes) -> int:
    """The file's line count as ``open(..., errors="replace")`` iterates it: an oracle built
    from the io module, not from kvmcore."""
    return sum(1 for _ in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace"))


_warm: list[bool] = []


def warm_up(directory: Path) -> None:
    """One replay per arch mode of a real trace, once per process: what the first run loads."""
    if _warm:
        return
    for arch in ("auto", *kvmcore.installed_arches()):
        run_cli(["replay", str(TRACES / "arm64-ftrace.txt"), "--json", "--no-progress", "--arch", arch])
    _warm.append(True)


def check_accounting(summary: dict, data: bytes) -> None:
    # each line has one fate: an event, a header/comment line, a lost-events marker, a skipped
    # line, an event no arch decodes, a kernel-log line with registers, or a wrapped tail rejoined
    accounted = (summary["events"] + summary["header_lines"] + summary["lost_event_lines"] + summary["skipped"]
                 + sum(summary["other_events"].values()) + summary["log_lines"] + summary["unwrapped_lines"])
    assert summary["lines"] == expected_lines(data), summary
    assert accounted == summary["lines"], summary


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=st.lists(st.tuples(LINE, ENDINGS).map(b"".join), max_size=40),
       arch=st.sampled_from(["auto", *kvmcore.installed_arches()]),
       strict=st.booleans(),
       jobs=st.sampled_from(["1", "1", "1", "2"]))
# found by a long campaign: a 3 MB line the arch probe read whole (its last character outside the
# BMP, so 4 bytes a character) was copied again into the block fast path's first block (49 MB)
@example(lines=[b": kvm_exit: " * 247919, "\U00010000\n\n".encode()], arch="auto", strict=False, jobs="1")
def test_replay_accounts_for_every_line(tmp_path_factory, lines: list[bytes], arch: str, strict: bool, jobs: str) -> None:
    data = b"".join(lines)
    path = tmp_path_factory.getbasetemp() / "trace.txt"  # one file, rewritten per example
    path.write_bytes(data)
    # --jobs 2: the parallel replay (ranges cut after a newline, summaries merged) counts the same
    argv = ["replay", str(path), "--json", "--no-progress", "--arch", arch, "--jobs", jobs] + (["--strict"] if strict else [])
    warm_up(path.parent)  # plugins loaded, modules imported: not charged to this input
    tracemalloc.start()
    try:
        run = run_cli(argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert run.status in (0, 1)
    assert run.status == 0 or strict, run.err
    check_accounting(json.loads(run.out), data)
    # bounded: a fixed allowance (decoder memos, sketches, JSON) plus a few times the input
    assert peak < (24 << 20) + 8 * len(data), f"peak {peak:,} bytes for {len(data):,} bytes of input"


# --- the block fast path against the per-line scan ------------------------------------------------
#: Canonical fault lines (the block fast path's) with registers drawn from a few values, so that
#: fault loops, repeated texts and several vCPUs come up; undecodable syndromes among them.
THREADS = st.sampled_from(["CPU 0/KVM-812", "CPU 1/KVM-813", "qemu-system-aar-77"])
ARM64_FAULT = st.builds(
    lambda thread, cpu, ipa, hsr, pc: (f"{thread:>16} [{cpu:03d}] .....  88.{cpu:06d}: kvm_guest_fault: "
                                       f"ipa {ipa:#x}, hsr {hsr:#08x}, hxfar {ipa:#08x}, pc {pc:#016x}"),
    THREADS, st.integers(0, 3), st.sampled_from([0x40000000, 0x40001000, 0x40001234, 0]),
    st.sampled_from([0x93800007, 0x93C00047, 0x82000006, 0x5A000000, 0x92000061]),
    st.sampled_from([0xFFFF800010000000, 0xFFFF800010000004]))
X86_FAULT = st.builds(
    lambda v, gpa, code: (f" CPU {v}/KVM-4711   [00{v}] d..1. 1523.{v:06d}: kvm_page_fault: vcpu {v} rip 0xffffffff81a3c2d0 "
                          f"address {gpa:#018x} error_code {code:#x}"),
    st.integers(0, 2), st.sampled_from([0x100000000, 0x100001000]), st.sampled_from([0x181, 0x182, 0x184, 0x100000182]))
#: A burst of canonical lines, each repeated: fault loops that start and end inside a block.
BURST = st.lists(st.tuples(ARM64_FAULT, st.integers(1, 5)), min_size=2, max_size=8).map(
    lambda xs: "\n".join(line for line, n in xs for _ in range(n)))
BLOCK_LINE = st.one_of(BURST, BURST, ARM64_FAULT, ARM64_FAULT, X86_FAULT, NEAR_MISS, EVENT_TEXT,
                       st.sampled_from(["", "# comment", "> quoted: kvm_guest_fault: ipa 0x1000, hsr 0x93800007,"]),
                       st.text(max_size=30))


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.tuples(BLOCK_LINE, st.sampled_from(["\n", "\n", "\n", "\r\n", ""]), st.sampled_from([1, 1, 2, 3, 5]))
                     .map(lambda t: (t[0] + t[1]) * t[2]), max_size=30),  # repeated lines: fault loops
       block=st.sampled_from([1, 97, 400, 2000, 1 << 20]), arch=st.sampled_from(["auto", "arm64", "x86"]), memory=st.sampled_from([64 << 20, 1024]))
def test_block_fast_path_counts_as_the_per_line_scan(tmp_path_factory, lines: list[str], block: int, arch: str,
                                                     memory: int) -> None:
    """kvmcore/cli/replay_block.py against its oracle: the same summary (``as_dict`` and the
    text render) for any input and any block size, including tiny memory budgets (the hot-gfn
    sketch, which counts in order)."""
    from kvmcore.cli import replay as R

    if arch != "auto" and arch not in kvmcore.installed_arches():
        return
    path = tmp_path_factory.getbasetemp() / "block.txt"
    path.write_bytes("".join(lines).encode("utf-8", "surrogatepass"))
    out = []
    for per_line in (True, False):
        s = R.replay(str(path), arch=arch, progress=False, memory=memory, per_line=per_line, block_size=block)
        d = s.as_dict()
        d.pop("seconds")
        out.append((d, s.render().split("\n", 1)[1], s.accounted()))
    assert out[0] == out[1]
