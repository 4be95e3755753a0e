"""Build the raw registers (ESR_EL2, FAR_EL2, HPFAR_EL2) a CPU reports for a logical guest access.

The inverse of :mod:`kvmcore_arm64.esr` for the stage-2 aborts KVM's fault path handles; used to
drive scenarios and tests with realistic register values.
"""

from __future__ import annotations

from kvmcore_arm64.esr import (
    HPFAR_EL2_FIPA_SHIFT,
    U64_MAX,
    ESR_ELx_EC_DABT_LOW,
    ESR_ELx_EC_IABT_LOW,
    ESR_ELx_EC_SHIFT,
    ESR_ELx_IL,
    ESR_ELx_ISV,
    ESR_ELx_SAS_SHIFT,
    ESR_ELx_SF,
    ESR_ELx_SRT_SHIFT,
    ESR_ELx_WNR,
)

ACCESSES = ("read", "write", "exec")

#: cause -> fault status code reported for it (all at level 3: a 4K page-table leaf).
CAUSE_FSC = {
    "not_present": 0x07,  # translation fault, level 3 (ESR_ELx_FSC_FAULT_L(3))
    "no_slot": 0x07,  # no memslot: stage 2 is unmapped, same syndrome as not_present
    "read_only": 0x0F,  # permission fault, level 3 (ESR_ELx_FSC_PERM_L(3))
    "no_exec": 0x0F,  # permission fault, level 3, on an instruction fetch
    "access_flag": 0x0B,  # access flag fault, level 3 (ESR_ELx_FSC_ACCESS_L(3))
}

_SAS = {1: 0, 2: 1, 4: 2, 8: 3}
#: IPAs are at most 56 bits (HPFAR_EL2.FIPA [47:4] holds IPA[55:12]).
IPA_LIMIT = 1 << 56


def encode_abort(
    gpa: int,
    access: str,
    cause: str,
    *,
    size: int = 4,
    far: int | None = None,
    srt: int = 0,
) -> dict[str, int]:
    """Registers for a guest ``access`` to ``gpa`` that faults at stage 2 because of ``cause``.

    Returns ``{"esr": ..., "far": ..., "hpfar": ...}``:

    * data access (read/write): EC DABT_LOW, IL=1, ISV=1 with SAS from ``size`` (1, 2, 4, 8),
      SRT=``srt``, SF=1 for 8-byte accesses, WnR for writes;
    * exec: EC IABT_LOW, IL=1 (an instruction fetch has no instruction syndrome);
    * FSC from :data:`CAUSE_FSC`, all level 3;
    * ``far`` defaults to ``gpa`` (an identity stage 1); ``hpfar = (gpa >> 12) << 4``.

    Raises ``ValueError`` naming the impossible combination: a read or exec cannot fail a
    read-only check (``read_only`` needs a write; an instruction fetch uses ``no_exec``), and a
    data access cannot fail an exec check.

    >>> hex(encode_abort(0x9000000, "write", "not_present", srt=1)["esr"])
    '0x93810047'
    """
    if not isinstance(gpa, int) or not 0 <= gpa < IPA_LIMIT:
        raise ValueError(f"gpa={gpa!r}: must be an int in [0, 2**56)")
    if access not in ACCESSES:
        raise ValueError(f"access={access!r}: must be one of {', '.join(ACCESSES)}")
    if cause not in CAUSE_FSC:
        raise ValueError(f"cause={cause!r}: must be one of {', '.join(CAUSE_FSC)}")
    if far is None:
        far = gpa
    elif not isinstance(far, int) or not 0 <= far <= U64_MAX:
        raise ValueError(f"far={far!r}: must be a 64-bit unsigned int")

    fsc = CAUSE_FSC[cause]
    if access == "exec":
        if cause == "read_only":
            raise ValueError(
                "access='exec' with cause='read_only' is impossible: an instruction fetch never "
                "fails a write-permission check (use cause='no_exec')"
            )
        if size != 4 or srt != 0:
            raise ValueError(
                f"access='exec' with size={size!r}, srt={srt!r}: an instruction abort has no "
                f"access size or transfer register (leave them at their defaults)"
            )
        esr = (ESR_ELx_EC_IABT_LOW << ESR_ELx_EC_SHIFT) | ESR_ELx_IL | fsc
    else:
        if cause == "no_exec":
            raise ValueError(
                f"access={access!r} with cause='no_exec' is impossible: only an instruction "
                f"fetch fails an execute-permission check"
            )
        if cause == "read_only" and access == "read":
            raise ValueError(
                "access='read' with cause='read_only' is impossible: a read never fails a "
                "read-only permission check (use access='write')"
            )
        if size not in _SAS:
            raise ValueError(f"size={size!r}: a data access is 1, 2, 4 or 8 bytes")
        if not isinstance(srt, int) or not 0 <= srt <= 31:
            raise ValueError(f"srt={srt!r}: must be a register number 0..31")
        esr = (
            (ESR_ELx_EC_DABT_LOW << ESR_ELx_EC_SHIFT)
            | ESR_ELx_IL
            | ESR_ELx_ISV
            | (_SAS[size] << ESR_ELx_SAS_SHIFT)
            | (srt << ESR_ELx_SRT_SHIFT)
            | (ESR_ELx_SF if size == 8 else 0)
            | (ESR_ELx_WNR if access == "write" else 0)
            | fsc
        )
    return {"esr": esr, "far": far, "hpfar": (gpa >> 12) << HPFAR_EL2_FIPA_SHIFT}


__all__ = ["ACCESSES", "CAUSE_FSC", "IPA_LIMIT", "encode_abort"]
