"""SVM #NPF (exit code 0x400) error code: decoding and the PFERR word KVM passes on.

On #VMEXIT(NPF) EXITINFO1 holds a 64-bit error code in #PF format plus the nested-paging
bits (AMD APM Vol. 2, "Nested versus Guest Page Faults, Fault Ordering"), and EXITINFO2 the
GPA. The bit positions are exactly the PFERR_* masks, which is why ``npf_interception()``
passes the value through almost unchanged.

Defined bits, as decoded here: 0 P, 1 RW, 2 US, 3 RSV, 4 ID, 5 PK, 6 SS, 31 RMP,
32 GUEST_FINAL, 33 GUEST_PAGE, 34 ENC, 35 SIZEM, 36 VMPL, plus the KVM-synthetic 48
IMPLICIT_ACCESS and 49 PRIVATE_ACCESS (never from hardware, but a traced SNP error code
carries 49). Every other bit is reserved and refused by ``decode_npf()``: 7-30 (bit 15 is
Intel's SGX bit), 37-47 and 50-63.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

from kvmcore import DecodeError
from kvmcore_x86.pferr import (
    PFERR_FETCH_MASK,
    PFERR_GUEST_ENC_MASK,
    PFERR_GUEST_FINAL_MASK,
    PFERR_GUEST_PAGE_MASK,
    PFERR_GUEST_RMP_MASK,
    PFERR_GUEST_SIZEM_MASK,
    PFERR_GUEST_VMPL_MASK,
    PFERR_IMPLICIT_ACCESS,
    PFERR_PK_MASK,
    PFERR_PRESENT_MASK,
    PFERR_PRIVATE_ACCESS,
    PFERR_RSVD_MASK,
    PFERR_SS_MASK,
    PFERR_SYNTHETIC_MASK,
    PFERR_USER_MASK,
    PFERR_WRITE_MASK,
    U64_MAX,
    SlotsAsDict,
    check_u64,
)

SVM_EXIT_NPF = 0x400

NPF_HW_MASK = (
    PFERR_PRESENT_MASK
    | PFERR_WRITE_MASK
    | PFERR_USER_MASK
    | PFERR_RSVD_MASK
    | PFERR_FETCH_MASK
    | PFERR_PK_MASK
    | PFERR_SS_MASK
    | PFERR_GUEST_RMP_MASK
    | PFERR_GUEST_FINAL_MASK
    | PFERR_GUEST_PAGE_MASK
    | PFERR_GUEST_ENC_MASK
    | PFERR_GUEST_SIZEM_MASK
    | PFERR_GUEST_VMPL_MASK
)
"""Bits the APM defines for the #NPF error code."""
NPF_RESERVED_MASK = U64_MAX & ~(NPF_HW_MASK | PFERR_SYNTHETIC_MASK)
_LOW32 = (1 << 32) - 1


class NpfSyntheticBitsWarning(RuntimeWarning):
    """Hardware reported an #NPF error code with KVM-synthetic bits 48/49 set.

    The model of ``npf_interception()``'s ``WARN_ON_ONCE``: KVM clears the bits and goes on.
    """


@dataclass(frozen=True, slots=True)
class NpfErrorCode(SlotsAsDict):
    """One decoded #NPF error code (EXITINFO1, or the ``error_code`` of an SVM trace line).

    With ``truncated=True`` the value came from a 32-bit trace field, so bits 32-63 are
    unknown and their fields (``guest_final`` ... ``vmpl``, ``implicit_access``,
    ``private_access``) are ``None``.
    """

    error_code: int
    present: bool
    write: bool
    user: bool
    rsvd: bool
    fetch: bool
    pk: bool
    shadow_stack: bool
    rmp: bool
    guest_final: bool | None
    guest_page: bool | None
    enc: bool | None
    sizem: bool | None
    vmpl: bool | None
    implicit_access: bool | None
    private_access: bool | None
    truncated: bool


