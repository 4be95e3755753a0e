"""The KVM userspace ABI that kvmcore models: constants and a byte-exact ``struct kvm_run``
(defined in :mod:`kvmcore._kvm_run`, imported on first use of its names).

Names and values are those of ``include/uapi/linux/kvm.h`` (checked against the compiled
offsets in the project reference, section 2). Values that exist only in the unmerged
KVM Userfault v3 series are marked so; values that are kvmcore's own proposal carry the
``KVMCORE_`` prefix and are not upstream uAPI.
"""

from __future__ import annotations

import errno
import importlib
import struct
from typing import TYPE_CHECKING, Any

# --- Exit reasons (struct kvm_run.exit_reason) -----------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_HYPERV = 27
KVM_EXIT_ARM_NISV = 28
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_DIRTY_RING_FULL = 31
KVM_EXIT_AP_RESET_HOLD = 32
KVM_EXIT_X86_BUS_LOCK = 33
KVM_EXIT_XEN = 34
KVM_EXIT_RISCV_SBI = 35
KVM_EXIT_RISCV_CSR = 36
KVM_EXIT_NOTIFY = 37
KVM_EXIT_LOONGARCH_IOCSR = 38
KVM_EXIT_MEMORY_FAULT = 39
KVM_EXIT_TDX = 40
#: arm64, 6.19+: a synchronous external abort handed to userspace (KVM_CAP_ARM_SEA_TO_USER).
KVM_EXIT_ARM_SEA = 41
#: arm64, 7.0+: an LD64B/ST64B* outside memslots, for userspace to emulate (``arm_nisv`` layout).
KVM_EXIT_ARM_LDST64B = 42

EXIT_REASON_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("KVM_EXIT_") and isinstance(value, int)
}

# --- KVM_INTERNAL_ERROR_* suberrors ----------------------------------------------------------
KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4

# --- Memory-fault exit flags (kvm_run.memory_fault.flags) ------------------------------------
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3
#: KVM Userfault v3 (unmerged): the vCPU touched a page whose userfault bit is set.
KVM_MEMORY_EXIT_FLAG_USERFAULT = 1 << 4
#: Bits 0-2 are reserved for R/W/X; the common helper leaves them 0 ("not (yet) defined").
KVM_MEMORY_EXIT_FLAG_RWX_MASK = 0x7
#: The design ``rwx-flags`` (not upstream): the access was a read, a write, an instruction fetch.
#: Bit values from Sean Christopherson's review of KVM_CAP_MEMORY_FAULT_INFO (14 Jun 2023), the
#: KVM_MEMORY_FAULT_FLAG_READ/WRITE/EXEC of Anish Moorthy's v5 (8 Sep 2023).
KVM_MEMORY_EXIT_FLAG_READ = 1 << 0
KVM_MEMORY_EXIT_FLAG_WRITE = 1 << 1
KVM_MEMORY_EXIT_FLAG_EXEC = 1 << 2

# --- Memslot flags (kvm_userspace_memory_region2.flags) --------------------------------------
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
#: KVM Userfault v3 (unmerged).
KVM_MEM_USERFAULT = 1 << 3
KVM_MEM_FLAGS_VALID = (
    KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD | KVM_MEM_USERFAULT
)
#: The v1 ioctl (KVM_SET_USER_MEMORY_REGION) accepts only these.
KVM_MEM_FLAGS_V1 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY

KVM_USER_MEM_SLOTS = 32764
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1

# --- Memory attributes -----------------------------------------------------------------------
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3

# --- guest_memfd flags -----------------------------------------------------------------------
GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1

# --- Capabilities ----------------------------------------------------------------------------
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_READONLY_MEM = 81
KVM_CAP_MULTI_ADDRESS_SPACE = 118
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
KVM_CAP_ARM_NISV_TO_USER = 177
KVM_CAP_HALT_POLL = 182
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_FAULT_INFO = 232
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
#: 6.18+ (6.18-rc: KVM_CAP_GUEST_MEMFD_MMAP, renamed before the release).
KVM_CAP_GUEST_MEMFD_FLAGS = 244
#: KVM Userfault v3's number; mainline later gave 243 to KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED.
KVM_CAP_USERFAULT = 243
#: arm64, 6.19+: unclaimed SEAs exit with KVM_EXIT_ARM_SEA (7.3 ``include/uapi/linux/kvm.h``).
KVM_CAP_ARM_SEA_TO_USER = 245

# --- ioctl numbers ---------------------------------------------------------------------------
KVM_RUN = 0xAE80
KVM_SET_USER_MEMORY_REGION2 = 0x40A0AE49
KVM_SET_MEMORY_ATTRIBUTES = 0x4020AED2
KVM_CREATE_GUEST_MEMFD = 0xC040AED4

