"""The memory-fault exit designs of the v3 review thread (docs/designs.md), byte by byte.

Every expected value below is worked out by hand from the design's rules (the working is in the
comments), never from kvmcore's output. The arm64 registers are built by hand from the Arm ARM's
ESR_EL2/HPFAR_EL2 layouts, so the ESR words can be checked bit by bit.

The one guest access most tests use, arm64, 4K granule:

  a 32-bit store (STR W1, [X0]) to IPA 0x4000_1008, stage-2 translation fault at level 3
  ESR_EL2  = EC 0x24 (DABT_LOW) << 26       = 0x9000_0000
           | IL (bit 25)                    = 0x0200_0000
           | ISV (bit 24)                   = 0x0100_0000
           | SAS = 2 (bits 23:22, 4 bytes)  = 0x0080_0000
           | SRT = 1 (bits 20:16, W1)       = 0x0001_0000
           | WnR (bit 6)                    = 0x0000_0040
           | DFSC 0x07 (translation, L3)    = 0x0000_0007
           = 0x9381_0047
  HPFAR_EL2 = FIPA (IPA >> 12) << 4 = 0x40001 << 4 = 0x40_0010;  FAR_EL2 = 0x4000_1008
  sanitised ESR (docs/designs.md: keep EC, IL, WnR, CM, S1PTW, FnV, FSC, six ISS2 bits; drop the
  instruction syndrome ISV/SAS/SRT) = 0x9000_0000 | 0x0200_0000 | 0x40 | 0x07 = 0x9200_0047
"""

from __future__ import annotations

import struct

import pytest

import kvmcore
from kvmcore import abi

ESR_STORE = 0x9381_0047
ESR_STORE_SANITISED = 0x9200_0047
STORE = {"esr": ESR_STORE, "far": 0x4000_1008, "hpfar": 0x40_0010}
# the same access as a load: WnR clear -> 0x9381_0007
LOAD = {"esr": 0x9381_0007, "far": 0x4000_1008, "hpfar": 0x40_0010}
# an instruction fetch from IPA 0x4000_1008: EC 0x20 (IABT_LOW) << 26 = 0x8000_0000, IL, IFSC 0x07
FETCH = {"esr": 0x8200_0007, "far": 0x4000_1008, "hpfar": 0x40_0010}

PATTERN = 0xA5  # what kvm_run holds after memory_fault.size before the fault (bytes 56-95)


