"""``kvmcore.Stage2`` behaviour that no other test pinned (found by mutating ``stage2.py``).

Each test fails under a specific change to ``kvmcore/kvm/stage2.py`` that left the rest of the
suite green. Expected values are worked by hand with 4K pages (page_shift 12): a 2 MiB block
is 512 gfns, so gfn 0x40005 lies in the block whose head is gfn 0x40000 (index 0x200 at 2 MiB).
The rule for blocks is ``kvm_pgtable_stage2_map()``'s: installing a block replaces the table of
smaller leaves under it.
"""

from __future__ import annotations

import kvmcore

MiB = 1 << 20


def test_a_block_replaces_the_pages_under_it_and_no_others() -> None:
    s2 = kvmcore.Stage2(12)
    s2.map(0x40005, 0x1005, 4096, False, False)  # a 4K leaf inside the future block
    s2.map(0x40200, 0x1200, 4096, True, False)  # the first page of the next 2 MiB
    assert len(s2) == 2
    # the block is installed from a gfn in its middle (the fault's gfn): head gfn 0x40000,
    # head pfn 0x5005 - 5 = 0x5000
    s2.map(0x40005, 0x5005, 2 * MiB, True, True)
    entry = s2.lookup(0x40005)
    assert (entry.gfn, entry.pfn, entry.size, entry.writable, entry.exec) == (0x40000, 0x5000, 2 * MiB, True, True)
    assert entry.pfn_of(0x40005) == 0x5005
    # the 4K leaf under it is gone, the one in the next 2 MiB stays
    assert len(s2) == 2
    nxt = s2.lookup(0x40200)
    assert (nxt.gfn, nxt.pfn, nxt.size) == (0x40200, 0x1200, 4096)
    assert s2.lookup(0x401FF).size == 2 * MiB


def test_unmap_range_counts_and_stops_at_its_end() -> None:
    s2 = kvmcore.Stage2(12)
    s2.map(0x40000, 0x5000, 2 * MiB, True)  # block [0x40000, 0x40200)
    s2.map(0x40200, 0x1200, 4096, True)
    s2.map(0x40201, 0x1201, 4096, True)
    # [0x40200, 0x40201) holds one leaf; the block ends where the range starts
    assert s2.unmap_range(0x40200, 0x40201) == 1
    assert (s2.lookup(0x40200), s2.lookup(0x40201).gfn, s2.lookup(0x40000).size) == (None, 0x40201, 2 * MiB)
    # a range inside the block zaps the whole block (it overlaps it)
    assert s2.unmap_range(0x40010, 0x40011) == 1
    assert s2.lookup(0x40000) is None
    assert s2.unmap_range(0x40000, 0x40200) == 0
    assert len(s2) == 1
    # a range much wider than the table (searched by scanning the leaves): [0x40100, 0x40201)
    # ends just before the remaining leaf
    assert s2.unmap_range(0x40100, 0x40201) == 0
    assert s2.lookup(0x40201).gfn == 0x40201


def test_set_flags_on_blocks_pages_and_holes() -> None:
    S2_WRITABLE, S2_YOUNG = kvmcore.S2_WRITABLE, kvmcore.S2_YOUNG
    s2 = kvmcore.Stage2(12)
    s2.map(0x40000, 0x5000, 2 * MiB, False, False)  # read-only, non-exec block, young
    s2.map(0x80000, 0x9000, 4096, True, False)  # writable page
    # a gfn in the middle of the block reaches the block's entry
    assert s2.set_flags(0x40123, clear_bits=S2_YOUNG) is True
    entry = s2.lookup(0x40000)
    assert (entry.young, entry.writable, entry.exec) == (False, False, False)  # nothing set by default
    # setting a bit that is already set keeps it
    assert s2.set_flags(0x80000, set_bits=S2_WRITABLE) is True
    assert s2.lookup(0x80000).writable is True
    # nothing mapped: nothing to change
    assert s2.set_flags(0x90000, set_bits=S2_WRITABLE) is False
    assert s2.lookup(0x90000) is None


def test_map_is_executable_unless_told_otherwise() -> None:
    s2 = kvmcore.Stage2(12)
    s2.map(0x10, 0x20, 4096, True)
    assert (s2.lookup(0x10).exec, s2.lookup(0x10).young) == (True, True)


def test_write_protect_range_clears_w_on_overlapping_leaves_only() -> None:
    s2 = kvmcore.Stage2(12)
    for gfn in (0x3F, 0x40, 0x4F, 0x50):
        s2.map(gfn, gfn + 0x1000, 4096, True)
    s2.map(0x200, 0x5000, 2 * MiB, True)  # block [0x200, 0x400)
    s2.map(0x400, 0x7000, 2 * MiB, True)  # block [0x400, 0x600)
    s2.write_protect_range(0x40, 0x50)  # [0x40, 0x50): the first and last page inside
    assert [s2.lookup(g).writable for g in (0x3F, 0x40, 0x4F, 0x50)] == [True, False, False, True]
    # a range touching one gfn of the first block write-protects that whole block, not the next
    s2.write_protect_range(0x3FF, 0x400)
    assert (s2.lookup(0x200).writable, s2.lookup(0x400).writable) == (False, True)
    assert s2.lookup(0x200).exec is True  # only W is cleared


def test_entries_smallest_first_in_gfn_order() -> None:
    s2 = kvmcore.Stage2(12)
    s2.map(0x400, 0x7000, 2 * MiB, False)
    s2.map(0x20, 0x1020, 4096, True)
    s2.map(0x10, 0x1010, 4096, True)
    assert [(e.gfn, e.pfn, e.size, e.writable) for e in s2.entries()] == [
        (0x10, 0x1010, 4096, True), (0x20, 0x1020, 4096, True), (0x400, 0x7000, 2 * MiB, False)]


def test_enabling_dirty_logging_write_protects_the_slot() -> None:
    # 7.3 arch/arm64/kvm/mmu.c:kvm_arch_commit_memory_region(): "if (log_dirty_pages) { ...
    # kvm_mmu_wp_memory_region(kvm, new->id);" (without KVM_DIRTY_LOG_INITIALLY_SET), and
    # KVM_GET_DIRTY_LOG write-protects again what it reports (kvm_get_dirty_log_protect()).
    vm = kvmcore.VM("arm64")
    vm.set_user_memory_region(0, 0x4000_0000, 1 * MiB)
    vm.set_user_memory_region(1, 0x8000_0000, 1 * MiB)
    vcpu = vm.create_vcpu()
    for hpfar in (0x40_0010, 0x40_0020, 0x80_0010):  # STR w1 (translation L3): writable pages
        assert vcpu.handle_fault({"esr": 0x93810047, "hpfar": hpfar}).mapped.writable is True
    vm.set_user_memory_region(0, 0x4000_0000, 1 * MiB, flags=kvmcore.abi.KVM_MEM_LOG_DIRTY_PAGES)
    assert [vm.stage2.lookup(g).writable for g in (0x40001, 0x40002, 0x80001)] == [False, False, True]
    # a write permission fault makes page 1 writable and dirty; KVM_GET_DIRTY_LOG reports it
    # and write-protects it again
    assert vcpu.handle_fault({"esr": 0x9381004F, "hpfar": 0x40_0010}).mapped.writable is True
    assert vm.stage2.lookup(0x40001).writable is True
    assert vm.get_dirty_log(0)[0] == 0x02
    assert vm.stage2.lookup(0x40001).writable is False