# --- errno values KVM_RUN returns (asm-generic) ----------------------------------------------
EFAULT = errno.EFAULT  # 14
EHWPOISON = getattr(errno, "EHWPOISON", 133)  # 133 on Linux
EINTR = errno.EINTR
ENOSYS = errno.ENOSYS
EOPNOTSUPP = errno.EOPNOTSUPP
ENOEXEC = errno.ENOEXEC
EIO = errno.EIO
EAGAIN = errno.EAGAIN
EINVAL = errno.EINVAL
EEXIST = errno.EEXIST
EPERM = errno.EPERM
ENOENT = errno.ENOENT
E2BIG = errno.E2BIG
EBADF = errno.EBADF
ENOMEM = errno.ENOMEM

# --- kvmcore's proposal: an arch syndrome right after memory_fault (NOT upstream uAPI) -------
#: ``kvmcore_fault_syndrome.flags``: the syndrome words are valid.
KVMCORE_SYNDROME_VALID = 1 << 0
#: ``kvmcore_fault_syndrome.arch`` values: which layout the syndrome words follow.
KVMCORE_SYNDROME_ARCH_NONE = 0
KVMCORE_SYNDROME_ARCH_ARM64 = 1
KVMCORE_SYNDROME_ARCH_X86_VMX = 2
KVMCORE_SYNDROME_ARCH_X86_SVM = 3
KVMCORE_SYNDROME_ARCH_RISCV = 4
#: Values from here up are for out-of-tree arches (kvmcore allocates none of them): a third-party
#: plugin picks one, documents its words, and says so in its ArchInfo description.
KVMCORE_SYNDROME_ARCH_OUT_OF_TREE = 0x100
KVMCORE_SYNDROME_WORDS = 4


#: ``arm_sea.flags``: ``arm_sea.gpa`` is valid.
KVM_EXIT_ARM_SEA_FLAG_GPA_VALID = 1 << 0


#: ``offsetof(struct kvm_run, exit)``, where the exit union starts (the reference's compiled table,
#: section 2.1; :mod:`kvmcore._kvm_run` asserts its ctypes layout agrees): the fault paths write
#: whole exits there without building the ctypes structure's views.
KVM_RUN_EXIT_OFFSET = 32
#: ``mmio`` (phys_addr, data as a little-endian u64, len, is_write) written or read in one call at
#: ``KVM_RUN_EXIT_OFFSET``: the same bytes as setting the fields one by one (each ctypes
#: access of the union builds a view object; the fault paths fill an exit per fault).
MMIO_STRUCT = struct.Struct("<QQIB")
#: ``memory_fault`` (flags, gpa, size) at ``KVM_RUN_EXIT_OFFSET``.
MEMORY_FAULT_STRUCT = struct.Struct("<QQQ")
#: ``memory_fault`` followed by kvmcore's syndrome extension (flags, arch, the words), the union
#: member ``kvmcore``, at ``KVM_RUN_EXIT_OFFSET``.
MEMORY_FAULT_SYNDROME_STRUCT = struct.Struct("<QQQII" + "Q" * KVMCORE_SYNDROME_WORDS)

# --- struct kvm_run: kvmcore._kvm_run, imported on first use -------------------------------------
if TYPE_CHECKING:  # re-exported, see __getattr__
    from kvmcore._kvm_run import KVM_RUN_OFFSETS as KVM_RUN_OFFSETS
    from kvmcore._kvm_run import KVM_RUN_SIZE as KVM_RUN_SIZE
    from kvmcore._kvm_run import kvm_run as kvm_run
    from kvmcore._kvm_run import kvm_run_arm_nisv as kvm_run_arm_nisv
    from kvmcore._kvm_run import kvm_run_arm_sea as kvm_run_arm_sea
    from kvmcore._kvm_run import kvm_run_exit as kvm_run_exit
    from kvmcore._kvm_run import kvm_run_internal as kvm_run_internal
    from kvmcore._kvm_run import kvm_run_memory_fault as kvm_run_memory_fault
    from kvmcore._kvm_run import kvm_run_memory_fault_esr as kvm_run_memory_fault_esr
    from kvmcore._kvm_run import kvm_run_memory_fault_ext as kvm_run_memory_fault_ext
    from kvmcore._kvm_run import kvm_run_mmio as kvm_run_mmio
    from kvmcore._kvm_run import kvmcore_fault_syndrome as kvmcore_fault_syndrome

#: ``struct kvm_run`` and its layout (:mod:`kvmcore._kvm_run`): imported on first use of one of
#: these names (ctypes and the structures cost ``kvmcore plugins``, which makes no vCPU, about
#: 3% of its start-up), then ordinary attributes of this module.
_KVM_RUN_NAMES = (
    "kvm_run_mmio",
    "kvm_run_internal",
    "kvm_run_arm_nisv",
    "kvm_run_arm_sea",
    "kvm_run_memory_fault",
    "kvmcore_fault_syndrome",
    "kvm_run_memory_fault_ext",
    "kvm_run_memory_fault_esr",
    "kvm_run_exit",
    "kvm_run",
    "KVM_RUN_SIZE",
    "KVM_RUN_OFFSETS",
)


