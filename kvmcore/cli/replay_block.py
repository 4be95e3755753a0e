"""The block fast path of ``kvmcore replay``: whole blocks of canonical fault lines counted in C.

The per-line scan (:class:`kvmcore.cli.replay._Scan`) costs several microseconds a line: the event
regex, the arch's parser, a ``TraceEvent``, the memo, the counters, all in Python. A trace is
mostly one event printed the same way millions of times, so this module reads the input in
blocks of :data:`BLOCK_SIZE` characters cut at line boundaries and, for each block, runs one
cheap regular expression over the whole block (:data:`LINE_RE`, ``findall``, in C) that splits
every line into its tracing thread and the text after its timestamp. Each distinct text gets a
small id (one hash per line) and is judged once: it must be an event the arches declare in
``ArchInfo.trace_patterns`` (arm64 ``kvm_guest_fault``, x86 ``kvm_page_fault``, riscv
``kvm_exit``) printed in the kernel's canonical ftrace form (:class:`TextPattern`), and is then
parsed and decoded. Everything else is read from per-id columns with ``map`` and counted with C
tools: ``collections.Counter``'s ``_count_elements`` into a pending count per id (folded into the
summary's tables at the end, :meth:`Blocks.flush`), ``map``/``compress`` over the per-vCPU
sequences of fault signatures for the fault-loop runs.

The per-line path is the oracle, in three ways:

* every distinct text is parsed by the arch's ``parse_trace_event`` (through the same resolver
  cache entry the per-line scan would use) and decoded by ``decode_fault`` through the same
  memo, once, and remembered (:data:`TEXT_MEMO_SIZE` texts, then forgotten);
* every line with no ``thread timestamp:`` prefix, every text that is not canonical or whose
  parse or decode does not give a plain counted event, and the first and last line of every
  stretch of fast lines go to the
  per-line scan, in order (so wrapped lines, mail quoting, x86 exit pairing, log lines, malformed
  lines and skipped-line accounting behave exactly as before);
* what depends on the order of the lines is done in order: table entries are made at a text's
  first line (insertion order, the PC cap), loops are closed in line order, and a stretch whose
  counting would depend on the order of its lines (the hot-gfn counter turning into a sketch,
  more than ``MAX_NAMES`` vCPUs, faults of two arches) goes to the per-line scan.

What the fast path counts for a stretch is what the per-line scan would count for the same lines
(tests/cli/test_replay_block.py and tests/fuzz/test_fuzz_replay.py compare the two summaries).
``KVMCORE_REPLAY_PER_LINE=1`` (or ``replay(..., per_line=True)``) forces the per-line scan, for
developers comparing the two.

Where the time goes (1,000,000-line arm64 benchmark trace, 65,536 distinct fault texts, each
seen about 15 times): judging each distinct text once ~30% (the pattern check, the arch's parse
and ``decode_fault`` ~20%, the bookkeeping ~10%), the text-id lookup ~20% (a dict of 65,536
texts: hashing a fresh 90-character string and comparing it with the stored one, mostly cache
misses), the line pattern ~15% (without the thread group when a block is one thread's,
:func:`one_thread`), the counting ~15%, reading
and decoding the file, cutting blocks and the lines handed to the per-line scan ~15%.
Memory: a block's columns (at most :data:`MAX_BLOCK_LINES` lines at once) and the text memo
(about 0.5 KiB a text; texts that are not canonical are remembered only up to
:data:`MAX_NOT_CANONICAL` characters).

The collector: a new text leaves about ten objects behind (its memo entry, its fault signature)
and ``findall`` makes a tuple per line. With the collector running, young collections walk them
and promote them, and the old generation's growth starts full collections, each walking the
big tables (memo, signatures: some 200,000 entries); on the benchmark trace that was about a
tenth of the fast path's time. So the collector is paused (``gc.disable``, restored in a
``finally``) while a block's columns are built (:meth:`Blocks.columns`) and while its new texts
are judged (:meth:`Blocks.classify`): bounded work, one block at most (:data:`MAX_BLOCK_LINES`
lines), after which the young collection the paused work is due runs at the next allocation.
Cycles a plugin's hook makes meanwhile are collected then, so memory stays bounded. The pause
is process-wide: another thread's allocations are not collected for those milliseconds either.
"""

from __future__ import annotations

import collections
import gc
import re
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from itertools import compress, islice, repeat
from operator import eq, ge, is_, itemgetter, ne, not_, sub
from typing import Any

from kvmcore.cli.hotgfns import EXACT_ENTRY_BYTES
from kvmcore.plugin.isolation import trace_pattern_error
from kvmcore.plugin.loader import env_flag


def _count_elements_py(mapping: dict[Any, int], iterable: Any) -> None:
    """``collections._count_elements`` in Python, for an interpreter without the C helper."""
    get = mapping.get
    for element in iterable:
        mapping[element] = get(element, 0) + 1


#: ``Counter.update``'s C helper when the interpreter has it (CPython; it is private, so not
#: counted on), else the same loop in Python.
_count_elements: Any = getattr(collections, "_count_elements", _count_elements_py)

