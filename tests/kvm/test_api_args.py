"""The public API refuses bad arguments by name (issue 14): a value no ioctl can receive is a
TypeError or ValueError naming the function and the parameter; a value the kernel refuses is
KvmError with the errno of the kernel function cited on each case (Linux 7.3 sources)."""

from __future__ import annotations

import errno

import pytest
import toyarch

import kvmcore

MIB = 1 << 20


@pytest.fixture
def vm() -> kvmcore.VM:
    return kvmcore.VM(kvmcore.load_arch(toyarch))


# --- wrong types: TypeError naming the parameter -------------------------------------------------
@pytest.mark.parametrize(("call", "message"), [
    (lambda vm: vm.set_user_memory_region(0, 4096.0, MIB), "guest_phys_addr must be an int, got float"),
    (lambda vm: vm.set_user_memory_region(0, 0, None), "memory_size must be an int, got NoneType"),
    (lambda vm: vm.set_user_memory_region("0", 0, MIB), "slot must be an int, got str"),
    (lambda vm: vm.set_user_memory_region(0, 0, MIB, flags=True), "flags must be an int, got bool"),
    (lambda vm: vm.set_user_memory_region(0, 0, MIB, userspace_addr=1.5), "userspace_addr must be an int"),
    (lambda vm: vm.set_memory_attributes(0, "4K", 8), "size must be an int, got str"),
    (lambda vm: vm.create_guest_memfd(2.0 * MIB), "size must be an int, got float"),
    (lambda vm: vm.enable_cap(None), "cap must be an int, got NoneType"),
    (lambda vm: vm.get_dirty_log(None), "slot must be an int, got NoneType"),
    (lambda vm: kvmcore.set_userfault_bits(bytearray(8), [1, 2.0]), "set_userfault_bits: index 2.0 is a float, expected an int"),
    (lambda vm: kvmcore.set_userfault_bits(b"\0" * 8, range(3)), "set_userfault_bits: buffer is read-only"),
    (lambda vm: kvmcore.set_userfault_bits([0] * 8, range(3)), "set_userfault_bits: buffer must be a writable buffer"),
    (lambda vm: vm.create_vcpu().handle_fault(None), "handle_fault: raw must be a mapping"),
])
def test_wrong_types_name_the_parameter(vm: kvmcore.VM, call, message: str) -> None:
    with pytest.raises(TypeError) as info:
        call(vm)
    assert message in str(info.value), str(info.value)


