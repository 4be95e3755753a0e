"""Every hook call is isolated: the deliberately broken plugin (tests/brokenarch.py) raises,
returns garbage or breaks the contract in each hook, and each time the caller gets a
PluginError naming the plugin and the hook, and the CLI shows it without a traceback while
the other arches finish (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import brokenarch
import pytest
from clitools import cli
from fakedist import activate, make_dist

import kvmcore

MIB = 1 << 20

#: What each (hook, mode) must say, besides naming the plugin and the hook.
PROBLEMS = {
    ("configure_vm", "raise"): "raised ZeroDivisionError",
    ("configure_vm", "garbage"): "returned int 42, expected the settings as a mapping",
    ("configure_vm", "contract"): "returned list",
    ("prepare_memory_region", "raise"): "raised ZeroDivisionError",
    ("prepare_memory_region", "garbage"): "raised AttributeError",
    ("decode_fault", "raise"): "raised ZeroDivisionError",
    ("decode_fault", "garbage"): "returned str 'a fault'",
    ("decode_fault", "contract"): "field 'gfn' must be int, found str",
    ("faultin_pfn", "raise"): "raised ZeroDivisionError",
    ("faultin_pfn", "garbage"): "returned tuple (1234, True), expected Mapped, Retry or Exit",
    ("faultin_pfn", "contract"): "its result broke the fault path: TypeError",
    ("prepare_memory_fault_exit", "raise"): "raised ZeroDivisionError",
    ("prepare_memory_fault_exit", "garbage"): "returned dict",
    ("kvm_arch_prepare_memory_fault_exit", "raise"): "raised ZeroDivisionError",
    ("encode_fault", "raise"): "raised ZeroDivisionError",
    ("encode_fault", "garbage"): "returned int 4096",
    ("encode_fault", "contract"): "returned dict {1: 1052672}, expected a mapping of register names",
    ("describe_syndrome", "raise"): "raised ZeroDivisionError",
    ("describe_syndrome", "garbage"): "returned str",
    ("describe_syndrome", "contract"): "expected kvmcore.Syndrome with fields and meanings mappings",
    ("parse_trace_event", "raise"): "raised ZeroDivisionError",
    ("parse_trace_event", "garbage"): "returned tuple",
    ("parse_trace_event", "contract"): "returned TraceEvent",
}


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The broken plugin installed as distribution kvmcore-broken (arch ``broken``)."""
    monkeypatch.delenv("KVMCORE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("KVMCORE_PLUGINS", raising=False)
    monkeypatch.delenv("KVMCORE_BROKEN", raising=False)
    make_dist(tmp_path / "site", "kvmcore-broken", {"kvmcore.arch": {"broken": "brokenarch"}}, {})
    activate(tmp_path / "site", monkeypatch)
    yield monkeypatch
    kvmcore.reset_plugins()


def call_hook(hook: str) -> None:
    """Drive the public API until ``hook`` is called."""
    vm = kvmcore.VM("broken")
    vcpu = vm.create_vcpu()
    if hook == "configure_vm":
        return
    vm.set_user_memory_region(0, 0x100000, MIB)
    if hook == "prepare_memory_region":
        return
    if hook == "encode_fault":
        vm.arch.encode_fault(vcpu, kvmcore.Access(0x101000, "write"))
    elif hook == "describe_syndrome":
        vm.arch.describe_syndrome(vm, {"gpa": 0x101000})
    elif hook == "parse_trace_event":
        vm.arch.parse_trace_event("broken_fault", "gpa 0x101000 access 1")
    elif hook == "kvm_arch_prepare_memory_fault_exit":  # called only under the design arch-hook
        fault = vm.arch.decode_fault(vcpu, {"gpa": 0x101000})
        vm.arch.kvm_arch_prepare_memory_fault_exit(vcpu, fault)
    else:
        vcpu.handle_fault({"gpa": 0x101000, "access": 1})


@pytest.mark.parametrize(("hook", "mode"), sorted(PROBLEMS))
def test_each_hook_failure_is_a_plugin_error(broken, hook: str, mode: str) -> None:
    broken.setenv("KVMCORE_BROKEN", f"{hook}={mode}")
    with pytest.raises(kvmcore.PluginError) as info:
        call_hook(hook)
    err = info.value
    assert err.hook == hook
    assert err.plugin.startswith("broken"), err.plugin
    assert PROBLEMS[hook, mode] in err.problem, err.problem
    assert str(err).startswith(f"plugin '{err.plugin}', hook {hook}: ")
    assert isinstance(err, kvmcore.KvmcoreError)


def test_the_same_calls_work_when_nothing_is_broken(broken) -> None:
    for hook in brokenarch.HOOKS[1:]:
        call_hook(hook)  # no exception: the failures above are the modes', not the driver's


def test_exit_wrapper_breaking_the_contract_is_a_fault_contract_error(broken) -> None:
    """A wrapper that changes memory_fault.gpa: the check of kvm_prepare_memory_fault_exit()."""
    broken.setenv("KVMCORE_BROKEN", "prepare_memory_fault_exit=contract")
    with pytest.raises(kvmcore.FaultContractError, match=r"memory_fault.gpa"):
        call_hook("prepare_memory_fault_exit")


@pytest.mark.parametrize("mode", ["raise", "garbage", "contract"])
def test_arch_info_failures_are_load_errors(broken, mode: str) -> None:
    broken.setenv("KVMCORE_BROKEN", f"arch_info={mode}")
    with pytest.raises(kvmcore.PluginLoadError, match=r"arch plugin 'broken'"):
        kvmcore.load_arch("broken")
    assert "FAILED TO LOAD" in cli(["plugins"])[1]


def test_wrong_raw_type_blames_the_caller_not_the_plugin(broken) -> None:
    vcpu = kvmcore.VM("broken").create_vcpu()
    with pytest.raises(TypeError, match=r"handle_fault: raw must be a mapping"):
        vcpu.handle_fault(None)  # type: ignore[arg-type]


# --- the command line ---------------------------------------------------------------------------
SCENARIO = """
name = "isolation"
[[memslots]]
gpa = 0x100000
size = "1M"
[[steps]]
access = "write"
gpa = 0x101000
expect = { outcome = "mapped" }
[[steps]]
access = "read"
gpa = 0x102000
expect = { outcome = "mapped" }
"""


@pytest.mark.parametrize(("hook", "mode"), [(h, m) for h, m in sorted(PROBLEMS)
                                             if h not in ("describe_syndrome", "parse_trace_event", "kvm_arch_prepare_memory_fault_exit")])
def test_run_shows_the_error_in_that_column_and_finishes_the_others(broken, tmp_path: Path, hook: str, mode: str) -> None:
    broken.setenv("KVMCORE_BROKEN", f"{hook}={mode}")
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    status, out, err = cli(["run", str(path), "--arch", "all", "--json"])
    assert status == 1
    report = json.loads(out)
    columns = {c["arch"]: c for c in report["arches"]}
    assert f"hook {hook}" in columns["broken"]["error"]
    for name in kvmcore.installed_arches():
        if name != "broken":
            assert columns[name]["error"] is None, columns[name]
            assert all(step["results"][name]["status"] == "ok" for step in report["steps"]), name
    assert f"kvmcore run: {path}: broken: " in err


def test_replay_drops_the_plugin_and_counts_every_line(broken, tmp_path: Path) -> None:
    broken.setenv("KVMCORE_BROKEN", "parse_trace_event=raise")
    arm = Path(__file__).parent.parent / "cli" / "traces" / "arm64-ftrace.txt"
    lines = arm.read_text().splitlines()
    broken_line = "       CPU 0/KVM-812     [001] .....    88.120000: broken_fault: gpa 0x1000 access 1"
    trace = tmp_path / "trace.txt"
    # before any arm64 line: while the trace's arch is unknown, every arch is asked
    trace.write_text("\n".join(lines[:12] + [broken_line, broken_line] + lines[12:]) + "\n")
    status, out, err = cli(["replay", str(trace), "--json", "--no-progress"])
    assert status == 0
    summary = json.loads(out)
    assert summary["lines"] == len(lines) + 2
    accounted = (summary["events"] + summary["header_lines"] + summary["lost_event_lines"] + summary["skipped"]
                 + sum(summary["other_events"].values()))
    assert accounted == summary["lines"]
    dropped = [n for n in summary["notes"] if n.startswith("arch plugin 'broken' dropped at line 13: ")]
    assert dropped and "hook parse_trace_event: raised ZeroDivisionError" in dropped[0], summary["notes"]
    # dropped while the first lines were probed for the trace's arch: both lines are then events
    # no arch decodes
    assert summary["other_events"].get("broken_fault") == 2
    assert summary["events_by_arch"]["arm64"]["guest_fault"] >= 1  # arm64's events still decoded


@pytest.mark.parametrize(("hook", "mode"), [("decode_fault", "raise"), ("decode_fault", "garbage"), ("describe_syndrome", "raise"),
                                             ("configure_vm", "garbage"), ("describe_syndrome", "contract")])
def test_decode_json_is_always_json_with_an_error(broken, hook: str, mode: str) -> None:
    broken.setenv("KVMCORE_BROKEN", f"{hook}={mode}")
    status, out, err = cli(["decode", "broken", "gpa=0x1000", "--json"])
    assert status == 1
    obj = json.loads(out)
    assert f"hook {hook}" in obj["error"] and obj["arch"] == "broken"
    assert err.startswith("kvmcore decode: ")


@pytest.mark.parametrize("argv", [["decode", "mips", "x=1", "--json"], ["decode", "arm64", "esr=0x9zz", "--json"],
                                  ["decode", "arm64", "--json"], ["decode", "arm64", "esr=0x93c08006", "--set", "granule=3K", "--json"]])
def test_decode_json_bad_input_is_json_too(argv: list[str]) -> None:
    status, out, _ = cli(argv)
    assert status == 1
    assert json.loads(out)["error"]


def test_a_hook_added_later_is_isolated_too(toy) -> None:
    """Isolation is generic: a hookspec the core does not know yet (as another change may add)
    gets it through the plugin manager, and through Arch._guard if bound on the fast path."""
    import pluggy

    spec = pluggy.HookspecMarker("kvmcore")

    class NewSpecs:
        @spec(firstresult=True)
        def kvm_arch_new_hook(self, vcpu):
            """A hook added after this test was written."""

    class Buggy:
        @kvmcore.hookimpl
        def kvm_arch_new_hook(self, vcpu):
            return {}["missing"]

    toy.pm.add_hookspecs(NewSpecs)
    toy.pm.register(Buggy(), name="buggy")
    with pytest.raises(kvmcore.PluginError) as info:
        toy.pm.hook.kvm_arch_new_hook(vcpu=None)
    assert (info.value.plugin, info.value.hook) == ("buggy", "kvm_arch_new_hook")
    assert info.value.problem == "raised KeyError: 'missing'"
    guarded = toy._guard("kvm_arch_new_hook", toy._caller("kvm_arch_new_hook"))
    with pytest.raises(kvmcore.PluginError, match=r"^plugin 'buggy', hook kvm_arch_new_hook: raised KeyError"):
        guarded(None)
