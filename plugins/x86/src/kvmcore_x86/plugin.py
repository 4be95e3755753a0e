"""kvmcore's x86 arch plugin (entry point ``x86`` in ``kvmcore.arch``): hook implementations only.

The work is in ``decode`` (exit registers -> ``X86Fault``, and ``encode_fault``), ``mmu``
(``kvm_mmu_page_fault()`` and the TDP faultin path) and ``describe`` (``describe_syndrome``,
trace lines). See ``docs/arch/x86.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import kvmcore
from kvmcore_x86.fault import MODEL_KEYS, REGISTERS, X86Fault

if TYPE_CHECKING:
    from types import ModuleType

#: :mod:`kvmcore_x86.decode` (and the VMX/SVM decoders it imports), bound by the first VM's
#: ``configure_vm``: listing plugins does not import the decoder.
_decoder: ModuleType | None = None


def _load_decoder() -> ModuleType:
    global _decoder
    from kvmcore_x86 import decode

    _decoder = decode
    return decode


SETTINGS: dict[str, tuple[Any, ...]] = {
    # Intel VMX/EPT or AMD SVM/NPT; vm_type "snp" implies svm and "tdx" vmx.
    "vendor": ("vmx", "svm"),
    # KVM_X86_DEFAULT_VM, KVM_X86_SW_PROTECTED_VM, KVM_X86_SNP_VM, KVM_X86_TDX_VM.
    "vm_type": ("default", "sw_protected", "snp", "tdx"),
    # Mode-based execute control for EPT (kernel 7.3 only).
    "mbec": (False, True),
    # The NX-hugepage mitigation (kvm.nx_huge_pages): huge pages are mapped non-executable.
    "nx_huge_pages": (False, True),
    # TDX guest physical address width: the shared bit is bit 51 (52) or bit 47 (48).
    "tdx_gpaw": (52, 48),
}


#: ``kvm_page_fault``'s text as 6.15+ kernels print it (``"vcpu %u rip 0x%lx address 0x%016llx
#: error_code 0x%llx"``, arch/x86/kvm/trace.h): ``ArchInfo.trace_patterns``, the selector of
#: ``kvmcore replay``'s block fast path. Kept here, not in ``trace``, so that loading the plugin
#: does not import the trace parsers; ``kvmcore_x86.trace.parse_event`` stays the oracle.
#: ``kvm_exit`` is not here: an EPT violation's exit is paired with its fault event line by line.
TRACE_PATTERNS: dict[str, str] = {
    "kvm_page_fault": "vcpu [0-9]+ rip 0x[0-9a-f]+ address 0x[0-9a-f]+ error_code 0x[0-9a-f]+",
}


@kvmcore.hookimpl
def arch_info() -> kvmcore.ArchInfo:
    return kvmcore.ArchInfo(
        name="x86",
        fault_type=X86Fault,
        page_shift=12,
        phys_bits=52,
        registers=REGISTERS,
        extra_keys=MODEL_KEYS,
        description="x86: VMX EPT violations and SVM nested page faults, the TDP MMU fault path, SNP/TDX private memory",
        settings=SETTINGS,
        causes=("not_present", "read_only", "no_exec", "no_slot"),
        designs=("v3-helper", "arch-hook", "rwx-flags", "annotate-efault"),
        trace_patterns=TRACE_PATTERNS,
    )


@kvmcore.hookimpl(wrapper=True)
def configure_vm(vm: kvmcore.VM, settings: Mapping[str, Any]) -> Any:
    """The core validates each setting; this adds the cross-checks (``decode.check_settings``)."""
    validated = yield
    return (_decoder or _load_decoder()).check_settings(vm, settings, validated)


@kvmcore.hookimpl
def decode_fault(vcpu: kvmcore.VCPU, raw: Mapping[str, Any]) -> X86Fault:
    return (_decoder or _load_decoder()).decode_fault(vcpu, raw)


@kvmcore.hookimpl
def faultin_pfn(vcpu: kvmcore.VCPU, fault: X86Fault) -> kvmcore.FaultinResult:
    return (_mmu or _load_mmu()).kvm_mmu_page_fault(vcpu, fault)


@kvmcore.hookimpl(wrapper=True)
def prepare_memory_fault_exit(vcpu: kvmcore.VCPU, fault: X86Fault) -> Any:
    """Fill kvmcore's syndrome extension after the common helper (never flags/gpa/size), when
    the proposal "syndrome" is on (upstream leaves those bytes zero)."""
    common = yield
    if vcpu.vm.exit_design.syndrome:
        (_mmu or _load_mmu()).fill_syndrome(vcpu, fault)
    return common


@kvmcore.hookimpl
def kvm_arch_prepare_memory_fault_exit(vcpu: kvmcore.VCPU, fault: X86Fault) -> None:
    """x86's flags under the design ``arch-hook`` (:func:`kvmcore_x86.mmu.memory_fault_flags`)."""
    vcpu.kvm_run.memory_fault.flags |= (_mmu or _load_mmu()).memory_fault_flags(vcpu, fault)


