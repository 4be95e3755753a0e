"""The VM and vCPU: the state a guest fault is resolved against, and the fault pipeline.

Calls are named after the ioctls they model and fail with the errno the kernel returns
(``kvmcore.KvmError``, an ``OSError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvmcore import _args, abi
from kvmcore._types import Exit, FaultResult, Mapped, Memslot, Retry, Signal
from kvmcore.abi import (
    EBADF,
    EEXIST,
    EFAULT,
    EINVAL,
    ENOENT,
    ENOMEM,
    KVM_CAP_GUEST_MEMFD,
    KVM_CAP_GUEST_MEMFD_FLAGS,
    KVM_CAP_HALT_POLL,
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
    KVM_CAP_MEMORY_ATTRIBUTES,
    KVM_CAP_MEMORY_FAULT_INFO,
    KVM_CAP_MULTI_ADDRESS_SPACE,
    KVM_CAP_NR_MEMSLOTS,
    KVM_CAP_READONLY_MEM,
    KVM_CAP_USER_MEMORY2,
    KVM_CAP_USERFAULT,
    KVM_CAP_VM_TYPES,
    KVM_EXIT_MEMORY_FAULT,
    KVM_EXIT_UNKNOWN,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_MAX_NR_PAGES,
    KVM_MEM_READONLY,
    KVM_MEM_USERFAULT,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)
from kvmcore.errors import KvmcoreError, KvmError
from kvmcore.kvm.designs import ExitDesign, check_arch_designs, exit_design
from kvmcore.kvm.faultin import kvm_prepare_memory_fault_exit
from kvmcore.kvm.fdtable import fget, install
from kvmcore.kvm.host_mm import HostMemory
from kvmcore.kvm.kconfig import VmConfig, vm_config
from kvmcore.kvm.memory_attributes import MemoryAttributes
from kvmcore.kvm.memslot import Memslots
from kvmcore.kvm.proposals import PROPOSALS, resolve_proposals
from kvmcore.kvm.stage2 import Stage2
from kvmcore.kvm.userfault import as_bitmap
from kvmcore.kvm.version import DEFAULT_KERNEL, KernelVersion
from kvmcore.plugin.contract import check_fault
from kvmcore.plugin.isolation import short_repr
from kvmcore.plugin.loader import Arch, arch_from

if TYPE_CHECKING:  # imported by the two calls that need it: a VM without guest_memfd never does
    from kvmcore.kvm.guest_memfd import GuestMemfd

KVM_MR_CREATE, KVM_MR_DELETE, KVM_MR_MOVE, KVM_MR_FLAGS_ONLY = "create", "delete", "move", "flags_only"

#: Bytes of dirty bitmaps one VM may hold: the bitmap of one slot of KVM_MEM_MAX_NR_PAGES
#: pages (256 MiB). Beyond it a slot's dirty log is ENOMEM, as the kernel's
#: ``kvm_alloc_dirty_bitmap()`` fails when ``__vcalloc()`` does: a limit of kvmcore's, which
#: keeps the model's memory bounded for any input.
DIRTY_BITMAP_BUDGET = (KVM_MEM_MAX_NR_PAGES + 63) // 64 * 8


class VM:
    """A KVM VM of one architecture: ``kvmcore.VM("arm64", kernel="6.18", granule="16K")``.

    :param arch: an installed arch's name, a loaded ``kvmcore.Arch``, or a plugin object
        (a module with hookimpls) for plugins that have no entry point.
    :param kernel: the kernel modelled (``kvmcore.KERNEL_VERSIONS``; default the newest),
        as ``"6.18"``, ``(6, 18)`` or a ``kvmcore.KernelVersion``: ``vm.kernel``.
    :param proposals: the designs beyond upstream that are on (``kvmcore.PROPOSALS``):
        None for the defaults, ``()`` for upstream mode (that kernel exactly): ``vm.proposals``.
    :param designs: the same as ``proposals`` (the memory-fault exit designs of
        ``docs/designs.md`` are proposals); give one or the other.
    :param settings: the arch's VM settings (``ArchInfo.settings``), checked by the
        ``configure_vm`` hook.
    """

    def __init__(
        self, arch: Any, kernel: Any = DEFAULT_KERNEL, proposals: Any = None, designs: Any = None, **settings: Any
    ) -> None:
        self.arch: Arch = arch_from(arch)
        self.kernel: KernelVersion = KernelVersion.parse(kernel)
        if designs is not None:  # a thin alias of proposals= (the spelling)
            if proposals is not None:
                raise ValueError("give proposals= or designs= (the same thing), not both")
            proposals = designs
        self.proposals: frozenset[str] = resolve_proposals(self.arch.name, proposals)
        check_arch_designs(self.arch.name, self.arch.info.designs, self.proposals)
        #: The memory-fault exit path the proposals select (kvmcore/kvm/designs.py).
        self.exit_design: ExitDesign = exit_design(self.proposals)
        self._annotate_efault = self.exit_design.annotate_efault
        self.page_shift = self.arch.info.page_shift
        self.settings: dict[str, Any] = dict(self.arch.configure_vm(self, settings) or {})
        self.page_size = 1 << self.page_shift
        #: What this VM's kernel offers (``kconfig.vm_config()``): valid flags, ioctls, limits.
        self.config: VmConfig = vm_config(self.arch.name, self.kernel, self.proposals, self.settings)
        self.memslots = Memslots()
        self._address_spaces: dict[int, Memslots] = {0: self.memslots}
        #: The VM's file descriptor (``KVM_CREATE_VM``): a file that is no guest_memfd.
        self.fd = install(self)
        self.stage2 = Stage2(self.page_shift)
        self.host = HostMemory(self.page_shift, self._host_invalidate)
        self.attributes = MemoryAttributes()
        self.vcpus: list[VCPU] = []
        self.caps: dict[int, int] = {}
        self._gmem: dict[int, GuestMemfd] = {}
        self._dirty_bytes = 0  # dirty bitmaps held, against DIRTY_BITMAP_BUDGET
        self._next_gmem_pfn = 1 << 40 >> self.page_shift  # private pfns far from host ones

    def __repr__(self) -> str:
        slots = len(self.memslots) if hasattr(self, "memslots") else 0  # also while configure_vm runs
        return f"<VM {self.arch.name} kernel={self.kernel} slots={slots}>"

    def has_proposal(self, name: str) -> bool:
        """Is the proposal ``name`` (a key of ``kvmcore.PROPOSALS``) on for this VM?

        ValueError for a name that is no proposal, so a misspelling cannot read as "off".
        """
        if name in self.proposals:
            return True
        if name not in PROPOSALS:
            raise ValueError(f"has_proposal({name!r}): no such proposal (known: {', '.join(PROPOSALS)})")
        return False

    # -- vCPUs and caps -------------------------------------------------------------------------
    def create_vcpu(self) -> VCPU:
        """``KVM_CREATE_VCPU``: a vCPU with its own ``kvm_run``."""
        vcpu = VCPU(self, len(self.vcpus))
        self.vcpus.append(vcpu)
        return vcpu

    def enable_cap(self, cap: int, arg: int = 0, flags: int = 0) -> None:
        """``KVM_ENABLE_CAP`` on the VM, e.g. ``KVM_CAP_ARM_NISV_TO_USER``.

        Mirrors ``kvm_vm_ioctl_enable_cap_generic()`` (the same in 6.12 and 7.3) and the
        arch's ``kvm_vm_ioctl_enable_cap()`` for the capabilities kvmcore models
        (``vm.config.enable_caps``): any other capability, or one that can only be checked
        (``KVM_CAP_GUEST_MEMFD``, v3's ``KVM_CAP_USERFAULT``...), is EINVAL, as are non-zero
        ``flags`` and, for ``KVM_CAP_HALT_POLL``, an ``arg`` that is no ``unsigned int``.
        """
        _check_u("cap", cap, 32)
        _check_u("flags", flags, 32)
        _check_u("arg", arg, 64)
        if cap not in self.config.enable_caps:
            raise KvmError(EINVAL, f"enable_cap: capability {cap} cannot be enabled on this {self.arch.name} VM")
        if flags:
            raise KvmError(EINVAL, f"enable_cap({cap}): flags must be 0, got {flags:#x}")
        if cap == KVM_CAP_HALT_POLL and not 0 <= arg <= 0xFFFF_FFFF:
            raise KvmError(EINVAL, f"enable_cap(KVM_CAP_HALT_POLL): {arg} does not fit an unsigned int")
        if cap == KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2:
            allowed = 3 if arg & 1 else 1  # KVM_DIRTY_LOG_MANUAL_CAPS once ENABLE is set
            if arg < 0 or arg & ~allowed:
                raise KvmError(EINVAL, f"enable_cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): bad options {arg:#x}")
        self.caps[cap] = arg

    def has_cap(self, cap: int) -> bool:
        return cap in self.caps

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION`` on the VM for the capabilities kvmcore models (else 0).

        Mirrors ``kvm_vm_ioctl_check_extension_generic()``: 6.12 reports ``KVM_CAP_GUEST_MEMFD``
        only for a VM with private memory and has no ``KVM_CAP_GUEST_MEMFD_FLAGS``; 6.18+
        reports 1 and the supported flags wherever guest_memfd exists.
        """
        config = self.config
        if cap == KVM_CAP_USER_MEMORY2:
            return 1
        if cap == KVM_CAP_NR_MEMSLOTS:
            return config.user_mem_slots
        if cap == KVM_CAP_READONLY_MEM:
            return int(config.has_readonly_mem)
        if cap == KVM_CAP_MULTI_ADDRESS_SPACE and self.arch.name == "x86":
            return config.nr_memslot_as_ids
        if cap == KVM_CAP_MEMORY_ATTRIBUTES and config.memory_attributes:
            return config.supported_attributes
        if cap == KVM_CAP_GUEST_MEMFD and config.guest_memfd:
            return 1 if self.kernel >= (6, 18) else int(config.has_private_mem)
        if cap == KVM_CAP_GUEST_MEMFD_FLAGS and config.guest_memfd and self.kernel >= (6, 18):
            return config.gmem_flags
        if cap == KVM_CAP_USERFAULT and config.userfault:
            return 1
        if cap == KVM_CAP_MEMORY_FAULT_INFO:
            # arch/x86/kvm/x86.c:kvm_vm_ioctl_check_extension() (6.12 and 7.3): 1; no other arch reports it
            return int(self.arch.name == "x86")
        if cap == KVM_CAP_VM_TYPES and self.arch.name == "x86":
            # x86.c: kvm_caps.supported_vm_types = BIT(KVM_X86_DEFAULT_VM), | BIT(KVM_X86_SW_PROTECTED_VM)
            # with CONFIG_KVM_SW_PROTECTED_VM and the TDP MMU (the kernel kconfig.py assumes); the SEV
            # and TDX bits need that hardware (svm/sev.c, vmx/main.c), which kvmcore does not assume
            return 1 << 0 | 1 << 1
        return 0

    # -- memslots ------------------------------------------------------------------------------
    def set_user_memory_region(
        self,
        slot: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int | None = None,
        flags: int = 0,
        guest_memfd: int | None = None,
        guest_memfd_offset: int = 0,
        userfault_bitmap: Any = None,
    ) -> Memslot | None:
        """``KVM_SET_USER_MEMORY_REGION2``: create, move, change the flags of, or delete a slot.

        Mirrors ``kvm_vm_ioctl_set_memory_region()`` and ``kvm_set_memory_region()`` (6.12:
        ``__kvm_set_memory_region()``) check by check, with KVM Userfault v3's rules when the
        ``userfault`` proposal is on; every refusal is the kernel's errno, and what differs by
        arch, VM type or version comes from ``vm.config`` (``kconfig.py``).
        ``userspace_addr=None`` maps fresh read-write anonymous memory for the slot. Slots of
        address space 1 (x86's SMM) are kept but no fault looks them up. Returns the new slot
        (``None`` after a delete).
        """
        config = self.config
        npages = self._check_memory_region(slot, guest_phys_addr, memory_size, userspace_addr, flags, guest_memfd_offset)
        if guest_memfd is not None:
            _args.integer("set_user_memory_region", "guest_memfd", guest_memfd)
        as_id, slot_id = slot >> 16, slot & 0xFFFF
        bitmap = None
        if flags & KVM_MEM_USERFAULT:
            if userfault_bitmap is None:
                raise KvmError(EINVAL, f"slot {slot}: KVM_MEM_USERFAULT needs a userfault_bitmap")
            bitmap = as_bitmap(userfault_bitmap, npages, slot)

        memslots = self._address_space(as_id)
        old = memslots.by_id.get(slot_id)
        if flags & KVM_MEM_LOG_DIRTY_PAGES and memory_size and (old is None or old.dirty_bitmap is None):
            need = (npages + 63) // 64 * 8
            if self._dirty_bytes + need > DIRTY_BITMAP_BUDGET:
                raise KvmError(ENOMEM, f"slot {slot}: a dirty bitmap of {need:,} bytes would exceed the "
                               f"{DIRTY_BITMAP_BUDGET:,} bytes kvmcore allows a VM (kvm_alloc_dirty_bitmap())")
        if memory_size == 0:
            if old is None:
                raise KvmError(EINVAL, f"slot {slot}: deleting a slot that does not exist")
            self._delete_slot(old, memslots)
            return None
        base_gfn = guest_phys_addr >> self.page_shift
        if old is None:
            change = KVM_MR_CREATE
        else:
            if flags & KVM_MEM_GUEST_MEMFD and not config.userfault:
                raise KvmError(EINVAL, f"slot {slot}: guest_memfd memslots are immutable, they can only be deleted")
            if userspace_addr is None:
                userspace_addr = old.userspace_addr
            if userspace_addr != old.userspace_addr or npages != old.npages or (
                (flags ^ old.flags) & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD)
            ):
                raise KvmError(
                    EINVAL,
                    f"slot {slot}: an existing slot may change only its base address or LOG_DIRTY_PAGES/USERFAULT "
                    "flags (userspace_addr, size, READONLY and GUEST_MEMFD are fixed)",
                )
            if base_gfn != old.base_gfn:
                change = KVM_MR_MOVE
                if old.flags & KVM_MEM_GUEST_MEMFD:
                    raise KvmError(EINVAL, f"slot {slot}: a guest_memfd slot cannot be moved, only deleted")
            elif flags != old.flags:
                change = KVM_MR_FLAGS_ONLY
            else:
                return old  # "Nothing to change": the kernel returns before touching the slot
        if change in (KVM_MR_CREATE, KVM_MR_MOVE):
            other = memslots.overlapping(base_gfn, base_gfn + npages, ignore_id=slot_id)
            if other is not None:
                raise KvmError(
                    EEXIST,
                    f"slot {slot}: [{guest_phys_addr:#x}, {guest_phys_addr + memory_size:#x}) overlaps slot {other.id} "
                    f"[{other.guest_phys_addr:#x}, {other.guest_phys_addr + other.memory_size:#x})",
                )
        if change == KVM_MR_CREATE:
            gmem = None
            if flags & KVM_MEM_GUEST_MEMFD:
                gmem = self._gmem_for_slot(slot, guest_memfd)
                gmem.check_range(guest_memfd_offset, memory_size)
            mapped_here = userspace_addr is None
            if userspace_addr is None:
                userspace_addr = self.host.mmap(memory_size)
            new = Memslot(slot_id, base_gfn, npages, userspace_addr, flags, self.page_shift, gmem, guest_memfd_offset, bitmap)
            bound = False
            try:
                if gmem is not None and not config.gmem_bind_split:
                    gmem.bind(slot_id, guest_memfd_offset, memory_size, config.gmem_overlap_errno)  # kvm_gmem_bind()
                    bound = True
                self._prepare_memory_region(old, new, change)
                if gmem is not None and config.gmem_bind_split:
                    gmem.bind(slot_id, guest_memfd_offset, memory_size, config.gmem_overlap_errno)  # commit (7.3)
                    bound = True
            except KvmError:
                if bound:
                    assert gmem is not None
                    gmem.unbind(slot_id)
                if mapped_here:
                    self.host.munmap(userspace_addr, memory_size)
                raise
            self._set_dirty_log(new)
            memslots.add(new)
            return new
        assert old is not None
        new = Memslot(slot_id, base_gfn, npages, old.userspace_addr, flags, self.page_shift, old.gmem, old.gmem_pgoff, bitmap, old.dirty_bitmap)
        self._prepare_memory_region(old, new, change)
        self._set_dirty_log(new)
        memslots.remove(old)
        memslots.add(new)
        if memslots is not self.memslots:
            return new
        if change == KVM_MR_MOVE:
            self.stage2.unmap_range(old.base_gfn, old.end_gfn)
            return new
        # KVM_MR_FLAGS_ONLY
        enabled = flags & ~old.flags
        if enabled & KVM_MEM_USERFAULT:
            # kvm_arch_userfault_enabled(): the default flushes the whole memslot
            self.stage2.unmap_range(new.base_gfn, new.end_gfn)
        if enabled & KVM_MEM_LOG_DIRTY_PAGES:
            # kvm_mmu_slot_apply_flags(): write-protect so that writes fault and get logged
            self.stage2.write_protect_range(new.base_gfn, new.end_gfn)
        return new

    def _check_memory_region(
        self, slot: int, guest_phys_addr: int, memory_size: int, userspace_addr: int | None, flags: int, guest_memfd_offset: int
    ) -> int:
        """The argument checks of ``kvm_vm_ioctl_set_memory_region()`` and
        ``kvm_set_memory_region()``, made before anything is allocated: returns the slot's page
        count. The scenario runner asks them too before it sizes a userfault bitmap."""
        config = self.config
        _check_u("slot", slot, 32)
        _check_u("flags", flags, 32)
        _check_u("guest_phys_addr", guest_phys_addr, 64)
        _check_u("memory_size", memory_size, 64)
        _check_u("guest_memfd_offset", guest_memfd_offset, 64)
        if userspace_addr is not None:
            _check_u("userspace_addr", userspace_addr, 64)
        page_mask = self.page_size - 1
        as_id, slot_id = slot >> 16, slot & 0xFFFF
        if slot_id >= config.user_mem_slots:  # kvm_vm_ioctl_set_memory_region()
            raise KvmError(EINVAL, f"slot {slot}: id {slot_id} must be below KVM_USER_MEM_SLOTS ({config.user_mem_slots})")
        self._check_region_flags(slot, flags)
        if memory_size & page_mask:
            raise KvmError(EINVAL, f"slot {slot}: memory_size {memory_size:#x} is not a multiple of PAGE_SIZE {self.page_size:#x}")
        if guest_phys_addr & page_mask:
            raise KvmError(EINVAL, f"slot {slot}: guest_phys_addr {guest_phys_addr:#x} is not PAGE_SIZE aligned")
        if userspace_addr is not None and (
            userspace_addr & page_mask or userspace_addr + memory_size > config.user_addr_end
        ):
            raise KvmError(
                EINVAL,
                f"slot {slot}: userspace_addr {userspace_addr:#x} is not PAGE_SIZE aligned or [hva, hva + size) is not "
                f"below the user address limit {config.user_addr_end:#x} (access_ok)",
            )
        if flags & KVM_MEM_GUEST_MEMFD and (guest_memfd_offset & page_mask or guest_memfd_offset + memory_size >= 1 << 64):
            raise KvmError(EINVAL, f"slot {slot}: guest_memfd_offset {guest_memfd_offset:#x} is not PAGE_SIZE aligned or wraps")
        if as_id >= config.nr_memslot_as_ids:
            raise KvmError(EINVAL, f"slot {slot}: address space {as_id}, this VM has {config.nr_memslot_as_ids}")
        if guest_phys_addr + memory_size >= 1 << 64:
            raise KvmError(EINVAL, f"slot {slot}: guest_phys_addr + memory_size wraps")
        npages = memory_size >> self.page_shift
        if npages > KVM_MEM_MAX_NR_PAGES:
            raise KvmError(EINVAL, f"slot {slot}: {npages} pages exceed KVM_MEM_MAX_NR_PAGES")
        return npages

    def _address_space(self, as_id: int) -> Memslots:
        """``__kvm_memslots(kvm, as_id)``: address space 0 is ``vm.memslots``."""
        memslots = self._address_spaces.get(as_id)
        if memslots is None:
            memslots = self._address_spaces[as_id] = Memslots()
        return memslots

    def _gmem_for_slot(self, slot: int, fd: Any) -> GuestMemfd:
        """The file checks of ``kvm_gmem_bind()`` (7.3: ``kvm_gmem_prepare_memory_region()``),
        the same in every modelled version: no file -> EBADF; a file that is no guest_memfd,
        or another VM's guest_memfd -> EINVAL."""
        from kvmcore.kvm.guest_memfd import GuestMemfd

        file = fget(fd)
        if file is None:
            raise KvmError(EBADF, f"slot {slot}: guest_memfd {fd!r} is not an open file descriptor")
        if not isinstance(file, GuestMemfd):
            raise KvmError(EINVAL, f"slot {slot}: fd {fd} is not a guest_memfd")
        if file.owner is not self:
            raise KvmError(EINVAL, f"slot {slot}: guest_memfd {fd} belongs to another VM")
        return file

    def _prepare_memory_region(self, old: Memslot | None, new: Memslot, change: str) -> None:
        """``kvm_arch_prepare_memory_region()``: the arch may refuse with a KvmError."""
        self.arch.prepare_memory_region(self, old, new, change)

    def _check_region_flags(self, slot: int, flags: int) -> None:
        """Mirrors ``check_memory_region_flags()``: which flags are valid comes from
        ``vm.config`` (GUEST_MEMFD: 6.12 only with private memory, 6.18+ wherever guest_memfd
        exists; READONLY: ``kvm_arch_has_readonly_mem()``; USERFAULT: the v3 proposal)."""
        config = self.config
        valid = KVM_MEM_LOG_DIRTY_PAGES
        if config.gmem_slots:
            valid |= KVM_MEM_GUEST_MEMFD
        if config.userfault:
            valid |= KVM_MEM_USERFAULT
        if flags & KVM_MEM_GUEST_MEMFD:
            valid &= ~KVM_MEM_LOG_DIRTY_PAGES  # dirty logging private memory is unsupported
        elif config.has_readonly_mem:
            valid |= KVM_MEM_READONLY  # READONLY is incompatible with GUEST_MEMFD
        if flags & ~valid:
            bad = flags & ~valid
            reasons = {
                KVM_MEM_READONLY: "KVM_MEM_READONLY: not with KVM_MEM_GUEST_MEMFD, nor on a VM with protected state",
                KVM_MEM_LOG_DIRTY_PAGES: "KVM_MEM_GUEST_MEMFD slots cannot log dirty pages",
                KVM_MEM_GUEST_MEMFD: f"KVM_MEM_GUEST_MEMFD: no guest_memfd slots on this VM (kernel {self.kernel})",
                KVM_MEM_USERFAULT: "KVM_MEM_USERFAULT: the userfault proposal is off (upstream has no such flag)",
            }
            why = "; ".join(text for bit, text in reasons.items() if bad & bit)
            raise KvmError(EINVAL, f"slot {slot}: flags {flags:#x} have invalid bits {bad:#x}" + (f" ({why})" if why else ""))

    def _set_dirty_log(self, slot: Memslot) -> None:
        if slot.flags & KVM_MEM_LOG_DIRTY_PAGES:
            if slot.dirty_bitmap is None:
                slot.dirty_bitmap = bytearray((slot.npages + 63) // 64 * 8)
                self._dirty_bytes += len(slot.dirty_bitmap)
        elif slot.dirty_bitmap is not None:
            self._dirty_bytes -= len(slot.dirty_bitmap)
            slot.dirty_bitmap = None

    def _delete_slot(self, slot: Memslot, memslots: Memslots) -> None:
        if slot.dirty_bitmap is not None:
            self._dirty_bytes -= len(slot.dirty_bitmap)
        if memslots is self.memslots:
            self.stage2.unmap_range(slot.base_gfn, slot.end_gfn)
        memslots.remove(slot)
        if slot.gmem is not None:
            slot.gmem.unbind(slot.id)

    def get_dirty_log(self, slot: int) -> bytes:
        """``KVM_GET_DIRTY_LOG``: the slot's dirty bitmap (cleared, and re-write-protected).

        Mirrors ``kvm_get_dirty_log_protect()`` / ``kvm_get_dirty_log()`` (the same in 6.12 and
        7.3): an address space or slot id out of range is EINVAL; no such slot, or a slot that
        does not log dirty pages, is ENOENT.
        """
        _check_u("slot", slot, 32)
        as_id, slot_id = slot >> 16, slot & 0xFFFF
        if as_id >= self.config.nr_memslot_as_ids or slot_id >= self.config.user_mem_slots:
            raise KvmError(EINVAL, f"get_dirty_log: slot {slot:#x} is out of range")
        memslot = self._address_space(as_id).by_id.get(slot_id)
        if memslot is None or memslot.dirty_bitmap is None:
            raise KvmError(ENOENT, f"get_dirty_log: slot {slot}: " + ("no such slot" if memslot is None else "not logging dirty pages"))
        log = bytes(memslot.dirty_bitmap)
        memslot.dirty_bitmap[:] = bytes(len(memslot.dirty_bitmap))
        if as_id == 0:
            self.stage2.write_protect_range(memslot.base_gfn, memslot.end_gfn)
        return log

    def gfn_to_memslot(self, gfn: int) -> Memslot | None:
        """Mirrors ``gfn_to_memslot()``."""
        return self.memslots.find(gfn)

    # -- memory attributes -----------------------------------------------------------------------
    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int = 0) -> None:
        """``KVM_SET_MEMORY_ATTRIBUTES``: mark ``[address, address+size)`` private or shared.

        Mirrors ``kvm_vm_ioctl_set_mem_attributes()`` (the same in 6.12 and 7.3): where the
        kernel has no such ioctl (``CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES``: x86 only, or
        kvmcore's ``arm64-private``/``riscv-private``) the arch's unknown-ioctl errno; then
        ``EINVAL`` for flags, attribute bits the VM does not support
        (``kvm_supported_mem_attributes()``: PRIVATE only with private memory, so a default
        x86 VM accepts only 0), an empty, unaligned or wrapping range. Mappings of the range
        are zapped so the next access faults with the new attribute.
        """
        config = self.config
        _check_u("address", address, 64)
        _check_u("size", size, 64)
        _check_u("attributes", attributes, 64)
        _check_u("flags", flags, 64)
        if not config.memory_attributes:
            raise KvmError(
                config.unknown_ioctl_errno,
                f"set_memory_attributes: {self.arch.name} {self.kernel} has no KVM_SET_MEMORY_ATTRIBUTES"
                + ("" if self.arch.name == "x86" else f" (kvmcore's {self.arch.name}-private proposal adds it)"),
            )
        if flags:
            raise KvmError(EINVAL, f"set_memory_attributes: flags must be 0, got {flags:#x}")
        if attributes & ~config.supported_attributes:
            raise KvmError(
                EINVAL,
                f"set_memory_attributes: attribute bits {attributes:#x} are not supported by this VM "
                f"(supported: {config.supported_attributes:#x})",
            )
        if size == 0 or address + size >= 1 << 64:
            raise KvmError(EINVAL, f"set_memory_attributes: range [{address:#x}, +{size:#x}) is empty or wraps")
        if (address | size) & (self.page_size - 1):
            raise KvmError(EINVAL, f"set_memory_attributes: [{address:#x}, +{size:#x}) is not PAGE_SIZE aligned")
        start, end = address >> self.page_shift, (address + size) >> self.page_shift
        self.attributes.set(start, end, attributes)
        self.stage2.unmap_range(start, end)

    def mem_is_private(self, gfn: int) -> bool:
        """Mirrors ``kvm_mem_is_private()``."""
        return bool(self.attributes.get(gfn) & KVM_MEMORY_ATTRIBUTE_PRIVATE)

    # -- guest_memfd -----------------------------------------------------------------------------
    def create_guest_memfd(self, size: int, flags: int = 0) -> int:
        """``KVM_CREATE_GUEST_MEMFD``: returns a file descriptor number for ``guest_memfd=``.

        Mirrors ``kvm_gmem_create()``: no such ioctl where the kernel has no guest_memfd (the
        arch's unknown-ioctl errno); flags beyond ``vm.config.gmem_flags`` (6.12: any flag;
        6.18+: ``kvm_gmem_get_supported_flags()``) -> EINVAL; ``size`` as a ``loff_t``:
        ``size <= 0`` (so also any size of 2**63 or more) or not page aligned -> EINVAL.
        """
        config = self.config
        _check_u("size", size, 64)
        _check_u("flags", flags, 64)
        if not config.guest_memfd:
            raise KvmError(
                config.unknown_ioctl_errno,
                f"create_guest_memfd: {self.arch.name} {self.kernel} has no KVM_CREATE_GUEST_MEMFD",
            )
        if flags & ~config.gmem_flags:
            raise KvmError(
                EINVAL,
                f"create_guest_memfd: flags {flags:#x} are not supported (kernel {self.kernel} on this VM: {config.gmem_flags:#x})",
            )
        if size == 0 or size >= 1 << 63 or size & (self.page_size - 1):
            raise KvmError(EINVAL, f"create_guest_memfd: size {size:#x} is not a positive loff_t multiple of PAGE_SIZE")
        from kvmcore.kvm.guest_memfd import GuestMemfd

        fd = install(self)
        gmem = GuestMemfd(fd, size, flags, self._next_gmem_pfn, self.page_shift, invalidate=self._gmem_invalidate, owner=self)
        self._next_gmem_pfn += size >> self.page_shift
        self._gmem[fd] = gmem
        return fd

    def file_of(self, fd: int) -> object | None:
        """The file ``fd`` names among this VM's (the VM itself or one of its guest_memfds)."""
        return self if fd == self.fd else self._gmem.get(fd)

    def guest_memfd(self, fd: int) -> GuestMemfd:
        """The guest_memfd behind ``fd`` (``EBADF`` if there is none)."""
        gmem = self._gmem.get(fd)
        if gmem is None:
            raise KvmError(EBADF, f"fd {fd} is not a guest_memfd of this VM")
        return gmem

    # -- mmu notifiers ---------------------------------------------------------------------------
    def _host_invalidate(self, start: int, end: int) -> None:
        """``kvm_mmu_notifier_invalidate_range_start()``: zap gfns whose hva is in range."""
        for slot in self.memslots:
            lo = max(start, slot.userspace_addr)
            hi = min(end, slot.userspace_addr + slot.memory_size)
            if lo < hi:
                first = slot.base_gfn + ((lo - slot.userspace_addr) >> self.page_shift)
                last = slot.base_gfn + ((hi - slot.userspace_addr + self.page_size - 1) >> self.page_shift)
                self.stage2.unmap_range(first, last)

    def _gmem_invalidate(self, gmem: GuestMemfd, start: int, end: int) -> None:
        """``kvm_gmem_invalidate_begin()``: zap the gfns bound to ``[start, end)`` of the file."""
        for lo, hi, slot_id in gmem.bindings:
            if start < hi and lo < end:
                slot = self.memslots.by_id.get(slot_id)
                if slot is None or slot.gmem is not gmem:  # bound in another address space
                    continue
                first = slot.base_gfn + ((max(start, lo) - slot.gmem_pgoff) >> self.page_shift)
                last = slot.base_gfn + ((min(end, hi) - slot.gmem_pgoff) >> self.page_shift)
                self.stage2.unmap_range(first, last)


