"""The replay verdict alone, in seconds: ``replay per event, in-process`` against ``replay_floor``.

``python benchmarks/replay_quick.py [--events N] [--rounds R] [--distinct] [--per-line] [--trace FILE]``

The same measurement as ``benchmarks/run.py`` makes for its replay row (``bench_process.py``:
whole rounds over one generated arm64 trace, floor then kvmcore, CPU time, a warm-up round,
the ratio per round, median with min and max), without the rest of the suite, so that a change
to the replay can be judged in one process in a few seconds. ``--distinct`` replays faults
whose texts never repeat (the information row), ``--per-line`` adds the per-line scan forced
(the fast path's oracle) to the rounds. The trace is written once to ``--trace`` (default: a
file in the temporary directory named after its parameters) and reused.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402
import bench_process  # noqa: E402

import kvmcore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--distinct", action="store_true", help="faults whose texts never repeat")
    ap.add_argument("--per-line", action="store_true", help="also time the per-line scan forced")
    ap.add_argument("--trace", type=Path, default=None)
    args = ap.parse_args(argv)
    path = args.trace or Path(tempfile.gettempdir()) / f"kvmcore-replay-{args.events}{'-distinct' if args.distinct else ''}.trace"
    if not path.exists():
        bench_process.write_trace(path, kvmcore.load_arch("arm64"), args.events, distinct=args.distinct)
    runs = bench_process.arm64_replay_runs(path, per_line=args.per_line)
    rates = bench_process.replay_rounds(runs, args.rounds, args.events, str(path))

    def ratio(slow: str, fast: str) -> str:
        r = bench_core.ratio_stats(rates[slow], rates[fast])
        return f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"

    for label, per_s in rates.items():
        line = f"{label:9s} {1e6 / statistics.median(per_s):6.3f} us/event"
        if label != "floor":
            line += f"  {ratio(label, 'floor')} the floor"
        print(line)
    if args.per_line:
        print(f"kvmcore over the per-line scan: {ratio('kvmcore', 'per-line')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
