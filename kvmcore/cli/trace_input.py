"""Trace text as people paste it: line handling for ``kvmcore replay`` (the plugins parse the
event text, this module only finds it).

A line reaches the replay as ``(lineno, line, match)``: ``match`` finds ``[system:]event:`` and
where its text starts, or is None for a line with no event. Accepted shapes:

* the ftrace ``trace`` file and ``trace-cmd report``: ``comm-pid [cpu] flags timestamp: event: text``;
* ``perf script``: ``comm pid [cpu] timestamp: system:event: text``;
* a timestamp alone (``1234.5678: kvm_exit: ...``) or a bare ``event: text`` for event names
  that are KVM tracepoints (``kvm...``, ``..._fault``: ``kvm_exit``, ``fast_page_fault``; not
  any ``word_word:``, which is too often a log field such as ``esr_el1:``);
* tabs and repeated spaces anywhere.

Mail text is undone too: quoting (``> ``, ``>> ``, ``> > ``) is stripped (:func:`strip_quote`),
and a line a mail client wrapped is rejoined with the event line before it when the continuation
cannot stand alone (no event, not a header, not blank, not a kernel log line: :func:`continuation`)
*and* a parser accepts the joined text. The replay's scan loop does this on its slow path only
(lines with no event in them), so a clean trace pays nothing for it; ``--no-unwrap`` turns it off.

Everything echoed back to a terminal goes through :func:`echo`: control characters become
``\\xNN`` escapes and the text is cut to a readable length.
"""

from __future__ import annotations

import re

#: ``<timestamp>: [system:]event: `` as ftrace, trace-cmd and perf print it (the fast path).
EVENT_RE = re.compile(r"\s(\d+(?:\.\d+)?):\s+(?:(\w+):)?(\w+):\s*")
#: A line that starts with the timestamp, or with the event itself (no prefix at all).
_TS_START_RE = re.compile(r"\s*(\d+(?:\.\d+)?):\s+(?:(\w+):)?(\w+):\s*")
_BARE_RE = re.compile(r"\s*(?P<ts>)(?:(\w+):)?(kvm[a-z0-9_]*|[a-z0-9_]*_fault):(?:\s+|$)")
#: Mail quoting: any run of ``>`` with optional spaces, at the start of the line.
_QUOTE_RE = re.compile(r"[ \t]*>[> \t]*")
#: Kernel log line prefixes (dmesg): ``[  123.456789] `` or ``<4>[ 12.3] ``.
_DMESG_RE = re.compile(r"\s*(?:<\d+>)?\[\s*\d+\.\d+\]")
HEADER_PREFIXES = ("#", "cpus=", "version =", "version=", "CPU ", "CPU:")
#: Lines shorter than this were not wrapped by a mail client (they wrap at 72-80 columns).
MIN_WRAPPED = 60
#: A rejoined line longer than this is not a wrapped event line (memory stays bounded).
MAX_JOINED = 4096
#: A line longer than this is neither a trace event (the kernel prints an event into a
#: ``trace_seq`` of 8 KiB, include/linux/trace_seq.h TRACE_SEQ_SIZE: "the max size the output of
#: a trace event may be") nor a kernel-log line (under 1 KiB): it is skipped before any search
#: or copy of its text.
MAX_LINE = 1 << 16
#: At most this many lines are joined into one event line.
MAX_PARTS = 5
#: Echoed input is cut to this many characters.
ECHO_LIMIT = 160
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class Match:
    """Where the event is in a line: ``event`` (the name), ``system`` (``kvm``, or None),
    ``timestamp`` (text, or None) and ``end`` (where the event's text starts)."""

    __slots__ = ("event", "system", "timestamp", "_start", "_end")

    def __init__(self, m: re.Match[str]) -> None:
        self.timestamp = m[1] or None
        self.system = m[2]
        self.event = m[3]
        self._start = m.start()
        self._end = m.end()

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    def __getitem__(self, i: int) -> str | None:
        return (None, self.timestamp, self.system, self.event)[i]


def find_event(line: str) -> re.Match[str] | Match | None:
    """The event in ``line``: the fast ``EVENT_RE`` first, then a leading timestamp, then a bare
    tracepoint-looking name. Both results answer ``m[3]`` (event) and ``m.end()``."""
    m = EVENT_RE.search(line)
    if m is not None:
        return m
    m = _TS_START_RE.match(line) or _BARE_RE.match(line)
    return Match(m) if m is not None else None


def strip_quote(line: str) -> tuple[str, bool]:
    """``line`` without mail quoting, and whether it had some."""
    if ">" not in line[:16]:
        return line, False
    m = _QUOTE_RE.match(line)
    if m is None:
        return line, False
    return line[m.end():], True


def is_header(stripped: str) -> bool:
    return stripped.startswith(HEADER_PREFIXES)


def is_log_line(line: str) -> bool:
    """A kernel log line (``[  12.345678] ...``): stands alone, never a wrapped tail."""
    return _DMESG_RE.match(line) is not None


def thread_of(line: str, m: re.Match[str] | Match) -> str | None:
    """The tracing thread (``comm-pid`` or perf's ``comm pid``) before ``[cpu]``, or None."""
    head = line[: m.start()]
    cut = head.find("[")
    if cut <= 0:
        return None
    thread = " ".join(head[:cut].split())
    return thread or None


def echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` safe to print: control characters escaped (``\\x1b`` not an escape sequence),
    cut to ``limit`` characters with ``...``."""
    end = len(text)
    while end and text[end - 1] in "\r\n":  # rstrip("\r\n") without a copy of a long text
        end -= 1
    text = text[: min(end, limit * 4)]
    text = _CONTROL.sub(lambda c: f"\\x{ord(c[0]):02x}", text.replace("\t", " "))
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def continuation(prev_line: str, prev_m: re.Match[str] | Match, line: str) -> str | None:
    """``prev_line`` with ``line`` appended, when ``line`` could be the tail a mail client cut
    off ``prev_line`` (an event line of wrapping length, or one ending in a quoted-printable soft
    line break ``=``; ``line`` not blank, not a header, not a kernel log line), else None. The
    caller still checks that a parser accepts the result."""
    tail = line.strip()
    first = prev_line.rstrip()
    soft = first.endswith("=")  # quoted-printable: "=" ends a line the mailer broke, no space
    if not tail or is_header(tail) or is_log_line(line) or (len(first) < MIN_WRAPPED and not soft):
        return None
    if len(first) + len(tail) > MAX_JOINED:
        return None
    return first[:-1] + tail if soft else first + " " + tail


#: What an old trace-cmd prints for a format it cannot read (libtraceevent), before the text.
_ARTIFACT_RE = re.compile(r"""CAN'T FIND FIELD "[^"]*"|<CANT FIND FIELD [^>]*>""")


def clean_artifacts(text: str) -> str:
    """``text`` without trace-cmd's ``CAN'T FIND FIELD "rip"<CANT FIND FIELD exit_code>`` noise."""
    return _ARTIFACT_RE.sub("", text).strip()


__all__ = ["ECHO_LIMIT", "EVENT_RE", "HEADER_PREFIXES", "Match", "clean_artifacts", "continuation", "echo", "find_event",
           "is_header", "is_log_line", "strip_quote", "thread_of"]
