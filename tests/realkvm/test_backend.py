"""The backend against the running kernel (skipped where /dev/kvm is missing). Expected values
come from the kernel source (cited) and from the host measurements in
/work/shared/reference/realkvm-findings.md."""

from __future__ import annotations

import errno

import pytest
from needs_kvm import needs_kvm

from kvmcore import KvmError, abi, uapi
from kvmcore.realkvm import guest as g
from kvmcore.realkvm.hostmem import PAGE_SIZE, HostMapping

pytestmark = needs_kvm


def test_api_version_and_capabilities(system) -> None:
    assert system.api_version() == 12  # KVM_API_VERSION, include/uapi/linux/kvm.h
    assert system.vcpu_mmap_size >= abi.KVM_RUN_SIZE
    assert system.check_extension(uapi.KVM_CAP_USER_MEMORY2) == 1
    # an unknown capability is 0, not an error (kvm_vm_ioctl_check_extension_generic())
    assert system.check_extension(0x7FFF_0000) == 0


def test_errors_are_kvmerror_with_the_kernels_errno(system) -> None:
    # kvm_dev_ioctl_create_vm() -> kvm_arch_init_vm(): an unknown VM type is EINVAL (x86.c)
    with pytest.raises(KvmError) as info:
        system.create_vm(0x7F)
    assert info.value.errno == errno.EINVAL and "KVM_CREATE_VM" in str(info.value)
    with system.create_vm() as vm:
        # check_memory_region_flags(): bit 31 is no memslot flag
        with pytest.raises(KvmError) as info:
            vm.set_user_memory_region(0, 0, PAGE_SIZE, 0, flags=1 << 31)
        assert info.value.errno == errno.EINVAL
        # kvm_gmem_create(): size 0 is EINVAL
        with pytest.raises(KvmError) as info:
            vm.create_guest_memfd(0)
        assert info.value.errno == errno.EINVAL


def test_objects_close_what_they_made(system) -> None:
    vm = system.create_vm()
    vcpu = vm.create_vcpu()
    gmem = vm.create_guest_memfd(PAGE_SIZE)
    vcpu.stats()
    fds = (vm.fd, vcpu.fd, gmem.fd)
    vm.close()
    assert vm.closed and vcpu.closed and gmem.closed
    import os

    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    with pytest.raises(KvmError) as info:
        vcpu.run  # noqa: B018
    assert info.value.errno == errno.EBADF


def test_stats_name_the_page_fault_counters(system) -> None:
    with system.create_vm() as vm:
        stats = vm.create_vcpu().stats()
        values = stats.read()
        # every x86 vCPU has these (arch/x86/kvm/x86.c: kvm_vcpu_stats_desc[])
        for name in ("pf_taken", "pf_fixed", "pf_emulate", "insn_emulation", "mmio_exits", "exits"):
            assert name in values and values[name] == 0


def test_noslot_read_is_an_mmio_exit(system) -> None:
    host = g.detect_host()
    with g.Guest(system, host, "read", g.NOSLOT_GPA, 4) as guest:
        r = guest.run()
    # no memslot: kvm_handle_noslot_fault() -> emulation -> KVM_EXIT_MMIO (findings table, both CPLs)
    assert (r.ret, r.exit_reason, r.completed) == (0, abi.KVM_EXIT_MMIO, False)
    assert r.mmio == {"phys_addr": g.NOSLOT_GPA, "len": 4, "is_write": 0, "data": 0}
    assert r.stats.get("mmio_exits") == 1


def test_read_write_slot_completes_and_the_write_lands(system) -> None:
    host = g.detect_host()
    with g.Guest(system, host, "write", g.TEST_GPA, 8) as guest, HostMapping(PAGE_SIZE) as page:
        assert guest.vm is not None
        guest.vm.set_user_memory_region(g.TEST_SLOT, g.TEST_GPA, PAGE_SIZE, page.addr)
        r = guest.run()
        assert r.completed and r.exit_reason == abi.KVM_EXIT_IO
        assert page.read(0, 8) == (0x1122_3344_5566_7788).to_bytes(8, "little")


def test_munmapped_backing_is_a_bare_efault(system) -> None:
    # kvm_handle_error_pfn() (arch/x86/kvm/mmu/mmu.c): a pfn error other than RO/HWPOISON/SIGPENDING
    # returns -EFAULT with no memory_fault exit; exit_reason stays 0 (findings, CPL3 column)
    host = g.detect_host()
    if host.cpl == 0 and host.flavour == "pvm":  # pragma: no cover - only with a forced CPL
        pytest.skip("the emulated CPL 0 path turns this into MMIO")
    with g.Guest(system, host, "read", g.TEST_GPA, 8) as guest, HostMapping(PAGE_SIZE) as page:
        assert guest.vm is not None
        guest.vm.set_user_memory_region(g.TEST_SLOT, g.TEST_GPA, PAGE_SIZE, page.addr)
        page.munmap(0, PAGE_SIZE)
        r = guest.run()
    assert (r.ret, r.errno, r.exit_reason, r.completed) == (-1, errno.EFAULT, 0, False)


def test_detect_host_says_how(system) -> None:
    host = g.detect_host()
    assert host.flavour in ("pvm", "vmx", "svm", "unknown") and host.evidence
    assert host.cpl == (3 if host.flavour in ("pvm", "unknown") else 0)


def test_enable_cap_on_the_vm(system) -> None:
    KVM_CAP_HALT_POLL = 182  # include/uapi/linux/kvm.h
    with system.create_vm() as vm:
        assert vm.check_extension(KVM_CAP_HALT_POLL) == 1
        vm.enable_cap(KVM_CAP_HALT_POLL, 0)
        # virt/kvm/kvm_main.c:kvm_vm_ioctl_enable_cap_generic(): args[0] must fit an unsigned int
        with pytest.raises(KvmError) as info:
            vm.enable_cap(KVM_CAP_HALT_POLL, 1 << 32)
        assert info.value.errno == errno.EINVAL
        # arch/x86/kvm/x86.c:kvm_vm_ioctl_enable_cap(): flags must be 0
        with pytest.raises(KvmError) as info:
            vm.enable_cap(uapi.KVM_CAP_READONLY_MEM, flags=1)
        assert info.value.errno == errno.EINVAL


def test_vm_types_bitmask_includes_the_default_vm(system) -> None:
    # KVM_CAP_VM_TYPES: a bitmask of accepted KVM_CREATE_VM types; bit 0 = KVM_X86_DEFAULT_VM
    assert system.check_extension(uapi.KVM_CAP_VM_TYPES) & 1 << uapi.KVM_X86_DEFAULT_VM
