"""Behaviour that differs by kernel version, arch, VM type or proposal, each expected value taken
from the kernel source named in the test (/work/kernel-source/{6.12,7.3}; 6.18 from the host's
own 6.18 and the 2025 patch mails, as docs/versions.md says).

"6.12 kvm_main.c" is virt/kvm/kvm_main.c of Debian's linux-source-6.12, and so on.
"""

from __future__ import annotations

import errno

import pytest

import kvmcore
from kvmcore import KvmError, abi
from kvmcore.abi import (
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

MiB = 1 << 20
ARCHES = ("x86", "arm64", "riscv")
VERSIONS = ("6.12", "6.18", "7.3")


def errno_of(call, *args, **kwargs) -> int:
    with pytest.raises(KvmError) as info:
        call(*args, **kwargs)
    return info.value.errno


def upstream(arch: str, kernel: str = "7.3", **settings) -> kvmcore.VM:
    return kvmcore.VM(arch, kernel=kernel, proposals=(), **settings)


# --- check_memory_region_flags() ---------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("kernel", VERSIONS)
def test_flag_bit_3_is_einval_upstream(arch, kernel) -> None:
    # check_memory_region_flags() (6.12 and 7.3 kvm_main.c): valid_flags never has bit 3;
    # 7.3 include/uapi/linux/kvm.h defines no KVM_MEM_USERFAULT.
    vm = upstream(arch, kernel)
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, flags=KVM_MEM_USERFAULT, userfault_bitmap=bytearray(64)) == errno.EINVAL
    assert vm.check_extension(abi.KVM_CAP_USERFAULT) == 0


def test_userfault_flag_is_where_v3_puts_it() -> None:
    # v3 07/15: check_memory_region_flags() accepts KVM_MEM_USERFAULT when
    # CONFIG_KVM_GENERIC_PAGE_FAULT (x86, arm64); RISC-V only with kvmcore's riscv-userfault.
    for arch in ("x86", "arm64"):
        kvmcore.VM(arch, proposals=["userfault"]).set_user_memory_region(0, 0, MiB, flags=KVM_MEM_USERFAULT, userfault_bitmap=bytearray(64))
    bare = kvmcore.VM("riscv", proposals=["userfault"])
    assert errno_of(bare.set_user_memory_region, 0, 0, MiB, flags=KVM_MEM_USERFAULT, userfault_bitmap=bytearray(64)) == errno.EINVAL
    kvmcore.VM("riscv").set_user_memory_region(0, 0, MiB, flags=KVM_MEM_USERFAULT, userfault_bitmap=bytearray(64))


@pytest.mark.parametrize(("vm_type", "expected"), [("default", None), ("sw_protected", None), ("snp", errno.EINVAL), ("tdx", errno.EINVAL)])
def test_readonly_needs_readonly_mem(vm_type, expected) -> None:
    # check_memory_region_flags(): READONLY only if kvm_arch_has_readonly_mem(kvm), which x86
    # defines as !kvm->arch.has_protected_state (7.3 arch/x86/include/asm/kvm_host.h), set for
    # SNP (svm/sev.c sev_vm_init()) and TDX (vmx/tdx.c).
    vm = upstream("x86", vm_type=vm_type)
    if expected is None:
        vm.set_user_memory_region(0, 0, MiB, flags=KVM_MEM_READONLY)
        assert vm.check_extension(abi.KVM_CAP_READONLY_MEM) == 1
    else:
        assert errno_of(vm.set_user_memory_region, 0, 0, MiB, flags=KVM_MEM_READONLY) == expected
        assert vm.check_extension(abi.KVM_CAP_READONLY_MEM) == 0


