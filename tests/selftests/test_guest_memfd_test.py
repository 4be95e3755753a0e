"""tools/testing/selftests/kvm/guest_memfd_test.c: the creation and binding checks.

Line numbers are of the 7.3 file; "6.12:" marks the 6.12 file's. 7.3 runs the tests for every
VM type the host offers (main(), lines 575-578), with flags 0, MMAP and MMAP|INIT_SHARED as
KVM_CAP_GUEST_MEMFD_FLAGS allows (test_guest_memfd(), lines 472-491); 6.12 runs them once on a
default VM. File operations (read/write, mmap, fallocate, mbind, NUMA, collapse) are not
modelled: tests/selftests/README.md.
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore import KvmError
from kvmcore.abi import (
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    KVM_CAP_GUEST_MEMFD,
    KVM_CAP_GUEST_MEMFD_FLAGS,
    KVM_MEM_GUEST_MEMFD,
)

PAGE_SIZE = 0x1000
INT64_MAX = (1 << 63) - 1

#: (arch, VM settings) the C test reaches on a host of that arch: x86 VM types
#: default and SW-protected; arm64's default VM (6.18+, where arm64 has guest_memfd).
VMS = [("x86", {}), ("x86", {"vm_type": "sw_protected"}), ("arm64", {})]


def errno_of(call, *args, **kwargs) -> int:
    with pytest.raises(KvmError) as info:
        call(*args, **kwargs)
    return info.value.errno


def vm_of(arch: str, settings: dict, kernel: str) -> kvmcore.VM:
    vm = kvmcore.VM(arch, kernel=kernel, proposals=(), **settings)
    if not vm.check_extension(KVM_CAP_GUEST_MEMFD):  # main(): TEST_REQUIRE(KVM_CAP_GUEST_MEMFD)
        pytest.skip(f"{arch} {settings} on {kernel}: no KVM_CAP_GUEST_MEMFD (the C test is skipped too)")
    return vm


def flag_sets(vm: kvmcore.VM) -> list[int]:
    """The flags __test_guest_memfd() runs with (lines 479-489); 6.12 only 0."""
    flags = vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS)
    sets = [0]
    if flags & GUEST_MEMFD_FLAG_MMAP:
        sets.append(GUEST_MEMFD_FLAG_MMAP)
    if flags & GUEST_MEMFD_FLAG_INIT_SHARED:
        sets.append(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)
    return sets


@pytest.mark.parametrize(("arch", "settings"), VMS)
def test_guest_memfd_flags_7_3(arch, settings) -> None:
    vm = vm_of(arch, settings, "7.3")
    valid = vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS)  # line 402
    for bit in range(64):
        flag = 1 << bit
        if flag & valid:
            vm.create_guest_memfd(PAGE_SIZE, flag)  # line 409: should succeed
        else:
            assert errno_of(vm.create_guest_memfd, PAGE_SIZE, flag) == errno.EINVAL  # line 414


@pytest.mark.parametrize("kernel", ["6.12", "6.18"])
def test_guest_memfd_flags_before_7_3(kernel) -> None:
    vm = vm_of("x86", {"vm_type": "sw_protected"}, kernel)
    valid = vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS)
    if kernel == "6.12":
        assert valid == 0  # 6.12 has no KVM_CAP_GUEST_MEMFD_FLAGS: every flag is invalid
    for bit in range(64):
        flag = 1 << bit
        if flag & valid:
            vm.create_guest_memfd(PAGE_SIZE, flag)
        else:
            # 6.12: lines 137-142 "guest_memfd() with flag '0x%lx' should fail with EINVAL"
            assert errno_of(vm.create_guest_memfd, PAGE_SIZE, flag) == errno.EINVAL


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
@pytest.mark.parametrize(("arch", "settings"), VMS)
def test_create_guest_memfd_invalid_sizes(arch, settings, kernel) -> None:
    vm = vm_of(arch, settings, kernel)
    for flags in flag_sets(vm):
        for size in range(1, PAGE_SIZE):  # lines 363-368 (6.12: 130-135)
            assert errno_of(vm.create_guest_memfd, size, flags) == errno.EINVAL


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
@pytest.mark.parametrize(("arch", "settings"), VMS)
def test_create_guest_memfd_multiple(arch, settings, kernel) -> None:
    vm = vm_of(arch, settings, kernel)
    fd1 = vm.create_guest_memfd(PAGE_SIZE)  # line 377 (6.12: 150)
    assert vm.guest_memfd(fd1).size == PAGE_SIZE  # line 382: st_size == page_size
    fd2 = vm.create_guest_memfd(PAGE_SIZE * 2)  # line 384
    assert vm.guest_memfd(fd2).size == PAGE_SIZE * 2  # line 389
    assert vm.guest_memfd(fd1).size == PAGE_SIZE  # line 393: the first is unchanged
    assert fd1 != fd2 and vm.guest_memfd(fd1) is not vm.guest_memfd(fd2)  # line 394: different inodes


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
@pytest.mark.parametrize(("arch", "settings"), VMS)
def test_invalid_binding(arch, settings, kernel) -> None:
    vm = vm_of(arch, settings, kernel)
    if not vm.config.gmem_slots:
        pytest.skip("no guest_memfd memslots on this VM (6.12: kvm_arch_has_private_mem() is false)")
    for flags in flag_sets(vm):
        size = PAGE_SIZE * 4  # gmem_test_vm(): a 4-page guest_memfd
        fd = vm.create_guest_memfd(size, flags)
        offset = INT64_MAX & ~(PAGE_SIZE - 1)  # ALIGN_DOWN(INT64_MAX, page_size), line 353
        # line 354: "Memslot with out-of-range offset+size should fail" with EINVAL (the C file
        # is 7.3's; the same check, offset + size > i_size, is in 6.12's kvm_gmem_bind())
        assert errno_of(vm.set_user_memory_region, 0, 0, size, 0, KVM_MEM_GUEST_MEMFD, guest_memfd=fd, guest_memfd_offset=offset) == errno.EINVAL
