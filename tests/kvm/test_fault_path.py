"""The common fault path through the core's default faultin (toy arch), checked against the
KVM Userfault v3 semantics and the uAPI documentation in the reference (sections 1.3, 2.3)."""

from __future__ import annotations

import errno

import pytest
import toyarch

import kvmcore
from kvmcore import Access, FaultContractError, hookimpl
from kvmcore.abi import (
    KVM_EXIT_MEMORY_FAULT,
    KVM_EXIT_MMIO,
    KVM_EXIT_UNKNOWN,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

MiB = 1 << 20
EHWPOISON = 133  # asm-generic errno.h; Python's errno module lacks it
READ, WRITE, EXEC = 0, 1, 2


def memory_fault(vcpu: kvmcore.VCPU) -> tuple[int, int, int, int]:
    run = vcpu.kvm_run
    return run.exit_reason, run.memory_fault.flags, run.memory_fault.gpa, run.memory_fault.size


def test_kvm_run_is_made_by_its_first_use_and_then_kept(vm) -> None:
    """VCPU.kvm_run is created on first access (decoding never runs a vCPU): a zeroed struct
    kvm_run of the reference's 2352 bytes, the same object on every access, one per vCPU."""
    first, second = vm.create_vcpu(), vm.create_vcpu()
    assert "kvm_run" not in vars(first)
    run = first.kvm_run
    assert type(run) is kvmcore.abi.kvm_run and len(bytes(run)) == 2352 and bytes(run) == bytes(2352)
    assert first.kvm_run is run and vars(first)["kvm_run"] is run
    assert second.kvm_run is not run
    with pytest.raises(AttributeError, match="'VCPU' object has no attribute 'kvm_runs'"):
        first.kvm_runs  # noqa: B018


def test_hook_decode_fault_and_mapping(vm, vcpu) -> None:
    slot = vm.set_user_memory_region(0, 0x4000_0000, 4 * MiB)
    res = vcpu.handle_fault({"gpa": 0x4000_3008, "access": WRITE})
    assert (res.ret, res.exit_reason, res.outcome, res.resumed) == (0, None, "mapped", True)
    assert (res.fault.gfn, res.fault.write, res.fault.exec, res.fault.slot) == (0x40003, True, False, slot)
    entry = vm.stage2.lookup(0x40003)
    host_pfn, _ = vm.host.hva_to_pfn(slot.userspace_addr + 0x3000, False)
    assert (entry.pfn, entry.size, entry.writable) == (host_pfn, 0x1000, True)


def test_hook_decode_fault_errors_name_the_register(vcpu) -> None:
    with pytest.raises(kvmcore.DecodeError, match=r"^access=7: expected 0 \(read\), 1 \(write\) or 2 \(exec\)$"):
        vcpu.handle_fault({"gpa": 0x1000, "access": 7})


def test_no_slot_is_mmio(vcpu) -> None:
    res = vcpu.handle_fault({"gpa": 0x0900_0004, "access": WRITE})
    assert (res.ret, res.exit_reason, res.outcome) == (0, KVM_EXIT_MMIO, "mmio")
    assert (vcpu.kvm_run.mmio.phys_addr, vcpu.kvm_run.mmio.is_write) == (0x0900_0000, 1)


def test_hook_prepare_memory_fault_exit_private_mismatch(vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0, 4 * MiB)
    vm.set_memory_attributes(0x200000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    # shared access to a private gfn: flags 0 (not private), gpa page-aligned, size PAGE_SIZE
    res = vcpu.handle_fault({"gpa": 0x200010, "access": READ})
    assert (res.ret, res.outcome) == (-errno.EFAULT, "private_mismatch")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x0, 0x200000, 0x1000)
    # private access to a shared gfn: flags = KVM_MEMORY_EXIT_FLAG_PRIVATE (0x8)
    res = vcpu.handle_fault({"gpa": 0x300000, "access": WRITE, "private": 1})
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x300000, 0x1000)
    # the VMM converts and the same access now maps
    vm.set_memory_attributes(0x300000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    res = vcpu.handle_fault({"gpa": 0x300000, "access": WRITE, "private": 1})
    assert res.outcome == "private_no_gmem" and memory_fault(vcpu)[1] == 0x8  # no guest_memfd behind it


def test_private_memory_through_guest_memfd(vm, vcpu) -> None:
    fd = vm.create_guest_memfd(2 * MiB)
    vm.set_user_memory_region(0, 0x8000_0000, 2 * MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(0x8000_0000, 2 * MiB, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    gmem = vm.guest_memfd(fd)
    res = vcpu.handle_fault({"gpa": 0x8000_5000, "access": WRITE, "private": 1})
    assert (res.outcome, res.mapped.pfn, res.mapped.size) == ("mapped_private", gmem.pfn_base + 5, 0x1000)
    # converting back to shared zaps the mapping
    vm.set_memory_attributes(0x8000_5000, 0x1000, 0)
    assert vm.stage2.lookup(0x8_0005) is None
    # a poisoned guest_memfd page: memory fault with the errno kvm_gmem_get_pfn returned
    gmem.memory_failure(0x6000)
    res = vcpu.handle_fault({"gpa": 0x8000_6000, "access": READ, "private": 1})
    assert (res.ret, res.outcome) == (-EHWPOISON, "gmem_error")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x8, 0x8000_6000, 0x1000)


def test_userfault_exit_and_resolution(vm, vcpu) -> None:
    bitmap = bytearray(8)  # 16 pages -> one long
    vm.set_user_memory_region(0, 0x10_0000, 16 * 0x1000, flags=KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    kvmcore.set_userfault_bits(bitmap, [3])  # bit 3 = byte 0, value 0x08
    assert bitmap[0] == 0x08
    res = vcpu.handle_fault({"gpa": 0x10_3abc, "access": READ})
    assert (res.ret, res.outcome) == (-errno.EFAULT, "userfault")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x10, 0x10_3000, 0x1000)
    assert vcpu.handle_fault({"gpa": 0x10_2000}).outcome == "mapped"  # bit 2 clear
    bitmap[0] = 0  # the VMM fetched the page and cleared the bit
    assert vcpu.handle_fault({"gpa": 0x10_3abc}).outcome == "mapped"


def test_enabling_userfault_zaps_the_slot(vm, vcpu) -> None:
    slot = vm.set_user_memory_region(0, 0, 64 * 0x1000)
    vcpu.handle_fault({"gpa": 0x5000})
    assert vm.stage2.lookup(5) is not None
    bitmap = bytearray(8)
    vm.set_user_memory_region(0, 0, 64 * 0x1000, slot.userspace_addr, KVM_MEM_USERFAULT, userfault_bitmap=bitmap)
    assert vm.stage2.lookup(5) is None  # kvm_arch_userfault_enabled() flushed the slot


def test_userfault_private_flags_and_unreadable_bitmap(vm, vcpu) -> None:
    fd = vm.create_guest_memfd(0x10000)
    bitmap = bytearray(b"\xff" * 8)
    vm.set_user_memory_region(0, 0, 0x10000, flags=KVM_MEM_GUEST_MEMFD | KVM_MEM_USERFAULT, guest_memfd=fd, userfault_bitmap=bitmap)
    vm.set_memory_attributes(0, 0x10000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vcpu.handle_fault({"gpa": 0x2000, "private": 1})
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0x18, 0x2000, 0x1000)  # PRIVATE | USERFAULT
    # a bitmap that can no longer be read: bare -EFAULT, exit_reason left KVM_EXIT_UNKNOWN
    vm.memslots.by_id[0].userfault_bitmap.release()
    res = vcpu.handle_fault({"gpa": 0x3000, "private": 1})
    assert (res.ret, res.exit_reason) == (-errno.EFAULT, KVM_EXIT_UNKNOWN)


def test_hwpoison_on_shared_memory(vm, vcpu) -> None:
    slot = vm.set_user_memory_region(0, 0, 4 * MiB)
    vcpu.handle_fault({"gpa": 0x1000})
    vm.host.memory_failure(slot.userspace_addr + 0x1000)
    assert vm.stage2.lookup(1) is None  # memory_failure unmapped it from KVM too
    res = vcpu.handle_fault({"gpa": 0x1000})
    assert (res.ret, res.outcome) == (-EHWPOISON, "hwpoison")
    assert memory_fault(vcpu) == (KVM_EXIT_MEMORY_FAULT, 0, 0x1000, 0x1000)


def test_readonly_slot(vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0x10000, 0x10000, flags=KVM_MEM_READONLY)
    res = vcpu.handle_fault({"gpa": 0x10008, "access": READ})
    assert (res.outcome, res.mapped.writable) == ("mapped", False)
    res = vcpu.handle_fault({"gpa": 0x10008, "access": WRITE})
    assert (res.ret, res.exit_reason, res.outcome) == (0, KVM_EXIT_MMIO, "mmio_readonly_slot")
    assert vcpu.kvm_run.mmio.is_write == 1


def test_host_mapping_changes(vm, vcpu) -> None:
    slot = vm.set_user_memory_region(0, 0, 0x10000)
    vm.host.mprotect(slot.userspace_addr, 0x1000, kvmcore.PROT_READ)
    res = vcpu.handle_fault({"gpa": 0x0, "access": WRITE})
    assert (res.ret, res.exit_reason, res.outcome) == (-errno.EFAULT, KVM_EXIT_UNKNOWN, "efault")
    res = vcpu.handle_fault({"gpa": 0x0, "access": READ})
    assert (res.outcome, res.mapped.writable) == ("mapped", False)
    vm.host.munmap(slot.userspace_addr + 0x2000, 0x1000)
    assert vcpu.handle_fault({"gpa": 0x2000}).ret == -errno.EFAULT
    assert vcpu.handle_fault({"gpa": 0x3000}).outcome == "mapped"


def test_huge_mappings_need_alignment_and_host_backing(vm, vcpu) -> None:
    hva = vm.host.mmap(8 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, 0x4000_0000, 4 * MiB, hva)
    res = vcpu.handle_fault({"gpa": 0x4020_1000})
    assert res.mapped.size == 2 * MiB and vm.stage2.lookup(0x4_0300).gfn == 0x4_0200
    # gpa and hva not congruent modulo 2 MiB: 4K only
    vm.set_user_memory_region(1, 0x8010_0000, 4 * MiB, hva + 2 * MiB)
    assert vcpu.handle_fault({"gpa": 0x8030_0000}).mapped.size == 0x1000
    # base-page host memory: 4K only
    vm.set_user_memory_region(2, 0xC000_0000, 4 * MiB)
    assert vcpu.handle_fault({"gpa": 0xC000_0000}).mapped.size == 0x1000


def test_dirty_logging_forces_4k_and_logs(vm, vcpu) -> None:
    hva = vm.host.mmap(2 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, 0, 2 * MiB, hva, KVM_MEM_LOG_DIRTY_PAGES)
    assert vcpu.handle_fault({"gpa": 0x9000, "access": WRITE}).mapped.size == 0x1000
    log = vm.get_dirty_log(0)
    assert log[1] == 0x02 and sum(log) == 2  # gfn 9 = byte 1, bit 1


class SyndromeWrapper:
    """An arch-style wrapper: adds a syndrome after the common helper, as arm64 would."""

    @hookimpl(wrapper=True)
    def prepare_memory_fault_exit(self, vcpu, fault):
        common = yield
        syn = vcpu.kvm_run.syndrome
        syn.flags = kvmcore.abi.KVMCORE_SYNDROME_VALID
        syn.syndrome[0] = 0xABCD
        return common


class BadWrapper:
    @hookimpl(wrapper=True)
    def prepare_memory_fault_exit(self, vcpu, fault):
        common = yield
        vcpu.kvm_run.memory_fault.gpa += 0x10
        return common


def test_hook_prepare_memory_fault_exit_wrappers(toy, vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0, 0x10000)
    vm.set_memory_attributes(0x4000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vcpu.handle_fault({"gpa": 0x4000})
    bare = memory_fault(vcpu)
    toy.pm.register(SyndromeWrapper(), name="syndrome")
    vcpu.handle_fault({"gpa": 0x4000})
    assert memory_fault(vcpu) == bare == (KVM_EXIT_MEMORY_FAULT, 0, 0x4000, 0x1000)
    assert (vcpu.kvm_run.syndrome.flags, vcpu.kvm_run.syndrome.syndrome[0]) == (1, 0xABCD)
    toy.pm.unregister(name="syndrome")
    toy.pm.register(BadWrapper(), name="bad")
    with pytest.raises(FaultContractError, match=r"field 'memory_fault.gpa' must be 0x4000 as the common helper set it.*found 0x4010"):
        vcpu.handle_fault({"gpa": 0x4000})


def test_hook_faultin_pfn_arch_answers_first(toy, vm, vcpu) -> None:
    class Always:
        @hookimpl
        def faultin_pfn(self, vcpu, fault):
            return kvmcore.Retry("always_retry")

    toy.pm.register(Always(), name="always")
    assert vcpu.handle_fault({"gpa": 0x1000}).outcome == "always_retry"


def test_hook_arch_info_and_configure_vm(toy) -> None:
    info = toy.info
    assert (info.name, info.fault_type, info.registers) == ("toy", toyarch.ToyFault, ("gpa", "access", "private"))
    with pytest.raises(ValueError, match=r"arch 'toy' has no VM setting 'granule' \(accepted: none\)"):
        kvmcore.VM(toy, granule="16K")


def test_hook_encode_fault_round_trip(vm, vcpu) -> None:
    raw = vm.arch.encode_fault(vcpu, Access(gpa=0x7123, kind="exec"))
    assert raw == {"gpa": 0x7123, "access": 2, "private": 0}
    fault = vm.arch.decode_fault(vcpu, raw)
    assert (fault.gfn, fault.exec, fault.write, fault.is_private) == (7, True, False, False)


class Describer:
    @hookimpl
    def describe_syndrome(self, vm, raw):
        return kvmcore.Syndrome("toy", {"gpa": raw["gpa"]}, {"gpa": "guest physical address"}, True)

    @hookimpl
    def parse_trace_event(self, event, text):
        if event != "toy_fault":
            return None
        return kvmcore.TraceEvent("guest_fault", {"text": text}, {"gpa": int(text, 16)})


def test_hook_describe_syndrome_and_parse_trace_event(toy, vm) -> None:
    toy.pm.register(Describer(), name="describer")
    assert toy.describe_syndrome(vm, {"gpa": 5}).fields == {"gpa": 5}
    assert toy.parse_trace_event("toy_fault", "0x5000").raw == {"gpa": 0x5000}
    assert toy.parse_trace_event("other", "x") is None


def test_hook_tracing_shows_calls_plugins_and_results(vm, vcpu) -> None:
    vm.set_user_memory_region(0, 0, 0x10000)
    lines: list[str] = []
    kvmcore.enable_hook_tracing(lines.append)
    vcpu.handle_fault({"gpa": 0x1000, "access": WRITE})
    kvmcore.disable_hook_tracing()
    text = "".join(lines)
    assert "  decode_fault [hook]\n" in text
    assert "      raw: {'gpa': 4096, 'access': 1}\n" in text
    assert "  answered by toyarch: ToyFault(gfn=1, exec=False, write=True" in text
    assert "  answered by kvmcore.defaults: Mapped(pfn=" in text
    assert "  finish faultin_pfn --> Mapped(" in text
    lines.clear()
    vcpu.handle_fault({"gpa": 0x2000})
    assert lines == []  # off again


def test_trace_env_var(monkeypatch, capsys) -> None:
    monkeypatch.setenv("KVMCORE_TRACE_HOOKS", "1")
    vm = kvmcore.VM(toyarch)
    vm.create_vcpu().handle_fault({"gpa": 0x1000})
    err = capsys.readouterr().err
    assert "decode_fault [hook]" in err and "answered by kvmcore.defaults: Exit(ret=0, outcome='mmio'" in err


def test_access_refuses_unknown_kind_and_cause() -> None:
    with pytest.raises(ValueError, match=r"^Access kind 'wirte': expected one of read, write, exec$"):
        Access(0x1000, "wirte")
    with pytest.raises(ValueError, match=r"^Access cause 'present': expected one of not_present, read_only, no_exec, access_flag, no_slot$"):
        Access(0x1000, "read", "present")
