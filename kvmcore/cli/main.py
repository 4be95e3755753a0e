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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvmcore.cli import model

PROG = "kvmcore"


def print_json(obj: Any) -> None:
    """:func:`kvmcore.cli.format.print_json`, imported when a command prints JSON (the module
    imports the model, which ``kvmcore plugins`` does not need)."""
    from kvmcore.cli import format

    format.print_json(obj)


class CliError(Exception):
    """Bad input: printed as ``kvmcore <cmd>: <message>`` on stderr, exit status 1."""


#: The longest ``NAME=VALUE`` value the command takes: a 64-bit register in binary with ``_``
#: separators fits; a longer one is refused before ``int()`` (whose result JSON could not print).
MAX_VALUE_TEXT = 128


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
        if len(text) > MAX_VALUE_TEXT:
            raise CliError(f"{what} {name}: a value of {len(text):,} characters (registers and settings "
                           f"are at most 64 bits; {MAX_VALUE_TEXT} characters allow them in binary with '_')")
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
    from kvmcore.cli import model

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
    """Decode registers, pasted log lines, or one of either per line of ``-``/``--input``
    (the work is in :mod:`kvmcore.cli.decode`)."""
    from kvmcore.cli import decode, model
    from kvmcore.cli.format import jsonable

    settings = parse_assignments(args.set or [], "setting")
    arch = _load_arch(args.arch)
    items = list(args.registers)
    many = args.input is not None or items == ["-"]
    if not items and not many:
        raise CliError(f"no registers given; {arch.name} takes {', '.join(arch.info.registers) or 'NAME=VALUE pairs'}")
    vm = _make_vm(arch, settings, _choice(args))
    vcpu = vm.create_vcpu()
    paint = decode.Paint(sys.stdout, False if args.json else None)
    errpaint = decode.Paint(sys.stderr)
    compact = args.short or (many and not args.json)
    status = 0
    try:
        for text, _ in decode.sources(items, sys.stdin, args.input):
            try:
                sets = decode.register_sets(arch, text, parse_assignments)
            except decode.DecodeInputError as exc:
                if not many:
                    raise CliError(str(exc)) from None
                print(errpaint.error(f"{PROG} decode: {exc}"), file=sys.stderr)
                status = 1
                continue
            for raw, source in sets:
                result = decode.decode_raw(arch, vm, vcpu, raw, source)
                if args.json:
                    obj = {**decode.as_json(result, arch.name, vm.page_shift), **jsonable(model.as_dict(vm))}
                    if many:
                        import json

                        print(json.dumps(obj))
                    else:
                        print_json(obj)
                elif compact:
                    print(decode.short(result, arch.name, paint))
                else:
                    rows = decode.table(result, arch.name, decode.raw_text(settings), paint)
                    rows.insert(1, f"  modelled: {model.describe(vm)}")
                    print("\n".join(rows))
                if result.error is not None:
                    status = 1
                    if not compact or not many:
                        print(errpaint.error(f"{PROG} decode: {arch.name}: {result.error}"), file=sys.stderr)
    except decode.DecodeInputError as exc:
        raise CliError(str(exc)) from None
    return status


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
            unwrap=args.unwrap,
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


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--kernel``, ``--upstream`` and ``--proposals`` (:mod:`kvmcore.cli.model`)."""
    from kvmcore.cli import model

    model.add_arguments(parser)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``kvmcore`` parser; with ``command`` (one of :data:`SUBCOMMANDS`, about to run), only
    that subcommand's parser. Nothing the user sees changes: the top-level help, which lists every
    subcommand, is printed only for a command line that does not start with a subcommand (then
    ``command`` is None and every subcommand is built), and the top-level usage names no
    subcommand (``COMMAND``). Building the other five subcommands' parsers cost 1-2% of
    ``kvmcore decode``'s start-up."""

    def wanted(name: str) -> bool:
        return command is None or command == name

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
    # prog given: argparse would format the usage to find it (the same "kvmcore")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog=PROG)
    sub.required = True

    if wanted("plugins"):
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

    if wanted("decode"):
        p = sub.add_parser(
            "decode",
            help="decode one raw syndrome",
            formatter_class=_Formatter,
            description="Decode one raw syndrome (the registers a guest exit reports) with the arch's "
            "describe_syndrome and decode_fault hooks. Values parse as Python integers (0x.., 0b.., "
            "decimal); non-numeric values stay strings (x86's vendor=vmx). Anything that is not "
            "NAME=VALUE pairs is a log line: the arch's parse_log_text hook finds the registers in it.",
            epilog=(
                "examples:\n"
                "  kvmcore decode arm64 esr=0x93c08006 far=0x1008 hpfar=0x40010\n"
                "  kvmcore decode arm64 esr=0x93c08006 far=0x1008 hpfar=0x40010 --set granule=16K --json\n"
                "  kvmcore decode x86 vendor=vmx exit_qualification=0x182 gpa=0xfd000000\n"
                "  kvmcore decode arm64 esr=0x92000061                  (alone: what needs HPFAR is unknown)\n"
                "  kvmcore decode arm64 'kvm [1234]: Unsupported FSC: EC=0x24 xFSC=0x21 ESR_EL2=0x92000061'\n"
                "  dmesg | grep ESR | kvmcore decode arm64 -            (one line per result)\n"
                "\nexit status 1 when nothing could be decoded, or the registers are not a guest memory fault\n"
                "(the reason on stderr); registers missing for the full fault path are not an error.\n"
                "Colour on a terminal unless NO_COLOR is set."
            ),
        )
        p.add_argument("arch", metavar="ARCH", help="an installed arch (see 'kvmcore plugins')")
        p.add_argument("registers", metavar="REG=VALUE|LOGLINE|-", nargs="*", default=[],
                       help="raw register values, or a pasted log line, or - to read one of either per line from stdin")
        p.add_argument("--set", metavar="NAME=VALUE", action="append", help="a VM setting, e.g. granule=16K (repeatable)")
        _model_arguments(p)
        p.add_argument("--json", action="store_true", help="one JSON object (one per line with - or --input)")
        p.add_argument("--short", action="store_true", help="one line per result (the default with - or --input)")
        p.add_argument("--input", metavar="FILE", help="read one register set or log line per line from FILE (- for stdin)")
        p.set_defaults(func=cmd_decode)

    if wanted("run"):
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
                "  generate-scenario | kvmcore run - --arch x86\n"
                "\nexit status 1 when an expectation fails (each failure named on stderr)"
            ),
        )
        p.add_argument("scenario", metavar="SCENARIO.toml", nargs="?",
                       help="scenario file, - for standard input (default: built-in example)")
        p.add_argument("--arch", metavar="NAME|all", help="run on this arch, or on every installed arch side by side "
                       "(default: the scenario's 'arch')")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--trace-hooks", action="store_true", help="trace every hook call to stderr")
        _model_arguments(p)
        p.set_defaults(func=cmd_run)

    if wanted("compare"):
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

    if wanted("replay"):
        p = sub.add_parser(
            "replay",
            help="summarise the guest faults in a kernel trace",
            formatter_class=_Formatter,
            description="Read kernel trace output (ftrace 'trace' file, 'trace-cmd report', 'perf script'; "
            "'-' for stdin; also as pasted into mail: quoted, wrapped, without prefixes, with kernel log lines), "
            "decode each guest fault event through the arch's parse_trace_event and "
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
        p.add_argument("--no-unwrap", dest="unwrap", action="store_false",
                       help="do not rejoin lines a mail client wrapped (they are then malformed)")
        p.add_argument("--memslots", metavar="SCENARIO.toml", help="memslot layout for per-slot counts")
        p.add_argument("--set", metavar="NAME=VALUE", action="append", help="VM setting for decoding (repeatable)")
        _model_arguments(p)
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

    if wanted("check-host"):
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


#: Every subcommand :func:`build_parser` builds, in its order.
SUBCOMMANDS = ("plugins", "decode", "run", "compare", "replay", "check-host")


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand a command line starts with, or None (an option first, ``-h`` or
    ``--version``, or no known subcommand: the whole parser is built)."""
    return argv[0] if argv and argv[0] in SUBCOMMANDS else None


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser :func:`build_parser` made for subcommand ``command``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise LookupError(command)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    parser = build_parser(command)
    if command is None:
        args = parser.parse_args(argv)
    else:
        # The subcommand's own parser, intermixed: options may sit among the positionals
        # (`kvmcore decode arm64 --short esr=...`). The top-level parse would bind `decode`'s
        # REG=VALUE list empty at ARCH and then refuse the values after the option.
        # Unknown arguments are refused as the top-level parse refuses them.
        args, extras = _subparser(parser, command).parse_known_intermixed_args(argv[1:], argparse.Namespace(command=command))
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
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
