"""``X86Fault``: kvmcore's ``struct kvm_page_fault`` for x86 (``arch/x86/kvm/mmu/mmu_internal.h``).

The five fields common code asserts (``KVM_ASSERT_TYPE_IS`` in KVM Userfault v3) come first;
then the x86 fields with the kernel's names; then the raw syndrome KVM built the fault from
(``vendor``, ``exit_qualification``/``npf_error_code``, ``gpa``, ``gla``) and kvmcore's
modelling inputs for the instruction emulator (``mmio_len``, ``mmio_data``).

:class:`X86Fault` is a dataclass whose ``__init__`` is written out and whose ``__repr__`` and
``__eq__`` are the core's shared ``kvmcore.fields_repr``/``fields_eq`` (CPython 3.11 compiles the
methods ``@dataclass`` generates from source at every import, and ``kvmcore plugins`` loads every
arch); ``tests/test_types.py`` holds them to what ``make_dataclass`` generates.
"""

from __future__ import annotations

from dataclasses import dataclass

import kvmcore
from kvmcore_x86.pferr import (
    PFERR_FETCH_MASK,
    PFERR_GUEST_RMP_MASK,
    PFERR_PRESENT_MASK,
    PFERR_RSVD_MASK,
    PFERR_WRITE_MASK,
)

# enum pg_level (arch/x86/include/asm/pgtable_types.h)
PG_LEVEL_4K = 1
PG_LEVEL_2M = 2
PG_LEVEL_1G = 3
#: KVM_MAX_HUGEPAGE_LEVEL on a host with 1 GiB pages (what TDP on modern CPUs uses).
KVM_MAX_HUGEPAGE_LEVEL = PG_LEVEL_1G
#: Bytes mapped by one leaf at each level (KVM_HPAGE_SIZE).
LEVEL_SIZE = {PG_LEVEL_4K: 1 << 12, PG_LEVEL_2M: 1 << 21, PG_LEVEL_1G: 1 << 30}
SIZE_LEVEL = {size: level for level, size in LEVEL_SIZE.items()}

#: The registers ``decode_fault`` accepts (``ArchInfo.registers``) and kvmcore's modelling inputs.
#: Here, not in :mod:`kvmcore_x86.decode`, so that loading the plugin does not import the decoder.
REGISTERS = ("vendor", "exit_qualification", "gpa", "gla", "error_code")
MODEL_KEYS = ("exit_reason", "private", "len", "data", "traced")

#: ``fault_kind`` values, in the order ``fault_kind()`` tests them.
FAULT_KINDS = ("rsvd", "rmp", "not_present", "write_protect", "exec_protect", "read_protect")