def decode_npf(error_code: int, *, truncated: bool = False) -> NpfErrorCode:
    """Decode an #NPF error code.

    ``truncated=True`` says the value is the low 32 bits of the real error code, as printed by
    kernels whose ``kvm_page_fault`` tracepoint stored ``error_code`` as ``unsigned int``
    (before the 2024 widening to u64; 6.15-6.18 print all 64 bits). Bits 32+ are then
    reported as ``None`` (unknown) rather than as clear.

    Raises DecodeError, naming the value, for a value outside [0, 2**64) (or [0, 2**32) when
    ``truncated``) and for reserved bits (see the module docstring). Bits 48/49 are accepted:
    49 is in every traced SNP private fault, and a hardware value with either set is what
    ``npf_to_pferr()`` warns about. No combination of defined bits is refused: the APM gives
    no rule such as "exactly one of bits 32/33" that this decoder could check (and KVM's
    nested #NPF emulation long set bit 32 alone whatever the cause).
    """
    return _decode_npf(check_u64(error_code, "error_code"), truncated)


# See vmx._decode_ept_violation: memoized because frozen-dataclass construction dominates.
@lru_cache(maxsize=4096)
def _decode_npf(ec: int, truncated: bool) -> NpfErrorCode:
    if truncated and ec > _LOW32:
        raise DecodeError(f"error_code={ec:#x}: a 32-bit truncated value cannot have bits 63:32 set")
    if ec & NPF_RESERVED_MASK:
        raise DecodeError(
            f"error_code={ec:#x}: reserved #NPF error-code bits {ec & NPF_RESERVED_MASK:#x} set"
        )
    high = not truncated
    return NpfErrorCode(
        ec,
        bool(ec & PFERR_PRESENT_MASK),
        bool(ec & PFERR_WRITE_MASK),
        bool(ec & PFERR_USER_MASK),
        bool(ec & PFERR_RSVD_MASK),
        bool(ec & PFERR_FETCH_MASK),
        bool(ec & PFERR_PK_MASK),
        bool(ec & PFERR_SS_MASK),
        bool(ec & PFERR_GUEST_RMP_MASK),
        bool(ec & PFERR_GUEST_FINAL_MASK) if high else None,
        bool(ec & PFERR_GUEST_PAGE_MASK) if high else None,
        bool(ec & PFERR_GUEST_ENC_MASK) if high else None,
        bool(ec & PFERR_GUEST_SIZEM_MASK) if high else None,
        bool(ec & PFERR_GUEST_VMPL_MASK) if high else None,
        bool(ec & PFERR_IMPLICIT_ACCESS) if high else None,
        bool(ec & PFERR_PRIVATE_ACCESS) if high else None,
        truncated,
    )


def npf_to_pferr(error_code: int, *, snp: bool = False) -> int:
    """The PFERR word ``npf_interception()`` (6.15-6.18) traces and passes to ``kvm_mmu_page_fault()``.

    ``error_code`` is the raw EXITINFO1. Steps, as in the kernel:

    1. If hardware set any PFERR_SYNTHETIC_MASK bit (48/49): ``WARN_ON_ONCE`` and clear them.
       Modelled as a ``NpfSyntheticBitsWarning`` (turn it into an error with a warnings filter).
    2. For an SNP VM (``snp=True``) with bit 34 (ENC) set: add PFERR_PRIVATE_ACCESS. Bit 34 can
       also be set for SEV/SEV-ES guests on SNP-capable hardware; only SNP makes it private.

    Everything else is passed through, reserved bits included (KVM does not check them).
    """
    ec = check_u64(error_code, "error_code")
    if ec & PFERR_SYNTHETIC_MASK:
        warnings.warn(
            NpfSyntheticBitsWarning(
                f"error_code={ec:#x}: hardware set KVM-synthetic bits "
                f"{ec & PFERR_SYNTHETIC_MASK:#x}; npf_interception() WARNs and clears them"
            ),
            stacklevel=2,
        )
        ec &= ~PFERR_SYNTHETIC_MASK
    if snp and ec & PFERR_GUEST_ENC_MASK:
        ec |= PFERR_PRIVATE_ACCESS
    return ec


__all__ = [
    "NPF_HW_MASK",
    "NPF_RESERVED_MASK",
    "SVM_EXIT_NPF",
    "NpfErrorCode",
    "NpfSyntheticBitsWarning",
    "decode_npf",
    "npf_to_pferr",
]
