"""The ``example`` arch: hook implementations for kvmcore (entry point ``example`` in ``kvmcore.arch``).

The example CPU reports a stage-2 fault in two registers:

* ``gpa``: the faulting guest physical address;
* ``status``: bits 1:0 the access (0 read, 1 write, 2 instruction fetch), bit 2 ``PERM`` (the
  stage-2 entry exists but forbids the access; clear: no entry), bits 63:3 reserved (zero).

Like arm64 without CCA, the syndrome has no private bit: the optional raw key ``private`` (0/1)
is kvmcore's modelling input for a private access (docs/core-api.md).

Faultin and the memory fault exit are the core's defaults (the generic path of the KVM
Userfault design); a real arch answers ``faultin_pfn`` in its kernel's order and wraps
``prepare_memory_fault_exit`` to add its syndrome (docs/writing-an-arch-plugin.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kvmcore
from kvmcore import Access, ArchInfo, DecodeError, Memslot, Syndrome, hookimpl

ARCH_NAME = "example"
PHYS_BITS = 48
STATUS_ACCESS_MASK = 0x3
STATUS_PERM = 1 << 2
STATUS_RESERVED = ~0x7 & (1 << 64) - 1
ACCESSES = {0: "read", 1: "write", 2: "exec"}
ACCESS_CODES = {kind: code for code, kind in ACCESSES.items()}


@dataclass(slots=True)
class ExampleFault:
    """The arch's fault: the five common fields (checked by kvmcore) plus its own."""

    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: Memslot | None = None
    gpa: int = 0
    fault_kind: str = "translation"


@hookimpl
def arch_info() -> ArchInfo:
    return ArchInfo(
        name=ARCH_NAME,
        fault_type=ExampleFault,
        page_shift=12,
        phys_bits=PHYS_BITS,
        registers=("gpa", "status"),
        extra_keys=("private",),
        description="example arch: a gpa register and a status word (access, permission bit)",
        causes=("not_present", "read_only", "no_exec", "no_slot"),
        # the memory-fault exit designs this plugin implements (docs/designs.md): what common code
        # does alone; add "arch-hook" together with a kvm_arch_prepare_memory_fault_exit hookimpl
        designs=("v3-helper", "rwx-flags", "annotate-efault"),
    )


def _register(raw: Mapping[str, Any], name: str, limit: int) -> int:
    value = raw.get(name)
    if value is None:
        raise DecodeError(f"{name}: missing (the example arch needs gpa and status)")
    if not isinstance(value, int) or not 0 <= value < limit:
        raise DecodeError(f"{name}={value!r}: expected an unsigned value below {limit:#x}")
    return value


@hookimpl
def decode_fault(vcpu: kvmcore.VCPU, raw: Mapping[str, Any]) -> ExampleFault:
    gpa = _register(raw, "gpa", 1 << PHYS_BITS)
    status = _register(raw, "status", 1 << 64)
    if status & STATUS_RESERVED:
        raise DecodeError(f"status={status:#x}: reserved bits {status & STATUS_RESERVED:#x} are set")
    access = status & STATUS_ACCESS_MASK
    if access not in ACCESSES:
        raise DecodeError(f"status={status:#x}: access {access} is not 0 (read), 1 (write) or 2 (fetch)")
    private = raw.get("private", 0)
    if private not in (0, 1):
        raise DecodeError(f"private={private!r}: expected 0 or 1")
    return ExampleFault(
        gfn=gpa >> vcpu.vm.page_shift,
        exec=access == 2,
        write=access == 1,
        is_private=bool(private),
        gpa=gpa,
        fault_kind="permission" if status & STATUS_PERM else "translation",
    )


@hookimpl
def encode_fault(vcpu: kvmcore.VCPU, access: Access) -> dict[str, int]:
    """The registers the example CPU reports for ``access``; ValueError for what it cannot report."""
    if not 0 <= access.gpa < 1 << PHYS_BITS:
        raise ValueError(f"{access}: gpa beyond the {PHYS_BITS}-bit physical address space")
    if access.cause == "access_flag":
        raise ValueError(f"{access}: the example arch has no access-flag faults")
    if access.cause == "read_only" and access.kind != "write":
        raise ValueError(f"{access}: only a write faults on a read-only entry")
    if access.cause == "no_exec" and access.kind != "exec":
        raise ValueError(f"{access}: only an instruction fetch faults on a no-exec entry")
    perm = STATUS_PERM if access.cause in ("read_only", "no_exec") else 0
    return {"gpa": access.gpa, "status": ACCESS_CODES[access.kind] | perm, "private": int(access.private)}


@hookimpl
def describe_syndrome(vm: kvmcore.VM, raw: Mapping[str, Any]) -> Syndrome:
    """Every field of the registers, for ``kvmcore decode example gpa=... status=...``."""
    status = _register(raw, "status", 1 << 64)
    fields: dict[str, Any] = {"access": ACCESSES.get(status & STATUS_ACCESS_MASK), "perm": bool(status & STATUS_PERM)}
    meanings = {"access": "what the guest did (status bits 1:0)", "perm": "the stage-2 entry exists but forbids it (status bit 2)"}
    if "gpa" in raw:
        fields["gpa"] = raw["gpa"]
        meanings["gpa"] = "faulting guest physical address"
    error = None
    if status & STATUS_RESERVED:
        error = f"status={status:#x}: reserved bits are set"
    elif fields["access"] is None:
        error = f"status={status:#x}: access 3 is reserved"
    return Syndrome(ARCH_NAME, fields, meanings, guest_fault=error is None, error=error)
