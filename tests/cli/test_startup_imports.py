"""Start-up: what ``kvmcore plugins`` and ``kvmcore decode`` import, and that building only the
running subcommand's parser changes nothing a user sees.

The speed itself is measured in benchmarks/ (``bench_startup``, a ratio against ``python -c
"import pluggy, stevedore"``); these tests catch a regression of what made it fast: a module-level
import that pulls the model, the trace parsers or another arch back onto these paths.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
from clitools import ROOT, needs

cli_main = importlib.import_module("kvmcore.cli.main")  # the package's `main` is the function

#: Runs ``kvmcore ARGS`` in this fresh interpreter, then prints the modules it imported and
#: whether stevedore hashed sys.path to find entry points itself (its in-process cache).
PROBE = """
import contextlib, io, json, sys
from kvmcore.cli.main import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    status = main(sys.argv[1:])
import stevedore._cache
print(json.dumps({"status": status, "stdout": out.getvalue(), "modules": sorted(sys.modules),
                  "stevedore_scanned": bool(stevedore._cache._c._internal)}))
"""


def probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == 0, report
    return report


#: Never needed to list plugins or decode one register set.
NOT_ON_EITHER_PATH = (
    "kvmcore.cli.replay",
    "kvmcore.cli.replay_parallel",
    "kvmcore.cli.trace_input",
    "kvmcore.cli.compare",
    "kvmcore.kvm.presets",
    "kvmcore.cli.check_host",
    "kvmcore.cli.scenario.runner",
    "kvmcore.plugin.batch",
    "kvmcore.uapi",
    "numpy",
    "kvmcore._access",  # encode_fault's input (kvmcore.Access)
)


@needs()
def test_plugins_imports_neither_the_model_nor_the_decode_tools() -> None:
    report = probe("plugins")
    assert "arch plugins (kvmcore.arch):" in report["stdout"]
    modules = set(report["modules"])
    assert {"kvmcore_arm64.plugin", "kvmcore_x86.plugin", "kvmcore_riscv.plugin"} <= modules  # each still loaded
    deferred = {
        # the VM and what only a VM uses (kvmcore.__getattr__)
        "kvmcore.kvm.kvm_main", "kvmcore.kvm.stage2", "kvmcore.kvm.host_mm", "kvmcore.kvm.guest_memfd",
        "kvmcore.kvm.kconfig", "kvmcore.kvm.memslot",
        # the decode command and what only it and the JSON writer use
        "kvmcore.cli.decode", "kvmcore.cli.model", "kvmcore.cli.format",
        # the arches' encoders and trace parsers: encode_fault and parse_trace_event only
        "kvmcore_arm64.convert", "kvmcore_arm64.trace", "kvmcore_arm64.encode",
        "kvmcore_riscv.encode", "kvmcore_riscv.trace", "kvmcore_x86.describe",
        # the tool hooks' types (describe_syndrome's result is decode's)
        "kvmcore._syndrome",
        # the arches' fault paths (faultin_pfn): imported by the first fault
        "kvmcore_arm64.abort", "kvmcore_x86.mmu", "kvmcore_riscv.gstage", "kvmcore_arm64.kernels", "kvmcore_riscv.kernels",
        # the arches' decoders (decode_fault, describe_syndrome): imported by the first decode or
        # VM; loading a plugin needs only its fault type (fault_type.py, x86's fault.py)
        "kvmcore_arm64.esr", "kvmcore_arm64.fault", "kvmcore_arm64.syndrome",
        "kvmcore_riscv.fault", "kvmcore_riscv.trap", "kvmcore_riscv.htinst",
        "kvmcore_x86.decode", "kvmcore_x86.vmx", "kvmcore_x86.svm", "kvmcore_x86.encode",
        # struct kvm_run (a vCPU's): ctypes and its structures
        "ctypes", "kvmcore._kvm_run",
        *NOT_ON_EITHER_PATH,
    }
    assert sorted(deferred & modules) == []
    assert report["stevedore_scanned"] is False  # stevedore was handed the entry points kvmcore found


@needs("arm64")
def test_decode_imports_one_arch_and_no_trace_tools() -> None:
    report = probe("decode", "arm64", "esr=0x93c08006", "far=0x1008", "hpfar=0x40010")
    assert "DABT_LOW" in report["stdout"]
    modules = set(report["modules"])
    loaded_other = {m for m in modules if m.split(".")[0] in ("kvmcore_x86", "kvmcore_riscv")}
    assert loaded_other == set()
    deferred = {"kvmcore_arm64.logtext", "kvmcore_arm64.batch", "kvmcore_arm64.convert", "kvmcore_arm64.trace",
                "kvmcore.plugin.status",
                # a VM imports guest_memfd when it creates or binds one (decode does neither)
                "kvmcore.kvm.guest_memfd",
                # the fault path (faultin_pfn) is imported by the first fault
                "kvmcore_arm64.abort", "kvmcore_arm64.kernels",
                # the vCPU's struct kvm_run is made by its first use (decoding never runs it)
                "ctypes", "kvmcore._kvm_run",
                *NOT_ON_EITHER_PATH}
    assert sorted(deferred & modules) == []
    assert report["stevedore_scanned"] is False


def test_import_kvmcore_defers_the_vm_until_used() -> None:
    code = ("import sys, kvmcore; before = 'kvmcore.kvm.kvm_main' in sys.modules; vm = kvmcore.VM; "
            "from kvmcore.kvm.kvm_main import VM; from kvmcore import Stage2; import kvmcore.kvm.stage2 as s; "
            "print(before, vm is VM, Stage2 is s.Stage2, 'VM' in dir(kvmcore), hasattr(kvmcore, 'no_such_name'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True", "True", "False"]


def test_every_public_name_resolves() -> None:
    import kvmcore

    assert [name for name in kvmcore.__all__ if getattr(kvmcore, name, None) is None] == []


def _choices(parser) -> dict:
    return next(a for a in parser._subparsers._group_actions if a.dest == "command").choices


def test_subcommands_lists_every_subcommand_the_parser_has() -> None:
    assert tuple(_choices(cli_main.build_parser(None))) == cli_main.SUBCOMMANDS


@pytest.mark.parametrize("command", cli_main.SUBCOMMANDS)
def test_a_parser_built_for_one_command_gives_that_command_the_same_parser(command: str) -> None:
    """The full parser is the oracle: the subcommand's help and the top-level usage (what an
    error prints) are the same whether or not the other subcommands were built."""
    full, one = cli_main.build_parser(None), cli_main.build_parser(command)
    assert list(_choices(one)) == [command]
    assert _choices(one)[command].format_help() == _choices(full)[command].format_help()
    assert one.format_usage() == full.format_usage()


@pytest.mark.parametrize("argv", [
    ["plugins", "--bogus"], ["decode"], ["decode", "arm64", "--kernel", "9.9"], ["decode", "--help"],
    ["replay"], ["run", "--arch"], ["compare", "--json", "x", "y"], ["check-host", "--count", "x"],
    ["bogus"], ["-h"], ["--help", "decode"], [],
])
def test_usage_errors_and_help_are_those_of_the_whole_parser(argv: list[str], monkeypatch, capsys) -> None:
    def run() -> tuple[object, str, str]:
        with pytest.raises(SystemExit) as stop:
            cli_main.main(argv)
        out = capsys.readouterr()
        return stop.value.code, out.out, out.err

    built_for_one = run()
    monkeypatch.setattr(cli_main, "_command_in", lambda argv: None)  # the whole parser, the oracle
    assert run() == built_for_one


@pytest.mark.parametrize(("argv", "command"), [
    (["plugins"], "plugins"),
    (["decode", "arm64", "esr=1"], "decode"),
    (["check-host", "--json"], "check-host"),
    (["--", "decode", "arm64"], None),
    (["-h", "decode"], None),  # the top-level help lists every subcommand
    (["--help"], None),
    (["--version"], None),
    (["bogus"], None),  # argparse's error lists every subcommand
    ([], None),
])
def test_the_command_is_the_first_word_when_it_is_a_subcommand(argv: list[str], command: str | None) -> None:
    assert cli_main._command_in(argv) == command


@pytest.mark.parametrize("command", cli_main.SUBCOMMANDS)
def test_a_subcommand_is_named_kvmcore_command_in_its_usage(command: str) -> None:
    """build_parser passes add_subparsers its prog ("kvmcore") instead of letting argparse
    format the top-level usage to find it: each subcommand's usage still starts "kvmcore CMD"."""
    for parser in (cli_main.build_parser(None), cli_main.build_parser(command)):
        assert _choices(parser)[command].format_usage().startswith(f"usage: kvmcore {command} "), command
