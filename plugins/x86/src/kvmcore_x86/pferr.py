"""x86 page-fault error code (PFERR) bits, as ``arch/x86/include/asm/kvm_host.h`` defines them.

The PFERR word is what ``kvm_mmu_page_fault()`` receives and what ``struct kvm_page_fault``
takes ``exec``, ``write``, ``present``, ``rsvd``, ``user`` and ``is_private`` from. Bits 0-31
follow the hardware #PF error code; bits 31-36 are the AMD #NPF additions; bits 48-49 are
KVM-synthetic and never come from hardware. Values are the same in Linux 6.15-6.18 and 7.2.

This module also holds the small helpers the vmx, svm, encode and trace modules share, so
each rule (range check, bit naming, trace-flag parsing) exists once.
"""

from __future__ import annotations

from kvmcore import DecodeError

U64_MAX = (1 << 64) - 1

PFERR_PRESENT_MASK = 1 << 0
PFERR_WRITE_MASK = 1 << 1
PFERR_USER_MASK = 1 << 2
PFERR_RSVD_MASK = 1 << 3
PFERR_FETCH_MASK = 1 << 4
PFERR_PK_MASK = 1 << 5
PFERR_SS_MASK = 1 << 6
PFERR_SGX_MASK = 1 << 15
PFERR_GUEST_RMP_MASK = 1 << 31
PFERR_GUEST_FINAL_MASK = 1 << 32
PFERR_GUEST_PAGE_MASK = 1 << 33
PFERR_GUEST_FAULT_STAGE_MASK = PFERR_GUEST_FINAL_MASK | PFERR_GUEST_PAGE_MASK
PFERR_GUEST_ENC_MASK = 1 << 34
PFERR_GUEST_SIZEM_MASK = 1 << 35
PFERR_GUEST_VMPL_MASK = 1 << 36
# KVM-defined: implicit supervisor access, for SMAP checks while emulating.
PFERR_IMPLICIT_ACCESS = 1 << 48
# KVM-defined: the fault was on private memory; drives fault->is_private.
PFERR_PRIVATE_ACCESS = 1 << 49
PFERR_SYNTHETIC_MASK = PFERR_IMPLICIT_ACCESS | PFERR_PRIVATE_ACCESS

# (mask, name) in bit order; the name is the macro without PFERR_ and _MASK.
PFERR_BIT_NAMES: tuple[tuple[int, str], ...] = (
    (PFERR_PRESENT_MASK, "PRESENT"),
    (PFERR_WRITE_MASK, "WRITE"),
    (PFERR_USER_MASK, "USER"),
    (PFERR_RSVD_MASK, "RSVD"),
    (PFERR_FETCH_MASK, "FETCH"),
    (PFERR_PK_MASK, "PK"),
    (PFERR_SS_MASK, "SS"),
    (PFERR_SGX_MASK, "SGX"),
    (PFERR_GUEST_RMP_MASK, "GUEST_RMP"),
    (PFERR_GUEST_FINAL_MASK, "GUEST_FINAL"),
    (PFERR_GUEST_PAGE_MASK, "GUEST_PAGE"),
    (PFERR_GUEST_ENC_MASK, "GUEST_ENC"),
    (PFERR_GUEST_SIZEM_MASK, "GUEST_SIZEM"),
    (PFERR_GUEST_VMPL_MASK, "GUEST_VMPL"),
    (PFERR_IMPLICIT_ACCESS, "IMPLICIT_ACCESS"),
    (PFERR_PRIVATE_ACCESS, "PRIVATE_ACCESS"),
)
PFERR_KNOWN_MASK = 0
for _mask, _name in PFERR_BIT_NAMES:
    PFERR_KNOWN_MASK |= _mask
del _mask, _name

# kvm_mmu_trace_pferr_flags (arch/x86/kvm/mmu/mmutrace.h), used by __print_flags() in the
# kvmmmu tracepoints. PK/SS/SGX were added in 2025 (believed 6.18); older kernels print
# only P, W, U, RSVD, F.
PFERR_TRACE_FLAGS: dict[str, int] = {
    "P": PFERR_PRESENT_MASK,
    "W": PFERR_WRITE_MASK,
    "U": PFERR_USER_MASK,
    "PK": PFERR_PK_MASK,
    "SS": PFERR_SS_MASK,
    "SGX": PFERR_SGX_MASK,
    "RSVD": PFERR_RSVD_MASK,
    "F": PFERR_FETCH_MASK,
}


