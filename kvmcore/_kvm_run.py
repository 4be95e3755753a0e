"""``struct kvm_run``, byte-exact (ctypes), and its offsets: the part of :mod:`kvmcore.abi` that
a vCPU needs. :mod:`kvmcore.abi` re-exports every name here on first use (PEP 562), so that
listing plugins, which makes no vCPU, does not import ctypes or build these structures.
"""

from __future__ import annotations

import ctypes

from kvmcore.abi import (
    KVM_EXIT_UNKNOWN,
    KVM_RUN_EXIT_OFFSET,
    KVMCORE_SYNDROME_WORDS,
    MEMORY_FAULT_SYNDROME_STRUCT,
    MMIO_STRUCT,
)


class kvm_run_mmio(ctypes.Structure):
    """``struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; } mmio``."""

    _fields_ = [
        ("phys_addr", ctypes.c_uint64),
        ("data", ctypes.c_uint8 * 8),
        ("len", ctypes.c_uint32),
        ("is_write", ctypes.c_uint8),
    ]


class kvm_run_internal(ctypes.Structure):
    """``struct { __u32 suberror; __u32 ndata; __u64 data[16]; } internal``."""

    _fields_ = [
        ("suberror", ctypes.c_uint32),
        ("ndata", ctypes.c_uint32),
        ("data", ctypes.c_uint64 * 16),
    ]


class kvm_run_arm_nisv(ctypes.Structure):
    """``struct { __u64 esr_iss; __u64 fault_ipa; } arm_nisv``."""

    _fields_ = [("esr_iss", ctypes.c_uint64), ("fault_ipa", ctypes.c_uint64)]


class kvm_run_arm_sea(ctypes.Structure):
    """``struct { __u64 flags; __u64 esr; __u64 gva; __u64 gpa; } arm_sea`` (6.19+)."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("esr", ctypes.c_uint64),
        ("gva", ctypes.c_uint64),
        ("gpa", ctypes.c_uint64),
    ]


class kvm_run_memory_fault(ctypes.Structure):
    """``struct { __u64 flags; __u64 gpa; __u64 size; } memory_fault``."""

    _fields_ = [("flags", ctypes.c_uint64), ("gpa", ctypes.c_uint64), ("size", ctypes.c_uint64)]


class kvmcore_fault_syndrome(ctypes.Structure):
    """kvmcore's proposed arch syndrome, placed right after ``memory_fault`` (kvm_run offset 56).

    Not upstream uAPI. ``flags`` holds ``KVMCORE_SYNDROME_VALID``; ``arch`` one of
    ``KVMCORE_SYNDROME_ARCH_*``; ``syndrome[]`` the arch's words (see ``docs/syndrome.md``).
    """

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("arch", ctypes.c_uint32),
        ("syndrome", ctypes.c_uint64 * KVMCORE_SYNDROME_WORDS),
    ]


class kvm_run_memory_fault_ext(ctypes.Structure):
    """``memory_fault`` followed by kvmcore's syndrome extension (one union member)."""

    _fields_ = [("memory_fault", kvm_run_memory_fault), ("syndrome", kvmcore_fault_syndrome)]


class kvm_run_memory_fault_esr(ctypes.Structure):
    """The design ``arm64-esr`` (not upstream): ``memory_fault`` followed by a u64 ``esr``
    (kvm_run offset 56), the sanitised ESR_EL2 of the abort, as ``arm_sea.esr`` carries one."""

    _fields_ = [("memory_fault", kvm_run_memory_fault), ("esr", ctypes.c_uint64)]


