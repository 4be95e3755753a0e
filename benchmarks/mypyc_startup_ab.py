"""Experiment (issue 15): start-up, interpreted vs compiled (mypyc), interleaved round by round.

    python benchmarks/mypyc_startup_ab.py [rounds]

Each round stashes the compiled modules (interpreted), times each command once, unstashes them
(compiled), times each again, and times the floor ``python -c "import pluggy, stevedore"``
between; prints the median wall time of each and its ratio to the floor's median. Run from the
repository root after ``python benchmarks/mypyc_build.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)
COMMANDS = {
    "decode": [os.path.join(BIN, "kvmcore"), "decode", "arm64", "esr=0x93c08007", "hpfar=0x1000", "far=0x1000000"],
    "plugins": [os.path.join(BIN, "kvmcore"), "plugins"],
    "import": [sys.executable, "-c", "import kvmcore"],
}
FLOOR = [sys.executable, "-c", "import pluggy, stevedore"]


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd="/tmp")
    return time.perf_counter() - start


def build(mode: str) -> None:
    subprocess.run([sys.executable, "benchmarks/mypyc_build.py", f"--{mode}"], stdout=subprocess.DEVNULL, check=True)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        times.setdefault("floor", []).append(wall(FLOOR))
        for mode, label in (("stash", "interpreted"), ("unstash", "compiled")):
            build(mode)
            for name, cmd in COMMANDS.items():
                times.setdefault(f"{name} {label}", []).append(wall(cmd))
        times["floor"].append(wall(FLOOR))
    floor = statistics.median(times["floor"])
    print(f"floor (import pluggy, stevedore): {floor * 1e3:.1f} ms median of {len(times['floor'])}")
    for name, values in times.items():
        if name != "floor":
            m = statistics.median(values)
            print(f"{name:22} {m * 1e3:7.1f} ms  {m / floor:5.2f}x the floor")


if __name__ == "__main__":
    main()