def check_u64(value: object, register: str) -> int:
    """Return ``value`` as an int if it is in [0, 2**64).

    Raises DecodeError naming ``register`` and the value when it is out of range, and
    TypeError for a non-int (bool and IntEnum count as ints, as in ``kvmcore_arm64``).
    """
    if type(value) is int:
        if 0 <= value <= U64_MAX:
            return value
    elif isinstance(value, int):
        value = int(value)
        if 0 <= value <= U64_MAX:
            return value
    else:
        raise TypeError(f"{register} must be an int, got {type(value).__name__}: {value!r}")
    raise DecodeError(f"{register}={value:#x}: not a 64-bit register value")


class SlotsAsDict:
    """Mixin giving the package's frozen slots dataclasses a ``to_dict()``."""

    __slots__ = ()

    def to_dict(self) -> dict[str, int | bool | None]:
        """JSON-ready dict: every field in declaration order (registers stay ints)."""
        names: tuple[str, ...] = self.__slots__  # the dataclass's, not the mixin's ()
        return {name: getattr(self, name) for name in names}


# Name of every bit 0-63: the PFERR_* name, or "BIT<n>" where the kernel defines none.
_BIT_NAME: tuple[str, ...] = tuple(
    next((name for mask, name in PFERR_BIT_NAMES if mask == 1 << n), f"BIT{n}")
    for n in range(64)
)


def pferr_names(error_code: int) -> list[str]:
    """The PFERR_* names set in ``error_code``, in bit order.

    ``pferr_names(0x100000007) == ["PRESENT", "WRITE", "USER", "GUEST_FINAL"]``.
    A bit the kernel gives no name is reported as ``"BIT<n>"`` rather than dropped.
    """
    check_u64(error_code, "error_code")
    return [_BIT_NAME[n] for n in range(error_code.bit_length()) if error_code >> n & 1]


def pferr_from_trace_flags(text: str) -> int:
    """Parse a ``__print_flags(error_code, "|", kvm_mmu_trace_pferr_flags)`` rendering.

    ``"W|U"`` -> ``PFERR_WRITE_MASK | PFERR_USER_MASK``; ``""`` -> 0. Bits without a symbol are
    printed by the kernel as a trailing hex number (``"P|0x100000000"``), which is accepted.
    Raises ValueError for an unknown token.
    """
    if not text:
        return 0
    value = 0
    for token in text.split("|"):
        mask = PFERR_TRACE_FLAGS.get(token)
        if mask is None:
            if not token.startswith("0x"):
                raise ValueError(f"unknown PFERR trace flag {token!r} in {text!r}")
            try:
                mask = int(token, 16)
            except ValueError:
                raise ValueError(f"unknown PFERR trace flag {token!r} in {text!r}") from None
        value |= mask
    return value


__all__ = [
    "PFERR_BIT_NAMES",
    "PFERR_FETCH_MASK",
    "PFERR_GUEST_ENC_MASK",
    "PFERR_GUEST_FAULT_STAGE_MASK",
    "PFERR_GUEST_FINAL_MASK",
    "PFERR_GUEST_PAGE_MASK",
    "PFERR_GUEST_RMP_MASK",
    "PFERR_GUEST_SIZEM_MASK",
    "PFERR_GUEST_VMPL_MASK",
    "PFERR_IMPLICIT_ACCESS",
    "PFERR_KNOWN_MASK",
    "PFERR_PK_MASK",
    "PFERR_PRESENT_MASK",
    "PFERR_PRIVATE_ACCESS",
    "PFERR_RSVD_MASK",
    "PFERR_SGX_MASK",
    "PFERR_SS_MASK",
    "PFERR_SYNTHETIC_MASK",
    "PFERR_TRACE_FLAGS",
    "PFERR_USER_MASK",
    "PFERR_WRITE_MASK",
    "U64_MAX",
    "SlotsAsDict",
    "check_u64",
    "pferr_from_trace_flags",
    "pferr_names",
]
