"""``kvmcore replay``: stream kernel trace text and summarise the guest faults in it.

Reads the ftrace ``trace`` file, ``trace-cmd report`` output or ``perf script`` output, and the
same text as people paste it (mail quoting, wrapped lines, no prefix): :mod:`kvmcore.cli.trace_input`
finds the event and its text in each line, and the text goes to the arch's ``parse_trace_event``
hook. Events that carry a syndrome (``TraceEvent.kind == "guest_fault"``) are decoded with
``decode_fault``; an exit that carries one (``"guest_fault_exit"``, x86 ``kvm_exit`` for an EPT
violation or NPF) is paired with the fault event that follows on the same thread (one fault,
the exit's full registers where the fault event printed them cut to 32 bits). Lines with no
event go to the arches' ``parse_log_text`` hook (kernel log lines with an ESR, KVM's error prints).

Memory is flat whatever the file size: per-line work allocates nothing that outlives the line,
counters are keyed by small bounded sets (arch, kind, fault kind, access), and the hottest gfns
are counted exactly while the distinct gfns fit the memory budget (``memory``, 64 MiB by
default), then by a Space-Saving sketch whose output lists only what it guarantees
(:mod:`kvmcore.cli.hotgfns`).
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import kvmcore
from kvmcore.cli import trace_input
from kvmcore.cli.hotgfns import DEFAULT_BUDGET, HotGfns, SpaceSaving
from kvmcore.cli.model import ModelChoice
from kvmcore.cli.model import as_dict as model_dict
from kvmcore.cli.trace_input import echo
from kvmcore.errors import strerror

#: ``<timestamp>: [system:]event: `` as ftrace, trace-cmd and perf print it.
_EVENT_RE = trace_input.EVENT_RE
_LOST_RE = re.compile(r"CPU:?\s*(\d+)\s*\[LOST (\d+) EVENTS\]")
_HEADER_PREFIXES = trace_input.HEADER_PREFIXES
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
#: The same fault (registers, gfn and pc) this many times in a row on one vCPU is a fault loop.
LOOP_MIN = 3
MAX_LOOPS = 64  # distinct loops remembered (the longest are kept)
SHOW_LOOPS = 5
MAX_LOG_SYNDROMES = 64
#: Distinct guest PCs counted per arch (later new ones are not: a trace rarely has more).
MAX_PCS = 1 << 14
#: What a guest-fault event's ``page_walk`` says, as an index: final translation, page walk, unknown.
_WALK_INDEX = {False: 0, True: 1, None: 2}
_MISSING = object()


__all__ = ["ReplayError", "SpaceSaving", "Summary", "replay"]


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
    lost_lines: int = 0
    malformed: int = 0
    first_malformed_line: int | None = None
    skipped: int = 0
    skipped_examples: list[tuple[int, str, str]] = field(default_factory=list)
    by_arch_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    other_events: dict[str, int] = field(default_factory=dict)
    faults: dict[tuple[Any, ...], int] = field(default_factory=dict)
    undecodable: int = 0
    userspace_exits: dict[str, int] = field(default_factory=dict)
    hot: dict[str, HotGfns] = field(default_factory=dict)
    slots: dict[str, dict[str, int]] = field(default_factory=dict)
    page_shift: dict[str, int] = field(default_factory=dict)
    top: int = 10
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # -- pasted input (trace_input) --
    unwrap: bool = True
    unwrapped: int = 0
    quoted_lines: int = 0
    arch_decided_by: list[tuple[int, str, str, str]] = field(default_factory=list)
    # -- what a person reading a bug report wants --
    vcpus: dict[str, dict[str, int]] = field(default_factory=dict)
    rips: dict[str, dict[int, int]] = field(default_factory=dict)
    walks: dict[str, list[int]] = field(default_factory=dict)
    loops: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    mmio: dict[tuple[str, int, int], int] = field(default_factory=dict)
    log_lines: int = 0
    log_syndromes: list[dict[str, Any]] = field(default_factory=list)
    paired_exits: int = 0
    widened: int = 0
    exit_only: dict[str, int] = field(default_factory=dict)
    exit_only_examples: list[tuple[int, str, str]] = field(default_factory=list)
    ambiguous: int = 0
    ambiguous_examples: list[tuple[int, str]] = field(default_factory=list)
    #: arch -> ``{"kernel": ..., "proposals": [...]}`` of the VM that decoded its events.
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def accounted(self) -> int:
        """Lines given a fate: every line read is exactly one of an event, a header or comment
        line, a lost-events marker, a skipped line, an event no arch decodes, a kernel-log line
        with registers, or a wrapped tail rejoined to the line before (== ``lines``)."""
        return (self.events + self.header_lines + self.lost_lines + self.skipped + sum(self.other_events.values())
                + self.log_lines + self.unwrapped)

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
            self.skipped_examples.append((lineno, echo(why, 240), echo(line)))

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
            "lost_event_lines": self.lost_lines,
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
            "unwrap": self.unwrap,
            "unwrapped_lines": self.unwrapped,
            "quoted_lines": self.quoted_lines,
            "arch_decided_by": [{"line": n, "arch": a, "event": e, "text": t} for n, a, e, t in self.arch_decided_by],
            "faults_by_vcpu": self.vcpus,
            "hot_pcs": {arch: [{"pc": pc, "count": c} for pc, c in _top(pcs, self.top)]
                        for arch, pcs in self.rips.items()},
            "page_walk": {arch: {"final_translation": w[0], "guest_page_walk": w[1], "unknown": w[2]}
                          for arch, w in self.walks.items()},
            "fault_loops": self.top_loops(),
            "mmio": [{"direction": d, "gpa": g, "len": n, "count": c}
                     for (d, g, n), c in sorted(self.mmio.items(), key=lambda kv: -kv[1])],
            "log_lines": self.log_lines,
            "log_syndromes": self.log_syndromes,
            "paired_exits": self.paired_exits,
            "widened_error_codes": self.widened,
            "exits_without_fault_event": self.exit_only,
            "ambiguous_faults": self.ambiguous,
        }

    def top_loops(self, n: int | None = None) -> list[dict[str, Any]]:
        """The longest fault loops first (JSON-ready; ``raw`` the loop's registers)."""
        ranked = sorted(self.loops.values(), key=lambda lp: (-lp["longest"], lp["first_line"]))
        if n is not None:
            ranked = ranked[:n]
        return [{k: v for k, v in lp.items() if k != "sig"} for lp in ranked]

    def render(self) -> str:
        out = []
        rate = f", {self.lines / self.seconds:,.0f} lines/s" if self.seconds > 0 else ""
        out.append(f"{self.source}: {self.lines:,} lines, {self.events:,} KVM events ({self.seconds:.2f} s{rate})")
        out.append(f"arch: {self.mode}")
        for arch, m in sorted(self.models.items()):
            out.append(f"modelled on {arch}: kernel {m['kernel']}, proposals: {', '.join(m['proposals']) or 'none (upstream mode)'}")
        for lineno, arch, event, text in self.arch_decided_by:
            out.append(f"  decided by line {lineno}: {event}: {text}  (only {arch} prints this event so)")
        if self.quoted_lines or self.unwrapped:
            out.append(f"input: {self.quoted_lines:,} mail-quoted lines unquoted, {self.unwrapped:,} wrapped lines rejoined"
                       + ("" if self.unwrapped == 0 else " (--no-unwrap keeps them apart)"))
        elif not self.unwrap:
            out.append("input: wrapped lines not rejoined (--no-unwrap)")
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
        if self.paired_exits:
            out.append(f"  exits paired with the fault event after them (one fault each): {self.paired_exits:,}"
                       + (f"; {self.widened:,} error codes printed cut to 32 bits, widened from the exit's EXITINFO1"
                          if self.widened else ""))
        for why, n in self.exit_only.items():
            out.append(f"  fault exits with no fault event after them: {n:,} ({why})")
        for lineno, _why, text in self.exit_only_examples:
            out.append(f"    line {lineno}: {text}")
        if self.ambiguous:
            out.append(f"  not decoded, the trace cannot tell how to read them: {self.ambiguous:,}")
            for lineno, why in self.ambiguous_examples:
                out.append(f"    line {lineno}: {why}")
        for arch, walk in sorted(self.walks.items()):
            if walk[0] or walk[1]:
                out.append(f"  {arch:<8} final translation {walk[0]:,}, guest page-table walk {walk[1]:,}"
                           + (f", not said {walk[2]:,}" if walk[2] else ""))
        loops = self.top_loops(SHOW_LOOPS)
        if loops:
            out.append("")
            out.append(f"fault loops (the same fault {LOOP_MIN}+ times in a row on one vCPU):")
            for lp in loops:
                pc = f" pc {lp['pc']:#x}" if lp["pc"] is not None else ""
                out.append(f"  {lp['arch']} {lp['vcpu']}: gfn {lp['gfn']:#x}{pc} {lp['fault_kind']} {lp['access']}: "
                           f"{lp['longest']:,} in a row (first at line {lp['first_line']}, {lp['faults']:,} faults in loops)")
                out.append(f"    registers: {' '.join(f'{k}={v:#x}' if isinstance(v, int) else f'{k}={v}' for k, v in lp['raw'].items())}")
                if lp.get("kvm"):
                    out.append(f"    what KVM does with it: {lp['kvm']}")
            if len(self.loops) > len(loops):
                out.append(f"  ... and {len(self.loops) - len(loops):,} more")
        if self.vcpus:
            out.append("")
            out.append("guest faults by vCPU:")
            for arch, per in sorted(self.vcpus.items()):
                for name, n in sorted(per.items(), key=lambda kv: -kv[1])[:16]:
                    out.append(f"  {arch:<8} {name:<28} {n:>12,}")
        for arch, pcs in sorted(self.rips.items()):
            if not pcs:
                continue
            out.append("")
            full = len(pcs) >= MAX_PCS
            out.append(f"hottest guest PCs ({arch}{f', the first {MAX_PCS:,} distinct PCs only' if full else ''}):")
            for pc_value, count in _top(pcs, self.top):
                out.append(f"  pc {pc_value:>#18x}  {count:>12,}")
        if self.mmio:
            out.append("")
            out.append("MMIO accesses (kvm_mmio):")
            for (direction, gpa, length), n in sorted(self.mmio.items(), key=lambda kv: -kv[1])[:self.top]:
                out.append(f"  {direction:<16} gpa {gpa:>#14x} len {length:<2} {n:>12,}")
            if len(self.mmio) > self.top:
                out.append(f"  ... and {len(self.mmio) - self.top:,} more addresses")
        if self.log_syndromes:
            out.append("")
            out.append(f"registers found in log lines: {self.log_lines:,}")
            for item in self.log_syndromes[:SHOW_SKIPPED * 2]:
                out.append(f"  line {item['line']}: {item['arch']} {item['registers']}: {item['decoded']}")
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


def _top(counts: dict[int, int], n: int) -> list[tuple[int, int]]:
    return heapq.nlargest(n, counts.items(), key=lambda kv: (kv[1], -kv[0]))


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
        self.lineno = 0  # the line being resolved (for arch_decided_by)

    def drop(self, name: str, exc: Exception, lineno: int) -> None:
        """A plugin failed (``PluginError``): stop asking it; its events count as other events."""
        if name not in self.arches:
            return
        del self.arches[name], self.parse[name], self.vms[name]
        if self.established == name:
            self.established = None
        self.cache.clear()
        self.summary.notes.append(
            f"arch plugin {name!r} dropped at line {lineno}: {exc}; its events from there on are not decoded"
        )

    def _parse(self, name: str, event: str, text: str) -> Any:
        """Arch ``name``'s parse of the line; ``None`` also when the plugin broke (and is dropped)."""
        try:
            return self.parse[name](event, text)
        except kvmcore.PluginError as exc:
            self.drop(name, exc, self.lineno)
            return None

    def _knows(self, name: str, event: str, text: str) -> bool:
        """Arch ``name`` reads ``text`` as ``event``."""
        try:
            return name in self.parse and self._parse(name, event, text) is not None
        except ValueError:
            return False

    def order(self) -> list[str]:
        if self.established in self.arches:
            return [self.established]  # once the trace's arch is known, only it is asked
        return list(self.arches)

    def resolve(self, event: str, text: str) -> tuple[Any, Any, str | None]:
        """(entry, the TraceEvent of ``text`` or None, error message).

        ``entry`` is ``(label, parse, decode, vcpu)`` for an event some arch (or the generic
        parser) knows, ``None`` for an event no arch decodes, ``False`` for a malformed line.
        The generic events (``kvm_mmio``, ``kvm_userspace_exit``: include/trace/events/kvm.h, the
        same text on every arch) always go to the generic parser and never decide the arch: an
        arm64 ``KVM_EXIT_ARM_NISV`` exit is not an x86 event because x86 can parse it too.
        """
        generic = _GENERIC.get(event)
        if generic is not None:
            entry = (self.established or "generic", generic, None, None)
            if self.established is not None or len(self.arches) == 1:
                self.cache[event] = entry
            return entry, None, None
        errors = []
        unknown = 0
        for name in self.order():
            if name not in self.parse:  # dropped while resolving this line
                continue
            try:
                ev = self._parse(name, event, text)
            except ValueError as exc:
                errors.append(f"{name}: {exc}")
                continue
            if ev is None or name not in self.parse:
                unknown += 1
                continue
            if self.established is None:
                others = [o for o in list(self.arches) if o != name and self._knows(o, event, text)]
                if not others:
                    self.establish(name)
                    self.summary.arch_decided_by.append((self.lineno, name, event, echo(text, 100)))
            entry = (name, self.parse[name], _direct_decode(self.arches[name]), self.vms[name])
            self.cache[event] = entry
            return entry, ev, None
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
        seen: set[str] = set()
        for lineno, line in enumerate(lines, 1):
            if self.established is not None:
                break
            if len(line) > trace_input.MAX_LINE:  # the scan skips it (no copy of its text here)
                continue
            m: Any = _EVENT_RE.search(line)
            if m is None:
                line = trace_input.strip_quote(line)[0]
                m = trace_input.find_event(line)
            if m is None or m[3] in GENERIC_EVENTS:
                continue
            key = m[3] if m[3] not in SHARED_EVENTS else None
            if key in seen:
                continue
            if key is not None:
                seen.add(key)
            self.lineno = lineno
            self.resolve(m[3], line[m.end():].rstrip())
        self.cache.clear()

    def accepts(self, event: str, text: str) -> bool:
        """Some arch (or the generic parser) reads ``text`` as ``event`` (for rejoining lines)."""
        generic = _GENERIC.get(event)
        if generic is not None:
            try:
                generic(event, text)
            except ValueError:
                return False
            return True
        return any(self._knows(name, event, text) for name in self.order())

    def log_registers(self, text: str, lineno: int) -> tuple[str, list[dict[str, Any]]] | None:
        """The first arch whose ``parse_log_text`` finds registers in ``text``, with them (a
        plugin that breaks the hook is dropped)."""
        for name in self.order():
            try:
                found = self.arches[name].parse_log_text(text)
            except kvmcore.PluginError as exc:
                self.drop(name, exc, lineno)
                continue
            if found:
                return name, found
        return None


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
    loaded: dict[str, Any] = {}
    for name in names:
        try:
            loaded[name] = kvmcore.load_arch(name)
        except (kvmcore.PluginLoadError, kvmcore.FaultContractError) as exc:
            if arch_opt != "auto":
                raise ReplayError(str(exc)) from None
            notes.append(f"arch {name!r} not used: {exc}")
    if settings and arch_opt == "auto":
        # --set applies to the arches that declare the setting; one nobody declares is a typo
        for key in settings:
            if not any(key in arch.info.settings for arch in loaded.values()):
                known = "; ".join(f"{n}: {', '.join(a.info.settings) or '(none)'}" for n, a in sorted(loaded.items()))
                raise ReplayError(f"--set {key}: no installed arch has this VM setting (settings by arch: {known})")
    for name, arch in loaded.items():
        arch_settings = dict(layout.vm.get(name, {})) if layout is not None else {}
        if settings:
            declared = arch.info.settings
            arch_settings.update({k: v for k, v in settings.items() if k in declared or arch_opt != "auto"})
        try:
            vm = kvmcore.VM(arch, **choice.vm_kwargs(name), **arch_settings)
        except kvmcore.PluginError as exc:
            if arch_opt != "auto":
                raise ReplayError(str(exc)) from None
            notes.append(f"arch {name!r} not used: {exc}")
            continue
        except (ValueError, TypeError) as exc:
            raise ReplayError(f"arch {name!r}: bad VM setting: {exc}") from None
        if layout is not None:
            from kvmcore.cli.scenario import runner

            state = runner._State(vm, layout)
            for spec in layout.memslots:
                try:
                    state.set_memslot(spec)
                except (kvmcore.KvmError, kvmcore.PluginError, runner._StepError) as exc:
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
    unwrap: bool = True,
    choice: ModelChoice | None = None,
    *,
    per_line: bool | None = None,
    block_size: int | None = None,
) -> Summary:
    """Stream ``source`` (a path, or ``-`` for stdin) and return its :class:`Summary`.

    ``memory``: bytes the hot-gfn counts of each arch may take (exact while they fit).
    :func:`kvmcore.cli.replay_parallel.replay` runs it on every core. ``events``: also write one
    row per guest fault event to this Parquet file (:mod:`kvmcore.cli.events`; serial). The VMs
    that decode it model ``choice``'s kernel and proposals (over the ``memslots`` scenario's).
    ``unwrap``: rejoin lines a mail client wrapped (``--no-unwrap`` turns it off).
    ``per_line`` forces the per-line scan (the block fast path's oracle; default: the
    ``KVMCORE_REPLAY_PER_LINE`` environment variable), ``block_size`` the fast path's block
    (characters; tests use tiny blocks): both for developers, neither changes the summary.
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
    summary.unwrap = unwrap
    if source == "-":
        # trace text is not always clean UTF-8 (comm names, corrupted buffers): never fail on it
        stream: Any = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace") if hasattr(sys.stdin, "buffer") else sys.stdin
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
        _scan(stream, summary, resolver, memory, progress, total, memslots is not None,
              getattr(stream, "buffer", None), writer, unwrap=unwrap, has_settings=bool(settings),
              head=head, per_line=per_line, block_size=block_size)
        if writer is not None:
            summary.notes.append(f"wrote {writer.close():,} guest fault events to {events}")
    finally:
        if writer is not None:
            writer.close()
        if source != "-":
            stream.close()
        elif stream is not sys.stdin:
            stream.detach()  # leave sys.stdin's buffer open
    summary.seconds = time.perf_counter() - start
    _what_kvm_does(summary, arches, settings or {}, memslots, choice)
    _finish(summary, arches, vcpus)
    return summary


def _finish(summary: Summary, arches: dict[str, Any], vcpus: dict[str, Any]) -> None:
    """What the summary says once every line is counted: page shifts, the arch mode, notes."""
    for name, vcpu in vcpus.items():
        summary.page_shift[name] = vcpu.vm.page_shift
    if summary.mode == "auto":
        seen = sorted(a for a in summary.by_arch_kind if a in arches)
        logged = sorted({item["arch"] for item in summary.log_syndromes})
        if seen:
            summary.mode = "auto (" + ", ".join(seen) + ")"
        elif logged:
            summary.mode = "auto (no trace events; " + ", ".join(logged) + " registers in log lines)"
        else:
            summary.mode = "auto (no arch-specific events seen)"
    for event, n in summary.other_events.items():
        owner = ARCH_OF_EVENT.get(event)
        if owner is not None and owner not in arches:
            summary.notes.append(f"{n:,} {event} events are {owner} events, but the {owner} plugin is not loaded")


def _scan(stream: Any, summary: Summary, resolver: _Resolver, memory: int, progress: bool,
          total: int, with_slots: bool, buffer: Any, sink: Any = None, *, unwrap: bool = True,
          has_settings: bool = False, head: list[str] | None = None, per_line: bool | None = None,
          block_size: int | None = None) -> None:
    """Count every line of ``head`` then ``stream`` into ``summary`` (the serial scan; the
    parallel replay runs it on each range of a file).

    A text stream (one with ``read``) is read in blocks through the block fast path
    (:mod:`kvmcore.cli.replay_block`) unless ``per_line`` (default: the ``KVMCORE_REPLAY_PER_LINE``
    environment variable) or ``--events`` asks for the per-line scan, which is its oracle.
    """
    from kvmcore.cli import replay_block

    scan = _Scan(summary, resolver, memory, with_slots, has_settings, unwrap, sink)
    if per_line is None:
        per_line = replay_block.per_line_forced()
    if per_line or sink is not None or not hasattr(stream, "read"):
        records: Any = enumerate(itertools.chain(head, stream) if head else stream, 1)
    else:
        blocks = replay_block.Blocks(scan, block_size or replay_block.BLOCK_SIZE)
        records = blocks.records(stream, head or [])
    scan.run(records, progress, total, buffer)


def _what_kvm_does(summary: Summary, arches: dict[str, Any], settings: dict[str, Any], memslots: str | None,
                   choice: ModelChoice | None = None) -> None:
    """For the loops shown: run the loop's registers through a fresh VM of the same layout
    (``vcpu.handle_fault``) and say how the fault ends."""
    ranked = sorted(summary.loops.values(), key=lambda lp: (-lp["longest"], lp["first_line"]))
    for lp in ranked[:SHOW_LOOPS]:
        name = lp["arch"]
        if name not in arches:
            continue
        try:
            _, vcpus, _ = _load(name, settings, memslots, choice)
            res = vcpus[name].handle_fault(lp["raw"])
        except (kvmcore.KvmcoreError, ValueError, TypeError, KeyError) as exc:
            text = f"not modelled: {echo(str(exc), 120)}"
        else:
            if res.exit_reason is not None:
                ends = f"exits to userspace with {res.exit_reason_name}"
            elif res.ret:
                ends = f"KVM_RUN returns {res.ret}"
            else:
                ends = "the guest resumes"
            where = "the --memslots layout" if memslots else "no memslots (give --memslots for the VM's layout)"
            text = f"{res.outcome}: {ends} (model with {where})"
        lp["kvm"] = text


def _registers(label: str, raw: Any) -> tuple[Any, ...]:
    """The registers of a fault as the memo keys them: ``(label, *raw.items())``."""
    return (label, *raw.items())


def _hit(label: str, decoded: Any, registers: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the counters need of a decoded fault: ``((label, fault kind, access, private,
    page-walk index), gfn, registers)``. Two faults are "the same fault" (a fault loop) when
    their hits are equal: the same registers (and so the same decode), whichever memo
    generation decoded them."""
    return ((label, getattr(decoded, "fault_kind", "?"),
             "exec" if decoded.exec else "write" if decoded.write else "read", bool(decoded.is_private),
             _WALK_INDEX.get(getattr(decoded, "page_walk", None), 2)),
            decoded.gfn, registers)


