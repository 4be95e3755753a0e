"""kvmcore: an executable model of KVM's architecture-neutral guest page-fault path.

Each architecture is a plugin (entry-point group ``kvmcore.arch``) that defines its own
fault type, decodes its hardware syndrome and orders its kernel's faultin checks; the core
checks the common fault contract, models memslots, memory attributes, guest_memfd, host
memory, userfault bitmaps and ``struct kvm_run``, and fills ``KVM_EXIT_MEMORY_FAULT``.

Example (see README.md)::

    import kvmcore
    vm = kvmcore.VM("arm64")
    vm.set_user_memory_region(0, 0x40000000, 0x200000)
    vcpu = vm.create_vcpu()
    vcpu.handle_fault({"esr": 0x93C08007, "far": 0x40001008, "hpfar": 0x400010}).outcome  # 'mapped'

Only the names exported here are public; modules starting with ``_`` are not.

The model's VM and what only a VM uses (``VM``, ``VCPU``, ``GuestMemfd``, ``HostMemory``,
``Vma``, ``Stage2``, ``Stage2Entry``, the ``PROT_*`` and ``S2_*`` flags), the tool hooks' types
(``Access``, ``Syndrome``), ``decode_by_syndrome`` and ``PluginStatus`` are imported on first
use (:func:`__getattr__`): ``kvmcore plugins``, ``kvmcore decode`` and a plugin's own import
each need only some of them.
"""

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

from kvmcore import abi, hookspecs
from kvmcore._dataclass_methods import fields_eq, fields_hash, fields_repr
from kvmcore._types import (
    ACCESS_KINDS,
    KVM_PFN_ERR_FAULT,
    KVM_PFN_ERR_HWPOISON,
    KVM_PFN_ERR_RO_FAULT,
    KVM_PFN_ERR_SIGPENDING,
    KVM_PFN_NOSLOT,
    STAGE2_CAUSES,
    ArchInfo,
    Exit,
    FaultinResult,
    FaultResult,
    Mapped,
    MemoryFault,
    Memslot,
    Retry,
    Signal,
    TraceEvent,
    is_error_noslot_pfn,
    is_error_pfn,
)
from kvmcore.errors import (
    DecodeError,
    FaultContractError,
    KvmcoreError,
    KvmError,
    PluginError,
    PluginLoadError,
    ScenarioError,
)
from kvmcore.kvm import default_hooks as _default_hooks
from kvmcore.kvm.faultin import (
    kvm_do_userfault,
    kvm_faultin_pfn,
    kvm_gmem_get_pfn,
    kvm_handle_signal_exit,
    kvm_mapping_size,
    kvm_prepare_memory_fault_exit,
    kvm_prepare_mmio_exit,
    send_sig_mceerr,
)
from kvmcore.kvm.proposals import PROPOSALS, Proposal
from kvmcore.kvm.userfault import set_bits as set_userfault_bits
from kvmcore.kvm.version import KERNEL_VERSIONS, KernelVersion
from kvmcore.plugin import loader as _loader
from kvmcore.plugin.contract import COMMON_FIELDS, check_fault, check_fault_type
from kvmcore.plugin.loader import (
    ARCH_GROUP,
    EXTENSION_GROUP,
    HOOK_NAMES,
    Arch,
    installed_arches,
    list_plugins,
    load_arch,
    reset_plugins,
)
from kvmcore.plugin.raw import check_raw_keys, raw_private, shown_text
from kvmcore.plugin.tracing import disable_hook_tracing, enable_hook_tracing

if TYPE_CHECKING:  # imported on first use, see __getattr__
    from kvmcore._access import Access
    from kvmcore._syndrome import Syndrome
    from kvmcore.kvm.guest_memfd import GuestMemfd
    from kvmcore.kvm.host_mm import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, HostMemory, Vma
    from kvmcore.kvm.kvm_main import VCPU, VM
    from kvmcore.kvm.stage2 import S2_EXEC, S2_WRITABLE, S2_YOUNG, Stage2, Stage2Entry
    from kvmcore.plugin.batch import decode_by_syndrome
    from kvmcore.plugin.status import PluginStatus

