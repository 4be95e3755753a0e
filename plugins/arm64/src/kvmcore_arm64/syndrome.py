"""What arm64 tells people and VMMs about a fault: the syndrome words of a memory-fault exit
(kvmcore's proposal, ``docs/syndrome.md``) and ``describe_syndrome`` (``kvmcore decode``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kvmcore
from kvmcore import DecodeError, abi

from . import esr as E
from .fault import Arm64Fault, raw_private

_U64_MAX = (1 << 64) - 1


def fill_memory_fault_syndrome(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> None:
    """Fill kvmcore's syndrome extension after the common ``kvm_prepare_memory_fault_exit()``.

    ``arch = KVMCORE_SYNDROME_ARCH_ARM64``; ``syndrome[0]`` = the sanitised ESR_EL2
    (:func:`kvmcore_arm64.esr.sanitised_esr`: EC, IL, WnR, CM, S1PTW, FnV, FSC and the ISS2
    permission-reason bits; never the instruction syndrome or host state); ``syndrome[1]`` =
    the fault IPA with the FAR page offset (``ipa | FAR[11:0]``). Flags, gpa and size are the
    common helper's and stay untouched. Not upstream uAPI.
    """
    syndrome = vcpu.kvm_run.syndrome
    syndrome.arch = abi.KVMCORE_SYNDROME_ARCH_ARM64
    syndrome.syndrome[0] = E.sanitised_esr(fault.esr)
    syndrome.syndrome[1] = fault.gpa
    syndrome.syndrome[2] = 0
    syndrome.syndrome[3] = 0
    syndrome.flags = abi.KVMCORE_SYNDROME_VALID


def fill_memory_fault_esr(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> None:
    """The design ``arm64-esr`` (Oliver Upton's): ``memory_fault.esr`` (kvm_run offset 56) is
    the sanitised ESR_EL2 of the abort, on every memory-fault exit, whatever made it.

    The same mask as the ``syndrome`` words (:func:`kvmcore_arm64.esr.sanitised_esr`), in a
    field of the exit's own, as upstream's ``arm_sea.esr`` (KVM_EXIT_ARM_SEA, 7.x) is. Not
    upstream uAPI.
    """
    vcpu.kvm_run.memory_fault_esr.esr = E.sanitised_esr(fault.esr)


def memory_fault_flags(vcpu: kvmcore.VCPU, fault: Arm64Fault) -> int:
    """What arm64's ``kvm_arch_prepare_memory_fault_exit()`` ORs into ``memory_fault.flags``.

    PRIVATE only for a private access, which upstream arm64 never has (it never sets
    ``is_private``: Sean's "the arm64 hook is empty"); kvmcore's private-memory extension
    makes it possible. With ``rwx-flags``, the access from the ESR itself, arm64's single
    source of truth (Oliver Upton): EXEC for an instruction abort that is not a stage-1 walk
    (``kvm_vcpu_trap_is_exec_fault()``), WRITE per ``kvm_is_write_fault()``, READ otherwise.
    """
    flags = abi.KVM_MEMORY_EXIT_FLAG_PRIVATE if fault.is_private else 0
    if vcpu.vm.exit_design.rwx:
        info = fault.info
        if E.is_exec_fault(info):
            flags |= abi.KVM_MEMORY_EXIT_FLAG_EXEC
        elif E.is_write_fault(info):
            flags |= abi.KVM_MEMORY_EXIT_FLAG_WRITE
        else:
            flags |= abi.KVM_MEMORY_EXIT_FLAG_READ
    return flags


# --- describe_syndrome ------------------------------------------------------------------------

MEANINGS: dict[str, str] = {
    "esr": "ESR_EL2 as given (ISS2 in bits 55:32)",
    "ec": "exception class, ESR bits 31:26",
    "ec_name": "the asm/esr.h ESR_ELx_EC_* name of the class",
    "il": "instruction length: 1 = 32-bit instruction",
    "iss": "instruction specific syndrome, ESR bits 24:0",
    "iss2": "ISS2, ESR bits 55:32",
    "is_abort": "an instruction or data abort (EC 0x20, 0x21, 0x24, 0x25)",
    "guest_fault": "an abort from a lower EL (EC 0x20 or 0x24): what kvm_handle_guest_abort() gets",
    "is_data_abort": "a data abort (EC 0x24 or 0x25)",
    "isv": "ISS[24]: the instruction syndrome (SAS, SSE, SRT, SF, AR) is valid",
    "sas": "ISS[23:22]: access size, 1 << SAS bytes (None without ISV)",
    "sse": "ISS[21]: the load sign-extends (None without ISV)",
    "srt": "ISS[20:16]: the transfer register Xt/Wt (None without ISV)",
    "sf": "ISS[15]: 64-bit register (None without ISV)",
    "ar": "ISS[14]: acquire/release semantics (None without ISV)",
    "vncr": "ISS[13]: fault on a VNCR_EL2-relative access (FEAT_NV2)",
    "set": "ISS[12:11]: synchronous error type (only for FSC 0x10)",
    "fnv": "ISS[10]: FAR not valid",
    "ea": "ISS[9]: external abort type (IMPLEMENTATION DEFINED)",
    "cm": "ISS[8]: fault on a cache maintenance or address translation instruction",
    "s1ptw": "ISS[7]: stage-2 fault on the stage-1 translation table walk",
    "wnr": "ISS[6]: write, not read (also 1 for cache maintenance)",
    "fsc": "ISS[5:0]: data/instruction fault status code",
    "fsc_name": "what the fault status code means",
    "fault_kind": "the kind of fault (translation, access_flag, permission, sync_external_abort...)",
    "fault_level": "translation table level of the fault (None if the code has no level)",
    "tnd": "ISS2[10]: tag-not-data access (FEAT_MTE_PERM)",
    "tag_access": "ISS2[9]: NoTagAccess permission fault on a tag access (FEAT_MTE_PERM)",
    "gcs": "ISS2[8]: Guarded Control Stack data access",
    "assured_only": "ISS2[7]: AssuredOnly/MostlyReadOnly permission fault (FEAT_THE)",
    "overlay": "ISS2[6]: permission overlay fault (S1POE/S2POE)",
    "dirty_bit": "ISS2[5]: permission fault from the dirty state (indirect permissions)",
    "xs": "ISS2[4:0]: LS64 status register number",
    "hdbssf": "ISS2[11]: hardware dirty-state tracking buffer fault (FEAT_HDBSS)",
    "ec_meaning": "what the exception class means",
    "ipa": "faulting IPA, page-aligned, from HPFAR_EL2.FIPA (kvm_vcpu_get_fault_ipa())",
    "gpa": "faulting IPA with the FAR_EL2 page offset: ipa | FAR[11:0] (the MMIO address)",
    "gfn": "guest frame number: ipa >> PAGE_SHIFT of the VM's granule",
    "write": "kvm_is_write_fault(): WnR, never for an IABT, only permission faults for S1PTW",
    "exec": "kvm_vcpu_trap_is_exec_fault(): an IABT_LOW not on a stage-1 walk",
    "is_private": "the raw key private (kvmcore's modelling input; upstream arm64 never sets it)",
    "page_walk": "the fault hit the guest's stage-1 table walk (S1PTW), not the final access",
}

_DESCRIBE_KEYS = frozenset(("esr", "far", "hpfar", "private", "data"))


def describe(vm: kvmcore.VM | None, raw: Mapping[str, Any]) -> kvmcore.Syndrome:
    """Every field of ESR_EL2 (and, with ``hpfar``, the IPA and gfn) for a person.

    Any exception class decodes; one that is not a guest abort gives ``guest_fault=False``
    with the ``check_guest_abort`` message as ``error``. A missing or malformed ``esr``, a
    malformed ``hpfar``/``far`` or an unknown key raise :class:`DecodeError`.
    """
    unknown = [k for k in raw if k not in _DESCRIBE_KEYS]
    if unknown:
        raise DecodeError(
            f"unknown raw key(s) {', '.join(map(repr, unknown))}: arm64 takes esr, far, hpfar "
            "and the modelling inputs private, data"
        )
    if "esr" not in raw:
        raise DecodeError("missing register esr (ESR_EL2): nothing to decode")
    for key in ("esr", "far", "hpfar", "data"):
        value = raw.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= _U64_MAX):
            raise DecodeError(f"{key}={value!r}: not a 64-bit register value")
    info = E.decode_esr(raw["esr"])
    fields: dict[str, Any] = info.to_dict()
    if "hpfar" in raw:
        ipa = E.hpfar_to_ipa(raw["hpfar"])
        far = raw.get("far")
        page_shift = vm.page_shift if vm is not None else 12
        fields["ipa"] = ipa
        fields["gpa"] = ipa | (far & E.FAR_TO_FIPA_OFFSET_MASK) if far is not None else ipa
        fields["gfn"] = E.gpa_to_gfn(ipa, page_shift)
    fields["write"] = E.is_write_fault(info)
    fields["exec"] = E.is_exec_fault(info)
    fields["is_private"] = raw_private(raw)
    fields["page_walk"] = bool(fields.get("s1ptw")) if info.is_abort else None
    meanings = {key: MEANINGS[key] for key in fields}
    error = None
    if not info.guest_fault:
        try:
            E.check_guest_abort(info)
        except DecodeError as err:
            error = str(err)
    return kvmcore.Syndrome("arm64", fields, meanings, guest_fault=info.guest_fault, error=error)


__all__ = ["MEANINGS", "describe", "fill_memory_fault_esr", "fill_memory_fault_syndrome", "memory_fault_flags"]
