"""Anonymous host memory for memslots, with the ``mmap``/``mprotect``/``munmap`` of libc.

Python's :mod:`mmap` cannot change a mapping's protection or hand out its address, so the
backend calls libc through :mod:`ctypes`. A :class:`HostMapping` is a context manager: its
range is unmapped on close, whatever was done to it in between (``munmap`` of part of it
included), so a run leaves nothing behind in ``/proc/self/maps``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os

from kvmcore.errors import KvmError

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, mmap.PROT_READ, mmap.PROT_WRITE, 4
PAGE_SIZE = mmap.PAGESIZE

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _check(ret: int, call: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise KvmError(err, f"{call}: {os.strerror(err)}")


def libc_mmap(size: int, prot: int, flags: int, fd: int = -1, offset: int = 0, addr: int = 0) -> int:
    """``mmap(2)``; returns the address or raises :class:`KvmError` with its errno."""
    ret = _libc.mmap(addr or None, size, prot, flags, fd, offset)
    if ret is None or ret == _MAP_FAILED:
        err = ctypes.get_errno() or errno.ENOMEM
        raise KvmError(err, f"mmap(size={size:#x}, prot={prot}, fd={fd}): {os.strerror(err)}")
    return int(ret)


def libc_munmap(addr: int, size: int) -> None:
    _check(_libc.munmap(addr, size), f"munmap({addr:#x}, {size:#x})")


def libc_mprotect(addr: int, size: int, prot: int) -> None:
    _check(_libc.mprotect(addr, size, prot), f"mprotect({addr:#x}, {size:#x}, {prot})")


class HostMapping:
    """``size`` bytes of private anonymous memory (read-write unless ``prot`` says otherwise)."""

    def __init__(self, size: int, prot: int = PROT_READ | PROT_WRITE, *, fd: int = -1, shared: bool = False) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise KvmError(errno.EINVAL, f"HostMapping: size {size:#x} is not a positive multiple of {PAGE_SIZE:#x}")
        flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
        if fd < 0:
            flags |= mmap.MAP_ANONYMOUS
        self.size = size
        self.addr: int = libc_mmap(size, prot, flags, fd)
        self.closed = False
        #: page offsets unmapped by :meth:`munmap` (close() must not unmap them again: the
        #: kernel may have handed the hole to another mapping since)
        self._holes: set[int] = set()
        #: page offset -> protection where it differs from ``prot``, so :meth:`read`/:meth:`write`
        #: refuse (EFAULT) instead of crashing the process on a page they cannot touch
        self.prot = prot
        self._prot: dict[int, int] = {}

    def __enter__(self) -> HostMapping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            start = 0
            for page in range(0, self.size + PAGE_SIZE, PAGE_SIZE):
                if page == self.size or page in self._holes:
                    if page > start:
                        libc_munmap(self.addr + start, page - start)
                    start = page + PAGE_SIZE

    @property
    def holes(self) -> frozenset[int]:
        """Page offsets :meth:`munmap` removed."""
        return frozenset(self._holes)

    def mprotect(self, offset: int, size: int, prot: int) -> None:
        libc_mprotect(self.addr + offset, size, prot)
        for page in range(offset, offset + size, PAGE_SIZE):
            self._prot[page] = prot

    def _check_access(self, call: str, offset: int, size: int, need: int) -> None:
        if self.closed:
            raise KvmError(errno.EBADF, f"HostMapping.{call}: the mapping is closed")
        if offset < 0 or offset + size > self.size:
            raise KvmError(errno.EINVAL, f"HostMapping.{call}: [{offset:#x}, +{size:#x}) is outside {self.size:#x} bytes")
        for page in range(offset - offset % PAGE_SIZE, offset + size, PAGE_SIZE):
            if page in self._holes or not self._prot.get(page, self.prot) & need:
                raise KvmError(errno.EFAULT, f"HostMapping.{call}: page {page:#x} is unmapped or protected against it")

    def munmap(self, offset: int, size: int) -> None:
        """Unmap part of the range (page aligned); close() unmaps only the rest."""
        libc_munmap(self.addr + offset, size)
        self._holes.update(range(offset, offset + size, PAGE_SIZE))

    def write(self, offset: int, data: bytes) -> None:
        self._check_access("write", offset, len(data), PROT_WRITE)
        ctypes.memmove(self.addr + offset, data, len(data))

    def read(self, offset: int, size: int) -> bytes:
        self._check_access("read", offset, size, PROT_READ)
        return ctypes.string_at(self.addr + offset, size)
