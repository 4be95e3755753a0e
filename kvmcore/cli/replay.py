"""``kvmcore replay``: stream kernel trace text and summarise the guest faults in it.

Reads the ftrace ``trace`` file, ``trace-cmd report`` output or ``perf script`` output. Each
of these prints ``<comm>-<pid> [cpu] [flags] <timestamp>: [system:]<event>: <text>`` (perf puts
the pid after a space and prefixes the system); one regular expression finds the timestamp and
the event, and the text goes to the arch's ``parse_trace_event`` hook. Events that carry a
syndrome (``TraceEvent.kind == "guest_fault"``) are decoded with ``decode_fault``.

Memory is flat whatever the file size: per-line work allocates nothing that outlives the line,
counters are keyed by small bounded sets (arch, kind, fault kind, access), and the hottest gfns
are counted exactly while the distinct gfns fit the memory budget (``memory``, 64 MiB by
default), then by a Space-Saving sketch whose output lists only what it guarantees
(:mod:`kvmcore.cli.hotgfns`).
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import kvmcore
from kvmcore.cli.hotgfns import DEFAULT_BUDGET, HotGfns, SpaceSaving
from kvmcore.cli.model import ModelChoice
from kvmcore.cli.model import as_dict as model_dict
from kvmcore.errors import strerror

__all__ = ["ReplayError", "SpaceSaving", "Summary", "replay"]

#: ``<timestamp>: [system:]event: `` as ftrace, trace-cmd and perf print it.
_EVENT_RE = re.compile(r"\s(\d+(?:\.\d+)?):\s+(?:(\w+):)?(\w+):\s*")
_LOST_RE = re.compile(r"CPU:?\s*(\d+)\s*\[LOST (\d+) EVENTS\]")
_HEADER_PREFIXES = ("#", "cpus=", "version =", "version=", "CPU ", "CPU:")
#: Events that only one arch emits (a hint for messages when that arch is not installed).
ARCH_OF_EVENT = {"kvm_guest_fault": "arm64", "kvm_mmio_nisv": "arm64", "kvm_access_fault": "arm64",
                 "kvm_mmio_emulate": "arm64", "kvm_page_fault": "x86", "fast_page_fault": "x86"}
#: Event names more than one arch emits (formats differ per arch, or generic kvm events).
SHARED_EVENTS = frozenset({"kvm_exit", "kvm_entry", "kvm_mmio", "kvm_userspace_exit"})
#: Generic events (include/trace/events/kvm.h): same format on every arch, never decide the arch.
GENERIC_EVENTS = frozenset({"kvm_mmio", "kvm_userspace_exit"})
PROBE_LINES = 4096
MEMO_SIZE = 1 << 16  # decoded register sets remembered (cleared when full: memory stays bounded)
#: include/trace/events/kvm.h: kvm_userspace_exit "reason %s (%d)", kvm_mmio "mmio %s len %u gpa 0x%llx val 0x%llx".
_USERSPACE_EXIT_RE = re.compile(r"reason (\S+) \((-?\d+)\)")
_MMIO_RE = re.compile(r"mmio (unsatisfied-read|read|write|0x[0-9a-f]+) len (\d+) gpa 0x([0-9a-f]+) val 0x([0-9a-f]+)")
MAX_NAMES = 256  # distinct event names / reasons counted before lumping into "(other)"
SHOW_SKIPPED = 5
_MISSING = object()


class ReplayError(kvmcore.KvmcoreError, ValueError):
    """The trace cannot be read at all (missing file, unknown arch, bad --memslots)."""


@dataclass
class Summary:
    source: str
    mode: str
    lines: int = 0
    events: int = 0
    header_lines: int = 0
    lost_events: int = 0
    malformed: int = 0
    first_malformed_line: int | None = None
    skipped: int = 0
    skipped_examples: list[tuple[int, str, str]] = field(default_factory=list)
    by_arch_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    other_events: dict[str, int] = field(default_factory=dict)
    faults: dict[tuple[str, str, str, bool], int] = field(default_factory=dict)
    undecodable: int = 0
    userspace_exits: dict[str, int] = field(default_factory=dict)
    hot: dict[str, HotGfns] = field(default_factory=dict)
    slots: dict[str, dict[str, int]] = field(default_factory=dict)
    page_shift: dict[str, int] = field(default_factory=dict)
    top: int = 10
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: arch -> ``{"kernel": ..., "proposals": [...]}`` of the VM that decoded its events.
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fault_hits(self, arch: str) -> int:
        """Decoded guest faults of ``arch`` (every one counted in the hot-gfn counter)."""
        return sum(n for (a, *_), n in self.faults.items() if a == arch)

    def _render_hot(self, arch: str, counter: HotGfns) -> list[str]:
        shift = self.page_shift.get(arch, 12)
        rep = counter.report(self.top, self.fault_hits(arch))
        out = [""]
        mib = (f"{rep.budget / 2**20:g} MiB" if rep.budget >= 1 << 20 else
               f"{rep.budget / 2**10:g} KiB" if rep.budget >= 1 << 10 else f"{rep.budget} bytes")
        if rep.exact:
            if not rep.rows:
                return []
            out.append(f"hottest gfns ({arch}, exact: {rep.distinct:,} distinct gfns counted within {mib}):")
            for gfn, _, count in rep.rows:
                out.append(f"  gfn {gfn:>#12x}  gpa {gfn << shift:>#16x}  {count:>12,}")
            return out
        out.append(f"hottest gfns ({arch}, approximate: more distinct gfns than {mib} holds; a Space-Saving "
                   f"sketch of {rep.counters:,} counters over {rep.hits:,} faults):")
        for gfn, low, high in rep.rows:
            span = f"{high:,}" if low == high else f"{low:,}-{high:,}"
            out.append(f"  gfn {gfn:>#12x}  gpa {gfn << shift:>#16x}  {span:>12}")
        if rep.rows:
            out.append(f"  these {len(rep.rows)} are the hottest for certain (count ranges shown); "
                       f"every other gfn was hit at most {rep.others_at_most:,} times")
        else:
            out.append(f"  no gfn stands out: every gfn was hit at most {rep.others_at_most:,} times "
                       f"(the sketch's bound; {rep.hits:,} faults / {rep.counters:,} counters = "
                       f"{rep.hits / rep.counters:,.1f}); raise --memory for exact counts")
        return out

    def skip(self, lineno: int, line: str, why: str, malformed: bool) -> None:
        self.skipped += 1
        if malformed:
            self.malformed += 1
            if self.first_malformed_line is None:
                self.first_malformed_line = lineno
        if len(self.skipped_examples) < SHOW_SKIPPED:
            text = line.rstrip("\n")
            if len(text) > 160:
                text = text[:157] + "..."
            self.skipped_examples.append((lineno, why, text))

    # -- output --------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        hot = {}
        for arch, counter in self.hot.items():
            shift = self.page_shift.get(arch, 12)
            rep = counter.report(self.top, self.fault_hits(arch))
            hot[arch] = {
                "exact": rep.exact,
                "memory_budget": rep.budget,
                "counters": rep.counters,
                "distinct": rep.distinct,
                "hits": rep.hits,
                "others_at_most": rep.others_at_most,
                "top": [{"gfn": g, "gpa": g << shift, "count": hi, "max_overcount": hi - lo}
                        for g, lo, hi in rep.rows],
            }
        return {
            "source": self.source,
            "arch_mode": self.mode,
            "models": self.models,
            "lines": self.lines,
            "events": self.events,
            "header_lines": self.header_lines,
            "lost_events": self.lost_events,
            "events_by_arch": self.by_arch_kind,
            "other_events": self.other_events,
            "faults": [{"arch": a, "fault_kind": k, "access": acc, "private": p, "count": n}
                       for (a, k, acc, p), n in sorted(self.faults.items(), key=lambda kv: -kv[1])],
            "faults_undecodable": self.undecodable,
            "userspace_exits": self.userspace_exits,
            "hot_gfns": hot,
            "slots": self.slots,
            "skipped": self.skipped,
            "malformed": self.malformed,
            "skipped_examples": [{"line": n, "why": w, "text": t} for n, w, t in self.skipped_examples],
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }

    def render(self) -> str:
        out = []
        rate = f", {self.lines / self.seconds:,.0f} lines/s" if self.seconds > 0 else ""
        out.append(f"{self.source}: {self.lines:,} lines, {self.events:,} KVM events ({self.seconds:.2f} s{rate})")
        out.append(f"arch: {self.mode}")
        for arch, m in sorted(self.models.items()):
            out.append(f"modelled on {arch}: kernel {m['kernel']}, proposals: {', '.join(m['proposals']) or 'none (upstream mode)'}")
        if self.lost_events:
            out.append(f"WARNING: the trace lost {self.lost_events:,} events (ring buffer overrun): counts are low")
        out.append("")
        out.append("events by arch and kind:")
        if not self.by_arch_kind:
            out.append("  (none)")
        for arch, kinds in sorted(self.by_arch_kind.items()):
            for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
                out.append(f"  {arch:<8} {kind:<24} {n:>12,}")
        if self.other_events:
            shown = sorted(self.other_events.items(), key=lambda kv: -kv[1])
            total = sum(n for _, n in shown)
            out.append(f"  other events, not decoded: {total:,} ("
                       + ", ".join(f"{name} {n:,}" for name, n in shown[:8]) + (", ..." if len(shown) > 8 else "") + ")")
        out.append("")
        out.append("guest faults by fault kind and access:")
        if not self.faults:
            out.append("  (none)")
        for (arch, kind, access, private), n in sorted(self.faults.items(), key=lambda kv: -kv[1]):
            out.append(f"  {arch:<8} {kind:<24} {access + (' private' if private else ''):<14} {n:>12,}")
        if self.undecodable:
            out.append(f"  not guest memory faults (decode_fault refused): {self.undecodable:,}")
        if self.userspace_exits:
            out.append("")
            out.append("exits to userspace (kvm_userspace_exit):")
            for reason, n in sorted(self.userspace_exits.items(), key=lambda kv: -kv[1]):
                out.append(f"  {reason:<34} {n:>12,}")
        for arch, counter in sorted(self.hot.items()):
            out.extend(self._render_hot(arch, counter))
        for arch, slots in sorted(self.slots.items()):
            out.append("")
            out.append(f"guest faults by memslot ({arch}):")
            for slot, n in sorted(slots.items(), key=lambda kv: -kv[1]):
                out.append(f"  {slot:<10} {n:>12,}")
        out.append("")
        out.append(f"skipped lines: {self.skipped:,}" + (f" ({self.malformed:,} malformed KVM event lines)" if self.malformed else ""))
        for lineno, why, text in self.skipped_examples:
            out.append(f"  line {lineno}: {why}")
            out.append(f"    {text}")
        if self.skipped > len(self.skipped_examples):
            out.append(f"  ... and {self.skipped - len(self.skipped_examples):,} more")
        if self.header_lines:
            out.append(f"header and comment lines: {self.header_lines:,}")
        for note in self.notes:
            out.append(f"note: {note}")
        return "\n".join(out) + "\n"


class _Resolver:
    """Which arch parses which event name: found once per name and cached."""

    def __init__(self, arches: dict[str, Any], vms: dict[str, Any], fixed: str | None, summary: Summary) -> None:
        self.arches = arches
        self.vms = vms
        self.fixed = fixed
        self.summary = summary
        self.established: str | None = fixed
        self.parse = {name: _direct_parse(arch) for name, arch in arches.items()}
        self.cache: dict[str, Any] = {}

    def order(self) -> list[str]:
        if self.established in self.arches:
            return [self.established]  # once the trace's arch is known, only it is asked
        return list(self.arches)

    def resolve(self, event: str, text: str) -> tuple[Any, Any, str | None]:
        """(entry, the TraceEvent of ``text`` or None, error message).

        ``entry`` is ``(label, parse, decode, vcpu)`` for an event some arch (or the generic
        parser) knows, ``None`` for an event no arch decodes, ``False`` for a malformed line.
        """
        errors = []
        unknown = 0
        for name in self.order():
            parse = self.parse[name]
            try:
                ev = parse(event, text)
            except ValueError as exc:
                errors.append(f"{name}: {exc}")
                continue
            if ev is None:
                unknown += 1
                continue
            if self.established is None and event not in GENERIC_EVENTS:
                others = [o for o in self.arches if o != name and _knows(self.parse[o], event, text)]
                if not others:
                    self.establish(name)
            entry = (name, parse, _direct_decode(self.arches[name]), self.vms[name])
            self.cache[event] = entry
            return entry, ev, None
        generic = _GENERIC.get(event)
        if generic is not None:
            entry = (self.established or "generic", generic, None, None)
            self.cache[event] = entry
            return entry, None, None
        if errors and not (event in SHARED_EVENTS and unknown):
            return False, None, "; ".join(errors)
        if not errors:
            self.cache[event] = None
        return None, None, None

    def establish(self, name: str) -> None:
        """The trace is ``name``'s: shared events resolved before now are asked again."""
        self.established = name
        self.cache.clear()

    def probe(self, lines: list[str]) -> None:
        """Find the trace's arch from its first lines before counting anything."""
        search = _EVENT_RE.search
        seen: set[str] = set()
        for line in lines:
            if self.established is not None:
                break
            m = search(line)
            if m is None or m[3] in GENERIC_EVENTS:
                continue
            key = m[3] if m[3] not in SHARED_EVENTS else None
            if key in seen:
                continue
            if key is not None:
                seen.add(key)
            self.resolve(m[3], line[m.end():].rstrip())
        self.cache.clear()


