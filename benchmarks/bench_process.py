"""Whole-process benchmarks: ``kvmcore replay`` of a generated trace, and start-up time.

Each command runs under ``_child.py``, a small stdlib-only process that times it and reads its
own ``ru_maxrss`` through ``os.wait4`` (``RUSAGE_CHILDREN`` would give the largest of every child
ever waited for, and a child forked straight from this big process would report this process's
size: see ``_child.py``).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kvmcore

CHILD = Path(__file__).resolve().with_name("_child.py")
#: Where the generated trace's faults land: a 1 GiB memslot at 1 GiB (the replay's VM needs RAM there).
TRACE_GPA_BASE = 1 << 30
TRACE_PAGES = 1 << 16  # distinct pages the trace faults on (256 MiB at 4K)


def kvmcore_command() -> list[str]:
    """The installed ``kvmcore`` console script next to this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("kvmcore")
    if script.exists():
        return [str(script)]
    found = shutil.which("kvmcore")
    return [found] if found else [sys.executable, "-m", "kvmcore.cli"]


def installed_copy(root: Path, tmp: Path, notes: list[str]) -> Path | None:
    """The interpreter of a new virtual environment under ``tmp`` with the checkout at ``root``
    installed *non-editable* (kvmcore and every ``plugins/*`` distribution, their dependencies
    from pip's configured index), or None with a note when it cannot be built.

    Issue 15 asks for start-up as installed: an editable install finds its modules through an
    import hook or a path entry of its own, and ``pip install`` compiles an installed package's
    bytecode. The sources are copied first so that setuptools' ``build/`` directories, which can
    hold modules since deleted, are neither used nor left in the checkout. About 20 s.
    """
    src = tmp / "src"
    venv = tmp / "venv"
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests")
    try:
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        shutil.copytree(root / "kvmcore", src / "kvmcore", ignore=skip)
        dists = [src]
        for plugin in sorted((root / "plugins").iterdir()):
            if (plugin / "pyproject.toml").is_file():
                shutil.copytree(plugin, src / "plugins" / plugin.name, ignore=skip)
                dists.append(src / "plugins" / plugin.name)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=600)
        python = venv / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *map(str, dists)],
                       check=True, capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        tail = str(detail).strip().splitlines()[-1:] or [type(exc).__name__]
        notes.append(f"startup: no non-editable install could be built ({tail[0]}); the installed command was measured")
        return None
    return python


