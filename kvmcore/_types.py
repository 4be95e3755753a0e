"""Value types passed through the hooks: what an arch declares, the memslot a fault lands in,
what faultin decides, what a fault ends in. ``Access`` and ``Syndrome``, which only the tool
hooks use, are in :mod:`kvmcore._access` and :mod:`kvmcore._syndrome`.

They are dataclasses (not dicts) so that pluggy's hook tracing prints each on one line.

Their ``__init__`` is written out and their ``__repr__`` and ``__eq__`` (and a frozen one's
``__hash__``) are the shared ones of :mod:`kvmcore._dataclass_methods`: ``@dataclass`` would
generate them, and CPython 3.11 compiles what it generates from source text at every import
(about 2 M instructions a class, 0.5% of ``kvmcore decode``'s start-up). ``tests/test_types.py``
holds each to what ``dataclasses.make_dataclass`` generates for the same fields; ``fields()``,
``replace()`` and ``asdict()`` work as before. The same goes for ``Syndrome``, ``Proposal``,
``Stage2Entry``, ``Vma`` and ``PluginStatus`` (``Memslot`` and ``KernelVersion``: ``__init__``
only, their other methods are their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvmcore._dataclass_methods import fields_eq, fields_hash, fields_repr
from kvmcore.abi import KVM_MEM_GUEST_MEMFD, KVM_MEM_READONLY, KVM_MEM_USERFAULT, exit_reason_name

if TYPE_CHECKING:
    from kvmcore.kvm.guest_memfd import GuestMemfd

#: What a logical access does (``Access.kind``).
ACCESS_KINDS = ("read", "write", "exec")
#: Why the access faults at stage 2 (``Access.cause``): what ``encode_fault`` must make the CPU report.
STAGE2_CAUSES = ("not_present", "read_only", "no_exec", "access_flag", "no_slot")


class _Factory:
    """The default of a ``default_factory`` field in a written-out ``__init__`` (dataclasses'
    own marker is private): the parameter's default shows as ``<factory>``, as there."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY: Any = _Factory()


@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)
class ArchInfo:
    """An arch's static description, returned by the ``arch_info`` hook.

    ``name`` is the entry-point name (``"arm64"``); ``fault_type`` the arch's fault dataclass,
    checked against the common contract when the plugin is loaded.
    """

    name: str
    fault_type: type
    page_shift: int = 12
    #: Guest physical address bits the arch can express in a fault (IPA/GPA size).
    phys_bits: int = 52
    #: The raw register names ``decode_fault`` accepts, e.g. ``("esr", "far", "hpfar")``.
    registers: tuple[str, ...] = ()
    description: str = ""
    #: VM settings the arch accepts (``{"granule": ("4K", "16K", "64K")}``), first value default.
    settings: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: kvmcore modelling inputs ``decode_fault`` accepts besides the registers (``private``,
    #: ``data``, ``len``...): what the hardware does not report but the model needs.
    extra_keys: tuple[str, ...] = ()
    #: Stage-2 causes ``encode_fault`` can express on this arch.
    causes: tuple[str, ...] = STAGE2_CAUSES
    #: The memory-fault exit designs (``docs/designs.md``) the plugin implements; a VM asking
    #: for another is refused, and the conformance kit checks each one listed. The default is
    #: what common code does alone; ``arch-hook`` needs ``kvm_arch_prepare_memory_fault_exit``.
    designs: tuple[str, ...] = ("v3-helper", "rwx-flags", "annotate-efault")
    #: ``kvmcore replay``'s block fast path: event name -> a regular expression of the event's
    #: text (what follows ``event: ``) in the canonical form the kernel's TP_printk prints,
    #: e.g. ``{"kvm_guest_fault": r"ipa 0x[0-9a-f]+, hsr ..."}``. No capturing groups, nothing
    #: that matches a newline. Only a selector: every distinct text it selects is still parsed
    #: by ``parse_trace_event`` (the oracle), so a looser pattern costs speed, never accuracy.
    trace_patterns: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        name: str,
        fault_type: type,
        page_shift: int = 12,
        phys_bits: int = 52,
        registers: tuple[str, ...] = (),
        description: str = "",
        settings: Mapping[str, tuple[Any, ...]] = _FACTORY,
        extra_keys: tuple[str, ...] = (),
        causes: tuple[str, ...] = STAGE2_CAUSES,
        designs: tuple[str, ...] = ("v3-helper", "rwx-flags", "annotate-efault"),
        trace_patterns: Mapping[str, str] = _FACTORY,
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fault_type", fault_type)
        object.__setattr__(self, "page_shift", page_shift)
        object.__setattr__(self, "phys_bits", phys_bits)
        object.__setattr__(self, "registers", registers)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "settings", {} if settings is _FACTORY else settings)
        object.__setattr__(self, "extra_keys", extra_keys)
        object.__setattr__(self, "causes", causes)
        object.__setattr__(self, "designs", designs)
        object.__setattr__(
            self, "trace_patterns", {} if trace_patterns is _FACTORY else trace_patterns
        )

    __repr__ = fields_repr
    __eq__ = fields_eq
    __hash__ = fields_hash


