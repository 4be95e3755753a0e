"""struct kvm_run layout and uAPI constants against the reference's compiled values (section 2)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
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


def test_kvm_run_exit_offset_is_the_reference_one() -> None:
    """``KVM_RUN_EXIT_OFFSET``, which the fault paths write exits at, is written out in abi (so that
    importing kvmcore does not build the ctypes structure): the reference's ``exit`` offset."""
    assert abi.KVM_RUN_EXIT_OFFSET == REFERENCE_OFFSETS["exit"] == 32


def test_struct_kvm_run_is_imported_on_first_use() -> None:
    code = ("import sys, kvmcore; before = 'ctypes' in sys.modules or 'kvmcore._kvm_run' in sys.modules; "
            "from kvmcore.abi import kvm_run; import kvmcore._kvm_run as k; "
            "print(before, kvm_run is k.kvm_run, kvmcore.abi.KVM_RUN_SIZE, 'kvm_run' in dir(kvmcore.abi))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "2352", "True"]


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


# --- compiled against the real uAPI header (Debian's linux-libc-dev of the newest modelled kernel) ---
#: Fields whose offset the compiled header gives: kvmcore's name -> the C member designator.
COMPILED_OFFSETS = {
    "exit_reason": "exit_reason", "mmio.phys_addr": "mmio.phys_addr", "mmio.data": "mmio.data",
    "mmio.len": "mmio.len", "mmio.is_write": "mmio.is_write", "memory_fault.flags": "memory_fault.flags",
    "memory_fault.gpa": "memory_fault.gpa", "memory_fault.size": "memory_fault.size",
    "arm_nisv.esr_iss": "arm_nisv.esr_iss", "arm_nisv.fault_ipa": "arm_nisv.fault_ipa",
    "kvm_valid_regs": "kvm_valid_regs",
}  # fmt: skip


def uapi_include() -> Path | None:
    """The include directory with the 7.3 ``linux/kvm.h``: ``$KVMCORE_UAPI_INCLUDE`` (.ci/run sets
    it from .ci/uapi-headers), else the cache .ci/uapi-headers fills, else None."""
    env = os.environ.get("KVMCORE_UAPI_INCLUDE")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvmcore" / "linux-libc-dev-trixie-backports"
    return cache / "usr" / "include" if (cache / ".complete").exists() else None


def compile_and_run(tmp_path: Path, body: str) -> list[str]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler on this machine")
    include = uapi_include()
    if include is None or not (include / "linux" / "kvm.h").exists():
        pytest.skip("no 7.3 uAPI header: run .ci/uapi-headers (Debian's linux-libc-dev, about 2 MB) or set KVMCORE_UAPI_INCLUDE")
    triplet = subprocess.run([gcc, "-dumpmachine"], check=True, capture_output=True, text=True).stdout.strip()
    src = tmp_path / "uapi.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void) {\n" + body + "return 0;\n}\n")
    exe = tmp_path / "uapi"
    subprocess.run([gcc, f"-I{include / triplet}", f"-I{include}", str(src), "-o", str(exe)], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()


def test_kvm_run_offsets_match_compiled_header(tmp_path: Path) -> None:
    body = "".join(f'printf("%zu\\n", offsetof(struct kvm_run, {c}));\n' for c in COMPILED_OFFSETS.values())
    body += 'printf("%zu\\n", offsetof(struct kvm_userspace_memory_region2, guest_memfd_offset));\n'
    body += 'printf("%zu\\n", sizeof(struct kvm_userspace_memory_region2));\n'
    out = [int(x) for x in compile_and_run(tmp_path, body)]
    assert out[: len(COMPILED_OFFSETS)] == [abi.KVM_RUN_OFFSETS[k] for k in COMPILED_OFFSETS]
    # kvm_userspace_memory_region2: guest_memfd_offset at 32, 160 bytes (pad2[14])
    assert out[len(COMPILED_OFFSETS) :] == [32, 160]


def test_every_uapi_looking_name_is_classified() -> None:
    """A KVM_*/GUEST_MEMFD_* integer added to kvmcore/abi.py must join UAPI_NAMES (and so the
    compiled check below), DERIVED_NAMES or PROPOSAL_NAMES."""
    names = {n for n in dir(abi) if n.isupper() and isinstance(getattr(abi, n), int) and n.startswith(("KVM_", "GUEST_MEMFD_"))}
    lists = (abi.UAPI_NAMES, abi.DERIVED_NAMES, abi.PROPOSAL_NAMES)
    assert names == set().union(*lists)
    assert sum(len(x) for x in lists) == len(names)  # no name in two lists


def test_uapi_names_match_compiled_header(tmp_path: Path) -> None:
    """Every upstream name in kvmcore/abi.py (abi.UAPI_NAMES, ioctl numbers included) equals the
    header's macro; the proposal-only names (abi.PROPOSAL_NAMES) are not in the header at all."""
    body = "".join(f'printf("%llu\\n", (unsigned long long)({name}));\n' for name in abi.UAPI_NAMES)
    body += "".join(f'#ifdef {name}\nprintf("defined\\n");\n#else\nprintf("absent\\n");\n#endif\n' for name in abi.PROPOSAL_NAMES)
    out = compile_and_run(tmp_path, body)
    values = dict(zip(abi.UAPI_NAMES, (int(x) for x in out[: len(abi.UAPI_NAMES)]), strict=True))
    assert {n: getattr(abi, n) for n in abi.UAPI_NAMES} == values
    assert out[len(abi.UAPI_NAMES) :] == ["absent"] * len(abi.PROPOSAL_NAMES)