@dataclass(slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore.fields_repr
class X86Fault:
    """One x86 TDP guest fault, as ``kvm_mmu_do_page_fault()`` builds ``struct kvm_page_fault``.

    ``exec``/``write``/``present``/``rsvd``/``user`` are the PFERR FETCH/WRITE/PRESENT/RSVD/USER
    bits of ``error_code``; ``is_private`` is ``error_code & PFERR_PRIVATE_ACCESS``. ``gfn`` is
    ``addr >> PAGE_SHIFT`` with the TDX shared bit stripped (``kvm_gfn_direct_bits()``).
    Levels are ``enum pg_level``: 1 = 4K, 2 = 2M, 3 = 1G.
    """

    # -- the common contract ----------------------------------------------------------------
    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: kvmcore.Memslot | None
    # -- struct kvm_page_fault (x86) ----------------------------------------------------------
    #: The faulting GPA as KVM got it (TDP: GUEST_PHYSICAL_ADDRESS / EXITINFO2; TDX shared bit kept).
    addr: int
    #: The PFERR_* word KVM built (``__vmx_handle_ept_violation()`` / ``npf_interception()``).
    error_code: int
    present: bool
    rsvd: bool
    user: bool
    # -- the raw syndrome -----------------------------------------------------------------------
    #: ``"vmx"`` (EPT violation/misconfig) or ``"svm"`` (#NPF).
    vendor: str
    #: The full faulting guest physical address, page offset included (same as ``addr``).
    gpa: int
    #: kvmcore's short name of the kind of fault (``FAULT_KINDS``).
    fault_kind: str
    #: VMX: the exit qualification KVM used (TDX private: forced to ACC_WRITE); None for SVM
    #: and for an EPT misconfiguration, which has none.
    exit_qualification: int | None = None
    #: SVM: EXITINFO1 as hardware reported it; None for VMX.
    npf_error_code: int | None = None
    #: VMX: the guest linear address when exit-qualification bit 7 says it is valid, else None.
    gla: int | None = None
    prefetch: bool = False
    is_tdp: bool = True
    nx_huge_page_workaround_enabled: bool = False
    huge_page_disallowed: bool = False
    max_level: int = KVM_MAX_HUGEPAGE_LEVEL
    req_level: int = PG_LEVEL_4K
    goal_level: int = PG_LEVEL_4K
    pfn: int = kvmcore.KVM_PFN_ERR_FAULT
    map_writable: bool = False
    # -- kvmcore's modelling input for the emulator (raw ``len``/``data``) ----------------------
    #: Access width the emulator would decode from the instruction; None when not given.
    mmio_len: int | None = None
    #: The value a write stores (for the KVM_EXIT_MMIO of an emulated write).
    mmio_data: int = 0

    def __init__(
        self,
        gfn: int,
        exec: bool,
        write: bool,
        is_private: bool,
        slot: kvmcore.Memslot | None,
        addr: int,
        error_code: int,
        present: bool,
        rsvd: bool,
        user: bool,
        vendor: str,
        gpa: int,
        fault_kind: str,
        exit_qualification: int | None = None,
        npf_error_code: int | None = None,
        gla: int | None = None,
        prefetch: bool = False,
        is_tdp: bool = True,
        nx_huge_page_workaround_enabled: bool = False,
        huge_page_disallowed: bool = False,
        max_level: int = 3,
        req_level: int = 1,
        goal_level: int = 1,
        pfn: int = 9218868437227405312,
        map_writable: bool = False,
        mmio_len: int | None = None,
        mmio_data: int = 0,
    ) -> None:
        self.gfn = gfn
        self.exec = exec
        self.write = write
        self.is_private = is_private
        self.slot = slot
        self.addr = addr
        self.error_code = error_code
        self.present = present
        self.rsvd = rsvd
        self.user = user
        self.vendor = vendor
        self.gpa = gpa
        self.fault_kind = fault_kind
        self.exit_qualification = exit_qualification
        self.npf_error_code = npf_error_code
        self.gla = gla
        self.prefetch = prefetch
        self.is_tdp = is_tdp
        self.nx_huge_page_workaround_enabled = nx_huge_page_workaround_enabled
        self.huge_page_disallowed = huge_page_disallowed
        self.max_level = max_level
        self.req_level = req_level
        self.goal_level = goal_level
        self.pfn = pfn
        self.map_writable = map_writable
        self.mmio_len = mmio_len
        self.mmio_data = mmio_data

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq

    @property
    def page_walk(self) -> bool | None:
        """Whether the fault hit the guest's own page-table walk (True) or the final translation
        (False); None when the syndrome does not say.

        VMX: exit qualification bit 7 (guest linear address valid) and bit 8 (1: access to the
        translated address, 0: access to a guest paging structure), SDM Table 28-7; bit 7 clear
        leaves bit 8 undefined. SVM: #NPF EXITINFO1 bit 33 GUEST_PAGE / bit 32 GUEST_FINAL (APM
        vol. 2, 15.25.6).
        """
        eq = self.exit_qualification
        if eq is not None:
            return None if not eq & 0x80 else not eq & 0x100
        npf = self.npf_error_code
        if npf is not None:
            if npf & (1 << 33):
                return True
            if npf & (1 << 32):
                return False
        return None


def fault_kind(error_code: int) -> str:
    """Name the fault from its PFERR word (kvmcore's naming, documented in ``docs/arch/x86.md``).

    ``"rsvd"``: EPT misconfiguration or #NPF with RSV (an MMIO SPTE); ``"rmp"``: SNP RMP
    violation (#NPF bit 31); ``"not_present"``: no stage-2 entry (P clear); otherwise a
    protection violation: ``"write_protect"``, ``"exec_protect"``, or ``"read_protect"``.
    """
    if error_code & PFERR_RSVD_MASK:
        return "rsvd"
    if error_code & PFERR_GUEST_RMP_MASK:
        return "rmp"
    if not error_code & PFERR_PRESENT_MASK:
        return "not_present"
    if error_code & PFERR_WRITE_MASK:
        return "write_protect"
    if error_code & PFERR_FETCH_MASK:
        return "exec_protect"
    return "read_protect"


__all__ = [
    "FAULT_KINDS",
    "KVM_MAX_HUGEPAGE_LEVEL",
    "LEVEL_SIZE",
    "PG_LEVEL_1G",
    "PG_LEVEL_2M",
    "PG_LEVEL_4K",
    "SIZE_LEVEL",
    "X86Fault",
    "fault_kind",
]
