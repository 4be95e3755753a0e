"""The facade's direct calls behave exactly as pluggy's hook call, the oracle here: same result,
same order of calls, same exception."""

from __future__ import annotations

import pytest
import toyarch

import kvmcore
from kvmcore import hookimpl


def both(arch: kvmcore.Arch, vcpu, fault) -> tuple[object, object]:
    """(what the facade's direct path gives, what pluggy gives) for faultin_pfn."""
    assert arch._faultin_pfn is not None
    try:
        direct = arch.faultin_pfn(vcpu, fault)
    except Exception as exc:  # compare exceptions by type and text
        direct = (type(exc), str(exc))
    try:
        oracle = arch.pm.hook.faultin_pfn(vcpu=vcpu, fault=fault)
    except Exception as exc:
        oracle = (type(exc), str(exc))
    return direct, oracle


@pytest.fixture
def setup():
    arch = kvmcore.load_arch(toyarch)
    vm = kvmcore.VM(arch)
    vm.set_user_memory_region(0, 0, 0x10000)
    vcpu = vm.create_vcpu()
    fault = arch.decode_fault(vcpu, {"gpa": 0x2000})
    fault.slot = vm.gfn_to_memslot(fault.gfn)
    return arch, vcpu, fault


def test_order_and_first_result(setup) -> None:
    arch, vcpu, fault = setup
    calls: list[str] = []

    class Passes:
        @hookimpl(tryfirst=True)
        def faultin_pfn(self, fault):  # a subset of the arguments
            calls.append("tryfirst")

    class Answers:
        @hookimpl
        def faultin_pfn(self, vcpu, fault):
            calls.append("answers")
            return kvmcore.Retry("answered")

    arch.pm.register(Answers(), name="answers")
    arch.pm.register(Passes(), name="passes")
    direct, oracle = both(arch, vcpu, fault)
    assert direct == oracle == kvmcore.Retry("answered")
    assert calls == ["tryfirst", "answers"] * 2  # the core default (trylast) never ran


def test_an_implementation_over_the_default_passes_on_none(setup) -> None:
    """Two implementations (an arch's over the core's trylast default), the commonest case, which
    the facade calls with named arguments: a None from the first runs the default, as in pluggy."""
    arch, vcpu, read = setup
    write = arch.decode_fault(vcpu, {"gpa": 0x2000, "access": 1})
    write.slot = read.slot
    calls: list[str] = []

    class WritesOnly:
        @hookimpl
        def faultin_pfn(self, vcpu, fault):
            calls.append("write" if fault.write else "read")
            return kvmcore.Retry("answered") if fault.write else None

    arch.pm.register(WritesOnly(), name="writes-only")
    direct, oracle = both(arch, vcpu, write)
    assert direct == oracle == kvmcore.Retry("answered")
    direct, oracle = both(arch, vcpu, read)
    assert direct == oracle
    assert type(direct) is kvmcore.Mapped  # the core default answered the read
    assert calls == ["write", "write", "read", "read"]


def test_wrappers_nest_and_see_the_result(setup) -> None:
    arch, vcpu, fault = setup
    calls: list[str] = []

    class Outer:
        @hookimpl(wrapper=True, tryfirst=True)
        def faultin_pfn(self, vcpu, fault):
            calls.append("outer in")
            result = yield
            calls.append(f"outer out {result.outcome}")
            return kvmcore.Retry("outer:" + result.outcome)

    class Inner:
        @hookimpl(wrapper=True)
        def faultin_pfn(self, fault):
            calls.append("inner in")
            result = yield
            calls.append("inner out")
            return result

    arch.pm.register(Inner(), name="inner")
    arch.pm.register(Outer(), name="outer")
    direct, oracle = both(arch, vcpu, fault)
    assert direct == oracle == kvmcore.Retry("outer:mapped")
    assert calls == ["outer in", "inner in", "inner out", "outer out mapped"] * 2


def test_wrapper_sees_and_may_swallow_exceptions(setup) -> None:
    arch, vcpu, fault = setup

    class Boom:
        @hookimpl
        def faultin_pfn(self):
            raise KeyError("boom")

    class Catcher:
        @hookimpl(wrapper=True)
        def faultin_pfn(self):
            try:
                return (yield)
            except KeyError as exc:
                return kvmcore.Retry(f"caught {exc}")

    arch.pm.register(Boom(), name="boom")
    direct, oracle = both(arch, vcpu, fault)
    # isolated on both paths: the plugin's KeyError becomes a PluginError naming it and the hook
    assert direct == oracle == (kvmcore.PluginError, "plugin 'boom', hook faultin_pfn: raised KeyError: 'boom'")
    arch.pm.register(Catcher(), name="catcher")
    direct, oracle = both(arch, vcpu, fault)
    assert direct == oracle == kvmcore.Retry("caught 'boom'")


def test_wrapper_that_yields_twice_or_never(setup) -> None:
    arch, vcpu, fault = setup

    class Twice:
        @hookimpl(wrapper=True)
        def faultin_pfn(self):
            yield
            yield

    arch.pm.register(Twice(), name="twice")
    direct, oracle = both(arch, vcpu, fault)
    # pluggy raises RuntimeError, which the manager's guard turns into PluginError like the direct path
    assert direct[0] is oracle[0] is kvmcore.PluginError
    assert "has second yield" in direct[1] and "has second yield" in oracle[1]
    assert direct[1].startswith("plugin 'twice', hook faultin_pfn: ")


def test_fast_path_is_rebuilt_on_register_and_off_while_tracing(setup) -> None:
    arch, vcpu, fault = setup
    plain = arch._faultin_pfn
    lines: list[str] = []
    kvmcore.enable_hook_tracing(lines.append)
    assert arch._faultin_pfn is not plain  # through pluggy while tracing
    arch.faultin_pfn(vcpu, fault)
    assert any("faultin_pfn [hook]" in line for line in lines)
    kvmcore.disable_hook_tracing()

    class Late:
        @hookimpl(tryfirst=True)
        def faultin_pfn(self):
            return kvmcore.Retry("late")

    arch.pm.register(Late(), name="late")
    assert arch.faultin_pfn(vcpu, fault) == kvmcore.Retry("late")
