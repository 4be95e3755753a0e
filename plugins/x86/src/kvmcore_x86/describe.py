"""Person-readable decodes (``describe_syndrome``) and trace lines (``parse_trace_event``).

Unlike ``decode_fault`` these accept what a trace shows: ``kvm_page_fault``'s ``error_code``
is the raw exit qualification on VMX and the #NPF error code (possibly 32-bit truncated on
older kernels, possibly with PFERR_PRIVATE_ACCESS) on SVM, so the vendor has to be told or
guessed (``trace.vendor_hint``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kvmcore
from kvmcore import DecodeError, Syndrome, TraceEvent
from kvmcore_x86.decode import check_gpa, kvm_gfn_direct_bits, reg, tdx_shared_bit
from kvmcore_x86.pferr import (
    PFERR_FETCH_MASK,
    PFERR_PRIVATE_ACCESS,
    PFERR_RSVD_MASK,
    PFERR_SYNTHETIC_MASK,
    PFERR_WRITE_MASK,
    pferr_names,
)
from kvmcore_x86.svm import decode_npf, npf_to_pferr
from kvmcore_x86.trace import SVM_NPF_NAMES, VMX_EPT_VIOLATION_NAMES, parse_event, vendor_hint
from kvmcore_x86.vmx import (
    decode_ept_violation,
    ept_violation_to_pferr,
    pferr_form,
    tdx_exit_qualification,
)

_COMMON_MEANINGS = {
    "vendor": "which syndrome format: vmx (EPT violation exit qualification) or svm (#NPF error code)",
    "error_code": "the PFERR_* word KVM builds and passes to kvm_mmu_page_fault()",
    "pferr": "the PFERR_* bit names set in error_code",
    "gfn": "guest frame number (gpa >> 12, TDX shared bit stripped)",
    "gpa": "faulting guest physical address (GUEST_PHYSICAL_ADDRESS / EXITINFO2)",
    "write": "the access was a write (PFERR_WRITE)",
    "exec": "the access was an instruction fetch (PFERR_FETCH)",
    "is_private": "the access was to private memory (PFERR_PRIVATE_ACCESS)",
    "page_walk": "1: the fault hit the guest's page-table walk, 0: the final translation, -: not said",
}

VMX_MEANINGS = {
    "vendor": _COMMON_MEANINGS["vendor"],
    "data_read": "bit 0: the access was a data read",
    "data_write": "bit 1: the access was a data write",
    "insn_fetch": "bit 2: the access was an instruction fetch",
    "ept_readable": "bit 3: the GPA was readable (AND of R over the EPT walk)",
    "ept_writable": "bit 4: the GPA was writable",
    "ept_executable": "bit 5: the GPA was executable (supervisor-executable under MBEC)",
    "ept_user_executable": "bit 6: the GPA was user-executable (defined only with MBEC)",
    "gla_valid": "bit 7: the guest linear address field is valid",
    "gla_translated": "bit 8: access to the translated GPA (1) or to a guest paging structure (0); needs bit 7",
    "adv_user": "bit 9: advanced info, the linear address is user-mode (needs bits 7 and 8)",
    "adv_writable": "bit 10: advanced info, the linear address is writable (needs bits 7 and 8)",
    "adv_nx": "bit 11: advanced info, the linear address is execute-disable (needs bits 7 and 8)",
    "nmi_unblocking": "bit 12: NMI unblocking due to IRET (KVM re-blocks NMIs)",
    "shadow_stack": "bit 13: the access was a shadow-stack access",
    "supervisor_shadow_stack": "bit 14: supervisor shadow-stack page (defined only with EPTP bit 7)",
    "guest_paging_verification": "bit 15: caused by guest-paging verification",
    **{k: v for k, v in _COMMON_MEANINGS.items() if k != "vendor"},
}

SVM_MEANINGS = {
    "vendor": _COMMON_MEANINGS["vendor"],
    "present": "bit 0 P: the NPT entry was present (a protection violation)",
    "write": "bit 1 RW: the access was a write",
    "user": "bit 2 US: user access (nested walks treat every guest access as user)",
    "rsvd": "bit 3 RSV: a reserved bit was set in an NPT entry (KVM's MMIO SPTEs)",
    "fetch": "bit 4 ID: the access was an instruction fetch",
    "pk": "bit 5 PK: protection-key violation",
    "shadow_stack": "bit 6 SS: the access was a shadow-stack access",
    "rmp": "bit 31: an SNP RMP check failed",
    "guest_final": "bit 32: fault while translating the final guest physical address",
    "guest_page": "bit 33: fault while translating a guest page-table access",
    "enc": "bit 34: the guest's effective C-bit was 1 (encrypted access)",
    "sizem": "bit 35: RMP page-size mismatch",
    "vmpl": "bit 36: VMPL permission failure",
    "error_code": _COMMON_MEANINGS["error_code"],
    "pferr": _COMMON_MEANINGS["pferr"],
    "gfn": _COMMON_MEANINGS["gfn"],
    "gpa": _COMMON_MEANINGS["gpa"],
    "exec": _COMMON_MEANINGS["exec"],
    "is_private": _COMMON_MEANINGS["is_private"],
    "page_walk": _COMMON_MEANINGS["page_walk"],
}

_VMX_BITS = (
    "data_read", "data_write", "insn_fetch", "ept_readable", "ept_writable", "ept_executable",
    "ept_user_executable", "gla_valid", "gla_translated", "adv_user", "adv_writable", "adv_nx",
    "nmi_unblocking", "shadow_stack", "supervisor_shadow_stack", "guest_paging_verification",
)  # fmt: skip
_SVM_BITS = (
    "present", "write", "user", "rsvd", "fetch", "pk", "shadow_stack", "rmp", "guest_final",
    "guest_page", "enc", "sizem", "vmpl",
)  # fmt: skip


def _settings(vm: kvmcore.VM | None) -> dict[str, Any]:
    defaults = {"vm_type": "default", "mbec": False}
    kernel = pferr_form(vm.kernel if vm is not None else kvmcore.KERNEL_VERSIONS[-1])
    return {**defaults, **(vm.settings if vm is not None else {}), "kernel": kernel}


def _undecoded(vendor: str, meanings: Mapping[str, str], error: str, gpa: int | None) -> Syndrome:
    fields: dict[str, Any] = dict.fromkeys(meanings)
    fields["vendor"] = vendor
    fields["gpa"] = gpa
    return Syndrome("x86", fields, meanings, False, error)


def describe_syndrome(vm: kvmcore.VM | None, raw: Mapping[str, Any]) -> Syndrome:
    """Decode raw registers or a trace's ``kvm_page_fault`` for a person.

    The value is ``exit_qualification`` (VMX), or ``error_code``: the #NPF error code on SVM, but
    on VMX a trace's ``error_code`` *is* the exit qualification. The vendor comes from raw
    ``vendor``; else ``exit_qualification`` means VMX; else ``vendor_hint(error_code)``; else the
    VM's ``vendor`` setting; with no VM and no hint the result says it cannot tell (``error``).
    Raw ``truncated=1`` marks a 32-bit truncated SVM trace value (bits 32+ unknown: None).

    A value the decoders refuse (reserved bits, no access bit) is not a guest fault: the fields
    are None and ``error`` says why. A missing value or a non-int raises DecodeError.
    """
    gpa = reg(raw, "gpa", required=False)
    if gpa is not None:
        check_gpa(gpa)
    vendor = raw.get("vendor")
    if vendor is not None and vendor not in ("vmx", "svm"):
        raise DecodeError(f"vendor={vendor!r}: expected 'vmx' or 'svm'")
    if "exit_qualification" in raw:
        if vendor == "svm":
            raise DecodeError("exit_qualification: a VMX register, but vendor='svm'")
        value = reg(raw, "exit_qualification")
        vendor = "vmx"
    else:
        value = reg(raw, "error_code", required=False)
        if value is None:
            raise DecodeError("exit_qualification or error_code: missing (the syndrome to decode)")
        if vendor is None:
            vendor = vendor_hint(value)
        if vendor is None and vm is not None:
            vendor = vm.settings["vendor"]
    assert value is not None
    if vendor is None:
        return Syndrome(
            "x86",
            {"vendor": None, "error_code": value, "gpa": gpa},
            {
                "vendor": _COMMON_MEANINGS["vendor"],
                "error_code": "the traced value: a VMX exit qualification or an SVM #NPF error code",
                "gpa": _COMMON_MEANINGS["gpa"],
            },
            False,
            f"error_code={value:#x}: cannot tell the vendor (only bits both formats define are set); "
            "give vendor='vmx' or 'svm'",
        )
    settings = _settings(vm)
    if vendor == "vmx":
        return _describe_vmx(vm, settings, value, gpa)
    return _describe_svm(vm, settings, value, gpa, bool(raw.get("truncated", 0)))


def _private_from_memory(vm: kvmcore.VM | None, settings: dict[str, Any], gpa: int | None, error_code: int) -> bool | None:
    """``kvm_mmu_page_fault()``'s SW-protected rule: None when the gpa is unknown."""
    if settings["vm_type"] != "sw_protected" or error_code & PFERR_RSVD_MASK:
        return False
    if gpa is None or vm is None:
        return None
    return vm.mem_is_private(gpa >> vm.page_shift)


