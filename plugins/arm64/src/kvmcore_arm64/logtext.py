"""Find ESR_EL2/FAR_EL2/HPFAR_EL2 in a pasted log line (the ``parse_log_text`` hook).

What people paste, and what each form gives:

* KVM's own messages: ``kvm [1234]: Unsupported FSC: EC=0x24 xFSC=0x21 ESR_EL2=0x92000061``
  (``kvm_handle_guest_abort()``), ``ESR_EL2=..``/``HPFAR_EL2=..``/``FAR_EL2=..`` in any
  ``NAME=VALUE`` or ``NAME: VALUE`` spelling;
* an arm64 kernel splat: ``ESR = 0x0000000096000045`` (``mem_abort_decode()``) and the Oops line
  ``Internal error: Oops: 0000000096000045 [#1] SMP`` (``die()`` prints the ESR in hex without 0x).
  These are the faulting kernel's ESR_EL1 (a guest's or the host's own), which decode the same way;
* the text of the ``kvm_guest_fault`` and ``kvm_mmio_nisv`` tracepoints (``ipa 0x.., hsr 0x..,
  hxfar 0x.., pc 0x..``), with or without the event name;
* ``esr=0x.. far=0x.. hpfar=0x..`` as ``kvmcore decode`` takes them.
"""

from __future__ import annotations

import re
from typing import Any

from .convert import trace_event

_HEX = r"(?:0x)?([0-9a-fA-F]{1,16})\b"
_REG = re.compile(rf"\b(esr_el2|esr_el1|esr|hsr|hpfar_el2|hpfar|far_el2|far_el1|far)\s*[=:]\s*{_HEX}", re.IGNORECASE)
_OOPS = re.compile(r"\bOops: ([0-9a-fA-F]{8,16}) \[#\d+\]")
_TRACE = re.compile(r"\b(kvm_guest_fault|kvm_mmio_nisv):\s*(.*)")
_TRACE_BARE = re.compile(r"\bipa (?:0x)?[0-9a-fA-F]+, (?:hsr|esr) ")
_NAMES = {"esr": "esr", "hsr": "esr", "hpfar": "hpfar", "far": "far"}


def parse_log_text(text: str) -> list[dict[str, Any]] | None:
    """The arm64 register sets in ``text`` (see the module docstring); None for none."""
    m = _TRACE.search(text)
    if m is not None or _TRACE_BARE.search(text):
        event, body = (m[1], m[2]) if m is not None else ("kvm_guest_fault", text[_TRACE_BARE.search(text).start():])  # type: ignore[union-attr]
        if event == "kvm_guest_fault" and ", esr " in body:
            event = "kvm_mmio_nisv"
        try:
            ev = trace_event(event, body.strip())
        except ValueError:
            ev = None
        if ev is not None and ev.raw is not None:
            return [dict(ev.raw)]
    raw: dict[str, Any] = {}
    for name, value in _REG.findall(text):
        key = _NAMES[name.split("_")[0].lower()]
        if key in raw:
            break  # a second register set on the line: keep the first
        raw[key] = int(value, 16)
    if "esr" not in raw:
        oops = _OOPS.search(text)
        if oops is None:
            return None
        raw["esr"] = int(oops[1], 16)
    return [raw]


__all__ = ["parse_log_text"]
