"""struct kvm_run layout and uAPI constants against the reference's compiled values (section 2)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmcore import abi

# Offsets from the reference, section 2.1 ("compiled offsets", linux-libc-dev 7.2.13).
REFERENCE_OFFSETS = {
    "exit_reason": 8,
    "exit": 32,
    "mmio.phys_addr": 32,
    "mmio.data": 40,
    "mmio.len": 48,
    "mmio.is_write": 52,
    "memory_fault.flags": 32,
    "memory_fault.gpa": 40,
    "memory_fault.size": 48,
    "arm_nisv.esr_iss": 32,
    "arm_nisv.fault_ipa": 40,
    "kvm_valid_regs": 288,
}


@pytest.mark.parametrize("field,offset", sorted(REFERENCE_OFFSETS.items()))
def test_kvm_run_offsets_match_reference(field: str, offset: int) -> None:
    assert abi.KVM_RUN_OFFSETS[field] == offset


def test_kvm_run_size_and_union() -> None:
    assert ctypes.sizeof(abi.kvm_run) == 2352  # reference: sizeof 2352
    assert ctypes.sizeof(abi.kvm_run_exit) == 256
    # kvmcore's syndrome extension sits right after memory_fault (32 + 24) and inside the union
    assert abi.KVM_RUN_OFFSETS["kvmcore_syndrome"] == 56
    assert 56 + ctypes.sizeof(abi.kvmcore_fault_syndrome) <= 32 + 256


def test_kvm_run_bytes_are_little_endian_fields() -> None:
    run = abi.kvm_run()
    run.exit_reason = 39
    run.memory_fault.flags = 0x18
    run.memory_fault.gpa = 0x1_2345_6000
    run.memory_fault.size = 0x1000
    raw = bytes(run)
    assert raw[8:12] == (39).to_bytes(4, "little")
    assert raw[32:40] == (0x18).to_bytes(8, "little")
    assert raw[40:48] == (0x1_2345_6000).to_bytes(8, "little")
    assert raw[48:56] == (0x1000).to_bytes(8, "little")


@pytest.mark.parametrize(
    "name,value",
    [
        ("KVM_EXIT_MMIO", 6),
        ("KVM_EXIT_INTERNAL_ERROR", 17),
        ("KVM_EXIT_ARM_NISV", 28),
        ("KVM_EXIT_MEMORY_FAULT", 39),
        ("KVM_MEMORY_EXIT_FLAG_PRIVATE", 0x8),
        ("KVM_MEMORY_EXIT_FLAG_USERFAULT", 0x10),
        ("KVM_MEM_LOG_DIRTY_PAGES", 0x1),
        ("KVM_MEM_READONLY", 0x2),
        ("KVM_MEM_GUEST_MEMFD", 0x4),
        ("KVM_MEM_USERFAULT", 0x8),
        ("KVM_MEMORY_ATTRIBUTE_PRIVATE", 0x8),
        ("KVM_CAP_MEMORY_FAULT_INFO", 232),
        ("KVM_CAP_ARM_NISV_TO_USER", 177),
        ("KVM_SET_USER_MEMORY_REGION2", 0x40A0AE49),
        ("KVM_RUN", 0xAE80),
        ("EFAULT", 14),
        ("EHWPOISON", 133),
        ("ENOSYS", 38),
        ("EOPNOTSUPP", 95),
    ],
)
def test_constants_match_reference(name: str, value: int) -> None:
    assert getattr(abi, name) == value


C_PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu\n", offsetof(struct kvm_run, exit_reason),
           offsetof(struct kvm_run, mmio.phys_addr), offsetof(struct kvm_run, mmio.len),
           offsetof(struct kvm_run, memory_fault.flags), offsetof(struct kvm_run, memory_fault.gpa),
           offsetof(struct kvm_run, memory_fault.size));
    return 0;
}
"""


def test_kvm_run_offsets_match_compiled_header(tmp_path: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler on this machine")
    header = Path("/usr/include/linux/kvm.h")
    if not header.exists() or "memory_fault" not in header.read_text(errors="replace"):
        pytest.skip("/usr/include/linux/kvm.h missing or older than 6.8 (no memory_fault): install a newer linux-libc-dev")
    src = tmp_path / "offsets.c"
    src.write_text(C_PROGRAM)
    exe = tmp_path / "offsets"
    subprocess.run([gcc, str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    expected = [abi.KVM_RUN_OFFSETS[k] for k in ("exit_reason", "mmio.phys_addr", "mmio.len", "memory_fault.flags", "memory_fault.gpa", "memory_fault.size")]
    assert [int(x) for x in out] == expected
