"""Per-gfn memory attributes (``KVM_SET_MEMORY_ATTRIBUTES``), stored as disjoint ranges.

The kernel keeps them in an xarray; ranges keep a 1 TiB conversion to a handful of entries.
"""

from __future__ import annotations

import bisect


class MemoryAttributes:
    """Maps gfn ranges to attribute bits; gfns never set have attributes 0."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._attrs: list[int] = []

    def get(self, gfn: int) -> int:
        """Mirrors ``kvm_get_memory_attributes()``."""
        starts = self._starts
        if not starts:  # no attributes set: the common case, answered without a search
            return 0
        i = bisect.bisect_right(starts, gfn) - 1
        if i >= 0 and gfn < self._ends[i]:
            return self._attrs[i]
        return 0

    def uniform(self, start: int, end: int) -> bool:
        """Do all gfns in ``[start, end)`` have the same attributes? (What x86's
        ``hugepage_has_attrs()`` / the ``KVM_LPAGE_MIXED_FLAG`` of ``lpage_info`` track.)"""
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and start < self._ends[i]:
            return end <= self._ends[i]
        return i + 1 >= len(self._starts) or self._starts[i + 1] >= end

    def set(self, start: int, end: int, attributes: int) -> None:
        """Give ``[start, end)`` the attributes, replacing what was there, merging neighbours."""
        lo = bisect.bisect_left(self._ends, start + 1)  # first range ending after start
        hi = bisect.bisect_left(self._starts, end)  # first range starting at or after end
        keep_before: list[tuple[int, int, int]] = []
        keep_after: list[tuple[int, int, int]] = []
        if lo < hi:
            if self._starts[lo] < start:
                keep_before.append((self._starts[lo], start, self._attrs[lo]))
            if self._ends[hi - 1] > end:
                keep_after.append((end, self._ends[hi - 1], self._attrs[hi - 1]))
        middle = [(start, end, attributes)] if attributes else []
        pieces = keep_before + middle + keep_after
        # merge with the neighbours outside [lo, hi) when they touch and match
        if lo > 0 and pieces and self._ends[lo - 1] == pieces[0][0] and self._attrs[lo - 1] == pieces[0][2]:
            lo -= 1
            pieces[0] = (self._starts[lo], pieces[0][1], pieces[0][2])
        if hi < len(self._starts) and pieces and self._starts[hi] == pieces[-1][1] and self._attrs[hi] == pieces[-1][2]:
            pieces[-1] = (pieces[-1][0], self._ends[hi], pieces[-1][2])
            hi += 1
        merged: list[tuple[int, int, int]] = []
        for piece in pieces:
            if merged and merged[-1][1] == piece[0] and merged[-1][2] == piece[2]:
                merged[-1] = (merged[-1][0], piece[1], piece[2])
            else:
                merged.append(piece)
        self._starts[lo:hi] = [p[0] for p in merged]
        self._ends[lo:hi] = [p[1] for p in merged]
        self._attrs[lo:hi] = [p[2] for p in merged]

    def ranges(self) -> list[tuple[int, int, int]]:
        """``(start_gfn, end_gfn, attributes)`` for every range with non-zero attributes."""
        return list(zip(self._starts, self._ends, self._attrs, strict=True))
