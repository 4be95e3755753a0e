"""kvmcore's performance suite: ``python benchmarks/run.py [--quick] [--json FILE]``.

Measures, in one process run (so ratios are fair), for every installed arch: the decoder alone,
the mapped-fault pipeline (``vcpu.handle_fault``), the same work wired by hand, and the
userfault exit round trip; then ``kvmcore replay`` of a generated 1,000,000-event trace, the
slot-count scaling of the mapped path, the memory of a 1 TiB memslot, and the start-up time
of ``kvmcore decode``. Every figure is the median of repeated runs. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
#: The checkout: the full run installs it, non-editable, to time start-up (bench_process.installed_copy).
ROOT = Path(__file__).resolve().parents[1]

import bench_core  # noqa: E402
import bench_process  # noqa: E402
import pluggy  # noqa: E402

import kvmcore  # noqa: E402

#: Verdict targets: kvmcore's time over its floor's time, measured in the same run (issue 15).
FAULT_TARGET = 4.0
REPLAY_TARGET = 1.5
STARTUP_TARGET = 1.3
HANDWIRED_TARGET = 1.5
SLOTS_TARGET = 1.3


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu or platform.processor(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "pluggy": pluggy.__version__,
        "kvmcore": kvmcore.__version__,
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def load_arches(extra: list[str], notes: list[str]) -> dict[str, kvmcore.Arch]:
    arches: dict[str, kvmcore.Arch] = {}
    for name in kvmcore.installed_arches():
        try:
            arches[name] = kvmcore.load_arch(name)
        except Exception as exc:  # a broken plugin is skipped with a note, never fatal
            notes.append(f"arch {name}: skipped, failed to load: {type(exc).__name__}: {exc}")
    for spec in extra:
        path = Path(spec)
        if path.suffix == ".py" and path.exists():
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec)
        arch = kvmcore.load_arch(module)  # a plugin object: built fresh, not cached
        arches[arch.name] = arch
    return arches


# --- output --------------------------------------------------------------------------------
def fmt(value: Any, kind: str = "rate") -> str:
    if value is None:
        return "n/a"
    if kind == "rate":
        return f"{value:,.0f}/s ({1e6 / value:.2f} us)" if value else "0/s"
    if kind == "us":
        return f"{1e6 / value:.2f} us" if value else "n/a"
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "bytes":
        return f"{value:,.0f} B" if value < 1 << 20 else f"{value / 2**20:,.1f} MiB"
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def fmt_ratio(stats: dict[str, float] | None) -> str:
    """``median [min-max]`` of a ratio over its samples."""
    if not stats or not stats.get("samples"):
        return "n/a"
    return f"{stats['median']:.2f}x [{stats['min']:.2f}-{stats['max']:.2f}]"


def verdict(value: Any, target: float, sense: str = "max") -> str:
    if value is None:
        return "n/a"
    ok = {"min": value >= target, "max": value <= target, "below": value < target}[sense]
    return "met" if ok else "NOT met"


def ratio_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, kvmcore, floor, ratio, target, verdict): every verdict is a ratio."""
    rows = []
    for name, a in result["arches"].items():
        for key, label, floor_key in (("mapped", "mapped fault", "mapped_floor_per_s"),
                                      ("userfault", "userfault round trip", "userfault_floor_per_s"),
                                      ("mmio", "MMIO exit", "mmio_floor_per_s")):
            stats = a.get(f"{key}_ratio")
            mine = {"mapped": a.get("mapped_per_s"), "userfault": a.get("userfault_roundtrips_per_s"),
                    "mmio": a.get("mmio_exits_per_s")}[key]
            rows.append((f"{name} {label}", fmt(mine, "us"), fmt(a.get(floor_key), "us"), fmt_ratio(stats),
                         f"<= {FAULT_TARGET}x", verdict(stats and stats["median"], FAULT_TARGET)))
        stats = a.get("handwired_ratio")
        rows.append((f"{name} pipeline vs hand-wired", fmt(a.get("mapped_per_s"), "us"), fmt(a.get("handwired_per_s"), "us"),
                     fmt_ratio(stats), f"<= {HANDWIRED_TARGET}x", verdict(stats and stats["median"], HANDWIRED_TARGET)))
    rp = result["replay"]
    stats = rp.get("ratio")
    rows.append((f"replay per event, in-process ({rp.get('events', 0):,})", fmt(rp.get("inproc_per_s"), "us"),
                 fmt(rp.get("floor_per_s"), "us"), fmt_ratio(stats), f"<= {REPLAY_TARGET}x",
                 verdict(stats and stats["median"], REPLAY_TARGET)))
    st = result["startup"]
    for label in ("decode", "plugins"):
        stats = st.get(f"{label}_ratio")
        rows.append((f"start-up: kvmcore {label}", f"{st[label + '_cpu_ms']:.1f} ms" if f"{label}_ms" in st else "n/a",
                     f"{st['floor_cpu_ms']:.1f} ms" if "floor_ms" in st else "n/a", fmt_ratio(stats),
                     f"<= {STARTUP_TARGET}x", verdict(stats and stats["median"], STARTUP_TARGET)))
    slots = result["scaling"].get("slots") or {}
    if slots:
        stats = result["scaling"].get("slots_ratio")
        rows.append(("32764 memslots vs 1 (mapped fault)", fmt(slots[str(max(int(k) for k in slots))], "us"),
                     fmt(slots["1"], "us"), fmt_ratio(stats), f"<= {SLOTS_TARGET}x",
                     verdict(stats and stats["median"], SLOTS_TARGET)))
    return rows


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB; {m['implementation']} {m['python']}; "
        f"pluggy {m['pluggy']}; kvmcore {m['kvmcore']} ({m['commit'] or 'no commit'}); "
        f"{m['platform']}; {result['params']['mode']} ({result['params']['repeats']} passes)",
        f"load average before {m['load_average_before']}, after {m['load_average_after']}; "
        f"wall/CPU of timed samples {m['wall_over_cpu']}",
        "",
        "verdicts: kvmcore's time over its floor's, sample pairs run back to back: median [min-max]",
        f"{'figure':40} {'kvmcore':>11} {'floor':>11}  {'ratio':24} {'target':8} verdict",
    ]
    for label, mine, floor, ratio, target, ok in ratio_rows(result):
        lines.append(f"{label:40} {mine:>11} {floor:>11}  {ratio:24} {target:8} {ok}")
    lines += ["", "information (absolute figures depend on the machine's load):"]
    for name, a in result["arches"].items():
        lines.append(f"  {name:8} decode only {fmt(a['decode_per_s'])}, mapped {fmt(a['mapped_per_s'])}, "
                     f"userfault round trip {fmt(a['userfault_roundtrips_per_s'])}, MMIO exit {fmt(a.get('mmio_exits_per_s'))}")
    lines.append("  a mapped fault's steps alone, each over the floor's whole fault (median [min-max]): decode_fault; "
                 "faultin_pfn; building the fault, Mapped and FaultResult from decoded values (no modelling)")
    for name, a in result["arches"].items():
        st = a.get("steps") or {}
        if st:
            lines.append(f"  {name:8} " + ", ".join(f"{step} {fmt_ratio(st[step])}" for step in st)
                         + f"; whole pipeline {fmt_ratio(a.get('mapped_ratio'))}")
    rp, sc = result["replay"], result["scaling"]
    if rp.get("events_per_s"):
        lines.append(f"  replay, whole process: {rp['events']:,} events in {rp['wall_s']:.2f} s "
                     f"({fmt(rp['events_per_s'])}), peak RSS {rp['peak_rss_mb']:.1f} MiB")
    dist = rp.get("distinct")
    if dist:
        lines.append(f"  replay, {dist['events']:,} faults whose texts never repeat (in-process): {fmt(dist['per_s'])}, "
                     f"{fmt_ratio(dist['ratio'])} the floor, {fmt_ratio(dist['vs_per_line'])} the per-line scan forced")
    if rp.get("parallel_jobs"):
        lines.append(f"  replay --jobs {rp['parallel_jobs']}: {rp['parallel_wall_s']:.2f} s, speed-up "
                     f"{rp['parallel_speedup']:.2f}x over serial, summary identical: {rp['parallel_identical']}")
    for engine, wall in (rp.get("engines_wall_s") or {}).items():
        lines.append(f"  {engine} (1 thread, whole process, same lines, regex + count): {wall:.2f} s"
                     + (f"; kvmcore replay takes {rp['wall_s'] / wall:.1f}x" if rp.get("wall_s") else ""))
    st = result["startup"]
    if st.get("install"):
        lines.append(f"  start-up: {st['decode_command']} and kvmcore plugins, {st['install']}; wall "
                     f"{st['decode_ms']:.1f} / {st['plugins_ms']:.1f} ms, the floor {st['floor_ms']:.1f} ms")
    for count, value in (sc.get("slots") or {}).items():
        lines.append(f"  mapped fault with {count} memslots: {fmt(value)}")
    if sc.get("bytes_untouched_1tib") is not None:
        lines.append(f"  1 TiB memslot, untouched: {fmt(sc['bytes_untouched_1tib'], 'bytes')}; "
                     f"{sc['bytes_per_mapped_page']:.1f} B per mapped page ({sc['pages_touched']:,} touched)")
    if result["notes"]:
        lines += ["", "notes:"] + [f"  - {n}" for n in result["notes"]]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------