def _knows(parse: Any, event: str, text: str) -> bool:
    try:
        return parse(event, text) is not None
    except ValueError:
        return False


def _direct_parse(arch: Any) -> Any:
    """``arch.parse_trace_event``: the facade calls a lone implementation directly."""
    return arch.parse_trace_event


def _direct_decode(arch: Any) -> Any:
    return arch.decode_fault


def _generic_userspace_exit(event: str, text: str) -> kvmcore.TraceEvent:
    m = _USERSPACE_EXIT_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{event}: malformed text {text!r}; expected 'reason %s (%d)'")
    return kvmcore.TraceEvent("userspace_exit", {"reason": m[1], "value": int(m[2])})


def _generic_mmio(event: str, text: str) -> kvmcore.TraceEvent:
    m = _MMIO_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{event}: malformed text {text!r}; expected 'mmio %s len %u gpa 0x%llx val 0x%llx'")
    return kvmcore.TraceEvent("mmio", {"type": m[1], "len": int(m[2]), "gpa": int(m[3], 16), "val": int(m[4], 16)})


_GENERIC = {"kvm_userspace_exit": _generic_userspace_exit, "kvm_mmio": _generic_mmio}


def _exit_label(text: str) -> str | None:
    m = _USERSPACE_EXIT_RE.fullmatch(text.strip())
    if m is None:
        return None
    reason, value = m[1], int(m[2])
    if reason == "error":
        return f"error -{strerror(value)} ({value})"
    if reason == "restart":
        return "restart -EINTR"
    return f"{reason} ({value})"


