"""kvmcore's pytest plugin: the conformance kit's options and fixtures.

Registered through the ``pytest11`` entry point ``kvmcore``, so it is active in every pytest run
of an environment where kvmcore is installed (``-p no:kvmcore`` turns it off). It adds:

* ``--kvmcore-arch NAME``: the arch the ``kvmcore_*`` fixtures use (an installed arch name, or a
  dotted module path of an unpublished plugin; also the ini option ``kvmcore_arch``);
* ``--kvmcore-conformance NAME``: run the suite shipped in :mod:`kvmcore.testing.suite` against
  arch ``NAME`` (instead of the configured test paths, or beside the paths given);
* ``--kvmcore-setting KEY=VALUE``: a VM setting for ``kvmcore_vm`` (repeatable);
* ``--kvmcore-examples N``: hypothesis examples per property check (default 200).

Fixtures: ``kvmcore_arch_plugin`` (override it to choose the arch from a test module or
conftest), ``kvmcore_arch``, ``kvmcore_vm_settings``, ``kvmcore_vm``, ``kvmcore_layout``,
``kvmcore_vcpu``, ``kvmcore_expected_failures`` (override it to declare known deviations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import kvmcore
from kvmcore.testing import _kit

SUITE = Path(__file__).with_name("suite.py")
DEFAULT_EXAMPLES = 200


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kvmcore", "kvmcore arch plugin conformance")
    group.addoption(
        "--kvmcore-arch",
        dest="kvmcore_arch",
        metavar="NAME",
        help="arch under test for the kvmcore_* fixtures: an installed arch name, or a dotted "
        "module path of an unpublished plugin (pkg.module, or module: for a top-level module)",
    )
    group.addoption(
        "--kvmcore-conformance",
        dest="kvmcore_conformance",
        metavar="NAME",
        help="run kvmcore's conformance suite against arch NAME",
    )
    group.addoption(
        "--kvmcore-setting",
        dest="kvmcore_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a VM setting for kvmcore_vm (repeatable); VALUE is an int if it parses as one",
    )
    group.addoption(
        "--kvmcore-examples",
        dest="kvmcore_examples",
        type=int,
        default=DEFAULT_EXAMPLES,
        metavar="N",
        help=f"hypothesis examples per conformance property (default {DEFAULT_EXAMPLES})",
    )
    parser.addini("kvmcore_arch", "arch under test for the kvmcore_* fixtures (as --kvmcore-arch)")


def pytest_configure(config: pytest.Config) -> None:
    _kit.forget_built_arches()
    name = config.getoption("kvmcore_conformance")
    if not name:
        return
    suite = str(SUITE)
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        if suite not in config.args:
            config.args.append(suite)
    else:  # testpaths or the invocation directory: run the suite alone
        config.args[:] = [suite]


def pytest_unconfigure(config: pytest.Config) -> None:
    _kit.forget_built_arches()


def pytest_report_header(config: pytest.Config) -> str | None:
    selector = _selector_from_config(config)
    if selector is None:
        return None
    return f"kvmcore {kvmcore.__version__}: arch under test {selector} (installed arches: {', '.join(kvmcore.installed_arches()) or 'none'})"


def _selector_from_config(config: pytest.Config) -> str | None:
    return config.getoption("kvmcore_conformance") or config.getoption("kvmcore_arch") or config.getini("kvmcore_arch") or None


def _parse_settings(items: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise pytest.UsageError(f"--kvmcore-setting {item!r}: expected KEY=VALUE")
        try:
            settings[key] = int(value, 0)
        except ValueError:
            settings[key] = value
    return settings


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def kvmcore_arch_plugin(request: pytest.FixtureRequest) -> Any:
    """What chooses the arch under test: a name, a dotted module path or a plugin object.

    The default comes from ``--kvmcore-conformance``/``--kvmcore-arch``/the ``kvmcore_arch``
    ini option. Override it in a test module or conftest to pin the arch::

        @pytest.fixture
        def kvmcore_arch_plugin():
            return "loongarch"          # or the plugin module itself
    """
    selector = _selector_from_config(request.config)
    if selector is None:
        pytest.fail(
            "kvmcore: no arch under test: pass --kvmcore-arch NAME (or --kvmcore-conformance NAME), "
            "set the kvmcore_arch ini option, or override the kvmcore_arch_plugin fixture",
            pytrace=False,
        )
    return selector


@pytest.fixture
def kvmcore_arch(kvmcore_arch_plugin: Any) -> kvmcore.Arch:
    """The loaded arch under test (``kvmcore.Arch``)."""
    try:
        return _kit.resolve_arch(kvmcore_arch_plugin)
    except (kvmcore.PluginLoadError, kvmcore.FaultContractError) as exc:
        _kit.fail(f"kvmcore: arch {_kit.describe_selector(kvmcore_arch_plugin)} cannot be loaded: {exc}")


@pytest.fixture
def kvmcore_vm_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The VM settings ``kvmcore_vm`` is created with (``--kvmcore-setting``; override or
    parametrize it to run the suite under several settings, e.g. every arm64 granule)."""
    return _parse_settings(request.config.getoption("kvmcore_settings"))


@pytest.fixture
def kvmcore_layout(kvmcore_arch: kvmcore.Arch, kvmcore_vm_settings: dict[str, Any]) -> _kit.Layout:
    """A fresh VM of the arch under test with :func:`kvmcore.testing.setup_default_layout`'s memslots."""
    vm = kvmcore.VM(kvmcore_arch, **kvmcore_vm_settings)
    return _kit.setup_default_layout(vm)


@pytest.fixture
def kvmcore_vm(kvmcore_layout: _kit.Layout) -> kvmcore.VM:
    """A fresh ``kvmcore.VM`` of the arch under test with the default memslot layout."""
    return kvmcore_layout.vm


@pytest.fixture
def kvmcore_vcpu(kvmcore_vm: kvmcore.VM) -> kvmcore.VCPU:
    """A vCPU of ``kvmcore_vm``."""
    return kvmcore_vm.create_vcpu()


@pytest.fixture
def kvmcore_expected_failures() -> dict[str, str]:
    """Suite tests the arch under test is known to fail, ``{"TestClass::test_name": reason}``
    (``"TestClass::test_name[param]"`` for one parameter). Each is marked ``xfail(strict=True)``:
    the report shows the deviation, and a fix turns it into a failure until the entry goes."""
    return {}


@pytest.fixture
def kvmcore_examples(request: pytest.FixtureRequest) -> int:
    """Hypothesis examples per conformance property (``--kvmcore-examples``)."""
    return int(request.config.getoption("kvmcore_examples"))


@pytest.fixture
def kvmcore_kit(kvmcore_arch: kvmcore.Arch, kvmcore_layout: _kit.Layout, kvmcore_vcpu: kvmcore.VCPU) -> _kit.Kit:
    """The arch, VM, layout and vCPU together with the suite's checks."""
    return _kit.Kit(kvmcore_arch, kvmcore_layout.vm, kvmcore_vcpu, kvmcore_layout)
