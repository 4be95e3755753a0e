"""``kvmcore replay FILE --events OUT.parquet``: one row per guest fault event, for engines that
scale out (DuckDB, Spark, Dask: ``docs/scale-out.md``). Needs pyarrow (``kvmcore[arrow]``).

Columns (one schema for the whole file, whatever the arches):

* ``arch`` (string), ``line`` (int64, 1-based line number in the trace), ``timestamp``
  (float64, seconds, as the trace prints it; null for an event pasted without its prefix), ``cpu`` (int32, the ``[NNN]`` host CPU column, null
  if absent), ``vcpu`` (int32: the event's own ``vcpu`` field, else QEMU's thread name
  ``CPU n/KVM``, else null), ``event`` (string, the tracepoint name);
* the raw registers the arch's ``parse_trace_event`` produced: one ``uint64`` column per register
  or modelling input of every loaded arch (``ArchInfo.registers`` and ``extra_keys``; ``vendor``
  is a string), null where the row's arch has no such register;
* ``decoded`` (bool: ``decode_fault`` accepted the registers), then, null where not decoded,
  the common fields ``gfn`` (uint64), ``exec``, ``write``, ``is_private`` (bool), ``fault_kind``
  and ``access`` (``read``/``write``/``exec``) (strings);
* ``fields`` (string): the arch's fault fields as a JSON object (ints, bools, strings and nulls;
  ``slot`` and non-scalar fields left out), e.g. ``json_extract(fields, '$.ec')`` in DuckDB;
  ``error`` (string): why ``decode_fault`` refused the registers, null when decoded.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

#: Raw keys stored as strings (x86's ``vendor``); every other raw key is a uint64 column.
STRING_KEYS = frozenset({"vendor"})
BATCH_ROWS = 1 << 16
_CPU_RE = re.compile(r"\[(\d+)\]")
_VCPU_RE = re.compile(r"CPU (\d+)/KVM")


class EventWriter:
    """Rows of guest fault events, written to ``path`` in batches of :data:`BATCH_ROWS`."""

    def __init__(self, path: str, arches: dict[str, Any]) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("--events needs pyarrow: pip install 'kvmcore[arrow]'") from None
        self._pa = pa
        keys: list[str] = []
        for arch in arches.values():
            for key in (*arch.info.registers, *arch.info.extra_keys):
                if key not in keys:
                    keys.append(key)
        self.raw_keys = keys
        fields = [
            ("arch", pa.string()), ("line", pa.int64()), ("timestamp", pa.float64()), ("cpu", pa.int32()),
            ("vcpu", pa.int32()), ("event", pa.string()),
            *[(k, pa.string() if k in STRING_KEYS else pa.uint64()) for k in keys],
            ("decoded", pa.bool_()), ("gfn", pa.uint64()), ("exec", pa.bool_()), ("write", pa.bool_()),
            ("is_private", pa.bool_()), ("fault_kind", pa.string()), ("access", pa.string()),
            ("fields", pa.string()), ("error", pa.string()),
        ]  # fmt: skip
        self.schema = pa.schema(fields)
        self.columns: dict[str, list[Any]] = {name: [] for name, _ in fields}
        self._writer: Any = pq.ParquetWriter(path, self.schema)  # OSError: the caller says which file
        self.rows = 0
        self._closed = False

    def add(self, lineno: int, line: str, match: Any, arch: str, event: str, ev: Any, fault: Any,
            error: str | None = None) -> None:
        """One guest fault event: its line, the ``_EVENT_RE`` match, its TraceEvent, and the
        decoded fault (None when ``decode_fault`` refused it, saying ``error``)."""
        c = self.columns
        prefix = line[: match.start()]
        cpu = _CPU_RE.search(prefix)
        vcpu = ev.fields.get("vcpu") if isinstance(ev.fields.get("vcpu"), int) else None
        if vcpu is None:
            named = _VCPU_RE.search(prefix)
            vcpu = int(named[1]) if named else None
        c["arch"].append(arch)
        c["line"].append(lineno)
        stamp = match[1]  # None for an event pasted without its ftrace prefix
        c["timestamp"].append(None if stamp is None else float(stamp))
        c["cpu"].append(int(cpu[1]) if cpu else None)
        c["vcpu"].append(vcpu)
        c["event"].append(event)
        raw = ev.raw
        for key in self.raw_keys:
            value = raw.get(key)
            if key in STRING_KEYS:
                c[key].append(None if value is None else str(value))
            else:
                c[key].append(value if type(value) is int and 0 <= value < 1 << 64 else None)
        decoded = fault is not None
        c["decoded"].append(decoded)
        if decoded:
            c["gfn"].append(fault.gfn)
            c["exec"].append(bool(fault.exec))
            c["write"].append(bool(fault.write))
            c["is_private"].append(bool(fault.is_private))
            c["fault_kind"].append(str(getattr(fault, "fault_kind", "")) or None)
            c["access"].append("exec" if fault.exec else "write" if fault.write else "read")
            c["fields"].append(json.dumps(_scalar_fields(fault)))
            c["error"].append(None)
        else:
            for name in ("gfn", "exec", "write", "is_private", "fault_kind", "access", "fields"):
                c[name].append(None)
            c["error"].append(error or "decode_fault refused the registers")
        self.rows += 1
        if len(c["line"]) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.columns["line"]:
            return
        table = self._pa.Table.from_pydict(self.columns, schema=self.schema)
        self._writer.write_table(table)
        for values in self.columns.values():
            values.clear()

    def close(self) -> int:
        """Write what is pending and close the file; the number of rows written."""
        if not self._closed:
            self._closed = True
            self._flush()
            self._writer.close()
        return self.rows


def _scalar_fields(fault: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = [f.name for f in dataclasses.fields(fault)] if dataclasses.is_dataclass(fault) else []
    for name in names:
        if name == "slot":
            continue
        value = getattr(fault, name)
        if value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out
