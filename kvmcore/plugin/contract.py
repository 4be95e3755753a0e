"""The fault contract: kvmcore's ``KVM_ASSERT_TYPE_IS``.

The kernel's ``kvm_prepare_memory_fault_exit()`` asserts at build time that the arch's
``struct kvm_page_fault`` has ``gfn_t gfn``, ``bool exec``, ``bool write``,
``bool is_private`` and ``struct kvm_memory_slot *slot``. kvmcore checks the same fields in
the arch's fault dataclass when the plugin is loaded (from its annotations), and, with
``KVMCORE_DEBUG=1``, the values of every decoded fault.

Like the kernel's asserts, the load-time check reads only those five fields' annotations: a
fault type's other annotations may name types its module imports only when it decodes.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
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
    hints = _type_hints(common_type_hints, fault_type, plugin)
    params = getattr(fault_type, "__dataclass_params__", None)
    if params is not None and params.frozen:
        raise FaultContractError(plugin, "fault_type", "a mutable dataclass (the core fills fault.slot)", f"frozen class {fault_type.__name__}")
    fields = {f.name for f in dataclasses.fields(fault_type)}
    for name, (expected, expected_name) in COMMON_FIELDS.items():
        if name not in fields:
            raise FaultContractError(plugin, name, expected_name, f"no such field in {fault_type.__name__}")
        found = hints.get(name)
        if found != expected:  # the verdict (and what it names) as typing.get_type_hints has it
            found = _type_hints(typing.get_type_hints, fault_type, plugin).get(name)
            if found != expected:
                raise FaultContractError(plugin, name, expected_name, _type_name(found))


def _type_hints(resolve: Callable[[type], dict[str, Any]], fault_type: type, plugin: str) -> dict[str, Any]:
    """``resolve(fault_type)`` (the five common annotations, or all of them); unresolvable
    string annotations are a contract error."""
    try:
        return resolve(fault_type)
    except Exception as exc:  # unresolvable string annotations
        raise FaultContractError(plugin, "annotations", "resolvable type hints", f"{type(exc).__name__}: {exc}") from exc


#: Compiled annotation texts (``"bool"``, ``"kvmcore.Memslot | None"``): every arch spells the
#: five the same way, and compiling a text costs more than evaluating it.
_COMPILED: dict[str, Any] = {}


def common_type_hints(fault_type: type) -> dict[str, Any]:
    """``typing.get_type_hints(fault_type)`` restricted to :data:`COMMON_FIELDS`.

    Evaluates each of those annotations as ``get_type_hints`` does for a class (string
    annotations in the defining module's namespace, then the class's; ``None`` is
    ``NoneType``; a subclass's annotation wins), and no other: ``get_type_hints`` compiles
    every annotation of the class, 20-30 per arch fault type. One difference: a string nested
    in an annotation that is not itself a string (``Optional["Memslot"]`` written without
    ``from __future__ import annotations``) stays a forward reference here, so
    :func:`check_fault_type` asks ``get_type_hints`` again for a field that does not match.
    """
    hints: dict[str, Any] = {}
    for base in reversed(fault_type.__mro__):
        annotations = base.__dict__.get("__annotations__")
        if not isinstance(annotations, dict):
            continue
        module_ns: dict[str, Any] | None = None
        for name in COMMON_FIELDS:
            if name not in annotations:
                continue
            value = annotations[name]
            if isinstance(value, str):
                code = _COMPILED.get(value)
                if code is None:
                    code = _COMPILED[value] = compile(value, "<annotation>", "eval")
                if module_ns is None:
                    module_ns = getattr(sys.modules.get(base.__module__), "__dict__", {})
                # get_type_hints' order for a class: the module's names first, then the class's
                value = eval(code, dict(vars(base)), module_ns)  # noqa: S307 - an annotation, as get_type_hints does
            hints[name] = type(None) if value is None else value
    return hints


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
