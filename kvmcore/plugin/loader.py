"""Finding, loading and checking arch plugins; the typed facade the core calls hooks through.

Arch plugins come from the entry-point group ``kvmcore.arch`` (the entry-point name is the
arch name), general extensions from ``kvmcore.plugins``; stevedore imports them, one at a
time, so a plugin that fails to import is reported and the others still load.
``importlib.metadata`` supplies what stevedore's cached entry points lack: the distribution
and version, and whether two distributions claim one name.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from kvmcore import hookspecs
from kvmcore._types import ArchInfo, FaultinResult, MemoryFault, TraceEvent
from kvmcore.errors import (
    DecodeError,
    FaultContractError,
    KvmcoreError,
    PluginError,
    PluginLoadError,
)
from kvmcore.plugin.contract import check_fault, check_fault_type
from kvmcore.plugin.isolation import HOOK_EXCEPTIONS, check_arch_info, hook_error, short_repr

if TYPE_CHECKING:
    from kvmcore._access import Access
    from kvmcore._syndrome import Syndrome
    from kvmcore.plugin.status import PluginStatus

#: The core's own hook implementations, registered ``trylast`` in every arch's plugin manager
#: as ``(name, module)``: the model's generic defaults (``kvmcore/kvm/default_hooks.py``, the
#: counterpart of the kernel's ``__weak kvm_arch_*()`` functions). The package's ``__init__``
#: fills it in, so that this machinery never imports the model (see docs/architecture.md).
CORE_PLUGINS: list[tuple[str, Any]] = []

ARCH_GROUP = "kvmcore.arch"
EXTENSION_GROUP = "kvmcore.plugins"
HOOK_NAMES = (
    "arch_info",
    "configure_vm",
    "prepare_memory_region",
    "decode_fault",
    "faultin_pfn",
    "prepare_memory_fault_exit",
    "kvm_arch_prepare_memory_fault_exit",
    "encode_fault",
    "describe_syndrome",
    "parse_trace_event",
    "parse_log_text",
    "decode_fault_batch",
)


class EntryPointInfo(NamedTuple):
    """One entry point with the distribution that declares it.

    A named tuple, not a dataclass: it is defined on every start-up, where a frozen dataclass
    costs several times as much to create (its methods are compiled from source).
    """

    group: str
    name: str
    value: str
    dist: str | None
    version: str | None


def env_flag(name: str) -> bool:
    """Environment variable ``name`` is set to something other than empty, 0, false or no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _plugins_env() -> tuple[set[str] | None, dict[str, str]]:
    """``KVMCORE_PLUGINS``: (the names allowed, or ``None`` for all; name -> distribution picked).

    Comma-separated items: ``NAME`` allows that plugin name (arch or extension) and, once any
    is given, only the names listed; ``NAME=DIST`` picks distribution ``DIST`` for a name two
    distributions claim (and allows it). ``KVMCORE_PLUGINS=arm64=kvmcore-arm64`` picks without
    restricting; ``KVMCORE_PLUGINS=arm64=kvmcore-arm64,x86`` allows only arm64 and x86.
    """
    value = os.environ.get("KVMCORE_PLUGINS")
    if value is None:
        return None, {}
    names: set[str] = set()
    picks: dict[str, str] = {}
    for item in value.split(","):
        name, sep, dist = (part.strip() for part in item.partition("="))
        if sep and name and dist:
            picks[name] = dist
        elif name:
            names.add(name)
    if picks and not names:
        return None, picks
    return names | set(picks), picks


def _allowed() -> set[str] | None:
    """The plugin names ``KVMCORE_PLUGINS`` allows (``None``: every name)."""
    return _plugins_env()[0]


def _normalise_dist(name: str) -> str:
    """A distribution name as packaging compares it (``kvmcore_arm64`` is ``kvmcore-arm64``)."""
    return name.lower().replace("_", "-").replace(".", "-")


def _same_dist(a: str | None, b: str) -> bool:
    return a is not None and _normalise_dist(a) == _normalise_dist(b)