#: :mod:`kvmcore_x86.mmu`, imported by the first fault: listing plugins and decoding registers do
#: not import the fault path (``_mmu.name`` costs what ``mmu.name`` did).
_mmu: Any = None


def _load_mmu() -> Any:
    global _mmu
    from kvmcore_x86 import mmu

    _mmu = mmu
    return mmu


@kvmcore.hookimpl
def encode_fault(vcpu: kvmcore.VCPU, access: kvmcore.Access) -> dict[str, Any]:
    return (_decoder or _load_decoder()).encode_fault(vcpu.vm, access)


@kvmcore.hookimpl
def describe_syndrome(vm: kvmcore.VM, raw: Mapping[str, Any]) -> kvmcore.Syndrome:
    from kvmcore_x86 import describe  # imported on first use: not needed to handle faults

    return describe.describe_syndrome(vm, raw)


@kvmcore.hookimpl
def parse_trace_event(event: str, text: str) -> kvmcore.TraceEvent | None:
    return (_trace_event or _load_trace_event())(event, text)


_trace_event: Any = None


def _load_trace_event() -> Any:
    """Import ``describe`` on first use only (it is not needed to decode faults), once."""
    global _trace_event
    from kvmcore_x86.describe import trace_event

    _trace_event = trace_event
    return trace_event


@kvmcore.hookimpl
def parse_log_text(text: str) -> list[dict[str, Any]] | None:
    """The x86 registers in one pasted log line (:mod:`kvmcore_x86.logtext`)."""
    from kvmcore_x86.logtext import parse_log_text as find  # imported on first use

    return find(text)


@kvmcore.hookimpl
def prepare_memory_region(vm: kvmcore.VM, old: kvmcore.Memslot | None, new: kvmcore.Memslot, change: str) -> None:
    """Mirrors x86 ``kvm_arch_prepare_memory_region()``: on create and move, the last gfn must
    not exceed ``kvm_mmu_max_gfn()`` (a 52-bit MAXPHYADDR here) -> ``-EINVAL``; on a TDX VM it
    must not have the shared bit (7.3 ``kvm_is_gfn_alias()``; taken to hold for 6.18's TDX too)."""
    if change in ("create", "move") and new.end_gfn - 1 > (1 << (52 - vm.page_shift)) - 1:
        raise kvmcore.KvmError(
            kvmcore.abi.EINVAL, f"slot {new.id}: last gfn {new.end_gfn - 1:#x} is beyond kvm_mmu_max_gfn() (52-bit MAXPHYADDR)"
        )
    # 7.3 (kvm_is_gfn_alias(), arch/x86/kvm/mmu.h): a TDX slot must not reach the shared-bit alias
    if change in ("create", "move") and (new.end_gfn - 1) & (_decoder or _load_decoder()).kvm_gfn_direct_bits(vm):
        raise kvmcore.KvmError(
            kvmcore.abi.EINVAL, f"slot {new.id}: last gfn {new.end_gfn - 1:#x} has the TDX shared bit (kvm_is_gfn_alias())"
        )


@kvmcore.hookimpl
def decode_fault_batch(vcpu: kvmcore.VCPU, columns: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Many faults at once, numpy columns in and out (kvmcore_x86.batch)."""
    from . import batch  # numpy only when used

    return batch.decode_fault_batch(vcpu, columns)
