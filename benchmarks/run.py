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

import bench_core  # noqa: E402
import bench_process  # noqa: E402
import pluggy  # noqa: E402

import kvmcore  # noqa: E402

#: (figure, target, "min" if higher is better / "max" if lower is better)
ARCH_TARGETS = {
    "mapped_per_s": (200_000, "min"),
    "overhead_ratio": (1.5, "max"),
    "userfault_roundtrips_per_s": (80_000, "min"),
}


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
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "bytes":
        return f"{value:,.0f} B" if value < 1 << 20 else f"{value / 2**20:,.1f} MiB"
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def verdict(value: Any, target: float, sense: str) -> str:
    if value is None:
        return "n/a"
    ok = {"min": value >= target, "max": value <= target, "below": value < target}[sense]
    return "met" if ok else "NOT met"


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB; {m['implementation']} {m['python']}; "
        f"pluggy {m['pluggy']}; kvmcore {m['kvmcore']} ({m['commit'] or 'no commit'}); "
        f"{m['platform']}; {result['params']['mode']} ({result['params']['repeats']} passes, medians); "
        f"load {m['load_average_before'][0]} -> {m['load_average_after'][0]}, wall/CPU {m['wall_over_cpu']}",
        "",
        f"{'arch':8} {'decode only':>24} {'mapped (pipeline)':>24} {'hand-wired':>24} {'ratio':>7} {'userfault round trip':>26}",
    ]
    for name, a in result["arches"].items():
        lines.append(
            f"{name:8} {fmt(a['decode_per_s']):>24} {fmt(a['mapped_per_s']):>24} {fmt(a['handwired_per_s']):>24} "
            f"{fmt(a['overhead_ratio'], 'ratio'):>7} {fmt(a['userfault_roundtrips_per_s']):>26}"
        )
    if not result["arches"]:
        lines.append("(no arch loaded)")
    rp, sc = result["replay"], result["scaling"]
    lines += ["", "figure                                    value                      target           verdict"]
    rows: list[tuple[str, Any, str, str, str]] = []
    for name, a in result["arches"].items():
        rows.append((f"{name} mapped faults/s", a["mapped_per_s"], "rate", ">= 200,000/s", verdict(a["mapped_per_s"], 200_000, "min")))
        rows.append((f"{name} pipeline / hand-wired", a["overhead_ratio"], "ratio", "<= 1.5x", verdict(a["overhead_ratio"], 1.5, "max")))
        rows.append((f"{name} userfault round trips/s", a["userfault_roundtrips_per_s"], "rate", ">= 80,000/s",
                     verdict(a["userfault_roundtrips_per_s"], 80_000, "min")))
    rows.append((f"replay events/s ({rp.get('events', '?')} events)", rp["events_per_s"], "rate", ">= 200,000/s",
                 verdict(rp["events_per_s"], 200_000, "min")))
    rows.append(("replay peak RSS (MiB)", rp["peak_rss_mb"], "num", "< 100", verdict(rp["peak_rss_mb"], 100, "below")))
    slots = sc["slots"]
    for count, value in slots.items():
        rows.append((f"mapped faults/s, {count} memslots", value, "rate", "", ""))
    flat = slots["1"] / slots[str(max(int(k) for k in slots))] if slots else None
    rows.append(("slot lookup: 1-slot / 32764-slot time", flat, "ratio", "<= 1.3x", verdict(flat, 1.3, "max")))
    rows.append(("1 TiB memslot, untouched", sc["bytes_untouched_1tib"], "bytes", "< 1 MiB", verdict(sc["bytes_untouched_1tib"], 1 << 20, "below")))
    rows.append((f"bytes per mapped page ({sc.get('pages_touched') or 0:,} touched)", sc["bytes_per_mapped_page"], "num", "<= 120",
                 verdict(sc["bytes_per_mapped_page"], 120, "max")))
    rows.append((f"start-up ms ({result.get('startup_command', '?')})", result["startup_ms"], "num", "< 150", verdict(result["startup_ms"], 150, "below")))
    for label, value, kind, target, ok in rows:
        lines.append(f"{label:41} {fmt(value, kind):26} {target:16} {ok}")
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
        "startup_ms": None,
        "notes": notes,
    }
    load_before = os.getloadavg()
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
        progress(f"scaling ({fault_arch.name}): 1 TiB memslot memory, {params.touch_pages:,} pages touched")
        scaling.update(bench_core.bench_memory(fault_arch, params))
    else:
        notes.append("scaling: no arch loaded; figures are empty")
    result["scaling"] = scaling
    with tempfile.TemporaryDirectory(prefix="kvmcore-bench-") as tmp:
        progress(f"replay: {params.replay_events:,} events")
        result["replay"] = bench_process.bench_replay(arches, params.replay_events, Path(tmp), notes)
    progress("start-up")
    result["startup_ms"], result["startup_command"] = bench_process.bench_startup(arches, params.startup_runs, notes)
    result["suite_seconds"] = round(time.perf_counter() - started, 1)
    clocks = bench_core.CLOCKS
    busy = clocks["wall_ns"] / clocks["cpu_ns"] if clocks["cpu_ns"] else None
    result["machine"].update(load_average_before=[round(x, 2) for x in load_before],
                             load_average_after=[round(x, 2) for x in os.getloadavg()],
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