#: Characters read at once (the block is cut back to its last newline).
BLOCK_SIZE = 1 << 20
#: Lines matched at once (a block of very short lines is matched in parts: memory stays bounded).
MAX_BLOCK_LINES = 1 << 15
#: Distinct event texts remembered with their parse and decode (then all forgotten at once).
TEXT_MEMO_SIZE = 1 << 17
#: Distinct line prefixes (tracing threads) remembered with the vCPU they name.
THREAD_MEMO_SIZE = 1 << 12
#: Set to 1 to force the per-line scan (developers: the oracle of the fast path).
PER_LINE_ENV = "KVMCORE_REPLAY_PER_LINE"

_NONE = object()  # no resolver cache entry for an event
_SLOW = "slow"  # a text the per-line scan must see (its verdict is remembered)
_UNRESOLVED = "unresolved"  # the event's arch is not known yet: ask the per-line scan once
_NOT_CANONICAL = "not canonical"  # not an event text of the patterns: the per-line scan reads it
#: Text id 1: every text that is not canonical (kept if at most this long, else judged again).
MAX_NOT_CANONICAL = 256
_THREAD = itemgetter(0)
_KEY = itemgetter(1)


def per_line_forced() -> bool:
    return env_flag(PER_LINE_ENV)


#: The longest thread and text the fast path takes (a longer line goes to the per-line scan):
#: what a block's columns copy out of it stays small, and so does each text remembered.
MAX_FIELD = 512
#: Every line of a block: ``(thread, rest)`` where the line is ``thread timestamp: rest`` (no
#: ``:`` before the timestamp), else ``("", "")``. The block is matched with this cheap pattern
#: first (``[^:]`` and ``.`` are counted in C by tight loops; a character class such as
#: ``[^:\n]`` is tested member by member); ``rest`` is checked once per distinct text
#: (:class:`TextPattern`). A line with no ``:`` lets a match run into the next line: then the
#: match count is not the line count and the block is matched again with :data:`SAFE_LINE_RE`.
LINE_RE = re.compile(rf"([^:]{{0,{MAX_FIELD}}}) [0-9]+(?:\.[0-9]+)?: (.{{0,{MAX_FIELD}}})\n|.*\n")
#: :data:`LINE_RE` confined to one line (slower).
SAFE_LINE_RE = re.compile(rf"([^:\n]{{0,{MAX_FIELD}}}) [0-9]+(?:\.[0-9]+)?: ([^\n]{{0,{MAX_FIELD}}})\n|[^\n]*\n")
#: :data:`LINE_RE` without the thread group, for a block whose lines all name the same vCPU
#: (:func:`one_thread`): ``findall`` then gives the texts themselves, no tuple per line, and
#: capturing the thread was about half of the pattern's time.
TEXT_RE = re.compile(rf"[^:]{{0,{MAX_FIELD}}} [0-9]+(?:\.[0-9]+)?: (.{{0,{MAX_FIELD}}})\n|.*\n")


class TextPattern:
    """Which texts after a line's timestamp are a canonical event the fast path may count:
    ``[system:]event: text`` for an event and text the arches declare in
    ``ArchInfo.trace_patterns`` (arm64 ``kvm_guest_fault``, x86 ``kvm_page_fault``, riscv
    ``kvm_exit``) printed in the kernel's canonical form.

    With :data:`LINE_RE` this agrees with :data:`kvmcore.cli.trace_input.EVENT_RE` on every line
    it takes: no ``:`` before the timestamp (so the per-line search finds the same timestamp),
    ``[system:]event:`` as EVENT_RE splits it, and at least one space after the event's colon (so
    EVENT_RE cannot read the text's first word as the event). It is stricter than EVENT_RE (spaces,
    not any blank; ASCII digits and names): what it does not take goes to the per-line scan. The
    thread is the line up to the space before the timestamp (what the per-line scan cuts the
    vCPU name from).
    """

    def __init__(self, patterns: dict[str, list[str]]) -> None:
        alternatives = "|".join(
            rf"{re.escape(event)}: +(?:{'|'.join(f'(?:{p})' for p in texts)})"
            for event, texts in sorted(patterns.items())
        )
        #: ``match(rest)``: group 1 is :meth:`key`'s answer
        self.match = re.compile(r" *(?:[A-Za-z0-9_]++:)?(" + alternatives + r") *").fullmatch

    def key(self, rest: str) -> str | None:
        """``"event: text"`` (the canonical part of ``rest``, the line after ``timestamp: ``), or
        None when the line is not a canonical event of the patterns."""
        m = self.match(rest)
        return m[1] if m is not None else None


class _ThreadVcpus(dict[str, str]):
    """Line prefix -> the vCPU key the per-line scan cuts from it (``comm-pid`` before ``[cpu]``)."""

    def __missing__(self, thread: str) -> str:
        cut = thread.find("[")
        vkey = thread[:cut] if cut > 0 else "(unknown vCPU)"
        if len(self) >= THREAD_MEMO_SIZE:
            self.clear()
        self[thread] = vkey
        return vkey