def entry_points(group: str) -> dict[str, list[EntryPointInfo]]:
    """Every entry point of ``group`` by name, de-duplicated per distribution.

    Empty when ``KVMCORE_DISABLE_PLUGIN_AUTOLOAD=1``; filtered by ``KVMCORE_PLUGINS``.
    """
    if env_flag("KVMCORE_DISABLE_PLUGIN_AUTOLOAD"):
        return {}
    allowed = _allowed()
    found: dict[str, list[EntryPointInfo]] = {}
    for info in _installed(group):
        if allowed is not None and info.name not in allowed:
            continue
        same = found.setdefault(info.name, [])
        if not any(o.dist == info.dist and o.value == info.value for o in same):
            same.append(info)
    return found


#: Entry points by group, read once per ``sys.path`` (``reset_plugins()`` forgets them): every
#: distribution's metadata is read for them, which was a fifth of ``kvmcore plugins``'s run
#: when ``load_arch``, ``build_arch`` and ``list_plugins`` each read it again.
_INSTALLED: dict[tuple[str, ...], dict[str, list[EntryPointInfo]]] = {}


def _installed(group: str) -> list[EntryPointInfo]:
    key = tuple(sys.path)
    groups = _INSTALLED.get(key)
    if groups is None:
        _INSTALLED.clear()
        groups = _INSTALLED[key] = {}
    if group not in groups:
        groups.update(_scan({group, ARCH_GROUP, EXTENSION_GROUP} - groups.keys()))
    return groups[group]


def _scan(wanted: set[str]) -> dict[str, list[EntryPointInfo]]:
    """The entry points of the ``wanted`` groups, as ``importlib.metadata.entry_points()`` finds
    them (the first distribution of each name on ``sys.path``, in path order) without parsing
    every distribution's entry points: only those whose ``entry_points.txt`` names a wanted
    group are parsed (``entry_points()`` parsed them all, half of discovery's cost).

    stevedore, which imports the plugins, is handed the same entry points (see
    :func:`_share_with_stevedore`) instead of hashing every ``sys.path`` entry to find them again.
    """
    found: dict[str, list[EntryPointInfo]] = {g: [] for g in wanted}
    points: dict[str, list[importlib.metadata.EntryPoint]] = {g: [] for g in wanted}
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        norm = getattr(dist, "_normalized_name", None) or _normalise_dist(dist.metadata["Name"] or "")
        if norm in seen:  # entry_points() takes each distribution name once: the first on sys.path
            continue
        seen.add(norm)
        text = dist.read_text("entry_points.txt")
        if not text or not any(g in text for g in wanted):
            continue
        name, version = _name_version(dist)
        for ep in dist.entry_points:
            if ep.group in wanted:
                found[ep.group].append(EntryPointInfo(ep.group, ep.name, ep.value, name, version))
                points[ep.group].append(ep)
    _share_with_stevedore(points)
    return found


def _share_with_stevedore(points: dict[str, list[importlib.metadata.EntryPoint]]) -> None:
    """Give stevedore the entry points just found, as its own lookup would list them (one per
    ``(name, value, group)``): ``ExtensionManager.ENTRY_POINT_CACHE`` is where stevedore keeps
    a group's entry points once listed. Without it, its first lookup hashes every ``sys.path``
    entry and reads its on-disk cache, which cost as much as this scan."""
    import stevedore

    cache = getattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", None)
    if not isinstance(cache, dict):  # a stevedore without it finds them itself, as before
        return
    for group, eps in points.items():
        unique: dict[tuple[str, str, str], importlib.metadata.EntryPoint] = {}
        for ep in eps:
            unique.setdefault((ep.name, ep.value, ep.group), ep)
        cache[group] = list(unique.values())


def _name_version(dist: importlib.metadata.Distribution | None) -> tuple[str | None, str | None]:
    """A distribution's ``Name`` and ``Version`` from the header of its core metadata.

    Both are single-line fields of the header (the lines before the first blank line, core
    metadata spec), so a scan of those lines finds them; ``dist.metadata`` would import the
    ``email`` parser and parse every field, a noticeable part of ``kvmcore decode``'s start-up.
    Falls back to ``dist.metadata`` for anything unusual (no METADATA/PKG-INFO file, a field missing).
    """
    if dist is None:
        return None, None
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    fields: dict[str, str] = {}
    for line in text.split("\n", 64)[:64]:
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    if len(fields) == 2:
        return fields["Name"], fields["Version"]
    return dist.metadata["Name"], dist.version


