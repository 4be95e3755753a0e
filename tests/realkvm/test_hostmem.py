"""Host memory for memslots: protections and holes are honoured by read/write and close (no
/dev/kvm needed)."""

from __future__ import annotations

import errno

import pytest

from kvmcore import KvmError
from kvmcore.realkvm.hostmem import PAGE_SIZE, PROT_NONE, PROT_READ, HostMapping


def maps_has(addr: int) -> bool:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


def test_protected_and_unmapped_pages_are_refused_not_crashed_on() -> None:
    with HostMapping(3 * PAGE_SIZE) as m:
        m.write(0, b"abc")
        m.mprotect(PAGE_SIZE, PAGE_SIZE, PROT_NONE)
        m.mprotect(0, PAGE_SIZE, PROT_READ)
        assert m.read(0, 3) == b"abc"
        for call in (lambda: m.read(PAGE_SIZE, 1), lambda: m.write(0, b"x")):
            with pytest.raises(KvmError) as info:
                call()
            assert info.value.errno == errno.EFAULT
        m.munmap(2 * PAGE_SIZE, PAGE_SIZE)
        assert not maps_has(m.addr + 2 * PAGE_SIZE) and maps_has(m.addr)
        with pytest.raises(KvmError):
            m.read(2 * PAGE_SIZE, 1)
        addr = m.addr
    assert not maps_has(addr) and not maps_has(addr + PAGE_SIZE)
    with pytest.raises(KvmError) as info:
        m.read(0, 1)
    assert info.value.errno == errno.EBADF


def test_bad_sizes_name_the_input() -> None:
    with pytest.raises(KvmError, match="not a positive multiple"):
        HostMapping(100)
