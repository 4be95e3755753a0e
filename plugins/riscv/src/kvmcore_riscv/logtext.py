"""Find scause/stval/htval/htinst in a pasted log line (the ``parse_log_text`` hook).

* the ``kvm_exit`` tracepoint text ``SEPC:0x.., SCAUSE:0x.., STVAL:0x.., HTVAL:0x.., HTINST:0x..``;
* KVM's own error print (``kvm_riscv_vcpu_exit()``): ``SCAUSE=0x15 STVAL=0x.. HTVAL=0x.. HTINST=0x..``
  and ``SEPC=0x..``; any ``NAME=VALUE`` / ``NAME: VALUE`` spelling, any case;
* QEMU's ``riscv_cpu_do_interrupt: hart:0, async:0, cause:0000000000000014, epc:0x.., tval:0x..,
  desc=guest_exec_page_fault`` (``cause`` is scause, ``tval`` stval, ``epc`` sepc; no htval);
* a register dump over several lines (``scause=0x17 stval=0x..`` then ``htval=0x.. htinst=0x..``):
  each line gives what it has, and ``kvmcore replay`` joins consecutive lines' registers.
"""

from __future__ import annotations

import re
from typing import Any

_REG = re.compile(r"\b(sepc|scause|stval|htval|htinst|cause|tval|epc)\s*[=:]\s*((?:0x)?[0-9a-f]{1,16})\b", re.IGNORECASE)
_QEMU = re.compile(r"\briscv_cpu_do_interrupt:|\bdesc=guest_|\bhart:\s*\d+")
_NAMES = {"sepc": "sepc", "scause": "scause", "stval": "stval", "htval": "htval", "htinst": "htinst",
          "cause": "scause", "tval": "stval", "epc": "sepc"}


def parse_log_text(text: str) -> list[dict[str, Any]] | None:
    """The RISC-V register sets in ``text`` (see the module docstring); None for none."""
    found = _REG.findall(text)
    if not found:
        return None
    qemu = _QEMU.search(text) is not None
    raw: dict[str, Any] = {}
    for name, value in found:
        lname = name.lower()
        if lname in ("cause", "tval", "epc") and not qemu:
            continue  # too common a word outside QEMU's RISC-V trace
        key = _NAMES[lname]
        if key in raw:
            break
        raw[key] = int(value, 16)
    if not raw:
        return None
    return [raw]  # possibly without scause: a register dump's next line (the replay joins them)


__all__ = ["parse_log_text"]
