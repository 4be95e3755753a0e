"""The ``kvmcore`` command: ``plugins``, ``decode``, ``run`` and ``replay``.

Exit codes: 0 success, 1 a failed expectation or bad input (unknown arch, bad register value,
malformed scenario or trace), 2 a usage error (argparse). Human output prints addresses and
registers in hex; ``--json`` prints integers as JSON numbers.

Imports are lazy: ``kvmcore decode`` loads only the named arch, and the scenario and replay
modules are imported by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from kvmcore.cli import model
from kvmcore.cli.format import fmt_value, print_json

PROG = "kvmcore"


class CliError(Exception):
    """Bad input: printed as ``kvmcore <cmd>: <message>`` on stderr, exit status 1."""


def parse_assignments(items: Sequence[str], what: str) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; values parse with ``int(v, 0)``, otherwise stay strings.

    A value that looks like a number but is not one (``esr=0x9zz``) is refused, naming it.
    """
    result: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        text = text.strip()
        if not sep or not name:
            raise CliError(f"{what} {item!r}: expected NAME=VALUE")
        if not text:
            raise CliError(f"{what} {name}: empty value")
        try:
            value: Any = int(text, 0)
        except ValueError:
            body = text[1:] if text[0] in "+-" else text
            if what == "setting":  # "16K", "vmx", true/false
                value = {"true": True, "false": False}.get(text.lower(), text)
            elif body[:1].isdigit():
                raise CliError(
                    f"bad value for {what} {name}: {text!r} is not a number "
                    "(use 0x.. for hex, 0b.. for binary, or a decimal)"
                ) from None
            value = text
        if name in result:
            raise CliError(f"{what} {name} given twice")
        result[name] = value
    return result


# --- kvmcore plugins ---------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    import kvmcore

    rows = kvmcore.list_plugins()
    if args.json:
        print_json([_with_versions(row.as_dict()) for row in rows])
        return 0
    if not rows:
        print("no kvmcore plugins installed (entry-point groups kvmcore.arch, kvmcore.plugins)")
        return 0
    for kind, title in (("arch", "arch plugins (kvmcore.arch)"), ("extension", "extension plugins (kvmcore.plugins)")):
        group = [r for r in rows if r.kind == kind]
        print(f"{title}:")
        if not group:
            print("  (none)")
        for row in group:
            dist = f"{row.dist or 'unknown distribution'} {row.version or ''}".rstrip()
            print(f"  {row.name:<10} {dist:<24} {row.module}")
            if row.error:
                print(f"  {'':<10} FAILED TO LOAD: {row.error}")
                continue
            if kind == "arch":
                print(f"  {'':<10} kernels: {', '.join(kvmcore.KERNEL_VERSIONS)}; proposals: {', '.join(_proposals_of(row.name))}")
            print(f"  {'':<10} hooks: {', '.join(row.hooks) or '(none)'}")
            print(f"  {'':<10} wraps: {', '.join(row.wrappers) or '(none)'}")
    return 0


def _proposals_of(arch: str) -> list[str]:
    import kvmcore

    return [p.name for p in kvmcore.PROPOSALS.values() if p.applies_to(arch)]


def _with_versions(row: dict[str, Any]) -> dict[str, Any]:
    """An arch row gains the kernels it models and the proposals that apply to it."""
    import kvmcore

    if row.get("kind") == "arch":
        row = {**row, "kernels": list(kvmcore.KERNEL_VERSIONS), "default_kernel": kvmcore.KERNEL_VERSIONS[-1],
               "proposals": _proposals_of(row["name"])}
    return row


# --- kvmcore decode ----------------------------------------------------------------------------
def _load_arch(name: str) -> Any:
    import kvmcore

    try:
        return kvmcore.load_arch(name)
    except (kvmcore.PluginLoadError, kvmcore.FaultContractError) as exc:
        raise CliError(str(exc)) from None


def _make_vm(arch: Any, settings: dict[str, Any], choice: model.ModelChoice) -> Any:
    import kvmcore

    try:
        return kvmcore.VM(arch, **choice.vm_kwargs(arch.name), **settings)
    except kvmcore.PluginError:
        raise
    except (ValueError, TypeError) as exc:
        raise CliError(f"arch {arch.name!r}: bad VM setting: {exc}") from None


