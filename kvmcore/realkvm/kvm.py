"""``/dev/kvm`` driven with plain ``fcntl.ioctl``, ``mmap`` and ``ctypes``.

:class:`System` (the ``/dev/kvm`` fd), :class:`VM` (a VM fd) and :class:`VCPU` (a vCPU fd and
its mmapped ``struct kvm_run``, read through :class:`kvmcore.abi.kvm_run`) are context managers;
closing one closes what it created (a VM its vCPUs, guest_memfds and stats fds), so every fd
and mapping goes away deterministically. A failing ioctl raises :class:`kvmcore.KvmError` with
the kernel's errno, the class the model raises, so one piece of calling code drives either.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from typing import Any

from kvmcore import abi, uapi
from kvmcore.errors import KvmError

DEV_KVM = "/dev/kvm"
_NAMES = {value: name for name, value in uapi.IOCTLS.items()}


def ioctl(fd: int, request: int, arg: Any = 0, what: str = "") -> int:
    """``ioctl(fd, request, arg)``: the return value, or :class:`KvmError` with the errno.

    ``arg`` is an int or a ctypes object (passed by address and updated in place).
    """
    try:
        if isinstance(arg, int):
            return fcntl.ioctl(fd, request, arg)
        return fcntl.ioctl(fd, request, arg, True)
    except OSError as exc:
        name = _NAMES.get(request, f"ioctl {request:#x}")
        raise KvmError(exc.errno or errno.EIO, f"{name}{'(' + what + ')' if what else ''}") from None


class _Fd:
    """An owned file descriptor, closed once."""

    fd: int

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def fileno(self) -> int:
        if self.fd < 0:
            raise KvmError(errno.EBADF, f"{type(self).__name__} is closed")
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class System(_Fd):
    """The ``/dev/kvm`` fd: API version, capabilities, ``KVM_CREATE_VM``."""

    def __init__(self, path: str = DEV_KVM) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KvmError(exc.errno or errno.ENOENT, f"open({path}): {exc.strerror}") from None
        super().__init__(fd)
        try:
            version = self.api_version()
            if version != uapi.KVM_API_VERSION:
                raise KvmError(errno.EINVAL, f"{path}: KVM_GET_API_VERSION is {version}, expected {uapi.KVM_API_VERSION}")
            self.vcpu_mmap_size = ioctl(self.fd, uapi.KVM_GET_VCPU_MMAP_SIZE)
        except BaseException:
            self.close()
            raise

    def api_version(self) -> int:
        return ioctl(self.fileno(), uapi.KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION`` on the system fd."""
        return ioctl(self.fileno(), uapi.KVM_CHECK_EXTENSION, cap, f"cap {cap}")

    def supported_cpuid(self, max_entries: int = 256) -> ctypes.Structure:
        """``KVM_GET_SUPPORTED_CPUID`` as a ``struct kvm_cpuid2`` with ``nent`` entries."""
        buf = uapi.cpuid2_type(max_entries)()
        buf.nent = max_entries
        ioctl(self.fileno(), uapi.KVM_GET_SUPPORTED_CPUID, buf)
        return buf

    def create_vm(self, vm_type: int = uapi.KVM_X86_DEFAULT_VM) -> VM:
        """``KVM_CREATE_VM`` with ``vm_type``."""
        return VM(self, ioctl(self.fileno(), uapi.KVM_CREATE_VM, vm_type, f"type {vm_type}"))


class GuestMemfd(_Fd):
    """A guest_memfd from ``KVM_CREATE_GUEST_MEMFD``."""

    def __init__(self, fd: int, size: int, flags: int) -> None:
        super().__init__(fd)
        self.size = size
        self.flags = flags