def _gfn(vm: kvmcore.VM | None, gpa: int | None) -> int | None:
    if gpa is None:
        return None
    return (gpa >> 12) & ~(kvm_gfn_direct_bits(vm) if vm is not None else 0)


def _describe_vmx(vm: kvmcore.VM | None, settings: dict[str, Any], eq: int, gpa: int | None) -> Syndrome:
    mbec = bool(settings["mbec"])
    try:
        ept = decode_ept_violation(eq, mbec=mbec)
    except DecodeError as err:
        return _undecoded("vmx", VMX_MEANINGS, str(err), gpa)
    is_private: bool | None = False
    used = eq
    if settings["vm_type"] == "tdx" and vm is not None:
        if gpa is None:
            is_private = None
        else:
            is_private = not gpa & tdx_shared_bit(vm)
            try:
                used = tdx_exit_qualification(eq, private=is_private)
            except DecodeError as err:
                return _undecoded("vmx", VMX_MEANINGS, str(err), gpa)
    error_code = ept_violation_to_pferr(used, kernel=settings["kernel"], mbec=mbec, private=bool(is_private))
    if is_private is False:
        is_private = _private_from_memory(vm, settings, gpa, error_code)
        if is_private:
            error_code |= PFERR_PRIVATE_ACCESS
    bits = ept.to_dict()
    fields: dict[str, Any] = {"vendor": "vmx", **{name: bits[name] for name in _VMX_BITS}}
    fields.update(_tail(vm, error_code, gpa, is_private))
    # SDM Table 28-7: bit 8 (translated address vs paging structure) is defined only with bit 7
    fields["page_walk"] = None if not eq & 0x80 else not eq & 0x100
    return Syndrome("x86", fields, VMX_MEANINGS, True)