# --- faultin_pfn results ---------------------------------------------------------------------
# Mapped, Retry, Exit, MemoryFault and Signal are made on every fault: slotted but not frozen
# (a frozen dataclass's __init__ costs three times as much). Treat them as values all the same:
# nothing in kvmcore changes one after it is made.
@dataclass(slots=True, init=False, repr=False, eq=False)
class Mapped:
    """faultin resolved the gfn: the core installs a stage-2 mapping and the guest resumes.

    ``pfn`` is the host pfn backing the faulting gfn; ``size`` the mapping level as bytes
    (PAGE_SIZE, 2 MiB, 1 GiB...): the core aligns gfn and pfn down to it. ``outcome`` names
    what happened (``"mapped"``, ``"permission_relaxed"``...).
    """

    pfn: int
    writable: bool
    size: int
    exec: bool = True
    outcome: str = "mapped"

    def __init__(
        self, pfn: int, writable: bool, size: int, exec: bool = True, outcome: str = "mapped"
    ) -> None:
        self.pfn = pfn
        self.writable = writable
        self.size = size
        self.exec = exec
        self.outcome = outcome

    __repr__ = fields_repr
    __eq__ = fields_eq


@dataclass(slots=True, init=False, repr=False, eq=False)
class Retry:
    """No mapping is installed, the guest resumes (and may fault again).

    Used for fix-ups made in place (access flag), aborts injected into the guest, MMIO
    completed in the kernel, mmu-notifier retries.
    """

    outcome: str = "retry"
    detail: str = ""

    def __init__(self, outcome: str = "retry", detail: str = "") -> None:
        self.outcome = outcome
        self.detail = detail

    __repr__ = fields_repr
    __eq__ = fields_eq


@dataclass(slots=True, init=False, repr=False, eq=False)
class Exit:
    """KVM_RUN returns to userspace with ``ret`` (0 or ``-errno``).

    The arch has filled ``vcpu.kvm_run`` (exit reason and union) before returning this; a
    bare ``-EFAULT`` leaves ``exit_reason`` at ``KVM_EXIT_UNKNOWN``.
    """

    ret: int
    outcome: str
    detail: str = ""

    def __init__(self, ret: int, outcome: str, detail: str = "") -> None:
        self.ret = ret
        self.outcome = outcome
        self.detail = detail

    __repr__ = fields_repr
    __eq__ = fields_eq


FaultinResult = Mapped | Retry | Exit


@dataclass(slots=True, init=False, repr=False, eq=False)
class MemoryFault:
    """What the common ``kvm_prepare_memory_fault_exit`` wrote (its hook's return value)."""

    flags: int
    gpa: int
    size: int

    def __init__(self, flags: int, gpa: int, size: int) -> None:
        self.flags = flags
        self.gpa = gpa
        self.size = size

    __repr__ = fields_repr
    __eq__ = fields_eq


@dataclass(slots=True, init=False, repr=False, eq=False)
class Signal:
    """A signal KVM sends to the vCPU thread (``send_sig_mceerr``: SIGBUS, BUS_MCEERR_AR)."""

    signo: str
    code: str
    addr: int
    lsb: int

    def __init__(self, signo: str, code: str, addr: int, lsb: int) -> None:
        self.signo = signo
        self.code = code
        self.addr = addr
        self.lsb = lsb

    __repr__ = fields_repr
    __eq__ = fields_eq


@dataclass(slots=True, init=False, repr=False, eq=False)
class FaultResult:
    """The end of one guest fault, as ``vcpu.handle_fault(raw)`` reports it.

    ``ret`` is what KVM_RUN would return (0, ``-EFAULT``, ``-EHWPOISON``...);
    ``exit_reason`` the exit userspace sees, or ``None`` when the guest resumes;
    ``outcome`` the arch's name for the path taken.
    """

    fault: Any
    ret: int
    exit_reason: int | None
    outcome: str
    mapped: Mapped | None = None
    signal: Signal | None = None
    detail: str = ""

    def __init__(
        self,
        fault: Any,
        ret: int,
        exit_reason: int | None,
        outcome: str,
        mapped: Mapped | None = None,
        signal: Signal | None = None,
        detail: str = "",
    ) -> None:
        self.fault = fault
        self.ret = ret
        self.exit_reason = exit_reason
        self.outcome = outcome
        self.mapped = mapped
        self.signal = signal
        self.detail = detail

    __repr__ = fields_repr
    __eq__ = fields_eq

    @property
    def resumed(self) -> bool:
        """The guest re-enters without a trip to userspace."""
        return self.exit_reason is None and self.ret == 0

    @property
    def exit_reason_name(self) -> str:
        return exit_reason_name(self.exit_reason)


