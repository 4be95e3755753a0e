"""Find VMX/SVM fault registers in a pasted log line (the ``parse_log_text`` hook).

* trace lines: ``kvm_page_fault: ...``, ``kvm_exit: ...``, ``kvm_nested_vmexit: ...`` (any of the
  formats ``trace.parse_event`` reads), with or without the event name: ``reason EPT_VIOLATION
  rip 0x.. info 181 0`` is an old ``kvm_exit``;
* ``NAME = VALUE`` logs: ``exit qualification = 0x83``, ``guest-physical address = 0x7fc0000000``,
  ``exit_qualification=0x..``, ``gpa=0x..``, ``EXITINFO1: 0x..``, ``exit_info_1=..``,
  ``error_code=0x..``.

VMX exit qualifications come back as ``{"vendor": "vmx", "exit_qualification", "gpa"?}``, SVM
#NPF as ``{"vendor": "svm", "error_code", "gpa"?}``; a ``kvm_page_fault`` error code whose vendor
the bits do not tell as ``{"error_code", "gpa", "traced": 1}`` (the VM's vendor setting decides).
"""

from __future__ import annotations

import re
from typing import Any

from .describe import trace_event

_EVENT = re.compile(r"\b(kvm_page_fault|kvm_exit|kvm_nested_vmexit):\s*(.*)")
_BARE_EXIT = re.compile(r"(?:\bvcpu \d+ )?\breason:? (?:EPT_VIOLATION|npf|NPF|EXIT_NPF)\b.*")
_BARE_PF = re.compile(r"(?:\bvcpu \d+ rip 0x[0-9a-f]+ )?\baddress (?:0x)?[0-9a-f]+ error_code (?:0x)?[0-9a-f]+")
#: Looser: the reason and the two info words with anything between (``EPT_VIOLATION ... info 181 0``).
_LOOSE_EXIT = re.compile(
    r"\b(EPT_VIOLATION|npf|NPF|EXIT_NPF)\b.*?\b(?:info1?|ext_inf1:) (?:0x)?([0-9a-fA-F]+)\b"
    r"(?: (?:info2 |ext_inf2: )?(?:0x)?([0-9a-fA-F]+)\b)?"
)
_KV = re.compile(
    r"\b(exit[ _]qual(?:ification)?|guest[- _]physical[ _]address|gpa|exit_?info_?1|exitinfo1|"
    r"exit_?info_?2|exitinfo2|error_code|vendor)\s*[=:]\s*" + r"(vmx|svm|(?:0x)?[0-9a-fA-F]+)\b",
    re.IGNORECASE,
)


def _from_event(event: str, body: str) -> dict[str, Any] | None:
    try:
        ev = trace_event(event, body.strip())
    except ValueError:
        return None
    if ev is None or ev.raw is None:
        return None
    return dict(ev.raw)


def parse_log_text(text: str) -> list[dict[str, Any]] | None:
    """The x86 register sets in ``text`` (see the module docstring); None for none."""
    m = _EVENT.search(text)
    if m is not None:
        raw = _from_event(m[1], m[2])
        return [raw] if raw is not None else None
    m2 = _BARE_EXIT.search(text)
    if m2 is not None:
        raw = _from_event("kvm_exit", m2[0])
        if raw is not None:
            return [raw]
    m3 = _LOOSE_EXIT.search(text)
    if m3 is not None:
        info1 = int(m3[2], 16)
        if m3[1] == "EPT_VIOLATION":
            return [{"vendor": "vmx", "exit_qualification": info1}]  # info2 is not the GPA on VMX
        raw = {"vendor": "svm", "error_code": info1}
        if m3[3] is not None:
            raw["gpa"] = int(m3[3], 16)
        return [raw]
    m2 = _BARE_PF.search(text)
    if m2 is not None:
        raw = _from_event("kvm_page_fault", m2[0])
        if raw is not None:
            return [raw]
    found: dict[str, Any] = {}
    for name, value in _KV.findall(text):
        key = name.lower().replace("-", " ").replace("_", " ")
        if value.lower() in ("vmx", "svm"):
            if key == "vendor":
                found["vendor"] = value.lower()
            continue
        number = int(value, 16)  # logs print these registers in hex, with or without 0x
        if key.startswith("exit qual"):
            found["exit_qualification"] = number
        elif key in ("guest physical address", "gpa") or key.replace(" ", "") in ("exitinfo2",):
            found["gpa"] = number
        elif key.replace(" ", "") == "exitinfo1":
            found["error_code"] = number
            found.setdefault("vendor", "svm")
        elif key == "error code":
            found.setdefault("error_code", number)
    if "exit_qualification" in found:
        found.setdefault("vendor", "vmx")
        found.pop("error_code", None)
    elif "error_code" not in found:
        # a GPA alone: one line of a multi-line dump (kvmcore replay joins consecutive lines)
        return [found] if "gpa" in found else None
    elif "vendor" not in found:
        found["traced"] = 1
    return [found]


__all__ = ["parse_log_text"]