class _KvmRunOnFirstUse:
    """``VCPU.kvm_run`` until a vCPU's first read of it: makes the zeroed ``struct kvm_run`` and
    keeps it as a plain attribute of the vCPU, which from then on hides this descriptor (it has
    no ``__set__``). ctypes and the structure are imported then: ``kvmcore decode`` makes a
    vCPU and never runs it.

    Not ``functools.cached_property``: it stores through the instance ``__dict__``, which on
    CPython 3.11 turns the vCPU's inline attribute values into a dict, so that every attribute
    read on the fault path got slower (about 3% of a fault); nor a class ``__getattr__``, which
    keeps every read of a vCPU attribute from being specialised."""

    def __get__(self, vcpu: Any, owner: Any = None) -> Any:
        if vcpu is None:
            return self
        run = vcpu.kvm_run = abi.kvm_run()
        return run


class VCPU:
    """One vCPU: its ``kvm_run`` and the fault pipeline (``handle_fault``)."""

    def __init__(self, vm: VM, vcpu_id: int) -> None:
        self.vm = vm
        self.id = vcpu_id
        self.pending_signal: Signal | None = None

    if TYPE_CHECKING:
        kvm_run: abi.kvm_run
    else:
        kvm_run = _KvmRunOnFirstUse()

    def __repr__(self) -> str:
        return f"<VCPU {self.id} of {self.vm.arch.name} VM>"

    def handle_fault(self, raw: Mapping[str, int]) -> FaultResult:
        """Run one guest stage-2 fault through the pipeline, as ``KVM_RUN`` would.

        decode (``decode_fault``) -> find the memslot -> ``faultin_pfn`` (the arch's
        ordering of the common checks) -> install the mapping, resume, or exit.
        """
        run = self.kvm_run
        run.exit_reason = KVM_EXIT_UNKNOWN  # KVM_RUN resets it on entry
        self.pending_signal = None
        vm = self.vm
        arch = vm.arch
        # The hooks are called through the arch's bound direct callers (Arch._bind) inside this
        # one guard, which attributes a failure to the hook that was running (``hook``) as the
        # facade methods Arch.decode_fault/faultin_pfn do, without their extra frames.
        hook: str | None = "decode_fault"
        try:
            fault = arch._decode_fault(self, raw)
            if (
                type(fault) is not arch._fault_type
                or type(fault.gfn) is not int
                or type(fault.write) is not bool
                or type(fault.exec) is not bool
                or type(fault.is_private) is not bool
            ):
                raise arch._bad_decode(fault, raw)
            if arch.debug:
                check_fault(fault, arch.name, arch.info.fault_type)
            hook = None
            fault.slot = slot = vm.memslots.find(fault.gfn)
            hook = "faultin_pfn"
            result = arch._faultin_pfn(self, fault)
            hook = None
            if type(result) is Mapped:
                vm.stage2.map(fault.gfn, result.pfn, result.size, result.writable, result.exec)
                if result.writable and slot is not None and slot.dirty_bitmap is not None:
                    slot.mark_dirty(fault.gfn)
                return FaultResult(fault, 0, None, result.outcome, result, self.pending_signal)
            if type(result) is Retry:
                return FaultResult(fault, 0, None, result.outcome, None, self.pending_signal, result.detail)
            if type(result) is Exit:
                if vm._annotate_efault and result.ret == -EFAULT and run.exit_reason != KVM_EXIT_MEMORY_FAULT:
                    # annotate-efault: common code annotates what the arch left bare
                    kvm_prepare_memory_fault_exit(self, fault)
                return FaultResult(fault, result.ret, run.exit_reason, result.outcome, None, self.pending_signal, result.detail)
        except KvmcoreError:
            raise
        except Exception as exc:
            if hook is not None:  # a hook implementation raised
                error = arch._hook_failed(hook, exc, raw)
                if type(error) is TypeError:
                    raise error from None
                raise error from exc
            # the core choking on what a hook returned
            if not isinstance(raw, Mapping):
                raise  # the caller's TypeError
            raise arch._plugin_error("faultin_pfn", exc, f"its result broke the fault path: {type(exc).__name__}: {exc}") from exc
        raise arch._plugin_error("faultin_pfn", None, f"returned {short_repr(result)}, expected Mapped, Retry or Exit")


def _check_u(name: str, value: Any, bits: int) -> None:
    """A uAPI field must fit its C type (``__u32``/``__u64``): TypeError naming it for a
    non-integer, ValueError for an integer out of range (no ioctl could carry such a value)."""
    _args.integer("", name, value)  # TypeError naming it for a float, None, a bool...
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name}={value!r}: expected an integer in [0, 2**{bits}) (the uAPI field is __u{bits})")