class VM(_Fd):
    """A VM fd and everything created on it."""

    def __init__(self, system: System, fd: int) -> None:
        super().__init__(fd)
        self.system = system
        self.vcpus: list[VCPU] = []
        self.guest_memfds: list[GuestMemfd] = []

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        for gmem in self.guest_memfds:
            gmem.close()
        self.vcpus.clear()
        self.guest_memfds.clear()
        super().close()

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION`` on the VM fd (answers for this VM's type)."""
        return ioctl(self.fileno(), uapi.KVM_CHECK_EXTENSION, cap, f"cap {cap}")

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        """``KVM_ENABLE_CAP`` on the VM."""
        arg = uapi.kvm_enable_cap(cap=cap, flags=flags)
        for i, value in enumerate(args):
            arg.args[i] = value
        ioctl(self.fileno(), uapi.KVM_ENABLE_CAP, arg, f"cap {cap}")

    def set_user_memory_region(
        self,
        slot: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int = 0,
        flags: int = 0,
        guest_memfd: int = 0,
        guest_memfd_offset: int = 0,
    ) -> None:
        """``KVM_SET_USER_MEMORY_REGION2``. Values are truncated to their C field widths, as a
        C caller's would be; the model's method of the same name takes the same arguments."""
        region = uapi.kvm_userspace_memory_region2(
            slot=slot & 0xFFFF_FFFF,
            flags=flags & 0xFFFF_FFFF,
            guest_phys_addr=guest_phys_addr & (1 << 64) - 1,
            memory_size=memory_size & (1 << 64) - 1,
            userspace_addr=userspace_addr & (1 << 64) - 1,
            guest_memfd_offset=guest_memfd_offset & (1 << 64) - 1,
            guest_memfd=guest_memfd & 0xFFFF_FFFF,
        )
        ioctl(self.fileno(), uapi.KVM_SET_USER_MEMORY_REGION2, region, f"slot {slot:#x}")

    def create_guest_memfd(self, size: int, flags: int = 0) -> GuestMemfd:
        """``KVM_CREATE_GUEST_MEMFD``; the fd is closed with the VM (or earlier, by its owner)."""
        arg = uapi.kvm_create_guest_memfd(size=size & (1 << 64) - 1, flags=flags & (1 << 64) - 1)
        gmem = GuestMemfd(ioctl(self.fileno(), uapi.KVM_CREATE_GUEST_MEMFD, arg, f"size {size:#x}"), size, flags)
        self.guest_memfds.append(gmem)
        return gmem

    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int = 0) -> None:
        """``KVM_SET_MEMORY_ATTRIBUTES``."""
        arg = uapi.kvm_memory_attributes(address=address, size=size, attributes=attributes, flags=flags)
        ioctl(self.fileno(), uapi.KVM_SET_MEMORY_ATTRIBUTES, arg)

    def get_dirty_log(self, slot: int, npages: int) -> bytes:
        """``KVM_GET_DIRTY_LOG`` into a bitmap of ``npages`` bits (rounded up to u64s)."""
        buf = (ctypes.c_uint8 * ((npages + 63) // 64 * 8))()
        arg = uapi.kvm_dirty_log(slot=slot, dirty_bitmap=ctypes.addressof(buf))
        ioctl(self.fileno(), uapi.KVM_GET_DIRTY_LOG, arg, f"slot {slot}")
        return bytes(buf)

    def create_vcpu(self, vcpu_id: int | None = None) -> VCPU:
        """``KVM_CREATE_VCPU`` and the mmap of its ``kvm_run``."""
        vcpu_id = len(self.vcpus) if vcpu_id is None else vcpu_id
        vcpu = VCPU(self, ioctl(self.fileno(), uapi.KVM_CREATE_VCPU, vcpu_id, f"id {vcpu_id}"), vcpu_id)
        self.vcpus.append(vcpu)
        return vcpu


class VCPU(_Fd):
    """A vCPU fd, its mmapped ``kvm_run`` (``.run``, a :class:`kvmcore.abi.kvm_run` view) and
    registers."""

    def __init__(self, vm: VM, fd: int, vcpu_id: int) -> None:
        super().__init__(fd)
        self.vm = vm
        self.id = vcpu_id
        self._stats: Stats | None = None
        try:
            self._map: mmap.mmap | None = mmap.mmap(fd, vm.system.vcpu_mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            os.close(fd)
            self.fd = -1
            raise KvmError(exc.errno or errno.EIO, f"mmap of vCPU {vcpu_id}'s kvm_run") from None
        #: address of the mapping (a ctypes view would pin the mmap's buffer and stop close())
        self._run_addr = ctypes.addressof(ctypes.c_char.from_buffer(self._map))

    @property
    def run(self) -> abi.kvm_run:
        """The live ``struct kvm_run``; do not keep it past :meth:`close`."""
        if self._map is None:
            raise KvmError(errno.EBADF, f"vCPU {self.id} is closed")
        return abi.kvm_run.from_address(self._run_addr)

    def close(self) -> None:
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        if self._map is not None:
            m, self._map = self._map, None
            try:
                m.close()
            except BufferError:  # an exported view is still alive: let the GC unmap it
                pass
        super().close()

    def kvm_run(self) -> int:
        """``KVM_RUN``: 0, or :class:`KvmError` with the errno (``EFAULT``, ``EINTR``...)."""
        return ioctl(self.fileno(), uapi.KVM_RUN)

    def get_regs(self) -> uapi.kvm_regs:
        regs = uapi.kvm_regs()
        ioctl(self.fileno(), uapi.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: uapi.kvm_regs) -> None:
        ioctl(self.fileno(), uapi.KVM_SET_REGS, regs)

    def get_sregs(self) -> uapi.kvm_sregs:
        sregs = uapi.kvm_sregs()
        ioctl(self.fileno(), uapi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: uapi.kvm_sregs) -> None:
        ioctl(self.fileno(), uapi.KVM_SET_SREGS, sregs)

    def set_cpuid2(self, cpuid: ctypes.Structure) -> None:
        ioctl(self.fileno(), uapi.KVM_SET_CPUID2, cpuid)

    def stats(self) -> Stats:
        """The vCPU's binary stats (``KVM_GET_STATS_FD``), opened once and closed with the vCPU."""
        if self._stats is None:
            self._stats = Stats(ioctl(self.fileno(), uapi.KVM_GET_STATS_FD))
        return self._stats


class Stats(_Fd):
    """A ``KVM_GET_STATS_FD`` file: the descriptors are read once, the values on each :meth:`read`.

    Mirrors the layout ``kvm_stats_read()`` serves (``Documentation/virt/kvm/api.rst``, "The binary
    stats"): header, id string, descriptors (each followed by ``name_size`` bytes of name), data.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        try:
            header = uapi.kvm_stats_header.from_buffer_copy(os.pread(fd, ctypes.sizeof(uapi.kvm_stats_header), 0))
            step = ctypes.sizeof(uapi.kvm_stats_desc) + header.name_size
            raw = os.pread(fd, step * header.num_desc, header.desc_offset)
            #: name -> (byte offset in the data block, number of u64 values)
            self.fields: dict[str, tuple[int, int]] = {}
            for i in range(header.num_desc):
                desc = uapi.kvm_stats_desc.from_buffer_copy(raw, i * step)
                name_at = i * step + ctypes.sizeof(uapi.kvm_stats_desc)
                name = raw[name_at:name_at + header.name_size].split(b"\0", 1)[0].decode()
                self.fields[name] = (desc.offset, desc.size)
            self.data_offset = header.data_offset
            self.data_size = max((off + 8 * n for off, n in self.fields.values()), default=0)
        except BaseException:
            self.close()
            raise

    def read(self) -> dict[str, int]:
        """Every single-valued stat (histograms are left out) as ``{name: value}``."""
        data = os.pread(self.fileno(), self.data_size, self.data_offset)
        return {
            name: int.from_bytes(data[off:off + 8], "little")
            for name, (off, n) in self.fields.items()
            if n == 1
        }


def delta(before: dict[str, int], after: dict[str, int], names: tuple[str, ...] | None = None) -> dict[str, int]:
    """The stats that changed between two :meth:`Stats.read` results (only ``names`` if given)."""
    keys = names if names is not None else tuple(after)
    return {k: after[k] - before.get(k, 0) for k in keys if k in after and after[k] != before.get(k, 0)}
