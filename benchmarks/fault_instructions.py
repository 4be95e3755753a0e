"""The fault figures in instructions, which a busy machine does not change: ``python benchmarks/fault_instructions.py [ARCH ...]``.

For each arch and each fault figure of ``benchmarks/run.py`` (mapped fault, userfault round trip,
MMIO exit), counts the user-space instructions (valgrind's callgrind, ``Ir``) of kvmcore's loop
and of the floor's (``floors.FaultFloor``) over the same inputs, and prints instructions per
fault (per round trip for userfault) and their ratio.

Each count is a child process that builds the figure exactly as ``run.py`` does
(``bench_core.FAULT_FIGURES``, with smaller passes), runs every loop once as the timed run's
warm-up pass does, resets and collects garbage as every timed pass starts, and then runs one
loop over its first N inputs with the collector paused (what a collection costs depends on the
heap the set-up left, not on the loop; the timed figures include it). callgrind counts only
inside :data:`COUNTED_CALL`, through which that loop alone is called; the same child over no
inputs gives the call's own few instructions, subtracted. Every child runs once without valgrind
first, so that stale bytecode is rewritten before anything is counted.

The CPU-time ratios of ``run.py`` are the verdicts; on this shared 2-core machine they move by
10-20% with the load. Instruction counts move by 2% at most between runs (arm64's MMIO row by
1.7%, the mapped figure by 1.3%, most rows by less than 0.5%), and the floor's do not change when
kvmcore's code does, so they show whether a change of a few percent helped. They
weigh every instruction alike (a cache miss costs no more), so they are not the same number as
the timed ratios. Needs valgrind, and a libpython that keeps the symbol ``_operator_call``;
about 4 minutes for the three arches on 2 cores.
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from callgrind import collected, compiled

HERE = Path(__file__).resolve().parent
#: Inputs each counted loop runs (userfault: round trips; MMIO has a quarter of the pass, 1,024),
#: and the pass the figure is built with. The child prints how many it ran: the divisor.
COUNTED = 2048
#: The C function (``operator.call``, in libpython) inside which callgrind counts: the counted
#: loop is called through it and nothing else calls it, so the interpreter's start-up, imports,
#: set-up and exit (which moved by millions of instructions between otherwise equal children)
#: are not counted at all.
COUNTED_CALL = "_operator_call"
#: kvmcore's loop in each figure (the floor's is ``floor``).
MINE = {"mapped": "pipeline", "userfault": "userfault", "mmio": "mmio"}


class _Counted(Exception):
    """Raised by :func:`_measure_one` once the counted loop has run: the figure stops there."""


def _measure_one(name: str, n: int) -> Any:
    """A ``bench_core.Measure`` that warms every loop up, resets, then runs ``name`` on ``n`` inputs."""

    def measure(loops: Any, passes: int, chunk: int, reset: Any, keep: Any) -> Any:
        reset()
        for loop, inputs in loops.values():  # the warm-up pass: memos filled, code specialised
            loop(inputs)
        reset()
        gc.collect()  # as every timed pass starts
        loop, inputs = loops[name]
        gc.disable()  # a collection's cost depends on the heap the set-up left: not counted
        print(f"{name}: {operator.call(loop, inputs[:n])} inputs")  # counted: see COUNTED_CALL
        raise _Counted

    return measure


def child(arch_name: str, figure: str, name: str, n: int) -> int:
    sys.path.insert(0, str(HERE))
    import bench_core

    import kvmcore

    p = bench_core.Params(repeats=1, pass_faults=2 * COUNTED, userfault_pages=COUNTED, chunk=COUNTED)
    try:
        bench_core.FAULT_FIGURES[figure](kvmcore.load_arch(arch_name), p, _measure_one(name, n))
    except _Counted:
        return 0
    sys.exit(f"{arch_name} {figure}: the figure never ran its loops")


def instructions(argv: list[str]) -> tuple[int, int]:
    """(instructions, inputs the counted loop ran) of the child ``argv`` under callgrind."""
    count, stdout = collected(argv, ("--collect-atstart=no", f"--toggle-collect={COUNTED_CALL}"))
    ran = re.fullmatch(r"\S+: (\d+) inputs\n", stdout)
    if ran is None:
        sys.exit(f"no input count in the child's output: {stdout[-200:]}")
    if int(ran.group(1)) and not count:
        sys.exit(f"callgrind counted nothing inside {COUNTED_CALL}: this interpreter's libpython has no such "
                 "symbol (stripped? install its debug symbols)")
    return count, int(ran.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arches", nargs="*", default=["arm64", "riscv", "x86"], help="arches (default: all three)")
    parser.add_argument("--child", nargs=4, metavar=("ARCH", "FIGURE", "LOOP", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        arch_name, figure, name, n = args.child
        return child(arch_name, figure, name, int(n))
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    runs: dict[tuple[str, str, str], list[str]] = {}
    for arch_name in args.arches:
        for figure, mine in MINE.items():
            for label, name, n in (("base", mine, 0), ("kvmcore", mine, COUNTED), ("floor", "floor", COUNTED)):
                runs[arch_name, figure, label] = [sys.executable, __file__, "--child", arch_name, figure, name, str(n)]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(compiled, runs.values()))
        counts = dict(zip(runs, pool.map(instructions, runs.values()), strict=True))
    print(f"instructions per fault (valgrind Ir; userfault: per round trip), {sys.executable}")
    print(f"  {'arch':6} {'figure':10} {'kvmcore':>9} {'floor':>9}  ratio")
    for arch_name in args.arches:
        for figure in MINE:
            base, _ = counts[arch_name, figure, "base"]
            mine, floor = ((count - base) / ran for count, ran in (counts[arch_name, figure, label]
                                                                   for label in ("kvmcore", "floor")))
            print(f"  {arch_name:6} {figure:10} {mine:9,.0f} {floor:9,.0f}  {mine / floor:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
