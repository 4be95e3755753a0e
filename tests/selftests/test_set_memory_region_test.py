"""tools/testing/selftests/kvm/set_memory_region_test.c, the parts kvmcore can express.

Line numbers are of the 7.3 file unless a test says "6.12". The kernel runs the C test in
the host's own version; here every assertion runs against each modelled kernel in upstream
mode (``proposals=()``) and, where the 6.12 file or the 6.18 kernel differs, says so.
What is not ported, and why: tests/selftests/README.md.
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore import KvmError
from kvmcore.abi import (
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

MEM_REGION_SIZE = 0x200000  # line 24
MEM_REGION_GPA = 0xC0000000  # line 30
MEM_REGION_SLOT = 10  # line 31
VERSIONS = ("6.12", "6.18", "7.3")


def errno_of(call, *args, **kwargs) -> int:
    with pytest.raises(KvmError) as info:
        call(*args, **kwargs)
    return info.value.errno


def barebones(arch: str, kernel: str) -> kvmcore.VM:
    """vm_create_barebones(), or on x86 vm_create_barebones_type(KVM_X86_SW_PROTECTED_VM) as
    test_invalid_memory_region_flags() picks when the host supports it (lines 356-361)."""
    return kvmcore.VM(arch, kernel=kernel, proposals=(), **({"vm_type": "sw_protected"} if arch == "x86" else {}))


@pytest.mark.parametrize("kernel", VERSIONS)
@pytest.mark.parametrize("arch", ["x86", "arm64", "riscv"])
def test_invalid_memory_region_flags(arch, kernel) -> None:
    vm = barebones(arch, kernel)
    supported = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY  # lines 348, 354
    if vm.check_extension(kvmcore.abi.KVM_CAP_MEMORY_ATTRIBUTES) & KVM_MEMORY_ATTRIBUTE_PRIVATE:  # line 364
        supported |= KVM_MEM_GUEST_MEMFD
    for i in range(32):
        if supported & 1 << i:
            continue
        # line 382: KVM_SET_USER_MEMORY_REGION2 with an unsupported flag (guest_memfd 0,
        # userspace_addr NULL) fails with EINVAL. For GUEST_MEMFD on arm64 6.18+ the flag is
        # valid and fd 0 (stdin) is no guest_memfd: EINVAL from kvm_gmem_bind() instead.
        assert errno_of(vm.set_user_memory_region, 0, 0, MEM_REGION_SIZE, 0, 1 << i, guest_memfd=0) == errno.EINVAL, hex(1 << i)
    if supported & KVM_MEM_GUEST_MEMFD:
        fd = vm.create_guest_memfd(MEM_REGION_SIZE)  # line 387
        # line 392: dirty logging private memory is unsupported
        flags = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD
        assert errno_of(vm.set_user_memory_region, 0, 0, MEM_REGION_SIZE, 0, flags, guest_memfd=fd) == errno.EINVAL
        # line 398: read-only GUEST_MEMFD memslots are unsupported
        flags = KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD
        assert errno_of(vm.set_user_memory_region, 0, 0, MEM_REGION_SIZE, 0, flags, guest_memfd=fd) == errno.EINVAL
    assert len(vm.memslots) == 0


@pytest.mark.parametrize(("arch", "kernel"), [("x86", "7.3"), ("arm64", "6.12"), ("riscv", "6.18")])
def test_add_max_memory_regions(arch, kernel) -> None:
    vm = kvmcore.VM(arch, kernel=kernel, proposals=())  # vm_create_barebones(), line 422
    max_mem_slots = vm.check_extension(kvmcore.abi.KVM_CAP_NR_MEMSLOTS)
    assert max_mem_slots > 0  # line 419
    mem = vm.host.mmap(max_mem_slots * MEM_REGION_SIZE)  # line 430 (MAP_NORESERVE)
    for slot in range(max_mem_slots):  # lines 435-439
        vm.set_user_memory_region(slot, slot * MEM_REGION_SIZE, MEM_REGION_SIZE, mem + slot * MEM_REGION_SIZE)
    extra = vm.host.mmap(MEM_REGION_SIZE)
    # line 448: "Adding one more memory slot should fail with EINVAL"
    assert errno_of(vm.set_user_memory_region, max_mem_slots, max_mem_slots * MEM_REGION_SIZE, MEM_REGION_SIZE, extra) == errno.EINVAL
    assert len(vm.memslots) == max_mem_slots


def invalid_guest_memfd(vm: kvmcore.VM, memfd: int, offset: int) -> int:
    """test_invalid_guest_memfd(), lines 458-465: the errno of the KVM_MEM_GUEST_MEMFD slot."""
    return errno_of(vm.set_user_memory_region, MEM_REGION_SLOT, MEM_REGION_GPA, MEM_REGION_SIZE, 0, KVM_MEM_GUEST_MEMFD,
                    guest_memfd=memfd, guest_memfd_offset=offset)


@pytest.mark.parametrize("kernel", VERSIONS)
def test_add_private_memory_region(kernel) -> None:
    vm = kvmcore.VM("x86", kernel=kernel, proposals=(), vm_type="sw_protected")  # line 473
    assert invalid_guest_memfd(vm, vm.fd, 0) == errno.EINVAL  # line 477: "VM's fd should fail"
    vm2 = kvmcore.VM("x86", kernel=kernel, proposals=(), vm_type="sw_protected")  # line 483
    memfd = vm2.create_guest_memfd(MEM_REGION_SIZE)
    assert invalid_guest_memfd(vm, memfd, 0) == errno.EINVAL  # line 485: other VM's guest_memfd
    vm2.set_user_memory_region(MEM_REGION_SLOT, MEM_REGION_GPA, MEM_REGION_SIZE, 0, KVM_MEM_GUEST_MEMFD, memfd, 0)  # line 487
    memfd = vm.create_guest_memfd(MEM_REGION_SIZE)  # line 492
    for i in range(1, 0x1000):  # lines 493-494: "Unaligned offset should fail"
        assert invalid_guest_memfd(vm, memfd, i) == errno.EINVAL
    vm.set_user_memory_region(MEM_REGION_SLOT, MEM_REGION_GPA, MEM_REGION_SIZE, 0, KVM_MEM_GUEST_MEMFD, memfd, 0)  # line 496


@pytest.mark.parametrize("kernel", VERSIONS)
def test_add_overlapping_private_memory_regions(kernel) -> None:
    vm = kvmcore.VM("x86", kernel=kernel, proposals=(), vm_type="sw_protected")  # line 511
    memfd = vm.create_guest_memfd(MEM_REGION_SIZE * 5)  # line 513 (6.12: * 4)
    gmem = dict(flags=KVM_MEM_GUEST_MEMFD, guest_memfd=memfd)
    vm.set_user_memory_region(MEM_REGION_SLOT, MEM_REGION_GPA, MEM_REGION_SIZE * 2, 0, **gmem)  # line 515
    vm.set_user_memory_region(MEM_REGION_SLOT + 1, MEM_REGION_GPA * 2, MEM_REGION_SIZE * 2, 0,  # line 518
                              guest_memfd_offset=MEM_REGION_SIZE * 2, **gmem)
    # line 526: delete the first memslot (flags GUEST_MEMFD, guest_memfd -1: ignored for a delete)
    vm.set_user_memory_region(MEM_REGION_SLOT, MEM_REGION_GPA, 0, 0, KVM_MEM_GUEST_MEMFD, guest_memfd=-1)
    # lines 537 and 545 (7.3 only): overlap in the guest_memfd bindings but not in the GPA space
    # is EEXIST from 7.2 on (kvm_gmem_commit_memory_region()); 6.12 and 6.18's kvm_gmem_bind()
    # return EINVAL for it (the C file of 6.12 has no such check).
    binding_overlap = errno.EEXIST if kernel == "7.3" else errno.EINVAL
    for offset in (MEM_REGION_SIZE, MEM_REGION_SIZE * 3):  # lines 533 and 541
        assert errno_of(vm.set_user_memory_region, MEM_REGION_SLOT, MEM_REGION_GPA, MEM_REGION_SIZE * 2, 0,
                        guest_memfd_offset=offset, **gmem) == binding_overlap
    # lines 557 and 565 (6.12: 542 and 550): overlap in the GPA space is EEXIST in every version
    # (kvm_check_memslot_overlap() comes before any guest_memfd check)
    for gpa in (MEM_REGION_GPA * 2 - MEM_REGION_SIZE, MEM_REGION_GPA * 2 + MEM_REGION_SIZE):
        assert errno_of(vm.set_user_memory_region, MEM_REGION_SLOT, gpa, MEM_REGION_SIZE * 2, 0, **gmem) == errno.EEXIST
