"""Parse the TP_printk text of the tracepoints an x86 guest page fault emits.

``parse_event(event_name, text)`` takes the text after ``event_name: `` in an ftrace or
``trace-cmd report`` line and returns a dict keyed by the tracepoint's TP_STRUCT__entry field
names, or ``None`` for an event x86 does not know. Malformed text raises ValueError naming
the event and the text.

The ``error_code`` of ``kvm_page_fault`` is *not* one format:

* VMX (``handle_ept_violation``) and TDX trace the raw EPT-violation **exit qualification**
  (TDX: forced to 0x2 for private GPAs) -> decode with ``vmx.decode_ept_violation()``;
* SVM (``npf_interception``) traces the **#NPF error code** after KVM's adjustments (so it
  may carry PFERR_PRIVATE_ACCESS, bit 49) -> ``svm.decode_npf()``. Kernels whose tracepoint
  stored ``error_code`` as ``unsigned int`` print only its low 32 bits: pass
  ``truncated=True``. The text looks the same either way, so the kernel version decides;
* the #PF intercept (shadow paging, ``kvm_handle_page_fault``, either vendor) traces a guest
  #PF error code, i.e. 32-bit PFERR.

So the vendor must be known to decode it. ``vendor_hint()`` says when the bits alone settle it.
"""

from __future__ import annotations

import re

from kvmcore import shown_text
from kvmcore_x86.pferr import (
    PFERR_GUEST_ENC_MASK,
    PFERR_GUEST_FINAL_MASK,
    PFERR_GUEST_PAGE_MASK,
    PFERR_GUEST_RMP_MASK,
    PFERR_GUEST_SIZEM_MASK,
    PFERR_GUEST_VMPL_MASK,
    PFERR_PRIVATE_ACCESS,
    check_u64,
    pferr_from_trace_flags,
)

_HEX = "([0-9a-f]+)"

# kvm:kvm_page_fault, "vcpu %u rip 0x%lx address 0x%016llx error_code 0x%llx" (6.15-7.2).
_KVM_PAGE_FAULT = re.compile(rf"vcpu (\d+) rip 0x{_HEX} address 0x{_HEX} error_code 0x{_HEX}")
# Before vcpu/rip were added (2021): "address %lx error_code %x".
_KVM_PAGE_FAULT_OLD = re.compile(rf"address {_HEX} error_code {_HEX}")
# kvm:kvm_mmio, "mmio %s len %u gpa 0x%llx val 0x%llx"; type 0/1/2 or a raw hex value.
_KVM_MMIO = re.compile(rf"mmio (unsatisfied-read|read|write|0x[0-9a-f]+) len (\d+) gpa 0x{_HEX} val 0x{_HEX}")
_KVM_MMIO_TYPES = {"unsatisfied-read": 0, "read": 1, "write": 2}
# kvm:kvm_userspace_exit, "reason %s (%d)".
_KVM_USERSPACE_EXIT = re.compile(r"reason (\S+) \((-?\d+)\)")
# kvmmmu:fast_page_fault. %#llx prints 0 without the 0x prefix; %p is a hashed pointer.
_FAST_PAGE_FAULT = re.compile(
    rf"vcpu (-?\d+) gva {_HEX} error_code (\S*) sptep (\S+) old (0x[0-9a-f]+|0) "
    rf"new {_HEX} spurious ([01]) fixed ([01])"
)
# kvmmmu:kvm_mmu_spte_requested, "gfn %llx pfn %llx level %d access %x" (access optional:
# older kernels print only gfn/pfn/level).
_KVM_MMU_SPTE_REQUESTED = re.compile(rf"gfn {_HEX} pfn {_HEX} level (\d+)(?: access {_HEX})?")
# kvm:kvm_exit and kvm:kvm_nested_vmexit (TRACE_EVENT_KVM_EXIT in arch/x86/kvm/trace.h):
#   5.12-6.x: "vcpu %u reason %s%s%s rip 0x%lx info1 0x%016llx info2 0x%016llx intr_info 0x%08x
#              error_code 0x%08x", 7.x adds " requests 0x%016llx";
#   before:   "reason %s rip 0x%lx info %llx %llx".
# The reason is __print_symbolic(): a VMX_EXIT_REASONS / SVM_EXIT_REASONS name, or the number in
# hex; VMX exit-reason flags (" VMENTRY_FAIL"...) may follow it.
_KVM_EXIT = re.compile(
    rf"(?:vcpu (\d+) )?reason (\S+)((?: [A-Z_]+)*) rip 0x{_HEX} "
    rf"(?:info1 0x{_HEX} info2 0x{_HEX}(?: intr_info 0x{_HEX} error_code 0x{_HEX})?(?: requests 0x{_HEX})?"
    rf"|info {_HEX} {_HEX})"
)
# Old kvm_nested_vmexit (before it shared kvm_exit's format):
#   "rip: 0x%016llx reason: %s ext_inf1: 0x%016llx ext_inf2: 0x%016llx ext_int: 0x%08x ext_int_err: 0x%08x"
_KVM_NESTED_VMEXIT_OLD = re.compile(
    rf"rip: 0x{_HEX} reason: (\S+)((?: [A-Z_]+)*) ext_inf1: 0x{_HEX} ext_inf2: 0x{_HEX} "
    rf"ext_int: 0x{_HEX} ext_int_err: 0x{_HEX}"
)
#: VMX exit reasons and SVM exit codes (uapi asm/vmx.h, asm/svm.h) that carry a stage-2 fault:
#: EXIT_REASON_EPT_VIOLATION (48), SVM_EXIT_NPF (0x400), by the name the tracepoint prints.
VMX_EPT_VIOLATION_NAMES = frozenset({"EPT_VIOLATION", "0x30"})
SVM_NPF_NAMES = frozenset({"npf", "NPF", "EXIT_NPF", "0x400"})


