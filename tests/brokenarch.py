"""A deliberately broken arch plugin: in each hook it can raise, return garbage or break the
hook's contract, so the tests can check that kvmcore isolates every hook call.

It behaves like ``toyarch`` (registers ``gpa``, ``access``, ``private``; trace event
``broken_fault: gpa 0x.. access N``) until told otherwise by ``KVMCORE_BROKEN``, read at every
call: ``HOOK=MODE[,HOOK=MODE...]`` with MODE one of

* ``raise``: the hook raises ``ZeroDivisionError`` (a bug, not a documented error);
* ``garbage``: it returns an object of the wrong type;
* ``contract``: it returns the right type holding what the contract forbids (a fault whose
  ``gfn`` is a string, a ``Mapped`` with no pfn, a wrapper that changes ``memory_fault.gpa``...).

``arch_info`` is read when the plugin is loaded (call ``kvmcore.reset_plugins()`` first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import kvmcore
from kvmcore import Access, ArchInfo, DecodeError, Memslot, Syndrome, TraceEvent, hookimpl

HOOKS = ("arch_info", "configure_vm", "prepare_memory_region", "decode_fault", "faultin_pfn",
         "prepare_memory_fault_exit", "kvm_arch_prepare_memory_fault_exit", "encode_fault", "describe_syndrome",
         "parse_trace_event")
MODES = ("raise", "garbage", "contract")


@dataclass(slots=True)
class BrokenFault:
    gfn: int
    exec: bool
    write: bool
    is_private: bool
    slot: Memslot | None = None


def mode(hook: str) -> str | None:
    for item in os.environ.get("KVMCORE_BROKEN", "").split(","):
        name, _, how = item.partition("=")
        if name.strip() == hook:
            return how.strip()
    return None


def _boom() -> Any:
    return 1 // int(os.environ.get("KVMCORE_BROKEN_ZERO", "0"))


@hookimpl
def arch_info() -> Any:
    how = mode("arch_info")
    if how == "raise":
        _boom()
    if how == "garbage":
        return ["not", "an", "ArchInfo"]
    return ArchInfo(name="broken", fault_type=BrokenFault, page_shift=99 if how == "contract" else 12,
                    phys_bits=48, registers=("gpa", "access", "private"), description="deliberately broken")


@hookimpl(wrapper=True)
def configure_vm(vm: Any, settings: Any) -> Any:
    how = mode("configure_vm")
    validated = yield
    if how == "raise":
        _boom()
    if how == "garbage":
        return 42
    if how == "contract":
        return ["granule", "16K"]
    return validated


@hookimpl
def prepare_memory_region(vm: Any, old: Any, new: Any, change: str) -> None:
    how = mode("prepare_memory_region")
    if how == "raise":
        _boom()
    if how in ("garbage", "contract"):
        raise AttributeError("'Memslot' object has no attribute 'npages_'")  # a typo, as bugs are


@hookimpl
def decode_fault(vcpu: Any, raw: Any) -> Any:
    how = mode("decode_fault")
    if how == "raise":
        _boom()
    if how == "garbage":
        return "a fault"
    gpa = raw.get("gpa")
    if type(gpa) is not int or not 0 <= gpa < 1 << 48:
        raise DecodeError(f"gpa={gpa!r}: expected a 48-bit guest physical address")
    access = raw.get("access", 0)
    if access not in (0, 1, 2):
        raise DecodeError(f"access={access!r}: expected 0, 1 or 2")
    if how == "contract":
        return BrokenFault(gfn=hex(gpa), exec=False, write=access, is_private=False)  # type: ignore[arg-type]
    return BrokenFault(gfn=gpa >> 12, exec=access == 2, write=access == 1, is_private=bool(raw.get("private", 0)))


@hookimpl
def faultin_pfn(vcpu: Any, fault: Any) -> Any:
    how = mode("faultin_pfn")
    if how == "raise":
        _boom()
    if how == "garbage":
        return (1234, True)
    if how == "contract":
        return kvmcore.Mapped(None, True, 4096, False, "mapped")  # type: ignore[arg-type]
    if fault.slot is not None and mode("prepare_memory_fault_exit"):
        kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault)  # reach the exit hook on every fault
        return kvmcore.Exit(-kvmcore.abi.EFAULT, "broken_exit")
    return None  # the core's default answers


@hookimpl(wrapper=True)
def prepare_memory_fault_exit(vcpu: Any, fault: Any) -> Any:
    how = mode("prepare_memory_fault_exit")
    common = yield
    if how == "raise":
        _boom()
    if how == "garbage":
        return {"gpa": 0}
    if how == "contract":
        vcpu.kvm_run.memory_fault.gpa ^= 0x1000  # wrappers must not change gpa
    return common


@hookimpl
def kvm_arch_prepare_memory_fault_exit(vcpu: Any, fault: Any) -> None:
    if mode("kvm_arch_prepare_memory_fault_exit") is not None:
        _boom()


@hookimpl
def encode_fault(vcpu: Any, access: Access) -> Any:
    how = mode("encode_fault")
    if how == "raise":
        _boom()
    if how == "garbage":
        return 0x1000
    if how == "contract":
        return {1: access.gpa}
    return {"gpa": access.gpa, "access": ("read", "write", "exec").index(access.kind), "private": int(access.private)}


@hookimpl
def describe_syndrome(vm: Any, raw: Any) -> Any:
    how = mode("describe_syndrome")
    if how == "raise":
        _boom()
    if how == "garbage":
        return "gpa=0x1000"
    if how == "contract":
        return Syndrome("broken", fields=["gpa"], meanings={}, guest_fault=True)  # type: ignore[arg-type]
    return Syndrome("broken", {k: v for k, v in raw.items()}, {"gpa": "guest physical address"}, True)


@hookimpl
def parse_trace_event(event: str, text: str) -> Any:
    if event != "broken_fault":
        return None
    how = mode("parse_trace_event")
    if how == "raise":
        _boom()
    if how == "garbage":
        return ("guest_fault", {"gpa": 0})
    if how == "contract":
        return TraceEvent(None, {}, {"gpa": 0})  # type: ignore[arg-type]
    parts = text.split()
    if len(parts) != 4 or parts[0] != "gpa" or parts[2] != "access":
        raise ValueError(f"broken_fault: malformed text {text!r}; expected 'gpa 0x%llx access %u'")
    return TraceEvent("guest_fault", {}, {"gpa": int(parts[1], 16), "access": int(parts[3])})
