"""``decode_fault_batch`` for arm64: ESR_EL2/HPFAR_EL2/FAR_EL2 columns -> field columns.

ESR decides everything but the address (``kvmcore.decode_by_syndrome`` runs the scalar
:func:`~kvmcore_arm64.fault.decode_fault` once per distinct ESR/private value); HPFAR and FAR
are turned into ``ipa``, ``gpa`` and ``gfn`` here with numpy, mirroring
:func:`~kvmcore_arm64.esr.hpfar_to_ipa` (RES0 bits refused) and ``kvm_vcpu_get_fault_ipa()``.

Output fields: ``valid``, ``gfn``, ``exec``, ``write``, ``is_private``, ``fault_kind`` and the
arch's ``ec``, ``fsc``, ``s1ptw``, ``is_iabt``, ``hpfar_trusted``, ``ipa``, ``gpa``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kvmcore

from . import esr as E

#: Registers that only feed the address arithmetic below (or nothing this batch reports).
ADDRESS = ("hpfar", "far", "data")
FIELDS = ("exec", "write", "is_private", "fault_kind", "ec", "fsc", "s1ptw", "is_iabt", "hpfar_trusted")


def decode_fault_batch(vcpu: kvmcore.VCPU, columns: Mapping[str, Any]) -> dict[str, Any]:
    valid, out, cols = kvmcore.decode_by_syndrome(vcpu, columns, ADDRESS, FIELDS)
    import numpy as np

    hpfar = cols.get("hpfar")
    if hpfar is None:  # the scalar decoder refused every row for the missing register
        hpfar = np.zeros(len(valid), dtype=np.uint64)
    valid &= (hpfar & np.uint64(E.HPFAR_EL2_RES0_MASK)) == 0
    ipa = (hpfar & np.uint64(E.HPFAR_EL2_FIPA_MASK)) << np.uint64(12 - E.HPFAR_EL2_FIPA_SHIFT)
    far = cols.get("far")
    gpa = ipa | (far & np.uint64(E.FAR_TO_FIPA_OFFSET_MASK)) if far is not None else ipa.copy()
    zero = np.uint64(0)
    out["ipa"] = np.where(valid, ipa, zero)
    out["gpa"] = np.where(valid, gpa, zero)
    out["gfn"] = np.where(valid, ipa >> np.uint64(vcpu.vm.page_shift), zero)
    out["valid"] = valid
    return out
