"""A test-only arch plugin: the smallest thing that satisfies the contract.

Its raw syndrome is ``{"gpa": .., "access": 0 read | 1 write | 2 exec, "private": 0 | 1}``.
It answers only ``arch_info``, ``decode_fault`` and ``encode_fault``: faultin and the memory
fault exit are the core's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import kvmcore
from kvmcore import Access, ArchInfo, DecodeError, Memslot, hookimpl

ACCESS_CODES = {"read": 0, "write": 1, "exec": 2}


@dataclass(slots=True)
class ToyFault:
    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: Memslot | None = None
    gpa: int = 0


@hookimpl
def arch_info() -> ArchInfo:
    return ArchInfo(
        name="toy",
        fault_type=ToyFault,
        page_shift=12,
        phys_bits=48,
        registers=("gpa", "access", "private"),
        description="test-only arch with a trivial syndrome",
    )


@hookimpl
def decode_fault(vcpu: kvmcore.VCPU, raw: dict[str, int]) -> ToyFault:
    gpa = raw.get("gpa")
    if gpa is None or not 0 <= gpa < 1 << 48:
        raise DecodeError(f"gpa={gpa!r}: expected a 48-bit guest physical address")
    access = raw.get("access", 0)
    if access not in (0, 1, 2):
        raise DecodeError(f"access={access!r}: expected 0 (read), 1 (write) or 2 (exec)")
    return ToyFault(
        gfn=gpa >> vcpu.vm.page_shift,
        exec=access == 2,
        write=access == 1,
        is_private=bool(raw.get("private", 0)),
        gpa=gpa,
    )


@hookimpl
def encode_fault(vcpu: kvmcore.VCPU, access: Access) -> dict[str, int]:
    return {"gpa": access.gpa, "access": ACCESS_CODES[access.kind], "private": int(access.private)}