def __getattr__(name: str) -> Any:
    """PEP 562: a name of :data:`_KVM_RUN_NAMES`, from :mod:`kvmcore._kvm_run`."""
    if name not in _KVM_RUN_NAMES:
        raise AttributeError(f"module 'kvmcore.abi' has no attribute {name!r}")
    module = importlib.import_module("kvmcore._kvm_run")
    for each in _KVM_RUN_NAMES:
        globals()[each] = getattr(module, each)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *_KVM_RUN_NAMES})


#: The names above that are upstream uAPI: each equals the macro of the same name in
#: ``include/uapi/linux/kvm.h`` (checked against the 7.3 header by tests/test_abi.py, which
#: compiles them). Add an ioctl or constant here when it is added above.
UAPI_NAMES: tuple[str, ...] = (
    "KVM_EXIT_UNKNOWN", "KVM_EXIT_EXCEPTION", "KVM_EXIT_IO", "KVM_EXIT_HYPERCALL", "KVM_EXIT_DEBUG",
    "KVM_EXIT_HLT", "KVM_EXIT_MMIO", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_INTR",
    "KVM_EXIT_NMI", "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_SYSTEM_EVENT", "KVM_EXIT_HYPERV",
    "KVM_EXIT_ARM_NISV", "KVM_EXIT_X86_RDMSR", "KVM_EXIT_X86_WRMSR", "KVM_EXIT_DIRTY_RING_FULL",
    "KVM_EXIT_AP_RESET_HOLD", "KVM_EXIT_X86_BUS_LOCK", "KVM_EXIT_XEN", "KVM_EXIT_RISCV_SBI",
    "KVM_EXIT_RISCV_CSR", "KVM_EXIT_NOTIFY", "KVM_EXIT_LOONGARCH_IOCSR", "KVM_EXIT_MEMORY_FAULT",
    "KVM_EXIT_TDX", "KVM_EXIT_ARM_SEA", "KVM_EXIT_ARM_LDST64B", "KVM_EXIT_ARM_SEA_FLAG_GPA_VALID",
    "KVM_INTERNAL_ERROR_EMULATION", "KVM_INTERNAL_ERROR_SIMUL_EX", "KVM_INTERNAL_ERROR_DELIVERY_EV",
    "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON",
    "KVM_MEMORY_EXIT_FLAG_PRIVATE", "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY", "KVM_MEM_GUEST_MEMFD",
    "KVM_MEMORY_ATTRIBUTE_PRIVATE", "GUEST_MEMFD_FLAG_MMAP", "GUEST_MEMFD_FLAG_INIT_SHARED",
    "KVM_CAP_NR_MEMSLOTS", "KVM_CAP_READONLY_MEM", "KVM_CAP_MULTI_ADDRESS_SPACE",
    "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", "KVM_CAP_ARM_NISV_TO_USER", "KVM_CAP_HALT_POLL",
    "KVM_CAP_USER_MEMORY2", "KVM_CAP_MEMORY_FAULT_INFO", "KVM_CAP_MEMORY_ATTRIBUTES",
    "KVM_CAP_GUEST_MEMFD", "KVM_CAP_VM_TYPES", "KVM_CAP_GUEST_MEMFD_FLAGS", "KVM_CAP_ARM_SEA_TO_USER",
    "KVM_RUN", "KVM_SET_USER_MEMORY_REGION2", "KVM_SET_MEMORY_ATTRIBUTES", "KVM_CREATE_GUEST_MEMFD",
)  # fmt: skip
#: kvmcore's own names for kernel-internal values or derived sets: no uAPI macro to compare.
DERIVED_NAMES: tuple[str, ...] = (
    "KVM_MEM_FLAGS_VALID", "KVM_MEM_FLAGS_V1", "KVM_MEM_MAX_NR_PAGES", "KVM_USER_MEM_SLOTS", "KVM_RUN_SIZE",
    "KVM_MEMORY_EXIT_FLAG_RWX_MASK", "KVM_RUN_EXIT_OFFSET",
)  # fmt: skip
#: Names of proposals (KVM Userfault v3): no upstream header defines them.
PROPOSAL_NAMES: tuple[str, ...] = (
    "KVM_MEM_USERFAULT", "KVM_MEMORY_EXIT_FLAG_USERFAULT", "KVM_CAP_USERFAULT",
    "KVM_MEMORY_EXIT_FLAG_READ", "KVM_MEMORY_EXIT_FLAG_WRITE", "KVM_MEMORY_EXIT_FLAG_EXEC",
)  # fmt: skip


def exit_reason_name(reason: int | None) -> str:
    """``KVM_EXIT_MEMORY_FAULT`` for 39; ``None`` (the guest resumes) gives ``"none"``."""
    if reason is None:
        return "none"
    return EXIT_REASON_NAMES.get(reason, f"KVM_EXIT_{reason}")