def _import_entry_point(ep: EntryPointInfo) -> Any:
    """Import one plugin through stevedore; raise ``PluginLoadError`` naming it if that fails."""
    import stevedore

    failures: list[BaseException] = []

    def on_failure(_manager: Any, _ep: Any, exc: BaseException) -> None:
        failures.append(exc)

    manager = stevedore.NamedExtensionManager(
        ep.group,
        names=[ep.name],
        on_load_failure_callback=on_failure,
        on_missing_entrypoints_callback=lambda names: None,
    )
    for ext in manager.extensions:
        if ext.entry_point.value == ep.value:
            return ext.plugin
    if failures:
        exc = failures[0]
        raise PluginLoadError(
            f"{_kind(ep.group)} plugin {ep.name!r} (distribution {ep.dist or 'unknown'}) failed to import "
            f"{ep.value}: {type(exc).__name__}: {exc}"
        ) from exc
    raise PluginLoadError(f"{_kind(ep.group)} plugin {ep.name!r}: stevedore did not find {ep.value}")


def _kind(group: str) -> str:
    return "arch" if group == ARCH_GROUP else "extension"


def _single(name: str, candidates: list[EntryPointInfo]) -> EntryPointInfo:
    """The one entry point for arch ``name``: refused when two distributions claim it, unless
    ``KVMCORE_PLUGINS=NAME=DIST`` picks one."""
    pick = _plugins_env()[1].get(name)
    claims = " and ".join(f"{c.dist or '?'} ({c.value})" for c in candidates)
    if pick is not None:
        chosen = [c for c in candidates if _same_dist(c.dist, pick)]
        if len(chosen) != 1:
            raise PluginLoadError(
                f"KVMCORE_PLUGINS picks distribution {pick!r} for arch {name!r}, but it is claimed by: {claims}"
            )
        return chosen[0]
    if len(candidates) > 1:
        raise PluginLoadError(
            f"arch name {name!r} is claimed by more than one distribution: {claims}; "
            f"pick one with KVMCORE_PLUGINS={name}=<distribution>"
        )
    return candidates[0]


