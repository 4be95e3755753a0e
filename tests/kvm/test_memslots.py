"""KVM_SET_USER_MEMORY_REGION2 rules and errnos (kvm_set_memory_region(), KVM Userfault v3)."""

from __future__ import annotations

import errno
import tracemalloc
from array import array

import pytest

import kvmcore
from kvmcore import KvmError
from kvmcore.abi import (
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
)

GiB = 1 << 30
MiB = 1 << 20


def errno_of(call, *args, **kwargs) -> int:
    with pytest.raises(KvmError) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, OSError)
    return info.value.errno


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (dict(slot=0, guest_phys_addr=0x1001, memory_size=0x1000), errno.EINVAL),  # unaligned gpa
        (dict(slot=0, guest_phys_addr=0x1000, memory_size=0x1800), errno.EINVAL),  # unaligned size
        (dict(slot=0, guest_phys_addr=0x1000, memory_size=0x1000, userspace_addr=0x7000_0800), errno.EINVAL),
        (dict(slot=0, guest_phys_addr=0x1000, memory_size=0x1000, userspace_addr=1 << 47), errno.EINVAL),  # !access_ok
        (dict(slot=0, guest_phys_addr=0, memory_size=0x1000, flags=1 << 5), errno.EINVAL),  # unknown flag
        (dict(slot=0, guest_phys_addr=0, memory_size=0x1000, flags=KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD), errno.EINVAL),
        (dict(slot=0, guest_phys_addr=0, memory_size=0x1000, flags=KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD), errno.EINVAL),
        # include/linux/kvm_host.h: KVM_USER_MEM_SLOTS = SHRT_MAX - KVM_INTERNAL_MEM_SLOTS (0 off x86)
        (dict(slot=32767, guest_phys_addr=0, memory_size=0x1000), errno.EINVAL),
        (dict(slot=1 << 16, guest_phys_addr=0, memory_size=0x1000), errno.EINVAL),  # address space 1
        (dict(slot=0, guest_phys_addr=(1 << 64) - 0x1000, memory_size=0x2000), errno.EINVAL),  # wraps
        (dict(slot=0, guest_phys_addr=0, memory_size=0), errno.EINVAL),  # delete of a missing slot
        (dict(slot=0, guest_phys_addr=0, memory_size=0x1000, flags=KVM_MEM_USERFAULT), errno.EINVAL),  # no bitmap
        (dict(slot=0, guest_phys_addr=0, memory_size=65 * 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=bytearray(8)), errno.EINVAL),
        (dict(slot=0, guest_phys_addr=0, memory_size=0x1000, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=1 << 30), errno.EBADF),
        # (an fd number no file has: small numbers belong to whatever VMs earlier tests left for the GC)
    ],
)
def test_region_refusals(vm: kvmcore.VM, kwargs: dict, expected: int) -> None:
    assert errno_of(vm.set_user_memory_region, **kwargs) == expected
    assert len(vm.memslots) == 0


def test_overlap_is_eexist_and_adjacent_is_fine(vm: kvmcore.VM) -> None:
    vm.set_user_memory_region(0, 0x100000, 0x100000)
    assert errno_of(vm.set_user_memory_region, 1, 0x1FF000, 0x2000) == errno.EEXIST
    assert errno_of(vm.set_user_memory_region, 1, 0x0, 0x200000) == errno.EEXIST  # covers slot 0
    vm.set_user_memory_region(1, 0x200000, 0x1000)  # starts where slot 0 ends
    vm.set_user_memory_region(2, 0xFF000, 0x1000)  # ends where slot 0 starts
    assert [s.id for s in vm.memslots] == [2, 0, 1]


