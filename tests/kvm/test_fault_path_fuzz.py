"""Every installed in-tree arch, random raw registers, a VM with every kind of slot: the fault
path ends in a coherent FaultResult or refuses the registers with DecodeError, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvmcore
from kvmcore.abi import (
    KVM_EXIT_MEMORY_FAULT,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

MiB = 1 << 20
U64 = st.integers(0, (1 << 64) - 1)
# gpas that land in the slots below, in holes between them, or anywhere
GPAS = st.one_of(st.integers(0x4000_0000, 0x4500_0000), st.integers(0, (1 << 40) - 1))
SLOT_GPAS = st.sampled_from([0x4000_0000, 0x4100_0000, 0x4200_0000, 0x4300_0000, 0x4400_0000]).flatmap(
    lambda base: st.integers(base, base + MiB - 1)
)


def build_vm(arch: str) -> kvmcore.VM:
    # x86: a VM type with private memory (kvm_arch_has_private_mem()) for the attributes below
    vm = kvmcore.VM(arch, **({"vm_type": "sw_protected"} if arch == "x86" else {}))
    hva = vm.host.mmap(8 * MiB, page_size=2 * MiB)
    vm.set_user_memory_region(0, 0x4000_0000, 4 * MiB, hva)
    vm.set_user_memory_region(1, 0x4100_0000, MiB, flags=KVM_MEM_READONLY)
    vm.set_user_memory_region(2, 0x4200_0000, MiB, flags=KVM_MEM_USERFAULT | KVM_MEM_LOG_DIRTY_PAGES, userfault_bitmap=bytearray(b"\x55" * 32))
    fd = vm.create_guest_memfd(MiB)
    vm.set_user_memory_region(3, 0x4300_0000, MiB, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=fd)
    vm.set_memory_attributes(0x4300_0000, MiB // 2, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vm.guest_memfd(fd).memory_failure(0x3000)
    vm.host.memory_failure(hva + 0x5000)
    return vm


def encoded(vcpu: kvmcore.VCPU) -> st.SearchStrategy[dict]:
    """What the arch's own encode_fault reports for accesses to the slots, sometimes with one bit
    of one register flipped: well-formed syndromes that reach the handling paths."""

    def build(gpa: int, kind: str, cause: str, private: bool, flip: tuple[int, int] | None) -> dict:
        try:
            raw = dict(vcpu.vm.arch.encode_fault(vcpu, kvmcore.Access(gpa, kind, cause, private)))
        except ValueError:  # the arch cannot express it
            return {}
        if flip is not None:
            ints = sorted(k for k, v in raw.items() if type(v) is int)
            key = ints[flip[0] % len(ints)]
            raw[key] ^= 1 << flip[1]
        return raw

    return st.builds(
        build, SLOT_GPAS, st.sampled_from(kvmcore.ACCESS_KINDS), st.sampled_from(kvmcore.STAGE2_CAUSES),
        st.booleans(), st.one_of(st.none(), st.tuples(st.integers(0, 7), st.integers(0, 63))),
    )


def registers(arch: str) -> st.SearchStrategy[dict]:
    private = st.sampled_from([{}, {"private": 0}, {"private": 1}])
    if arch == "arm64":
        # data/instruction aborts from a lower EL with any ISS, plus any ESR at all
        esr = st.one_of(st.integers(0, (1 << 25) - 1).map(lambda iss: (0x24 << 26) | (1 << 25) | iss),
                        st.integers(0, (1 << 25) - 1).map(lambda iss: (0x20 << 26) | (1 << 25) | iss),
                        st.integers(0, (1 << 56) - 1))
        base = st.builds(lambda e, gpa, far: {"esr": e, "hpfar": (gpa >> 12) << 4, "far": far}, esr, GPAS, U64)
    elif arch == "x86":
        vmx = st.builds(lambda eq, gpa: {"vendor": "vmx", "exit_qualification": eq, "gpa": gpa}, st.integers(0, (1 << 17) - 1), GPAS)
        svm = st.builds(lambda ec, gpa: {"vendor": "svm", "error_code": ec, "gpa": gpa}, U64, GPAS)
        base = st.one_of(vmx, svm)
    else:
        base = st.builds(
            lambda cause, gpa, stval, htinst: {"scause": cause, "htval": gpa >> 2, "stval": stval, "htinst": htinst},
            st.sampled_from([20, 21, 23, 13, 9]), GPAS, U64, st.one_of(st.just(0), st.integers(0, (1 << 32) - 1)),
        )
    return st.builds(lambda b, p: {**b, **p}, base, private)


@pytest.mark.parametrize("arch", ["arm64", "x86", "riscv"])
def test_fault_path_never_escapes(arch: str) -> None:
    vm = build_vm(arch)
    vcpu = vm.create_vcpu()

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(registers(arch), encoded(vcpu)))
    def one(raw: dict) -> None:
        try:
            res = vcpu.handle_fault(raw)
        except kvmcore.DecodeError as exc:
            assert str(exc)
            return
        assert isinstance(res, kvmcore.FaultResult) and res.outcome
        if res.mapped is not None:
            assert res.ret == 0 and res.exit_reason is None
            entry = vm.stage2.lookup(res.fault.gfn)
            assert entry is not None and entry.size == res.mapped.size
            assert res.fault.slot is not None  # nothing maps a gfn outside every memslot
            assert not (res.mapped.writable and res.fault.slot.flags & KVM_MEM_READONLY)
        if res.exit_reason == KVM_EXIT_MEMORY_FAULT:
            # valid only with -EFAULT/-EHWPOISON; gpa/size as the common helper sets them
            assert res.ret in (-14, -133)
            mf = vcpu.kvm_run.memory_fault
            assert (mf.gpa, mf.size) == (res.fault.gfn << vm.page_shift, vm.page_size)
            assert bool(mf.flags & 0x8) == res.fault.is_private
        if res.ret < 0 and res.exit_reason is None:
            raise AssertionError(f"{res}: a negative return must leave an exit reason (0 for a bare errno)")

    one()
