"""Hook tracing: every hook call, nested, with the plugin that answered and its result.

pluggy's own tracing (``pm.enable_tracing()``) prints each call with its arguments and the
final result, indented by nesting. It does not say which implementation answered (pluggy
#485), so while tracing is on each implementation is also wrapped to print its plugin name
and what it returned, on the same tracer and indentation. Nothing is installed while
tracing is off: the fast path stays as it is.

Turn it on with ``kvmcore.enable_hook_tracing(write=sys.stderr.write)`` or
``KVMCORE_TRACE_HOOKS=1`` in the environment (trace to stderr).
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvmcore.plugin.loader import Arch

_writer: Callable[[str], Any] | None = None
_arches: weakref.WeakSet[Arch] = weakref.WeakSet()


def enable_hook_tracing(write: Callable[[str], Any] | None = None) -> Callable[[], None]:
    """Trace every hook call of every arch, loaded now or later, to ``write``.

    :param write: where the text goes (default ``sys.stderr.write``).
    :return: a function that turns tracing off again.
    """
    global _writer
    _writer = write or sys.stderr.write
    for arch in list(_arches):
        _install(arch, _writer)
    return disable_hook_tracing


def disable_hook_tracing() -> None:
    """Turn hook tracing off for every arch."""
    global _writer
    _writer = None
    for arch in list(_arches):
        _uninstall(arch)


def on_arch_built(arch: Arch) -> None:
    """Called by the loader for every new Arch: apply the current tracing state."""
    _arches.add(arch)
    if _writer is None and os.environ.get("KVMCORE_TRACE_HOOKS", "").strip() not in ("", "0"):
        enable_hook_tracing(sys.stderr.write)
    elif _writer is not None:
        _install(arch, _writer)


def _install(arch: Arch, write: Callable[[str], Any]) -> None:
    if arch._tracing_undo is not None:
        _uninstall(arch)
    pm = arch.pm
    pm.trace.root.setwriter(write)
    hooktrace = pm.trace.root.get("hook")
    restore: list[tuple[Any, Any]] = []
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name, None)
        if caller is None or not hasattr(caller, "get_hookimpls"):
            continue
        for impl in caller.get_hookimpls():
            restore.append((impl, impl.function))
            impl.function = _traced(impl, hooktrace)
    undo_pluggy = pm.enable_tracing()

    def undo() -> None:
        undo_pluggy()
        for impl, function in restore:
            impl.function = function
        pm.trace.root.setwriter(None)

    arch._tracing_undo = undo
    arch._bind()


def _uninstall(arch: Arch) -> None:
    undo = arch._tracing_undo
    if undo is not None:
        arch._tracing_undo = None
        undo()
        arch._bind()


def _traced(impl: Any, hooktrace: Any) -> Callable[..., Any]:
    """Wrap one implementation so the tracer says which plugin ran and what it gave."""
    function = impl.function
    plugin = impl.plugin_name
    if impl.wrapper or impl.hookwrapper:

        def traced_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            hooktrace(f"wrapper {plugin}: enter")
            result = yield from function(*args, **kwargs)
            hooktrace(f"wrapper {plugin}: leave -> {result!r}")
            return result

        return traced_wrapper

    def traced_impl(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if result is None:
            hooktrace(f"{plugin}: no answer (None)")
        else:
            hooktrace(f"answered by {plugin}: {result!r}")
        return result

    return traced_impl
