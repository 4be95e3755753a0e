"""guest_memfd: private guest memory that the VMM cannot map (``KVM_CREATE_GUEST_MEMFD``).

Modelled as a file of ``size`` bytes with its own contiguous pfns, a record of which memslot
ranges are bound to which offsets (``kvm_gmem_bind()``), and poisoned offsets. The checks of
``kvm_gmem_create()`` and ``kvm_gmem_bind()`` that depend on the VM and the kernel version are
made by the VM (``kvm_main.py``) from ``vm.config`` (``kconfig.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvmcore import _args
from kvmcore.abi import (
    EEXIST,
    EHWPOISON,
    EINVAL,
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
)
from kvmcore.errors import KvmError

GUEST_MEMFD_FLAGS_VALID = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED


@dataclass(slots=True, eq=False)
class GuestMemfd:
    """One guest_memfd file: ``fd`` as returned by ``vm.create_guest_memfd()``."""

    fd: int
    size: int
    flags: int
    pfn_base: int
    page_shift: int
    #: Bound ranges: (offset, end offset, slot id).
    bindings: list[tuple[int, int, int]] = field(default_factory=list)
    poisoned: set[int] = field(default_factory=set)
    invalidate: Callable[[GuestMemfd, int, int], None] | None = None
    #: The VM that created it (``gmem->kvm``); bindings to another VM's slots fail.
    owner: object = None

    def check_range(self, offset: int, size: int) -> None:
        """The range check of ``kvm_gmem_bind()`` (7.3: ``kvm_gmem_prepare_memory_region()``):
        ``!PAGE_ALIGNED(offset) || offset + size > i_size`` is EINVAL (``offset`` is unsigned
        in every modelled version: the 7.2 fix, also in the 6.12 and 6.18 stable trees)."""
        if offset < 0 or offset & ((1 << self.page_shift) - 1) or offset + size > self.size:
            raise KvmError(
                EINVAL,
                f"guest_memfd {self.fd}: offset {offset:#x} + size {size:#x} does not fit in its {self.size:#x} bytes",
            )

    def bind(self, slot_id: int, offset: int, size: int, overlap_errno: int = EEXIST) -> None:
        """The binding of ``kvm_gmem_bind()`` (7.3: ``kvm_gmem_commit_memory_region()``): a
        range already bound fails with ``overlap_errno`` (EINVAL before 7.2, EEXIST since)."""
        for start, end, other in self.bindings:
            if offset < end and start < offset + size:
                raise KvmError(
                    overlap_errno,
                    f"guest_memfd {self.fd}: [{offset:#x}, {offset + size:#x}) is already bound to slot {other}",
                )
        self.bindings.append((offset, offset + size, slot_id))

    def unbind(self, slot_id: int) -> None:
        self.bindings = [b for b in self.bindings if b[2] != slot_id]

    def get_pfn(self, offset: int) -> int:
        """The pfn at byte ``offset``; ``EHWPOISON`` for a poisoned page (``kvm_gmem_get_pfn()``)."""
        index = offset >> self.page_shift
        if index in self.poisoned:
            raise KvmError(EHWPOISON, f"guest_memfd {self.fd}: page at offset {offset:#x} is poisoned")
        return self.pfn_base + index

    def memory_failure(self, offset: int) -> int:
        """Poison the page at ``offset`` (``kvm_gmem_error_folio()``); KVM's mappings are zapped."""
        _args.integer("memory_failure", "offset", offset)
        if not 0 <= offset < self.size:
            raise KvmError(EINVAL, f"guest_memfd {self.fd}: offset {offset:#x} is beyond its {self.size:#x} bytes")
        index = offset >> self.page_shift
        self.poisoned.add(index)
        if self.invalidate is not None:
            page = index << self.page_shift
            self.invalidate(self, page, page + (1 << self.page_shift))
        return self.pfn_base + index
