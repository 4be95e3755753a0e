"""tools/testing/selftests/kvm/x86/private_mem_conversions_test.c: its memslot and
memory-attribute parts (7.3 line numbers; 6.12's x86_64/ file has the same steps).

test_mem_conversions() binds one guest_memfd to ``nr_memslots`` slots at increasing offsets
(lines 399-402), and handle_exit_hypercall() converts ranges with KVM_SET_MEMORY_ATTRIBUTES
(lines 306-308) for the guest's test_ranges (lines 112-120). The guest's data checks need a
guest; here each conversion is followed by one access per page edge of the range, which must be
served from guest_memfd while private and from the host mapping while shared.
"""

from __future__ import annotations

import pytest

import kvmcore
from kvmcore.abi import KVM_MEM_GUEST_MEMFD, KVM_MEMORY_ATTRIBUTE_PRIVATE

SZ_2M = 0x200000
PAGE_SIZE = 0x1000
BASE_DATA_SLOT = 10  # line 25
BASE_DATA_GPA = 1 << 32  # line 26
PER_CPU_DATA_SIZE = SZ_2M + PAGE_SIZE  # line 27
TEST_RANGES = [(0, PAGE_SIZE), (0, SZ_2M), (PAGE_SIZE, PAGE_SIZE), (PAGE_SIZE, SZ_2M), (SZ_2M, PAGE_SIZE)]  # lines 115-119


def setup(kernel: str, nr_vcpus: int, nr_memslots: int) -> tuple[kvmcore.VCPU, int]:
    vm = kvmcore.VM("x86", kernel=kernel, proposals=(), vm_type="sw_protected")  # lines 381-384
    per_cpu_size = -(-PER_CPU_DATA_SIZE // SZ_2M) * SZ_2M  # align_up(PER_CPU_DATA_SIZE, alignment), line 376
    memfd_size = per_cpu_size * nr_vcpus
    slot_size = memfd_size // nr_memslots
    assert slot_size * nr_memslots == memfd_size  # line 390
    memfd = vm.create_guest_memfd(memfd_size)  # line 397
    for i in range(nr_memslots):  # lines 399-402: vm_mem_add(..., KVM_MEM_GUEST_MEMFD, memfd, slot_size * i)
        vm.set_user_memory_region(BASE_DATA_SLOT + i, BASE_DATA_GPA + slot_size * i, slot_size,
                                  flags=KVM_MEM_GUEST_MEMFD, guest_memfd=memfd, guest_memfd_offset=slot_size * i)
    return vm.create_vcpu(), memfd


def access(vcpu: kvmcore.VCPU, gpa: int) -> kvmcore.FaultResult:
    vcpu.vm.stage2.unmap_range(gpa >> 12, (gpa >> 12) + 1)  # fault again after earlier mappings
    return vcpu.handle_fault(vcpu.vm.arch.encode_fault(vcpu, kvmcore.Access(gpa, "write")))


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.3"])
@pytest.mark.parametrize(("nr_vcpus", "nr_memslots"), [(1, 1), (2, 1), (2, 2), (4, 2)])
def test_mem_conversions(kernel, nr_vcpus, nr_memslots) -> None:
    vcpu, memfd = setup(kernel, nr_vcpus, nr_memslots)
    vm = vcpu.vm
    gmem = vm.guest_memfd(memfd)
    per_cpu_size = 2 * SZ_2M
    for cpu in range(nr_vcpus):
        base = BASE_DATA_GPA + cpu * per_cpu_size
        for offset, size in TEST_RANGES:
            gpa = base + offset
            for private in (True, False):  # guest_map_private() then guest_map_shared(), lines 147-204
                vm.set_memory_attributes(gpa, size, KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)  # line 307
                for page in (gpa, gpa + size - PAGE_SIZE):
                    res = access(vcpu, page)
                    assert (res.ret, res.fault.is_private) == (0, private), (hex(page), res.outcome)
                    if private:
                        # served from the guest_memfd page bound at this gpa's offset
                        assert res.mapped is not None
                        assert res.mapped.pfn == gmem.pfn_base + ((page - BASE_DATA_GPA) >> 12)
