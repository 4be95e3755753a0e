"""Stage-2 (EPT/NPT/G-stage) mappings: which gfns map to which pfns, with what permissions.

One dict per mapping size, keyed by the mapping's index at that size, valued by a packed int
``(pfn - index) << 4 | flags``. Storing the pfn relative to the index makes the value the same
for every page of a linearly backed range (a memslot over one host mapping), and equal values
are shared through a small intern table, so a mapped page costs one dict slot and its key
(about 75 bytes at a million pages) instead of also an int object of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kvmcore._dataclass_methods import fields_eq, fields_hash, fields_repr

S2_WRITABLE = 1 << 0
S2_EXEC = 1 << 1
S2_YOUNG = 1 << 2  # the access flag (arm64 AF); cleared by encode_fault's "access_flag" cause
_FLAG_BITS = 4
#: Distinct packed values kept for sharing; past this the table restarts (sharing is only a saving).
_INTERN_MAX = 4096


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore._dataclass_methods
class Stage2Entry:
    """One leaf mapping as :meth:`Stage2.lookup` reports it."""

    gfn: int  # first gfn of the mapping
    pfn: int  # pfn of its first page
    size: int  # bytes
    writable: bool
    exec: bool
    young: bool

    def __init__(
        self, gfn: int, pfn: int, size: int, writable: bool, exec: bool, young: bool
    ) -> None:
        object.__setattr__(self, "gfn", gfn)
        object.__setattr__(self, "pfn", pfn)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "writable", writable)
        object.__setattr__(self, "exec", exec)
        object.__setattr__(self, "young", young)

    __repr__ = fields_repr
    __eq__ = fields_eq
    __hash__ = fields_hash

    def pfn_of(self, gfn: int) -> int:
        """The pfn backing ``gfn`` inside this mapping."""
        return self.pfn + (gfn - self.gfn)


class Stage2:
    """The VM's stage-2 page tables, flattened to leaf entries."""

    def __init__(self, page_shift: int) -> None:
        self.page_shift = page_shift
        #: size shift -> {gfn >> (shift - page_shift): packed entry}
        self._levels: dict[int, dict[int, int]] = {page_shift: {}}
        self._leaf = self._levels[page_shift]
        self._intern: dict[int, int] = {}

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels.values())

    def lookup(self, gfn: int) -> Stage2Entry | None:
        """The leaf mapping that covers ``gfn``, if any."""
        packed = self._leaf.get(gfn)
        shift = self.page_shift
        key = gfn
        if packed is None:
            for shift, level in self._levels.items():
                if shift != self.page_shift:
                    key = gfn >> (shift - self.page_shift)
                    packed = level.get(key)
                    if packed is not None:
                        break
            else:
                return None
        span = shift - self.page_shift
        return Stage2Entry(
            key << span,
            (packed >> _FLAG_BITS) + (key << span),
            1 << shift,
            bool(packed & S2_WRITABLE),
            bool(packed & S2_EXEC),
            bool(packed & S2_YOUNG),
        )

    def map(self, gfn: int, pfn: int, size: int, writable: bool, exec: bool = True) -> None:
        """Install a leaf of ``size`` bytes covering ``gfn`` (aligned down to ``size``)."""
        shift = size.bit_length() - 1
        flags = S2_YOUNG | (S2_WRITABLE if writable else 0) | (S2_EXEC if exec else 0)
        if shift == self.page_shift:
            packed = (pfn - gfn) << _FLAG_BITS | flags
            intern = self._intern
            shared = intern.get(packed)
            if shared is None:
                if len(intern) >= _INTERN_MAX:
                    intern.clear()
                intern[packed] = shared = packed
            self._leaf[gfn] = shared
            return
        span = shift - self.page_shift
        head_gfn = gfn >> span << span
        # a block replaces the smaller leaves under it (kvm_pgtable_stage2_map collapses them)
        self.unmap_range(head_gfn, head_gfn + (1 << span))
        head_pfn = pfn - (gfn - head_gfn)
        self._levels.setdefault(shift, {})[gfn >> span] = (head_pfn - head_gfn) << _FLAG_BITS | flags

    def set_flags(self, gfn: int, set_bits: int = 0, clear_bits: int = 0) -> bool:
        """Change the permission/young bits of the leaf covering ``gfn``; False if unmapped."""
        for shift, level in self._levels.items():
            key = gfn >> (shift - self.page_shift)
            packed = level.get(key)
            if packed is not None:
                level[key] = (packed | set_bits) & ~clear_bits
                return True
        return False

    def unmap_range(self, start: int, end: int) -> int:
        """Zap every leaf overlapping gfns ``[start, end)``; returns how many were removed."""
        removed = 0
        for shift, level in self._levels.items():
            span = shift - self.page_shift
            lo, hi = start >> span, (end + (1 << span) - 1) >> span
            if hi - lo <= len(level):
                keys = [k for k in range(lo, hi) if k in level]
            else:
                keys = [k for k in level if lo <= k < hi]
            for key in keys:
                del level[key]
            removed += len(keys)
        return removed

    def write_protect_range(self, start: int, end: int) -> None:
        """Clear write permission on ``[start, end)`` (dirty logging's write-protect)."""
        for shift, level in self._levels.items():
            span = shift - self.page_shift
            lo, hi = start >> span, (end + (1 << span) - 1) >> span
            for key in [k for k in level if lo <= k < hi]:
                level[key] &= ~S2_WRITABLE

    def entries(self) -> Iterator[Stage2Entry]:
        """Every leaf, smallest size first (for dumps and tests)."""
        for shift in sorted(self._levels):
            span = shift - self.page_shift
            for key in sorted(self._levels[shift]):
                entry = self.lookup(key << span)
                assert entry is not None
                yield entry
