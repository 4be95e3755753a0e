"""``kvmcore replay --jobs N``: one large trace file on every core.

The file is split into ``N`` byte ranges that end just after a newline (a line is never cut, and
``\\r\\n`` stays whole), each range is replayed in its own process exactly as the serial run
replays its lines, and the per-range summaries are merged in file order. The arch is settled
first, in this process, from the file's first lines (the serial run's probe); when the probe
cannot settle it, or the source is not a regular file, the replay runs serially.

The merged summary equals the serial one (tested): counts add up, line numbers of skipped
lines are shifted by the lines of the ranges before, the first five examples are the first five
in file order, and exact hot-gfn counts add up. Where the serial run itself approximates, the
merge can differ while staying within the same guarantees: the hot gfns once the counts outgrow
``--memory`` (merged sketches keep their bounds: :meth:`HotGfns.merge`), and the names of
"other" events beyond the first 256 (lumped as "(other)" per range rather than over the file).
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from kvmcore.cli import replay as R
from kvmcore.cli.hotgfns import HotGfns
from kvmcore.cli.model import ModelChoice
from kvmcore.cli.model import as_dict as model_dict

#: Below this many bytes per job, ``--jobs auto`` stays serial (process start-up would dominate).
MIN_BYTES_PER_JOB = 16 << 20


def jobs_for(jobs: int | None, size: int) -> int:
    """How many processes replay a file of ``size`` bytes: ``jobs`` if given, else ("auto")
    every usable CPU once each gets at least :data:`MIN_BYTES_PER_JOB`."""
    if jobs is not None:
        return max(1, jobs)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, size // MIN_BYTES_PER_JOB))


def split_points(path: str, size: int, jobs: int) -> list[int]:
    """Byte offsets ``[0, ..., size]`` cutting ``path`` into at most ``jobs`` ranges, each cut
    just after a ``\\n``."""
    points = [0]
    with open(path, "rb") as f:
        for k in range(1, jobs):
            target = size * k // jobs
            if target <= points[-1]:
                continue
            f.seek(target - 1)
            cut = target - 1 + len(f.readline())  # just past the first newline at or after target-1
            if cut >= size:
                break
            if cut > points[-1]:
                points.append(cut)
    points.append(size)
    return points


class _Range(io.RawIOBase):
    """Bytes ``[start, end)`` of a file, as a raw stream for ``io.TextIOWrapper``."""

    def __init__(self, path: str, start: int, end: int) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._f.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)
        n = self._f.readinto(view[: min(len(view), self._left)]) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _replay_range(
    task: tuple[str, int, int, str, str | None, dict[str, Any], int, str | None, ModelChoice | None],
) -> R.Summary:
    """One range, in a worker process: the serial scan over its lines."""
    source, start, end, arch, memslots, settings, memory, established, choice = task
    arches, vcpus, _ = R._load(arch, settings, memslots, choice)
    summary = R.Summary(source, arch)
    resolver = R._Resolver(arches, vcpus, None if arch == "auto" else arch, summary)
    if established is not None and resolver.established is None:
        resolver.establish(established)
    stream = io.TextIOWrapper(io.BufferedReader(_Range(source, start, end), 1 << 20), encoding="utf-8", errors="replace")
    try:
        R._scan(stream, summary, resolver, memory, False, 0, memslots is not None, None)
    finally:
        stream.close()
    return summary


def _add(into: dict[Any, int], more: dict[Any, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


#: Summary counters that add up across ranges.
_COUNTS = ("events", "header_lines", "lost_events", "lost_lines", "malformed", "skipped", "undecodable",
           "unwrapped", "quoted_lines", "paired_exits", "widened", "ambiguous", "log_lines")
#: Summary fields of per-arch counts (arch -> key -> n) that add up across ranges.
_PER_ARCH_COUNTS = ("by_arch_kind", "slots", "vcpus", "rips")


def merge(parts: list[R.Summary], into: R.Summary) -> None:
    """Add ``parts`` (summaries of consecutive ranges, in file order) into ``into``."""
    offset = 0
    for part in parts:
        for name in _COUNTS:
            setattr(into, name, getattr(into, name) + getattr(part, name))
        for name in _PER_ARCH_COUNTS:
            mine = getattr(into, name)
            for arch, counts in getattr(part, name).items():
                _add(mine.setdefault(arch, {}), counts)
        if into.first_malformed_line is None and part.first_malformed_line is not None:
            into.first_malformed_line = part.first_malformed_line + offset
        for lineno, why, text in part.skipped_examples:
            if len(into.skipped_examples) < R.SHOW_SKIPPED:
                into.skipped_examples.append((lineno + offset, why, text))
        for name, n in part.other_events.items():
            if name in into.other_events or len(into.other_events) < R.MAX_NAMES:
                into.other_events[name] = into.other_events.get(name, 0) + n
            else:
                into.other_events["(other)"] = into.other_events.get("(other)", 0) + n
        _add(into.faults, part.faults)
        _add(into.userspace_exits, part.userspace_exits)
        for arch, counter in part.hot.items():
            mine = into.hot.get(arch)
            if mine is None:
                into.hot[arch] = counter
            else:
                mine.merge(counter)
        for note in part.notes:  # e.g. a plugin a worker dropped (PluginError)
            if note not in into.notes:
                into.notes.append(note)
        _merge_pasted(part, into, offset)
        offset += part.lines
    into.lines = offset


def _merge_pasted(part: R.Summary, into: R.Summary, offset: int) -> None:
    """The summary parts of pasted-input handling and of the person-facing counts."""
    if not into.arch_decided_by:
        into.arch_decided_by.extend((n + offset, a, e, t) for n, a, e, t in part.arch_decided_by)
    _add(into.exit_only, part.exit_only)
    _add(into.mmio, part.mmio)
    for arch, walks in part.walks.items():
        mine = into.walks.setdefault(arch, [0, 0, 0])
        for i, n in enumerate(walks):
            mine[i] += n
    for key, lp in part.loops.items():
        mine_lp = into.loops.get(key)
        if mine_lp is None:
            if len(into.loops) < R.MAX_LOOPS:
                into.loops[key] = {**lp, "first_line": lp["first_line"] + offset}
        else:
            mine_lp["longest"] = max(mine_lp["longest"], lp["longest"])
            mine_lp["faults"] += lp["faults"]
            mine_lp["runs"] += lp["runs"]
    for item in part.log_syndromes:
        if len(into.log_syndromes) < R.MAX_LOG_SYNDROMES:
            into.log_syndromes.append({**item, "line": item["line"] + offset})
    for lineno, why, text in part.exit_only_examples:
        if len(into.exit_only_examples) < R.SHOW_SKIPPED:
            into.exit_only_examples.append((lineno + offset, why, text))
    for lineno, why in part.ambiguous_examples:
        if len(into.ambiguous_examples) < R.SHOW_SKIPPED:
            into.ambiguous_examples.append((lineno + offset, why))


def replay(
    source: str,
    arch: str = "auto",
    memslots: str | None = None,
    settings: dict[str, Any] | None = None,
    top: int = 10,
    memory: int = R.DEFAULT_BUDGET,
    progress: bool | None = None,
    jobs: int | None = 1,
    events: str | None = None,
    unwrap: bool = True,
    choice: ModelChoice | None = None,
) -> R.Summary:
    """:func:`kvmcore.cli.replay.replay` in ``jobs`` processes (``None``: every CPU once the
    file is large); serial for stdin, ``jobs=1``, ``events`` or a trace that cannot be split.
    The summary is the serial one either way, except that pasted-input handling that spans
    lines (a wrapped line, an exit and its fault event, a register dump over lines, a fault loop)
    is not followed across the ranges' boundaries; ``unwrap=False`` (``--no-unwrap``) runs serially."""
    if source != "-" and jobs != 1 and events is None and unwrap:
        try:
            HotGfns(memory)
            size = os.stat(source).st_size
        except ValueError as exc:
            raise R.ReplayError(f"--memory: {exc}") from None
        except OSError as exc:
            raise R.ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
        n = jobs_for(jobs, size)
        if n > 1:
            done = replay_parallel(source, n, size, arch, memslots, settings or {}, top, memory, choice)
            if done is not None:
                return done
    return R.replay(source, arch, memslots, settings, top, memory, progress, events, unwrap, choice)


