"""The fault contract: kvmcore's ``KVM_ASSERT_TYPE_IS``.

The kernel's ``kvm_prepare_memory_fault_exit()`` asserts at build time that the arch's
``struct kvm_page_fault`` has ``gfn_t gfn``, ``bool exec``, ``bool write``,
``bool is_private`` and ``struct kvm_memory_slot *slot``. kvmcore checks the same fields in
the arch's fault dataclass when the plugin is loaded (from its annotations), and, with
``KVMCORE_DEBUG=1``, the values of every decoded fault.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from kvmcore._types import Memslot
from kvmcore.errors import FaultContractError

#: field -> (the annotation it must have, how to say it, a check of a value at run time)
COMMON_FIELDS: dict[str, tuple[Any, str]] = {
    "gfn": (int, "int"),
    "exec": (bool, "bool"),
    "write": (bool, "bool"),
    "is_private": (bool, "bool"),
    "slot": (Optional[Memslot], "Memslot | None"),  # noqa: UP045 (compared with get_type_hints output)
}


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("kvmcore._types.", "")


def check_fault_type(fault_type: Any, plugin: str) -> None:
    """Refuse a fault type that lacks a common field or declares it with another type.

    Types must match exactly, as ``KVM_ASSERT_TYPE_IS`` does: ``int`` is not ``bool``.
    """
    if not (isinstance(fault_type, type) and dataclasses.is_dataclass(fault_type)):
        raise FaultContractError(plugin, "fault_type", "a dataclass", _type_name(type(fault_type)) if not isinstance(fault_type, type) else f"class {fault_type.__name__} (not a dataclass)")
    try:
        hints = typing.get_type_hints(fault_type)
    except Exception as exc:  # unresolvable string annotations
        raise FaultContractError(plugin, "annotations", "resolvable type hints", f"{type(exc).__name__}: {exc}") from exc
    params = getattr(fault_type, "__dataclass_params__", None)
    if params is not None and params.frozen:
        raise FaultContractError(plugin, "fault_type", "a mutable dataclass (the core fills fault.slot)", f"frozen class {fault_type.__name__}")
    fields = {f.name for f in dataclasses.fields(fault_type)}
    for name, (expected, expected_name) in COMMON_FIELDS.items():
        if name not in fields:
            raise FaultContractError(plugin, name, expected_name, f"no such field in {fault_type.__name__}")
        found = hints.get(name)
        if found != expected:
            raise FaultContractError(plugin, name, expected_name, _type_name(found))


def check_fault(fault: Any, plugin: str, fault_type: type) -> None:
    """The run-time twin of :func:`check_fault_type` for one decoded fault (``KVMCORE_DEBUG``)."""
    if type(fault) is not fault_type:
        raise FaultContractError(plugin, "decode_fault result", fault_type.__name__, type(fault).__name__)
    for name, (expected, expected_name) in COMMON_FIELDS.items():
        value = getattr(fault, name, _MISSING)
        if value is _MISSING:
            raise FaultContractError(plugin, name, expected_name, "missing on the decoded fault")
        if name == "slot":
            ok = value is None or isinstance(value, Memslot)
        else:
            ok = type(value) is expected
        if not ok:
            raise FaultContractError(plugin, name, expected_name, f"{type(value).__name__} {value!r}")


_MISSING = object()
