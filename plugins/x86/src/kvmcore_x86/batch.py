"""``decode_fault_batch`` for x86: EPT-violation / #NPF columns -> field columns.

The exit registers (vendor, exit qualification, exit reason, error code, len, private) decide
everything but the address (``kvmcore.decode_by_syndrome`` runs the scalar
:func:`~kvmcore_x86.decode.decode_fault` once per distinct set); ``gpa`` becomes ``gfn`` here
with numpy (``gpa >> PAGE_SHIFT``; a GPA above 52 bits refused, as ``check_gpa()`` does).
Not for TDX VMs (the shared bit of the GPA decides privacy) or SW-protected VMs (the memory
attributes do): the hook returns None there, decode row by row.

Output fields: ``valid``, ``gfn``, ``exec``, ``write``, ``is_private``, ``fault_kind`` and the
arch's ``vendor``, ``error_code``, ``present``, ``rsvd``, ``user``, ``gpa``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kvmcore

from .decode import GPA_BITS

ADDRESS = ("gpa", "gla", "data")
FIELDS = ("exec", "write", "is_private", "fault_kind", "vendor", "error_code", "present", "rsvd", "user")


def decode_fault_batch(vcpu: kvmcore.VCPU, columns: Mapping[str, Any]) -> dict[str, Any] | None:
    if vcpu.vm.settings["vm_type"] in ("tdx", "sw_protected"):
        return None
    valid, out, cols = kvmcore.decode_by_syndrome(vcpu, columns, ADDRESS, FIELDS, strings=("vendor",))
    import numpy as np

    gpa = cols.get("gpa", np.zeros(len(valid), dtype=np.uint64))
    valid &= (gpa >> np.uint64(GPA_BITS)) == 0
    zero = np.uint64(0)
    out["gpa"] = np.where(valid, gpa, zero)
    out["gfn"] = np.where(valid, gpa >> np.uint64(vcpu.vm.page_shift), zero)
    out["valid"] = valid
    return out
