"""The arm64 arch plugin's hook implementations (entry point ``arm64`` in ``kvmcore.arch``).

Thin: each hook calls the module that does the work. ``fault`` (decode; imported by the first
decode: listing plugins needs only ``fault_type``, Arm64Fault), ``abort``
(``kvm_handle_guest_abort()`` and what it calls; imported by the first fault), ``syndrome``
(memory-fault syndrome words, ``describe_syndrome``; imported on first use), ``convert``
(``encode_fault``, trace events; imported on first use: listing plugins and decoding registers
do not need the trace parsers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import kvmcore
from kvmcore import ArchInfo, hookimpl

from .fault_type import GRANULE_SHIFTS, MODEL_KEYS, REGISTERS, Arm64Fault

if TYPE_CHECKING:
    from types import ModuleType

#: The texts of the events a guest-fault trace is made of, exactly as the kernel prints them
#: (arch/arm64/kvm/trace_arm.h; lower-case hex, ``%#x`` prints a bare ``0`` for zero, the exit's
#: symbols as __print_symbolic() names them): ``ArchInfo.trace_patterns``, the selector of
#: ``kvmcore replay``'s block fast path. Strings here, so that loading the plugin does not import
#: the trace parsers; :func:`kvmcore_arm64.trace.parse_event` stays the oracle (every text these
#: select is parsed by it).
_HEX_CANON = "(?:0x[0-9a-f]+|0)"
TRACE_PATTERNS: dict[str, str] = {
    "kvm_guest_fault": f"ipa {_HEX_CANON}, hsr {_HEX_CANON}, hxfar {_HEX_CANON}, pc {_HEX_CANON}",
    "kvm_exit": r"[A-Z_]+: HSR_EC: 0x[0-9a-f]{4} \([A-Z0-9_]+\), PC: 0x[0-9a-f]{16}",
    "kvm_entry": "PC: 0x[0-9a-f]{16}",
}

ARCH_INFO = ArchInfo(
    name="arm64",
    fault_type=Arm64Fault,
    page_shift=12,
    phys_bits=52,
    registers=REGISTERS,
    extra_keys=MODEL_KEYS,
    description="arm64 stage-2 aborts: ESR_EL2/HPFAR_EL2/FAR_EL2, kvm_handle_guest_abort(), user_mem_abort()",
    designs=("v3-helper", "arch-hook", "arm64-esr", "rwx-flags", "annotate-efault"),
    trace_patterns=TRACE_PATTERNS,
    settings={
        "granule": tuple(GRANULE_SHIFTS),
        "ipa_bits": (40, 32, 36, 42, 44, 48, 52),
        "sea": ("unclaimed", "claimed"),
        # KVM Userfault on guest_memfd slots: "hooked" (the follow-up v3's cover letter calls
        # for) or "v3" (the posted series: gmem_abort() ignores the bitmap).
        "userfault_gmem": ("hooked", "v3"),
    },
)


@hookimpl
def arch_info() -> ArchInfo:
    """arm64: 4K pages by default, 52-bit IPAs at most, settings granule/ipa_bits/sea."""
    return ARCH_INFO


@hookimpl(wrapper=True)
def configure_vm(vm: kvmcore.VM, settings: Mapping[str, Any]) -> Any:
    """After the core validated the settings: PAGE_SHIFT from the stage-2 granule (12/14/16)."""
    validated = yield
    vm.page_shift = GRANULE_SHIFTS[validated["granule"]]
    return validated


@hookimpl
def decode_fault(vcpu: kvmcore.VCPU, raw: Mapping[str, int]) -> Arm64Fault:
    """ESR_EL2/HPFAR_EL2/FAR_EL2 -> :class:`~kvmcore_arm64.fault.Arm64Fault`."""
    return (_decode_fault or _load_fault())(vcpu, raw)


#: :func:`kvmcore_arm64.fault.decode_fault` and :mod:`kvmcore_arm64.syndrome` (with the ESR
#: decoder they import), bound by the first decode: listing plugins does not import them.
_decode_fault: Any = None
_syndrome: ModuleType | None = None


def _load_fault() -> Any:
    global _decode_fault
    from .fault import decode_fault

    _decode_fault = decode_fault
    return decode_fault


def _load_syndrome() -> ModuleType:
    global _syndrome
    from . import syndrome

    _syndrome = syndrome
    return syndrome


@hookimpl
def faultin_pfn(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> kvmcore.FaultinResult:
    """Mirrors ``kvm_handle_guest_abort()`` (see :mod:`kvmcore_arm64.abort`)."""
    return (_handle_guest_abort or _load_abort())(vcpu, fault)


#: :func:`kvmcore_arm64.abort.kvm_handle_guest_abort`, bound by the first fault: listing
#: plugins and decoding registers do not import the fault path (its lookup costs what
#: ``abort.kvm_handle_guest_abort`` did).
_handle_guest_abort: Any = None


def _load_abort() -> Any:
    global _handle_guest_abort
    from .abort import kvm_handle_guest_abort

    _handle_guest_abort = kvm_handle_guest_abort
    return kvm_handle_guest_abort


@hookimpl(wrapper=True)
def prepare_memory_fault_exit(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> Any:
    """Wraps the common ``kvm_prepare_memory_fault_exit()``: adds the arm64 syndrome words
    (design ``syndrome``) or the sanitised ESR at offset 56 (design ``arm64-esr``)."""
    common = yield
    design = vcpu.vm.exit_design
    if design.syndrome:
        (_syndrome or _load_syndrome()).fill_memory_fault_syndrome(vcpu, fault)
    elif design.arm64_esr:
        (_syndrome or _load_syndrome()).fill_memory_fault_esr(vcpu, fault)
    return common


@hookimpl
def kvm_arch_prepare_memory_fault_exit(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> None:
    """arm64's flags under the design ``arch-hook`` (see :func:`kvmcore_arm64.syndrome.memory_fault_flags`)."""
    vcpu.kvm_run.memory_fault.flags |= (_syndrome or _load_syndrome()).memory_fault_flags(vcpu, fault)


