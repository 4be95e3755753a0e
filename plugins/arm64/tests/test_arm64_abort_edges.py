"""arm64 abort-path behaviour that no other test pinned (found by mutating ``abort.py``).

Each test fails under a specific change to ``kvmcore_arm64/abort.py`` that left the rest of
the suite green; its expected values come from the kernel source named in it
(``/work/kernel-source/{6.12,7.3}/arch/arm64``), worked by hand, never read back from kvmcore.

ESR values used below (ESR_EL2 = EC[31:26] | IL[25] | ISS[24:0]): EC 0x24 (DABT_LOW) << 26 =
0x90000000, EC 0x20 (IABT_LOW) << 26 = 0x80000000, IL = 0x02000000, ISV = 0x01000000,
SAS=3 = 0x00C00000, SF = 0x8000, WnR = 0x40, FSC in [5:0].
"""

from __future__ import annotations

import errno

import pytest

import kvmcore

MiB = 1 << 20
RAM = 0x4000_0000
# 0x82000035: IABT_LOW IL, IFSC = 0x35
FETCH_EXCL_ATOMIC = 0x82000035


def hpfar(ipa: int) -> int:
    return (ipa >> 12) << 4  # HPFAR_EL2.FIPA [47:4] = IPA[55:12]


# --- kvm_handle_guest_abort(): the FSC filter -----------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "on_ram", "outside"),
    [
        # 6.12 arch/arm64/kvm/mmu.c:kvm_handle_guest_abort(): FSC 0x35 is no translation,
        # permission or access-flag fault: kvm_err("Unsupported FSC: ..."), -EFAULT
        ("6.12", (-errno.EFAULT, "unsupported_fsc"), (-errno.EFAULT, "unsupported_fsc")),
        # 7.3 kvm_handle_guest_abort(): esr_fsc_is_excl_atomic_fault() (asm/esr.h) is
        # "esr & ESR_ELx_FSC == ESR_ELx_FSC_EXCL_ATOMIC", whatever the EC, so an instruction
        # abort with IFSC 0x35 passes the filter too. On RAM: user_mem_abort() ->
        # kvm_s2_fault_compute_prot() -> kvm_inject_dabt_excl_atomic(), return 1. Outside
        # memslots: is_iabt -> -ENOEXEC -> kvm_inject_sea_iabt(), return 1.
        ("7.3", (0, "excl_atomic_injected"), (0, "iabt_injected")),
    ],
)
def test_fetch_with_ifsc_0x35_follows_the_fsc_check(kernel, on_ram, outside) -> None:
    vm = kvmcore.VM("arm64", kernel=kernel)
    vm.set_user_memory_region(0, RAM, 2 * MiB)
    vcpu = vm.create_vcpu()
    res = vcpu.handle_fault({"esr": FETCH_EXCL_ATOMIC, "hpfar": hpfar(RAM + 0x1000)})
    assert (res.ret, res.outcome) == on_ram
    res = vcpu.handle_fault({"esr": FETCH_EXCL_ATOMIC, "hpfar": hpfar(0x900_0000)})
    assert (res.ret, res.outcome) == outside