def _load(
    arch_opt: str, settings: dict[str, Any], memslots: str | None, choice: ModelChoice | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    notes: list[str] = []
    if arch_opt == "auto":
        names = kvmcore.installed_arches()
        if not names:
            raise ReplayError("no arch plugins installed (see 'kvmcore plugins')")
    else:
        names = [arch_opt]
    arches: dict[str, Any] = {}
    vms: dict[str, Any] = {}
    layout = None
    if memslots is not None:
        from kvmcore.cli.scenario import schema

        try:
            layout = schema.load(memslots)
        except kvmcore.ScenarioError as exc:
            raise ReplayError(f"--memslots: {exc}") from None
    choice = (choice or ModelChoice()).over(ModelChoice(layout.kernel, layout.proposals) if layout is not None else ModelChoice())
    for name in names:
        try:
            arch = kvmcore.load_arch(name)
        except (kvmcore.PluginLoadError, kvmcore.FaultContractError) as exc:
            if arch_opt != "auto":
                raise ReplayError(str(exc)) from None
            notes.append(f"arch {name!r} not used: {exc}")
            continue
        arch_settings = dict(layout.vm.get(name, {})) if layout is not None else {}
        if settings:
            declared = arch.info.settings
            arch_settings.update({k: v for k, v in settings.items() if k in declared or arch_opt != "auto"})
        try:
            vm = kvmcore.VM(arch, **choice.vm_kwargs(name), **arch_settings)
        except (ValueError, TypeError) as exc:
            raise ReplayError(f"arch {name!r}: bad VM setting: {exc}") from None
        if layout is not None:
            from kvmcore.cli.scenario import runner

            state = runner._State(vm, layout)
            for spec in layout.memslots:
                try:
                    state.set_memslot(spec)
                except (kvmcore.KvmError, runner._StepError) as exc:
                    raise ReplayError(f"--memslots {memslots}: {spec.path}: {exc}") from None
        arches[name] = arch
        vms[name] = vm.create_vcpu()
    if not arches:
        raise ReplayError("no arch plugin could be loaded: " + "; ".join(notes))
    return arches, vms, notes


def replay(
    source: str,
    arch: str = "auto",
    memslots: str | None = None,
    settings: dict[str, Any] | None = None,
    top: int = 10,
    memory: int = DEFAULT_BUDGET,
    progress: bool | None = None,
    events: str | None = None,
    choice: ModelChoice | None = None,
) -> Summary:
    """Stream ``source`` (a path, or ``-`` for stdin) and return its :class:`Summary`.

    ``memory``: bytes the hot-gfn counts of each arch may take (exact while they fit).
    :func:`kvmcore.cli.replay_parallel.replay` runs it on every core. ``events``: also write one row per guest fault event to this Parquet file
    (:mod:`kvmcore.cli.events`; serial). The VMs that decode it model ``choice``'s kernel and
    proposals (over the ``memslots`` scenario's).
    """
    try:
        HotGfns(memory)
    except ValueError as exc:
        raise ReplayError(f"--memory: {exc}") from None
    arches, vcpus, notes = _load(arch, settings or {}, memslots, choice)
    summary = Summary("<stdin>" if source == "-" else source, arch if arch != "auto" else "auto")
    summary.notes.extend(notes)
    summary.models = {name: model_dict(vcpu.vm) for name, vcpu in vcpus.items()}
    summary.top = top
    if source == "-":
        stream = sys.stdin
        total = 0
    else:
        try:
            stream = open(source, encoding="utf-8", errors="replace", buffering=1 << 20)  # noqa: SIM115
        except OSError as exc:
            raise ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
        try:
            total = os.fstat(stream.fileno()).st_size
        except OSError:
            total = 0
    if progress is None:
        progress = sys.stderr.isatty()
    start = time.perf_counter()
    resolver = _Resolver(arches, vcpus, None if arch == "auto" else arch, summary)
    writer = None
    try:
        if events is not None:
            from kvmcore.cli.events import EventWriter

            try:
                writer = EventWriter(events, arches)
            except ImportError as exc:
                raise ReplayError(str(exc)) from None
            except OSError as exc:
                raise ReplayError(f"--events {events}: {exc.strerror or exc}") from None
        head = list(itertools.islice(stream, PROBE_LINES)) if arch == "auto" else []
        resolver.probe(head)
        _scan(itertools.chain(head, stream), summary, resolver, memory, progress, total,
              memslots is not None, getattr(stream, "buffer", None), writer)
        if writer is not None:
            summary.notes.append(f"wrote {writer.close():,} guest fault events to {events}")
    finally:
        if writer is not None:
            writer.close()
        if stream is not sys.stdin:
            stream.close()
    summary.seconds = time.perf_counter() - start
    _finish(summary, arches, vcpus)
    return summary


def _finish(summary: Summary, arches: dict[str, Any], vcpus: dict[str, Any]) -> None:
    """What the summary says once every line is counted: page shifts, the arch mode, notes."""
    for name, vcpu in vcpus.items():
        summary.page_shift[name] = vcpu.vm.page_shift
    if summary.mode == "auto":
        seen = sorted(a for a in summary.by_arch_kind if a in arches)
        summary.mode = "auto (" + (", ".join(seen) if seen else "no arch-specific events seen") + ")"
    for event, n in summary.other_events.items():
        owner = ARCH_OF_EVENT.get(event)
        if owner is not None and owner not in arches:
            summary.notes.append(f"{n:,} {event} events are {owner} events, but the {owner} plugin is not loaded")


def _scan(stream: Any, summary: Summary, resolver: _Resolver, memory: int, progress: bool,
          total: int, with_slots: bool, buffer: Any, sink: Any = None) -> None:
    search = _EVENT_RE.search
    cache = resolver.cache
    by_arch = summary.by_arch_kind
    faults = summary.faults
    other = summary.other_events
    exits = summary.userspace_exits
    hot = summary.hot
    slots = summary.slots
    DecodeError = kvmcore.DecodeError
    # decode_fault is a pure function of the registers for a fixed VM: remember recent ones
    memo: dict[tuple[Any, ...], tuple[tuple[str, str, str, bool], int]] = {}
    memo_old: dict[tuple[Any, ...], tuple[tuple[str, str, str, bool], int]] = {}
    events = 0
    lineno = 0
    next_report = 1 << 16
    last_time = time.perf_counter()
    for lineno, line in enumerate(stream, 1):  # noqa: B007 - lineno is used after the loop
        m = search(line)
        if m is None:
            stripped = line.strip()
            if not stripped or stripped.startswith(_HEADER_PREFIXES):
                lost = _LOST_RE.search(stripped) if "LOST" in stripped else None
                if lost is not None:
                    summary.lost_events += int(lost[2])
                else:
                    summary.header_lines += 1
            else:
                summary.skip(lineno, line, "not a trace event line (no 'timestamp: event:' found)", False)
            continue
        event = m[3]
        text = line[m.end():].rstrip()
        entry = cache.get(event, _MISSING)
        ev = None
        if entry is not None and entry is not _MISSING:
            try:
                ev = entry[1](event, text)
            except ValueError as exc:
                # the cached arch refused: another installed arch may know this format
                entry, ev, error = resolver.resolve(event, text)
                if not entry:
                    summary.skip(lineno, line, f"malformed {event} event: {exc}", True)
                    continue
        elif entry is _MISSING:
            entry, ev, error = resolver.resolve(event, text)
            if entry is False:
                summary.skip(lineno, line, f"malformed {event} event: {error}", True)
                continue
        if entry is None:
            if event in other or len(other) < MAX_NAMES:
                other[event] = other.get(event, 0) + 1
            else:
                other["(other)"] = other.get("(other)", 0) + 1
            continue
        if ev is None:
            try:
                ev = entry[1](event, text)
            except ValueError as exc:
                summary.skip(lineno, line, f"malformed {event} event: {exc}", True)
                continue
            if ev is None:
                other[event] = other.get(event, 0) + 1
                continue
        events += 1
        label = entry[0]
        kind = ev.kind
        kinds = by_arch.get(label)
        if kinds is None:
            kinds = by_arch[label] = {}
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "guest_fault" and ev.raw is not None and entry[2] is not None:
            raw = ev.raw
            try:
                memo_key = (label, *raw.items())
                hit = memo.get(memo_key)
                if hit is None and memo_key in memo_old:
                    hit = memo[memo_key] = memo_old[memo_key]
            except TypeError:  # an unhashable register value: decode every time
                memo_key, hit = None, None
            if sink is not None:  # --events: every row's own decoded fields, so no memo
                memo_key, hit = None, None
            if hit is None:
                vcpu = entry[3]
                try:
                    fault = entry[2](vcpu, raw)
                except (DecodeError, ValueError, TypeError, KeyError) as exc:
                    if sink is not None:
                        sink.add(lineno, line, m, label, event, ev, None, str(exc))
                    summary.undecodable += 1
                    if len(summary.skipped_examples) < SHOW_SKIPPED:
                        summary.skipped_examples.append(
                            (lineno, f"{event} is not a guest memory fault: {exc}", line.rstrip()[:160]))
                    continue
                hit = ((label, getattr(fault, "fault_kind", "?"),
                        "exec" if fault.exec else "write" if fault.write else "read", bool(fault.is_private)),
                       fault.gfn)
                if sink is not None:
                    sink.add(lineno, line, m, label, event, ev, fault)
                if memo_key is not None:
                    if len(memo) >= MEMO_SIZE:  # two generations: recently used entries survive
                        memo_old = memo
                        memo = {}
                    memo[memo_key] = hit
            key, gfn = hit
            faults[key] = faults.get(key, 0) + 1
            counter = hot.get(label)
            if counter is None:
                counter = hot[label] = HotGfns(memory)
            counts = counter.counts
            c = counts.get(gfn)
            if c is None:
                counter.add_new(gfn)
            else:
                counts[gfn] = c + 1
            if with_slots:
                slot = entry[3].vm.gfn_to_memslot(gfn)
                name = f"slot {slot.id}" if slot is not None else "no slot"
                per = slots.get(label)
                if per is None:
                    per = slots[label] = {}
                per[name] = per.get(name, 0) + 1
        elif event == "kvm_userspace_exit":
            reason = _exit_label(text)
            if reason is not None:
                exits[reason] = exits.get(reason, 0) + 1
        if progress and lineno >= next_report:
            next_report = lineno + (1 << 16)
            now = time.perf_counter()
            if now - last_time > 0.2:
                last_time = now
                _progress(lineno, buffer, total)
    summary.lines = lineno
    summary.events = events
    if progress:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _progress(lineno: int, buffer: Any, total: int) -> None:
    done = 0
    if buffer is not None and total:
        try:
            done = buffer.tell()
        except (OSError, ValueError):
            done = 0
    if total and done:
        frac = min(done / total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rreplay [{bar:<30}] {frac * 100:5.1f}%  {lineno:,} lines")
    else:
        sys.stderr.write(f"\rreplay: {lineno:,} lines")
    sys.stderr.flush()
