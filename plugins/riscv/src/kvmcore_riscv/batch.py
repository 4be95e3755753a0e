"""``decode_fault_batch`` for RISC-V: scause/htval/stval/htinst columns -> field columns.

scause and htinst decide everything but the address (``kvmcore.decode_by_syndrome`` runs the
scalar :func:`~kvmcore_riscv.fault.decode_riscv_fault` once per distinct scause/htinst/insn/
private); htval and stval become ``gpa``, ``kernel_gpa``, ``gva`` and ``gfn`` here with numpy,
mirroring :func:`~kvmcore_riscv.trap.decode_guest_page_fault` (htval wider than 57 bits refused;
a pseudoinstruction's GPA is ``htval << 2``, otherwise ``(htval << 2) | (stval & 3)``).

Output fields: ``valid``, ``gfn``, ``exec``, ``write``, ``is_private``, ``fault_kind`` and the
arch's ``scause``, ``access``, ``htinst_kind``, ``gpa``, ``kernel_gpa``, ``gva``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kvmcore

from .trap import HTVAL_MAX, PAGE_SHIFT

ADDRESS = ("htval", "stval", "sepc", "data")
FIELDS = ("exec", "write", "is_private", "fault_kind", "scause", "access", "htinst_kind")


def decode_fault_batch(vcpu: kvmcore.VCPU, columns: Mapping[str, Any]) -> dict[str, Any]:
    valid, out, cols = kvmcore.decode_by_syndrome(vcpu, columns, ADDRESS, FIELDS)
    import numpy as np

    n = len(valid)
    htval = cols.get("htval", np.zeros(n, dtype=np.uint64))
    stval = cols.get("stval", np.zeros(n, dtype=np.uint64))
    valid &= htval <= np.uint64(HTVAL_MAX)
    kernel_gpa = (htval << np.uint64(2)) | (stval & np.uint64(3))
    gpa = np.where(out["htinst_kind"] == "pseudo", htval << np.uint64(2), kernel_gpa)
    zero = np.uint64(0)
    out["gpa"] = np.where(valid, gpa, zero)
    out["kernel_gpa"] = np.where(valid, kernel_gpa, zero)
    out["gva"] = np.where(valid, stval, zero)
    out["gfn"] = np.where(valid, gpa >> np.uint64(PAGE_SHIFT), zero)
    out["valid"] = valid
    return out