# --- host pfns (include/linux/kvm_host.h) ----------------------------------------------------
KVM_PFN_ERR_MASK = 0x7FF << 52
KVM_PFN_ERR_NOSLOT_MASK = 0xFFF << 52
KVM_PFN_NOSLOT = 1 << 63
KVM_PFN_ERR_FAULT = KVM_PFN_ERR_MASK
KVM_PFN_ERR_HWPOISON = KVM_PFN_ERR_MASK + 1
KVM_PFN_ERR_RO_FAULT = KVM_PFN_ERR_MASK + 2
KVM_PFN_ERR_SIGPENDING = KVM_PFN_ERR_MASK + 3
KVM_PFN_ERR_NEEDS_IO = KVM_PFN_ERR_MASK + 4


def is_error_pfn(pfn: int) -> bool:
    """Mirrors ``is_error_pfn()``."""
    return bool(pfn & KVM_PFN_ERR_MASK)


def is_error_noslot_pfn(pfn: int) -> bool:
    """Mirrors ``is_error_noslot_pfn()``."""
    return bool(pfn & KVM_PFN_ERR_NOSLOT_MASK)


@dataclass(slots=True, init=False, repr=False, eq=False)
class TraceEvent:
    """One tracepoint line as an arch understood it (the ``parse_trace_event`` hook's result).

    ``kind`` is ``"guest_fault"`` for events carrying a syndrome to decode (``raw``), or
    ``"mmio"``, ``"exit"``, ``"access_fault"``... for the others; ``fields`` the parsed text.
    Made for every distinct text a replay reads: slotted but not frozen, as the faultin
    results above (a frozen dataclass's ``__init__`` costs about 0.25 us more); a value all
    the same, nothing in kvmcore changes one after it is made.
    """

    kind: str
    fields: Mapping[str, Any]
    raw: Mapping[str, int] | None = None

    def __init__(
        self, kind: str, fields: Mapping[str, Any], raw: Mapping[str, int] | None = None
    ) -> None:
        self.kind = kind
        self.fields = fields
        self.raw = raw

    __repr__ = fields_repr
    __eq__ = fields_eq


@dataclass(slots=True, init=False, repr=False, eq=False)  # compared by identity; __repr__ below
class Memslot:
    """One guest physical range backed by host memory (``struct kvm_memory_slot``).

    ``id`` is the slot number userspace gave; ``base_gfn``/``npages`` the guest range;
    ``userspace_addr`` the hva of its first page; ``gmem``/``gmem_pgoff`` the guest_memfd
    binding of a ``KVM_MEM_GUEST_MEMFD`` slot; ``userfault_bitmap`` the caller's buffer when
    ``KVM_MEM_USERFAULT`` is set (KVM Userfault v3).
    """

    id: int
    base_gfn: int
    npages: int
    userspace_addr: int
    flags: int
    page_shift: int
    gmem: GuestMemfd | None = None
    gmem_pgoff: int = 0
    userfault_bitmap: memoryview | None = None
    dirty_bitmap: bytearray | None = None

    def __init__(
        self,
        id: int,
        base_gfn: int,
        npages: int,
        userspace_addr: int,
        flags: int,
        page_shift: int,
        gmem: GuestMemfd | None = None,
        gmem_pgoff: int = 0,
        userfault_bitmap: memoryview | None = None,
        dirty_bitmap: bytearray | None = None,
    ) -> None:
        self.id = id
        self.base_gfn = base_gfn
        self.npages = npages
        self.userspace_addr = userspace_addr
        self.flags = flags
        self.page_shift = page_shift
        self.gmem = gmem
        self.gmem_pgoff = gmem_pgoff
        self.userfault_bitmap = userfault_bitmap
        self.dirty_bitmap = dirty_bitmap

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    @property
    def guest_phys_addr(self) -> int:
        return self.base_gfn << self.page_shift

    @property
    def memory_size(self) -> int:
        return self.npages << self.page_shift

    @property
    def readonly(self) -> bool:
        return bool(self.flags & KVM_MEM_READONLY)

    def contains(self, gfn: int) -> bool:
        return self.base_gfn <= gfn < self.base_gfn + self.npages

    def gfn_to_hva(self, gfn: int) -> int:
        """Mirrors ``__gfn_to_hva_memslot()``."""
        return self.userspace_addr + ((gfn - self.base_gfn) << self.page_shift)

    def has_gmem(self) -> bool:
        """Mirrors ``kvm_slot_has_gmem()``."""
        return bool(self.flags & KVM_MEM_GUEST_MEMFD)

    def is_userfault(self) -> bool:
        """Mirrors ``kvm_is_userfault_memslot()`` for a non-NULL slot."""
        return bool(self.flags & KVM_MEM_USERFAULT)

    def mark_dirty(self, gfn: int) -> None:
        """Mirrors ``mark_page_dirty_in_slot()`` when dirty logging is on."""
        if self.dirty_bitmap is not None:
            rel = gfn - self.base_gfn
            self.dirty_bitmap[rel >> 3] |= 1 << (rel & 7)

    def __repr__(self) -> str:
        return (
            f"Memslot(id={self.id}, gpa={self.guest_phys_addr:#x}, size={self.memory_size:#x}, "
            f"hva={self.userspace_addr:#x}, flags={self.flags:#x})"
        )