def test_modify_rules(vm: kvmcore.VM) -> None:
    slot = vm.set_user_memory_region(0, 0x100000, 0x100000)
    hva = slot.userspace_addr
    assert errno_of(vm.set_user_memory_region, 0, 0x100000, 0x200000, hva) == errno.EINVAL  # size
    assert errno_of(vm.set_user_memory_region, 0, 0x100000, 0x100000, hva + 0x1000) == errno.EINVAL  # hva
    assert errno_of(vm.set_user_memory_region, 0, 0x100000, 0x100000, hva, KVM_MEM_READONLY) == errno.EINVAL
    vm.set_user_memory_region(1, 0x400000, 0x1000)
    assert errno_of(vm.set_user_memory_region, 0, 0x380000, 0x100000, hva) == errno.EEXIST  # move onto slot 1
    moved = vm.set_user_memory_region(0, 0x800000, 0x100000, hva)
    assert moved.base_gfn == 0x800 and vm.gfn_to_memslot(0x100) is None and vm.gfn_to_memslot(0x8FF) is moved
    flagged = vm.set_user_memory_region(0, 0x800000, 0x100000, hva, KVM_MEM_LOG_DIRTY_PAGES)
    assert flagged.flags == KVM_MEM_LOG_DIRTY_PAGES
    vm.set_user_memory_region(0, 0x800000, 0)  # delete
    assert vm.gfn_to_memslot(0x800) is None and 0 not in vm.memslots.by_id


def test_guest_memfd_slots(vm: kvmcore.VM) -> None:
    assert errno_of(vm.create_guest_memfd, 0x1800) == errno.EINVAL
    assert errno_of(vm.create_guest_memfd, 0x1000, flags=1 << 7) == errno.EINVAL
    fd = vm.create_guest_memfd(4 * MiB)
    assert errno_of(vm.set_user_memory_region, 0, 0, 8 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd) == errno.EINVAL  # too big
    vm.set_user_memory_region(0, 0, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    # the same file range cannot back two slots (kvm_gmem_bind)
    assert errno_of(vm.set_user_memory_region, 1, 4 * MiB, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd, guest_memfd_offset=MiB) == errno.EEXIST
    vm.set_user_memory_region(1, 4 * MiB, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd, guest_memfd_offset=2 * MiB)
    hva = vm.memslots.by_id[0].userspace_addr
    # v3: a guest_memfd slot may change flags (USERFAULT) but not move
    vm.set_user_memory_region(0, 0, 2 * MiB, hva, KVM_MEM_GUEST_MEMFD | KVM_MEM_USERFAULT, userfault_bitmap=bytearray(64))
    assert errno_of(vm.set_user_memory_region, 0, 16 * MiB, 2 * MiB, hva, KVM_MEM_GUEST_MEMFD) == errno.EINVAL
    vm.set_user_memory_region(0, 0, 0)  # delete unbinds
    vm.set_user_memory_region(2, 8 * MiB, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)


def test_userfault_bitmap_accepts_buffers(vm: kvmcore.VM) -> None:
    # 100 pages need DIV_ROUND_UP(100, 64) * 8 = 16 bytes
    vm.set_user_memory_region(0, 0, 100 * 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=array("Q", [0, 0]))
    vm.set_user_memory_region(1, 1 << 30, 100 * 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=bytearray(16))
    assert errno_of(vm.set_user_memory_region, 2, 2 << 30, 100 * 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=bytearray(15)) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 2, 2 << 30, 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=[0]) == errno.EINVAL


def test_one_tib_slot_costs_no_per_page_memory(vm: kvmcore.VM) -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    vm.set_user_memory_region(0, 1 << 40, 1 << 40)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 64 * 1024  # 2**28 pages; a per-page object would be gigabytes
    assert vm.gfn_to_memslot((1 << 28) + 12345).id == 0