def cli_ready(subcommand: str) -> str | None:
    """None if ``kvmcore SUBCOMMAND --help`` works, else why not."""
    try:
        import kvmcore.cli  # noqa: F401
    except ImportError as exc:
        return f"kvmcore.cli is not importable ({exc})"
    proc = subprocess.run([*kvmcore_command(), subcommand, "--help"], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"`kvmcore {subcommand} --help` exited {proc.returncode}: {tail[0]}"
    return None


def run_child(argv: list[str], stdout: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, float, int, str]:
    """(exit status, wall seconds, peak RSS in bytes, stderr tail) of one command, run through
    ``_child.py`` so that its peak RSS is its own (see there); its standard output goes to
    ``stdout`` (a file) or nowhere. The wall time is measured around the command alone."""
    proc = subprocess.run([sys.executable, str(CHILD), str(stdout) if stdout else "-", "--", *argv],
                          capture_output=True, text=True, env=env)
    err = proc.stderr[-2000:]
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return proc.returncode or 1, 0.0, 0, err or proc.stdout[-2000:]
    LAST_CPU_S[0] = report.get("cpu_s", report["wall_s"])
    return report["status"], report["wall_s"], report["maxrss_bytes"], err


#: The CPU time (user + system) of the last command :func:`run_child` ran.
LAST_CPU_S = [0.0]


# --- trace generation ------------------------------------------------------------------------------
def trace_lines_arm64(arch: kvmcore.Arch, events: int, distinct: bool = False) -> Any:
    """ftrace lines of ``kvm_guest_fault`` (arch/arm64/kvm/trace_arm.h), kernel format:
    ``"ipa %#llx, hsr %#08lx, hxfar %#08lx, pc %#016lx"``, reads and writes (3:1) over
    :data:`TRACE_PAGES` pages, each page-aligned IPA with an identity FAR. ``distinct``: every
    line a fault on a page of its own at a pc of its own (a guest touching new memory), so no
    event text repeats."""
    vm = kvmcore.VM(arch)
    vcpu = vm.create_vcpu()
    shift = vm.page_shift
    esr = {}
    for kind in ("read", "write"):
        a = arch.encode_fault(vcpu, kvmcore.Access(TRACE_GPA_BASE, kind, "not_present"))
        b = arch.encode_fault(vcpu, kvmcore.Access(TRACE_GPA_BASE + (5 << shift), kind, "not_present"))
        if a["esr"] != b["esr"]:
            raise RuntimeError("arm64 encode_fault: ESR depends on the address; the generator assumes not")
        esr[kind] = a["esr"]
    pc = 0xFFFFC0C8A1B20000
    for i in range(events):
        page = i if distinct else (i * 40503) % TRACE_PAGES  # else a permutation of the pages, every pass
        ipa = TRACE_GPA_BASE + (page << shift)
        hsr = esr["write" if i % 4 == 3 else "read"]
        ts = 88.120001 + i * 1e-6
        yield (
            f" CPU 0/KVM-812    [00{i & 1}] ..... {ts:.6f}: kvm_guest_fault: "
            f"ipa {ipa:#x}, hsr {hsr:#08x}, hxfar {ipa:#08x}, pc {pc + ((i if distinct else i & 255) << 2):#016x}\n"
        )


def trace_lines_x86(arch: kvmcore.Arch, events: int) -> Any:
    """ftrace lines of ``kvm_page_fault`` (arch/x86/kvm/trace.h), kernel format:
    ``"vcpu %u rip 0x%lx address 0x%016llx error_code 0x%llx"`` (VMX exit qualification)."""
    vm = kvmcore.VM(arch)
    vcpu = vm.create_vcpu()
    shift = vm.page_shift
    codes = {}
    for kind in ("read", "write"):
        raw = arch.encode_fault(vcpu, kvmcore.Access(TRACE_GPA_BASE, kind, "not_present"))
        codes[kind] = raw.get("exit_qualification", raw.get("error_code"))
    for i in range(events):
        page = (i * 40503) % TRACE_PAGES
        gpa = TRACE_GPA_BASE + (page << shift)
        code = codes["write" if i % 4 == 3 else "read"]
        ts = 1523.004213 + i * 1e-6
        yield (
            f" CPU 0/KVM-4711   [00{i & 1}] d..1. {ts:.6f}: kvm_page_fault: vcpu 0 rip 0xffffffff81a3c2d0 "
            f"address {gpa:#018x} error_code {code:#x}\n"
        )


GENERATORS = {"arm64": trace_lines_arm64, "x86": trace_lines_x86}


def write_trace(path: Path, arch: kvmcore.Arch, events: int, distinct: bool = False) -> None:
    lines = trace_lines_arm64(arch, events, distinct=True) if distinct else GENERATORS[arch.name](arch, events)
    with path.open("w") as f:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) == 65536:
                f.writelines(batch)
                batch.clear()
        f.writelines(batch)


def replay_argv(arch: str, trace: Path) -> list[str]:
    """``kvmcore replay`` of the trace: parse every line, decode every fault, summarise."""
    return [*kvmcore_command(), "replay", str(trace), "--arch", arch, "--json", "--strict", "--no-progress",
            *(["--jobs", "1"] if _has_option("replay", "--jobs") else [])]


def _replay_in_process(path: str, arch: str) -> int:
    from kvmcore.cli import replay

    return replay.replay(path, arch=arch, progress=False).events


def replay_rounds(runs: dict[str, Any], rounds: int, events: int, what: str) -> dict[str, list[float]]:
    """Events per second of CPU time of each ``label: run`` (a call replaying the same ``events``
    and returning how many it saw), in ``rounds`` interleaved rounds after an untimed one."""
    rates: dict[str, list[float]] = {label: [] for label in runs}
    for r in range(rounds + 1):
        for label, fn in runs.items():
            gc.collect()
            t0 = time.process_time()
            seen = fn()
            elapsed = time.process_time() - t0
            if seen != events:
                raise RuntimeError(f"{what}, {label}: {seen} events of {events}")
            if r:
                rates[label].append(events / elapsed)
    return rates