@hookimpl
def encode_fault(vcpu: kvmcore.VCPU, access: kvmcore.Access) -> dict[str, int]:
    """``kvmcore.Access`` -> the ESR/FAR/HPFAR an arm64 CPU reports for it."""
    from . import convert  # imported on first use

    return convert.encode_access(access)


@hookimpl
def describe_syndrome(vm: kvmcore.VM, raw: Mapping[str, int]) -> kvmcore.Syndrome:
    """Every ESR_EL2 field with its meaning, plus IPA/gfn when HPFAR is given."""
    return (_syndrome or _load_syndrome()).describe(vm, raw)


@hookimpl
def parse_trace_event(event: str, text: str) -> kvmcore.TraceEvent | None:
    """``kvm_guest_fault``, ``kvm_mmio_nisv``, ``kvm_access_fault``, ``kvm_exit``... lines."""
    return (_trace_event or _load_trace_event())(event, text)


_trace_event: Any = None


def _load_trace_event() -> Any:
    """Import ``convert`` (and the trace parsers) on first use only, once."""
    global _trace_event
    from .convert import trace_event

    _trace_event = trace_event
    return trace_event


@hookimpl
def parse_log_text(text: str) -> list[dict[str, Any]] | None:
    """The arm64 registers in one pasted log line (:mod:`kvmcore_arm64.logtext`)."""
    from kvmcore_arm64.logtext import parse_log_text as find  # imported on first use

    return find(text)


@hookimpl
def prepare_memory_region(vm: kvmcore.VM, old: kvmcore.Memslot | None, new: kvmcore.Memslot, change: str) -> None:
    """Mirrors arm64 ``kvm_arch_prepare_memory_region()``: no slot beyond the VM's IPA space.

    ``(new->base_gfn + new->npages) > (kvm_phys_size(mmu) >> PAGE_SHIFT)`` -> ``-EFAULT``, for
    create, move and flags-only changes.
    """
    limit = 1 << vm.settings["ipa_bits"]
    if new.end_gfn << vm.page_shift > limit:
        raise kvmcore.KvmError(
            kvmcore.abi.EFAULT,
            f"slot {new.id}: ends at IPA {new.end_gfn << vm.page_shift:#x}, beyond the VM's {vm.settings['ipa_bits']}-bit IPA space",
        )
    # 6.18+ (7.3 arch/arm64/kvm/mmu.c): "Only support guest_memfd backed memslots with mappable
    # memory": kvm_slot_has_gmem(new) && !kvm_memslot_is_gmem_only(new) -> -EINVAL. kvmcore's
    # arm64-private proposal adds private (unmappable) guest_memfd memory, so it lifts the rule.
    if new.gmem is not None and not new.gmem.flags & kvmcore.abi.GUEST_MEMFD_FLAG_MMAP and not vm.has_proposal("arm64-private"):
        raise kvmcore.KvmError(
            kvmcore.abi.EINVAL,
            f"slot {new.id}: arm64 guest_memfd slots need a guest_memfd created with GUEST_MEMFD_FLAG_MMAP "
            "(no CoCo VM on arm64 has private-only memory; the arm64-private proposal is off)",
        )


@hookimpl
def decode_fault_batch(vcpu: kvmcore.VCPU, columns: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Many faults at once, numpy columns in and out (kvmcore_arm64.batch)."""
    from . import batch  # numpy only when used

    return batch.decode_fault_batch(vcpu, columns)
