"""Decoding many faults at once: the helper behind the ``decode_fault_batch`` hook.

A guest's faults repeat a few syndromes over many addresses. :func:`decode_by_syndrome` groups
the rows of a batch by every register except the address ones, decodes one row per group with
the arch's scalar ``decode_fault`` (address registers set to 0) and spreads that group's fields
over its rows; the arch then computes the address-dependent fields (gfn, gpa...) with numpy
arithmetic over whole columns. Python work is per distinct syndrome, not per row, and the
scalar decoder stays the only place that knows what a syndrome means (it is also the oracle of
the property tests). Needs numpy (``pip install kvmcore[arrow]``).

It is exact for an arch whose decoding depends on the address registers only through the
arithmetic the arch vectorises; an arch whose decoding reads the address otherwise (x86 TDX's
shared bit, a SW-protected VM's memory attributes) returns None from its hook instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvmcore.errors import DecodeError


def numpy() -> Any:
    """The numpy module, or an ImportError saying how to get it."""
    try:
        import numpy as np
    except ImportError as exc:  # pragma: no cover - numpy is in the test extra
        raise ImportError("decode_fault_batch needs numpy: pip install 'kvmcore[arrow]'") from exc
    return np


def u64_column(name: str, values: Any) -> tuple[Any, Any]:
    """``(column as uint64, rows whose value is a valid 64-bit register)``: negative values of a
    signed column are not registers (the scalar decoders refuse them)."""
    np = numpy()
    col = np.asarray(values)
    if col.ndim != 1:
        raise DecodeError(f"column {name}: expected one value per row, got shape {col.shape}")
    if col.dtype.kind == "b":
        return col.astype(np.uint64), np.ones(len(col), dtype=bool)
    if col.dtype.kind == "u":
        return col.astype(np.uint64), np.ones(len(col), dtype=bool)
    if col.dtype.kind == "i":
        ok = col >= 0
        return col.astype(np.uint64), ok
    raise DecodeError(f"column {name}: expected integers, got numpy dtype {col.dtype}")


def decode_by_syndrome(
    vcpu: Any,
    columns: Mapping[str, Any],
    address: Sequence[str],
    fields: Sequence[str],
    strings: Sequence[str] = (),
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(valid, fields, cols)`` for a batch of raw register columns.

    ``address``: the address registers (set to 0 in the decoded representative row);
    ``fields``: the fault attributes to spread from each group's decoded fault; ``strings``:
    columns holding strings (x86's ``vendor``), grouped as they are. ``valid[i]`` is False
    where the scalar decoder refuses row ``i``'s group or a value is not a register; ``cols``
    are the integer columns as uint64. A field whose group is invalid holds 0, False or "".
    """
    np = numpy()
    names = list(columns)
    if not names:
        raise DecodeError("decode_fault_batch: no columns")
    lengths = {len(columns[n]) for n in names}
    if len(lengths) != 1:
        raise DecodeError(f"decode_fault_batch: columns of different lengths {sorted(lengths)}")
    (n,) = lengths
    valid = np.ones(n, dtype=bool)
    cols: dict[str, Any] = {}
    keys: list[tuple[str, Any, list[str] | None]] = []  # per grouping column: codes, and labels of string codes
    for name in names:
        if name in strings:
            uniq, codes = np.unique(np.asarray(columns[name], dtype=object).astype(str), return_inverse=True)
            keys.append((name, codes.reshape(-1).astype(np.uint64), [str(u) for u in uniq]))
            continue
        col, ok = u64_column(name, columns[name])
        valid &= ok
        cols[name] = col
        if name not in address:
            keys.append((name, col, None))
    if keys and n:
        stacked = np.stack([k[1] for k in keys], axis=1)
        groups, inverse = np.unique(stacked, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
    else:
        groups, inverse = np.zeros((1 if n else 0, 0), dtype=np.uint64), np.zeros(n, dtype=np.intp)
    group_ok = np.zeros(len(groups), dtype=bool)
    values: dict[str, list[Any]] = {f: [] for f in fields}
    decode = vcpu.vm.arch.decode_fault
    for g, row in enumerate(groups.tolist()):
        raw: dict[str, Any] = {name: 0 for name in address if name in cols}
        for (name, _, labels), v in zip(keys, row, strict=True):
            raw[name] = labels[v] if labels is not None else v
        try:
            fault = decode(vcpu, raw)
        except (DecodeError, ValueError, TypeError, KeyError):
            for f in fields:
                values[f].append(None)
            continue
        group_ok[g] = True
        for f in fields:
            values[f].append(getattr(fault, f))
    valid &= group_ok[inverse] if n else valid
    out: dict[str, Any] = {}
    for f, per_group in values.items():
        present = [v for v in per_group if v is not None]
        if all(isinstance(v, bool) for v in present):
            arr = np.array([bool(v) for v in per_group], dtype=bool)
        elif all(isinstance(v, int) for v in present):
            dtype = np.int64 if any(v < 0 for v in present) else np.uint64
            arr = np.array([0 if v is None else v for v in per_group], dtype=dtype)
        else:
            arr = np.array(["" if v is None else str(v) for v in per_group], dtype=object)
        out[f] = arr[inverse] if n else arr[:0]
    return valid, out, cols


def blank_invalid(out: Mapping[str, Any]) -> dict[str, Any]:
    """``out`` with every field of a row whose ``valid`` is False set to 0, False or "" (what the
    ``decode_fault_batch`` contract promises, whichever arch answered)."""
    np = numpy()
    valid = np.asarray(out["valid"], dtype=bool)
    result: dict[str, Any] = {"valid": valid}
    for name, values in out.items():
        if name == "valid":
            continue
        arr = np.array(values)  # a copy: the arch's arrays stay as they were
        arr[~valid] = "" if arr.dtype.kind in "OUS" else 0
        result[name] = arr
    return result
