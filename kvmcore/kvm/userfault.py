"""KVM Userfault (v3 series, unmerged): a per-memslot bitmap of pages that must exit.

The bitmap is the caller's buffer (``bytearray``, ``array('Q')``, ``mmap``...), read in place
as the kernel reads userspace memory: one bit per page of the slot, an array of
little-endian 64-bit longs, so bit *i* is bit ``i % 8`` of byte ``i // 8``.
"""

from __future__ import annotations

from typing import Any

from kvmcore.abi import EINVAL
from kvmcore.errors import KvmError

BITS_PER_LONG = 64
_CHUNK = 1 << 20


def bitmap_bytes(npages: int) -> int:
    """``DIV_ROUND_UP(npages, BITS_PER_LONG) * sizeof(long)``: what ``access_ok()`` checks."""
    return (npages + BITS_PER_LONG - 1) // BITS_PER_LONG * 8


def as_bitmap(buffer: Any, npages: int, slot: int) -> memoryview:
    """A byte view of the caller's bitmap; ``EINVAL`` if it is not a buffer or too small.

    Mirrors the v3 ``kvm_set_memory_region()`` check that fails with ``-EINVAL`` unless
    ``access_ok(userfault_bitmap, DIV_ROUND_UP(npages, BITS_PER_LONG) * sizeof(long))``.
    """
    try:
        view = memoryview(buffer)
    except TypeError:
        raise KvmError(
            EINVAL,
            f"slot {slot}: userfault_bitmap must support the buffer protocol "
            f"(bytearray, array('Q')...), got {type(buffer).__name__}",
        ) from None
    view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    need = bitmap_bytes(npages)
    if view.nbytes < need:
        raise KvmError(
            EINVAL,
            f"slot {slot}: userfault_bitmap has {view.nbytes} bytes, {npages} pages need {need}",
        )
    return view


def test_bit(view: memoryview, index: int) -> bool:
    """Bit ``index`` of the bitmap; ``ValueError`` if the buffer was released (an unreadable pointer)."""
    return bool(view[index >> 3] >> (index & 7) & 1)


def set_bits(buffer: Any, indexes: range | list[int], value: bool = True) -> None:
    """Set (or clear) bits in a caller's bitmap, as a VMM does; convenience for tests and scenarios.

    A ``range`` with step 1 is filled by whole bytes (the partial bytes at its ends bit by
    bit), so setting every bit of a large slot costs one slice assignment, not one Python
    operation per page. Indexes are checked before anything is written.

    :raises TypeError: ``buffer`` is not a writable buffer, or ``indexes`` holds a non-int.
    :raises ValueError: an index is negative or beyond the buffer's bits (naming it).
    """
    try:
        view = memoryview(buffer).cast("B")
    except TypeError:
        raise TypeError(f"set_userfault_bits: buffer must be a writable buffer (bytearray, array('Q')...), got {type(buffer).__name__}") from None
    if view.readonly:
        raise TypeError(f"set_userfault_bits: buffer is read-only ({type(buffer).__name__})")
    nbits = view.nbytes * 8
    if isinstance(indexes, range) and indexes.step == 1:
        if not indexes:
            return
        if indexes.start < 0 or indexes.stop > nbits:
            raise ValueError(f"set_userfault_bits: indexes [{indexes.start}, {indexes.stop}) are outside the bitmap's {nbits} bits")
        first_byte = (indexes.start + 7) >> 3
        last_byte = indexes.stop >> 3
        if first_byte < last_byte:
            chunk = (b"\xff" if value else b"\x00") * min(last_byte - first_byte, _CHUNK)
            for at in range(first_byte, last_byte, _CHUNK):  # 1 MiB at a time: no bitmap-sized temporary
                n = min(_CHUNK, last_byte - at)
                view[at:at + n] = chunk[:n] if n < len(chunk) else chunk
            edges: range | list[int] = [*range(indexes.start, first_byte << 3), *range(last_byte << 3, indexes.stop)]
        else:
            edges = indexes
        _set_each(view, edges, value)
        return
    checked = list(indexes)
    for index in checked:
        if type(index) is not int:
            raise TypeError(f"set_userfault_bits: index {index!r} is a {type(index).__name__}, expected an int")
        if not 0 <= index < nbits:
            raise ValueError(f"set_userfault_bits: index {index} is outside the bitmap's {nbits} bits")
    _set_each(view, checked, value)


def _set_each(view: memoryview, indexes: range | list[int], value: bool) -> None:
    for index in indexes:
        if value:
            view[index >> 3] |= 1 << (index & 7)
        else:
            view[index >> 3] &= ~(1 << (index & 7)) & 0xFF