class _Scan:
    """One pass over the lines: parse, pair, decode, count (state kept across lines)."""

    # what the block fast path (kvmcore.cli.replay_block, which does not import this module)
    # shares with the per-line scan
    loop_min = LOOP_MIN
    max_names = MAX_NAMES
    max_pcs = MAX_PCS
    make_hit = staticmethod(_hit)

    def __init__(self, summary: Summary, resolver: _Resolver, memory: int, with_slots: bool, has_settings: bool,
                 unwrap: bool = True, sink: Any = None) -> None:
        self.sink = sink  # --events: every row's own decoded fields (kvmcore.cli.events)
        self.unwrap = unwrap
        self.summary = summary
        self.resolver = resolver
        self.memory = memory
        self.with_slots = with_slots
        self.has_settings = has_settings
        # decode_fault is a pure function of the registers for a fixed VM: remember recent ones
        # as ((label, fault kind, access, private, page-walk index), gfn, registers) (_hit)
        self.memo: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.memo_old: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        #: thread -> the guest_fault_exit waiting for its fault event
        self.pending: dict[Any, tuple[int, str, Any, dict[str, Any], Any]] = {}
        #: label -> vCPU -> [decoded hit, run length, first line, raw (from the 2nd fault on), pc,
        #: the vCPU's faults so far]: the current run of identical faults (equal hits, so the
        #: same registers; the same pc)
        self.runs: dict[str, dict[Any, list[Any]]] = {}
        self.labels: dict[str, list[Any]] = {}
        #: the last log line's registers (arch, registers, index in log_syndromes), to merge a
        #: register dump printed over consecutive lines; reset by any other line but blank ones
        self.last_log: tuple[str, dict[str, Any], int] | None = None
        self.log_tail = -1  # the line number the last log line (or a blank line after it) was on
        self.fast_events = 0  # events the block fast path counted (kvmcore.cli.replay_block)

    def run(self, records: Any, progress: bool, total: int, buffer: Any) -> None:
        summary = self.summary
        resolver = self.resolver
        cache = resolver.cache
        by_arch = summary.by_arch_kind
        other = summary.other_events
        exits = summary.userspace_exits
        fault = self.fault
        memo = self.memo
        faults = summary.faults
        labels = self.labels
        pending = self.pending
        sink = self.sink
        with_slots = self.with_slots
        last_label: str | None = None
        state: list[Any] = []
        events = 0
        lineno = read = 0  # read: the last line read (lineno goes back to a wrapped event's first line)
        next_report = 1 << 16
        last_time = time.perf_counter()
        search = _EVENT_RE.search
        unwrap = self.unwrap
        quoted = 0
        #: a malformed event line the next lines may complete (a mail client wrapped it):
        #: (first line number, text so far, why it is malformed, lines joined, the lines)
        held: tuple[int, str, str, int, list[tuple[int, str]]] | None = None
        prev_line, prev_m = "", None
        m: Any
        for read, line in records:  # noqa: B007 - read is used after the loop
            lineno = read
            if len(line) > trace_input.MAX_LINE:  # no event or log line is this long: skip it
                if held is not None:            # before any search or copy of its text
                    self.drop_held(held)
                    held = None
                prev_m = None
                summary.skip(lineno, line, f"a line of {len(line):,} characters (longer than any trace "
                             f"event or log line, {trace_input.MAX_LINE:,})", False)
                continue
            m = search(line)
            if m is None:  # the slow path: quoting, prefix-less events, wrapped tails, log lines
                if ">" in line[:16]:
                    line, q = trace_input.strip_quote(line)
                    quoted += q
                    m = search(line)
                if m is None:
                    m = trace_input.find_event(line)
                if m is None and unwrap and prev_m is not None:
                    base = held[1] if held is not None else prev_line
                    joined = trace_input.continuation(base, prev_m, line)
                    if joined is not None:
                        if resolver.accepts(prev_m[3], joined[prev_m.end():].rstrip()):
                            if held is None:  # the line before parsed alone: the tail held optional fields
                                summary.unwrapped += 1
                                prev_line = joined
                                continue
                            summary.unwrapped += held[3]
                            lineno, line, m = held[0], joined, prev_m
                            held = None
                        elif held is not None and held[3] < trace_input.MAX_PARTS:
                            held[4].append((lineno, line))
                            held = (held[0], joined, held[2], held[3] + 1, held[4])
                            continue
                if m is None:
                    if held is not None:
                        self.drop_held(held)
                        held = None
                    prev_m = None
                    self.no_event(lineno, line)
                    continue
            if held is not None:
                self.drop_held(held)
                held = None
            prev_line, prev_m = line, m
            event = m[3]
            text = line[m.end():].rstrip()
            entry = cache.get(event, _MISSING)
            ev = None
            if entry is not None and entry is not _MISSING:
                try:
                    ev = entry[1](event, text)
                except kvmcore.PluginError as exc:
                    resolver.drop(entry[0], exc, lineno)
                    summary.skip(lineno, line, f"{event}: {exc}", False)
                    continue
                except ValueError as exc:
                    # the cached arch refused: another installed arch may know this format
                    entry, ev, text, error = self.retry(lineno, event, text, str(exc))
                    if not entry:
                        held = (lineno, line, f"malformed {event} event: {error}", 1, [(lineno, line)])
                        if not unwrap:
                            summary.skip(lineno, line, held[2], True)
                            held = None
                        continue
            elif entry is _MISSING:
                resolver.lineno = lineno
                entry, ev, error = resolver.resolve(event, text)
                if entry is False:
                    entry, ev, text, error = self.retry(lineno, event, text, error)
                if entry is False:
                    held = (lineno, line, f"malformed {event} event: {error}", 1, [(lineno, line)])
                    if not unwrap:
                        summary.skip(lineno, line, held[2], True)
                        held = None
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
                except kvmcore.PluginError as exc:
                    resolver.drop(entry[0], exc, lineno)
                    summary.skip(lineno, line, f"{event}: {exc}", False)
                    continue
                except ValueError as exc:
                    held = (lineno, line, f"malformed {event} event: {exc}", 1, [(lineno, line)])
                    if not unwrap:
                        summary.skip(lineno, line, held[2], True)
                        held = None
                    continue
                if ev is None:
                    key = event if event in other or len(other) < MAX_NAMES else "(other)"
                    other[key] = other.get(key, 0) + 1
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
                if pending:
                    raw = self.paired(lineno, line, m, label, raw)
                # The common case, inline (a method call per fault costs ~10% of the replay):
                # registers seen recently, so the memo has the decode. Otherwise self.fault().
                if sink is not None:  # --events: every row's own decoded fields, so no memo
                    fault(lineno, line, m, event, label, entry, raw, ev.fields, None, ev)
                    continue
                try:
                    memo_key: tuple[Any, ...] | None = (label, *raw.items())
                    hit = memo.get(memo_key)  # type: ignore[arg-type]
                except TypeError:  # an unhashable register value: decoded every time
                    memo_key, hit = None, None
                if hit is None:
                    hit = self.memo_old.get(memo_key) if memo_key is not None else None
                    if hit is None:  # decode these registers (the rest of the counting too)
                        fault(lineno, line, m, event, label, entry, raw, ev.fields, memo_key, ev)
                        continue
                    memo[memo_key] = hit  # type: ignore[index]
                key, gfn, _ = hit
                faults[key] = faults.get(key, 0) + 1
                if label is not last_label:
                    state = labels.get(label) or self._per_label(label)
                    last_label = label
                sketch = state[1]
                c = sketch.counts.get(gfn)
                if c is None:
                    sketch.add_new(gfn)
                else:
                    sketch.counts[gfn] = c + 1
                fields = ev.fields
                pc = fields.get("pc")
                if pc is not None:
                    pcs = state[2]
                    c = pcs.get(pc)
                    if c is not None:
                        pcs[pc] = c + 1
                    elif len(pcs) < MAX_PCS:
                        pcs[pc] = 1
                vkey = fields.get("vcpu")
                if vkey is None:
                    cut = line.find("[")  # the tracing thread before "[cpu]", tidied when reported
                    vkey = line[:cut] if 0 < cut < m.start() else "(unknown vCPU)"
                # the vCPU's run of identical faults (a fault loop) and its fault count (run[5])
                run = state[0].get(vkey)
                if run is not None and (run[0] is hit or run[0] == hit) and run[4] == pc:
                    run[1] += 1
                    run[5] += 1
                    if run[1] == 2:
                        run[3] = raw
                elif run is not None and run[1] < LOOP_MIN:  # too short to be a loop: reuse it
                    run[0], run[1], run[2], run[4] = hit, 1, lineno, pc
                    run[5] += 1
                else:
                    self.new_run(state[0], vkey, run, hit, lineno, raw, pc)
                if with_slots:
                    self.count_slot(label, entry, gfn)
            elif kind == "guest_fault_exit" and ev.raw is not None and entry[2] is not None:
                self.exit_with_fault(lineno, line, m, label, entry, ev)
            elif kind == "guest_fault_ambiguous" and ev.raw is not None and entry[2] is not None:
                raw = self.paired(lineno, line, m, label, ev.raw) if self.pending else ev.raw
                if raw is ev.raw and not self.has_settings:
                    summary.ambiguous += 1
                    if len(summary.ambiguous_examples) < SHOW_SKIPPED:
                        summary.ambiguous_examples.append(
                            (lineno, f"{event} {echo(text, 100)}: give the VM setting that decides it (x86: --set vendor=vmx|svm)"))
                    continue
                fault(lineno, line, m, event, label, entry, raw, ev.fields, _MISSING, ev)
            elif kind == "mmio":
                f = ev.fields
                mmio = summary.mmio
                where = (str(f.get("type_name") or f.get("type") or "?"), f.get("gpa", 0), f.get("len", 0))
                if where in mmio or len(mmio) < MAX_NAMES:
                    mmio[where] = mmio.get(where, 0) + 1
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
        if held is not None:
            self.drop_held(held)
        summary.quoted_lines = quoted
        for key in list(self.pending):
            self.flush_exit(key)
        for runs in self.runs.values():
            for vkey, run in runs.items():
                self.close_run(vkey, run)
        self.count_vcpus()
        self.fold_walks()
        for label in [k for k, pcs in summary.rips.items() if not pcs]:
            del summary.rips[label]
        summary.lines = read
        summary.events = events + self.fast_events
        if progress:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    # -- one guest fault -------------------------------------------------------------------------
    def _per_label(self, label: str) -> list[Any]:
        """The counters of one arch label, made once: [runs by vCPU, gfn sketch, pc counts]."""
        summary = self.summary
        state = [self.runs.setdefault(label, {}), summary.hot.setdefault(label, HotGfns(self.memory)),
                 summary.rips.setdefault(label, {})]
        self.labels[label] = state
        return state

    def fault(self, lineno: int, line: str, m: Any, event: str, label: str, entry: Any, raw: Any,
              fields: Any, memo_key: Any = _MISSING, ev: Any = None) -> None:
        """Count one guest fault (the scan loop inlines the memo-hit case of this; keep the two
        in step). ``memo_key`` when the caller already built it and missed the memo."""
        memo = self.memo
        hit = None
        if self.sink is not None:
            memo_key = None  # --events: each row is decoded for its own fields
        elif memo_key is _MISSING:
            try:
                memo_key = (label, *raw.items())
                hit = memo.get(memo_key)
            except TypeError:  # an unhashable register value: decode every time
                memo_key = None
        if hit is None and memo_key is not None and memo_key in self.memo_old:
            hit = memo[memo_key] = self.memo_old[memo_key]
        if hit is None:  # decode_fault once for these registers (then remembered)
            summary = self.summary
            try:
                decoded = entry[2](entry[3], raw)
            except kvmcore.PluginError as exc:
                self.resolver.drop(label, exc, lineno)
                summary.undecodable += 1
                return
            except (kvmcore.DecodeError, ValueError, TypeError, KeyError) as exc:
                if self.sink is not None:
                    self.sink.add(lineno, line, m, label, event, ev, None, str(exc))
                summary.undecodable += 1
                if len(summary.skipped_examples) < SHOW_SKIPPED:
                    summary.skipped_examples.append(
                        (lineno, echo(f"{event} is not a guest memory fault: {exc}", 240), echo(line)))
                return
            if self.sink is not None:
                self.sink.add(lineno, line, m, label, event, ev, decoded)
            hit = _hit(label, decoded, memo_key if memo_key is not None else _registers(label, raw))
            if memo_key is not None:
                self.remember(memo_key, hit)
        key, gfn, _ = hit
        faults = self.summary.faults
        faults[key] = faults.get(key, 0) + 1
        state = self.labels.get(label) or self._per_label(label)
        sketch = state[1]
        c = sketch.counts.get(gfn)
        if c is None:
            sketch.add_new(gfn)
        else:
            sketch.counts[gfn] = c + 1
        pc = fields.get("pc")
        if pc is not None:
            pcs = state[2]
            c = pcs.get(pc)
            if c is not None:
                pcs[pc] = c + 1
            elif len(pcs) < MAX_PCS:
                pcs[pc] = 1
        vkey = fields.get("vcpu")
        if vkey is None:
            # the tracing thread (comm-pid) as printed before "[cpu]"; tidied when reported
            cut = line.find("[")
            vkey = line[:cut] if 0 < cut < m.start() else "(unknown vCPU)"
        runs = state[0]
        run = runs.get(vkey)
        if run is not None and (run[0] is hit or run[0] == hit) and run[4] == pc:
            run[1] += 1
            run[5] += 1
            if run[1] == 2:
                run[3] = raw
        elif run is not None and run[1] < LOOP_MIN:  # reuse it
            run[0], run[1], run[2], run[3], run[4] = hit, 1, lineno, raw, pc
            run[5] += 1
        else:
            self.new_run(runs, vkey, run, hit, lineno, raw, pc)
        if self.with_slots:
            self.count_slot(label, entry, gfn)

    def remember(self, memo_key: tuple[Any, ...], hit: tuple[Any, ...]) -> None:
        """Remember a decode (two generations: recently used entries survive a full memo)."""
        memo = self.memo
        if len(memo) >= MEMO_SIZE:
            self.memo_old = dict(memo)
            memo.clear()  # in place: the scan loop holds this dict
        memo[memo_key] = hit

    def new_run(self, runs: dict[Any, list[Any]], vkey: Any, run: list[Any] | None, hit: Any, lineno: int,
                raw: Any, pc: Any) -> None:
        """A fault unlike the last one on this vCPU (``runs``: the label's runs by vCPU): close
        the old run, start a new one that keeps the vCPU's fault count."""
        total = 0
        if run is not None:
            self.close_run(vkey, run)
            total = run[5]
        elif len(runs) >= MAX_NAMES:
            self.count_vcpus()
            runs.clear()
        runs[vkey] = [hit, 1, lineno, raw, pc, total + 1]

    def count_vcpus(self) -> None:
        """Move the runs' per-vCPU fault counts into the summary (names tidied)."""
        vcpus = self.summary.vcpus
        for label, runs in self.runs.items():
            per = vcpus.setdefault(label, {})
            for name, run in runs.items():
                tidied = _vcpu_name(name)
                if tidied in per or len(per) < MAX_NAMES:
                    per[tidied] = per.get(tidied, 0) + run[5]
                run[5] = 0

    def count_slot(self, label: str, entry: Any, gfn: int, n: int = 1) -> None:
        slot = entry[3].vm.gfn_to_memslot(gfn)
        name = f"slot {slot.id}" if slot is not None else "no slot"
        per = self.summary.slots.setdefault(label, {})
        per[name] = per.get(name, 0) + n

    def close_run(self, vkey: Any, run: list[Any]) -> None:
        """A run of identical faults ended: remember it as a loop if it was long enough."""
        hit, count, first, raw, pc, _ = run
        if count < LOOP_MIN:
            return
        key, gfn, _ = hit
        label = key[0]
        loops = self.summary.loops
        vkey = _vcpu_name(vkey)
        try:
            loop_key: tuple[Any, ...] = (vkey, label, tuple(raw.items()), pc)
            hash(loop_key)
        except TypeError:
            return
        lp = loops.get(loop_key)
        if lp is None:
            if len(loops) >= MAX_LOOPS:
                shortest = min(loops, key=lambda k: loops[k]["longest"])
                if loops[shortest]["longest"] >= count:
                    return
                del loops[shortest]
            lp = loops[loop_key] = {
                "sig": loop_key, "arch": label, "vcpu": vkey, "gfn": gfn, "pc": pc, "fault_kind": key[1],
                "access": key[2], "private": key[3], "raw": dict(raw), "longest": 0, "faults": 0, "runs": 0,
                "first_line": first,
            }
        lp["longest"] = max(lp["longest"], count)
        lp["faults"] += count
        lp["runs"] += 1

    def fold_walks(self) -> None:
        """Faults were counted with their page-walk index in the key (free on the hot path):
        fold it out into ``summary.walks``."""
        summary = self.summary
        folded: dict[tuple[str, str, str, bool], int] = {}
        for key, n in summary.faults.items():
            if len(key) == 5:
                summary.walks.setdefault(key[0], [0, 0, 0])[key[4]] += n
                key = key[:4]
            folded[key] = folded.get(key, 0) + n
        summary.faults = folded

    def drop_held(self, held: tuple[int, str, str, int, list[tuple[int, str]]]) -> None:
        """A malformed event line no following line completed: count it, and the lines tried as
        its continuation go back to being lines of their own."""
        (first, line), *rest = held[4]
        self.summary.skip(first, line, held[2], True)
        for lineno, other in rest:
            self.no_event(lineno, other)

    def retry(self, lineno: int, event: str, text: str, error: str | None) -> tuple[Any, Any, str, str | None]:
        """A line some parser refused: ask every arch again (the cached one may be the wrong
        one), then once more without trace-cmd's ``CAN'T FIND FIELD`` noise. ``(entry or False,
        event, text used, error)``."""
        resolver = self.resolver
        resolver.lineno = lineno
        entry, ev, err = resolver.resolve(event, text)
        if not entry and "FIND FIELD" in text:
            cleaned = trace_input.clean_artifacts(text)
            entry, ev, err2 = resolver.resolve(event, cleaned)
            if entry:
                return entry, ev, cleaned, None
        if not entry:
            return False, None, text, err or error
        return entry, ev, text, None

    # -- exits that carry a fault, and the fault event after them -------------------------------
    def exit_with_fault(self, lineno: int, line: str, m: Any, label: str, entry: Any, ev: Any) -> None:
        thread = trace_input.thread_of(line, m) or "(no thread)"  # pasted without prefixes: one
        pend = self.pending.get(thread)
        if pend is not None and pend[3] == dict(ev.raw) and pend[4][2].fields.get("event") != ev.fields.get("event"):
            return  # the same exit traced twice (x86: kvm_exit, then kvm_nested_vmexit for L2)
        if pend is not None:
            self.flush_exit(thread)
        self.pending[thread] = (lineno, line, m, dict(ev.raw), (label, entry, ev))

    def paired(self, lineno: int, line: str, m: Any, label: str, raw: Any) -> Any:
        """``raw`` completed by the exit pending on this line's thread, if it is the same fault.

        The exit's registers are the base; the fault event's values win, except where the
        fault event printed the exit's value cut to its low 32 bits (a kernel whose
        ``kvm_page_fault`` stored ``error_code`` as u32): then the exit's full value stays.
        A gpa in both that differs (other page) means another fault: no pairing.
        """
        thread = trace_input.thread_of(line, m) or "(no thread)"
        pend = self.pending.get(thread)
        if pend is None or pend[4][0] != label:
            return raw
        base = pend[3]
        if "gpa" in base and "gpa" in raw and base["gpa"] >> 12 != raw["gpa"] >> 12:
            return raw
        del self.pending[thread]
        merged = dict(base)
        widened = False
        for name, value in raw.items():
            old = merged.get(name)
            if (isinstance(old, int) and isinstance(value, int) and old != value and old >> 32
                    and old & 0xFFFF_FFFF == value):
                widened = True
                continue
            merged[name] = value
        self.summary.paired_exits += 1
        self.summary.widened += widened
        return merged

    def flush_exit(self, thread: Any) -> None:
        """An exit that carried a fault and was followed by no fault event: decode it alone."""
        lineno, line, m, raw, (label, entry, ev) = self.pending.pop(thread)
        summary = self.summary
        try:
            entry[2](entry[3], raw)
        except kvmcore.PluginError as exc:
            self.resolver.drop(label, exc, lineno)
            summary.undecodable += 1
            return
        except (kvmcore.DecodeError, ValueError, TypeError, KeyError) as exc:
            why = f"{ev.fields.get('event', 'exit')}: {echo(str(exc), 100)}"
            summary.exit_only[why] = summary.exit_only.get(why, 0) + 1
            if len(summary.exit_only_examples) < SHOW_SKIPPED:
                summary.exit_only_examples.append((lineno, why, echo(line)))
            return
        self.fault(lineno, line, m, ev.fields.get("event", "exit"), label, entry, raw, ev.fields, _MISSING, ev)

    # -- lines with no event ---------------------------------------------------------------------
    def no_event(self, lineno: int, line: str) -> None:
        summary = self.summary
        stripped = line.strip()
        if not stripped and self.log_tail == lineno - 1:
            self.log_tail = lineno  # a blank line inside a register dump (mail quoting leaves them)
        if not stripped or stripped.startswith(_HEADER_PREFIXES):
            lost = _LOST_RE.search(stripped) if "LOST" in stripped else None
            if lost is not None:
                summary.lost_events += int(lost[2])
                summary.lost_lines += 1
            else:
                summary.header_lines += 1
            return
        found = self.resolver.log_registers(stripped, lineno)
        if found is None:
            summary.skip(lineno, line, "not a trace event line (no 'timestamp: event:' found)", False)
            return
        name, sets = found
        summary.log_lines += 1
        arch = self.resolver.arches[name]
        vcpu = self.resolver.vms[name]
        last = self.last_log if self.log_tail == lineno - 1 else None
        self.log_tail = lineno
        if last is not None and last[0] == name and len(sets) == 1 and not sets[0].keys() & last[1].keys():
            # a register dump printed over several lines (scause/stval, then htval/htinst)
            merged = {**last[1], **sets[0]}
            item = summary.log_syndromes[last[2]]
            item.update(registers=_registers_text(merged), **_log_decode(arch, vcpu, merged))
            item["text"] = echo(item["text"] + " / " + stripped)
            self.last_log = (name, merged, last[2])
            return
        for raw in sets:
            if len(summary.log_syndromes) >= MAX_LOG_SYNDROMES:
                break
            summary.log_syndromes.append({"line": lineno, "arch": name, "text": echo(stripped),
                                          "registers": _registers_text(raw), **_log_decode(arch, vcpu, raw)})
            self.last_log = (name, dict(raw), len(summary.log_syndromes) - 1)