def _kvm_page_fault(m: re.Match[str]) -> dict:
    vcpu, rip = int(m[1]), int(m[2], 16)
    # "vcpu"/"pc": the names kvmcore replay reads for per-vCPU and per-pc counts (docs/hooks.md)
    return {
        "event": "kvm_page_fault",
        "vcpu_id": vcpu,
        "guest_rip": rip,
        "fault_address": int(m[3], 16),
        "error_code": int(m[4], 16),
        "vcpu": vcpu,
        "pc": rip,
    }


def _kvm_page_fault_old(m: re.Match[str]) -> dict:
    return {
        "event": "kvm_page_fault",
        "vcpu_id": None,
        "guest_rip": None,
        "fault_address": int(m[1], 16),
        "error_code": int(m[2], 16),
    }


def _kvm_mmio(m: re.Match[str]) -> dict:
    name = m[1]
    mmio_type = _KVM_MMIO_TYPES.get(name)
    return {
        "event": "kvm_mmio",
        "type": mmio_type if mmio_type is not None else int(name, 16),
        "type_name": name,
        "len": int(m[2]),
        "gpa": int(m[3], 16),
        "val": int(m[4], 16),
    }


def _kvm_userspace_exit(m: re.Match[str]) -> dict:
    # errno < 0 prints "restart" (-EINTR) or "error" and the positive errno; otherwise the
    # KVM_EXIT_* name (or raw hex for reasons past the symbol table) and the reason number.
    reason, number = m[1], int(m[2])
    failed = reason in ("restart", "error")
    return {
        "event": "kvm_userspace_exit",
        "reason": reason,
        "exit_reason": None if failed else number,
        "errno": number if failed else None,
    }


def _fast_page_fault(m: re.Match[str]) -> dict:
    return {
        "event": "fast_page_fault",
        "vcpu_id": int(m[1]),
        "cr2_or_gpa": int(m[2], 16),
        "error_code": pferr_from_trace_flags(m[3]),
        "error_code_flags": m[3],
        "sptep": m[4],
        "old_spte": int(m[5], 16),
        "new_spte": int(m[6], 16),
        "spurious": m[7] == "1",
        "fixed": m[8] == "1",
    }


def _kvm_mmu_spte_requested(m: re.Match[str]) -> dict:
    return {
        "event": "kvm_mmu_spte_requested",
        "gfn": int(m[1], 16),
        "pfn": int(m[2], 16),
        "level": int(m[3]),
        "access": int(m[4], 16) if m[4] is not None else None,
    }


def _kvm_exit(m: re.Match[str]) -> dict:
    new = m[5] is not None  # "info1 0x.. info2 0x.." (5.12+) rather than "info %llx %llx"
    return {
        "event": "kvm_exit",
        "vcpu_id": int(m[1]) if m[1] is not None else None,
        "exit_reason": m[2],
        "exit_reason_flags": m[3].split(),
        "guest_rip": int(m[4], 16),
        "info1": int(m[5] if new else m[10], 16),
        "info2": int(m[6] if new else m[11], 16),
        "intr_info": int(m[7], 16) if m[7] is not None else None,
        "error_code": int(m[8], 16) if m[8] is not None else None,
        "vcpu": int(m[1]) if m[1] is not None else None,
        "pc": int(m[4], 16),
    }


def _kvm_nested_vmexit_old(m: re.Match[str]) -> dict:
    return {
        "event": "kvm_nested_vmexit",
        "vcpu_id": None,
        "exit_reason": m[2],
        "exit_reason_flags": m[3].split(),
        "guest_rip": int(m[1], 16),
        "info1": int(m[4], 16),
        "info2": int(m[5], 16),
        "intr_info": int(m[6], 16),
        "error_code": int(m[7], 16),
        "vcpu": None,
        "pc": int(m[1], 16),
    }


