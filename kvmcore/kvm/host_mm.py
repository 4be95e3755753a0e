"""The VMM process's address space: anonymous mappings, protections, hwpoison.

A simplification of the host mm that KVM's ``hva_to_pfn()`` looks into. Each mapping is a
VMA with a protection and a page size; its pages get host pfns when the VMA is created
(contiguous, so huge mappings are possible). Nothing is stored per page except poisoned
pfns, so a 1 TiB mapping costs a few hundred bytes.

Changes that the kernel's mmu notifiers report to KVM (``munmap``, ``mprotect``,
``memory_failure``) call back into the VM so that it zaps its stage-2 mappings of the range.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from kvmcore import _args
from kvmcore._dataclass_methods import fields_eq, fields_repr
from kvmcore._types import KVM_PFN_ERR_FAULT, KVM_PFN_ERR_HWPOISON
from kvmcore.abi import EFAULT, EINVAL, ENOMEM
from kvmcore.errors import KvmError

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

#: With more than ``_REGION_CACHE_MIN`` VMAs, ``find_vma`` (then ``_find_vma_cached``) remembers the VMA of each 2 MiB region
#: of hva it looked up (one dict probe instead of a binary search over thousands of VMAs); the
#: table starts over past ``_REGION_CACHE_MAX`` entries.
_REGION_SHIFT = 21
_REGION_CACHE_MIN = 64
_REGION_CACHE_MAX = 1 << 16

#: Where the model starts placing mappings, and the user address-space limit (x86-64 47-bit).
MMAP_BASE = 0x1000_0000_0000
TASK_SIZE = 1 << 47


@dataclass(slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore._dataclass_methods
class Vma:
    """One mapping: ``[start, end)`` with ``prot``, backed by pfns from ``pfn_base``."""

    start: int
    end: int
    prot: int
    page_size: int
    pfn_base: int
    #: backed by transparent huge pages (anonymous memory the host maps with PMD leaves)
    #: rather than hugetlbfs: ``is_vm_hugetlb_page(vma)`` is False for it
    thp: bool = False

    def __init__(
        self, start: int, end: int, prot: int, page_size: int, pfn_base: int, thp: bool = False
    ) -> None:
        self.start = start
        self.end = end
        self.prot = prot
        self.page_size = page_size
        self.pfn_base = pfn_base
        self.thp = thp

    __repr__ = fields_repr
    __eq__ = fields_eq

    def pfn(self, hva: int, page_shift: int) -> int:
        return self.pfn_base + ((hva - self.start) >> page_shift)


def _is_hugetlb(vma: Vma, base_page_size: int) -> bool:
    """``is_vm_hugetlb_page()``: huge pages that are not THP."""
    return vma.page_size > base_page_size and not vma.thp


class HostMemory:
    """The host address space of the VMM, as ``vm.host``.

    ``mmap``/``mprotect``/``munmap`` follow the POSIX calls' rules (page-aligned, ``EINVAL``
    otherwise); ``memory_failure(hva)`` poisons the page as the kernel's ``memory_failure()``
    does after a machine check.
    """

    def __init__(self, page_shift: int, invalidate: Callable[[int, int], None]) -> None:
        self.page_shift = page_shift
        self.page_size = 1 << page_shift
        self._invalidate = invalidate
        self._starts: list[int] = []
        self._vmas: list[Vma] = []
        self._next_hva = MMAP_BASE
        self._next_pfn = 0x100000 >> (page_shift - 12) if page_shift >= 12 else 0x100000
        self.poisoned: set[int] = set()
        #: the VMA the last lookup found (faults come in runs on one VMA), and the VMA of each
        #: 2 MiB region looked up; both reset on any change to the VMAs
        self._last: Vma | None = None
        self._regions: dict[int, Vma] = {}

    # -- mapping -----------------------------------------------------------------------------
    def mmap(
        self, size: int, prot: int = PROT_READ | PROT_WRITE, *, page_size: int | None = None, thp: bool = False
    ) -> int:
        """Map ``size`` bytes of fresh anonymous memory; returns the hva.

        ``page_size`` is the size of the host's leaf mappings (``host_pfn_mapping_level()``,
        ``get_user_mapping_size()``): 2 MiB or 1 GiB lets KVM map the range with blocks; the
        default is the base page size. The backing is hugetlbfs (``is_vm_hugetlb_page()``,
        the VMA's ``huge_page_shift()`` is ``page_size``) unless ``thp``: transparent huge
        pages in a normal VMA, which arm64 and RISC-V (7.x) find only through
        ``transparent_hugepage_adjust()``.
        """
        for _name, _value in (("size", size), ("prot", prot)):
            _args.integer("mmap", _name, _value)
        page_size = page_size or self.page_size
        if page_size < self.page_size or page_size & (page_size - 1):
            raise KvmError(EINVAL, f"mmap: page_size {page_size:#x} is not a power of two >= {self.page_size:#x}")
        if size <= 0 or size % page_size:
            raise KvmError(EINVAL, f"mmap: size {size:#x} is not a positive multiple of {page_size:#x}")
        align = max(page_size, 2 << 20)
        start = (self._next_hva + align - 1) & ~(align - 1)
        if start + size > TASK_SIZE:
            raise KvmError(ENOMEM, f"mmap: no room for {size:#x} bytes below TASK_SIZE")
        pages_per_block = page_size >> self.page_shift
        pfn_base = (self._next_pfn + pages_per_block - 1) // pages_per_block * pages_per_block
        self._next_pfn = pfn_base + (size >> self.page_shift)
        self._next_hva = start + size + align  # a guard gap between mappings
        if thp and page_size == self.page_size:
            raise KvmError(EINVAL, "mmap: thp=True needs a page_size above the base page size")
        self._insert(Vma(start, start + size, prot, page_size, pfn_base, thp))
        return start

    def munmap(self, hva: int, size: int) -> None:
        """Unmap ``[hva, hva+size)``; KVM's mappings of it are zapped (mmu notifier)."""
        for _name, _value in (("hva", hva), ("size", size)):
            _args.integer("munmap", _name, _value)
        self._check_range("munmap", hva, size)
        self._carve(hva, hva + size)
        self._invalidate(hva, hva + size)

    def mprotect(self, hva: int, size: int, prot: int) -> None:
        """Change the protection of ``[hva, hva+size)``; ``ENOMEM`` if part is unmapped."""
        for _name, _value in (("hva", hva), ("size", size), ("prot", prot)):
            _args.integer("mprotect", _name, _value)
        self._check_range("mprotect", hva, size)
        end = hva + size
        if self._covered(hva, end) != size:
            raise KvmError(ENOMEM, f"mprotect: [{hva:#x}, {end:#x}) is not fully mapped")
        pieces = self._carve(hva, end)
        for vma in pieces:
            vma.prot = prot
            self._insert(vma)
        self._invalidate(hva, end)

    def memory_failure(self, hva: int) -> int:
        """Poison the page at ``hva`` (an uncorrectable memory error); returns its pfn.

        The kernel unmaps a poisoned page from every mapping, KVM's included, and later
        accesses see ``-EHWPOISON`` from GUP (``KVM_PFN_ERR_HWPOISON``). A hugetlbfs page is
        poisoned whole (``mm/memory-failure.c``: hugetlb folios are not split), so every
        hva in it faults as poisoned; a THP or base page loses only the page at ``hva``
        (kvmcore keeps the THP's mapping size: the split is not modelled).
        """
        _args.integer("memory_failure", "hva", hva)
        vma = self.find_vma(hva)
        if vma is None:
            raise KvmError(EFAULT, f"memory_failure: hva {hva:#x} is not mapped")
        pfn = vma.pfn(hva, self.page_shift)
        size = vma.page_size if _is_hugetlb(vma, self.page_size) else self.page_size
        self.poisoned.add(pfn & ~((size >> self.page_shift) - 1))
        page = hva & ~(size - 1)
        self._invalidate(page, page + size)
        return pfn

    # -- lookups -----------------------------------------------------------------------------
    def find_vma(self, hva: int) -> Vma | None:
        vma = self._last
        if vma is not None and vma.start <= hva < vma.end:
            return vma
        i = bisect.bisect_right(self._starts, hva) - 1
        if i >= 0:
            vma = self._vmas[i]
            if hva < vma.end:
                self._last = vma
                return vma
        return None

    def _find_vma_cached(self, hva: int) -> Vma | None:
        """``find_vma`` with the region cache (bound as ``find_vma`` above ``_REGION_CACHE_MIN`` VMAs)."""
        vma = self._last
        if vma is not None and vma.start <= hva < vma.end:
            return vma
        regions = self._regions
        vma = regions.get(hva >> _REGION_SHIFT)
        if vma is not None and vma.start <= hva < vma.end:
            self._last = vma
            return vma
        vma = HostMemory.find_vma(self, hva)  # the plain search (the instance binding shadows it)
        if vma is not None:
            if len(regions) >= _REGION_CACHE_MAX:
                regions.clear()
            regions[hva >> _REGION_SHIFT] = vma
        return vma

    def hva_to_pfn(self, hva: int, write_fault: bool) -> tuple[int, bool]:
        """Mirrors ``hva_to_pfn()``: ``(pfn, writable)`` or an error pfn.

        No VMA or no permission for the access gives ``KVM_PFN_ERR_FAULT``; a poisoned page
        ``KVM_PFN_ERR_HWPOISON``. ``writable`` says whether the host mapping allows writes.
        """
        vma = self._last
        if vma is None or not vma.start <= hva < vma.end:
            vma = self.find_vma(hva)
            if vma is None:
                return KVM_PFN_ERR_FAULT, False
        prot = vma.prot
        if not prot & PROT_READ:
            return KVM_PFN_ERR_FAULT, False
        writable = bool(prot & PROT_WRITE)
        if write_fault and not writable:
            return KVM_PFN_ERR_FAULT, False
        pfn = vma.pfn_base + ((hva - vma.start) >> self.page_shift)
        if self.poisoned and (
            pfn in self.poisoned
            or (
                _is_hugetlb(vma, self.page_size)
                and pfn & ~((vma.page_size >> self.page_shift) - 1) in self.poisoned
            )
        ):
            return KVM_PFN_ERR_HWPOISON, False
        return pfn, writable

    def mapping_size(self, hva: int) -> int:
        """The host mapping size at ``hva`` (``host_pfn_mapping_level()``), 0 if unmapped."""
        vma = self._last
        if vma is None or not vma.start <= hva < vma.end:
            vma = self.find_vma(hva)
            if vma is None:
                return 0
        return vma.page_size

    @property
    def vmas(self) -> tuple[Vma, ...]:
        return tuple(self._vmas)

    # -- internals ---------------------------------------------------------------------------
    def _check_range(self, call: str, hva: int, size: int) -> None:
        if hva & (self.page_size - 1) or size <= 0 or size & (self.page_size - 1):
            raise KvmError(EINVAL, f"{call}: [{hva:#x}, +{size:#x}) is not page aligned and non-empty")

    def _insert(self, vma: Vma) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        self._starts.insert(i, vma.start)
        self._vmas.insert(i, vma)
        self._changed()

    def _changed(self) -> None:
        """Forget the cached lookups; use the region cache only when there are many VMAs."""
        self._last = None
        self._regions.clear()
        if len(self._vmas) > _REGION_CACHE_MIN:
            self.find_vma = self._find_vma_cached  # type: ignore[method-assign]
        else:
            self.__dict__.pop("find_vma", None)

    def _covered(self, start: int, end: int) -> int:
        return sum(min(v.end, end) - max(v.start, start) for v in self._vmas if v.start < end and v.end > start)

    def _carve(self, start: int, end: int) -> list[Vma]:
        """Remove ``[start, end)`` from the VMAs; return the removed pieces (split as needed)."""
        removed: list[Vma] = []
        self._changed()
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while i < len(self._vmas):
            vma = self._vmas[i]
            if vma.start >= end:
                break
            if vma.end <= start:
                i += 1
                continue
            del self._vmas[i], self._starts[i]
            lo, hi = max(vma.start, start), min(vma.end, end)
            removed.append(Vma(lo, hi, vma.prot, vma.page_size, vma.pfn(lo, self.page_shift), vma.thp))
            if vma.start < lo:
                self._insert(Vma(vma.start, lo, vma.prot, vma.page_size, vma.pfn_base, vma.thp))
                i += 1
            if hi < vma.end:
                self._insert(Vma(hi, vma.end, vma.prot, vma.page_size, vma.pfn(hi, self.page_shift), vma.thp))
                i += 1
        self._changed()
        return removed
