"""Plugin discovery through real entry points, isolation of broken plugins, allow/deny lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakedist import activate, arch_module, forget, make_dist

import kvmcore
from kvmcore import FaultContractError, PluginLoadError

MODULES = ["kvmcore_fake_alpha", "kvmcore_fake_beta", "kvmcore_fake_broken", "kvmcore_fake_badtype",
           "kvmcore_fake_dup", "kvmcore_fake_ext", "kvmcore_fake_typo", "kvmcore_fake_misnamed"]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KVMCORE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("KVMCORE_PLUGINS", raising=False)
    forget(MODULES)
    yield tmp_path
    forget(MODULES)
    kvmcore.reset_plugins()


def install(site: Path, monkeypatch, dist: str, arch: str, module: str, source: str) -> None:
    make_dist(site / dist, dist, {"kvmcore.arch": {arch: module}}, {module: source})
    activate(site / dist, monkeypatch)


def test_arch_found_through_its_entry_point(site, monkeypatch) -> None:
    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    assert "alpha" in kvmcore.installed_arches()
    vm = kvmcore.VM("alpha")
    assert (vm.arch.name, vm.arch.dist, vm.arch.version) == ("alpha", "kvmcore-fake-alpha", "0.1.0")
    assert kvmcore.load_arch("alpha") is vm.arch  # cached
    res = vm.create_vcpu().handle_fault({"gpa": 0x5000})
    assert (res.ret, res.exit_reason, res.outcome) == (0, 6, "mmio")


def test_broken_plugin_is_reported_and_others_load(site, monkeypatch) -> None:
    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    install(site, monkeypatch, "kvmcore-fake-broken", "broken", "kvmcore_fake_broken", "raise ImportError('needs libfoo')\n")
    install(site, monkeypatch, "kvmcore-fake-badtype", "badtype", "kvmcore_fake_badtype", arch_module("badtype", slot_type="int"))
    with pytest.raises(PluginLoadError) as info:
        kvmcore.load_arch("broken")
    assert str(info.value) == (
        "arch plugin 'broken' (distribution kvmcore-fake-broken) failed to import "
        "kvmcore_fake_broken: ImportError: needs libfoo"
    )
    with pytest.raises(FaultContractError, match=r"'badtype'.*field 'slot' must be Memslot \| None, found int"):
        kvmcore.load_arch("badtype")
    assert kvmcore.VM("alpha").arch.name == "alpha"
    rows = {row.name: row for row in kvmcore.list_plugins()}
    assert rows["alpha"].error is None and rows["alpha"].hooks == ["arch_info", "decode_fault"]
    assert "needs libfoo" in rows["broken"].error
    assert "field 'slot'" in rows["badtype"].error


def test_two_distributions_claiming_one_arch(site, monkeypatch) -> None:
    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    install(site, monkeypatch, "kvmcore-fake-dup", "alpha", "kvmcore_fake_dup", arch_module("alpha"))
    with pytest.raises(PluginLoadError) as info:
        kvmcore.load_arch("alpha")
    message = str(info.value)
    assert message.startswith("arch name 'alpha' is claimed by more than one distribution: ")
    assert "kvmcore-fake-alpha (kvmcore_fake_alpha)" in message and "kvmcore-fake-dup (kvmcore_fake_dup)" in message


def test_unknown_arch_lists_installed(site, monkeypatch) -> None:
    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    monkeypatch.setenv("KVMCORE_PLUGINS", "alpha")
    with pytest.raises(PluginLoadError, match=r"^unknown arch 'mips'; installed arches: alpha \(KVMCORE_PLUGINS=alpha\)$"):
        kvmcore.load_arch("mips")


def test_disable_autoload_and_allow_list(site, monkeypatch) -> None:
    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    install(site, monkeypatch, "kvmcore-fake-beta", "beta", "kvmcore_fake_beta", arch_module("beta"))
    monkeypatch.setenv("KVMCORE_PLUGINS", "beta")
    assert kvmcore.installed_arches() == ["beta"]
    with pytest.raises(PluginLoadError, match="unknown arch 'alpha'"):
        kvmcore.load_arch("alpha")
    monkeypatch.delenv("KVMCORE_PLUGINS")
    monkeypatch.setenv("KVMCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    kvmcore.reset_plugins()
    assert kvmcore.installed_arches() == []
    with pytest.raises(PluginLoadError, match=r"installed arches: none \(KVMCORE_DISABLE_PLUGIN_AUTOLOAD is set\)"):
        kvmcore.load_arch("beta")


def test_misspelled_hook_is_refused(site, monkeypatch) -> None:
    source = arch_module("typo") + "\n@hookimpl\ndef decode_faults(vcpu, raw):\n    return None\n"
    install(site, monkeypatch, "kvmcore-fake-typo", "typo", "kvmcore_fake_typo", source)
    with pytest.raises(PluginLoadError, match=r"arch plugin 'typo'.*unknown hook 'decode_faults'"):
        kvmcore.load_arch("typo")


def test_entry_point_name_must_match_arch_info(site, monkeypatch) -> None:
    install(site, monkeypatch, "kvmcore-fake-misnamed", "gamma", "kvmcore_fake_misnamed", arch_module("delta"))
    with pytest.raises(PluginLoadError, match=r"entry point is named 'gamma' but arch_info\(\) says 'delta'"):
        kvmcore.load_arch("gamma")


EXTENSION = '''
import kvmcore
from kvmcore import hookimpl
seen = []

@hookimpl(wrapper=True)
def faultin_pfn(vcpu, fault):
    result = yield
    seen.append((vcpu.vm.arch.name, fault.gfn, result.outcome))
    return result
'''


def test_extension_plugins_are_registered_with_every_arch(site, monkeypatch) -> None:
    make_dist(site / "ext", "kvmcore-fake-ext", {"kvmcore.plugins": {"counter": "kvmcore_fake_ext"}}, {"kvmcore_fake_ext": EXTENSION})
    activate(site / "ext", monkeypatch)
    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    vm = kvmcore.VM("alpha")
    vm.create_vcpu().handle_fault({"gpa": 0x7000})
    import kvmcore_fake_ext

    assert kvmcore_fake_ext.seen == [("alpha", 7, "mmio")]
    rows = {row.name: row for row in kvmcore.list_plugins()}
    assert rows["counter"].kind == "extension" and rows["counter"].wrappers == ["faultin_pfn"]


def test_two_distributions_are_listed_and_one_can_be_picked(site, monkeypatch) -> None:
    """Refused by default, both rows shown; KVMCORE_PLUGINS=alpha=<dist> picks one without
    restricting the other plugins (issue 14)."""
    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    install(site, monkeypatch, "kvmcore-fake-dup", "alpha", "kvmcore_fake_dup", arch_module("alpha"))
    install(site, monkeypatch, "kvmcore-fake-beta", "beta", "kvmcore_fake_beta", arch_module("beta"))
    rows = [r for r in kvmcore.list_plugins() if r.name == "alpha"]
    assert sorted(r.dist for r in rows) == ["kvmcore-fake-alpha", "kvmcore-fake-dup"]
    for row in rows:
        assert row.error is not None and "claimed by more than one distribution" in row.error
        assert row.error.endswith("pick one with KVMCORE_PLUGINS=alpha=<distribution>")

    monkeypatch.setenv("KVMCORE_PLUGINS", "alpha=kvmcore_fake_dup")  # spelt with _, as pip may show it
    kvmcore.reset_plugins()
    arch = kvmcore.load_arch("alpha")
    assert (arch.dist, arch.plugin.__name__) == ("kvmcore-fake-dup", "kvmcore_fake_dup")
    assert kvmcore.load_arch("beta").name == "beta"  # a pick alone restricts nothing
    rows = {r.dist: r for r in kvmcore.list_plugins() if r.name == "alpha"}
    assert rows["kvmcore-fake-dup"].error is None and rows["kvmcore-fake-dup"].hooks == ["arch_info", "decode_fault"]
    assert rows["kvmcore-fake-alpha"].error == "not used: KVMCORE_PLUGINS picks distribution kvmcore-fake-dup for arch 'alpha'"

    monkeypatch.setenv("KVMCORE_PLUGINS", "alpha=kvmcore-fake-dup,beta")  # with a name: an allow-list
    kvmcore.reset_plugins()
    assert kvmcore.installed_arches() == ["alpha", "beta"]
    monkeypatch.setenv("KVMCORE_PLUGINS", "alpha=kvmcore-gamma")
    kvmcore.reset_plugins()
    with pytest.raises(PluginLoadError, match=r"picks distribution 'kvmcore-gamma' for arch 'alpha', but it is claimed by: .*kvmcore-fake-alpha"):
        kvmcore.load_arch("alpha")


def test_plugins_command_shows_both_rows(site, monkeypatch, capsys) -> None:
    from kvmcore.cli.main import main

    install(site, monkeypatch, "kvmcore-fake-alpha", "alpha", "kvmcore_fake_alpha", arch_module("alpha"))
    install(site, monkeypatch, "kvmcore-fake-dup", "alpha", "kvmcore_fake_dup", arch_module("alpha"))
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "kvmcore-fake-alpha" in out and "kvmcore-fake-dup" in out
    assert out.count("FAILED TO LOAD: arch name 'alpha' is claimed by more than one distribution") == 2
