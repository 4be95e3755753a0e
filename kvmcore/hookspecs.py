"""The hooks an architecture plugin implements (pluggy project ``kvmcore``).

An arch plugin is a module (or object) with functions marked ``@kvmcore.hookimpl`` and named
after these specs. Implementations may accept any subset of a hook's arguments. The core
implements ``prepare_memory_fault_exit``, ``faultin_pfn`` and ``configure_vm`` itself, as
ordinary plugins registered ``trylast`` (``kvmcore.kvm.default_hooks``), so an arch overrides them by
answering first or wraps them with ``@hookimpl(wrapper=True)``.

One guest fault, ``vcpu.handle_fault(raw)``, runs::

    decode_fault(vcpu, raw)        -> the arch's fault object      (common fields checked)
    core: fault.slot = gfn_to_memslot(fault.gfn)
    faultin_pfn(vcpu, fault)       -> Mapped | Retry | Exit
        ... may call kvm_prepare_memory_fault_exit(vcpu, fault)
            -> prepare_memory_fault_exit(vcpu, fault)   (common helper + arch wrappers)
    core: install the stage-2 mapping for Mapped
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from kvmcore._access import Access
    from kvmcore._syndrome import Syndrome
    from kvmcore._types import ArchInfo, FaultinResult, MemoryFault, Memslot, TraceEvent
    from kvmcore.kvm.kvm_main import VCPU, VM

hookspec = pluggy.HookspecMarker("kvmcore")


@hookspec(firstresult=True)
def arch_info() -> ArchInfo:
    """Describe the architecture. Called once when the plugin is loaded.

    :return: a :class:`kvmcore.ArchInfo`: ``name`` (the entry-point name, e.g. ``"arm64"``),
        ``fault_type`` (the arch's fault dataclass, checked against the common contract
        before any fault is handled), ``page_shift``, ``phys_bits``, the raw ``registers``
        ``decode_fault`` accepts, a one-line ``description``, and the VM ``settings`` it
        accepts.

    Example::

        @hookimpl
        def arch_info():
            return ArchInfo(name="arm64", fault_type=Arm64Fault, registers=("esr", "far", "hpfar"))
    """


@hookspec(firstresult=True)
def configure_vm(vm: VM, settings: Mapping[str, Any]) -> Any:
    """Validate the VM's arch settings and set up per-VM arch state. Called once by ``VM()``.

    :param vm: the VM being created; an arch may change ``vm.page_shift`` here (arm64's
        stage-2 granule) before any memslot exists.
    :param settings: the keyword settings given to ``kvmcore.VM(arch, **settings)``.
    :return: the validated settings (a dict), stored as ``vm.settings``. Raise
        ``ValueError`` naming the setting and the accepted values for a bad one. The core's
        default accepts exactly the settings declared in ``ArchInfo.settings`` and fills their
        defaults; an arch wraps it (``settings = yield``) to act on the validated values.
    """


@hookspec
def prepare_memory_region(vm: VM, old: Memslot | None, new: Memslot, change: str) -> None:
    """Let the arch refuse a memslot change (``kvm_arch_prepare_memory_region()``).

    Called by ``vm.set_user_memory_region()`` after the common checks passed and before
    anything is committed, for ``change`` ``"create"``, ``"move"`` and ``"flags_only"``
    (deletes cannot be refused).

    :param old: the slot as it is (``None`` for a create).
    :param new: the slot as it would be (not yet visible to faults).
    :return: nothing; raise ``kvmcore.KvmError`` with the kernel's errno to refuse, e.g. arm64's
        ``-EFAULT`` for a slot beyond the VM's IPA size.
    """


@hookspec(firstresult=True)
def decode_fault(vcpu: VCPU, raw: Mapping[str, int]) -> Any:
    """Turn the raw syndrome registers of one guest exit into the arch's fault object.

    Called first for every ``vcpu.handle_fault(raw)``.

    :param vcpu: the faulting vCPU (``vcpu.vm`` for settings and memory attributes).
    :param raw: register name -> value, e.g. ``{"esr": 0x93c08006, "far": 0x1008,
        "hpfar": 0x40010}``; the names are those listed in ``ArchInfo.registers``.
    :return: an instance of the arch's ``fault_type`` with the common fields filled
        (``gfn``, ``exec``, ``write``, ``is_private``; ``slot`` is filled by the core next).
    :raises kvmcore.DecodeError: for a syndrome that is malformed or not a guest memory
        fault, naming the register and the value (``esr=0x5a000000: EC 0x16 (HVC64) is not
        an abort``).
    """


@hookspec(firstresult=True)
def faultin_pfn(vcpu: VCPU, fault: Any) -> FaultinResult:
    """Resolve the fault's gfn to a host pfn, or decide how the fault ends.

    Called after decode, once ``fault.slot`` holds the gfn's memslot (or ``None``). This is
    where an arch orders its kernel's checks (MMIO, private/shared mismatch, userfault,
    hwpoison...), using the core helpers ``kvm_do_userfault``, ``kvm_faultin_pfn``,
    ``kvm_gmem_get_pfn``, ``kvm_prepare_memory_fault_exit`` and ``kvm_prepare_mmio_exit``.

    :return: one of

        * :class:`kvmcore.Mapped` ``(pfn, writable, size, exec, outcome)``: the core installs
          the stage-2 mapping and the guest resumes;
        * :class:`kvmcore.Retry` ``(outcome)``: the guest resumes without a new mapping
          (fixed in place, abort injected, mmu-notifier retry);
        * :class:`kvmcore.Exit` ``(ret, outcome)``: KVM_RUN returns ``ret`` (0 or
          ``-errno``) with ``vcpu.kvm_run`` already filled.

    The core's default (``trylast``) is the generic path of the KVM Userfault series:
    no slot -> MMIO exit, private/shared mismatch -> memory fault, userfault, RO-slot write
    -> MMIO, then guest_memfd or host memory.
    """


@hookspec(firstresult=True)
def prepare_memory_fault_exit(vcpu: VCPU, fault: Any) -> MemoryFault:
    """Fill ``vcpu.kvm_run`` for ``KVM_EXIT_MEMORY_FAULT`` (``kvm_prepare_memory_fault_exit``).

    Called through ``kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)`` from a faultin path
    that exits to userspace with a memory fault. The core's implementation is the common
    helper: ``exit_reason = 39``, ``gpa = gfn << PAGE_SHIFT``, ``size = PAGE_SIZE``,
    ``flags = KVM_MEMORY_EXIT_FLAG_PRIVATE`` when ``fault.is_private`` (RWX bits 0-2 stay 0),
    and kvmcore's syndrome extension cleared.

    An arch wraps it to add its syndrome after the common part ran::

        @hookimpl(wrapper=True)
        def prepare_memory_fault_exit(vcpu, fault):
            common = yield
            vcpu.kvm_run.syndrome.syndrome[0] = sanitised_esr(fault.esr)
            ...
            return common

    :return: the :class:`kvmcore.MemoryFault` the common helper wrote. Wrappers must return
        it unchanged and must never change ``flags``, ``gpa`` or ``size`` in ``kvm_run``
        (the core checks after every call and raises ``FaultContractError``).
    """


@hookspec
def kvm_arch_prepare_memory_fault_exit(vcpu: VCPU, fault: Any) -> None:
    """Compute every ``memory_fault.flags`` bit of an exit (the design ``arch-hook``).

    Sean Christopherson's compromise in the v3 review: common code fills ``exit_reason``,
    ``gpa`` and ``size``, zeroes ``flags`` and calls this hook, which ORs in the flags the arch
    derives from its own fault: PRIVATE for a private access (x86's; arm64's may leave flags
    empty) and, with the design ``rwx-flags``, one of READ/WRITE/EXEC from the arch's syndrome.
    Called only when the VM's design is ``arch-hook``; not ``firstresult``, every
    implementation runs (the kernel's would be one ``void`` function per arch).

    :return: nothing; write ``vcpu.kvm_run.memory_fault.flags |= ...``. Setting a bit other than
        PRIVATE (and RWX under ``rwx-flags``), or touching ``gpa``, ``size`` or
        ``exit_reason``, is a ``FaultContractError`` naming the design's ownership rule.
    """


@hookspec(firstresult=True)
def encode_fault(vcpu: VCPU, access: Access) -> Mapping[str, int]:
    """Build the raw registers a real CPU of this arch reports for a logical access.

    Used by ``kvmcore run --arch all`` (the same access on every arch) and by the
    conformance kit's round trip: ``decode_fault(encode_fault(a))`` gives back ``a``'s gfn,
    write, exec and is_private.

    :param access: a :class:`kvmcore.Access`: gpa, kind (read/write/exec), the stage-2
        ``cause`` (not_present, read_only, no_exec, access_flag, no_slot), private, size, data.
    :return: the raw register mapping ``decode_fault`` accepts. Raise ``ValueError`` naming
        the access when the arch cannot express it (e.g. an access-flag fault on x86).
    """


@hookspec(firstresult=True)
def describe_syndrome(vm: VM, raw: Mapping[str, int]) -> Syndrome:
    """Decode raw registers for a person: every field, its value and its meaning.

    Used by ``kvmcore decode``. Unlike ``decode_fault`` it decodes values that are not guest
    memory faults too (an arm64 ESR of any class, an x86 trace's error code), and says so.

    :return: a :class:`kvmcore.Syndrome`: ``fields`` (name -> value, JSON-ready, ``None``
        where the architecture leaves a field undefined), ``meanings`` (name -> one line),
        and ``guest_fault`` with ``error`` (the DecodeError message) when it is not one.
    :raises kvmcore.DecodeError: when the registers cannot be decoded at all.
    """


@hookspec(firstresult=True)
def parse_trace_event(event: str, text: str) -> TraceEvent | None:
    """Turn one tracepoint's printed text into raw registers (``kvmcore replay``).

    :param event: the event name as printed (``kvm_guest_fault``, ``kvm_page_fault``,
        ``kvm_exit``...).
    :param text: what follows ``event: `` on the line.
    :return: a :class:`kvmcore.TraceEvent` (kind, parsed fields, raw registers to decode), or
        ``None`` if this arch does not know the event. Raise ``ValueError`` naming the event when the
        text is malformed.

    ``ArchInfo.trace_patterns`` (optional) declares the event texts in their canonical form, for
    the replay's block fast path; this hook stays their parser (docs/hooks.md).
    """


@hookspec(firstresult=True)
def parse_log_text(text: str) -> list[dict[str, Any]] | None:
    """Find this arch's fault registers in one pasted log line (``kvmcore decode``, ``replay``).

    People paste what a kernel or VMM printed rather than register assignments: an arm64 splat's
    ``ESR = 0x0000000096000045``, KVM's ``Unsupported FSC: EC=0x24 xFSC=0x21 ESR_EL2=0x92000061``,
    an old x86 ``kvm_exit: reason EPT_VIOLATION rip 0x.. info 181 0``, a ``kvm_page_fault`` line.

    :param text: one line, mail quoting and the kernel log prefix already stripped.
    :return: the register sets found, in order, each a dict ``decode_fault``/``describe_syndrome``
        accept (names from ``ArchInfo.registers``; a set may lack registers the line does not
        give, e.g. an ESR without HPFAR); ``None`` when the line holds nothing of this arch's.
        Never raises for text it does not recognise.
    """


@hookspec(firstresult=True)
def decode_fault_batch(vcpu: VCPU, columns: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Decode many faults at once: numpy arrays of raw register values in, arrays of fields out.

    The vectorised counterpart of ``decode_fault`` for engines that hold millions of rows
    (``kvmcore replay --events`` Parquet, DuckDB, Spark/Dask): no Python call per row.

    :param vcpu: a vCPU of the VM whose settings decide the decoding (as for ``decode_fault``).
    :param columns: register name -> 1-D numpy array (or anything ``numpy.asarray`` takes), one
        value per row, every column the same length; the names are ``decode_fault``'s raw keys
        (a column present applies to every row; split batches whose rows have other keys).
    :return: name -> numpy array of the same length: ``valid`` (bool: ``decode_fault`` accepts
        the row), ``gfn`` (uint64), ``exec``, ``write``, ``is_private`` (bool), ``fault_kind``
        (str objects) and the arch's fields (docs/arch/*.md); where ``valid`` is False the
        other values are 0, False or "". None when the arch cannot decode this VM's faults in
        batches (then decode row by row).
    :raises kvmcore.DecodeError: for a batch no row of which can be decoded as given (an
        unknown or missing register, columns of different lengths, a non-integer column).
    """

