"""The ioctl side of ``include/uapi/linux/kvm.h`` (x86-64): encodings and argument structs.

What a VMM needs to drive ``/dev/kvm`` with the calls kvmcore models: the ``_IO``/``_IOR``/
``_IOW``/``_IOWR`` encodings of ``include/uapi/asm-generic/ioctl.h`` and ``ctypes`` mirrors of the
argument structs, laid out as the 64-bit x86 ABI lays out the C ones. ``struct kvm_run`` itself
is :class:`kvmcore.abi.kvm_run`. Every ioctl number is computed from its struct's size, never
typed in; ``tests/realkvm/test_uapi.py`` checks them against the 7.3 header (compiled with gcc
where it can be, and against hand-computed values everywhere).
"""

from __future__ import annotations

import ctypes

# --- include/uapi/asm-generic/ioctl.h ------------------------------------------------------------
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS, _IOC_DIRBITS = 8, 8, 14, 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:  # noqa: N802  (the kernel's name)
    if not 0 <= size < 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (direction << _IOC_DIRSHIFT) | (type_ << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def _IO(type_: int, nr: int) -> int:  # noqa: N802
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, struct: type[ctypes.Structure]) -> int:  # noqa: N802
    return _IOC(_IOC_READ, type_, nr, ctypes.sizeof(struct))


def _IOW(type_: int, nr: int, struct: type[ctypes.Structure]) -> int:  # noqa: N802
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def _IOWR(type_: int, nr: int, struct: type[ctypes.Structure]) -> int:  # noqa: N802
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(struct))


KVMIO = 0xAE


# --- argument structs ------------------------------------------------------------------------------
class kvm_userspace_memory_region(ctypes.Structure):
    """``struct kvm_userspace_memory_region`` (the v1 ioctl's argument, 32 bytes)."""

    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
    ]


class kvm_userspace_memory_region2(ctypes.Structure):
    """``struct kvm_userspace_memory_region2`` (160 bytes)."""

    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
        ("guest_memfd_offset", ctypes.c_uint64),
        ("guest_memfd", ctypes.c_uint32),
        ("pad1", ctypes.c_uint32),
        ("pad2", ctypes.c_uint64 * 14),
    ]


class kvm_create_guest_memfd(ctypes.Structure):
    """``struct kvm_create_guest_memfd`` (64 bytes)."""

    _fields_ = [("size", ctypes.c_uint64), ("flags", ctypes.c_uint64), ("reserved", ctypes.c_uint64 * 6)]