@pytest.mark.parametrize(("kernel", "ok"), [("6.12", False), ("6.18", True), ("7.3", True)])
def test_guest_memfd_slot_on_a_default_x86_vm(kernel, ok) -> None:
    # 6.12 check_memory_region_flags(): KVM_MEM_GUEST_MEMFD only if kvm_arch_has_private_mem();
    # 7.3: if IS_ENABLED(CONFIG_KVM_GUEST_MEMFD). The host's 6.18 accepts it on a default VM
    # (reference/realkvm-findings.md: "guest_memfd flags=0 + MEM_GUEST_MEMFD ... read").
    vm = upstream("x86", kernel)
    fd = vm.create_guest_memfd(MiB)
    if ok:
        vm.set_user_memory_region(0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    else:
        assert errno_of(vm.set_user_memory_region, 0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd) == errno.EINVAL
        sw = upstream("x86", kernel, vm_type="sw_protected")
        sw.set_user_memory_region(0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=sw.create_guest_memfd(MiB))


# --- kvm_vm_ioctl_set_memory_region() / kvm_set_memory_region() --------------------------------
@pytest.mark.parametrize(("arch", "limit"), [("x86", 32764), ("arm64", 32767), ("riscv", 32767)])
def test_slot_id_limit_is_kvm_user_mem_slots(arch, limit) -> None:
    # kvm_vm_ioctl_set_memory_region(): (u16)mem->slot >= KVM_USER_MEM_SLOTS -> -EINVAL;
    # KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM (SHRT_MAX) - KVM_INTERNAL_MEM_SLOTS, which
    # x86 sets to 3 (arch/x86/include/asm/kvm_host.h), the generic header to 0.
    vm = upstream(arch)
    vm.set_user_memory_region(limit - 1, 0, 0x1000)
    assert errno_of(vm.set_user_memory_region, limit, 0x1000, 0x1000) == errno.EINVAL
    assert vm.check_extension(abi.KVM_CAP_NR_MEMSLOTS) == limit


def test_x86_smm_address_space() -> None:
    # kvm_set_memory_region(): as_id >= kvm_arch_nr_memslot_as_ids(kvm) -> -EINVAL; x86 (with
    # KVM_SMM): 2 unless kvm_arch_has_private_mem() (7.3 arch/x86/include/asm/kvm_host.h).
    vm = upstream("x86")
    vm.set_user_memory_region(0, 0, MiB)
    smm = vm.set_user_memory_region(1 << 16, 0, MiB)  # same gpa, other address space: no overlap
    assert smm is not None and vm.gfn_to_memslot(0) is vm.memslots.by_id[0]
    assert errno_of(vm.set_user_memory_region, 2 << 16, 0, MiB) == errno.EINVAL
    assert vm.check_extension(abi.KVM_CAP_MULTI_ADDRESS_SPACE) == 2
    for other in (upstream("x86", vm_type="sw_protected"), upstream("arm64")):
        assert errno_of(other.set_user_memory_region, 1 << 16, 0, MiB) == errno.EINVAL
    vm.set_user_memory_region(1 << 16, 0, 0)  # delete works per address space
    assert len(vm.memslots) == 1


@pytest.mark.parametrize(("arch", "end"), [("x86", (1 << 47) - 0x1000), ("arm64", 1 << 48), ("riscv", 1 << 47)])
def test_user_address_range(arch, end) -> None:
    # access_ok(userspace_addr, memory_size): x86 __access_ok() (arch/x86/include/asm/uaccess_64.h)
    # allows addr + size up to USER_PTR_MAX = TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE with 4-level
    # paging (page_64_types.h task_size_max()); asm-generic/access_ok.h: addr + size <= TASK_SIZE_MAX,
    # arm64 1 << VA_BITS (processor.h), RISC-V TASK_SIZE (Sv48: 1 << 47).
    vm = upstream(arch)
    vm.set_user_memory_region(0, 0, 0x1000, userspace_addr=end - 0x1000)
    assert errno_of(vm.set_user_memory_region, 1, 0x1000, 0x1000, userspace_addr=end) == errno.EINVAL


def test_uapi_types_bound_the_values() -> None:
    # struct kvm_userspace_memory_region2: __u32 slot/flags, __u64 addresses and sizes. No ioctl
    # can carry a value outside them, so the model refuses it outright, naming the field.
    vm = upstream("x86")
    with pytest.raises(ValueError, match=r"slot=4294967296.*__u32"):
        vm.set_user_memory_region(1 << 32, 0, 0x1000)
    with pytest.raises(ValueError, match=r"memory_size=-4096"):
        vm.set_user_memory_region(0, 0, -0x1000)


@pytest.mark.parametrize("kernel", VERSIONS)
def test_guest_memfd_slots_are_immutable_upstream(kernel) -> None:
    # kvm_set_memory_region() (6.12 and 7.3): "Private memslots are immutable, they can only be
    # deleted": mem->flags & KVM_MEM_GUEST_MEMFD on an existing slot -> -EINVAL. v3 (userfault)
    # allows flag changes and refuses only a move.
    vm = upstream("x86", kernel, vm_type="sw_protected")
    fd = vm.create_guest_memfd(2 * MiB)
    slot = vm.set_user_memory_region(0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    assert slot is not None
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, slot.userspace_addr, KVM_MEM_GUEST_MEMFD) == errno.EINVAL
    v3 = kvmcore.VM("x86", kernel=kernel, vm_type="sw_protected")
    fd = v3.create_guest_memfd(2 * MiB)
    slot = v3.set_user_memory_region(0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    assert slot is not None
    v3.set_user_memory_region(0, 0, MiB, slot.userspace_addr, KVM_MEM_GUEST_MEMFD | KVM_MEM_USERFAULT, userfault_bitmap=bytearray(64))


# --- kvm_gmem_create() --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "vm_type", "flags", "expected"),
    [
        # 6.12 guest_memfd.c kvm_gmem_create(): u64 valid_flags = 0
        ("6.12", "default", GUEST_MEMFD_FLAG_MMAP, errno.EINVAL),
        ("6.12", "sw_protected", GUEST_MEMFD_FLAG_INIT_SHARED, errno.EINVAL),
        # 6.18 and 7.3: kvm_gmem_get_supported_flags() (include/linux/kvm_host.h): MMAP, and
        # INIT_SHARED if kvm_arch_supports_gmem_init_shared() = !kvm_arch_has_private_mem() on x86
        ("6.18", "default", GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, None),
        ("7.3", "default", GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, None),
        ("7.3", "sw_protected", GUEST_MEMFD_FLAG_MMAP, None),
        ("7.3", "sw_protected", GUEST_MEMFD_FLAG_INIT_SHARED, errno.EINVAL),
        ("7.3", "default", 1 << 2, errno.EINVAL),
    ],
)
def test_guest_memfd_flags(kernel, vm_type, flags, expected) -> None:
    vm = upstream("x86", kernel, vm_type=vm_type)
    if expected is None:
        vm.create_guest_memfd(MiB, flags)
    else:
        assert errno_of(vm.create_guest_memfd, MiB, flags) == expected


def test_guest_memfd_flags_capability() -> None:
    # 6.12 kvm_vm_ioctl_check_extension_generic(): KVM_CAP_GUEST_MEMFD = kvm_arch_has_private_mem(),
    # no KVM_CAP_GUEST_MEMFD_FLAGS; 7.3: 1 and kvm_gmem_get_supported_flags(). The host's 6.18
    # reports KVM_CAP_GUEST_MEMFD_FLAGS = 3 on a default VM (realkvm-findings.md).
    assert upstream("x86", "6.12").check_extension(abi.KVM_CAP_GUEST_MEMFD) == 0
    assert upstream("x86", "6.12", vm_type="sw_protected").check_extension(abi.KVM_CAP_GUEST_MEMFD) == 1
    assert upstream("x86", "6.12").check_extension(abi.KVM_CAP_GUEST_MEMFD_FLAGS) == 0
    assert upstream("x86", "6.18").check_extension(abi.KVM_CAP_GUEST_MEMFD) == 1
    assert upstream("x86", "6.18").check_extension(abi.KVM_CAP_GUEST_MEMFD_FLAGS) == 3
    assert upstream("x86", "7.3", vm_type="snp").check_extension(abi.KVM_CAP_GUEST_MEMFD_FLAGS) == 1


@pytest.mark.parametrize("size", [1 << 63, (1 << 64) - 0x1000])
def test_guest_memfd_size_is_a_loff_t(size) -> None:
    # kvm_gmem_create(): loff_t size = args->size; if (size <= 0 || ...) return -EINVAL: a
    # __u64 of 2**63 or more is negative as a loff_t (6.12 and 7.3 guest_memfd.c).
    assert errno_of(upstream("x86").create_guest_memfd, size) == errno.EINVAL


@pytest.mark.parametrize(
    ("arch", "kernel", "proposals", "expected"),
    [
        # arch/arm64/kvm/Kconfig: 6.12 selects no KVM_PRIVATE_MEM; 7.3 selects KVM_GUEST_MEMFD
        # (since 6.18). Without it KVM_CREATE_GUEST_MEMFD reaches kvm_arch_vm_ioctl(), whose
        # default is -EINVAL on arm64 (arm.c) and RISC-V (vm.c), which never has guest_memfd.
        ("arm64", "6.12", (), errno.EINVAL),
        ("arm64", "6.18", (), None),
        ("arm64", "6.12", ("arm64-private",), None),
        ("riscv", "7.3", (), errno.EINVAL),
        ("riscv", "7.3", ("riscv-gmem",), None),
    ],
)
def test_guest_memfd_exists_per_arch_and_version(arch, kernel, proposals, expected) -> None:
    vm = kvmcore.VM(arch, kernel=kernel, proposals=proposals)
    if expected is None:
        vm.create_guest_memfd(MiB)
    else:
        assert errno_of(vm.create_guest_memfd, MiB) == expected


# --- kvm_gmem_bind() (7.3: kvm_gmem_prepare_memory_region() + kvm_gmem_commit_memory_region()) --
@pytest.mark.parametrize(("kernel", "expected"), [("6.12", errno.EINVAL), ("6.18", errno.EINVAL), ("7.3", errno.EEXIST)])
def test_overlapping_bindings(kernel, expected) -> None:
    # 6.12 guest_memfd.c kvm_gmem_bind(): xa_find() hit -> goto err with r = -EINVAL; 7.3
    # kvm_gmem_commit_memory_region(): -EEXIST ("Return -EEXIST instead of -EINVAL if userspace
    # attempts to bind a gmem range to multiple memslots", KVM guest_memfd changes for 7.2).
    vm = upstream("x86", kernel, vm_type="sw_protected")
    fd = vm.create_guest_memfd(4 * MiB)
    vm.set_user_memory_region(0, 0, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    assert errno_of(vm.set_user_memory_region, 1, 4 * MiB, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd, guest_memfd_offset=MiB) == expected


@pytest.mark.parametrize(("kernel", "expected"), [("6.18", errno.EINVAL), ("7.3", errno.EFAULT)])
def test_7_3_checks_the_binding_after_the_arch(kernel, expected) -> None:
    # 7.3 kvm_set_memslot(): kvm_prepare_memory_region() (arm64: a slot beyond the IPA space is
    # -EFAULT, arch/arm64/kvm/mmu.c) runs before kvm_gmem_commit_memory_region()'s overlap check;
    # 6.18 (as 7.2 kvm_main.c) binds in kvm_set_memory_region() before kvm_set_memslot().
    vm = kvmcore.VM("arm64", kernel=kernel, ipa_bits=32)
    fd = vm.create_guest_memfd(4 * MiB, GUEST_MEMFD_FLAG_MMAP)
    vm.set_user_memory_region(0, 0, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    beyond_ipa = 1 << 32
    assert errno_of(vm.set_user_memory_region, 1, beyond_ipa, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd) == expected


def test_tdx_slot_must_not_reach_the_shared_alias() -> None:
    # 7.3 arch/x86/kvm/x86.c kvm_arch_prepare_memory_region(): kvm_is_gfn_alias(kvm, last gfn)
    # -> -EINVAL; kvm_gfn_direct_bits() is the TDX shared bit (gpaw 52: bit 51).
    vm = upstream("x86", vm_type="tdx")
    vm.set_user_memory_region(0, (1 << 51) - MiB, MiB)  # ends right below the shared bit
    assert errno_of(vm.set_user_memory_region, 1, 1 << 51, 0x1000) == errno.EINVAL


@pytest.mark.parametrize("kernel", ["6.18", "7.3"])
def test_arm64_guest_memfd_slots_must_be_mappable(kernel) -> None:
    # 7.3 arch/arm64/kvm/mmu.c kvm_arch_prepare_memory_region(): "Only support guest_memfd backed
    # memslots with mappable memory": kvm_slot_has_gmem(new) && !kvm_memslot_is_gmem_only(new)
    # -> -EINVAL (since "KVM: arm64: Enable support for guest_memfd backed memory", 6.18).
    vm = upstream("arm64", kernel)
    fd = vm.create_guest_memfd(2 * MiB)
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd) == errno.EINVAL
    mappable = vm.create_guest_memfd(2 * MiB, GUEST_MEMFD_FLAG_MMAP)
    vm.set_user_memory_region(0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=mappable)
    # kvmcore's arm64-private proposal: private memory lives in unmappable guest_memfd
    private = kvmcore.VM("arm64", kernel=kernel)
    private.set_user_memory_region(0, 0, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=private.create_guest_memfd(MiB))


@pytest.mark.parametrize("kernel", VERSIONS)
def test_guest_memfd_file_checks(kernel) -> None:
    # kvm_gmem_bind() (6.12) / kvm_gmem_prepare_memory_region() (7.3): fget(fd) fails -> -EBADF;
    # file->f_op != &kvm_gmem_fops -> -EINVAL; f->kvm != kvm -> -EINVAL.
    vm = upstream("x86", kernel, vm_type="sw_protected")
    other = upstream("x86", kernel, vm_type="sw_protected")
    theirs = other.create_guest_memfd(MiB)
    args = dict(flags=KVM_MEM_GUEST_MEMFD)
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, guest_memfd=theirs, **args) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, guest_memfd=vm.fd, **args) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, guest_memfd=1 << 30, **args) == errno.EBADF
    mine = vm.create_guest_memfd(MiB)
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, guest_memfd=mine, guest_memfd_offset=0x800, **args) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 0, 0, MiB, guest_memfd=mine, guest_memfd_offset=0x1000, **args) == errno.EINVAL
    assert len(vm.memslots) == 0