class kvm_run_exit(ctypes.Union):
    """The exit union of ``struct kvm_run`` (256 bytes at offset 32)."""

    _fields_ = [
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("arm_nisv", kvm_run_arm_nisv),
        ("memory_fault", kvm_run_memory_fault),
        ("kvmcore", kvm_run_memory_fault_ext),
        ("arm64_esr", kvm_run_memory_fault_esr),
        ("arm_sea", kvm_run_arm_sea),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run(ctypes.Structure):
    """``struct kvm_run`` for every arch but s390, byte-compatible up to the sync-regs union.

    ``bytes(run)`` is the first :data:`KVM_RUN_SIZE` bytes a VMM would see through its
    ``mmap`` of the vCPU fd. Use the properties ``mmio``, ``memory_fault``, ``arm_nisv``,
    ``internal`` and ``syndrome`` rather than the raw union.
    """

    _anonymous_ = ()
    _fields_ = [
        ("request_interrupt_window", ctypes.c_uint8),
        ("immediate_exit", ctypes.c_uint8),
        ("padding1", ctypes.c_uint8 * 6),
        ("exit_reason", ctypes.c_uint32),
        ("ready_for_interrupt_injection", ctypes.c_uint8),
        ("if_flag", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("cr8", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("exit", kvm_run_exit),
        ("kvm_valid_regs", ctypes.c_uint64),
        ("kvm_dirty_regs", ctypes.c_uint64),
        ("s", ctypes.c_char * 2048),
    ]

    @property
    def mmio(self) -> kvm_run_mmio:
        return self.exit.mmio

    @property
    def memory_fault(self) -> kvm_run_memory_fault:
        return self.exit.memory_fault

    @property
    def arm_nisv(self) -> kvm_run_arm_nisv:
        return self.exit.arm_nisv

    @property
    def memory_fault_esr(self) -> kvm_run_memory_fault_esr:
        """``memory_fault`` with the ``arm64-esr`` design's ``esr`` word (offset 56)."""
        return self.exit.arm64_esr

    @property
    def arm_sea(self) -> kvm_run_arm_sea:
        return self.exit.arm_sea

    @property
    def internal(self) -> kvm_run_internal:
        return self.exit.internal

    @property
    def syndrome(self) -> kvmcore_fault_syndrome:
        """kvmcore's syndrome extension (valid only with ``KVMCORE_SYNDROME_VALID``)."""
        return self.exit.kvmcore.syndrome

    def clear_exit(self) -> None:
        """Zero ``exit_reason`` and the exit union, as a fresh KVM_RUN would see them."""
        self.exit_reason = KVM_EXIT_UNKNOWN
        ctypes.memset(ctypes.addressof(self.exit), 0, ctypes.sizeof(self.exit))


KVM_RUN_SIZE = ctypes.sizeof(kvm_run)

#: Byte offsets of the fields a VMM reads, from the compiled table in the reference (section 2.1).
KVM_RUN_OFFSETS: dict[str, int] = {
    "exit_reason": kvm_run.exit_reason.offset,  # type: ignore[misc,attr-defined]  # ctypes field descriptor
    "exit": kvm_run.exit.offset,
    "mmio.phys_addr": kvm_run.exit.offset + kvm_run_mmio.phys_addr.offset,
    "mmio.data": kvm_run.exit.offset + kvm_run_mmio.data.offset,
    "mmio.len": kvm_run.exit.offset + kvm_run_mmio.len.offset,
    "mmio.is_write": kvm_run.exit.offset + kvm_run_mmio.is_write.offset,
    "memory_fault.flags": kvm_run.exit.offset + kvm_run_memory_fault.flags.offset,
    "memory_fault.gpa": kvm_run.exit.offset + kvm_run_memory_fault.gpa.offset,
    "memory_fault.size": kvm_run.exit.offset + kvm_run_memory_fault.size.offset,
    "arm_nisv.esr_iss": kvm_run.exit.offset + kvm_run_arm_nisv.esr_iss.offset,
    "arm_nisv.fault_ipa": kvm_run.exit.offset + kvm_run_arm_nisv.fault_ipa.offset,
    "arm_sea.flags": kvm_run.exit.offset + kvm_run_arm_sea.flags.offset,
    "arm_sea.esr": kvm_run.exit.offset + kvm_run_arm_sea.esr.offset,
    "arm_sea.gva": kvm_run.exit.offset + kvm_run_arm_sea.gva.offset,
    "arm_sea.gpa": kvm_run.exit.offset + kvm_run_arm_sea.gpa.offset,
    "kvmcore_syndrome": kvm_run.exit.offset + kvm_run_memory_fault_ext.syndrome.offset,
    "memory_fault.esr": kvm_run.exit.offset + kvm_run_memory_fault_esr.esr.offset,
    "kvm_valid_regs": kvm_run.kvm_valid_regs.offset,
}


assert MMIO_STRUCT.size <= ctypes.sizeof(kvm_run_mmio)
assert MEMORY_FAULT_SYNDROME_STRUCT.size == ctypes.sizeof(kvm_run_memory_fault_ext)
assert kvm_run_mmio.len.offset == 16 and kvm_run_mmio.is_write.offset == 20
assert KVM_RUN_OFFSETS["exit"] == KVM_RUN_EXIT_OFFSET