def _choice(args: argparse.Namespace) -> model.ModelChoice:
    try:
        return model.from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_decode(args: argparse.Namespace) -> int:
    """``kvmcore decode``; with ``--json`` every failure is still one JSON object (``error``)."""
    import kvmcore

    try:
        return _decode(args)
    except (CliError, kvmcore.PluginError) as exc:
        if not args.json:
            raise CliError(str(exc)) from None
        print_json({"arch": args.arch, "guest_fault": False, "error": str(exc)})
        print(f"{PROG} decode: {exc}", file=sys.stderr)
        return 1


def _decode(args: argparse.Namespace) -> int:
    import dataclasses

    import kvmcore

    raw = parse_assignments(args.registers, "register")
    settings = parse_assignments(args.set or [], "setting")
    arch = _load_arch(args.arch)
    known = tuple(arch.info.registers)
    if known:
        accepted = (*known, "private") if "private" not in known else known
        unknown = [name for name in raw if name not in accepted]
        if unknown:
            raise CliError(
                f"arch {arch.name!r} has no register {unknown[0]!r} (registers: {', '.join(accepted)})"
            )
    if not raw:
        raise CliError(f"no registers given; {arch.name} takes {', '.join(known) or 'NAME=VALUE pairs'}")
    vm = _make_vm(arch, settings, _choice(args))
    vcpu = vm.create_vcpu()

    syndrome = None
    try:
        syndrome = arch.describe_syndrome(vm, raw)
    except NotImplementedError:
        pass
    except kvmcore.DecodeError as exc:
        raise CliError(f"{arch.name}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CliError(f"{arch.name}: cannot decode {_raw_text(raw)}: {exc}") from None

    fault, error = None, None
    try:
        fault = arch.decode_fault(vcpu, raw)
    except kvmcore.DecodeError as exc:
        error = str(exc)
    except (TypeError, ValueError, KeyError) as exc:
        error = f"cannot decode {_raw_text(raw)}: {type(exc).__name__}: {exc}"
    if syndrome is not None and not syndrome.guest_fault:
        # the syndrome's own reason ("EC 0x16 (HVC64) is not an abort") beats a missing register
        error = syndrome.error or error or "not a guest memory fault"
        fault = None

    fault_fields: dict[str, Any] = {}
    if fault is not None:
        if dataclasses.is_dataclass(fault):
            names = [f.name for f in dataclasses.fields(fault)]
        else:  # pragma: no cover - the contract asks for a dataclass
            names = [n for n in dir(fault) if not n.startswith("_")]
        for name in names:
            if name != "slot":
                fault_fields[name] = getattr(fault, name)
        fault_fields.setdefault("gpa", fault.gfn << vm.page_shift)

    if args.json:
        obj: dict[str, Any] = {"arch": arch.name}
        if fault is not None:
            for name in ("gfn", "gpa", "write", "exec", "is_private"):
                obj[name] = fault_fields[name]
            obj.update(fault_fields)
        if syndrome is not None:
            for name, value in syndrome.fields.items():
                obj.setdefault(name, value)
        obj["guest_fault"] = fault is not None and error is None
        obj.update(model.as_dict(vm))
        obj["raw"] = raw
        obj["page_shift"] = vm.page_shift
        if syndrome is not None:
            obj["meanings"] = dict(syndrome.meanings)
        if error is not None:
            obj["error"] = error
        print_json(obj)
    else:
        print(f"{arch.name} {_raw_text(raw)}" + (f"  (VM: {_raw_text(settings)})" if settings else ""))
        print(f"  modelled: {model.describe(vm)}")
        rows: list[tuple[str, str, str]] = []
        if syndrome is not None:
            for name, value in syndrome.fields.items():
                rows.append((name, fmt_value(value), syndrome.meanings.get(name, "")))
        if fault is not None:
            rows.append(("", "", ""))
            cls = type(fault).__name__
            rows.append(("fault", cls, "what decode_fault() gives the fault path"))
            for name, value in fault_fields.items():
                if syndrome is not None and name in syndrome.fields and syndrome.fields[name] == value:
                    continue
                if dataclasses.is_dataclass(value):
                    shown = f"<{type(value).__name__}>"
                    rows.append((f"  {name}", shown, "decoded fields above" if syndrome is not None else ""))
                    continue
                rows.append((f"  {name}", fmt_value(value), _COMMON_MEANINGS.get(name, "")))
        width = max((len(r[0]) for r in rows), default=0)
        vwidth = min(max((len(r[1]) for r in rows), default=0), 20)
        for name, value, meaning in rows:
            if not name:
                print()
                continue
            line = f"  {name:<{width}}  {value:<{vwidth}}"
            print((line + "  " + meaning).rstrip() if meaning else line.rstrip())
    if error is not None:
        print(f"{PROG} decode: {arch.name}: {error}", file=sys.stderr)
        return 1
    return 0


_COMMON_MEANINGS = {
    "gfn": "guest frame number (gpa >> PAGE_SHIFT)",
    "gpa": "faulting guest physical address",
    "write": "write access",
    "exec": "instruction fetch",
    "is_private": "access to private (guest_memfd) memory",
    "fault_kind": "the arch's kind of stage-2 fault",
}


def _raw_text(raw: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in raw.items())


# --- kvmcore run -------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from kvmcore.cli.scenario import render, runner, schema

    if args.trace_hooks:
        import kvmcore

        kvmcore.enable_hook_tracing(sys.stderr.write)
    try:
        scenario = schema.load(args.scenario)
    except schema.ScenarioError as exc:
        raise CliError(str(exc)) from None
    outcome = runner.run(scenario, arch=args.arch, choice=_choice(args))
    if args.json:
        print_json(outcome.as_dict())
    else:
        print(render.render(outcome), end="")
    for message in outcome.errors:
        print(f"{PROG} run: {message}", file=sys.stderr)
    for failure in outcome.failures:
        print(f"{PROG} run: expectation failed: {failure}", file=sys.stderr)
    return 0 if outcome.ok else 1


# --- kvmcore compare ---------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    from kvmcore.cli import compare
    from kvmcore.cli.scenario import schema

    try:
        result = compare.main(args.scenario, args.arch, args.designs, args.access, args.kernel)
    except (compare.CompareError, schema.ScenarioError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(result)
    else:
        print(compare.render(result), end="")
    return 0


# --- kvmcore replay ----------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from kvmcore.cli import replay, replay_parallel

    settings = parse_assignments(args.set or [], "setting")
    try:
        summary = replay_parallel.replay(
            args.tracefile,
            arch=args.arch,
            memslots=args.memslots,
            settings=settings,
            top=args.top,
            memory=args.memory,
            jobs=args.jobs,
            events=args.events,
            progress=None if args.progress is None else args.progress,
            choice=_choice(args),
        )
    except replay.ReplayError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(summary.as_dict())
    else:
        print(summary.render(), end="")
    if args.strict and summary.malformed:
        print(
            f"{PROG} replay: --strict: {summary.malformed} unparseable event line(s), first at line "
            f"{summary.first_malformed_line}",
            file=sys.stderr,
        )
        return 1
    return 0


# --- the parser --------------------------------------------------------------------------------
def _jobs(text: str) -> int | None:
    """``--jobs 4`` or ``--jobs auto`` (None)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of processes or 'auto'")
    return value


def _size(text: str) -> int:
    """``--memory 64M``: bytes (argparse reports the ValueError's message)."""
    from kvmcore.cli.hotgfns import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


class _VersionAction(argparse.Action):
    """``--version``: reads the installed distribution's metadata only when asked (reading it
    for every command parsed the metadata files on every start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser._print_message(f"{parser.prog} {_version()}\n", sys.stdout)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_Formatter,
        description="kvmcore: an executable model of KVM's guest page-fault path and KVM_EXIT_MEMORY_FAULT.",
        epilog=(
            "examples:\n"
            "  kvmcore run                         the built-in example on every installed arch\n"
            "  kvmcore decode arm64 esr=0x93c08006 far=0x1008 hpfar=0x40010\n"
            "  kvmcore replay /sys/kernel/tracing/trace\n"
            "  kvmcore plugins\n"
            "\nexit status: 0 ok, 1 failed expectation or bad input, 2 usage error"
        ),
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "plugins",
        help="list installed arch and extension plugins",
        formatter_class=_Formatter,
        description="List every installed arch (kvmcore.arch) and extension (kvmcore.plugins) plugin: "
        "distribution and version, the hooks it implements and wraps, and why it failed to load.",
        epilog="example:\n  kvmcore plugins --json",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "decode",
        help="decode one raw syndrome",
        formatter_class=_Formatter,
        description="Decode one raw syndrome (the registers a guest exit reports) with the arch's "
        "describe_syndrome and decode_fault hooks. Values parse as Python integers (0x.., 0b.., "
        "decimal); non-numeric values stay strings (x86's vendor=vmx).",
        epilog=(
            "examples:\n"
            "  kvmcore decode arm64 esr=0x93c08006 far=0x1008 hpfar=0x40010\n"
            "  kvmcore decode arm64 esr=0x93c08006 far=0x1008 hpfar=0x40010 --set granule=16K --json\n"
            "  kvmcore decode x86 vendor=vmx exit_qualification=0x182 gpa=0xfd000000\n"
            "\nexit status 1 when the registers are not a guest memory fault (the reason on stderr)"
        ),
    )
    p.add_argument("arch", metavar="ARCH", help="an installed arch (see 'kvmcore plugins')")
    p.add_argument("registers", metavar="REG=VALUE", nargs="*", help="raw register values")
    p.add_argument("--set", metavar="NAME=VALUE", action="append", help="a VM setting, e.g. granule=16K (repeatable)")
    model.add_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser(
        "run",
        help="run a scenario (default: the built-in example)",
        formatter_class=_Formatter,
        description="Run a TOML scenario: memslots, memory attributes, host memory events and an "
        "ordered list of guest faults, each with optional expectations. Without a file, runs the "
        "built-in example. See docs/scenarios.md for the schema.",
        epilog=(
            "examples:\n"
            "  kvmcore run                                  built-in example, every installed arch\n"
            "  kvmcore run examples/postcopy-userfault.toml --arch arm64\n"
            "  kvmcore run examples/hwpoison.toml --arch all --json\n"
            "\nexit status 1 when an expectation fails (each failure named on stderr)"
        ),
    )
    p.add_argument("scenario", metavar="SCENARIO.toml", nargs="?", help="scenario file (default: built-in example)")
    p.add_argument("--arch", metavar="NAME|all", help="run on this arch, or on every installed arch side by side "
                   "(default: the scenario's 'arch')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--trace-hooks", action="store_true", help="trace every hook call to stderr")
    model.add_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "compare",
        help="one scenario or access under each memory-fault exit design",
        formatter_class=_Formatter,
        description="Run a scenario (default: the built-in tour), or one access in its memory layout, "
        "under the memory-fault exit designs of the KVM Userfault v3 review (docs/designs.md) and show "
        "per arch what userspace sees under each: KVM_RUN's return value, the exit reason, "
        "memory_fault flags/gpa/size and the syndrome words. '*' marks a value that differs from "
        "what most designs give.",
        epilog=(
            "examples:\n"
            "  kvmcore compare                                   the tour, every design, every arch\n"
            "  kvmcore compare --access write@0x40401000 --arch arm64\n"
            "  kvmcore compare --designs upstream,v3,compromise --json\n"
            "\ndesigns: upstream, v3, kvmcore, compromise, arm64-esr, rwx, annotate-efault (or all)"
        ),
    )
    p.add_argument("scenario", metavar="SCENARIO.toml", nargs="?", help="scenario file (default: the built-in tour)")
    p.add_argument("--arch", metavar="NAME[,NAME]|all", help="arches to compare on (default all)")
    p.add_argument("--designs", metavar="NAME[,NAME]|all", help="designs to compare (default all)")
    p.add_argument("--access", metavar="KIND@GPA[:private]", help="only this access, in the scenario's memory layout")
    p.add_argument("--kernel", metavar="VERSION", help="the kernel modelled (default the newest; see kvmcore.KERNEL_VERSIONS)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "replay",
        help="summarise the guest faults in a kernel trace",
        formatter_class=_Formatter,
        description="Read kernel trace output (ftrace 'trace' file, 'trace-cmd report', 'perf script'; "
        "'-' for stdin), decode each guest fault event through the arch's parse_trace_event and "
        "decode_fault hooks, and print a summary. Streams in bounded memory: the hottest gfns are "
        "counted exactly within --memory, then by a sketch that reports only what it guarantees.",
        epilog=(
            "examples:\n"
            "  kvmcore replay /sys/kernel/tracing/trace\n"
            "  trace-cmd report | kvmcore replay - --json\n"
            "  perf script | kvmcore replay - --arch x86 --set vendor=svm\n"
            "  kvmcore replay trace.txt --memslots examples/postcopy-userfault.toml --strict\n"
            "\nexit status 1 with --strict when any event line could not be parsed"
        ),
    )
    p.add_argument("tracefile", metavar="TRACEFILE", help="trace text file, or - for stdin")
    p.add_argument("--arch", metavar="auto|NAME", default="auto", help="which arch's events to decode (default auto)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--strict", action="store_true", help="exit 1 on any unparseable event line")
    p.add_argument("--memslots", metavar="SCENARIO.toml", help="memslot layout for per-slot counts")
    p.add_argument("--set", metavar="NAME=VALUE", action="append", help="VM setting for decoding (repeatable)")
    model.add_arguments(p)
    p.add_argument("--top", type=int, default=10, metavar="N", help="how many hottest gfns to show (default 10)")
    p.add_argument("--memory", type=_size, default="64M", metavar="SIZE",
                   help="memory for hot-gfn counts (default 64M): exact while they fit, then a sketch "
                   "that reports only what it guarantees")
    p.add_argument("--events", metavar="OUT.parquet",
                   help="also write one row per guest fault event (registers and decoded fields) to a "
                   "Parquet file; needs pyarrow (pip install 'kvmcore[arrow]')")
    p.add_argument("--jobs", type=_jobs, default=None, metavar="N|auto",
                   help="processes for a large trace file (default auto: every CPU from 16 MiB per "
                   "process); the summary is the serial one")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bar on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_replay)

    _add_check_host_parser(sub, _Formatter)
    return parser


def _add_check_host_parser(sub: Any, formatter: Any) -> None:
    """Register ``kvmcore check-host``; the command's module (its dataclasses, the expected
    differences, ``kvmcore.uapi``) is imported only when it runs."""
    p = sub.add_parser(
        "check-host",
        help="compare the model with this host's /dev/kvm",
        formatter_class=formatter,
        description="Drive this host's /dev/kvm and the model with the same calls and report every "
        "disagreement: (a) memslot and guest_memfd calls (fixed edge cases, then --count random calls "
        "from --seed), compared on 0 or the errno; (b) one guest access (read, write, fetch) per slot "
        "configuration, compared on KVM_RUN's result, exit reason, MMIO and memory_fault fields. "
        "The model is x86 in upstream mode for the host's kernel version. See docs/check-host.md.",
        epilog=(
            "examples:\n"
            "  kvmcore check-host\n"
            "  kvmcore check-host --count 5000 --seed 7 --json\n"
            "  kvmcore check-host --only accesses --cpl 0\n"
            "\nexit status 1 when a disagreement is not one of the documented expected differences, "
            "or /dev/kvm cannot be used"
        ),
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random call sequences (default 0)")
    p.add_argument("--count", type=int, default=1000, help="number of random calls (default 1000)")
    p.add_argument("--cpl", choices=("auto", "0", "3"), default="auto",
                   help="privilege level of the access guest (default: 3 on PVM, where only CPL 3 reaches the MMU; else 0)")
    p.add_argument("--only", choices=("calls", "accesses"), help="run one part only")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_cmd_check_host)


def _cmd_check_host(args: argparse.Namespace) -> int:
    from kvmcore.cli import check_host

    return check_host.cmd_check_host(args)


def _version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("kvmcore")
    except Exception:  # pragma: no cover - running from a source tree
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `kvmcore replay ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