# --- out of range for the field or the helper: ValueError ---------------------------------------
@pytest.mark.parametrize(("call", "message"), [
    # struct kvm_enable_cap { __u32 cap; __u32 flags; __u64 args[4]; } (include/uapi/linux/kvm.h)
    (lambda vm: vm.enable_cap(1 << 32), "cap=4294967296: expected an integer in [0, 2**32) (the uAPI field is __u32)"),
    (lambda vm: vm.enable_cap(kvmcore.abi.KVM_CAP_HALT_POLL, -1), "arg=-1: expected an integer in [0, 2**64) (the uAPI field is __u64)"),
    # struct kvm_create_guest_memfd { __u64 size; ... }: a negative size or one of 2**64 bytes
    # cannot be written into the field
    (lambda vm: vm.create_guest_memfd(-MIB), "size=-1048576: expected an integer in [0, 2**64)"),
    (lambda vm: vm.create_guest_memfd(1 << 64), "size=18446744073709551616: expected an integer in [0, 2**64)"),
    # a VMM-side helper: the bitmap is the caller's buffer, bit i for page i of the slot
    (lambda vm: kvmcore.set_userfault_bits(bytearray(8), [-1]), "set_userfault_bits: index -1 is outside the bitmap's 64 bits"),
    (lambda vm: kvmcore.set_userfault_bits(bytearray(8), range(-3, 2)), "set_userfault_bits: indexes [-3, 2) are outside the bitmap's 64 bits"),
    (lambda vm: kvmcore.set_userfault_bits(bytearray(8), range(60, 65)), "set_userfault_bits: indexes [60, 65) are outside"),
])
def test_out_of_range_values_name_the_parameter(vm: kvmcore.VM, call, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call(vm)
    assert str(info.value).startswith(message), str(info.value)


def test_a_refused_index_writes_nothing() -> None:
    bitmap = bytearray(8)
    with pytest.raises(ValueError):
        kvmcore.set_userfault_bits(bitmap, [3, 64])
    assert bitmap == bytearray(8)


# --- what the kernel refuses: KvmError with its errno ---------------------------------------------
@pytest.mark.parametrize(("call", "err", "why"), [
    # arch/{x86/kvm/x86.c,arm64/kvm/arm.c,riscv/kvm/vm.c} kvm_vm_ioctl_enable_cap(): an unknown
    # cap->cap falls to the default case, -EINVAL
    (lambda vm: vm.enable_cap(999), errno.EINVAL, "capability 999 cannot be enabled"),
    # virt/kvm/guest_memfd.c kvm_gmem_create(): loff_t size = args->size; size <= 0 -> -EINVAL:
    # a __u64 of 2**63 or more is negative as loff_t
    (lambda vm: vm.create_guest_memfd(1 << 63), errno.EINVAL, "is not a positive loff_t"),
    (lambda vm: vm.create_guest_memfd(0), errno.EINVAL, "is not a positive loff_t"),
    # virt/kvm/kvm_main.c kvm_set_memory_region(): (mem->memory_size >> PAGE_SHIFT) >
    # KVM_MEM_MAX_NR_PAGES -> -EINVAL, before anything is allocated
    (lambda vm: vm.set_user_memory_region(0, 0, 1 << 43, flags=kvmcore.abi.KVM_MEM_USERFAULT, userfault_bitmap=bytearray(8)),
     errno.EINVAL, "exceed KVM_MEM_MAX_NR_PAGES"),
    # kvm_vm_ioctl_set_mem_attributes(): attrs->address + attrs->size < attrs->address -> -EINVAL
    (lambda vm: vm.set_memory_attributes((1 << 64) - 0x1000, 0x2000, 0), errno.EINVAL, "wraps"),
])
def test_kernel_refusals_carry_the_errno(vm: kvmcore.VM, call, err: int, why: str) -> None:
    with pytest.raises(kvmcore.KvmError) as info:
        call(vm)
    assert info.value.errno == err
    assert why in str(info.value)


def test_known_capabilities_still_enable(vm: kvmcore.VM) -> None:
    # kvm_vm_ioctl_enable_cap_generic(): KVM_CAP_HALT_POLL takes an unsigned int of nanoseconds
    vm.enable_cap(kvmcore.abi.KVM_CAP_HALT_POLL, 200_000)
    assert vm.has_cap(kvmcore.abi.KVM_CAP_HALT_POLL)


def test_dirty_bitmaps_are_budgeted_per_vm(vm: kvmcore.VM) -> None:
    """virt/kvm/kvm_main.c kvm_alloc_dirty_bitmap(): -ENOMEM when the allocation fails; kvmcore
    allows one maximal bitmap per VM (KVM_MEM_MAX_NR_PAGES bits) and fails the next the same way."""
    log = kvmcore.abi.KVM_MEM_LOG_DIRTY_PAGES
    most = kvmcore.abi.KVM_MEM_MAX_NR_PAGES << 12
    vm.set_user_memory_region(0, 0, most, flags=log)
    with pytest.raises(kvmcore.KvmError) as info:
        vm.set_user_memory_region(1, 1 << 44, 2 * MIB, flags=log)
    assert info.value.errno == errno.ENOMEM
    vm.set_user_memory_region(0, 0, most, flags=0)  # logging off frees the bitmap
    vm.set_user_memory_region(1, 1 << 44, 2 * MIB, flags=log)