#: Public names imported on first use: name -> the module that defines it.
_LAZY = {
    "Access": "kvmcore._access",
    "Syndrome": "kvmcore._syndrome",
    "VM": "kvmcore.kvm.kvm_main",
    "VCPU": "kvmcore.kvm.kvm_main",
    "GuestMemfd": "kvmcore.kvm.guest_memfd",
    "HostMemory": "kvmcore.kvm.host_mm",
    "Vma": "kvmcore.kvm.host_mm",
    "PROT_EXEC": "kvmcore.kvm.host_mm",
    "PROT_NONE": "kvmcore.kvm.host_mm",
    "PROT_READ": "kvmcore.kvm.host_mm",
    "PROT_WRITE": "kvmcore.kvm.host_mm",
    "Stage2": "kvmcore.kvm.stage2",
    "Stage2Entry": "kvmcore.kvm.stage2",
    "S2_EXEC": "kvmcore.kvm.stage2",
    "S2_WRITABLE": "kvmcore.kvm.stage2",
    "S2_YOUNG": "kvmcore.kvm.stage2",
    "decode_by_syndrome": "kvmcore.plugin.batch",
    "PluginStatus": "kvmcore.plugin.status",
}


def __getattr__(name: str) -> Any:
    """PEP 562: a name of :data:`_LAZY`, imported from its module on first use (then an
    ordinary attribute of the package)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kvmcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

# The composition root: the plugin machinery registers the model's default hook implementations
# in every arch it builds, without importing the model itself.
_loader.CORE_PLUGINS.append(("kvmcore.defaults", _default_hooks))

#: The marker arch plugins put on their hook implementations.
hookimpl = pluggy.HookimplMarker("kvmcore")

__all__ = [
    "ACCESS_KINDS",
    "STAGE2_CAUSES",
    "ARCH_GROUP",
    "COMMON_FIELDS",
    "EXTENSION_GROUP",
    "HOOK_NAMES",
    "KERNEL_VERSIONS",
    "KVM_PFN_ERR_FAULT",
    "KVM_PFN_ERR_HWPOISON",
    "KVM_PFN_ERR_RO_FAULT",
    "KVM_PFN_ERR_SIGPENDING",
    "KVM_PFN_NOSLOT",
    "PROPOSALS",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "S2_EXEC",
    "S2_WRITABLE",
    "S2_YOUNG",
    "VCPU",
    "VM",
    "Access",
    "Arch",
    "ArchInfo",
    "DecodeError",
    "Exit",
    "FaultContractError",
    "FaultResult",
    "FaultinResult",
    "GuestMemfd",
    "HostMemory",
    "KernelVersion",
    "KvmError",
    "KvmcoreError",
    "Mapped",
    "MemoryFault",
    "Memslot",
    "PluginError",
    "PluginLoadError",
    "PluginStatus",
    "Proposal",
    "Retry",
    "ScenarioError",
    "Signal",
    "Stage2",
    "Stage2Entry",
    "Syndrome",
    "TraceEvent",
    "Vma",
    "abi",
    "check_fault",
    "check_fault_type",
    "check_raw_keys",
    "decode_by_syndrome",
    "disable_hook_tracing",
    "enable_hook_tracing",
    "fields_eq",
    "fields_hash",
    "fields_repr",
    "hookimpl",
    "hookspecs",
    "installed_arches",
    "is_error_noslot_pfn",
    "is_error_pfn",
    "kvm_do_userfault",
    "kvm_faultin_pfn",
    "kvm_gmem_get_pfn",
    "kvm_handle_signal_exit",
    "kvm_mapping_size",
    "kvm_prepare_memory_fault_exit",
    "kvm_prepare_mmio_exit",
    "list_plugins",
    "load_arch",
    "raw_private",
    "shown_text",
    "reset_plugins",
    "send_sig_mceerr",
    "set_userfault_bits",
]
