"""Isolating hook calls: which exceptions a hook may raise, and the PluginError for the rest.

A plugin is third-party code: whatever it raises, returns or breaks in one call must end as
an error naming it and the hook, never as a traceback that takes the other arches down. The
facade (``kvmcore.Arch``) and the plugin manager's ``_hookexec`` turn an implementation's
unexpected exception into :class:`kvmcore.PluginError` with :func:`hook_error`; the facade
checks results with :func:`short_repr` in its messages. See docs/robustness.md.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

from kvmcore._types import ArchInfo
from kvmcore.errors import PluginError

#: Exceptions a hook's implementations may raise for bad *input*, besides kvmcore's own errors
#: (``KvmcoreError``: ``DecodeError``, ``KvmError``...): they reach the caller unchanged, as the
#: hookspecs document. Anything else an implementation raises is a :class:`PluginError`.
HOOK_EXCEPTIONS: dict[str, tuple[type[BaseException], ...]] = {
    "configure_vm": (ValueError, TypeError),  # a bad setting, named (VM() reports both alike)
    "encode_fault": (ValueError, NotImplementedError),  # an access the arch cannot express
    "parse_trace_event": (ValueError,),  # a malformed trace line
    "decode_fault_batch": (ImportError,),  # numpy is not installed (kvmcore[arrow])
}

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 2


def short_repr(value: Any) -> str:
    """``type value`` for a message, cut short (a plugin's garbage may be huge)."""
    try:
        text = _repr.repr(value)
    except Exception:  # a plugin object whose __repr__ raises
        text = "<unprintable>"
    return f"{type(value).__name__} {text}"


def hook_error(hook: str, exc: BaseException | None, impls: Iterable[Any], default: str, problem: str | None = None) -> PluginError:
    """The :class:`PluginError` for a failed call of ``hook``.

    The plugin blamed is the one whose implementation (of any hook in ``impls``) is the
    innermost frame of ``exc``'s traceback: the code that raised, or called what raised.
    Without such a frame (a bad result, found after the call) it is ``default``, the arch.
    """
    plugin = default
    if exc is not None:
        codes = {getattr(i.function, "__code__", None): i.plugin_name for i in impls}
        tb = exc.__traceback__
        while tb is not None:
            name = codes.get(tb.tb_frame.f_code)
            if name is not None:
                plugin = name
            tb = tb.tb_next
        if problem is None:
            text = str(exc)
            if len(text) > 300:
                text = text[:297] + "..."
            problem = f"raised {type(exc).__name__}" + (f": {text}" if text else "")
    return PluginError(plugin, hook, problem or "failed")


def check_arch_info(info: ArchInfo) -> str | None:
    """What is wrong with an ``ArchInfo`` an ``arch_info`` hook returned, or ``None``.

    The fields size everything the core allocates per VM (page size, address bits), so they
    are checked before the first VM exists: ``page_shift`` 10..30, ``phys_bits`` above it and
    at most 64 (``gpa_t`` is a ``u64``), names as strings.
    """
    if type(info.name) is not str or not info.name.isidentifier():
        return f"name {short_repr(info.name)}: expected an identifier such as 'arm64'"
    if type(info.page_shift) is not int or not 10 <= info.page_shift <= 30:
        return f"page_shift {short_repr(info.page_shift)}: expected an int from 10 to 30"
    if type(info.phys_bits) is not int or not info.page_shift < info.phys_bits <= 64:
        return f"phys_bits {short_repr(info.phys_bits)}: expected an int above page_shift, at most 64"
    for field in ("registers", "extra_keys", "causes"):
        value = getattr(info, field)
        if not isinstance(value, (tuple, list)) or not all(type(v) is str for v in value):
            return f"{field} {short_repr(value)}: expected a tuple of strings"
    if not isinstance(info.settings, Mapping):
        return f"settings {short_repr(info.settings)}: expected a mapping of setting name to its accepted values"
    for key, values in info.settings.items():
        if type(key) is not str or not isinstance(values, (tuple, list)) or not values:
            return f"settings[{short_repr(key)}] = {short_repr(values)}: expected a non-empty tuple of accepted values"
    if type(info.description) is not str:
        return f"description {short_repr(info.description)}: expected a string"
    return _check_trace_patterns(info.trace_patterns)


def _check_trace_patterns(patterns: Any) -> str | None:
    """``ArchInfo.trace_patterns``: event name -> a regular expression string. Compiled (and
    checked for capturing groups) by ``kvmcore replay`` only, not at every load: see
    :func:`trace_pattern_error`."""
    if not isinstance(patterns, Mapping):
        return f"trace_patterns {short_repr(patterns)}: expected a mapping of event name to a regular expression"
    for event, pattern in patterns.items():
        if type(event) is not str or not event.isidentifier() or type(pattern) is not str:
            return f"trace_patterns[{short_repr(event)}] = {short_repr(pattern)}: expected an event name and a regular expression string"
    return None


def trace_pattern_error(event: str, pattern: str) -> str | None:
    """What is wrong with one ``ArchInfo.trace_patterns`` entry for ``kvmcore replay`` (not a
    regular expression, or capturing groups), or None."""
    try:
        groups = re.compile(pattern).groups
    except re.error as exc:
        return f"trace_patterns[{event!r}]: not a regular expression ({exc})"
    if groups:
        return f"trace_patterns[{event!r}]: has {groups} capturing group(s); use (?:...)"
    return None