def run(quick: bool, extra_plugins: list[str], progress: Any) -> dict[str, Any]:
    params = bench_core.Params.quick() if quick else bench_core.Params()
    notes: list[str] = []
    started = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine(),
        "params": {"mode": "quick" if quick else "full", **params.__dict__},
        "arches": {},
        "replay": {"events_per_s": None, "peak_rss_mb": None},
        "scaling": {},
        "startup": {},
        "notes": notes,
    }
    load_before = os.getloadavg()
    result["machine"]["load_average_before"] = [round(x, 2) for x in load_before]
    arches = load_arches(extra_plugins, notes)
    for name, arch in arches.items():
        progress(f"{name}: decode, mapped path, hand-wired, userfault")
        try:
            result["arches"][name] = bench_core.bench_arch(arch, params)
        except Exception as exc:  # one arch's failure must not hide the others' figures
            notes.append(f"arch {name}: skipped, benchmark failed: {type(exc).__name__}: {exc}")
    fault_arch = next((arches[n] for n in ("arm64", *arches) if n in arches and n in result["arches"]), None)
    scaling: dict[str, Any] = {"slots": {}, "bytes_untouched_1tib": None, "bytes_per_mapped_page": None}
    if fault_arch is not None:
        progress(f"scaling ({fault_arch.name}): memslot counts")
        scaling["arch"] = fault_arch.name
        scaling["slots"] = bench_core.bench_slots(fault_arch, params)
        scaling["slots_ratio"] = dict(bench_core.SLOT_RATIO)
        progress(f"scaling ({fault_arch.name}): 1 TiB memslot memory, {params.touch_pages:,} pages touched")
        scaling.update(bench_core.bench_memory(fault_arch, params))
    else:
        notes.append("scaling: no arch loaded; figures are empty")
    result["scaling"] = scaling
    with tempfile.TemporaryDirectory(prefix="kvmcore-bench-") as tmp:
        progress(f"replay: {params.replay_events:,} events")
        result["replay"] = bench_process.bench_replay(arches, params.replay_events, params.replay_rounds, Path(tmp),
                                                      notes, bench_core.ratio_stats)
    with tempfile.TemporaryDirectory(prefix="kvmcore-bench-") as tmp:
        # start-up as installed (issue 15): the full run installs the checkout, non-editable, in
        # a temporary venv (about 20 s); --quick measures the kvmcore installed beside this Python
        python = None
        if not quick:
            progress("start-up: a non-editable install of the checkout in a temporary venv")
            python = bench_process.installed_copy(ROOT, Path(tmp), notes)
        progress("start-up")
        result["startup"] = bench_process.bench_startup(arches, params.startup_runs, notes, bench_core.ratio_stats,
                                                        python)
    result["suite_seconds"] = round(time.perf_counter() - started, 1)
    clocks = bench_core.CLOCKS
    busy = clocks["wall_ns"] / clocks["cpu_ns"] if clocks["cpu_ns"] else None
    result["machine"].update(load_average_after=[round(x, 2) for x in os.getloadavg()],
                             wall_over_cpu=round(busy, 3) if busy else None)
    if busy and busy > 1.05:
        notes.append(f"the machine was busy: timed samples took {busy:.2f}x their CPU time in wall time "
                     f"(load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after); "
                     "the in-process figures are pessimistic by about that much")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs (seconds): for CI smoke tests")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="also benchmark an unpublished arch plugin (a module name or a .py file)")
    parser.add_argument("--progress", action="store_true", help="print each step to stderr")
    args = parser.parse_args(argv)

    def progress(msg: str) -> None:
        if args.progress:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    result = run(args.quick, args.plugin, progress)
    print(table(result))
    print(f"\n(suite took {result['suite_seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
