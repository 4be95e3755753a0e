"""``kvmcore replay --jobs N`` gives the serial run's summary, whatever the ranges' cuts."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kvmcore.cli import replay
from kvmcore.cli import replay_parallel as parallel
from kvmcore.cli.replay_parallel import replay_parallel, split_points

TRACES = Path(__file__).parent / "traces"


def mixed_trace(path: Path, blocks: int, crlf: bool = False) -> None:
    """The hand-written arm64 and corrupt traces (events of every kind, malformed and lost
    lines, headers) repeated with guest faults on varying pages in between."""
    rng = random.Random(9)
    parts = [(TRACES / "arm64-ftrace.txt").read_text(), (TRACES / "corrupt-ftrace.txt").read_text()]
    lines: list[str] = []
    for b in range(blocks):
        lines.append(parts[b % 2])
        for i in range(rng.randrange(50, 300)):
            ipa = (0x40000 + rng.randrange(3000)) << 12
            hsr = rng.choice((0x92000007, 0x92000047, 0x82000007))
            lines.append(f" CPU 0/KVM-812    [000] ..... {100 + b + i * 1e-6:.6f}: kvm_guest_fault: "
                         f"ipa {ipa:#x}, hsr {hsr:#x}, hxfar {ipa:#x}, pc 0xffffc0c8a1b20000\n")
    text = "".join(lines)
    path.write_bytes((text.replace("\n", "\r\n") if crlf else text).encode())


def without_time(summary: replay.Summary) -> dict:
    d = summary.as_dict()
    d.pop("seconds")
    return d


@pytest.mark.parametrize("crlf", [False, True])
def test_parallel_summary_equals_serial(tmp_path: Path, crlf: bool) -> None:
    path = tmp_path / "t"
    mixed_trace(path, 40, crlf)
    serial = without_time(replay.replay(str(path), progress=False))
    assert serial["skipped"] > 5 and serial["lost_events"] > 0 and serial["userspace_exits"]  # a rich trace
    for jobs in (2, 3, 7):
        direct = replay_parallel(str(path), jobs, path.stat().st_size, "auto", None, {}, 10, 64 << 20)
        assert direct is not None and without_time(direct) == serial  # really in parallel
        merged = parallel.replay(str(path), jobs=jobs, progress=False)
        assert without_time(merged) == serial, jobs
        assert merged.render().split("\n", 1)[1] == replay.replay(str(path), progress=False).render().split("\n", 1)[1]


def test_parallel_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "t"
    mixed_trace(path, 12)
    out = {}
    for jobs in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "kvmcore.cli", "replay", str(path), "--json", "--jobs", jobs],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out[jobs] = json.loads(proc.stdout)
        out[jobs].pop("seconds")
    assert out["1"] == out["2"]
    bad = subprocess.run([sys.executable, "-m", "kvmcore.cli", "replay", str(path), "--jobs", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "positive number of processes" in bad.stderr


def test_split_points_cut_after_newlines(tmp_path: Path) -> None:
    path = tmp_path / "t"
    data = b"".join(b"x" * n + b"\n" for n in (0, 5, 200, 1, 3000, 7, 7, 7)) + b"tail without newline"
    path.write_bytes(data)
    for jobs in range(1, 12):
        points = split_points(str(path), len(data), jobs)
        assert points[0] == 0 and points[-1] == len(data) and points == sorted(set(points))
        assert len(points) - 1 <= jobs
        assert all(data[p - 1:p] == b"\n" for p in points[1:-1])
    assert split_points(str(path), len(data), 2)[1] == data.index(b"x" * 3000) + 3001  # the cut after the long line


def test_parallel_keeps_the_examples_of_every_range(tmp_path: Path) -> None:
    """The examples the text report lists (exits without a fault event, faults too ambiguous to
    decode alone) come from every range with their file line numbers, as in the serial run."""
    real = TRACES / "real"
    parts = [(real / "x86-vmx-nested-hlt-loop-2025.txt").read_text(),  # one exit without its fault
             (real / "x86-shadow-pf-loop-smep-2023.txt").read_text()]  # one ambiguous error code
    filler = "".join(f" CPU 0/KVM-4711   [000] d..1. {1.0 + i * 1e-6:.6f}: kvm_entry: vcpu 0, rip 0xffffffff81a3c2d0\n"
                     for i in range(400))
    path = tmp_path / "t"
    path.write_text("".join(part + filler for _ in range(6) for part in parts))
    serial = replay.replay(str(path), progress=False)
    assert len(serial.exit_only_examples) >= 3 and len(serial.ambiguous_examples) >= 3
    merged = replay_parallel(str(path), 4, path.stat().st_size, "auto", None, {}, 10, 64 << 20)
    assert merged is not None
    assert merged.exit_only_examples == serial.exit_only_examples
    assert merged.ambiguous_examples == serial.ambiguous_examples
    assert merged.render().split("\n", 1)[1] == serial.render().split("\n", 1)[1]