class Blocks:
    """Feeds :meth:`kvmcore.cli.replay._Scan.run` the lines it must see, counting the rest."""

    def __init__(self, scan: Any, block_size: int = BLOCK_SIZE) -> None:
        self.scan = scan
        self.block_size = max(1, block_size)
        patterns: dict[str, list[str]] = {}
        for name, arch in scan.resolver.arches.items():
            for event, text in (getattr(arch.info, "trace_patterns", None) or {}).items():
                error = trace_pattern_error(event, text)
                if error is not None:  # the per-line scan reads these events
                    scan.summary.notes.append(f"arch {name!r}: {error}: its lines are read one by one")
                    continue
                patterns.setdefault(event, []).append(text)
        self.events = sorted(patterns)
        self.texts = TextPattern(patterns) if patterns else None
        self.text_match = self.texts.match if self.texts is not None else None
        self.snapshot: tuple[Any, ...] = ()
        self.skip = 0  # blocks still to hand straight to the per-line scan
        self.backoff = 1  # how many the next time the fast path counts too few lines
        self.new_texts = 0  # texts judged so far (each costs a parse and a decode, as a line per-line does)
        self.reset()
        self.threads = _ThreadVcpus()

    def reset(self) -> None:
        """Forget every text (their verdicts depend on the resolver cache, or the memo is full)."""
        if getattr(self, "pending", None):
            self.flush()
        self.pending: dict[int, int] = {}  # text id -> lines counted, not yet in the summary
        self.unreserved: set[int] = set()  # text ids judged, not counted yet
        self.reserved_classes: set[int] = set()  # class ids whose table entries exist
        self.slow_texts = 0  # texts judged that the per-line scan must see
        self.mixed = False  # more than one class of lines
        #: text -> its id; per id (lists, so that a block's column of ids is read with map()
        #: and no hashing): the per-line scan must see it, its class, fault signature, gfn, pc,
        #: own vCPU field. Id 0: a text not judged (its arch is not known yet, or a long text
        #: that is not canonical); id 1: a text that is not canonical (TextPattern).
        self.tid_of: dict[str, int] = {}
        #: Columns of numbers are arrays: the collector does not walk them (lists of 65,536
        #: distinct ints cost each full collection a cache miss per item).
        self.t_slow = bytearray(b"\1\1")
        self.t_fault = bytearray(2)
        self.t_class = array("l", [-1, -1])
        self.t_sig = array("l", [0, 0])  # the gfn and pc are the signature's (sig_info)
        self.t_vf: list[Any] = [None, None]
        self.shared_sigs = False  # some fault signature has more than one text
        self.vfields = False  # some text has a vCPU field (x86 "vcpu")
        self.count_only = False  # some text is an event only counted
        self.class_ids: dict[tuple[Any, ...], int] = {}
        self.class_info: dict[int, tuple[Any, ...]] = {}  # id -> (label, kind, fault key or None, entry)
        self.sig_ids: dict[tuple[Any, Any], int] = {}  # (registers, pc) -> id: equal ids, the same fault
        self.sig_info: list[Any] = [None]  # id (from 1) -> (hit, pc)

    # -- reading -------------------------------------------------------------------------------
    def records(self, stream: Any, head: list[str]) -> Iterator[tuple[int, str]]:
        """``(lineno, line)`` of every line the per-line scan must see, as ``enumerate(stream, 1)``
        would give them (the head lines the arch probe read first, then the rest of ``stream``).

        A block is the whole lines of one ``read`` (matched in place, ``findall(text, pos,
        endpos)``: no copy); the line a read cut in two is joined and handed to the per-line
        scan."""
        lineno = 0
        if sum(map(len, head)) > self.block_size:  # long lines: no second copy of them in a block
            yield from enumerate(head, 1)
            lineno, head = len(head), []
        text = "".join(head)
        cut = text.rfind("\n") + 1
        if cut:
            n = text.count("\n", 0, cut)
            yield from self.block(text, 0, cut, lineno, n)
            lineno += n
        rest = text[cut:]
        read = stream.read
        while True:
            chunk = read(self.block_size)
            if not chunk:
                if rest:
                    yield lineno + 1, rest  # the last line, without a newline
                self.flush()
                for state in self.scan.labels.values():
                    state[1].flush = None  # the summary outlives the scan (and is pickled by --jobs)
                return
            first = chunk.find("\n") + 1
            if not first:  # a very long line: gather its pieces, join once
                pieces = [rest, chunk]
                while chunk and "\n" not in chunk:
                    chunk = read(self.block_size)
                    pieces.append(chunk)
                chunk = "".join(pieces)
                del pieces  # a generator's locals live across its yields: keep one copy of the line
                rest = ""
                first = chunk.find("\n") + 1
                if not first:  # end of input
                    rest = chunk
                    continue
                line = chunk[:first]
                chunk = chunk[first:]  # the rest of the read, without the long line
                first = 0
            else:
                line = rest + chunk[:first] if rest else chunk[:first]
            lineno += 1
            yield lineno, line
            del line  # not kept while the block after it is read
            cut = chunk.rfind("\n") + 1
            if cut > first:
                n = chunk.count("\n", first, cut)
                yield from self.block(chunk, first, cut, lineno, n)
                lineno += n
            rest = chunk[cut:]

    def block(self, text: str, start: int, end: int, base: int, n: int) -> Iterator[tuple[int, str]]:
        """The lines of ``text[start:end]`` (``n`` whole lines; line ``base + 1`` first) the
        per-line scan must see.

        A trace whose lines the fast path mostly leaves to the per-line scan (other events
        between the faults, x86 exits paired with their faults) would pay for the block regex on
        top, and one whose lines are mostly new texts (faults on ever new pages: every text is
        parsed and decoded as the per-line scan would, plus the fast path's bookkeeping, about
        30% more a line) gains nothing from counting repeats: after a block where fewer than a
        quarter of the lines were counted here, or more than half were new texts while the text
        memo already holds half its capacity, the next blocks go straight to the per-line scan
        (1, 2, 4... up to 64 of them before trying again). The memo's first half is filled
        whatever the texts (at most 65,536 new texts judged at the extra cost, a bounded
        investment): repeats can only show within its horizon, as in a trace that goes over the
        same pages again.
        """
        if self.skip:
            self.skip -= 1
            yield from enumerate(_lines(text[start:end]), base + 1)
            return
        before, new_before = self.scan.fast_events, self.new_texts
        yield from self.matched(text, start, end, base, n)
        if n >= 64 and ((self.scan.fast_events - before) * 4 < n
                        or ((self.new_texts - new_before) * 2 > n and len(self.tid_of) * 2 >= TEXT_MEMO_SIZE)):
            self.skip = self.backoff
            self.backoff = min(self.backoff * 2, 64)
        else:
            self.backoff = 1

    def matched(self, text: str, start: int, end: int, base: int, n: int) -> Iterator[tuple[int, str]]:
        """:meth:`block` with the block regex."""
        if n > MAX_BLOCK_LINES:  # many short lines: a block's columns stay a few MiB
            step = max(1, (end - start) * MAX_BLOCK_LINES // n)
            while start < end:
                cut = text.rfind("\n", start, min(end, start + step)) + 1
                if cut <= start:
                    cut = text.index("\n", start) + 1
                part = text.count("\n", start, cut)
                yield from self.matched(text, start, cut, base, part)
                base += part
                start = cut
            return
        columns = self.columns(text, start, end, n) if self.texts is not None and self.scan.sink is None else None
        if columns is None:  # no patterns, or --events
            yield from enumerate(_lines(text[start:end]), base + 1)
            return
        threads, keys = columns
        lines = _Lines(text, start, end, n)
        unmatched = list(compress(range(n), map(not_, keys))) if "" in keys else []
        i = 0
        u = 0
        while i < n:
            if u < len(unmatched) and unmatched[u] == i:
                yield base + i + 1, lines[i]
                i += 1
                u += 1
                continue
            j = unmatched[u] if u < len(unmatched) else n  # the stretch of matched lines [i, j)
            if j - i <= 2:
                for k in range(i, j):
                    yield base + k + 1, lines[k]
                i = j
                continue
            yield from self.stretch(threads, keys, lines, base, i, j)
            i = j

    @staticmethod
    def columns(text: str, start: int, end: int, n: int) -> tuple[list[str], list[str]] | None:
        """The threads and the texts after the timestamps of the ``n`` lines of
        ``text[start:end]`` (:data:`LINE_RE`), or None if a match spanned lines.

        The collector is paused meanwhile (the module's note on the collector): ``findall``'s
        tuple per line is freed, as two columns of strings, before it could look at it."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            threads = one_thread(text, start, end, n)
            if threads is not None:
                keys = TEXT_RE.findall(text, start, end)
                if len(keys) == n:
                    return threads, keys
                del keys
            found = LINE_RE.findall(text, start, end)
            if len(found) != n:  # a line without a colon: a match ran into the next line
                del found  # (one block's copies at a time)
                found = SAFE_LINE_RE.findall(text, start, end)
                if len(found) != n:
                    return None
            return list(map(_THREAD, found)), list(map(_KEY, found))
        finally:
            if enabled:
                gc.enable()

    def stretch(self, threads: list[str], keys: list[str], lines: _Lines, base: int, i: int,
                j: int) -> Iterator[tuple[int, str]]:
        """Lines ``[i, j)`` of a block, all matched: the first and last, and the lines whose
        text is not a plain counted event, go to the per-line scan; the rest is counted here."""
        scan = self.scan
        yield base + i + 1, lines[i]  # the per-line scan drops a held malformed line, resolves
        i += 1
        end = j - 1  # the last line goes to the per-line scan too (the line before the next)
        seen: tuple[Any, ...] = ()  # the pending exits ``waits`` was computed for
        waits: list[int] = []
        while i < end:
            stop_at = end
            if scan.pending:  # an x86 exit waits for its fault event: the per-line scan pairs them
                if tuple(scan.pending) != seen:
                    seen = tuple(scan.pending)
                    waits = self.waiting(threads, i, end)
                w = bisect_left(waits, i)
                if w < len(waits):
                    stop_at = waits[w]
                    if stop_at == i:
                        yield base + i + 1, lines[i]
                        i += 1
                        continue
            if self.changed():
                self.reset()
            start = i
            tids = self.classify(keys[i:stop_at])
            if tids is None:  # too many distinct texts for the memo: the per-line scan
                for k in range(i, end):
                    yield base + k + 1, lines[k]
                i = end
                break
            t_slow = self.t_slow
            slow = []
            if self.slow_texts or 0 in tids:  # some text here may be one the per-line scan must see
                slow = list(compress(range(i, stop_at), map(t_slow.__getitem__, tids)))
            s = 0
            while i < stop_at:
                stop = slow[s] if s < len(slow) else stop_at
                if stop > i:
                    if not self.count(threads, tids[i - start:stop - start], base, i, stop):
                        for k in range(i, stop):
                            yield base + k + 1, lines[k]
                    i = stop
                if i >= stop_at:
                    break
                yield base + i + 1, lines[i]  # a slow line, then the next line too (held, prev)
                i += 1
                s += 1
                if i < end:
                    yield base + i + 1, lines[i]
                    i += 1
                    s = bisect_left(slow, i, s)
                if scan.pending:
                    break  # an exit may wait for a fault event on a thread here
                if self.changed():  # judge the rest again
                    self.reset()
                    break
        for k in range(max(i, j - 1), j):
            yield base + k + 1, lines[k]

    def waiting(self, threads: list[str], i: int, end: int) -> list[int]:
        """The lines of ``[i, end)`` on a thread an exit waits on for its fault event
        (``scan.pending``, by thread as :func:`kvmcore.cli.trace_input.thread_of` names it)."""
        pending = self.scan.pending
        threads = threads[i:end]
        waiting = set()
        for thread in set(threads):
            cut = thread.find("[")
            name = " ".join(thread[:cut].split()) if cut > 0 else ""
            if (name or "(no thread)") in pending:
                waiting.add(thread)
        if not waiting:
            return []
        return list(compress(range(i, end), map(waiting.__contains__, threads)))

    # -- verdicts --------------------------------------------------------------------------------
    def changed(self) -> bool:
        """The resolver cache entries of the pattern events are not the ones the texts were
        judged with (an arch was dropped, or an event newly resolved): forget the verdicts."""
        cache = self.scan.resolver.cache
        now = tuple(cache.get(e, _NONE) for e in self.events)
        if len(now) == len(self.snapshot) and all(map(is_, now, self.snapshot)):
            return False
        self.snapshot = now
        return True

    def classify(self, seg: list[str]) -> list[int] | None:
        """The text ids of ``seg``, judging the texts not judged yet (0: not judged, its arch is
        not known yet); None when it holds more distinct texts than the memo."""
        tid_of = self.tid_of
        tids = list(map(tid_of.get, seg, repeat(0)))
        if 0 not in tids:
            return tids
        new = list(dict.fromkeys(compress(seg, map(not_, tids))))
        if len(tid_of) + len(new) > TEXT_MEMO_SIZE:
            distinct = dict.fromkeys(seg)
            if len(distinct) > TEXT_MEMO_SIZE:
                return None
            self.reset()
            tid_of = self.tid_of
            new = list(distinct)
        judged = False
        judge = self.judge
        ids = first = len(self.t_slow)
        slow_add, fault_add, class_add = self.t_slow.append, self.t_fault.append, self.t_class.append
        sig_add, vf_add = self.t_sig.append, self.t_vf.append
        unreserved = self.unreserved
        enabled = gc.isenabled()
        gc.disable()  # the module's note on the collector
        try:
            for key in new:
                verdict = judge(key)
                if verdict.__class__ is str:  # not a counted event
                    if verdict is _UNRESOLVED:
                        continue
                    judged = True
                    if verdict is _NOT_CANONICAL:
                        if len(key) <= MAX_NOT_CANONICAL:
                            tid_of[key] = 1
                            self.slow_texts += 1
                        continue
                    verdict = (-1, 0, None)
                    self.slow_texts += 1
                judged = True
                tid_of[key] = ids
                cid, sig, vf = verdict
                slow_add(cid < 0)
                fault_add(sig > 0)
                class_add(cid)
                sig_add(sig)
                vf_add(vf)
                if cid >= 0:
                    unreserved.add(ids)
                    if not sig:
                        self.count_only = True
                    elif vf is not None:
                        self.vfields = True
                ids += 1
        finally:
            if enabled:
                gc.enable()
        self.new_texts += ids - first
        self.mixed = self.mixed or len(self.class_info) > 1
        if ids - first == len(seg):  # every text new, each once (texts that never repeat)
            return list(range(first, ids))
        return list(map(tid_of.get, seg, repeat(0))) if judged else tids

    def judge(self, key: str) -> Any:
        """What the per-line scan does with a line whose text after the timestamp is ``key``:
        ``(class id, fault signature id or 0, vcpu field)`` for an event it only counts or a
        guest fault it decodes (through the memo), else :data:`_SLOW` (or :data:`_UNRESOLVED`:
        the event's arch is not known yet, or :data:`_NOT_CANONICAL`)."""
        m = self.text_match(key) if self.text_match is not None else None
        if m is None:
            return _NOT_CANONICAL
        event, _, text = m[1].partition(":")
        scan = self.scan
        entry = scan.resolver.cache.get(event, _NONE)
        if entry is _NONE:
            return _UNRESOLVED
        if not entry:  # None: no arch decodes the event (the generic ones are judged by kind below)
            return _SLOW
        try:
            ev = entry[1](event, text.strip())
        except Exception:  # noqa: BLE001 - the per-line scan reports it as it always did
            return _SLOW
        if ev is None:
            return _SLOW
        label, kind, raw = entry[0], ev.kind, ev.raw
        if kind == "guest_fault" and raw is not None and entry[2] is not None:
            try:
                memo_key = (label, *raw.items())
                fields = ev.fields
                pc = fields.get("pc")
                vf = fields.get("vcpu")
                # registers (so the decode) and pc: what makes two faults the same (an id for it)
                sig_key = (memo_key, pc)
                sig = self.sig_ids.get(sig_key)
                if vf is not None:
                    hash(vf)
            except (TypeError, AttributeError):  # unhashable values: the per-line scan copes
                return _SLOW
            if sig is not None:  # another text of the same registers and pc
                self.shared_sigs = True
                return (self.class_id(label, kind, self.sig_info[sig][0][0], entry), sig, vf)
            memo = scan.memo
            hit = memo.get(memo_key)
            if hit is None:
                hit = scan.memo_old.get(memo_key) if scan.memo_old else None
                if hit is None:
                    try:
                        decoded = entry[2](entry[3], raw)
                    except Exception:  # noqa: BLE001 - undecodable: the per-line scan counts it
                        return _SLOW
                    hit = scan.make_hit(label, decoded, memo_key)
                scan.remember(memo_key, hit)
            sig = self.sig_ids[sig_key] = len(self.sig_info)
            self.sig_info.append((hit, pc))
            return (self.class_id(label, kind, hit[0], entry), sig, vf)
        if kind in ("guest_fault_exit", "guest_fault_ambiguous") and raw is not None and entry[2] is not None:
            return _SLOW
        if kind == "mmio" or event == "kvm_userspace_exit":
            return _SLOW
        return (self.class_id(label, kind, None, entry), 0, None)

    def class_id(self, label: str, kind: str, key: Any, entry: Any) -> int:
        """A small id for (label, kind, fault key): what a line adds to the summary's tables."""
        ident = (label, kind, key, id(entry))
        cid = self.class_ids.get(ident)
        if cid is None:
            cid = self.class_ids[ident] = len(self.class_ids)
            self.class_info[cid] = (label, kind, key, entry)
        return cid

    # -- counting --------------------------------------------------------------------------------
    def count(self, threads: list[str], tids: list[int], base: int, i: int, stop: int) -> bool:
        """Count lines ``[i, stop)`` (``tids``: their text ids, every one a plain counted event)
        as the per-line scan would; False, with nothing counted, when the result would depend on
        the order of the lines (then the per-line scan counts them).

        The counts themselves are deferred: each text id's lines are counted in C into
        ``self.pending`` and folded into the summary's tables by :meth:`flush` (at the end, before
        the memo forgets the ids, and before the hot-gfn counter turns into a sketch, which
        reads the counts). What depends on order is done now: a text id counted for the first
        time reserves its table entries (fault kind, arch/kind, pc, gfn, memslot) in the order
        the lines come, so the tables keep the per-line scan's insertion order and caps; the
        fault-loop runs are followed line by line (:meth:`runs`).
        """
        scan = self.scan
        info = self.class_info
        t_class = self.t_class
        fresh = None
        if self.unreserved:  # ids counted for the first time here, in the order they come
            first = self.unreserved.intersection(tids)
            if first:
                fresh = list(filter(first.__contains__, dict.fromkeys(tids)))
        if self.mixed:  # more than one class of lines so far: which are here
            classes = set(map(t_class.__getitem__, tids))
        else:
            classes = {t_class[tids[0]]}
        labels = {info[c][0] for c in classes if info[c][2] is not None}
        if len(labels) > 1:
            return False
        has_faults = bool(labels)
        label = labels.pop() if labels else ""
        ftids = tids
        fpos: list[int] | None = None
        threads_of: Any = threads[i:stop]
        vks: list[Any] = []
        if has_faults:
            if self.count_only and any(info[c][2] is None for c in classes):
                mask = list(map(self.t_fault.__getitem__, tids))  # events only counted among them
                fpos = list(compress(range(len(tids)), mask))
                ftids = list(compress(tids, mask))
                threads_of = list(compress(threads_of, mask))
            state = scan.labels.get(label)
            if state is not None and state[1].sketch is not None:
                return False  # a Space-Saving sketch counts in order: the per-line scan
            known: Any = state[1].counts if state is not None else {}
            if fresh and len(known) + len(fresh) > scan.memory // EXACT_ENTRY_BYTES:
                # the hot-gfn counter must stay exact through these faults: count their new gfns
                sig_info, t_sig = self.sig_info, self.t_sig
                new = {sig_info[t_sig[t]][0][1] for t in fresh if self.t_fault[t]}.difference(known)
                if len(known) + len(new) > scan.memory // EXACT_ENTRY_BYTES:
                    return False
            if self.vfields:  # the event names its vCPU (x86 "vcpu"), else the thread does
                vks = list(map(self.t_vf.__getitem__, ftids))
                if None in vks:
                    by_thread = self.threads
                    vks = [f if f is not None else by_thread[t] for f, t in zip(vks, threads_of, strict=True)]
                order = list(dict.fromkeys(vks))
            else:
                vcpu_of = self.threads
                names = {vcpu_of[t] for t in set(threads_of)}
                if len(names) == 1:  # one vCPU (its lines may differ in the CPU they ran on)
                    order = list(names)
                else:
                    vks = list(map(vcpu_of.__getitem__, threads_of))
                    order = list(dict.fromkeys(vks))
            runs = state[0] if state is not None else {}
            if len(order) > scan.max_names or len(runs) + sum(1 for v in order if v not in runs) > scan.max_names:
                return False
        # -- from here on nothing can fail: count --
        scan.fast_events += stop - i
        if has_faults:
            state = scan.labels.get(label) or scan._per_label(label)
            state[1].flush = self.flush
        if fresh:
            self.reserve(fresh)
        _count_elements(self.pending, tids)
        if not has_faults:
            return True
        if len(state[1].counts) * 2 > state[1].limit:
            self.flush()  # near the exact counter's budget: keep nothing pending
        if self.shared_sigs:  # equal signatures, not only equal texts, make a run
            self.runs(state[0], vks, order, list(map(self.t_sig.__getitem__, ftids)), fpos, base + i + 1,
                      self.sig_info.__getitem__)
        else:  # a signature per text: the text ids are as good, and not mapped line by line
            self.runs(state[0], vks, order, ftids, fpos, base + i + 1, self.text_sig)
        return True

    def reserve(self, fresh: list[int]) -> None:
        """The table entries the texts ``fresh`` count into, made (count 0) where the per-line
        scan would make them at each text's first line: insertion order and the PC cap follow."""
        self.unreserved.difference_update(fresh)
        scan = self.scan
        summary = scan.summary
        t_class, t_fault, t_sig, sig_info = self.t_class, self.t_fault, self.t_sig, self.sig_info
        classes = self.reserved_classes
        max_pcs = scan.max_pcs
        with_slots = scan.with_slots
        last = None
        for tid in fresh:
            cid = t_class[tid]
            if cid != last:
                last = cid
                label, kind, key, entry = self.class_info[cid]
                if cid not in classes:  # a kind of line first counted here
                    classes.add(cid)
                    kinds = summary.by_arch_kind.get(label)
                    if kinds is None:
                        kinds = summary.by_arch_kind[label] = {}
                    kinds.setdefault(kind, 0)
                    if key is not None:
                        summary.faults.setdefault(key, 0)
                state = scan.labels.get(label)
                if state is not None:
                    counts, pcs = state[1].counts, state[2]
            if not t_fault[tid]:
                continue
            hit, pc = sig_info[t_sig[tid]]
            counts.setdefault(hit[1], 0)
            if pc is not None and pc not in pcs and len(pcs) < max_pcs:
                pcs[pc] = 0
            if with_slots:
                scan.count_slot(label, entry, hit[1], 0)

    def flush(self) -> None:
        """Fold the pending counts of text ids into the summary's tables."""
        pending = self.pending
        if not pending:
            return
        scan = self.scan
        summary = scan.summary
        info = self.class_info
        tids = list(pending)
        ns = list(pending.values())
        cids = list(map(self.t_class.__getitem__, tids))
        per_class: dict[int, int] = {}
        if len(set(cids)) == 1:  # one kind of line (the usual case)
            per_class[cids[0]] = sum(ns)
        else:
            for cid, n in zip(cids, ns, strict=True):
                per_class[cid] = per_class.get(cid, 0) + n
        if self.count_only:  # only the guest faults count into the per-arch tables
            mask = list(map(self.t_fault.__getitem__, tids))
            tids, ns, cids = list(compress(tids, mask)), list(compress(ns, mask)), list(compress(cids, mask))
        sig_info, t_sig = self.sig_info, self.t_sig
        last = None
        for tid, n, cid in zip(tids, ns, cids, strict=True):
            if cid != last:
                label, _, _, entry = info[cid]
                state = scan.labels[label]
                counts, pcs = state[1].counts, state[2]
                last = cid
            hit, pc = sig_info[t_sig[tid]]
            counts[hit[1]] += n
            if pc in pcs:
                pcs[pc] += n
            if scan.with_slots:
                scan.count_slot(label, entry, hit[1], n)
        for cid, n in per_class.items():
            label, kind, key, _ = info[cid]
            summary.by_arch_kind[label][kind] += n
            if key is not None:
                summary.faults[key] += n
        pending.clear()

    def text_sig(self, tid: int) -> tuple[Any, Any]:
        """``(hit, pc)`` of the fault signature of a guest fault's text id."""
        return self.sig_info[self.t_sig[tid]]

    def runs(self, runs: dict[Any, list[Any]], vks: list[Any], order: list[Any], fsigs: Any,
             fpos: list[int] | None, first_line: int, sig_of: Any) -> None:
        """The per-vCPU runs of identical faults (fault loops) over these faults, as the
        per-line scan's run tracking would leave them; loops that end here are closed in line
        order (``close_run``'s keep-the-longest choice depends on it). ``fsigs``: a fault
        signature per fault (equal for the same registers and pc), ``sig_of`` its ``(hit, pc)``."""
        closes: list[tuple[int, Any, list[Any]]] = []
        nf = len(fsigs)
        for v in order:
            if len(order) == 1:
                where: list[int] | None = None
                seq = fsigs
            else:
                where = list(compress(range(nf), map(eq, vks, repeat(v))))
                seq = list(map(fsigs.__getitem__, where))
            m = len(seq)

            def line_of(t: int, where: list[int] | None = where) -> int:
                q = where[t] if where is not None else t
                return first_line + (fpos[q] if fpos is not None else q)

            starts: Any
            lengths: Any
            if any(map(eq, seq, islice(seq, 1, None))):
                starts = [0, *compress(range(1, m), map(ne, seq[1:], seq[:-1]))]
                ends = [*starts[1:], m]
                lengths = list(map(sub, ends, starts))
            else:  # no fault repeats the one before it (the usual case): runs of one
                starts = range(m)
                lengths = _Ones(m)
            run = runs.get(v)
            total = run[5] if run is not None else 0
            hit, pc = sig_of(seq[0])
            raw = _raw(hit)
            first = 0
            if run is not None and (run[0] is hit or run[0] == hit) and run[4] == pc:
                before = run[1]
                run[1] = before + lengths[0]
                if before < 2 <= run[1]:
                    run[3] = raw
                if len(starts) == 1:
                    run[5] = total + m
                    continue
                if run[1] >= self.scan.loop_min:
                    closes.append((line_of(starts[1]), v, run))
                first = 1
            elif run is not None and run[1] >= self.scan.loop_min:
                closes.append((line_of(0), v, run))
            last = len(starts) - 1
            for s in () if isinstance(lengths, _Ones) else compress(
                    range(first, last), map(ge, lengths[first:last], repeat(self.scan.loop_min))):
                hit, pc = sig_of(seq[starts[s]])
                raw = _raw(hit)
                closes.append((line_of(starts[s + 1]), v, [hit, lengths[s], line_of(starts[s]), raw, pc, 0]))
            hit, pc = sig_of(seq[starts[last]])
            raw = _raw(hit)
            runs[v] = [hit, lengths[last], line_of(starts[last]), raw, pc, total + m]
        closes.sort(key=itemgetter(0))
        for _, v, run in closes:
            self.scan.close_run(v, run)


class _Ones:
    """``[1] * n`` without the list: the run lengths of a sequence with no repeats."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __getitem__(self, k: int) -> int:
        return 1


class _Lines:
    """The lines of ``text[start:end]``, split only if a line other than the first and the last
    is asked for (a block of canonical lines hands only those two to the per-line scan)."""

    __slots__ = ("text", "start", "end", "n", "split")

    def __init__(self, text: str, start: int, end: int, n: int) -> None:
        self.text = text
        self.start = start
        self.end = end
        self.n = n
        self.split: list[str] | None = None

    def __getitem__(self, k: int) -> str:
        if self.split is None:
            text, start, end = self.text, self.start, self.end
            if k == 0:
                return text[start:text.index("\n", start) + 1]
            if k == self.n - 1:
                return text[max(start, text.rfind("\n", start, end - 1) + 1):end]
            self.split = _lines(text[start:end])
        return self.split[k]


def one_thread(text: str, start: int, end: int, n: int) -> list[str] | None:
    """The threads column of the ``n`` lines of ``text[start:end]`` when every line begins with
    the first line's text up to and including its first ``[`` (one tracing thread: ``comm-pid
    [cpu]``, whatever the CPU), else None.

    That prefix then stands for each line's thread: everything the fast path reads of a thread
    is the part before its first ``[`` (the vCPU it names, :class:`_ThreadVcpus`; the thread an
    x86 exit waits on, :meth:`Blocks.waiting`), and a line starting with the prefix has its
    first ``[`` at the prefix's end. The prefix holds no ``:``, so a line's timestamp (a space,
    digits, a colon) lies after it, in what :data:`LINE_RE` would put after the thread. One
    ``count`` of the prefix over the block (in C) replaces a thread group per line."""
    first_end = text.find("\n", start, end)
    cut = text.find("[", start, first_end)
    if cut < 0:
        return None
    prefix = text[start:cut + 1]
    if ":" in prefix:
        return None
    last = text.rfind("\n", start, end - 1) + 1  # the last line's start (start if n == 1)
    if not text.startswith(prefix, max(start, last)):  # the cheap test first: another thread
        return None
    if n > 1 and text.count("\n" + prefix, start, end) != n - 1:
        return None
    return [prefix] * n


def _raw(hit: tuple[Any, ...]) -> dict[str, Any]:
    """The registers of a hit (``(label, *raw.items())`` is its third item) as the raw mapping."""
    return dict(hit[2][1:])


def _lines(block: str) -> list[str]:
    """The lines of ``block`` (which ends with a newline) as iterating a text file gives them."""
    parts = block.split("\n")
    parts.pop()
    return [p + "\n" for p in parts]