def userfault_vm(arch: str, proposals: tuple[str, ...] | None) -> tuple[kvmcore.VM, kvmcore.VCPU]:
    """2 MiB of RAM at 0x4000_0000, every page's userfault bit set; kvm_run bytes 56-95 = 0xA5."""
    vm = kvmcore.VM(arch, proposals=proposals)
    bitmap = bytearray(64)
    vm.set_user_memory_region(0, 0x4000_0000, 2 << 20, flags=abi.KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    kvmcore.set_userfault_bits(bitmap, range(512))
    vcpu = vm.create_vcpu()
    raw = bytearray(bytes(vcpu.kvm_run))
    raw[56:96] = bytes([PATTERN]) * 40
    vcpu.kvm_run = abi.kvm_run.from_buffer_copy(bytes(raw))
    return vm, vcpu


def exit_bytes(vcpu: kvmcore.VCPU) -> tuple[int, int, int, int, bytes]:
    """exit_reason (offset 8, u32), memory_fault flags/gpa/size (32/40/48, u64), bytes 56-95."""
    data = bytes(vcpu.kvm_run)
    (reason,) = struct.unpack_from("<I", data, 8)
    flags, gpa, size = struct.unpack_from("<QQQ", data, 32)
    return reason, flags, gpa, size, data[56:96]


UNTOUCHED = bytes([PATTERN]) * 40


# --- arm64: one store under each design ------------------------------------------------------------
# Common to every design: KVM_RUN returns -EFAULT (14), exit_reason 39, gpa = gfn << 12 =
# 0x40001 << 12 = 0x4000_1000, size = PAGE_SIZE = 0x1000, and kvm_do_userfault() ORs in
# USERFAULT (bit 4, 0x10) after the helper, in every design (a software bit: common code's).
CASES = [
    # upstream helper (no helper proposal): flags = PRIVATE? no -> 0, | USERFAULT = 0x10;
    # nothing is written after size.
    (("userfault",), 0x10, UNTOUCHED),
    # v3's helper: the same bytes as upstream for this call site.
    (("userfault", "v3-helper"), 0x10, UNTOUCHED),
    # v3 + kvmcore's syndrome (the default): the helper clears bytes 56-95, the arm64 wrapper
    # writes flags u32 = VALID (1) @56, arch u32 = ARM64 (1) @60, word0 @64 = sanitised ESR,
    # word1 @72 = IPA | FAR[11:0] = 0x4000_1000 | 0x008 = 0x4000_1008, words 2-3 = 0.
    (None, 0x10, struct.pack("<IIQQQQ", 1, 1, ESR_STORE_SANITISED, 0x4000_1008, 0, 0)),
    # the compromise: common zeroes flags, arm64's hook adds nothing for a shared access
    # ("the arm64 hook is empty"), USERFAULT after: 0x10; no syndrome.
    (("userfault", "arch-hook"), 0x10, UNTOUCHED),
    # Oliver's design: as the compromise, plus memory_fault.esr (u64 @56) = sanitised ESR;
    # bytes 64-95 are not the design's and stay as they were.
    (("userfault", "arch-hook", "arm64-esr"), 0x10, struct.pack("<Q", ESR_STORE_SANITISED) + bytes([PATTERN]) * 32),
    # rwx-flags with v3's helper: WRITE (bit 1, 0x2) for a store: 0x10 | 0x2 = 0x12.
    (("userfault", "v3-helper", "rwx-flags"), 0x12, UNTOUCHED),
    # rwx-flags with the compromise: arm64's hook computes WRITE from ESR.WnR itself: 0x12.
    (("userfault", "arch-hook", "rwx-flags"), 0x12, UNTOUCHED),
    # annotate-efault changes nothing for an exit that is already annotated: 0x10.
    (("userfault", "v3-helper", "annotate-efault"), 0x10, UNTOUCHED),
]


@pytest.mark.parametrize("proposals,flags,after", CASES, ids=lambda v: "+".join(v) if isinstance(v, tuple) else None)
def test_arm64_store_under_each_design(proposals, flags, after) -> None:
    vm, vcpu = userfault_vm("arm64", proposals)
    res = vcpu.handle_fault(STORE)
    assert (res.ret, res.outcome) == (-14, "userfault")
    assert exit_bytes(vcpu) == (39, flags, 0x4000_1000, 0x1000, after)


@pytest.mark.parametrize("raw,bit", [(LOAD, 0x1), (STORE, 0x2), (FETCH, 0x4)], ids=["read", "write", "exec"])
@pytest.mark.parametrize("helper", ["v3-helper", "arch-hook"])
def test_rwx_flags_describe_the_access(raw, bit, helper) -> None:
    # READ = bit 0 (0x1), WRITE = bit 1 (0x2), EXEC = bit 2 (0x4) (Sean, 14 Jun 2023: "R = BIT(0),
    # W = BIT(1), X = BIT(2)"); exactly one per exit, plus USERFAULT 0x10.
    _, vcpu = userfault_vm("arm64", ("userfault", helper, "rwx-flags"))
    vcpu.handle_fault(raw)
    assert vcpu.kvm_run.memory_fault.flags == 0x10 | bit


def test_hook_kvm_arch_prepare_memory_fault_exit_x86_and_riscv_compute_rwx() -> None:
    # x86: the hook reads PFERR_WRITE_MASK from the error code KVM built: WRITE 0x2 | USERFAULT
    # 0x10 = 0x12. RISC-V: scause 23 (store/AMO guest-page fault) -> WRITE: 0x12 too.
    for arch, extra in (("x86", ()), ("riscv", ("riscv-userfault",))):
        vm, vcpu = userfault_vm(arch, ("userfault", "arch-hook", "rwx-flags", *extra))
        raw = vm.arch.encode_fault(vcpu, kvmcore.Access(0x4000_1008, "write"))
        res = vcpu.handle_fault(raw)
        assert res.ret == -14
        assert exit_bytes(vcpu) == (39, 0x12, 0x4000_1000, 0x1000, UNTOUCHED), arch


def test_hook_kvm_arch_prepare_memory_fault_exit_arm64_private_flag() -> None:
    # arm64 with kvmcore's private-memory extension: a shared store to a gfn marked private is a
    # private/shared mismatch -> memory-fault exit, -EFAULT; the access is shared, so the hook
    # adds no PRIVATE: flags 0. The same store marked private (raw key private=1) to shared
    # memory: the hook adds PRIVATE (bit 3) = 0x8. gpa 0x4000_1000, size 0x1000.
    vm = kvmcore.VM("arm64", proposals=("arm64-private", "arch-hook"))
    vm.set_user_memory_region(0, 0x4000_0000, 2 << 20)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({**STORE, "private": 1})
    assert (res.ret, res.outcome) == (-14, "private_mismatch")
    assert exit_bytes(vcpu)[:4] == (39, 0x8, 0x4000_1000, 0x1000)
    vm.set_memory_attributes(0x4000_0000, 2 << 20, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault(STORE)
    assert (res.ret, res.outcome) == (-14, "private_mismatch")
    assert exit_bytes(vcpu)[:4] == (39, 0x0, 0x4000_1000, 0x1000)


# --- annotate-efault --------------------------------------------------------------------------------
def _unmapped(arch: str, proposals: tuple[str, ...]) -> tuple[kvmcore.VM, kvmcore.VCPU]:
    """A RAM slot at 0x4000_0000 whose host memory was munmap()ed: no VMA behind the hva."""
    vm = kvmcore.VM(arch, proposals=proposals)
    slot = vm.set_user_memory_region(0, 0x4000_0000, 2 << 20)
    assert slot is not None
    vm.host.munmap(slot.userspace_addr, 2 << 20)
    return vm, vm.create_vcpu()


def test_annotate_efault_arm64_no_vma_reports_size_0() -> None:
    # Without the design: "Failed to find VMA", bare -EFAULT, exit_reason stays KVM_EXIT_UNKNOWN.
    _, vcpu = _unmapped("arm64", ("v3-helper",))
    res = vcpu.handle_fault(STORE)
    assert (res.ret, res.outcome, res.exit_reason) == (-14, "no_vma", 0)
    # With it (Anish Moorthy, v2 3/3, 9 Aug 2024): kvm_prepare_memory_fault_exit(vcpu, fault_ipa,
    # 0, ...): gpa = fault_ipa = HPFAR IPA = 0x4000_1000, size 0 ("unknown size"), flags 0
    # (is_private false).
    _, vcpu = _unmapped("arm64", ("v3-helper", "annotate-efault"))
    res = vcpu.handle_fault(STORE)
    assert (res.ret, res.outcome) == (-14, "no_vma")
    assert exit_bytes(vcpu)[:4] == (39, 0x0, 0x4000_1000, 0x0)


def test_annotate_efault_arm64_no_pfn_reports_the_vma_page_size() -> None:
    # A store to RAM the host maps read-only: hva_to_pfn() fails (KVM_PFN_ERR_FAULT) after the
    # mapping size is known (4K host pages -> vma_pagesize 0x1000): gpa = fault_ipa 0x4000_1000,
    # size 0x1000, flags 0; with rwx-flags too, WRITE: 0x2.
    for proposals, flags in ((("v3-helper", "annotate-efault"), 0x0), (("v3-helper", "annotate-efault", "rwx-flags"), 0x2)):
        vm = kvmcore.VM("arm64", proposals=proposals)
        hva = vm.host.mmap(2 << 20, kvmcore.PROT_READ)
        vm.set_user_memory_region(0, 0x4000_0000, 2 << 20, userspace_addr=hva)
        vcpu = vm.create_vcpu()
        res = vcpu.handle_fault(STORE)
        assert (res.ret, res.outcome) == (-14, "efault")
        assert exit_bytes(vcpu)[:4] == (39, flags, 0x4000_1000, 0x1000)


@pytest.mark.parametrize("arch", ["x86", "riscv"])
def test_annotate_efault_common_fallback(arch: str) -> None:
    # x86: kvm_handle_error_pfn()'s final -EFAULT (no VMA) gets kvm_mmu_prepare_memory_fault_exit()
    # (Anish, [PATCH 1/3] 2 Aug 2024): gpa = gfn << 12 = 0x4000_1000, size PAGE_SIZE 0x1000,
    # flags 0 (shared). RISC-V has no patch: kvmcore's common fallback gives the same bytes.
    vm, vcpu = _unmapped(arch, ("v3-helper",))
    raw = vm.arch.encode_fault(vcpu, kvmcore.Access(0x4000_1008, "write"))
    assert vcpu.handle_fault(raw).exit_reason == 0  # bare without the design
    vm, vcpu = _unmapped(arch, ("v3-helper", "annotate-efault"))
    res = vcpu.handle_fault(raw)
    assert res.ret == -14
    assert exit_bytes(vcpu)[:4] == (39, 0x0, 0x4000_1000, 0x1000)


# --- selection and refusal ---------------------------------------------------------------------------
def test_defaults_are_v3_with_the_syndrome() -> None:
    design = kvmcore.VM("x86").exit_design
    assert (design.helper, design.syndrome, design.rwx, design.arm64_esr, design.annotate_efault) == (
        "v3-helper", True, False, False, False)
    assert kvmcore.VM("x86", proposals=()).exit_design.helper == "upstream"


def test_designs_is_an_alias_of_proposals() -> None:
    vm = kvmcore.VM("arm64", designs=("userfault", "arch-hook"))
    assert vm.proposals == {"userfault", "arch-hook"}
    with pytest.raises(ValueError, match="give proposals= or designs="):
        kvmcore.VM("arm64", proposals=(), designs=())


@pytest.mark.parametrize(
    "arch,proposals,message",
    [
        ("arm64", ("v3-helper", "arch-hook"), "'arch-hook' and 'v3-helper' conflict: both say who computes memory_fault.flags"),
        ("arm64", ("syndrome", "arm64-esr"), "'arm64-esr' and 'syndrome' conflict: both put data right after memory_fault.size, at kvm_run offset 56"),
        ("x86", ("arm64-esr",), "'arm64-esr' applies to arm64 only, not 'x86': ESR_EL2 is arm64's exception syndrome register"),
        ("riscv", ("arm64-esr",), "not 'riscv': ESR_EL2"),
    ],
)
def test_refused_with_the_reason(arch, proposals, message) -> None:
    with pytest.raises(ValueError) as info:
        kvmcore.VM(arch, proposals=proposals)
    assert message in str(info.value)


def test_a_plugin_that_does_not_declare_a_design_is_refused() -> None:
    import toyarch

    with pytest.raises(ValueError, match=r"arch 'toy' does not implement 'arch-hook' \(its ArchInfo.designs: "
                       r"annotate-efault, rwx-flags, v3-helper\)"):
        kvmcore.VM(toyarch, proposals=("arch-hook",))


# --- ownership: who may write what, per design -------------------------------------------------------
class _RogueWrapper:
    """A wrapper that sets RWX bits itself: the flags are common code's (or the hook's)."""

    @kvmcore.hookimpl(wrapper=True)
    def prepare_memory_fault_exit(self, vcpu, fault):
        common = yield
        vcpu.kvm_run.memory_fault.flags |= abi.KVM_MEMORY_EXIT_FLAG_WRITE
        return common


class _RogueHook:
    """An arch hook that sets the software USERFAULT bit, common code's."""

    @kvmcore.hookimpl
    def kvm_arch_prepare_memory_fault_exit(self, vcpu, fault):
        vcpu.kvm_run.memory_fault.flags |= abi.KVM_MEMORY_EXIT_FLAG_USERFAULT


def _with_plugin(plugin, proposals):
    arch = kvmcore.load_arch("arm64")
    arch.pm.register(plugin)
    try:
        vm, vcpu = userfault_vm("arm64", proposals)
        with pytest.raises(kvmcore.FaultContractError) as info:
            vcpu.handle_fault(STORE)
        return str(info.value)
    finally:
        arch.pm.unregister(plugin)


def test_a_wrapper_that_writes_flags_breaks_the_designs_rule() -> None:
    text = _with_plugin(_RogueWrapper(), ("userfault", "v3-helper"))
    assert "memory_fault.flags" in text
    assert "under design 'v3-helper' common code owns exit_reason, flags, gpa and size; wrappers may write nothing in kvm_run" in text
    text = _with_plugin(_RogueWrapper(), ("userfault", "arch-hook", "arm64-esr"))
    assert "under design 'arch-hook+arm64-esr' the arch's kvm_arch_prepare_memory_fault_exit() computes flags bits 0-3" in text


def test_an_arch_hook_that_sets_userfault_breaks_the_compromise() -> None:
    text = _with_plugin(_RogueHook(), ("userfault", "arch-hook"))
    assert "kvm_arch_prepare_memory_fault_exit: memory_fault.flags" in text
    assert "only bits 0x8" in text and "RWX bits 0-2 stay reserved without rwx-flags" in text
    assert "found 0x10" in text


def test_upstream_gmem_abort_passes_its_own_gpa_on_16k() -> None:
    # arm64, 16K granule (PAGE_SHIFT 14), a guest_memfd slot at 0x4000_0000 whose second 16K page
    # (file offset 0x4000) is poisoned. A store to IPA 0x4000_5008: HPFAR = 0x40005 << 4 = 0x40_0050,
    # fault_ipa = 0x4000_5000, gfn = 0x4000_5008 >> 14 = 0x10001.
    # kvm_gmem_get_pfn() fails with -EHWPOISON (133); gmem_abort() (7.3 arch/arm64/kvm/mmu.c) calls
    # kvm_prepare_memory_fault_exit(vcpu, fault_ipa, PAGE_SIZE, write, exec, false):
    #   upstream: gpa = fault_ipa = 0x4000_5000, size = PAGE_SIZE = 0x4000, flags 0
    #   v3-helper: gpa = gfn << 14 = 0x10001 << 14 = 0x4000_4000, size 0x4000, flags 0
    for proposals, gpa in (((), 0x4000_5000), (("v3-helper",), 0x4000_4000)):
        vm = kvmcore.VM("arm64", proposals=proposals, granule="16K")
        fd = vm.create_guest_memfd(2 << 20, abi.GUEST_MEMFD_FLAG_MMAP)  # arm64 gmem slots are mappable (mmu.c)
        vm.set_user_memory_region(0, 0x4000_0000, 2 << 20, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
        vm.guest_memfd(fd).memory_failure(0x4000)
        vcpu = vm.create_vcpu()
        res = vcpu.handle_fault({"esr": ESR_STORE, "far": 0x4000_5008, "hpfar": 0x40_0050})
        assert (res.ret, res.outcome) == (-133, "gmem_error")
        assert exit_bytes(vcpu)[:4] == (39, 0x0, gpa, 0x4000), proposals


def test_annotate_efault_arm64_612_read_permission_error_reports_size_0() -> None:
    # 6.12 user_mem_abort(): a stage-2 permission fault that is neither a write nor an exec is
    # "Unexpected L2 read permission error", -EFAULT. A load with DFSC 0x0F (permission fault,
    # level 3): ESR = 0x9381_0000 (DABT_LOW, IL, ISV, SAS 2, SRT 1) | 0x0F = 0x9381_000F.
    # Anish's v2 3/3 annotates it before the VMA is known: kvm_prepare_memory_fault_exit(vcpu,
    # fault_ipa, 0, false, false, false): gpa 0x4000_1000, size 0, flags 0; bare without the design.
    load_perm = {"esr": 0x9381_000F, "far": 0x4000_1008, "hpfar": 0x40_0010}
    for proposals, reason in ((("v3-helper",), 0), (("v3-helper", "annotate-efault"), 39)):
        vm = kvmcore.VM("arm64", kernel="6.12", proposals=proposals)
        vm.set_user_memory_region(0, 0x4000_0000, 2 << 20)
        vcpu = vm.create_vcpu()
        res = vcpu.handle_fault(load_perm)
        assert (res.ret, res.outcome, res.exit_reason) == (-14, "read_perm_fault", reason)
        if reason:
            assert exit_bytes(vcpu)[:4] == (39, 0x0, 0x4000_1000, 0x0)


@pytest.mark.parametrize("proposals,flags", [(("arch-hook",), 0x8), (("v3-helper",), 0x8), (("arch-hook", "rwx-flags"), 0xA)])
def test_hook_kvm_arch_prepare_memory_fault_exit_x86_private_from_the_npf_error_code(proposals, flags) -> None:
    # An SNP guest writes private memory the VMM has not converted (attributes say shared):
    # #NPF EXITINFO1 = W (bit 1) 0x2 | U (bit 2) 0x4 | GUEST_FINAL (bit 32) | ENC (bit 34)
    # = 0x5_0000_0006; npf_interception() turns ENC into PFERR_PRIVATE_ACCESS, so the fault is
    # private and kvm_mmu_faultin_pfn() reports the mismatch: -EFAULT, gpa 0x4000_1000, size 0x1000.
    # x86's hook adds PRIVATE (0x8), as v3's common helper does; with rwx-flags also WRITE: 0xA.
    vm = kvmcore.VM("x86", vm_type="snp", proposals=proposals)
    vm.set_user_memory_region(0, 0x4000_0000, 2 << 20)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"vendor": "svm", "error_code": 0x5_0000_0006, "gpa": 0x4000_1008})
    assert (res.ret, res.outcome) == (-14, "private_mismatch")
    assert exit_bytes(vcpu)[:4] == (39, flags, 0x4000_1000, 0x1000)


def test_arm64_esr_in_exits_that_are_not_userfault_or_private() -> None:
    # Oliver's "for every KVM_EXIT_MEMORY_FAULT": (1) a load from a poisoned guest_memfd page
    # (gmem_abort(), -EHWPOISON), (2) with annotate-efault, a store to RAM with no VMA.
    # The load's ESR 0x9381_0007 sanitises to EC 0x24 << 26 | IL | DFSC 0x07 = 0x9200_0007; the
    # store's to 0x9200_0047 (see the module docstring). memory_fault.esr is the u64 at offset 56.
    vm = kvmcore.VM("arm64", proposals=("arch-hook", "arm64-esr"))
    fd = vm.create_guest_memfd(2 << 20, abi.GUEST_MEMFD_FLAG_MMAP)  # arm64 gmem slots are mappable (mmu.c)
    vm.set_user_memory_region(0, 0x4000_0000, 2 << 20, flags=abi.KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.guest_memfd(fd).memory_failure(0x1000)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault(LOAD)
    assert (res.ret, res.outcome) == (-133, "gmem_error")
    data = bytes(vcpu.kvm_run)
    assert struct.unpack_from("<I", data, 8) == (39,)  # exit_reason
    assert struct.unpack_from("<QQQQ", data, 32) == (0x0, 0x4000_1000, 0x1000, 0x9200_0007)

    _, vcpu = _unmapped("arm64", ("arch-hook", "arm64-esr", "annotate-efault"))
    res = vcpu.handle_fault(STORE)
    assert (res.ret, res.outcome) == (-14, "no_vma")
    # flags 0, gpa fault_ipa 0x4000_1000, size 0 ("unknown size"), esr 0x9200_0047
    assert struct.unpack_from("<QQQQ", bytes(vcpu.kvm_run), 32) == (0x0, 0x4000_1000, 0x0, 0x9200_0047)
