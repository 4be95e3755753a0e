"""tools/testing/selftests/kvm/x86/private_mem_kvm_exits_test.c (6.12: x86_64/, the same
assertions one line lower from line 77 on). Line numbers are 7.3's.

The guest's ``*(u64 *)EXITS_TEST_GVA`` read becomes one EPT-violation read at EXITS_TEST_GPA
(what kvmcore's x86 encode_fault reports for it); the vCPU thread racing the memslot deletion is
not modelled, only its outcome once the slot is gone.
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore.abi import (
    KVM_EXIT_MEMORY_FAULT,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEMORY_EXIT_FLAG_PRIVATE,
)

EXITS_TEST_GPA = 0xC0000000  # lines 11-12
EXITS_TEST_NPAGES = 1
EXITS_TEST_SIZE = EXITS_TEST_NPAGES * 0x1000
EXITS_TEST_SLOT = 10


def protected_vcpu(kernel: str) -> kvmcore.VCPU:
    """vm_create_shape_with_one_vcpu(protected_vm_shape) (lines 39-42): KVM_X86_SW_PROTECTED_VM."""
    return kvmcore.VM("x86", kernel=kernel, proposals=(), vm_type="sw_protected").create_vcpu()


def run_vcpu_get_exit_reason(vcpu: kvmcore.VCPU) -> int:
    """Lines 28-37: KVM_RUN; if it fails, errno must be EFAULT and exit_reason MEMORY_FAULT."""
    raw = vcpu.vm.arch.encode_fault(vcpu, kvmcore.Access(EXITS_TEST_GPA, "read"))
    res = vcpu.handle_fault(raw)
    if res.ret:
        assert res.ret == -errno.EFAULT  # line 34
        assert vcpu.kvm_run.exit_reason == KVM_EXIT_MEMORY_FAULT  # line 35
    return vcpu.kvm_run.exit_reason


def check_private_exit(vcpu: kvmcore.VCPU, exit_reason: int) -> None:
    run = vcpu.kvm_run
    assert exit_reason == KVM_EXIT_MEMORY_FAULT  # line 76 / 105
    assert run.memory_fault.flags == KVM_MEMORY_EXIT_FLAG_PRIVATE  # line 77 / 106
    assert run.memory_fault.gpa == EXITS_TEST_GPA  # line 78 / 107
    assert run.memory_fault.size == EXITS_TEST_SIZE  # line 79 / 108


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
def test_private_access_memslot_deleted(kernel) -> None:
    vcpu = protected_vcpu(kernel)
    vm = vcpu.vm
    fd = vm.create_guest_memfd(EXITS_TEST_SIZE)  # vm_userspace_mem_region_add(..., KVM_MEM_GUEST_MEMFD), lines 53-56
    vm.set_user_memory_region(EXITS_TEST_SLOT, EXITS_TEST_GPA, EXITS_TEST_SIZE, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(EXITS_TEST_GPA, EXITS_TEST_SIZE, KVM_MEMORY_ATTRIBUTE_PRIVATE)  # line 61
    vm.set_user_memory_region(EXITS_TEST_SLOT, EXITS_TEST_GPA, 0)  # vm_mem_region_delete(), line 66
    check_private_exit(vcpu, run_vcpu_get_exit_reason(vcpu))


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
def test_private_access_memslot_not_private(kernel) -> None:
    vcpu = protected_vcpu(kernel)
    vm = vcpu.vm
    vm.set_user_memory_region(EXITS_TEST_SLOT, EXITS_TEST_GPA, EXITS_TEST_SIZE)  # flags = 0, lines 94-96
    vm.set_memory_attributes(EXITS_TEST_GPA, EXITS_TEST_SIZE, KVM_MEMORY_ATTRIBUTE_PRIVATE)  # line 101
    check_private_exit(vcpu, run_vcpu_get_exit_reason(vcpu))
