"""The riscv arch plugin (entry point ``riscv`` in ``kvmcore.arch``): hook implementations only.

Decoding lives in :mod:`kvmcore_riscv.trap`/:mod:`~kvmcore_riscv.htinst` (wrapped by
:mod:`~kvmcore_riscv.fault`), the faultin path in :mod:`~kvmcore_riscv.gstage`, the encoder in
:mod:`~kvmcore_riscv.encode` and the tracepoint parser in :mod:`~kvmcore_riscv.trace`.
See ``docs/arch/riscv.md``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import kvmcore
from kvmcore import ArchInfo, DecodeError, KvmError, TraceEvent, hookimpl
from kvmcore.abi import (
    KVM_MEMORY_EXIT_FLAG_EXEC,
    KVM_MEMORY_EXIT_FLAG_PRIVATE,
    KVM_MEMORY_EXIT_FLAG_READ,
    KVM_MEMORY_EXIT_FLAG_WRITE,
    KVMCORE_SYNDROME_ARCH_RISCV,
    KVMCORE_SYNDROME_VALID,
)

from .fault_type import MODEL_KEYS, REGISTERS, RiscvFault

#: ``ArchInfo.causes``: RISC-V's scause says which access faulted (fetch/load/store), never why.
#: A missing G-stage PTE, a missing R/W/X/U bit and a clear A/D bit (Svade) all report the
#: same cause, so only "not_present" and "no_slot" can be expressed as themselves.
CAUSES = ("not_present", "no_slot")
#: VM settings: none (the kernel modelled is ``vm.kernel``).
SETTINGS: dict[str, tuple[Any, ...]] = {}


#: ``kvm_exit``'s text exactly as the kernel prints it (``%lx``: lower-case hex, no padding), the
#: event that carries riscv's guest-page faults, and ``kvm_entry``'s (either form, see
#: :func:`kvmcore_riscv.trace.parse_kvm_entry`): ``ArchInfo.trace_patterns``, the selector of
#: ``kvmcore replay``'s block fast path. Strings here, so that loading the plugin does not import
#: the trace parsers, which stay the oracles.
TRACE_PATTERNS: dict[str, str] = {
    "kvm_exit": "SEPC:0x[0-9a-f]+, SCAUSE:0x[0-9a-f]+, STVAL:0x[0-9a-f]+, HTVAL:0x[0-9a-f]+, HTINST:0x[0-9a-f]+",
    "kvm_entry": "PC: 0x[0-9a-f]+",
}


@hookimpl
def arch_info() -> kvmcore.ArchInfo:
    """RV64 host with the H extension; GPAs up to 59 bits (Sv57x4)."""
    return ArchInfo(
        name="riscv",
        fault_type=RiscvFault,
        page_shift=12,
        # Sv57x4: 57 + 2 bits, what KVM_CAP_VM_GPA_BITS reports with Sv57x4 G-stage, and what a
        # guest with vsatp=Bare can fault on (htval holds up to 57 bits of GPA >> 2).
        phys_bits=59,
        registers=REGISTERS,
        extra_keys=MODEL_KEYS,
        description="RISC-V H extension: guest-page faults (scause 20/21/23), htval/htinst, "
        "gstage_page_fault() and kvm_riscv_mmu_map()",
        settings=SETTINGS,
        causes=CAUSES,
        designs=("v3-helper", "arch-hook", "rwx-flags", "annotate-efault"),
        trace_patterns=TRACE_PATTERNS,
    )


@hookimpl
def decode_fault(vcpu: kvmcore.VCPU, raw: Mapping[str, Any]) -> RiscvFault:
    """Mirrors the trap reading of ``gstage_page_fault()``. The raw key ``private`` needs the
    proposal "riscv-private" (upstream RISC-V has no private memory)."""
    fault = (_decode_riscv_fault or _load_fault())(raw)
    if fault.is_private and "riscv-private" not in vcpu.vm.proposals:
        raise DecodeError(
            "private=1: upstream RISC-V has no private memory; it is kvmcore's proposal "
            "'riscv-private', which is off for this VM"
        )
    return fault


#: :func:`kvmcore_riscv.fault.decode_riscv_fault`, bound by the first decode: listing plugins
#: does not import :mod:`kvmcore_riscv.fault` and the trap and htinst decoders it imports.
_decode_riscv_fault: Any = None


def _load_fault() -> Any:
    global _decode_riscv_fault
    from .fault import decode_riscv_fault

    _decode_riscv_fault = decode_riscv_fault
    return decode_riscv_fault


@hookimpl
def faultin_pfn(vcpu: kvmcore.VCPU, fault: RiscvFault) -> kvmcore.FaultinResult:
    """Mirrors ``gstage_page_fault()`` -> ``kvm_riscv_mmu_map()`` (with kvmcore's extensions)."""
    return (_gstage_page_fault or _load_gstage())(vcpu, fault)


#: :func:`kvmcore_riscv.gstage.gstage_page_fault`, bound by the first fault: listing plugins and
#: decoding registers do not import the fault path (its lookup costs what the import's name did).
_gstage_page_fault: Any = None


def _load_gstage() -> Any:
    global _gstage_page_fault
    from .gstage import gstage_page_fault

    _gstage_page_fault = gstage_page_fault
    return gstage_page_fault


@hookimpl(wrapper=True)
def prepare_memory_fault_exit(
    vcpu: kvmcore.VCPU, fault: RiscvFault
) -> Generator[None, kvmcore.MemoryFault, kvmcore.MemoryFault]:
    """kvmcore's syndrome extension (``docs/syndrome.md``): scause and htinst after the common
    ``kvm_prepare_memory_fault_exit()`` ran. No upstream counterpart: RISC-V never makes a
    memory-fault exit. Only when the proposal "syndrome" is on."""
    common = yield
    if vcpu.vm.exit_design.syndrome:
        syndrome = vcpu.kvm_run.syndrome
        syndrome.flags = KVMCORE_SYNDROME_VALID
        syndrome.arch = KVMCORE_SYNDROME_ARCH_RISCV
        syndrome.syndrome[0] = fault.scause
        syndrome.syndrome[1] = fault.htinst
    return common


@hookimpl
def kvm_arch_prepare_memory_fault_exit(vcpu: kvmcore.VCPU, fault: RiscvFault) -> None:
    """RISC-V's flags under the design ``arch-hook`` (kvmcore's: upstream RISC-V makes no
    memory-fault exit). PRIVATE for a private access (kvmcore's private-memory extension) and,
    with ``rwx-flags``, the access from scause: 20 (instruction guest-page fault) EXEC, 23
    (store/AMO) WRITE, 21 (load) READ."""
    flags = KVM_MEMORY_EXIT_FLAG_PRIVATE if fault.is_private else 0
    if vcpu.vm.exit_design.rwx:
        flags |= _SCAUSE_ACCESS_FLAG[fault.scause]
    vcpu.kvm_run.memory_fault.flags |= flags


#: scause of each guest-page fault -> its access's flag: 20 ``EXC_INST_GUEST_PAGE_FAULT``, 21
#: ``EXC_LOAD_GUEST_PAGE_FAULT``, 23 ``EXC_STORE_GUEST_PAGE_FAULT`` (the numbers written out, so
#: that loading the plugin does not import :mod:`kvmcore_riscv.trap`; a test holds them to its
#: constants). Its keys are also the causes a ``kvm_exit`` line is a guest fault for.
_SCAUSE_ACCESS_FLAG = {
    20: KVM_MEMORY_EXIT_FLAG_EXEC,
    21: KVM_MEMORY_EXIT_FLAG_READ,
    23: KVM_MEMORY_EXIT_FLAG_WRITE,
}


@hookimpl
def encode_fault(access: kvmcore.Access) -> dict[str, int]:
    """The trap CSRs for a logical access (``encode_guest_page_fault``), plus ``private`` and,
    for a write, ``data``."""
    from .encode import encode_guest_page_fault  # on first use: handling faults does not need it

    if access.cause not in CAUSES:
        raise ValueError(
            f"cause={access.cause!r}: RISC-V cannot express it; scause reports only the access "
            "(20 fetch, 21 load, 23 store/AMO), never a read-only, no-exec or access-flag "
            "distinction: use 'not_present'"
        )
    raw = encode_guest_page_fault(access.gpa, access.kind, size=access.size)
    if access.private:
        raw["private"] = 1
    if access.write:
        raw["data"] = access.data
    return raw


@hookimpl
def describe_syndrome(raw: Mapping[str, Any]) -> kvmcore.Syndrome:
    """Every field of a trap (``kvmcore decode riscv``)."""
    from .fault import describe  # with the decoders, on first use

    return describe(raw)


@hookimpl
def parse_trace_event(event: str, text: str) -> kvmcore.TraceEvent | None:
    """``kvm_exit`` (a guest-page fault for scause 20/21/23) and ``kvm_entry`` from
    ``arch/riscv/kvm/trace.h``; None for other events."""
    fields = (_parse_event or _load_parse_event())(event, text)
    if fields is None:
        return None
    if event == "kvm_entry":
        return TraceEvent("entry", fields)
    if fields["scause"] in _SCAUSE_ACCESS_FLAG:
        return TraceEvent("guest_fault", {**fields, "pc": fields["sepc"]}, raw=dict(fields))
    return TraceEvent("exit", fields)


_parse_event: Any = None


def _load_parse_event() -> Any:
    """Import the trace parser on first use only (listing plugins and decoding registers do
    not need it), once."""
    global _parse_event
    from .trace import parse_event

    _parse_event = parse_event
    return parse_event


@hookimpl
def parse_log_text(text: str) -> list[dict[str, Any]] | None:
    """The riscv registers in one pasted log line (:mod:`kvmcore_riscv.logtext`)."""
    from kvmcore_riscv.logtext import parse_log_text as find  # imported on first use

    return find(text)


@hookimpl
def prepare_memory_region(vm: kvmcore.VM, old: kvmcore.Memslot | None, new: kvmcore.Memslot, change: str) -> None:
    """Mirrors riscv ``kvm_arch_prepare_memory_region()``: the slot must lie below the G-stage
    GPA size (``(base_gfn + npages) >= (kvm_riscv_gstage_gpa_size >> PAGE_SHIFT)`` -> ``-EFAULT``;
    kvmcore models Sv57x4, a 59-bit GPA space)."""
    limit_gfn = (1 << 59) >> vm.page_shift
    if new.end_gfn >= limit_gfn:
        raise KvmError(
            kvmcore.abi.EFAULT, f"slot {new.id}: ends at GPA {new.end_gfn << vm.page_shift:#x}, at or beyond the 59-bit Sv57x4 G-stage"
        )


@hookimpl
def decode_fault_batch(vcpu: kvmcore.VCPU, columns: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Many faults at once, numpy columns in and out (kvmcore_riscv.batch)."""
    from . import batch  # numpy only when used

    return batch.decode_fault_batch(vcpu, columns)