def _describe_svm(
    vm: kvmcore.VM | None, settings: dict[str, Any], ec: int, gpa: int | None, truncated: bool
) -> Syndrome:
    try:
        npf = decode_npf(ec, truncated=truncated)
    except DecodeError as err:
        return _undecoded("svm", SVM_MEANINGS, str(err), gpa)
    snp = settings["vm_type"] == "snp"
    if ec & PFERR_SYNTHETIC_MASK:
        error_code = ec  # a traced value: npf_interception() already built it
    else:
        error_code = npf_to_pferr(ec, snp=snp)
    is_private: bool | None = bool(error_code & PFERR_PRIVATE_ACCESS)
    if truncated and snp:
        is_private = None  # ENC (bit 34) was cut off
    elif not is_private:
        is_private = _private_from_memory(vm, settings, gpa, error_code)
        if is_private:
            error_code |= PFERR_PRIVATE_ACCESS
    bits = npf.to_dict()
    fields: dict[str, Any] = {"vendor": "svm", **{name: bits[name] for name in _SVM_BITS}}
    tail = _tail(vm, error_code, gpa, is_private)
    del tail["write"]  # the NPF RW bit above is the same bit
    fields.update(tail)
    # APM #NPF EXITINFO1 bit 33 GUEST_PAGE, bit 32 GUEST_FINAL; a 32-bit truncated value lost both
    fields["page_walk"] = True if ec & (1 << 33) else False if ec & (1 << 32) else None
    return Syndrome("x86", fields, SVM_MEANINGS, True)


