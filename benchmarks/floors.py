"""The floors every kvmcore figure is measured against, in the same run.

A floor is the least a Python program can do for the same answer: kvmcore's time divided by the
floor's time, measured side by side, says how much the model, the hooks and the facade cost on
top of the essential work, whatever else the machine is doing. Absolute times are information.

* :class:`FaultFloor`: a minimal fault function per arch: extract the fields from the raw
  registers (the arch's bit positions), bisect the slot list, test the slot flags and the
  userfault bit, insert ``gfn -> pfn`` into a dict (mapped), or fill three exit fields
  (userfault memory fault, MMIO). No checks beyond what the answer needs.
* :func:`replay_floor`: a minimal replay: regex the line, two ``int()``, a dict count.
* ``python -c "import pluggy, stevedore"`` (``STARTUP_FLOOR``): start-up of the two libraries
  kvmcore is built on.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from typing import Any

USERFAULT = 1 << 3  # KVM_MEM_USERFAULT
READONLY = 1 << 1  # KVM_MEM_READONLY

STARTUP_FLOOR = ("-c", "import pluggy, stevedore")


# --- field extraction per arch: raw registers -> (gpa, write, exec, access size) ---------------
def _arm64(raw: Any) -> tuple[int, bool, bool, int]:
    esr = raw["esr"]
    ec = esr >> 26
    if ec != 0x24 and ec != 0x20:  # DABT_LOW, IABT_LOW
        raise ValueError("not a guest abort")
    write = ec == 0x24 and bool(esr & 0x40) and not esr & 0x100  # WnR, not CM
    gpa = ((raw["hpfar"] >> 4) << 12) | (raw.get("far", 0) & 0xFFF)
    return gpa, write, ec == 0x20, 1 << ((esr >> 22) & 3)


def _x86(raw: Any) -> tuple[int, bool, bool, int]:
    q = raw["exit_qualification"]  # EPT violation: bit 1 write, bit 2 fetch
    return raw["gpa"], bool(q & 2), bool(q & 4), raw.get("len", 4)


def _riscv(raw: Any) -> tuple[int, bool, bool, int]:
    scause = raw["scause"]  # 20 fetch, 21 load, 23 store guest-page fault
    if scause not in (20, 21, 23):
        raise ValueError("not a guest-page fault")
    return (raw["htval"] << 2) | (raw["stval"] & 3), scause == 23, scause == 20, 4


EXTRACT: dict[str, Callable[[Any], tuple[int, bool, bool, int]]] = {"arm64": _arm64, "x86": _x86, "riscv": _riscv}


class FaultFloor:
    """A minimal model of the same VM: slots as sorted tuples, stage 2 as a dict."""

    def __init__(self, arch: str, page_shift: int, slots: list[tuple[int, int, int, int, Any]]) -> None:
        """``slots``: ``(base_gfn, npages, hva, flags, userfault bitmap or None)``."""
        self.extract = EXTRACT[arch]
        self.shift = page_shift
        self.slots = sorted(slots)
        self.starts = [s[0] for s in self.slots]
        self.stage2: dict[int, int] = {}
        self.exit = [0, 0, 0, 0]  # exit reason, gpa/phys_addr, size/len, flags/is_write

    def fault(self, raw: Any) -> tuple[int, int]:
        """(ret, gfn): mapped (0), MMIO exit (0, exit filled) or userfault exit (-14)."""
        gpa, write, exec_, size = self.extract(raw)
        shift = self.shift
        gfn = gpa >> shift
        i = bisect.bisect_right(self.starts, gfn) - 1
        slot = self.slots[i] if i >= 0 else None
        if slot is None or gfn >= slot[0] + slot[1] or (write and slot[3] & READONLY):
            ex = self.exit
            ex[0], ex[1], ex[2], ex[3] = 6, gpa, size, write  # KVM_EXIT_MMIO
            return 0, gfn
        if slot[3] & USERFAULT:
            rel = gfn - slot[0]
            if slot[4][rel >> 3] >> (rel & 7) & 1:
                ex = self.exit
                ex[0], ex[1], ex[2], ex[3] = 39, gfn << shift, 1 << shift, 1 << 3  # MEMORY_FAULT
                return -14, gfn
        self.stage2[gfn] = (slot[2] >> shift) + gfn - slot[0]  # the pfn behind the hva
        return 0, gfn


def replay_floor(path: str, event: str) -> int:
    """A minimal replay of ``path``: regex the line, two ``int()``, a dict count; events seen."""
    if event == "kvm_guest_fault":
        rx = re.compile(r"kvm_guest_fault: ipa (0x[0-9a-f]+), hsr (0x[0-9a-f]+)")
    else:
        rx = re.compile(r"kvm_page_fault: vcpu \d+ rip 0x[0-9a-f]+ address (0x[0-9a-f]+) error_code (0x[0-9a-f]+)")
    search = rx.search
    counts: dict[tuple[int, int], int] = {}
    get = counts.get
    with open(path, buffering=1 << 20) as f:
        for line in f:
            m = search(line)
            if m is not None:
                key = (int(m[1], 16) >> 12, int(m[2], 16))
                counts[key] = get(key, 0) + 1
    return sum(counts.values())