@pytest.mark.parametrize("kernel", VERSIONS)
def test_get_dirty_log_errnos(kernel) -> None:
    # kvm_get_dirty_log_protect() (6.12 and 7.3 kvm_main.c): as_id/id out of range -> -EINVAL;
    # !memslot || !memslot->dirty_bitmap -> -ENOENT (a slot without LOG_DIRTY_PAGES included).
    vm = upstream("arm64", kernel)
    vm.set_user_memory_region(0, 0, MiB)
    assert errno_of(vm.get_dirty_log, 0) == errno.ENOENT
    assert errno_of(vm.get_dirty_log, 5) == errno.ENOENT
    assert errno_of(vm.get_dirty_log, 32767) == errno.EINVAL
    assert errno_of(vm.get_dirty_log, 1 << 16) == errno.EINVAL
    vm.set_user_memory_region(1, MiB, MiB, flags=kvmcore.abi.KVM_MEM_LOG_DIRTY_PAGES)
    assert vm.get_dirty_log(1) == bytes(32)  # 256 pages, one bit each


# --- kvm_vm_ioctl_set_mem_attributes() ---------------------------------------------------------
@pytest.mark.parametrize("kernel", VERSIONS)
def test_memory_attributes_need_private_memory(kernel) -> None:
    # kvm_vm_ioctl_set_mem_attributes(): attributes & ~kvm_supported_mem_attributes(kvm) -> -EINVAL,
    # and kvm_supported_mem_attributes() is PRIVATE only if kvm_arch_has_private_mem(kvm)
    # (6.12 and 7.3 kvm_main.c); attributes 0 is fine on any VM with the ioctl.
    vm = upstream("x86", kernel)
    assert errno_of(vm.set_memory_attributes, 0, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE) == errno.EINVAL
    vm.set_memory_attributes(0, 0x1000, 0)
    assert vm.check_extension(abi.KVM_CAP_MEMORY_ATTRIBUTES) == 0
    sw = upstream("x86", kernel, vm_type="sw_protected")
    sw.set_memory_attributes(0, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert sw.check_extension(abi.KVM_CAP_MEMORY_ATTRIBUTES) == KVM_MEMORY_ATTRIBUTE_PRIVATE


@pytest.mark.parametrize("arch", ["arm64", "riscv"])
def test_memory_attributes_are_x86_only_upstream(arch) -> None:
    # KVM_SET_MEMORY_ATTRIBUTES is under CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES, which only
    # arch/x86/kvm/Kconfig selects (6.12 and 7.3); arm64/RISC-V kvm_arch_vm_ioctl() -> -EINVAL.
    vm = upstream(arch)
    assert errno_of(vm.set_memory_attributes, 0, 0x1000, 0) == errno.EINVAL
    private = kvmcore.VM(arch)  # kvmcore's arm64-private / riscv-private
    private.set_memory_attributes(0, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)


# --- KVM_ENABLE_CAP ------------------------------------------------------------------------------
def test_enable_cap() -> None:
    # kvm_vm_ioctl_enable_cap_generic() (6.12 = 7.3): HALT_POLL needs flags 0 and an unsigned int;
    # anything not handled goes to the arch's kvm_vm_ioctl_enable_cap(), whose default is -EINVAL.
    arm = upstream("arm64")
    arm.enable_cap(abi.KVM_CAP_ARM_NISV_TO_USER)
    arm.enable_cap(abi.KVM_CAP_HALT_POLL, 1000)
    assert errno_of(arm.enable_cap, abi.KVM_CAP_HALT_POLL, 1 << 32) == errno.EINVAL
    assert errno_of(arm.enable_cap, abi.KVM_CAP_HALT_POLL, 1, flags=1) == errno.EINVAL
    assert errno_of(arm.enable_cap, abi.KVM_CAP_GUEST_MEMFD) == errno.EINVAL
    assert errno_of(upstream("x86").enable_cap, abi.KVM_CAP_ARM_NISV_TO_USER) == errno.EINVAL
    # v3's KVM_CAP_USERFAULT docs: "-EINVAL on direct KVM_ENABLE_CAP"
    assert errno_of(kvmcore.VM("x86").enable_cap, abi.KVM_CAP_USERFAULT) == errno.EINVAL


# --- the memory fault exit -------------------------------------------------------------------------
def test_upstream_exit_has_no_syndrome() -> None:
    # Upstream kvm_prepare_memory_fault_exit() (include/linux/kvm_host.h, 6.12-7.3) writes
    # exit_reason, flags, gpa and size only: kvm_run bytes after memory_fault.size keep whatever an
    # earlier exit left there (here a stale 0xDEAD), and no wrapper fills kvmcore's syndrome. With
    # the syndrome proposal (the default) the helper clears the extension and arm64 fills it.
    for proposals, expect_words, expect_flags in ((None, None, 1), ((), [0xDEAD, 0, 0, 0], 0)):
        vm = kvmcore.VM("arm64", proposals=proposals)
        vm.set_user_memory_region(0, 0x4000_0000, 2 * MiB)
        vcpu = vm.create_vcpu()
        vcpu.kvm_run.syndrome.syndrome[0] = 0xDEAD  # stale bytes from an earlier exit
        fault = vm.arch.decode_fault(vcpu, {"esr": 0x93C08007, "far": 0x4000_1008, "hpfar": 0x400010})
        fault.slot = vm.gfn_to_memslot(fault.gfn)
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)
        words = list(vcpu.kvm_run.syndrome.syndrome)
        if expect_words is None:
            assert words[0] != 0xDEAD and words[0] != 0, words  # the sanitised ESR replaced it
        else:
            assert words == expect_words
        assert vcpu.kvm_run.syndrome.flags == expect_flags


# --- the conformance kit's layout on upstream VMs -------------------------------------------------
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("kernel", VERSIONS)
def test_conformance_layout_in_upstream_mode(arch, kernel) -> None:
    # Upstream: no KVM_MEM_USERFAULT anywhere; guest_memfd slots where the kernel has them on a
    # default VM (x86-64 and arm64 from 6.18, mappable on arm64; none on RISC-V).
    from kvmcore.testing._kit import setup_default_layout

    vm = upstream(arch, kernel)
    layout = setup_default_layout(vm)
    has_gmem = arch != "riscv" and kernel != "6.12"
    assert sorted(layout.missing) == (["userfault"] if has_gmem else ["gmem", "userfault"])
    assert len(vm.memslots) == (3 if has_gmem else 2)