def replay_parallel(source: str, jobs: int, size: int, arch: str, memslots: str | None, settings: dict[str, Any],
                    top: int, memory: int, choice: ModelChoice | None = None) -> R.Summary | None:
    """The parallel replay of the regular file ``source``; None when it must run serially (the
    arch cannot be settled from the first lines, or the file is one range)."""
    arches, vcpus, notes = R._load(arch, settings, memslots, choice)
    summary = R.Summary(source, arch)
    summary.notes.extend(notes)
    summary.models = {name: model_dict(vcpu.vm) for name, vcpu in vcpus.items()}
    summary.top = top
    start = time.perf_counter()
    resolver = R._Resolver(arches, vcpus, None if arch == "auto" else arch, summary)
    if arch == "auto":
        with open(source, encoding="utf-8", errors="replace") as f:
            resolver.probe(list(itertools.islice(f, R.PROBE_LINES)))
        if resolver.established is None:
            return None
    points = split_points(source, size, jobs)
    if len(points) <= 2:
        return None
    tasks = [(source, a, b, arch, memslots, settings, memory, resolver.established, choice)
             for a, b in itertools.pairwise(points)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(len(tasks), mp_context=multiprocessing.get_context(method)) as pool:
        parts = list(pool.map(_replay_range, tasks))
    merge(parts, summary)
    summary.seconds = time.perf_counter() - start
    R._finish(summary, arches, vcpus)
    return summary
