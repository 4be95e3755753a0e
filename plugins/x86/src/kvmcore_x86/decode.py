"""From raw exit registers to an ``X86Fault``, and back (``encode_fault``).

``decode_fault()`` is the model of what runs between the VM exit and ``kvm_mmu_do_page_fault()``:
``handle_ept_violation()``/``__vmx_handle_ept_violation()`` (VMX), ``tdx_handle_ept_violation()``
(TDX), ``handle_ept_misconfig()`` (VMX, EPT misconfiguration), ``npf_interception()`` (SVM),
then the part of ``kvm_mmu_page_fault()`` that adjusts the error code (SW-protected VMs) and
``kvm_mmu_do_page_fault()``'s filling of ``struct kvm_page_fault``. The bit logic lives in
``vmx``/``svm``; this module only orders it.

Raw keys (ints unless said): ``vendor`` (``"vmx"``/``"svm"``, a string), ``exit_qualification``
(VMX), ``gpa`` (GUEST_PHYSICAL_ADDRESS / EXITINFO2), ``gla`` (VMX GUEST_LINEAR_ADDRESS),
``error_code`` (SVM EXITINFO1), and kvmcore's modelling inputs: ``exit_reason`` (VMX: 48 EPT
violation, the default, or 49 EPT misconfiguration), ``private`` (0/1: a private access where the
hardware has no bit), ``len``/``data`` (the access width and stored value the instruction
emulator would decode, for a KVM_EXIT_MMIO).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from functools import lru_cache
from typing import Any

import kvmcore
from kvmcore import DecodeError
from kvmcore_x86.encode import encode_ept_violation, encode_npf
from kvmcore_x86.fault import MODEL_KEYS, REGISTERS, X86Fault, fault_kind
from kvmcore_x86.pferr import (
    PFERR_FETCH_MASK,
    PFERR_PRESENT_MASK,
    PFERR_PRIVATE_ACCESS,
    PFERR_RSVD_MASK,
    PFERR_SYNTHETIC_MASK,
    PFERR_USER_MASK,
    PFERR_WRITE_MASK,
    U64_MAX,
    check_u64,
)
from kvmcore_x86.svm import decode_npf, npf_to_pferr
from kvmcore_x86.vmx import (
    EPT_VIOLATION_GVA_IS_VALID,
    EXIT_REASON_EPT_MISCONFIG,
    EXIT_REASON_EPT_VIOLATION,
    decode_ept_violation,
    ept_violation_to_pferr,
    pferr_form,
    tdx_exit_qualification,
)

VENDORS = ("vmx", "svm")
#: Keys ``decode_fault`` accepts: ``REGISTERS`` then ``MODEL_KEYS`` (defined in
#: :mod:`kvmcore_x86.fault`, which loading the plugin imports, and re-exported here).
RAW_KEYS = frozenset(REGISTERS + MODEL_KEYS)
#: x86 MAXPHYADDR is at most 52.
GPA_BITS = 52
#: The access widths an emulated MMIO access may have in one KVM_EXIT_MMIO (kvm_run.mmio.data is 8 bytes).
MMIO_LENGTHS = (1, 2, 4, 8)


# --- VM settings ---------------------------------------------------------------------------
def tdx_shared_bit(vm: kvmcore.VM) -> int:
    """The TDX shared GPA bit: bit 51 with a 52-bit GPAW (5-level S-EPT), bit 47 with 48.

    Mirrors ``TDX_SHARED_BIT_PWL_5``/``TDX_SHARED_BIT_PWL_4`` chosen by ``setup_tdparams()`` from
    the TD's MAX_GPAW; the VM setting ``tdx_gpaw`` selects it. 0 for a non-TDX VM.
    """
    if vm.settings.get("vm_type") != "tdx":
        return 0
    return 1 << (vm.settings.get("tdx_gpaw", 52) - 1)


def kvm_gfn_direct_bits(vm: kvmcore.VM) -> int:
    """Mirrors ``kvm_gfn_direct_bits()``: the gfn bits a direct MMU strips (TDX's shared bit)."""
    return tdx_shared_bit(vm) >> vm.page_shift


def check_settings(vm: kvmcore.VM, given: Mapping[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Cross-check the VM settings the core validated one by one; fill the vendor a type implies.

    ``vm_type="snp"`` is AMD-only and ``"tdx"`` Intel-only: the vendor follows when it was not
    given, and a contradiction is a ValueError. ``mbec=True`` needs VMX and kernel 7.3
    (the modelled kernels before it, 6.12 and 6.18, have no MBEC support). ``vm_type="tdx"``
    needs 6.16+: 6.12's ``arch/x86/include/uapi/asm/kvm.h`` has no ``KVM_X86_TDX_VM``, so
    ``KVM_CREATE_VM`` refuses the type (``kvm_is_vm_type_supported()``).
    """
    result = dict(settings)
    if result["vm_type"] == "tdx" and vm.kernel < (6, 16):
        raise ValueError(
            f"arch 'x86': vm_type='tdx' needs kernel 6.18 or 7.3; kernel {vm.kernel} has no KVM_X86_TDX_VM (TDX came in 6.16)"
        )
    implied = {"snp": "svm", "tdx": "vmx"}.get(result["vm_type"])
    if implied is not None:
        if "vendor" not in given:
            result["vendor"] = implied
        elif result["vendor"] != implied:
            raise ValueError(
                f"arch 'x86': vm_type={result['vm_type']!r} needs vendor={implied!r}, got vendor={result['vendor']!r}"
            )
    if result["mbec"] and (result["vendor"] != "vmx" or pferr_form(vm.kernel) != "7.2"):
        raise ValueError(
            "arch 'x86': mbec=True needs vendor='vmx' and kernel='7.3' (KVM has no MBEC support in 6.12 or 6.18); "
            f"got vendor={result['vendor']!r}, kernel='{vm.kernel}'"
        )
    return result


# --- raw registers -------------------------------------------------------------------------
def reg(raw: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    """``raw[name]`` as a u64, or None when absent and not required; DecodeError naming it."""
    value = raw.get(name)
    if value is None:
        if required:
            raise DecodeError(f"{name}: missing (x86 raw registers: {', '.join(sorted(raw)) or 'none given'})")
        return None
    try:
        return check_u64(value, name)
    except TypeError as err:
        raise DecodeError(str(err)) from None


def resolve_vendor(raw: Mapping[str, Any], default: str | None) -> str | None:
    """Which decoder: raw ``vendor``; else the register present (``exit_qualification``/
    ``exit_reason`` -> VMX, ``error_code`` -> SVM); else ``default`` (the VM's setting)."""
    vendor = raw.get("vendor")
    if vendor is not None:
        if vendor not in VENDORS:
            raise DecodeError(f"vendor={vendor!r}: expected 'vmx' or 'svm'")
        return vendor
    vmx = "exit_qualification" in raw or "exit_reason" in raw
    svm = "error_code" in raw
    if vmx and not svm:
        return "vmx"
    if svm and not vmx:
        return "svm"
    if vmx and svm:
        raise DecodeError(
            "exit_qualification and error_code: both given, so the vendor is ambiguous; add vendor='vmx' or 'svm'"
        )
    return default


def check_gpa(gpa: int) -> int:
    if gpa >> GPA_BITS:
        raise DecodeError(f"gpa={gpa:#x}: above the 52-bit x86 physical address space (MAXPHYADDR <= 52)")
    return gpa


# --- decode_fault --------------------------------------------------------------------------
def decode_fault(vcpu: kvmcore.VCPU, raw: Mapping[str, Any]) -> X86Fault:
    """The X86Fault KVM builds for one EPT violation/misconfiguration or #NPF (see module doc).

    What the exit registers decide (vendor, exit qualification used, EXITINFO1, PFERR word) is
    a function of them and of a few VM settings, so for plain inputs (:func:`_exit_key`) it is
    remembered (``_EXITS``) once :func:`_decode_fault` has worked it out step by step; the rest
    (:func:`_fault`: GPA, GLA, SW-protected attributes, MMIO inputs) runs on every call.
    """
    vm = vcpu.vm
    if "traced" in raw:
        raw = traced_registers(vm.settings, raw)
    key = _exit_key(vm, raw)
    exit_ = _EXITS.get(key) if key is not None else None
    if exit_ is None:
        return _decode_fault(vm, raw, key)
    # positional: a keyword or a starred argument makes the call take CPython's slow path
    vendor, eq, npf, error_code = exit_
    gpa = raw["gpa"]  # an int in [0, 2**64): _exit_key() checked every value
    if gpa >> GPA_BITS:
        check_gpa(gpa)  # raises, naming the value
    return _fault(vm, raw, gpa, vendor, eq, npf, error_code, True)


def traced_registers(settings: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The registers behind ``kvm_page_fault``'s printed ``error_code`` (raw ``traced=1``).

    The tracepoint prints what ``kvm_mmu_page_fault()`` got: on VMX the raw exit qualification
    (``handle_ept_violation()``), on SVM the #NPF error code with PFERR_PRIVATE_ACCESS possibly
    added by ``npf_interception()``. Raw ``vendor``, else the VM's ``vendor`` setting, says which.
    """
    out = {k: v for k, v in raw.items() if k != "traced"}
    if not raw.get("traced"):
        return out
    vendor = raw.get("vendor") or settings["vendor"]
    out["vendor"] = vendor
    ec = out.pop("error_code", None)
    if ec is None or ec.__class__ is not int:
        if ec is not None:
            out["error_code"] = ec  # let the decoder name the bad value
        return out
    if vendor == "vmx":
        out.setdefault("exit_qualification", ec)
    else:
        out["error_code"] = ec & ~PFERR_PRIVATE_ACCESS
    return out


#: ``_exit_key()`` -> ``(vendor, exit qualification, EXITINFO1, PFERR word)`` for inputs
#: ``_decode_fault()`` accepted; emptied when it reaches ``_EXITS_MAX`` entries.
_EXITS: dict[tuple[Any, ...], tuple[str | None, int | None, int | None, int]] = {}
_EXITS_MAX = 4096
#: Set in an int that is negative or 2**64 or more.
_NOT_U64 = ~U64_MAX


def _exit_key(vm: kvmcore.VM, raw: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Everything the exit registers' decoding depends on, or None if ``raw`` is not plain.

    Plain: only known keys; every value but ``vendor`` an int in [0, 2**64) (not None, which the
    key could not tell from an absent key, nor a bool, float or int subclass, which hash like
    the int they equal yet may decode differently); ``vendor``, if given, a str; and not a TDX
    VM (whose PFERR word depends on the GPA's shared bit). Anything else always goes through
    :func:`_decode_fault`, which raises with its message.
    """
    settings = vm.settings
    if not raw.keys() <= RAW_KEYS or settings["vm_type"] == "tdx":
        return None
    for name, value in raw.items():
        if value.__class__ is not int or value & _NOT_U64:
            if name != "vendor" or value.__class__ is not str:
                return None
    kernel = vm.kernel  # by its numbers: a KernelVersion hashes in Python
    return (
        settings["vm_type"], settings["vendor"], kernel.major, kernel.minor, settings["mbec"],
        raw.get("vendor"), raw.get("exit_qualification"), raw.get("exit_reason"), raw.get("error_code"),
        raw.get("private", 0), "gpa" in raw, "gla" in raw,
    )  # fmt: skip


def _decode_fault(vm: kvmcore.VM, raw: Mapping[str, Any], key: tuple[Any, ...] | None) -> X86Fault:
    """:func:`decode_fault` step by step: every check in order, then the exit registers'
    decoding is remembered under ``key`` (unless None)."""
    kvmcore.check_raw_keys(raw, arch="x86", registers=REGISTERS, extra_keys=MODEL_KEYS)
    settings = vm.settings
    vm_type = settings["vm_type"]
    vendor = resolve_vendor(raw, settings["vendor"])
    if (vm_type, vendor) in (("snp", "vmx"), ("tdx", "svm")):
        raise DecodeError(
            f"vendor={vendor!r}: a vm_type={vm_type!r} VM runs on {'AMD (svm)' if vm_type == 'snp' else 'Intel (vmx)'} only"
        )
    gpa = check_gpa(reg(raw, "gpa"))  # type: ignore[arg-type]
    raw_private = kvmcore.raw_private(raw)
    eq = npf = None
    if vendor == "vmx":
        if "error_code" in raw:
            raise DecodeError("error_code: an SVM register; a VMX fault gives exit_qualification")
        eq, error_code = _decode_vmx(vm, raw, gpa, raw_private)
    else:
        for name in ("exit_qualification", "exit_reason", "gla"):
            if name in raw:
                raise DecodeError(f"{name}: a VMX register; an SVM #NPF gives error_code and gpa")
        npf, error_code = _decode_svm(vm, raw, raw_private)
        if npf & PFERR_SYNTHETIC_MASK:
            key = None  # npf_to_pferr() warns about every such EXITINFO1: never remembered
    if key is not None:
        if len(_EXITS) >= _EXITS_MAX:
            _EXITS.clear()
        _EXITS[key] = (vendor, eq, npf, error_code)
    return _fault(vm, raw, gpa, vendor, eq, npf, error_code)


def _fault(
    vm: kvmcore.VM,
    raw: Mapping[str, Any],
    gpa: int,
    vendor: str | None,
    eq: int | None,
    npf: int | None,
    error_code: int,
    plain: bool = False,
) -> X86Fault:
    """The rest of :func:`decode_fault` once the exit registers are decoded: the GLA,
    ``kvm_mmu_page_fault()``'s error-code adjustment, the MMIO inputs, and the fault.
    ``plain``: :func:`_exit_key` found every value a 64-bit int, so ``gla``, ``len`` and
    ``data`` are not checked again."""
    settings = vm.settings
    vm_type = settings["vm_type"]
    gla = None
    if eq is not None and eq & EPT_VIOLATION_GVA_IS_VALID and "gla" in raw:
        gla = raw["gla"] if plain else reg(raw, "gla", required=False)
    # kvm_mmu_page_fault(): a SW-protected VM's memory attributes are the source of truth.
    if vm_type == "sw_protected" and not error_code & PFERR_RSVD_MASK and vm.mem_is_private(gpa >> vm.page_shift):
        error_code |= PFERR_PRIVATE_ACCESS
    # reg() only for a register that is given (it passes an absent optional one as None)
    mmio_len = raw.get("len")
    if mmio_len is not None and not plain:
        mmio_len = reg(raw, "len", required=False)
    if mmio_len is not None and mmio_len not in MMIO_LENGTHS:
        raise DecodeError(f"len={mmio_len}: an MMIO access is 1, 2, 4 or 8 bytes")
    data = raw.get("data")
    if data is not None and not plain:
        data = reg(raw, "data", required=False)
    # kvm_mmu_do_page_fault(): the fault's fields from the PFERR word. Positional, in field
    # order (keyword arguments cost more), the defaults from the dataclass.
    exec_, write, is_private, present, rsvd, user, kind = _pferr_fields(error_code)
    assert vendor is not None  # resolve_vendor() fell back to the VM's vendor setting
    return X86Fault(  # type: ignore[call-arg]  # mypy cannot count fields through *_DEFAULTS
        # kvm_gfn_direct_bits() is 0 outside TDX (tdx_shared_bit())
        (gpa >> vm.page_shift) & ~kvm_gfn_direct_bits(vm) if vm_type == "tdx" else gpa >> vm.page_shift,
        exec_, write, is_private, None, gpa,
        error_code, present, rsvd, user, vendor, gpa, kind, eq, npf, gla,
        *_DEFAULTS_BEFORE_NX, bool(settings.get("nx_huge_pages", False)), *_DEFAULTS_AFTER_NX,
        mmio_len, data or 0,
    )  # fmt: skip


@lru_cache(maxsize=1024)
def _pferr_fields(error_code: int) -> tuple[bool, bool, bool, bool, bool, bool, str]:
    """What ``kvm_mmu_do_page_fault()`` reads from the PFERR word: ``(exec, write, is_private,
    present, rsvd, user, fault_kind)`` (FETCH, WRITE, PRIVATE_ACCESS, PRESENT, RSVD, USER and
    :func:`~kvmcore_x86.fault.fault_kind`), once per distinct word."""
    return (
        bool(error_code & PFERR_FETCH_MASK), bool(error_code & PFERR_WRITE_MASK),
        bool(error_code & PFERR_PRIVATE_ACCESS), bool(error_code & PFERR_PRESENT_MASK),
        bool(error_code & PFERR_RSVD_MASK), bool(error_code & PFERR_USER_MASK), fault_kind(error_code),
    )  # fmt: skip


_FIELDS = fields(X86Fault)
assert [f.name for f in _FIELDS[15:19]] == ["gla", "prefetch", "is_tdp", "nx_huge_page_workaround_enabled"]
assert [f.name for f in _FIELDS[24:]] == ["map_writable", "mmio_len", "mmio_data"]
#: ``X86Fault``'s defaults for prefetch and is_tdp, and for huge_page_disallowed to map_writable.
_DEFAULTS_BEFORE_NX: tuple[Any, ...] = tuple(f.default for f in _FIELDS[16:18])
_DEFAULTS_AFTER_NX: tuple[Any, ...] = tuple(f.default for f in _FIELDS[19:25])


def _decode_vmx(vm: kvmcore.VM, raw: Mapping[str, Any], gpa: int, raw_private: bool) -> tuple[int | None, int]:
    """(exit qualification used, PFERR word) for a VMX exit.

    * exit reason 49, ``handle_ept_misconfig()``: ``kvm_mmu_page_fault(gpa, PFERR_RSVD_MASK)``;
      the exit has no exit qualification.
    * exit reason 48, ``handle_ept_violation()`` -> ``__vmx_handle_ept_violation()``: the
      exit qualification is validated (``decode_ept_violation``) and mapped to PFERR by
      ``ept_violation_to_pferr()`` for the VM's ``kernel`` (and ``mbec`` on 7.2).
    * TDX, ``tdx_handle_ept_violation()``: private iff the GPA lacks the shared bit
      (``vt_is_tdx_private_gpa()``); a private fault's exit qualification is forced to
      ACC_WRITE; a fetch from a shared GPA is KVM_BUG_ON (DecodeError).
    * Otherwise the raw ``private`` key adds PFERR_PRIVATE_ACCESS (kvmcore's modelling input).
    """
    settings = vm.settings
    exit_reason = reg(raw, "exit_reason", required=False)
    if exit_reason is None:
        exit_reason = EXIT_REASON_EPT_VIOLATION
    if exit_reason == EXIT_REASON_EPT_MISCONFIG:
        return None, PFERR_RSVD_MASK | (PFERR_PRIVATE_ACCESS if raw_private else 0)
    if exit_reason != EXIT_REASON_EPT_VIOLATION:
        raise DecodeError(f"exit_reason={exit_reason}: not a guest memory fault (48 EPT violation, 49 EPT misconfiguration)")
    mbec = bool(settings["mbec"])
    eq = reg(raw, "exit_qualification")
    assert eq is not None
    decode_ept_violation(eq, mbec=mbec)  # validation: reserved bits, bit 8 without 7, no access bit
    if settings["vm_type"] == "tdx":
        private = not gpa & tdx_shared_bit(vm)
        eq = tdx_exit_qualification(eq, private=private)
    else:
        private = raw_private
    return eq, ept_violation_to_pferr(eq, kernel=pferr_form(vm.kernel), mbec=mbec, private=private)


def _decode_svm(vm: kvmcore.VM, raw: Mapping[str, Any], raw_private: bool) -> tuple[int, int]:
    """(EXITINFO1, PFERR word) for an #NPF: ``decode_npf()`` validates the reserved bits, then
    ``npf_interception()``'s ``npf_to_pferr(snp=...)`` (SNP: ENC -> PRIVATE; synthetic bits from
    hardware are warned about and cleared). Outside SNP the raw ``private`` key adds PRIVATE."""
    ec = reg(raw, "error_code")
    assert ec is not None
    decode_npf(ec)
    snp = vm.settings["vm_type"] == "snp"
    error_code = npf_to_pferr(ec, snp=snp)
    if raw_private and not snp:
        error_code |= PFERR_PRIVATE_ACCESS
    return ec, error_code


# --- encode_fault --------------------------------------------------------------------------
def encode_fault(vm: kvmcore.VM, access: kvmcore.Access) -> dict[str, Any]:
    """The raw registers for ``access`` on this VM's vendor (``encode_ept_violation``/``encode_npf``).

    Private accesses: TDX clears the shared GPA bit (shared accesses set it); SNP sets ENC;
    elsewhere ``"private": 1`` (no hardware bit). MMIO-able accesses (``no_slot``, and writes to a
    ``read_only`` entry) carry ``len``/``data`` for the emulator. ValueError for what x86 cannot
    express: an access-flag fault, and on TDX a private read or fetch (KVM reports every private TD
    fault as a write) or a shared fetch (KVM_BUG_ON).
    """
    if access.cause == "access_flag":
        raise ValueError(
            f"{access}: x86 has no access-flag fault; EPT/NPT accessed and dirty bits are set by "
            "the page walker without a VM exit"
        )
    if access.size not in MMIO_LENGTHS:
        raise ValueError(f"{access}: size must be 1, 2, 4 or 8 bytes")
    settings = vm.settings
    vm_type = settings["vm_type"]
    private = bool(access.private)
    raw: dict[str, Any]
    if settings["vendor"] == "vmx":
        gpa = access.gpa
        if vm_type == "tdx":
            shared_bit = tdx_shared_bit(vm)
            if gpa & shared_bit:
                raise ValueError(f"{access}: gpa has the TDX shared bit {shared_bit:#x} set; give the address without it")
            if private and access.kind != "write":
                raise ValueError(
                    f"{access}: KVM reports every private TD fault as a write (tdx_handle_ept_violation "
                    f"forces EPT_VIOLATION_ACC_WRITE), so a private {access.kind} cannot round-trip"
                )
            if not private and access.kind == "exec":
                raise ValueError(f"{access}: an instruction fetch from shared TD memory is KVM_BUG_ON (-EIO)")
            if not private:
                gpa |= shared_bit
        raw = encode_ept_violation(gpa, access.kind, access.cause)
        if private and vm_type != "tdx":
            raw["private"] = 1
    else:
        snp = vm_type == "snp"
        raw = encode_npf(access.gpa, access.kind, access.cause, private=private and snp)
        if private and not snp:
            raw["private"] = 1
    if access.kind != "exec" and (access.cause == "no_slot" or (access.cause == "read_only" and access.kind == "write")):
        raw["len"] = access.size
        if access.kind == "write":
            raw["data"] = access.data & ((1 << (8 * access.size)) - 1)
    return raw


__all__ = [
    "GPA_BITS",
    "MMIO_LENGTHS",
    "RAW_KEYS",
    "VENDORS",
    "check_gpa",
    "check_settings",
    "decode_fault",
    "encode_fault",
    "kvm_gfn_direct_bits",
    "reg",
    "resolve_vendor",
    "tdx_shared_bit",
]
