"""The backend's ioctl numbers and argument structs against include/uapi/linux/kvm.h.

Two independent sources: numbers worked out by hand from the header's ``_IO*`` lines and the
struct sizes (runs everywhere), and a C program compiled against the 7.3 header
(/work/kernel-source/7.3, or $KVMCORE_KERNEL_SOURCE), which runs wherever gcc and the header are.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmcore import abi, uapi

# (name, number): _IOC(dir, 0xAE, nr, size) = dir << 30 | size << 16 | 0xAE << 8 | nr, worked by hand
# from the kvm.h lines, e.g. KVM_GET_SREGS = _IOR(KVMIO, 0x83, struct kvm_sregs): 2 << 30 | 312 << 16.
HAND_COMPUTED = {
    "KVM_GET_API_VERSION": 0xAE00,
    "KVM_CREATE_VM": 0xAE01,
    "KVM_CHECK_EXTENSION": 0xAE03,
    "KVM_GET_VCPU_MMAP_SIZE": 0xAE04,
    "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,  # _IOWR, sizeof(struct kvm_cpuid2) = 8
    "KVM_CREATE_VCPU": 0xAE41,
    "KVM_GET_DIRTY_LOG": 0x4010AE42,  # 16
    "KVM_SET_USER_MEMORY_REGION": 0x4020AE46,  # 32
    "KVM_SET_USER_MEMORY_REGION2": 0x40A0AE49,  # 160
    "KVM_ENABLE_CAP": 0x4068AEA3,  # 104
    "KVM_GET_STATS_FD": 0xAECE,
    "KVM_SET_MEMORY_ATTRIBUTES": 0x4020AED2,  # 32
    "KVM_CREATE_GUEST_MEMFD": 0xC040AED4,  # 64
    "KVM_RUN": 0xAE80,
    "KVM_GET_REGS": 0x8090AE81,  # 144
    "KVM_SET_REGS": 0x4090AE82,
    "KVM_GET_SREGS": 0x8138AE83,  # 312
    "KVM_SET_SREGS": 0x4138AE84,
    "KVM_SET_CPUID2": 0x4008AE90,  # 8
}

# struct -> (sizeof, {field: offsetof}) for the x86-64 ABI, worked from the header's field lists
LAYOUTS = {
    "kvm_userspace_memory_region": (32, {"slot": 0, "flags": 4, "guest_phys_addr": 8, "memory_size": 16, "userspace_addr": 24}),
    "kvm_userspace_memory_region2": (160, {"guest_phys_addr": 8, "userspace_addr": 24, "guest_memfd_offset": 32, "guest_memfd": 40, "pad2": 48}),
    "kvm_create_guest_memfd": (64, {"size": 0, "flags": 8, "reserved": 16}),
    "kvm_memory_attributes": (32, {"address": 0, "size": 8, "attributes": 16, "flags": 24}),
    "kvm_enable_cap": (104, {"cap": 0, "flags": 4, "args": 8, "pad": 40}),
    "kvm_dirty_log": (16, {"slot": 0, "dirty_bitmap": 8}),
    "kvm_regs": (144, {"rax": 0, "rdi": 40, "rip": 128, "rflags": 136}),
    "kvm_segment": (24, {"base": 0, "limit": 8, "selector": 12, "type": 14, "dpl": 16, "l": 19, "unusable": 22}),
    "kvm_dtable": (16, {"base": 0, "limit": 8}),
    "kvm_sregs": (312, {"cs": 0, "tr": 144, "ldt": 168, "gdt": 192, "idt": 208, "cr0": 224, "cr3": 240, "efer": 264, "apic_base": 272, "interrupt_bitmap": 280}),
    "kvm_cpuid_entry2": (40, {"function": 0, "index": 4, "flags": 8, "eax": 12, "edx": 24, "padding": 28}),
    "kvm_cpuid2": (8, {"nent": 0}),
    "kvm_stats_header": (24, {"flags": 0, "name_size": 4, "num_desc": 8, "id_offset": 12, "desc_offset": 16, "data_offset": 20}),
    "kvm_stats_desc": (16, {"flags": 0, "exponent": 4, "size": 6, "offset": 8, "bucket_size": 12}),
}


@pytest.mark.parametrize("name,number", sorted(HAND_COMPUTED.items()))
def test_ioctl_numbers_match_hand_computed(name: str, number: int) -> None:
    assert uapi.IOCTLS[name] == number


def test_every_ioctl_is_checked() -> None:
    assert sorted(uapi.IOCTLS) == sorted(HAND_COMPUTED)


def test_the_model_abi_agrees_with_the_backend() -> None:
    # kvmcore.abi carries a few ioctl numbers as literals; the backend computes them
    for name in ("KVM_RUN", "KVM_SET_USER_MEMORY_REGION2", "KVM_SET_MEMORY_ATTRIBUTES", "KVM_CREATE_GUEST_MEMFD"):
        assert getattr(abi, name) == uapi.IOCTLS[name], name


@pytest.mark.parametrize("struct", sorted(LAYOUTS))
def test_struct_layouts(struct: str) -> None:
    size, offsets = LAYOUTS[struct]
    cls = getattr(uapi, struct)
    assert ctypes.sizeof(cls) == size
    for field, offset in offsets.items():
        assert getattr(cls, field).offset == offset, f"{struct}.{field}"


def test_cpuid2_with_entries() -> None:
    cls = uapi.cpuid2_type(3)
    assert ctypes.sizeof(cls) == 8 + 3 * 40
    assert cls.entries.offset == 8  # type: ignore[attr-defined]


def test_ioc_refuses_a_size_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="14 bits"):
        uapi._IOC(1, 0xAE, 0, 1 << 14)


KERNEL_SOURCE = Path(os.environ.get("KVMCORE_KERNEL_SOURCE", "/work/kernel-source/7.3"))


def _c_program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/kvm.h>", "int main(void) {"]
    for name in sorted(HAND_COMPUTED):
        lines.append(f'    printf("{name} %lu\\n", (unsigned long){name});')
    for struct, (_size, offsets) in sorted(LAYOUTS.items()):
        lines.append(f'    printf("sizeof {struct} %zu\\n", sizeof(struct {struct}));')
        for field in offsets:
            lines.append(f'    printf("offsetof {struct}.{field} %zu\\n", offsetof(struct {struct}, {field}));')
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def _include_dirs(tmp_path: Path) -> list[str]:
    """The 7.3 uAPI headers: the installed ones ``.ci/uapi-headers`` fetches (Debian's
    linux-libc-dev, ``$KVMCORE_UAPI_INCLUDE``, what CI uses), else an extracted source tree."""
    installed = os.environ.get("KVMCORE_UAPI_INCLUDE")
    if installed and (Path(installed) / "linux/kvm.h").exists():
        return ["-I", installed]
    if not (KERNEL_SOURCE / "include/uapi/linux/kvm.h").exists():
        pytest.skip("no 7.3 uAPI header: set KVMCORE_UAPI_INCLUDE (.ci/uapi-headers prints it) "
                    "or KVMCORE_KERNEL_SOURCE to an extracted kernel source tree")
    # the uAPI headers straight from the source tree, as headers_install would leave them:
    # <linux/compiler.h> only supplies __user there
    stub = tmp_path / "stub" / "linux"
    stub.mkdir(parents=True)
    (stub / "compiler.h").write_text("#define __user\n")
    return ["-D__EXPORTED_HEADERS__", "-I", str(tmp_path / "stub"), "-I", str(KERNEL_SOURCE / "include/uapi"),
            "-I", str(KERNEL_SOURCE / "arch/x86/include/uapi")]


def test_against_the_compiled_kernel_header(tmp_path: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler on this machine")
    includes = _include_dirs(tmp_path)
    src = tmp_path / "uapi.c"
    src.write_text(_c_program())
    exe = tmp_path / "uapi"
    subprocess.run([gcc, *includes, str(src), "-o", str(exe)], check=True, capture_output=True)
    compiled = dict(line.rsplit(" ", 1) for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines())
    for name in HAND_COMPUTED:
        assert int(compiled[name]) == uapi.IOCTLS[name], name
    for struct, (_size, offsets) in LAYOUTS.items():
        cls = getattr(uapi, struct)
        assert int(compiled[f"sizeof {struct}"]) == ctypes.sizeof(cls), struct
        for field in offsets:
            assert int(compiled[f"offsetof {struct}.{field}"]) == getattr(cls, field).offset, f"{struct}.{field}"