# --- the facade ------------------------------------------------------------------------------
class Arch:
    """One loaded architecture: its plugin manager and typed hook calls.

    Core code calls ``arch.decode_fault(vcpu, raw)`` and so on, never ``pm.hook`` directly
    (tox's facade). When a hook has a single implementation and no wrapper and tracing is
    off, the call goes straight to that implementation; otherwise through pluggy.
    """

    #: The hot hooks' positional callers, bound by :meth:`_bind`.
    _decode_fault: Callable[..., Any]
    _faultin_pfn: Callable[..., FaultinResult]
    _prepare_memory_fault_exit: Callable[..., MemoryFault]
    _parse_trace_event: Callable[..., TraceEvent | None]
    #: ``info.fault_type``, what every decoded fault must be exactly (checked on each call).
    _fault_type: Any

    def __init__(self, pm: KvmcorePluginManager, plugin: Any, info: ArchInfo, dist: str | None, version: str | None):
        self.pm = pm
        self.plugin = plugin
        self.info = info
        self.name = info.name
        self.dist = dist
        self.version = version
        self.load_errors: list[str] = []
        self.debug = env_flag("KVMCORE_DEBUG")
        self._tracing_undo: Callable[[], None] | None = None
        self._bind()
        pm.on_change = self._bind

    def __repr__(self) -> str:
        return f"<Arch {self.name} ({self.dist or 'unpublished'} {self.version or ''})>".replace(" )", ")")

    # -- typed hook calls ----------------------------------------------------------------------
    # Every call is isolated: what an implementation raises beyond kvmcore's own errors (and the
    # hook's documented input errors, HOOK_EXCEPTIONS) becomes a PluginError naming the plugin
    # and the hook, and results are type-checked (cheap `type(x) is T` tests on the fast path).
    # The try blocks cost nothing while nothing is raised. Hooks called through pluggy are
    # guarded by KvmcorePluginManager._hookexec; direct callers by _guard or here.
    def decode_fault(self, vcpu: Any, raw: Mapping[str, int]) -> Any:
        fault: Any
        try:
            fault = self._decode_fault(vcpu, raw)
        except KvmcoreError:
            raise
        except Exception as exc:
            error = self._hook_failed("decode_fault", exc, raw)
            if type(error) is TypeError:  # the caller's mistake, not the plugin's
                raise error from None
            raise error from exc
        if (
            type(fault) is not self._fault_type
            or type(fault.gfn) is not int
            or type(fault.write) is not bool
            or type(fault.exec) is not bool
            or type(fault.is_private) is not bool
        ):
            raise self._bad_decode(fault, raw)
        if self.debug:
            check_fault(fault, self.name, self.info.fault_type)
        return fault

    def _bad_decode(self, fault: Any, raw: Mapping[str, int]) -> KvmcoreError:
        """The error for a ``decode_fault`` result that failed the facade's type checks
        (``DecodeError`` when no implementation answered)."""
        if fault is None:
            return DecodeError(f"arch {self.name!r}: no decode_fault implementation answered for {dict(raw)}")
        return self._broken_fault(fault)

    def _hook_failed(self, hook: str, exc: Exception, raw: Any) -> Exception:
        """What ``VCPU.handle_fault`` raises when the direct caller of ``hook`` (``_decode_fault``
        or ``_faultin_pfn``) raised ``exc`` (not a kvmcore error): the same as the facade
        methods :meth:`decode_fault` and :meth:`faultin_pfn` raise."""
        if hook == "decode_fault" and not isinstance(raw, Mapping):  # the caller's mistake
            return TypeError(f"handle_fault: raw must be a mapping of register names to values, got {short_repr(raw)}")
        return self._plugin_error(hook, exc)

    def faultin_pfn(self, vcpu: Any, fault: Any) -> FaultinResult:
        try:
            return self._faultin_pfn(vcpu, fault)
        except KvmcoreError:
            raise
        except Exception as exc:
            raise self._plugin_error("faultin_pfn", exc) from exc

    def prepare_memory_fault_exit(self, vcpu: Any, fault: Any) -> MemoryFault:
        try:
            common = self._prepare_memory_fault_exit(vcpu, fault)
        except KvmcoreError:
            raise
        except Exception as exc:
            raise self._plugin_error("prepare_memory_fault_exit", exc) from exc
        if type(common) is not MemoryFault and common is not None:  # None: kvm_prepare_memory_fault_exit says so
            raise self._plugin_error("prepare_memory_fault_exit", None, f"returned {short_repr(common)}, expected kvmcore.MemoryFault")
        return common

    def kvm_arch_prepare_memory_fault_exit(self, vcpu: Any, fault: Any) -> None:
        self.pm.hook.kvm_arch_prepare_memory_fault_exit(vcpu=vcpu, fault=fault)

    def configure_vm(self, vm: Any, settings: Mapping[str, Any]) -> Any:
        result = self.pm.hook.configure_vm(vm=vm, settings=settings)
        if result is not None and not isinstance(result, Mapping):
            raise self._plugin_error("configure_vm", None, f"returned {short_repr(result)}, expected the settings as a mapping")
        return result

    def prepare_memory_region(self, vm: Any, old: Any, new: Any, change: str) -> None:
        self.pm.hook.prepare_memory_region(vm=vm, old=old, new=new, change=change)

    def encode_fault(self, vcpu: Any, access: Access) -> Mapping[str, int]:
        raw = self.pm.hook.encode_fault(vcpu=vcpu, access=access)
        if raw is None:
            raise NotImplementedError(f"arch {self.name!r} implements no encode_fault hook")
        if not isinstance(raw, Mapping) or not all(
            type(k) is str and (type(v) is int or type(v) is str) for k, v in raw.items()
        ):
            raise self._plugin_error("encode_fault", None, f"returned {short_repr(raw)}, expected a mapping of register names to int (or str) values")
        return raw

    def describe_syndrome(self, vm: Any, raw: Mapping[str, int]) -> Syndrome:
        from kvmcore._syndrome import Syndrome

        syndrome = self.pm.hook.describe_syndrome(vm=vm, raw=raw)
        if syndrome is None:
            raise NotImplementedError(f"arch {self.name!r} implements no describe_syndrome hook")
        if type(syndrome) is not Syndrome or not isinstance(syndrome.fields, Mapping) or not isinstance(syndrome.meanings, Mapping):
            raise self._plugin_error("describe_syndrome", None, f"returned {short_repr(syndrome)}, expected kvmcore.Syndrome with fields and meanings mappings")
        return syndrome

    def parse_trace_event(self, event: str, text: str) -> TraceEvent | None:
        try:
            ev = self._parse_trace_event(event, text)
        except (KvmcoreError, ValueError):  # ValueError: a malformed line (the hook's contract)
            raise
        except Exception as exc:
            raise self._plugin_error("parse_trace_event", exc) from exc
        if ev is not None and (type(ev) is not TraceEvent or type(ev.kind) is not str
                               or not (ev.raw is None or type(ev.raw) is dict or isinstance(ev.raw, Mapping))):
            raise self._plugin_error("parse_trace_event", None, f"returned {short_repr(ev)}, expected None or kvmcore.TraceEvent (kind a str, raw a mapping or None)")
        return ev

    # -- errors --------------------------------------------------------------------------------
    def _plugin_error(self, hook: str, exc: BaseException | None, problem: str | None = None) -> PluginError:
        """The :class:`PluginError` for ``hook``: the plugin whose implementation raised ``exc``
        (found in its traceback), or the arch plugin for a bad result (``problem``)."""
        impls = getattr(self.pm.hook, hook).get_hookimpls() if hasattr(self.pm.hook, hook) else []
        return hook_error(hook, exc, impls, self.pm.arch_label, problem)

    def _broken_fault(self, fault: Any) -> PluginError:
        if type(fault) is not self._fault_type:
            return self._plugin_error("decode_fault", None, f"returned {short_repr(fault)}, expected {self._fault_type.__name__}")
        try:
            check_fault(fault, self.name, self.info.fault_type)
        except FaultContractError as exc:
            return self._plugin_error("decode_fault", None, f"returned a fault that breaks the contract: {exc}")
        return self._plugin_error("decode_fault", None, f"returned {short_repr(fault)}")  # pragma: no cover

    def parse_log_text(self, text: str) -> list[dict[str, Any]]:
        """The register sets the arch finds in one log line (``[]`` for none, or no hook)."""
        found = self.pm.hook.parse_log_text(text=text)
        return list(found) if found else []

    def decode_fault_batch(self, vcpu: Any, columns: Mapping[str, Any]) -> Mapping[str, Any]:
        """The ``decode_fault_batch`` hook; ``NotImplementedError`` if no implementation answers."""
        result = self.pm.hook.decode_fault_batch(vcpu=vcpu, columns=columns)
        if result is None:
            raise NotImplementedError(f"arch {self.name!r} cannot decode this VM's faults in batches")
        from kvmcore.plugin.batch import blank_invalid

        return blank_invalid(result)

    # -- introspection -------------------------------------------------------------------------
    def hooks_of(self, plugin: Any) -> tuple[list[str], list[str]]:
        """(hooks implemented, hooks wrapped) by ``plugin`` in this manager."""
        hooks: list[str] = []
        wrappers: list[str] = []
        for caller in self.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    (wrappers if impl.wrapper or impl.hookwrapper else hooks).append(caller.name)
        return sorted(set(hooks)), sorted(set(wrappers))

    # -- fast path -----------------------------------------------------------------------------
    def _bind(self) -> None:
        """(Re)bind the hot hook callers: the fault path's and replay's."""
        self._fault_type = self.info.fault_type
        for name in ("decode_fault", "faultin_pfn", "prepare_memory_fault_exit", "parse_trace_event"):
            caller = self._caller(name)
            setattr(self, f"_{name}", caller if name in _GUARDED_BY_FACADE else self._guard(name, caller))

    def _guard(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (a caller of hook ``name``) inside the exception guard: for hooks whose
        facade method does not guard the call itself, e.g. hooks added later."""
        passes: tuple[type[BaseException], ...] = (KvmcoreError, *HOOK_EXCEPTIONS.get(name, ()))

        def guard(*args: Any) -> Any:
            try:
                return function(*args)
            except passes:
                raise
            except Exception as exc:
                raise self._plugin_error(name, exc) from exc

        return guard

    def _caller(self, name: str) -> Callable[..., Any]:
        """A positional caller for hook ``name`` that behaves exactly as pluggy's call.

        Through pluggy when tracing or monitoring is on, or an implementation is an old-style
        ``hookwrapper`` or takes keyword defaults. Otherwise the implementations are called
        directly in pluggy's order (last registered first, ``trylast`` after), stopping at the
        first non-``None`` result as a ``firstresult`` hook does, inside the new-style
        ``wrapper=True`` implementations (outermost first), each driven as pluggy drives it.
        """
        caller = getattr(self.pm.hook, name)
        spec_args = tuple(caller.spec.argnames)
        impls = caller.get_hookimpls()
        if self._tracing_undo is not None or self.pm.monitored or any(i.hookwrapper or i.kwargnames for i in impls):
            return lambda *args: caller(**dict(zip(spec_args, args, strict=True)))
        ordered = list(reversed(impls))  # pluggy's call order: wrappers outermost first, then impls
        direct = [_positional(i.function, spec_args, tuple(i.argnames)) for i in ordered if not i.wrapper]
        if len(direct) == 1:
            function = direct[0]
        elif len(direct) == 2 and len(spec_args) == 2:
            # an arch's implementation over the core's trylast default, e.g. faultin_pfn(vcpu,
            # fault): two named arguments, as a call with *args takes CPython's slow path
            first, second = direct

            def function(a: Any, b: Any) -> Any:
                result = first(a, b)
                return second(a, b) if result is None else result

        else:  # any other count or arity (the hot hooks take two arguments)

            def function(*args: Any) -> Any:
                for implementation in direct:
                    result = implementation(*args)
                    if result is not None:
                        return result
                return None

        for impl in reversed([i for i in ordered if i.wrapper]):  # innermost wrapper first
            function = _drive_wrapper(impl, name, spec_args, function)
        return function


#: Hooks whose facade method guards the call itself (no extra frame on the fast path).
_GUARDED_BY_FACADE = frozenset({"decode_fault", "faultin_pfn", "prepare_memory_fault_exit", "parse_trace_event"})


def _positional(function: Callable[..., Any], spec_args: tuple[str, ...], argnames: tuple[str, ...]) -> Callable[..., Any]:
    """``function`` adapted to take the spec's arguments positionally (impls may take a subset)."""
    if argnames == spec_args:
        return function
    picks = tuple(spec_args.index(a) for a in argnames)
    return lambda *args: function(*[args[i] for i in picks])


def _drive_wrapper(impl: Any, hook: str, spec_args: tuple[str, ...], inner: Callable[..., Any]) -> Callable[..., Any]:
    """One new-style wrapper around ``inner``, as pluggy's ``_multicall`` drives it.

    ``result = yield`` receives the inner result (or the inner exception is thrown in at the
    ``yield``); what the wrapper returns is the result; a wrapper that does not yield, or
    yields twice, is a :class:`PluginError` (pluggy raises ``RuntimeError``).
    """
    start = _positional(impl.function, spec_args, tuple(impl.argnames))
    label = f"wrapper {impl.plugin_name}.{getattr(impl.function, '__name__', '?')}"

    def misbehaved(what: str) -> PluginError:
        return PluginError(impl.plugin_name, hook, f"{label} {what}")

    def call(*args: Any) -> Any:
        gen = start(*args)
        try:
            next(gen)
        except StopIteration:
            raise misbehaved("did not yield") from None
        try:
            result = inner(*args)
        except BaseException as exc:
            try:
                gen.throw(exc)
            except StopIteration as stop:
                return stop.value
            raise misbehaved("has second yield") from None
        try:
            gen.send(result)
        except StopIteration as stop:
            return stop.value
        raise misbehaved("has second yield")

    return call


class KvmcorePluginManager(pluggy.PluginManager):
    """pluggy's manager that tells its :class:`Arch` when plugins or monitors change, so the
    fast path is rebuilt (a wrapper registered late is never skipped)."""

    def __init__(self) -> None:
        super().__init__("kvmcore")
        self.on_change: Callable[[], None] | None = None
        self.monitored = False
        #: How PluginError names the arch plugin when no implementation's frame is to blame.
        self.arch_label = "?"

    def _hookexec(self, hook_name: str, methods: Sequence[Any], kwargs: Mapping[str, object], firstresult: bool) -> Any:
        """pluggy's call of one hook, isolated: what an implementation raises beyond kvmcore's
        errors and the hook's documented ones becomes a :class:`PluginError` (every hook, present
        and future, called through pluggy)."""
        try:
            return super()._hookexec(hook_name, methods, kwargs, firstresult)
        except KvmcoreError:
            raise
        except Exception as exc:
            if isinstance(exc, HOOK_EXCEPTIONS.get(hook_name, ())):
                raise
            raise hook_error(hook_name, exc, methods, self.arch_label) from exc

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        result = super().register(plugin, name)
        self._changed()
        return result

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._changed()
        return result

    def add_hookcall_monitoring(self, before: Any, after: Any) -> Callable[[], None]:
        self.monitored = True
        self._changed()
        undo = super().add_hookcall_monitoring(before, after)

        def undo_and_rebind() -> None:
            undo()
            self.monitored = False
            self._changed()

        return undo_and_rebind


def build_arch(plugin: Any, *, name: str | None = None, dist: str | None = None, version: str | None = None) -> Arch:
    """A plugin manager with the hookspecs, the core defaults, ``plugin`` and the extensions.

    Runs ``check_pending()`` and the fault contract. ``name`` is the entry-point name, if
    the plugin came from one; it must match ``arch_info().name``.
    """
    label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    pm = KvmcorePluginManager()
    pm.arch_label = name or label
    pm.add_hookspecs(hookspecs)
    for core_name, core_plugin in CORE_PLUGINS:
        pm.register(core_plugin, name=core_name)
    try:
        pm.register(plugin, name=name or label)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginLoadError(f"arch plugin {label!r} cannot be registered: {exc}") from exc
    load_errors = _register_extensions(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"arch plugin {label!r}: {exc}") from exc
    try:
        info = pm.hook.arch_info()
    except KvmcoreError as exc:
        raise PluginLoadError(f"arch plugin {label!r}: arch_info() failed: {exc}") from exc
    if not isinstance(info, ArchInfo):
        raise PluginLoadError(
            f"arch plugin {label!r}: arch_info() must return kvmcore.ArchInfo, got {type(info).__name__}"
        )
    problem = check_arch_info(info)
    if problem is not None:
        raise PluginLoadError(f"arch plugin {label!r}: arch_info() returned a bad ArchInfo: {problem}")
    if name is not None and info.name != name:
        raise PluginLoadError(f"arch plugin {label!r}: entry point is named {name!r} but arch_info() says {info.name!r}")
    check_fault_type(info.fault_type, info.name)
    arch = Arch(pm, plugin, info, dist, version)
    arch.load_errors = load_errors
    from kvmcore.plugin import tracing

    tracing.on_arch_built(arch)
    return arch


def _register_extensions(pm: pluggy.PluginManager) -> list[str]:
    errors = []
    for name, candidates in sorted(entry_points(EXTENSION_GROUP).items()):
        for ep in candidates:
            try:
                pm.register(_import_entry_point(ep), name=f"{EXTENSION_GROUP}:{name}:{ep.dist}")
            except (PluginLoadError, pluggy.PluginValidationError, ValueError) as exc:
                errors.append(str(exc))
    return errors


_cache: dict[str, Arch] = {}


def load_arch(name: str | Any) -> Arch:
    """The arch named ``name`` (an entry point of ``kvmcore.arch``), loaded once and cached.

    ``name`` may also be a plugin object (a module or instance with hookimpls, for plugins
    without an entry point): a fresh, uncached :class:`Arch` is built from it.

    :raises PluginLoadError: unknown name (lists the installed ones), two distributions
        claiming it, or an import failure.
    :raises FaultContractError: the arch's fault type breaks the common contract.
    """
    if not isinstance(name, str):
        return build_arch(name)
    arch = _cache.get(name)
    if arch is not None:
        return arch
    available = entry_points(ARCH_GROUP)
    if name not in available:
        installed = ", ".join(sorted(available)) or "none"
        why = ""
        if env_flag("KVMCORE_DISABLE_PLUGIN_AUTOLOAD"):
            why = " (KVMCORE_DISABLE_PLUGIN_AUTOLOAD is set)"
        elif _allowed() is not None:
            why = f" (KVMCORE_PLUGINS={os.environ['KVMCORE_PLUGINS']})"
        raise PluginLoadError(f"unknown arch {name!r}; installed arches: {installed}{why}")
    ep = _single(name, available[name])
    plugin = _import_entry_point(ep)
    arch = build_arch(plugin, name=name, dist=ep.dist, version=ep.version)
    _cache[name] = arch
    return arch


def installed_arches() -> list[str]:
    """Names of the arch entry points installed (and allowed), whether or not they load."""
    return sorted(entry_points(ARCH_GROUP))


def list_plugins() -> list[PluginStatus]:
    """Every installed arch and extension plugin with what it implements, or why it failed."""
    from kvmcore.plugin.status import PluginStatus

    rows: list[PluginStatus] = []
    for name, candidates in sorted(entry_points(ARCH_GROUP).items()):
        try:
            chosen: EntryPointInfo | None = _single(name, candidates)
            conflict = None
        except PluginLoadError as exc:
            chosen, conflict = None, str(exc)
        for ep in candidates:  # a row per distribution, also when two claim the name
            row = PluginStatus(name, "arch", ep.dist, ep.version, ep.value)
            if conflict is not None:
                row.error = conflict
            elif ep is not chosen:
                row.error = f"not used: KVMCORE_PLUGINS picks distribution {chosen.dist if chosen else '?'} for arch {name!r}"
            else:
                try:
                    arch = load_arch(name)
                    row.hooks, row.wrappers = arch.hooks_of(arch.plugin)
                except (PluginLoadError, FaultContractError) as exc:
                    row.error = str(exc)
            rows.append(row)
    for name, candidates in sorted(entry_points(EXTENSION_GROUP).items()):
        for ep in candidates:
            row = PluginStatus(name, "extension", ep.dist, ep.version, ep.value)
            try:
                plugin = _import_entry_point(ep)
                probe = pluggy.PluginManager("kvmcore")
                probe.add_hookspecs(hookspecs)
                probe.register(plugin)
                probe.check_pending()
                for caller in probe.get_hookcallers(plugin) or []:
                    for impl in caller.get_hookimpls():
                        (row.wrappers if impl.wrapper or impl.hookwrapper else row.hooks).append(caller.name)
            except (PluginLoadError, pluggy.PluginValidationError, ValueError) as exc:
                row.error = str(exc)
            rows.append(row)
    return rows


def reset_plugins() -> None:
    """Forget loaded arches and stevedore's in-process entry-point caches (for tests that
    install or remove plugins)."""
    _cache.clear()
    _INSTALLED.clear()
    try:
        import stevedore._cache as st_cache
        from stevedore import ExtensionManager

        ExtensionManager.ENTRY_POINT_CACHE.clear()
        internal = getattr(st_cache, "_c", None)
        if internal is not None and hasattr(internal, "_internal"):
            internal._internal.clear()
    except ImportError:  # pragma: no cover - stevedore is a dependency
        pass
    importlib.invalidate_caches()


def arch_from(arch: str | Arch | types.ModuleType | Any) -> Arch:
    """An :class:`Arch` from a name, an already loaded Arch, or a plugin object."""
    if isinstance(arch, Arch):
        return arch
    return load_arch(arch)
