"""Build the syndrome real hardware reports for a guest access, for scenarios and tests.

Each encoder answers: "the guest did ``access`` to ``gpa`` and the stage-2 entry was in state
``cause``; what does the CPU put in the exit qualification / EXITINFO1?" The access is always
a translated linear access to the final GPA (not a guest page-table walk): on VMX bits 7 and
8 are set; on SVM bit 32 (GUEST_FINAL) is set, and bit 2 (US) too, because the nested walk
treats every guest access as a user access (APM; the reference's SVM trace example
``0x100000006`` shows it for a kernel-mode write).

Causes:

* ``"not_present"`` and ``"no_slot"``: no stage-2 entry. VMX reports no PROT bits, SVM P=0.
  (KVM cannot tell the two apart from the syndrome: the memslot lookup decides.)
* ``"read_only"``: the entry grants everything but write (VMX R+X, SVM P=1 with RW=0, NX=0).
* ``"no_exec"``: the entry grants everything but execute (VMX R+W, SVM P=1, RW=1, NX=1).
* ``"access_flag"``: refused with ValueError. x86 stage-2 has no access-flag fault: EPT and NPT
  accessed/dirty bits are set by the page walker without a VM exit (arm64 has AF faults).

A combination the entry would allow (a read of a ``read_only`` page, a write to a ``no_exec``
page, ...) cannot fault and raises ValueError naming it. NPT has no "not readable" state
(present implies readable), which is why both vendors share one permission model here.
"""

from __future__ import annotations

from kvmcore_x86.pferr import (
    PFERR_FETCH_MASK,
    PFERR_GUEST_ENC_MASK,
    PFERR_GUEST_FINAL_MASK,
    PFERR_PRESENT_MASK,
    PFERR_USER_MASK,
    PFERR_WRITE_MASK,
    U64_MAX,
)
from kvmcore_x86.vmx import (
    EPT_VIOLATION_ACC_INSTR,
    EPT_VIOLATION_ACC_READ,
    EPT_VIOLATION_ACC_WRITE,
    EPT_VIOLATION_GVA_IS_VALID,
    EPT_VIOLATION_GVA_TRANSLATED,
    EPT_VIOLATION_PROT_EXEC,
    EPT_VIOLATION_PROT_READ,
    EPT_VIOLATION_PROT_WRITE,
)

ACCESSES = ("read", "write", "exec")
CAUSES = ("not_present", "read_only", "no_exec", "no_slot", "access_flag")
# x86 physical addresses are at most 52 bits (MAXPHYADDR <= 52).
GPA_MAX = (1 << 52) - 1

# Which access each present-entry cause forbids; the other accesses would not fault.
_FORBIDDEN = {"read_only": "write", "no_exec": "exec"}

_VMX_ACCESS = {
    "read": EPT_VIOLATION_ACC_READ,
    "write": EPT_VIOLATION_ACC_WRITE,
    "exec": EPT_VIOLATION_ACC_INSTR,
}
_VMX_PROT = {
    "not_present": 0,
    "no_slot": 0,
    "read_only": EPT_VIOLATION_PROT_READ | EPT_VIOLATION_PROT_EXEC,
    "no_exec": EPT_VIOLATION_PROT_READ | EPT_VIOLATION_PROT_WRITE,
}
_NPF_ACCESS = {"read": 0, "write": PFERR_WRITE_MASK, "exec": PFERR_FETCH_MASK}
_NPF_PRESENT = {"not_present": 0, "no_slot": 0, "read_only": PFERR_PRESENT_MASK, "no_exec": PFERR_PRESENT_MASK}


def _check(gpa: int, access: str, cause: str) -> None:
    """The validation both encoders share; raises ValueError naming the bad input."""
    if not isinstance(gpa, int):
        raise TypeError(f"gpa must be an int, got {type(gpa).__name__}: {gpa!r}")
    if not 0 <= gpa <= GPA_MAX:
        raise ValueError(f"gpa={gpa:#x}: expected an int in [0, 2**52)")
    if access not in ACCESSES:
        raise ValueError(f"access={access!r}: expected one of {', '.join(ACCESSES)}")
    if cause not in CAUSES:
        raise ValueError(f"cause={cause!r}: expected one of {', '.join(CAUSES)}")
    if cause == "access_flag":
        raise ValueError(
            "cause='access_flag': x86 stage-2 (EPT/NPT) has no access-flag fault; "
            "accessed/dirty bits are set by hardware without a VM exit"
        )
    forbidden = _FORBIDDEN.get(cause)
    if forbidden is not None and access != forbidden:
        raise ValueError(
            f"access={access!r}, cause={cause!r}: impossible, a {cause} entry allows {access} "
            f"(only a {forbidden} faults)"
        )


def encode_ept_violation(gpa: int, access: str, cause: str, *, gla: int | None = None) -> dict:
    """The EPT-violation exit a CPU reports: ``{"vendor": "vmx", "exit_qualification", "gpa"[, "gla"]}``.

    Sets one access bit (a plain write sets only bit 1; read-modify-write may also set bit 0,
    which is implementation-specific and not produced here), the PROT bits of the entry, and
    bits 7 and 8 (valid linear address, translated access). ``gla`` is the guest linear
    address, included when given.
    """
    _check(gpa, access, cause)
    exit_qualification = (
        _VMX_ACCESS[access]
        | _VMX_PROT[cause]
        | EPT_VIOLATION_GVA_IS_VALID
        | EPT_VIOLATION_GVA_TRANSLATED
    )
    result = {"vendor": "vmx", "exit_qualification": exit_qualification, "gpa": gpa}
    if gla is not None:
        if not isinstance(gla, int):
            raise TypeError(f"gla must be an int, got {type(gla).__name__}: {gla!r}")
        if not 0 <= gla <= U64_MAX:
            raise ValueError(f"gla={gla:#x}: expected an int in [0, 2**64)")
        result["gla"] = gla
    return result


def encode_npf(gpa: int, access: str, cause: str, *, private: bool = False) -> dict:
    """The #NPF exit a CPU reports: ``{"vendor": "svm", "error_code", "gpa"}``.

    error_code = US | GUEST_FINAL | (RW for a write) | (ID for a fetch) | (P if the entry is
    present) | (ENC if ``private``, i.e. the guest's C-bit was 1).
    """
    _check(gpa, access, cause)
    error_code = PFERR_USER_MASK | PFERR_GUEST_FINAL_MASK | _NPF_ACCESS[access] | _NPF_PRESENT[cause]
    if private:
        error_code |= PFERR_GUEST_ENC_MASK
    return {"vendor": "svm", "error_code": error_code, "gpa": gpa}


__all__ = ["ACCESSES", "CAUSES", "GPA_MAX", "encode_ept_violation", "encode_npf"]
