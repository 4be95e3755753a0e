"""The hottest gfns of a trace: exact counts while they fit a memory budget, then a sketch that
reports only what it can guarantee.

:class:`HotGfns` counts every gfn exactly in a dict while the number of distinct gfns fits
``budget`` bytes (about :data:`EXACT_ENTRY_BYTES` each: 64 MiB holds ~400,000 gfns). Past that it
keeps the largest exact counts and goes on as a Space-Saving sketch (Metwally, Agrawal and El
Abbadi, "Efficient computation of frequent and top-k elements in data streams", ICDT 2005) with
as many counters as the same budget holds. The sketch's guarantees, for ``N`` hits:

* a tracked gfn's true count lies in ``[count - error, count]``;
* a gfn that is not tracked was hit at most ``min(counts)`` times, and ``min(counts) <= N / k``
  for ``k`` counters.

Seeding the sketch with the ``k`` largest exact counts (error 0) keeps both: every dropped gfn
had a count at most the smallest kept one.

When approximate, :meth:`HotGfns.report` lists only gfns whose lower bound is above the upper
bound of every gfn it does not list, each with its range, plus that upper bound: nothing it
prints can be wrong. On a trace whose hits are spread evenly over more gfns than counters the
list is empty and the report says so, with the bound.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes a gfn costs while counted exactly (dict entry, int key and value, resize headroom).
EXACT_ENTRY_BYTES = 160
#: Bytes a Space-Saving counter costs (counts and errors dicts, a heap entry).
SKETCH_ENTRY_BYTES = 320
DEFAULT_BUDGET = 64 << 20


class SpaceSaving:
    """The Space-Saving heavy-hitter sketch: at most ``capacity`` counters.

    ``counts[key]`` over-estimates the true count by at most ``errors[key]``; a key that is not
    in ``counts`` was seen at most ``floor`` times (the largest count evicted, never more than
    ``min(counts.values())``).
    """

    __slots__ = ("capacity", "counts", "errors", "heap", "evictions", "floor")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.counts: dict[int, int] = {}
        self.errors: dict[int, int] = {}
        self.heap: list[tuple[int, int]] = []  # (count when pushed, key): refreshed lazily
        self.evictions = 0
        self.floor = 0

    def add_new(self, key: int) -> None:
        """Count ``key``, which is not in ``counts`` (the caller increments known keys inline)."""
        counts = self.counts
        if len(counts) < self.capacity:
            counts[key] = 1
            heapq.heappush(self.heap, (1, key))
            return
        heap = self.heap
        while True:
            c, victim = heap[0]
            current = counts[victim]
            if current == c:
                break
            heapq.heapreplace(heap, (current, victim))
        heapq.heapreplace(heap, (c + 1, key))
        del counts[victim]
        self.errors.pop(victim, None)
        counts[key] = c + 1
        self.errors[key] = c
        self.evictions += 1
        self.floor = c

    @property
    def exact(self) -> bool:
        return self.evictions == 0

    def min_count(self) -> int:
        """The most times any key not in ``counts`` can have been seen."""
        return self.floor

    def top(self, n: int) -> list[tuple[int, int, int]]:
        """``(key, count, error)`` of the ``n`` largest counts."""
        best = heapq.nlargest(n, self.counts.items(), key=lambda kv: (kv[1], -kv[0]))
        return [(k, c, self.errors.get(k, 0)) for k, c in best]


@dataclass(frozen=True, slots=True)
class HotReport:
    """What :meth:`HotGfns.report` can say.

    ``rows`` are ``(gfn, lowest, highest)`` true-count bounds (equal when exact), largest first;
    ``others_at_most`` bounds the count of every gfn not in ``rows`` (None when exact: the rows
    are simply the top ones); ``hits`` and ``distinct`` (exact, or None once approximate).
    """

    exact: bool
    rows: list[tuple[int, int, int]]
    others_at_most: int | None
    hits: int
    distinct: int | None
    counters: int
    budget: int


class HotGfns:
    """Counts of gfns: exact in ``counts`` while they fit ``budget`` bytes, then a sketch.

    Hot path (``kvmcore replay``): ``c = hot.counts.get(gfn)``; ``hot.counts[gfn] = c + 1`` when
    found, else ``hot.add_new(gfn)``. ``counts`` is the sketch's own dict once approximate.
    """

    __slots__ = ("budget", "limit", "counts", "sketch", "hits_before", "flush")

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        if budget < SKETCH_ENTRY_BYTES:
            raise ValueError(f"memory budget {budget} bytes is below one counter ({SKETCH_ENTRY_BYTES} bytes)")
        self.budget = budget
        self.limit = budget // EXACT_ENTRY_BYTES  # distinct gfns counted exactly
        self.counts: dict[int, int] = {}
        self.sketch: SpaceSaving | None = None
        #: called before the counts are read to make the sketch: replay's block fast path
        #: (kvmcore.cli.replay_block) folds in the counts it holds back
        self.flush: Callable[[], None] | None = None

    @property
    def exact(self) -> bool:
        return self.sketch is None

    def add_new(self, gfn: int, n: int = 1) -> None:
        """Count ``n`` hits of ``gfn``, which is not in ``counts``."""
        sketch = self.sketch
        if sketch is None:
            if len(self.counts) < self.limit:
                self.counts[gfn] = n
                return
            sketch = self._to_sketch()
        if n == 1:
            sketch.add_new(gfn)
        else:  # merging: n hits at once are n single hits in a row
            sketch.add_new(gfn)
            sketch.counts[gfn] += n - 1

    def _to_sketch(self) -> SpaceSaving:
        """Keep the largest exact counts (error 0) as the sketch's counters."""
        if self.flush is not None:
            self.flush()
        sketch = SpaceSaving(max(1, self.budget // SKETCH_ENTRY_BYTES))
        keep = heapq.nlargest(sketch.capacity, self.counts.items(), key=lambda kv: (kv[1], -kv[0]))
        sketch.counts = dict(keep)
        sketch.heap = [(c, k) for k, c in keep]
        heapq.heapify(sketch.heap)
        sketch.evictions = len(self.counts) - len(keep)
        sketch.floor = min((c for _, c in keep), default=0) if sketch.evictions else 0
        self.sketch = sketch
        self.counts = sketch.counts
        return sketch

    def merge(self, other: HotGfns) -> None:
        """Add ``other``'s counts (a summary of another part of the same trace).

        Exact + exact stays exact while the union fits the budget. Otherwise each of
        ``other``'s counters is added as that many hits with its error carried over, which keeps
        the sketch's bounds (each count stays an upper bound, the errors add up).
        """
        if other.sketch is None and self.sketch is None:
            mine = self.counts
            for gfn, n in other.counts.items():
                c = mine.get(gfn)
                if c is not None:
                    mine[gfn] = c + n
                else:
                    self.add_new(gfn, n)
            return
        # approximate on either side: counts of untracked gfns are bounded by each side's min
        floor_other = other.sketch.min_count() if other.sketch is not None else 0
        if self.sketch is None:
            self._to_sketch()
        sketch = self.sketch
        assert sketch is not None
        floor_self = sketch.min_count()
        errors_other = other.sketch.errors if other.sketch is not None else {}
        for gfn in list(sketch.counts):  # a gfn only self tracks may have up to floor_other in other
            if gfn not in other.counts and floor_other:
                sketch.counts[gfn] += floor_other
                sketch.errors[gfn] = sketch.errors.get(gfn, 0) + floor_other
        for gfn, n in other.counts.items():
            c = sketch.counts.get(gfn)
            if c is not None:
                sketch.counts[gfn] = c + n
                err = errors_other.get(gfn, 0)
                if err:
                    sketch.errors[gfn] = sketch.errors.get(gfn, 0) + err
            else:
                # gfn may have had up to floor_self hits in self's part
                sketch.add_new(gfn)
                sketch.counts[gfn] += n - 1 + floor_self
                sketch.errors[gfn] = sketch.errors.get(gfn, 0) + errors_other.get(gfn, 0) + floor_self
        sketch.heap = [(c, k) for k, c in sketch.counts.items()]
        heapq.heapify(sketch.heap)
        sketch.evictions += 1
        sketch.floor = max(sketch.floor, floor_self + floor_other)

    def report(self, n: int, total_hits: int) -> HotReport:
        """The ``n`` hottest gfns, or, when approximate, only those the sketch guarantees."""
        sketch = self.sketch
        if sketch is None:
            best = heapq.nlargest(n, self.counts.items(), key=lambda kv: (kv[1], -kv[0]))
            return HotReport(True, [(g, c, c) for g, c in best], None, total_hits, len(self.counts),
                             self.limit, self.budget)
        ranked = sorted(sketch.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        untracked = sketch.min_count()
        # the longest prefix of the ranking (at most n) whose every lower bound beats the upper
        # bound of everything after it (the next ranked count, or an untracked gfn's)
        lows = [c - sketch.errors.get(g, 0) for g, c in ranked]
        shown, lowest = 0, None
        for r in range(1, min(n, len(ranked)) + 1):
            lowest = lows[r - 1] if lowest is None else min(lowest, lows[r - 1])
            if lowest > max(ranked[r][1] if r < len(ranked) else 0, untracked):
                shown = r
        rows = [(g, lows[i], c) for i, (g, c) in enumerate(ranked[:shown])]
        others = max(ranked[shown][1] if shown < len(ranked) else 0, untracked)
        return HotReport(False, rows, others, total_hits, None, sketch.capacity, self.budget)


def parse_size(text: str) -> int:
    """``64M``, ``64MiB``, ``1G``, ``65536`` -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    digits = t[:-1] if scale != 1 else t
    try:
        value = int(digits, 0) * scale
    except ValueError:
        raise ValueError(f"memory size {text!r}: expected bytes or a number with K, M or G (e.g. 64M)") from None
    if value <= 0:
        raise ValueError(f"memory size {text!r}: must be positive")
    return value
