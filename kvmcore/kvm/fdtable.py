"""The VMM process's file descriptors that kvmcore hands out (``fget()``'s view).

A VM (``KVM_CREATE_VM``) and a guest_memfd (``KVM_CREATE_GUEST_MEMFD``) are files with
numbers unique in the process, so a memslot can be pointed at another VM's guest_memfd or at
a file that is no guest_memfd, and fail as the kernel fails (``kvm_gmem_bind()``: EINVAL),
while a number no file has fails with EBADF. Each number is held by a weak reference to the
VM that owns the file (its ``file_of(fd)`` gives the file), so a VM no one uses goes away with
its files.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

_owners: dict[int, weakref.ref[Any]] = {}


class StandardStream:
    """stdin, stdout or stderr: open in every process, and no guest_memfd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __repr__(self) -> str:
        return f"<standard stream {self.fd}>"


_STREAMS = (StandardStream(0), StandardStream(1), StandardStream(2))
_numbers = itertools.count(3)  # 0, 1 and 2 are stdin, stdout and stderr


def install(owner: Any) -> int:
    """``fd_install()``: a new descriptor number for a file of ``owner`` (a VM)."""
    fd = next(_numbers)
    _owners[fd] = weakref.ref(owner, _closer(fd))
    return fd


def _closer(fd: int) -> Any:
    """The callback that frees ``fd`` when its owner goes away."""

    def close(_ref: weakref.ref[Any]) -> None:
        _owners.pop(fd, None)

    return close


def fget(fd: Any) -> Any | None:
    """``fget()``: the file behind ``fd``, or None (the caller's EBADF)."""
    if not isinstance(fd, int) or isinstance(fd, bool):
        return None
    if 0 <= fd < len(_STREAMS):
        return _STREAMS[fd]
    ref = _owners.get(fd)
    owner = ref() if ref is not None else None
    return None if owner is None else owner.file_of(fd)