def _vcpu_name(name: Any) -> str:
    """``vcpu N`` for a vCPU id the event gave, else the tracing thread as printed, tidied."""
    if isinstance(name, int):
        return f"vcpu {name}"
    return " ".join(str(name).lstrip("> \t").split())


def _registers_text(raw: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}" for k, v in raw.items())


def _log_decode(arch: Any, vcpu: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """What a log line's registers are: the fault decode_fault makes of them, or what the
    syndrome alone says (``describe_syndrome``) with why the fault path cannot run."""
    try:
        fault = arch.decode_fault(vcpu, raw)
    except (kvmcore.DecodeError, kvmcore.PluginError, ValueError, TypeError, KeyError) as exc:
        error = str(exc)
    else:
        access = "exec" if fault.exec else "write" if fault.write else "read"
        walk = getattr(fault, "page_walk", None)
        where = "" if walk is None else ", guest page-table walk" if walk else ", final translation"
        return {"guest_fault": True, "gfn": fault.gfn, "fault_kind": getattr(fault, "fault_kind", "?"),
                "access": access, "page_walk": walk,
                "decoded": f"{getattr(fault, 'fault_kind', 'fault')} {access}, gfn {fault.gfn:#x}{where}"}
    try:
        syn = arch.describe_syndrome(vcpu.vm, raw)
    except (NotImplementedError, kvmcore.DecodeError, kvmcore.PluginError, ValueError, TypeError, KeyError):
        return {"guest_fault": False, "decoded": f"not decoded: {echo(error, 160)}"}
    f = syn.fields
    kind = f.get("fault_kind") or f.get("access") or f.get("ec_name") or "?"
    access = "exec" if f.get("exec") else "write" if f.get("write") else "read"
    if not syn.guest_fault:
        return {"guest_fault": False, "fault_kind": kind, "access": access,
                "decoded": f"{kind}: not a guest memory fault ({echo(syn.error or error, 160)})"}
    return {"guest_fault": True, "gfn": f.get("gfn"), "fault_kind": kind, "access": access,
            "decoded": f"{kind} {access}, gpa unknown ({echo(error, 120)})"}


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
