"""VMX EPT-violation exit qualification: decoding and the PFERR word KVM builds from it.

Exit reason 48 (EPT violation) reports the access in the exit qualification (Intel SDM
Vol. 3C, table "Exit Qualification for EPT Violations") and the GPA in
GUEST_PHYSICAL_ADDRESS. ``handle_ept_violation()`` traces the *raw* exit qualification and
``__vmx_handle_ept_violation()`` (``arch/x86/kvm/vmx/common.h``) turns it into PFERR bits.

Bits (names are the kernel's ``asm/vmx.h`` macros where one exists):

====  ===============================  =====================================================
bit   macro                            meaning (SDM)
====  ===============================  =====================================================
0     EPT_VIOLATION_ACC_READ           data read
1     EPT_VIOLATION_ACC_WRITE          data write
2     EPT_VIOLATION_ACC_INSTR          instruction fetch
3     EPT_VIOLATION_PROT_READ          GPA readable (AND of bit 0 over the EPT walk)
4     EPT_VIOLATION_PROT_WRITE         GPA writable
5     EPT_VIOLATION_PROT_EXEC          GPA executable (supervisor-executable under MBEC)
6     EPT_VIOLATION_PROT_USER_EXEC     user-executable; undefined unless MBEC is on
7     EPT_VIOLATION_GVA_IS_VALID       guest-linear-address field valid
8     EPT_VIOLATION_GVA_TRANSLATED     (bit 7 set) 1 = final GPA, 0 = paging-structure access
9     EPT_VIOLATION_GVA_USER           (bits 7+8, advanced info) user-mode linear address
10    EPT_VIOLATION_GVA_WRITABLE       (bits 7+8, advanced info) linear address writable
11    EPT_VIOLATION_GVA_NX             (bits 7+8, advanced info) linear address execute-disable
12    INTR_INFO_UNBLOCK_NMI            NMI unblocking due to IRET
13    (no kernel macro)                shadow-stack access
14    (no kernel macro)                supervisor shadow-stack page (undefined unless EPTP bit 7)
15    (no kernel macro)                caused by guest-paging verification
16    (no kernel macro)                asynchronous to instruction execution (PT, PEBS, UINTR)
====  ===============================  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from kvmcore import DecodeError
from kvmcore_x86.pferr import (
    PFERR_FETCH_MASK,
    PFERR_GUEST_FINAL_MASK,
    PFERR_GUEST_PAGE_MASK,
    PFERR_PRESENT_MASK,
    PFERR_PRIVATE_ACCESS,
    PFERR_USER_MASK,
    PFERR_WRITE_MASK,
    U64_MAX,
    SlotsAsDict,
    check_u64,
)

EXIT_REASON_EPT_VIOLATION = 48
EXIT_REASON_EPT_MISCONFIG = 49

EPT_VIOLATION_ACC_READ = 1 << 0
EPT_VIOLATION_ACC_WRITE = 1 << 1
EPT_VIOLATION_ACC_INSTR = 1 << 2
EPT_VIOLATION_PROT_READ = 1 << 3
EPT_VIOLATION_PROT_WRITE = 1 << 4
EPT_VIOLATION_PROT_EXEC = 1 << 5
EPT_VIOLATION_PROT_USER_EXEC = 1 << 6  # kernel define added after 6.18
EPT_VIOLATION_EXEC_FOR_RING3_LIN = EPT_VIOLATION_PROT_USER_EXEC  # TDX's name for bit 6 (6.16+)
# 6.15-6.18: bits 3-5 only. (After 6.18 the macro also includes bit 6; see ept_violation_to_pferr.)
EPT_VIOLATION_PROT_MASK = EPT_VIOLATION_PROT_READ | EPT_VIOLATION_PROT_WRITE | EPT_VIOLATION_PROT_EXEC
EPT_VIOLATION_GVA_IS_VALID = 1 << 7
EPT_VIOLATION_GVA_TRANSLATED = 1 << 8
EPT_VIOLATION_GVA_USER = 1 << 9  # kernel defines for 9-11 added after 6.18
EPT_VIOLATION_GVA_WRITABLE = 1 << 10
EPT_VIOLATION_GVA_NX = 1 << 11
INTR_INFO_UNBLOCK_NMI = 1 << 12
# Bits 13-16 have no kernel macro (checked against 7.2-era sources); named after the SDM text.
EPT_VIOLATION_SHADOW_STACK = 1 << 13
EPT_VIOLATION_SUPERVISOR_SHADOW_STACK = 1 << 14
EPT_VIOLATION_GUEST_PAGING_VERIFICATION = 1 << 15
EPT_VIOLATION_ASYNC_TO_INSTRUCTION = 1 << 16

EPT_VIOLATION_ACC_MASK = EPT_VIOLATION_ACC_READ | EPT_VIOLATION_ACC_WRITE | EPT_VIOLATION_ACC_INSTR
# SDM: bits 63:17 are reserved (cleared to 0).
EPT_VIOLATION_RESERVED_MASK = U64_MAX & ~((1 << 17) - 1)
_GVA_FINAL = EPT_VIOLATION_GVA_IS_VALID | EPT_VIOLATION_GVA_TRANSLATED

KERNELS = ("6.17", "6.18", "7.2")

#: Which form of ``__vmx_handle_ept_violation()`` each modelled kernel has (``vm.kernel``):
#: 6.12 (arch/x86/kvm/vmx/common.h): read -> USER, bits 3-5 -> PRESENT, bits 7/8 of the exit
#: qualification -> GUEST_FINAL/PAGE: the same mapping as the "6.18" form (the 6.15-6.17
#: regression, the "6.17" form, came later); 6.18 stable (the host's 6.18.44) has the fix;
#: 7.3 (arch/x86/kvm/vmx/common.h) is the "7.2" form.
PFERR_FORM = {"6.12": "6.18", "6.18": "6.18", "7.3": "7.2"}


def pferr_form(kernel: object) -> str:
    """The ``kernel=`` form of :func:`ept_violation_to_pferr` for a modelled ``vm.kernel``."""
    return PFERR_FORM[str(kernel)]


@dataclass(frozen=True, slots=True)
class EptViolation(SlotsAsDict):
    """One decoded EPT-violation exit qualification.

    A field is ``None`` where the SDM leaves the bit undefined: ``gla_translated`` without
    bit 7; ``adv_*`` unless bits 7 and 8 are both set (and the CPU reports advanced
    information); ``ept_user_executable`` unless MBEC is on; ``supervisor_shadow_stack``
    unless EPTP bit 7 (supervisor shadow-stack control) is set.
    """

    exit_qualification: int
    data_read: bool
    data_write: bool
    insn_fetch: bool
    ept_readable: bool
    ept_writable: bool
    ept_executable: bool
    ept_user_executable: bool | None
    gla_valid: bool
    gla_translated: bool | None
    adv_user: bool | None
    adv_writable: bool | None
    adv_nx: bool | None
    nmi_unblocking: bool
    shadow_stack: bool
    supervisor_shadow_stack: bool | None
    guest_paging_verification: bool
    async_to_instruction: bool

    @property
    def present(self) -> bool:
        """Some EPT permission bit (3-5) was set: a protection violation, not a missing entry."""
        return bool(self.exit_qualification & EPT_VIOLATION_PROT_MASK)


def decode_ept_violation(
    exit_qualification: int,
    *,
    mbec: bool = False,
    advanced_info: bool = True,
    eptp_sss: bool = False,
) -> EptViolation:
    """Decode an EPT-violation exit qualification (SDM table "Exit Qualification for EPT Violations").

    Keyword options say what the value alone cannot: ``mbec`` (the "mode-based execute
    control for EPT" is 1, so bit 6 is defined; KVM 6.15-6.18 never sets it), ``advanced_info``
    (the CPU reports advanced VM-exit information, IA32_VMX_EPT_VPID_CAP bit 22, so bits 9-11
    are defined when bits 7 and 8 are set), ``eptp_sss`` (EPTP bit 7 is set, so bit 14 is
    defined; KVM does not set it).

    Raises DecodeError, naming the value, for:

    * a value outside [0, 2**64);
    * any of bits 63:17 set (reserved, cleared to 0 by the CPU);
    * bit 8 set with bit 7 clear (the SDM says bit 8 is reserved, cleared to 0, if bit 7 is 0);
    * none of bits 0-2 set. Every EPT violation is caused by an access that the SDM classes as a
      data read, a data write or an instruction fetch (paging-structure reads count as reads,
      A/D updates as writes; a read-modify-write sets bit 1 and maybe bit 0), and bits 0-2 say
      which, so at least one is always set.
    """
    eq = check_u64(exit_qualification, "exit_qualification")
    return _decode_ept_violation(eq, mbec, advanced_info, eptp_sss)


# Building an 18-field frozen dataclass costs ~1.4 us in CPython; results are immutable and
# real workloads see few distinct exit qualifications, so memoize (errors are not cached).
@lru_cache(maxsize=4096)
def _decode_ept_violation(eq: int, mbec: bool, advanced_info: bool, eptp_sss: bool) -> EptViolation:
    if eq & EPT_VIOLATION_RESERVED_MASK:
        raise DecodeError(
            f"exit_qualification={eq:#x}: reserved bits {eq & EPT_VIOLATION_RESERVED_MASK:#x} set "
            "(bits 63:17 of an EPT-violation exit qualification are cleared to 0)"
        )
    gva = eq & _GVA_FINAL
    if gva == EPT_VIOLATION_GVA_TRANSLATED:
        raise DecodeError(
            f"exit_qualification={eq:#x}: bit 8 (GVA_TRANSLATED) set without bit 7 "
            "(GVA_IS_VALID); the SDM clears bit 8 when bit 7 is 0"
        )
    if not eq & EPT_VIOLATION_ACC_MASK:
        raise DecodeError(
            f"exit_qualification={eq:#x}: no access bit (0 read, 1 write, 2 fetch) set; "
            "every EPT violation is a read, a write or an instruction fetch"
        )
    adv = gva == _GVA_FINAL and advanced_info
    return EptViolation(
        eq,
        bool(eq & EPT_VIOLATION_ACC_READ),
        bool(eq & EPT_VIOLATION_ACC_WRITE),
        bool(eq & EPT_VIOLATION_ACC_INSTR),
        bool(eq & EPT_VIOLATION_PROT_READ),
        bool(eq & EPT_VIOLATION_PROT_WRITE),
        bool(eq & EPT_VIOLATION_PROT_EXEC),
        bool(eq & EPT_VIOLATION_PROT_USER_EXEC) if mbec else None,
        bool(gva),
        bool(eq & EPT_VIOLATION_GVA_TRANSLATED) if gva else None,
        bool(eq & EPT_VIOLATION_GVA_USER) if adv else None,
        bool(eq & EPT_VIOLATION_GVA_WRITABLE) if adv else None,
        bool(eq & EPT_VIOLATION_GVA_NX) if adv else None,
        bool(eq & INTR_INFO_UNBLOCK_NMI),
        bool(eq & EPT_VIOLATION_SHADOW_STACK),
        bool(eq & EPT_VIOLATION_SUPERVISOR_SHADOW_STACK) if eptp_sss else None,
        bool(eq & EPT_VIOLATION_GUEST_PAGING_VERIFICATION),
        bool(eq & EPT_VIOLATION_ASYNC_TO_INSTRUCTION),
    )


def ept_violation_to_pferr(
    exit_qualification: int,
    *,
    kernel: str = "6.18",
    mbec: bool = False,
    private: bool = False,
) -> int:
    """The PFERR word ``__vmx_handle_ept_violation()`` builds from an exit qualification.

    Mirrors ``arch/x86/kvm/vmx/common.h`` exactly, including its quirks; like the kernel it
    does not validate the value (call ``decode_ept_violation()`` for that), only its range.

    ``kernel`` selects the version of the mapping:

    * ``"6.17"``: 6.15-6.17, and 6.18 before the stable fix. Read (bit 0) -> PFERR_USER_MASK
      (historical quirk); write -> WRITE; fetch -> FETCH; any of bits 3-5 -> PRESENT. The
      GUEST_FINAL/PAGE test reads ``error_code & EPT_VIOLATION_GVA_IS_VALID`` instead of the
      exit qualification (bug from f3009482512e), so FINAL/PAGE are never set.
    * ``"6.18"`` (default): 6.18 stable with d0164c161923 ("bit 7 of the exit qualification",
      Sukrit Bhatnagar) backported: as 6.17, plus GUEST_FINAL if bits 7 and 8 are set,
      GUEST_PAGE if bit 7 is set and bit 8 is not.
    * ``"7.2"``: the form after 6.18. Read no longer maps to USER; PRESENT from bits 3-5, and
      from bit 6 only when ``mbec``; under FINAL, USER from bit 9 (GVA_USER).

    ``mbec`` is only meaningful for ``"7.2"`` (earlier kernels have no MBEC support) and raises
    ValueError otherwise. ``private`` adds PFERR_PRIVATE_ACCESS, as the function does when
    ``vt_is_tdx_private_gpa()`` (the GPA lacks the TDX shared bit; 6.16+).
    """
    eq = check_u64(exit_qualification, "exit_qualification")
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}: expected one of {', '.join(map(repr, KERNELS))}")
    if mbec and kernel != "7.2":
        raise ValueError(f"kernel={kernel!r}: KVM has no MBEC support before 7.2; mbec=True needs kernel='7.2'")

    error_code = 0
    if kernel != "7.2" and eq & EPT_VIOLATION_ACC_READ:  # "Is it a read fault?"
        error_code |= PFERR_USER_MASK
    if eq & EPT_VIOLATION_ACC_WRITE:
        error_code |= PFERR_WRITE_MASK
    if eq & EPT_VIOLATION_ACC_INSTR:
        error_code |= PFERR_FETCH_MASK
    if eq & EPT_VIOLATION_PROT_MASK or (mbec and eq & EPT_VIOLATION_PROT_USER_EXEC):
        error_code |= PFERR_PRESENT_MASK

    # 6.17 tests the PFERR word being built, where bit 7 is never set: the branch is dead.
    gva_source = error_code if kernel == "6.17" else eq
    if gva_source & EPT_VIOLATION_GVA_IS_VALID:
        if eq & EPT_VIOLATION_GVA_TRANSLATED:
            error_code |= PFERR_GUEST_FINAL_MASK
            if kernel == "7.2" and eq & EPT_VIOLATION_GVA_USER:
                error_code |= PFERR_USER_MASK
        else:
            error_code |= PFERR_GUEST_PAGE_MASK

    if private:
        error_code |= PFERR_PRIVATE_ACCESS
    return error_code


def tdx_exit_qualification(exit_qualification: int, *, private: bool) -> int:
    """The exit qualification ``tdx_handle_ept_violation()`` passes on (and traces).

    For a private GPA (shared bit clear) the TDX module's value is ignored and replaced by
    EPT_VIOLATION_ACC_WRITE: TD private pages are always RWX in the S-EPT, and treating the
    fault as a write avoids COW aliasing. For a shared GPA the real value is used, except that
    an instruction fetch from shared memory is ``KVM_BUG_ON`` -> the vCPU ioctl fails with
    -EIO; that case raises DecodeError. (The "guest access before ACCEPT" -EIO check needs the
    extended exit qualification and is not modelled here.)
    """
    eq = check_u64(exit_qualification, "exit_qualification")
    if private:
        return EPT_VIOLATION_ACC_WRITE
    if eq & EPT_VIOLATION_ACC_INSTR:
        raise DecodeError(
            f"exit_qualification={eq:#x}: TDX instruction fetch from a shared GPA is a KVM bug "
            "(KVM_BUG_ON in tdx_handle_ept_violation, -EIO)"
        )
    return eq


def tdx_ept_violation_to_pferr(exit_qualification: int, *, private: bool, kernel: str = "6.18") -> int:
    """PFERR word for a TDX EPT violation: ``tdx_exit_qualification()`` then the common mapping."""
    eq = tdx_exit_qualification(exit_qualification, private=private)
    return ept_violation_to_pferr(eq, kernel=kernel, private=private)


__all__ = [
    "EPT_VIOLATION_ACC_INSTR",
    "EPT_VIOLATION_ACC_MASK",
    "EPT_VIOLATION_ACC_READ",
    "EPT_VIOLATION_ACC_WRITE",
    "EPT_VIOLATION_ASYNC_TO_INSTRUCTION",
    "EPT_VIOLATION_EXEC_FOR_RING3_LIN",
    "EPT_VIOLATION_GUEST_PAGING_VERIFICATION",
    "EPT_VIOLATION_GVA_IS_VALID",
    "EPT_VIOLATION_GVA_NX",
    "EPT_VIOLATION_GVA_TRANSLATED",
    "EPT_VIOLATION_GVA_USER",
    "EPT_VIOLATION_GVA_WRITABLE",
    "EPT_VIOLATION_PROT_EXEC",
    "EPT_VIOLATION_PROT_MASK",
    "EPT_VIOLATION_PROT_READ",
    "EPT_VIOLATION_PROT_USER_EXEC",
    "EPT_VIOLATION_PROT_WRITE",
    "EPT_VIOLATION_RESERVED_MASK",
    "EPT_VIOLATION_SHADOW_STACK",
    "EPT_VIOLATION_SUPERVISOR_SHADOW_STACK",
    "EXIT_REASON_EPT_MISCONFIG",
    "EXIT_REASON_EPT_VIOLATION",
    "INTR_INFO_UNBLOCK_NMI",
    "KERNELS",
    "PFERR_FORM",
    "EptViolation",
    "decode_ept_violation",
    "ept_violation_to_pferr",
    "pferr_form",
    "tdx_ept_violation_to_pferr",
    "tdx_exit_qualification",
]
