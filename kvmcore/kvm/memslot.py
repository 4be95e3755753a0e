"""The sorted set of memslots that gfn lookups search (``search_memslots()``); the slot itself,
``struct kvm_memory_slot``, is :class:`kvmcore.Memslot` in ``kvmcore/_types.py``."""

from __future__ import annotations

import bisect

from kvmcore._types import Memslot

#: With more than ``_REGION_CACHE_MIN`` slots, ``find`` (then ``_find_cached``) remembers which slot holds each 512-page
#: region it looked up (2 MiB at 4K): a VM with thousands of slots then answers a repeated region
#: with one dict probe instead of a binary search over every base (each probe a cache miss). The
#: table starts over past ``_REGION_CACHE_MAX`` entries (about 5 MB).
_REGION_SHIFT = 9
_REGION_CACHE_MIN = 64
_REGION_CACHE_MAX = 1 << 16


class Memslots:
    """The VM's memslots, sorted by ``base_gfn``: ``find(gfn)`` is a binary search, with a
    per-region cache in front."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._slots: list[Memslot] = []
        self.by_id: dict[int, Memslot] = {}
        self._regions: dict[int, Memslot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self):
        return iter(self._slots)

    def find(self, gfn: int) -> Memslot | None:
        """Mirrors ``gfn_to_memslot()``: the slot holding ``gfn`` or ``None``."""
        i = bisect.bisect_right(self._bases, gfn) - 1
        if i >= 0:
            slot = self._slots[i]
            if gfn < slot.base_gfn + slot.npages:
                return slot
        return None

    def _find_cached(self, gfn: int) -> Memslot | None:
        """``find`` with the region cache in front (bound as ``find`` above ``_REGION_CACHE_MIN`` slots)."""
        regions = self._regions
        slot = regions.get(gfn >> _REGION_SHIFT)
        if slot is not None and slot.base_gfn <= gfn < slot.base_gfn + slot.npages:
            return slot
        slot = Memslots.find(self, gfn)  # the plain binary search (the instance binding shadows it)
        if slot is not None:
            if len(regions) >= _REGION_CACHE_MAX:
                regions.clear()
            regions[gfn >> _REGION_SHIFT] = slot
        return slot

    def _changed(self) -> None:
        """Forget the region cache; use it only when there are many slots."""
        self._regions.clear()
        if len(self._slots) > _REGION_CACHE_MIN:
            self.find = self._find_cached  # type: ignore[method-assign]
        else:
            self.__dict__.pop("find", None)

    def overlapping(self, start: int, end: int, ignore_id: int | None = None) -> Memslot | None:
        """Mirrors ``kvm_check_memslot_overlap()``: a slot other than ``ignore_id`` in range."""
        i = max(bisect.bisect_right(self._bases, start) - 1, 0)
        while i < len(self._slots) and self._slots[i].base_gfn < end:
            slot = self._slots[i]
            if slot.end_gfn > start and slot.id != ignore_id:
                return slot
            i += 1
        return None

    def add(self, slot: Memslot) -> None:
        i = bisect.bisect_left(self._bases, slot.base_gfn)
        self._bases.insert(i, slot.base_gfn)
        self._slots.insert(i, slot)
        self.by_id[slot.id] = slot
        self._changed()

    def remove(self, slot: Memslot) -> None:
        i = bisect.bisect_left(self._bases, slot.base_gfn)
        while self._slots[i] is not slot:
            i += 1
        del self._bases[i], self._slots[i]
        del self.by_id[slot.id]
        self._changed()
