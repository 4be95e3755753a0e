"""``gfn_to_memslot()`` on a VM with many memslots (found by mutating ``kvmcore/kvm/memslot.py``).

Above 64 memslots ``Memslots.find`` answers through a per-region cache (512 pages per region)
in front of the binary search; the answer must stay ``search_memslots()``'s: the slot whose
``[base_gfn, base_gfn + npages)`` holds the gfn, or none. These tests fail under changes to
the cache's range check and to its reset when the memslots change, which left the suite green.
"""

from __future__ import annotations

import kvmcore

NSLOTS = 70  # more than the 64 above which the cache is used


def many_slots() -> kvmcore.VM:
    """70 one-page slots at gfns 0x1000, 0x1002, ... 0x108A: all in region 0x8 (gfn >> 9),
    each followed by a one-page hole."""
    vm = kvmcore.VM("x86")
    for i in range(NSLOTS):
        vm.set_user_memory_region(i, (0x1000 + 2 * i) << 12, 0x1000)
    return vm


def test_each_gfn_finds_its_own_slot_through_the_cache() -> None:
    vm = many_slots()
    for _ in range(2):  # the second pass answers from the cache
        for i in range(NSLOTS):
            gfn = 0x1000 + 2 * i
            assert vm.gfn_to_memslot(gfn) is vm.memslots.by_id[i]
            assert vm.gfn_to_memslot(gfn + 1) is None  # the hole after it
            assert vm.gfn_to_memslot(gfn - 1) is None  # the hole before it (0xFFF for slot 0)


def test_the_cache_forgets_a_deleted_or_moved_slot() -> None:
    vm = many_slots()
    slot5 = vm.gfn_to_memslot(0x100A)  # slot 5, now cached for region 0x8
    assert slot5 is vm.memslots.by_id[5]
    vm.set_user_memory_region(5, 0x100A << 12, 0)  # KVM_MR_DELETE
    assert vm.gfn_to_memslot(0x100A) is None
    vm.set_user_memory_region(5, 0x9000 << 12, 0x1000)  # slot 5 again, elsewhere
    vm.gfn_to_memslot(0x9000)
    vm.set_user_memory_region(5, 0x9000 << 12, 0)
    vm.set_user_memory_region(5, 0x100A << 12, 0x1000)
    assert vm.gfn_to_memslot(0x9000) is None
    assert vm.gfn_to_memslot(0x100A) is vm.memslots.by_id[5]