def _tail(vm: kvmcore.VM | None, error_code: int, gpa: int | None, is_private: bool | None) -> dict[str, Any]:
    return {
        "error_code": error_code,
        "pferr": pferr_names(error_code),
        "gfn": _gfn(vm, gpa),
        "gpa": gpa,
        "write": bool(error_code & PFERR_WRITE_MASK),
        "exec": bool(error_code & PFERR_FETCH_MASK),
        "is_private": is_private,
    }


# --- trace lines ---------------------------------------------------------------------------
#: ``parse_event`` name -> TraceEvent kind for the events that carry no syndrome.
TRACE_KINDS = {
    "kvm_mmio": "mmio",
    "kvm_userspace_exit": "exit",
    "fast_page_fault": "fast_page_fault",
    "kvm_mmu_spte_requested": "spte_requested",
    "kvm_exit": "exit",
    "kvm_nested_vmexit": "nested_exit",
}


def trace_event(event: str, text: str) -> TraceEvent | None:
    """One x86 tracepoint line as a ``kvmcore.TraceEvent``; None for an unknown event.

    ``kvm_page_fault`` is ``"guest_fault"`` with raw registers when ``vendor_hint`` tells the
    vendor: VMX ``{"vendor": "vmx", "exit_qualification": error_code, "gpa": fault_address}``,
    SVM ``{"vendor": "svm", "error_code": error_code & ~PFERR_PRIVATE_ACCESS, "gpa": ...}``
    (EXITINFO1: the PRIVATE bit was added by ``npf_interception()`` from ENC and is re-derived on
    decode). Otherwise ``"guest_fault_ambiguous"`` with raw ``{"error_code", "gpa", "traced": 1}``:
    the VM's ``vendor`` setting (``--set vendor=``) decides how ``decode_fault`` reads it, or the
    ``kvm_exit`` of the same vCPU that the replay pairs it with.

    ``kvm_exit`` / ``kvm_nested_vmexit`` with reason EPT_VIOLATION or npf are
    ``"guest_fault_exit"``: VMX raw ``{"vendor": "vmx", "exit_qualification": info1}`` (VMX's
    info2 is the IDT-vectoring info, not the GPA: ``vmx_get_exit_info()``), SVM raw
    ``{"vendor": "svm", "error_code": info1, "gpa": info2}`` (EXITINFO1/EXITINFO2,
    ``svm_get_exit_info()``, full 64 bits). Other exits are ``"exit"`` / ``"nested_exit"``.
    Malformed text raises ValueError.
    """
    fields = parse_event(event, text)
    if fields is None:
        return None
    name = fields["event"]
    if name == "kvm_page_fault":  # the common case first
        ec = fields["error_code"]
        vendor = vendor_hint(ec)
        if vendor is None:
            return TraceEvent("guest_fault_ambiguous", fields, {"error_code": ec, "gpa": fields["fault_address"], "traced": 1})
        raw: dict[str, Any] = {"vendor": vendor, "gpa": fields["fault_address"]}
        if vendor == "vmx":
            raw["exit_qualification"] = ec
        else:
            raw["error_code"] = ec & ~PFERR_PRIVATE_ACCESS
        return TraceEvent("guest_fault", fields, raw)
    if name in ("kvm_exit", "kvm_nested_vmexit"):
        reason = fields["exit_reason"]
        exit_raw: dict[str, Any]
        if reason in VMX_EPT_VIOLATION_NAMES:
            exit_raw = {"vendor": "vmx", "exit_qualification": fields["info1"]}
            return TraceEvent("guest_fault_exit", fields, exit_raw)
        if reason in SVM_NPF_NAMES:
            exit_raw = {"vendor": "svm", "error_code": fields["info1"], "gpa": fields["info2"]}
            return TraceEvent("guest_fault_exit", fields, exit_raw)
    return TraceEvent(TRACE_KINDS[name], fields)


__all__ = ["SVM_MEANINGS", "TRACE_KINDS", "VMX_MEANINGS", "describe_syndrome", "trace_event"]
