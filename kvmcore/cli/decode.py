"""``kvmcore decode``: registers or a pasted log line in, what the arch makes of them out.

Input, per call or per line of ``-`` (stdin) / ``--input FILE``:

* ``NAME=VALUE`` pairs (``esr=0x92000061 hpfar=0x40010``): the arch's raw registers;
* anything else is a log line, given to the arch's ``parse_log_text`` hook, which finds the
  registers in it (``ESR = 0x0000000096000045``, ``Unsupported FSC: ... ESR_EL2=0x92000061``,
  ``kvm_exit: reason EPT_VIOLATION rip 0x.. info 181 0``, a ``kvm_page_fault`` line...).

Each register set goes through ``describe_syndrome`` (every field, for a person) and
``decode_fault`` (what the fault path gets). A partial set (an ESR without HPFAR, an exit
qualification without a GPA) is still a result: what needs the missing registers is shown as
``unknown`` and the exit status stays 0. Exit 1 is for input nothing could be decoded from,
and for registers that are not a guest memory fault (the reason on stderr).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import kvmcore
from kvmcore.cli.format import fmt_value, jsonable

_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=\S+")
#: A kernel log line's prefix (``<6>[  12.345678] ``): compiled by its first use (``re``'s cache),
#: for a log line; registers given as NAME=VALUE do not need it.
_DMESG = r"\s*(?:<\d+>)?\[\s*\d+\.\d+\]\s?"

COMMON_MEANINGS = {
    "gfn": "guest frame number (gpa >> PAGE_SHIFT)",
    "gpa": "faulting guest physical address",
    "write": "write access",
    "exec": "instruction fetch",
    "is_private": "access to private (guest_memfd) memory",
    "fault_kind": "the arch's kind of stage-2 fault",
    "page_walk": "the fault hit the guest's own page-table walk, not the final access",
}


class DecodeInputError(ValueError):
    """Input with nothing to decode in it: printed as ``kvmcore decode: ...``, exit 1."""


class Result:
    """One register set decoded: ``syndrome`` (or None), the fault's fields, and why not.

    A plain class: a dataclass costs ``kvmcore decode`` about 0.5% of its start-up to define.
    """

    __slots__ = ("source", "raw", "syndrome", "fault", "fault_type", "partial", "error")

    def __init__(self, source: str, raw: dict[str, Any]) -> None:
        self.source = source
        self.raw = raw
        self.syndrome: Any = None
        self.fault: dict[str, Any] = {}
        self.fault_type: str | None = None
        #: decode_fault could not run because registers are missing: what it said.
        self.partial: str | None = None
        #: not a guest memory fault, or nothing decodable: why.
        self.error: str | None = None

    @property
    def decoded(self) -> bool:
        return self.syndrome is not None or bool(self.fault)


def echo(text: str, limit: int | None = None) -> str:
    """:func:`kvmcore.cli.trace_input.echo` (imported on first use: its regular expressions are
    the replay's, which decoding registers does not need)."""
    from kvmcore.cli import trace_input

    return trace_input.echo(text) if limit is None else trace_input.echo(text, limit)


def is_assignments(items: Sequence[str]) -> bool:
    return bool(items) and all(_ASSIGNMENT.fullmatch(item) for item in items)


def raw_text(raw: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in raw.items())


def decode_raw(arch: Any, vm: Any, vcpu: Any, raw: dict[str, Any], source: str) -> Result:
    """``describe_syndrome`` then ``decode_fault`` for one register set (never raises for
    bad registers: the reason goes into the result)."""
    result = Result(source, raw)
    try:
        result.syndrome = arch.describe_syndrome(vm, raw)
    except NotImplementedError:
        pass
    except kvmcore.DecodeError as exc:
        result.error = str(exc)
        return result
    except (TypeError, ValueError) as exc:
        result.error = f"cannot decode {raw_text(raw)}: {exc}"
        return result
    syndrome = result.syndrome
    missing = [name for name in _needed(arch) if name not in raw]
    try:
        fault = arch.decode_fault(vcpu, raw)
    except kvmcore.DecodeError as exc:
        if syndrome is not None and syndrome.guest_fault and missing:
            result.partial = str(exc)
        else:
            result.error = str(exc)
        fault = None
    except (TypeError, ValueError, KeyError) as exc:
        result.error = f"cannot decode {raw_text(raw)}: {type(exc).__name__}: {exc}"
        fault = None
    if syndrome is not None and not syndrome.guest_fault:
        result.error = syndrome.error or result.error or "not a guest memory fault"
        result.partial = None
        fault = None
    if fault is not None:
        result.fault_type = type(fault).__name__
        names = [f.name for f in dataclasses.fields(fault)] if dataclasses.is_dataclass(fault) else []
        result.fault = {n: getattr(fault, n) for n in names if n != "slot"}
        result.fault.setdefault("gpa", fault.gfn << vm.page_shift)
        walk = getattr(fault, "page_walk", None)
        if walk is not None:
            result.fault["page_walk"] = walk
    return result


def _needed(arch: Any) -> tuple[str, ...]:
    """Registers ``decode_fault`` may need: the arch's registers (``ArchInfo.registers``)."""
    return tuple(arch.info.registers)


def sources(items: Sequence[str], stdin: Any, input_path: str | None) -> Iterable[tuple[str, str | None]]:
    """``(text, None)`` per input line, or one ``(joined items, None)``. ``-`` reads stdin."""
    if input_path is not None or items == ["-"]:
        from kvmcore.cli import trace_input

        if input_path is not None and input_path != "-":
            try:
                stream = open(input_path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError as exc:
                raise DecodeInputError(f"cannot read {input_path}: {exc.strerror or exc}") from None
        else:
            stream = stdin
        try:
            for line in stream:
                text, _ = trace_input.strip_quote(line)
                text = text.strip()
                if text and not text.startswith("#"):
                    yield text, None
        finally:
            if stream is not stdin:
                stream.close()
        return
    yield " ".join(items), None


def register_sets(arch: Any, text: str, parse_assignments: Any) -> list[tuple[dict[str, Any], str]]:
    """The register sets in one input: NAME=VALUE pairs of the arch's registers as given, else
    what the arch's ``parse_log_text`` hook finds in the text (kernel log prefix stripped)."""
    items = text.split()
    known = tuple(arch.info.registers)
    accepted = (*known, *arch.info.extra_keys)
    pairs = is_assignments(items)
    if pairs and (not known or all(item.partition("=")[0] in accepted for item in items)):
        return [(parse_assignments(items, "register"), text)]
    line = re.sub(_DMESG, "", text, count=1)
    found = arch.parse_log_text(line)
    if found:
        return [(dict(raw), text) for raw in found]
    if pairs:
        bad = next(item.partition("=")[0] for item in items if item.partition("=")[0] not in accepted)
        raise DecodeInputError(f"arch {arch.name!r} has no register {bad!r} (registers: {', '.join(accepted)})")
    raise DecodeInputError(
        f"{arch.name}: no registers found in {echo(text, 100)!r}: expected NAME=VALUE pairs "
        f"({', '.join(known)}) or a log line that prints them"
    )


# --- output --------------------------------------------------------------------------------
class Paint:
    """ANSI colour for a terminal (off for pipes, files and when ``NO_COLOR`` is set)."""

    def __init__(self, stream: Any, force: bool | None = None) -> None:
        if force is None:
            force = bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")
        self.on = force

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on and text else text

    def flag(self, text: str) -> str:
        return self(text, "1;33")

    def error(self, text: str) -> str:
        return self(text, "31")

    def dim(self, text: str) -> str:
        return self(text, "2")


def short(result: Result, arch: str, paint: Paint) -> str:
    """One line: ``arch registers: kind access, gpa ..`` or why it is not a fault."""
    head = f"{arch} {raw_text(result.raw)}:"
    if result.error is not None and not result.decoded:
        return f"{head} {paint.error('cannot decode: ' + echo(result.error, 200))}"
    fields: dict[str, Any] = dict(result.syndrome.fields) if result.syndrome is not None else {}
    fields.update(result.fault)
    if result.error is not None:
        what = fields.get("ec_name") or fields.get("scause_name") or fields.get("vendor") or ""
        return f"{head} {what} {paint.error('not a guest memory fault: ' + echo(result.error, 200))}".replace("  ", " ")
    kind = fields.get("fault_kind") or fields.get("access") or "fault"
    access = "exec" if fields.get("exec") else "write" if fields.get("write") else "read"
    parts = [f"{kind} {paint.flag(access)}"]
    if fields.get("is_private"):
        parts[0] += " " + paint.flag("private")
    gpa = fields.get("gpa")
    parts.append(f"gpa {fmt_value(gpa)}" if gpa is not None else paint.dim("gpa unknown"))
    gfn = fields.get("gfn")
    if gfn is not None:
        parts.append(f"gfn {fmt_value(gfn)}")
    walk = fields.get("page_walk")
    if walk is not None:
        parts.append("guest page-table walk" if walk else "final translation")
    line = f"{head} " + ", ".join(parts)
    if result.partial is not None:
        line += paint.dim(f" (partial: {echo(result.partial, 120)})")
    return line


def table(result: Result, arch: str, settings_text: str, paint: Paint) -> list[str]:
    """Today's full table: every syndrome field with its meaning, then the fault's fields."""
    out = [f"{arch} {raw_text(result.raw)}" + (f"  (VM: {settings_text})" if settings_text else "")]
    if result.source != raw_text(result.raw):
        out.append(f"  from: {echo(result.source)}")
    rows: list[tuple[str, str, str]] = []
    syndrome = result.syndrome
    if syndrome is not None:
        for name, value in syndrome.fields.items():
            shown = fmt_value(value)
            if value is None and name in ("gpa", "gfn", "ipa", "gva", "kernel_gpa", "htval", "stval"):
                shown = "unknown"
            rows.append((name, shown, syndrome.meanings.get(name, "")))
    if result.fault:
        rows.append(("", "", ""))
        rows.append(("fault", result.fault_type or "", "what decode_fault() gives the fault path"))
        for name, value in result.fault.items():
            if syndrome is not None and name in syndrome.fields and syndrome.fields[name] == value:
                continue
            if dataclasses.is_dataclass(value):
                rows.append((f"  {name}", f"<{type(value).__name__}>", "decoded fields above" if syndrome is not None else ""))
                continue
            rows.append((f"  {name}", fmt_value(value), COMMON_MEANINGS.get(name, "")))
    elif result.partial is not None:
        known = {n for n, v in (syndrome.fields.items() if syndrome is not None else ()) if v is not None}
        rows.append(("", "", ""))
        for name in ("gpa", "gfn"):
            if name not in known:
                rows.append((name, "unknown", "needs the registers not given"))
        rows.append(("fault", "unknown", f"decode_fault: {echo(result.partial, 120)}"))
    width = max((len(r[0]) for r in rows), default=0)
    vwidth = min(max((len(r[1]) for r in rows), default=0), 20)
    for name, value, meaning in rows:
        if not name:
            out.append("")
            continue
        shown = f"{value:<{vwidth}}"
        if value == "unknown":
            shown = paint.dim(shown)
        elif value == "1":
            shown = paint.flag(shown)
        line = f"  {name:<{width}}  {shown}"
        out.append((line + "  " + meaning).rstrip() if meaning else line.rstrip())
    return out


def as_json(result: Result, arch: str, page_shift: int) -> dict[str, Any]:
    obj: dict[str, Any] = {"arch": arch}
    if result.fault:
        for name in ("gfn", "gpa", "write", "exec", "is_private"):
            obj[name] = result.fault[name]
        obj.update(result.fault)
    if result.syndrome is not None:
        for name, value in result.syndrome.fields.items():
            obj.setdefault(name, value)
    obj["guest_fault"] = bool(result.fault) and result.error is None
    obj["raw"] = result.raw
    obj["page_shift"] = page_shift
    if result.syndrome is not None:
        obj["meanings"] = dict(result.syndrome.meanings)
    if result.partial is not None:
        obj["partial"] = result.partial
        obj.setdefault("gfn", None)
        obj.setdefault("gpa", None)
    if result.error is not None:
        obj["error"] = result.error
    if result.source != raw_text(result.raw):
        obj["source"] = result.source
    return jsonable(obj)


def write(stream: Any, text: str) -> None:
    stream.write(text + "\n")


__all__ = ["DecodeInputError", "Paint", "Result", "as_json", "decode_raw", "is_assignments", "raw_text",
           "register_sets", "short", "sources", "table"]
