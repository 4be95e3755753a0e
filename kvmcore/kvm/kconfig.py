"""What a VM's kernel offers: the Kconfig choices and ``kvm_arch_*()`` predicates that decide
which memslot flags, ioctls and guest_memfd flags a VM accepts, per arch, VM type, kernel
version and proposal (``vm.config``).

Every version or arch difference in memslot, guest_memfd and memory-attribute *validation*
is decided here, once, in :func:`vm_config`; ``kvm_main.py`` only reads the result. The
kernels assumed are the distribution builds the sources come from (x86-64 with
``KVM_SW_PROTECTED_VM``, ``KVM_AMD_SEV``, ``KVM_INTEL_TDX`` and ``KVM_SMM``; arm64 with 48-bit
VAs; RISC-V with Sv48 user space).

An arch kvmcore does not know (a third-party plugin) gets kvmcore's generic model: guest_memfd,
memory attributes and private memory everywhere, the generic ``kvm_host.h`` limits.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any, NamedTuple

from kvmcore import abi
from kvmcore.kvm.version import KernelVersion

#: ``SHRT_MAX`` (include/linux/kvm_host.h: ``KVM_MEM_SLOTS_NUM``), the same in 6.12 and 7.3.
KVM_MEM_SLOTS_NUM = 0x7FFF


class VmConfig(NamedTuple):
    """The facts about one VM that the memslot, guest_memfd and attribute ioctls consult.

    Immutable, a named tuple: this module is imported by every command that makes a VM, and a
    frozen dataclass of 15 fields costs about 1% of ``kvmcore decode``'s start-up to define.
    """

    #: ``KVM_CREATE_GUEST_MEMFD`` is an ioctl of this VM (6.12: ``CONFIG_KVM_PRIVATE_MEM``,
    #: 6.18+: ``CONFIG_KVM_GUEST_MEMFD``, virt/kvm/kvm_main.c: kvm_vm_ioctl()).
    guest_memfd: bool
    #: ``KVM_MEM_GUEST_MEMFD`` is a valid memslot flag (check_memory_region_flags(): 6.12
    #: ``kvm_arch_has_private_mem(kvm)``, 6.18+ ``IS_ENABLED(CONFIG_KVM_GUEST_MEMFD)``).
    gmem_slots: bool
    #: The flags ``kvm_gmem_create()`` accepts (6.12: none; 6.18+:
    #: ``kvm_gmem_get_supported_flags()``: MMAP, INIT_SHARED when
    #: ``kvm_arch_supports_gmem_init_shared()``).
    gmem_flags: int
    #: ``KVM_SET_MEMORY_ATTRIBUTES`` is an ioctl of this VM (``CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES``).
    memory_attributes: bool
    #: ``kvm_supported_mem_attributes(kvm)``: PRIVATE iff ``kvm_arch_has_private_mem(kvm)``.
    supported_attributes: int
    #: ``kvm_arch_has_private_mem(kvm)``.
    has_private_mem: bool
    #: ``kvm_arch_has_readonly_mem(kvm)``: x86 VMs with protected state (SEV-ES, SNP, TDX) have none.
    has_readonly_mem: bool
    #: ``kvm_arch_nr_memslot_as_ids(kvm)``: x86 has a second (SMM) address space unless the VM
    #: has private memory.
    nr_memslot_as_ids: int
    #: ``KVM_USER_MEM_SLOTS``: ``KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS`` (x86 keeps 3).
    user_mem_slots: int
    #: The end (exclusive) of the VMM's user address range that ``access_ok()`` accepts.
    user_addr_end: int
    #: What a VM ioctl the kernel does not know fails with (``kvm_arch_vm_ioctl()``'s default).
    unknown_ioctl_errno: int
    #: ``KVM_MEM_USERFAULT`` is a valid memslot flag (proposal ``userfault``; v3 enables it where
    #: ``CONFIG_KVM_GENERIC_PAGE_FAULT``: x86 and arm64, RISC-V with ``riscv-userfault``).
    userfault: bool
    #: Overlapping guest_memfd bindings fail with EEXIST (7.2+) rather than EINVAL.
    gmem_overlap_errno: int
    #: 7.3 splits ``kvm_gmem_bind()`` around ``kvm_arch_prepare_memory_region()``: the fd and
    #: range checks first, the overlap check (EEXIST) after the arch's (False: one bind before).
    gmem_bind_split: bool
    #: ``KVM_ENABLE_CAP`` capabilities the VM accepts (the generic ones and the arch's).
    enable_caps: frozenset[int]


#: x86 VM types (``KVM_CREATE_VM`` type) with private memory / protected state
#: (arch/x86/kvm/x86.c kvm_arch_init_vm(), svm/sev.c sev_vm_init(), vmx/tdx.c).
_X86_PRIVATE_MEM = ("sw_protected", "snp", "tdx")
_X86_PROTECTED_STATE = ("snp", "tdx")

#: KVM_ENABLE_CAP: what kvm_vm_ioctl_enable_cap_generic() handles itself (the same in 6.12
#: and 7.3; the dirty ring, which kvmcore does not model, left out) plus the arch's own that
#: kvmcore models (arm64: KVM_CAP_ARM_NISV_TO_USER, arch/arm64/kvm/arm.c kvm_vm_ioctl_enable_cap()).
_GENERIC_ENABLE_CAPS = frozenset({abi.KVM_CAP_HALT_POLL, abi.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2})
_ARCH_ENABLE_CAPS = {"arm64": frozenset({abi.KVM_CAP_ARM_NISV_TO_USER})}

#: The user address range: x86 ``TASK_SIZE_MAX`` with 4-level paging, (1 << 47) - PAGE_SIZE,
#: which ``__access_ok()`` (arch/x86/include/asm/uaccess_64.h, ``USER_PTR_MAX``) allows the
#: end to reach; arm64 ``TASK_SIZE_MAX`` = 1 << VA_BITS (48); RISC-V ``TASK_SIZE`` with Sv48.
_USER_ADDR_END = {"x86": (1 << 47) - 0x1000, "arm64": 1 << 48, "riscv": 1 << 47}

#: What kvm_arch_vm_ioctl() returns for an ioctl it does not handle: x86 ``-ENOTTY``
#: (arch/x86/kvm/x86.c), arm64 and RISC-V ``-EINVAL`` (arch/arm64/kvm/arm.c, arch/riscv/kvm/vm.c).
_UNKNOWN_IOCTL = {"x86": errno.ENOTTY, "arm64": errno.EINVAL, "riscv": errno.EINVAL}


def vm_config(arch: str, kernel: KernelVersion, proposals: frozenset[str], settings: Mapping[str, Any]) -> VmConfig:
    """The :class:`VmConfig` of a VM of ``arch`` on ``kernel`` with ``proposals`` on.

    Sources, per version (virt/kvm/kvm_main.c, virt/kvm/guest_memfd.c, arch/*/kvm/Kconfig):

    * guest_memfd: 6.12 only x86 (``KVM_PRIVATE_MEM`` via ``KVM_SW_PROTECTED_VM``/SEV); 6.18
      and 7.3 x86-64 and arm64 (``select KVM_GUEST_MEMFD``; arm64 since "KVM: arm64: Enable
      support for guest_memfd backed memory", 6.18); never RISC-V.
    * guest_memfd slots: 6.12 ``check_memory_region_flags()`` allows ``KVM_MEM_GUEST_MEMFD``
      only if ``kvm_arch_has_private_mem(kvm)``; 6.18 and 7.3 on every VM of an arch with
      guest_memfd (the host's 6.18 accepts a guest_memfd slot on a default x86 VM).
    * guest_memfd creation flags: 6.12 ``valid_flags = 0``; 6.18 and 7.3 MMAP, and
      INIT_SHARED where ``kvm_arch_supports_gmem_init_shared()`` (x86: no private memory;
      the ``__weak`` default elsewhere: always). The host's 6.18 reports
      ``KVM_CAP_GUEST_MEMFD_FLAGS`` = 3.
    * overlapping bindings: ``kvm_gmem_bind()`` fails with EINVAL in 6.12 and 6.18, EEXIST
      from 7.2 ("Return -EEXIST instead of -EINVAL", KVM guest_memfd changes for 7.2).
    * memory attributes: x86 only (``KVM_GENERIC_MEMORY_ATTRIBUTES``), all three versions.

    Proposals add: ``riscv-gmem`` guest_memfd on RISC-V (with the version's generic flags);
    ``arm64-private``/``riscv-private`` memory attributes and private memory (and on 6.12,
    arm64 guest_memfd); ``userfault`` the KVM_MEM_USERFAULT flag.
    """
    known = arch in _USER_ADDR_END
    vm_type = settings.get("vm_type", "default")
    if arch == "x86":
        has_private_mem = vm_type in _X86_PRIVATE_MEM
        guest_memfd = True  # KVM_SW_PROTECTED_VM=y selects it in 6.12 too
        memory_attributes = True
        has_readonly_mem = vm_type not in _X86_PROTECTED_STATE
        init_shared = not has_private_mem  # arch/x86/kvm/x86.c kvm_arch_supports_gmem_init_shared()
    elif arch == "arm64":
        has_private_mem = "arm64-private" in proposals
        guest_memfd = kernel >= (6, 18) or has_private_mem
        memory_attributes = has_private_mem
        has_readonly_mem = True
        init_shared = True
    elif arch == "riscv":
        has_private_mem = "riscv-private" in proposals
        guest_memfd = "riscv-gmem" in proposals
        memory_attributes = has_private_mem
        has_readonly_mem = True
        init_shared = True
    else:  # kvmcore's generic model for arches it does not know
        has_private_mem = guest_memfd = memory_attributes = has_readonly_mem = init_shared = True
    if kernel >= (6, 18):
        gmem_slots = guest_memfd
        gmem_flags = abi.GUEST_MEMFD_FLAG_MMAP | (abi.GUEST_MEMFD_FLAG_INIT_SHARED if init_shared else 0)
    else:
        gmem_slots = guest_memfd and (has_private_mem or arch != "x86")
        gmem_flags = 0 if known else abi.GUEST_MEMFD_FLAG_MMAP | abi.GUEST_MEMFD_FLAG_INIT_SHARED
    userfault = "userfault" in proposals and (arch != "riscv" or "riscv-userfault" in proposals)
    return VmConfig(
        guest_memfd=guest_memfd,
        gmem_slots=gmem_slots,
        gmem_flags=gmem_flags,
        memory_attributes=memory_attributes,
        supported_attributes=abi.KVM_MEMORY_ATTRIBUTE_PRIVATE if has_private_mem else 0,
        has_private_mem=has_private_mem,
        has_readonly_mem=has_readonly_mem,
        nr_memslot_as_ids=(1 if has_private_mem else 2) if arch == "x86" else 1,
        user_mem_slots=KVM_MEM_SLOTS_NUM - (3 if arch == "x86" else 0),
        user_addr_end=_USER_ADDR_END.get(arch, 1 << 47),
        unknown_ioctl_errno=_UNKNOWN_IOCTL.get(arch, errno.ENOTTY),
        userfault=userfault,
        gmem_overlap_errno=errno.EEXIST if kernel >= (7, 2) else errno.EINVAL,
        gmem_bind_split=kernel >= (7, 3),
        enable_caps=_GENERIC_ENABLE_CAPS
        | _ARCH_ENABLE_CAPS.get(arch, frozenset())
        # 6.19+ arm64 kvm_vm_ioctl_enable_cap(): KVM_CAP_ARM_SEA_TO_USER (7.3 arch/arm64/kvm/arm.c)
        | (frozenset({abi.KVM_CAP_ARM_SEA_TO_USER}) if arch == "arm64" and kernel >= (6, 19) else frozenset()),
    )