class kvm_memory_attributes(ctypes.Structure):
    """``struct kvm_memory_attributes`` (32 bytes)."""

    _fields_ = [
        ("address", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("attributes", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class kvm_enable_cap(ctypes.Structure):
    """``struct kvm_enable_cap`` (104 bytes)."""

    _fields_ = [
        ("cap", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("args", ctypes.c_uint64 * 4),
        ("pad", ctypes.c_uint8 * 64),
    ]


class kvm_dirty_log(ctypes.Structure):
    """``struct kvm_dirty_log`` (16 bytes): ``dirty_bitmap`` is a user pointer."""

    _fields_ = [("slot", ctypes.c_uint32), ("padding1", ctypes.c_uint32), ("dirty_bitmap", ctypes.c_uint64)]


class kvm_regs(ctypes.Structure):
    """``struct kvm_regs`` (x86, 144 bytes)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
        )
    ]


class kvm_segment(ctypes.Structure):
    """``struct kvm_segment`` (x86, 24 bytes)."""

    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8),
        ("present", ctypes.c_uint8),
        ("dpl", ctypes.c_uint8),
        ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8),
        ("l", ctypes.c_uint8),
        ("g", ctypes.c_uint8),
        ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8),
        ("padding", ctypes.c_uint8),
    ]


class kvm_dtable(ctypes.Structure):
    """``struct kvm_dtable`` (x86, 16 bytes)."""

    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16), ("padding", ctypes.c_uint16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):
    """``struct kvm_sregs`` (x86, 312 bytes)."""

    _fields_ = [
        ("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment), ("fs", kvm_segment),
        ("gs", kvm_segment), ("ss", kvm_segment), ("tr", kvm_segment), ("ldt", kvm_segment),
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64), ("cr3", ctypes.c_uint64),
        ("cr4", ctypes.c_uint64), ("cr8", ctypes.c_uint64), ("efer", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("interrupt_bitmap", ctypes.c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_cpuid_entry2(ctypes.Structure):
    """``struct kvm_cpuid_entry2`` (x86, 40 bytes)."""

    _fields_ = [
        ("function", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("eax", ctypes.c_uint32),
        ("ebx", ctypes.c_uint32),
        ("ecx", ctypes.c_uint32),
        ("edx", ctypes.c_uint32),
        ("padding", ctypes.c_uint32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):
    """``struct kvm_cpuid2`` header (8 bytes); ``entries[nent]`` follow it (see :func:`cpuid2_type`)."""

    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32)]


def cpuid2_type(nent: int) -> type[ctypes.Structure]:
    """``struct kvm_cpuid2`` with room for ``nent`` entries (the flexible array made concrete)."""

    class kvm_cpuid2_n(ctypes.Structure):
        _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32), ("entries", kvm_cpuid_entry2 * nent)]

    return kvm_cpuid2_n


class kvm_stats_header(ctypes.Structure):
    """``struct kvm_stats_header`` (24 bytes), at offset 0 of a ``KVM_GET_STATS_FD`` file."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("name_size", ctypes.c_uint32),
        ("num_desc", ctypes.c_uint32),
        ("id_offset", ctypes.c_uint32),
        ("desc_offset", ctypes.c_uint32),
        ("data_offset", ctypes.c_uint32),
    ]


class kvm_stats_desc(ctypes.Structure):
    """``struct kvm_stats_desc`` without its flexible ``name[]`` (16 bytes; ``name_size`` follow)."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("exponent", ctypes.c_int16),
        ("size", ctypes.c_uint16),
        ("offset", ctypes.c_uint32),
        ("bucket_size", ctypes.c_uint32),
    ]


KVM_STATS_TYPE_MASK = 0xF

# --- ioctl numbers -----------------------------------------------------------------------------------
# system ioctls (on the /dev/kvm fd)
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, kvm_cpuid2)
# VM ioctls
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_GET_DIRTY_LOG = _IOW(KVMIO, 0x42, kvm_dirty_log)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_SET_USER_MEMORY_REGION2 = _IOW(KVMIO, 0x49, kvm_userspace_memory_region2)
KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, kvm_enable_cap)
KVM_GET_STATS_FD = _IO(KVMIO, 0xCE)
KVM_SET_MEMORY_ATTRIBUTES = _IOW(KVMIO, 0xD2, kvm_memory_attributes)
KVM_CREATE_GUEST_MEMFD = _IOWR(KVMIO, 0xD4, kvm_create_guest_memfd)
# vCPU ioctls
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs)
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, kvm_cpuid2)

#: ioctl name -> number, for messages and the header test.
IOCTLS: dict[str, int] = {
    name: value
    for name, value in sorted(globals().items())
    if name.startswith("KVM_") and isinstance(value, int) and name not in ("KVM_NR_INTERRUPTS", "KVM_STATS_TYPE_MASK")
}

# --- capabilities and constants the backend uses (kvm.h) -------------------------------------------
KVM_API_VERSION = 12
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SYNC_MMU = 16
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_MULTI_ADDRESS_SPACE = 118
KVM_CAP_BINARY_STATS_FD = 203
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_FAULT_INFO = 232
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_PRE_FAULT_MEMORY = 236
KVM_CAP_GUEST_MEMFD_FLAGS = 244
KVM_X86_DEFAULT_VM = 0