def test_lookup_among_many_slots(vm: kvmcore.VM) -> None:
    for i in range(0, 2000, 2):  # every other 2 MiB range
        vm.set_user_memory_region(i // 2, i * 2 * MiB, 2 * MiB)
    assert vm.gfn_to_memslot((1998 * 2 * MiB) >> 12).id == 999
    assert vm.gfn_to_memslot((3 * 2 * MiB) >> 12) is None  # a hole
    assert vm.gfn_to_memslot(((4 * 2 * MiB) >> 12) + 511).id == 2


def test_hook_prepare_memory_region_can_refuse(toy, vm) -> None:
    """An arch refusing in kvm_arch_prepare_memory_region(): nothing is committed or leaked."""
    seen = []

    class Refuser:
        @kvmcore.hookimpl
        def prepare_memory_region(self, vm, old, new, change):
            seen.append((change, old.id if old else None, new.base_gfn, new.npages))
            if new.guest_phys_addr >= 1 << 40:
                raise KvmError(errno.EFAULT, f"slot {new.id}: beyond the IPA space")

    toy.pm.register(Refuser(), name="refuser")
    fd = vm.create_guest_memfd(2 * MiB)
    vmas = len(vm.host.vmas)
    assert errno_of(vm.set_user_memory_region, 0, 1 << 40, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd) == errno.EFAULT
    assert len(vm.memslots) == 0 and len(vm.host.vmas) == vmas  # the fresh mapping was undone
    vm.set_user_memory_region(0, 0, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)  # gmem was unbound
    hva = vm.memslots.by_id[0].userspace_addr
    assert errno_of(vm.set_user_memory_region, 0, 1 << 40, 2 * MiB, hva, KVM_MEM_GUEST_MEMFD) == errno.EINVAL  # gmem move: common check first
    vm.set_user_memory_region(1, 4 * MiB, 2 * MiB)
    assert errno_of(vm.set_user_memory_region, 1, 1 << 41, 2 * MiB, vm.memslots.by_id[1].userspace_addr) == errno.EFAULT
    assert vm.gfn_to_memslot(0x400).id == 1  # the refused move left the slot in place
    assert seen == [("create", None, 1 << 28, 512), ("create", None, 0, 512), ("create", None, 0x400, 512), ("move", 1, 1 << 29, 512)]


@pytest.mark.parametrize("size", [1 << 63, (1 << 64) - 0x1000])
def test_guest_memfd_size_is_a_signed_loff_t(vm: kvmcore.VM, size: int) -> None:
    # virt/kvm/guest_memfd.c:kvm_gmem_create() (6.12 and 7.3 alike): ``loff_t size = args->size;
    # if (size <= 0 || !PAGE_ALIGNED(size)) return -EINVAL;``: a u64 size of 2^63 or more is a
    # negative loff_t. The running 6.18 kernel gives EINVAL for both (kvmcore check-host).
    assert errno_of(vm.create_guest_memfd, size) == errno.EINVAL
    assert vm.create_guest_memfd((1 << 63) - 0x1000) > 0  # the largest positive page multiple is fine


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
def test_x86_reports_memory_fault_info_and_its_vm_types(kernel: str) -> None:
    # arch/x86/kvm/x86.c:kvm_vm_ioctl_check_extension(), 6.12 line 4262 and 7.3 line 2293:
    # KVM_CAP_MEMORY_FAULT_INFO -> 1; KVM_CAP_VM_TYPES -> kvm_caps.supported_vm_types, which is
    # BIT(KVM_X86_DEFAULT_VM) | BIT(KVM_X86_SW_PROTECTED_VM) on a kernel with
    # CONFIG_KVM_SW_PROTECTED_VM and the TDP MMU (x86.c kvm_x86_vendor_init()). The running
    # 6.18 kernel reports MEMORY_FAULT_INFO 1 (kvmcore check-host).
    vm = kvmcore.VM("x86", kernel=kernel, proposals=())
    assert vm.check_extension(232) == 1
    assert vm.check_extension(235) == 0b11
    # arm64 and riscv do not report KVM_CAP_MEMORY_FAULT_INFO (no case for it in arm.c / vm.c)
    assert kvmcore.VM("arm64", kernel=kernel, proposals=()).check_extension(232) == 0