def _kvm_nested_vmexit(m: re.Match[str]) -> dict:
    return {**_kvm_exit(m), "event": "kvm_nested_vmexit"}


_PARSERS = {
    "kvm_exit": ((_KVM_EXIT, _kvm_exit),),
    "kvm_nested_vmexit": ((_KVM_EXIT, _kvm_nested_vmexit), (_KVM_NESTED_VMEXIT_OLD, _kvm_nested_vmexit_old)),
    "kvm_page_fault": ((_KVM_PAGE_FAULT, _kvm_page_fault), (_KVM_PAGE_FAULT_OLD, _kvm_page_fault_old)),
    "kvm_mmio": ((_KVM_MMIO, _kvm_mmio),),
    "kvm_userspace_exit": ((_KVM_USERSPACE_EXIT, _kvm_userspace_exit),),
    "fast_page_fault": ((_FAST_PAGE_FAULT, _fast_page_fault),),
    "kvm_mmu_spte_requested": ((_KVM_MMU_SPTE_REQUESTED, _kvm_mmu_spte_requested),),
}
EVENTS = tuple(_PARSERS)


def parse_event(event_name: str, text: str) -> dict | None:
    """Parse one tracepoint's text into a dict, or ``None`` if x86 does not know ``event_name``.

    ``event_name`` may carry its system (``"kvm:kvm_page_fault"``, ``"kvmmmu:fast_page_fault"``).
    Keys are the TP_STRUCT__entry field names plus ``"event"``; for example
    ``parse_event("kvm_page_fault", "vcpu 0 rip 0xffffffff81a3c2d0 address 0x00000000fd000000 error_code 0x182")``
    gives ``{"event": "kvm_page_fault", "vcpu_id": 0, "guest_rip": 0xffffffff81a3c2d0,
    "fault_address": 0xfd000000, "error_code": 0x182}``.
    """
    parsers = _PARSERS.get(event_name.rpartition(":")[2])
    if parsers is None:
        return None
    body = text.strip()
    for pattern, build in parsers:
        m = pattern.fullmatch(body)
        if m is not None:
            try:
                return build(m)
            except ValueError as err:  # e.g. an unknown PFERR trace flag
                raise ValueError(f"{event_name}: malformed text {shown_text(text)}: {err}") from None
    raise ValueError(f"{event_name}: malformed text {shown_text(text)}")


# Bits that only an #NPF error code (as KVM traces it) can carry: an EPT-violation exit
# qualification has bits 63:17 reserved, and a hardware #PF error code is 32 bits wide with
# bit 31 undefined on Intel.
_SVM_ONLY = (
    PFERR_GUEST_RMP_MASK
    | PFERR_GUEST_FINAL_MASK
    | PFERR_GUEST_PAGE_MASK
    | PFERR_GUEST_ENC_MASK
    | PFERR_GUEST_SIZEM_MASK
    | PFERR_GUEST_VMPL_MASK
    | PFERR_PRIVATE_ACCESS
)
# Bits 7-16: defined in the EPT-violation exit qualification (and Intel's #PF bits 7 HLAT and
# 15 SGX), reserved in the #NPF error code and in AMD's #PF error code.
_VMX_ONLY = ((1 << 17) - 1) & ~((1 << 7) - 1)


def vendor_hint(error_code: int) -> str | None:
    """Which vendor traced this ``kvm_page_fault`` error code, when the bits alone say so.

    * ``"svm"``: some bit only an #NPF error code carries is set (31 RMP, 32/33 FINAL/PAGE,
      34-36 ENC/SIZEM/VMPL, 49 PRIVATE_ACCESS) and no bit #NPF lacks. A real #NPF normally sets
      bit 32 or 33 (APM; believed, not checked on hardware), so most SVM lines are recognised; 32-bit truncated lines lose
      those bits and often give ``None``.
    * ``"vmx"``: some bit in 7-16 is set (and no SVM-only bit). #NPF and AMD #PF error codes
      reserve bits 7-16, while an exit qualification with a valid linear address always sets
      bit 7 (e.g. 0x182). An Intel shadow-paging #PF line can also set bits 7/15, but that is
      VMX too.
    * ``None``: only bits 0-6 (P/W/U/RSVD/F/PK/SS as PFERR, or access/permission bits as an
      exit qualification: both vendors produce these), nothing set, bits that neither
      vendor defines (17-30, 37-48, 50-63), or a mix of both vendors' bits.
    """
    ec = check_u64(error_code, "error_code")
    svm = ec & _SVM_ONLY
    vmx = ec & _VMX_ONLY
    if ec & ~((1 << 17) - 1) & ~_SVM_ONLY or (svm and vmx):
        return None
    if svm:
        return "svm"
    if vmx:
        return "vmx"
    return None


__all__ = ["EVENTS", "parse_event", "vendor_hint"]