def _floor_and_kvmcore(trace: Path, arch: str, event: str) -> dict[str, Any]:
    """The replay verdict's contenders: the floor and ``replay()``, each returning the events seen."""
    import floors

    return {"floor": lambda: floors.replay_floor(str(trace), event),
            "kvmcore": lambda: _replay_in_process(str(trace), arch)}


def replay_rounds_fresh(trace: Path, arch: str, event: str, events: int, rounds: int) -> dict[str, list[float]]:
    """:func:`replay_rounds` of the floor and kvmcore over ``trace``, in a fresh process (this
    module run with ``--replay-rounds``); RuntimeError with the child's last line if it failed.

    Not in the suite's own process: after the fault figures (three arches' VMs, 32,764 memslots,
    a 1 TiB memslot with 1,000,000 pages touched) kvmcore's replay ran 0.14-0.15 further over
    the floor there than in a fresh process (two pairs of runs: 1.41x against 1.27x, 1.19x against
    1.04x), which the floor, allocating little, does not feel. A user replays in a fresh process.
    """
    proc = subprocess.run([sys.executable, __file__, "--replay-rounds", str(trace), arch, event, str(events), str(rounds)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    rates: dict[str, list[float]] = json.loads(proc.stdout)
    return rates


def arm64_replay_runs(trace: Path, per_line: bool) -> dict[str, Any]:
    """The rounds' contenders over an arm64 ``trace``: the floor, kvmcore's replay, and with
    ``per_line`` the per-line scan forced (the fast path's oracle); each returns the events seen."""
    from kvmcore.cli import replay

    runs = _floor_and_kvmcore(trace, "arm64", "kvm_guest_fault")
    if per_line:
        runs["per-line"] = lambda: replay.replay(str(trace), arch="arm64", progress=False, per_line=True).events
    return runs


def replay_distinct(arch: kvmcore.Arch, events: int, rounds: int, tmp: Path, ratio_stats: Any) -> dict[str, Any]:
    """Information: replay of a trace where no event text repeats (faults on new pages at new
    pcs, as a guest touching memory gives), in-process, against the floor and against the
    per-line scan forced (``per_line=True``): interleaved rounds of CPU time."""
    trace = tmp / "distinct.trace"
    write_trace(trace, arch, events, distinct=True)
    rates = replay_rounds(arm64_replay_runs(trace, per_line=True), rounds, events, "replay of faults whose texts never repeat")
    trace.unlink()
    return {"events": events, "per_s": statistics.median(rates["kvmcore"]),
            "ratio": ratio_stats(rates["kvmcore"], rates["floor"]),
            "vs_per_line": ratio_stats(rates["kvmcore"], rates["per-line"])}


def bench_replay(arches: dict[str, kvmcore.Arch], events: int, rounds: int, tmp: Path, notes: list[str],
                 ratio_stats: Any) -> dict[str, Any]:
    """``kvmcore replay`` of a generated trace: per event in-process against the floor
    (interleaved rounds over the same file), then as whole processes (serial, every core,
    and polars/duckdb on the same lines where installed, for information)."""
    out: dict[str, Any] = {"events_per_s": None, "peak_rss_mb": None}
    name = next((a for a in GENERATORS if a in arches), None)
    if name is None:
        notes.append("replay: no arch with a trace generator (arm64, x86) loaded; figures are null")
        return out
    why = cli_ready("replay")
    if why is not None:
        notes.append(f"replay: `kvmcore replay` is not ready ({why}); figures are null")
        return out
    trace = tmp / f"{name}-{events}.trace"
    start = time.perf_counter()
    write_trace(trace, arches[name], events)
    out.update(arch=name, events=events, trace_mb=round(trace.stat().st_size / 2**20, 1),
               generate_s=round(time.perf_counter() - start, 2))
    event = "kvm_guest_fault" if name == "arm64" else "kvm_page_fault"
    # in-process, interleaved: floor, kvmcore, floor, kvmcore...; one warm-up round; in a fresh
    # process of their own (see replay_rounds_fresh)
    try:
        times = replay_rounds_fresh(trace, name, event, events, rounds)
    except RuntimeError as exc:
        notes.append(f"replay: the in-process rounds' process {exc}; figures are null")
        trace.unlink()
        return out
    out["inproc_per_s"] = statistics.median(times["kvmcore"])
    out["floor_per_s"] = statistics.median(times["floor"])
    out["ratio"] = ratio_stats(times["kvmcore"], times["floor"])
    if name == "arm64":
        out["distinct"] = replay_distinct(arches[name], max(events // 5, 1000), rounds, tmp, ratio_stats)
    # whole process
    argv = replay_argv(name, trace)
    report = tmp / "replay.json"
    status, wall, rss, err = run_child(argv, stdout=report)
    if status != 0:
        notes.append(f"replay: `kvmcore {' '.join(argv[1:])}` exited {status}: {err.strip().splitlines()[-1:]}")
        trace.unlink()
        return out
    try:
        summary = json.loads(report.read_text())
    except ValueError as exc:
        notes.append(f"replay: the --json summary did not parse ({exc})")
        summary = {}
    out["summary_counts"] = {k: v for k, v in summary.items() if isinstance(v, int)}
    out.update(events_per_s=events / wall, peak_rss_mb=rss / 2**20, wall_s=round(wall, 3))
    jobs = os.cpu_count() or 1
    if jobs > 1 and _has_option("replay", "--jobs"):
        status, pwall, _, err = run_child([*argv[:-2], "--jobs", str(jobs)], stdout=tmp / "replay-par.json")
        if status == 0:
            same = json.loads((tmp / "replay-par.json").read_text())
            for volatile in ("seconds",):
                same.pop(volatile, None), summary.pop(volatile, None)
            out.update(parallel_jobs=jobs, parallel_wall_s=round(pwall, 3), parallel_speedup=wall / pwall,
                       parallel_identical=same == summary)
        else:
            notes.append(f"replay --jobs {jobs} exited {status}: {err.strip().splitlines()[-1:]}")
    engines = {}
    for engine in ("polars", "duckdb"):
        if importlib.util.find_spec(engine) is None:
            notes.append(f"replay: {engine} is not installed; its information row is empty")
            continue
        code = ENGINE_SCRIPTS[engine].format(path=str(trace), event=event)
        status, ewall, _, err = run_child([sys.executable, "-c", code])
        if status == 0:
            engines[engine] = ewall
        else:
            notes.append(f"replay: {engine} exited {status}: {err.strip().splitlines()[-1:]}")
    out["engines_wall_s"] = {k: round(v, 3) for k, v in engines.items()}
    trace.unlink()
    return out


#: The same count as the floor (gfn and syndrome of every fault line) in other engines, whole
#: process, on one thread: information, not a verdict.
ENGINE_SCRIPTS = {
    "polars": (
        "import os; os.environ['POLARS_MAX_THREADS']='1'; import polars as pl\n"
        "df = pl.scan_csv({path!r}, has_header=False, separator='\\x01', new_columns=['line'], quote_char=None)\n"
        "pat = r'{event}: (?:ipa|vcpu \\d+ rip 0x[0-9a-f]+ address) (0x[0-9a-f]+),? (?:hsr|error_code) (0x[0-9a-f]+)'\n"
        "r = df.select(pl.col('line').str.extract_groups(pat)).unnest('line').drop_nulls()"
        ".group_by('1', '2').len().collect()\n"
        "print(r['len'].sum())\n"
    ),
    "duckdb": (
        "import duckdb; con = duckdb.connect(); con.execute('SET threads=1')\n"
        "pat = '{event}: (?:ipa|vcpu \\d+ rip 0x[0-9a-f]+ address) (0x[0-9a-f]+),? (?:hsr|error_code) (0x[0-9a-f]+)'\n"
        "q = (\"SELECT sum(n) FROM (SELECT regexp_extract(line, $1, 1) a, regexp_extract(line, $1, 2) b, count(*) n \"\n"
        "     \"FROM read_csv({path!r}, columns={{'line': 'VARCHAR'}}, delim=chr(1), quote='', header=false) \"\n"
        "     \"WHERE regexp_matches(line, $1) GROUP BY a, b)\")\n"
        "print(con.execute(q, [pat]).fetchone()[0])\n"
    ),
}


def _has_option(subcommand: str, option: str) -> bool:
    proc = subprocess.run([*kvmcore_command(), subcommand, "--help"], capture_output=True, text=True)
    return option in proc.stdout


def bench_startup(arches: dict[str, kvmcore.Arch], runs: int, notes: list[str], ratio_stats: Any,
                  python: Path | None = None) -> dict[str, Any]:
    """Wall time of ``kvmcore decode ARCH REG=VALUE...`` and ``kvmcore plugins`` as whole
    processes, interleaved run by run with the floor ``python -c "import pluggy, stevedore"``.

    With ``python`` (:func:`installed_copy`), the floor and both commands run in that
    interpreter's environment; otherwise this interpreter and the ``kvmcore`` installed beside
    it (editable, in a checkout)."""
    import floors

    name = "arm64" if "arm64" in arches else next(iter(arches), None)
    out: dict[str, Any] = {}
    why = cli_ready("decode") if name is not None else "no arch loaded"
    if name is None or why is not None:
        notes.append(f"startup: `kvmcore decode` is not ready ({why}); no start-up figures")
        return out
    arch = arches[name]
    vm = kvmcore.VM(arch)
    raw = arch.encode_fault(vm.create_vcpu(), kvmcore.Access(TRACE_GPA_BASE, "write", "not_present"))
    regs = [f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}" for k, v in raw.items() if k in arch.info.registers]
    command = [str(python.with_name("kvmcore"))] if python is not None else kvmcore_command()
    commands = {
        "floor": [str(python or sys.executable), *floors.STARTUP_FLOOR],
        "decode": [*command, "decode", name, *regs],
        "plugins": [*command, "plugins"],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    # Bytecode as an installed package has it: with PYTHONDONTWRITEBYTECODE set (as in some
    # shells and CI) an editable checkout without __pycache__ compiles every kvmcore module on
    # every start, while the floor's pluggy and stevedore load compiled files (that made
    # `kvmcore decode` look 1.74x instead of 1.49x). The untimed warm-up round writes it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for r in range(runs + 1):
        for label, argv in commands.items():
            status, wall, _, err = run_child(argv, env=env)
            if status != 0:
                notes.append(f"startup: `{' '.join(argv[1:])}` exited {status}: {err.strip().splitlines()[-1:]}")
                return out
            if r:
                times[label].append(wall * 1000)
                cpu[label].append(LAST_CPU_S[0] * 1000)
    out["floor_ms"] = statistics.median(times["floor"])
    out["floor_cpu_ms"] = statistics.median(cpu["floor"])
    for label in ("decode", "plugins"):
        out[f"{label}_ms"] = statistics.median(times[label])
        out[f"{label}_cpu_ms"] = statistics.median(cpu[label])
        # the verdict: CPU time (user + system), run by run, so waiting for a CPU does not count;
        # ratio of times = inverse ratio of rates: pass rates so the helper's order holds
        out[f"{label}_ratio"] = ratio_stats([1 / t for t in cpu[label]], [1 / t for t in cpu["floor"]])
    out["decode_command"] = f"kvmcore decode {name} ..."
    out["install"] = "non-editable, a temporary venv" if python is not None else f"as installed beside {sys.executable}"
    return out


if __name__ == "__main__":  # python bench_process.py --replay-rounds TRACE ARCH EVENT EVENTS ROUNDS
    if len(sys.argv) != 7 or sys.argv[1] != "--replay-rounds":
        sys.exit("usage: bench_process.py --replay-rounds TRACE ARCH EVENT EVENTS ROUNDS (run.py's child)")
    _trace, _arch, _event, _events, _rounds = sys.argv[2:]
    print(json.dumps(replay_rounds(_floor_and_kvmcore(Path(_trace), _arch, _event), int(_rounds), int(_events), "replay")))
