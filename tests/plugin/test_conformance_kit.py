"""The conformance kit (``kvmcore.testing``) run by pytester against the toy arch and broken toys.

The toy passes; each broken variant fails with the message the kit promises, and the documented
arch differences (hwpoison as SIGBUS, an emulated no-slot access, is_private from the memory
attributes) are accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakedist import activate, forget, make_dist

import kvmcore

pytest_plugins = ["pytester"]

TOY_SOURCE = (Path(__file__).parents[1] / "toyarch.py").read_text()
MODULES = ["kvmcore_kit_toy", "kvmcore_kit_badtype", "toy_variants"]

# Plugin objects built from the toy: each variant is the toy plus one change.
VARIANTS = '''
import types
import toyarch
import kvmcore
from kvmcore import Exit, Mapped, Retry, hookimpl


def variant(**hooks):
    base = dict(arch_info=toyarch.arch_info, decode_fault=toyarch.decode_fault, encode_fault=toyarch.encode_fault)
    base.update(hooks)
    return types.SimpleNamespace(**base)


@hookimpl(wrapper=True)
def gpa_wrapper(vcpu, fault):
    common = yield
    vcpu.kvm_run.memory_fault.gpa += 8
    return common


@hookimpl(wrapper=True)
def consistent_gpa_wrapper(vcpu, fault):
    """Changes gpa in kvm_run and in the returned value alike: the core cannot see it."""
    common = yield
    vcpu.kvm_run.memory_fault.gpa = common.gpa + 8
    return kvmcore.MemoryFault(common.flags, common.gpa + 8, common.size)


@hookimpl
def decode_loses_write(vcpu, raw):
    fault = toyarch.decode_fault(vcpu, raw)
    fault.write = False
    return fault


@hookimpl(wrapper=True)
def maps_poison(vcpu, fault):
    result = yield
    if result.outcome == "hwpoison":
        hva = fault.slot.gfn_to_hva(fault.gfn)
        pfn = vcpu.vm.host.find_vma(hva).pfn(hva, vcpu.vm.page_shift)
        return Mapped(pfn, True, vcpu.vm.page_size)
    return result


@hookimpl(wrapper=True)
def sigbus_on_poison(vcpu, fault):
    """x86/arm64/RISC-V on shared memory: SIGBUS (BUS_MCEERR_AR) and resume."""
    result = yield
    if result.outcome == "hwpoison" and not fault.is_private:
        kvmcore.send_sig_mceerr(vcpu, fault.slot.gfn_to_hva(fault.gfn), vcpu.vm.page_shift)
        return Retry("hwpoison_sigbus")
    return result


@hookimpl(wrapper=True)
def bare_efault_on_poison(vcpu, fault):
    result = yield
    if result.outcome == "hwpoison":
        vcpu.kvm_run.exit_reason = 0
        return Exit(-14, "efault")
    return result


@hookimpl(wrapper=True)
def emulates_no_slot(vcpu, fault):
    """An arch that completes MMIO in the kernel (a named outcome, no exit)."""
    result = yield
    if result.outcome == "mmio":
        vcpu.kvm_run.exit_reason = 0
        return Retry("emulated_in_kernel")
    return result


@hookimpl
def decode_private_from_attributes(vcpu, raw):
    fault = toyarch.decode_fault(vcpu, raw)
    fault.is_private = vcpu.vm.mem_is_private(fault.gfn)
    return fault


@hookimpl(wrapper=True)
def skips_userfault(vcpu, fault):
    slot = fault.slot
    if slot is not None and slot.userfault_bitmap is not None:
        saved, slot.flags = slot.flags, slot.flags & ~kvmcore.abi.KVM_MEM_USERFAULT
        try:
            return (yield)
        finally:
            slot.flags = saved
    return (yield)


@hookimpl
def traced_arch_info():
    import dataclasses
    return dataclasses.replace(toyarch.arch_info(), trace_patterns={"toy_fault": "gpa 0x[0-9a-f]+"})


@hookimpl
def parse_cut(event, text):
    raise ValueError(f"{event}: not its format: {text[:40]!r}... ({len(text):,} characters)")


@hookimpl
def parse_echo(event, text):
    raise ValueError(f"{event}: not its format: {text!r}")


PLUGINS = {
    "toy": variant(),
    "trace_cut": variant(arch_info=traced_arch_info, parse_trace_event=parse_cut),
    "trace_echo": variant(arch_info=traced_arch_info, parse_trace_event=parse_echo),
    "gpa": variant(prepare_memory_fault_exit=gpa_wrapper),
    "consistent_gpa": variant(prepare_memory_fault_exit=consistent_gpa_wrapper),
    "write": variant(decode_fault=decode_loses_write),
    "poison": variant(faultin_pfn=maps_poison),
    "sigbus": variant(faultin_pfn=sigbus_on_poison),
    "bare_efault": variant(faultin_pfn=bare_efault_on_poison),
    "emulated": variant(faultin_pfn=emulates_no_slot),
    "attributes": variant(decode_fault=decode_private_from_attributes),
    "userfault": variant(faultin_pfn=skips_userfault),
}
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KVMCORE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("KVMCORE_PLUGINS", raising=False)
    monkeypatch.delenv("KVMCORE_TRACE_HOOKS", raising=False)
    forget(MODULES)
    yield tmp_path / "site"
    forget(MODULES)
    kvmcore.reset_plugins()


def run_variant(pytester: pytest.Pytester, name: str, *args: str, expected: dict[str, str] | None = None) -> pytest.RunResult:
    """Run the suite from a test file whose kvmcore_arch_plugin fixture returns a plugin object."""
    pytester.makepyfile(toy_variants=VARIANTS)
    pytester.makepyfile(
        test_variant=f"""
        import pytest
        import toy_variants
        from kvmcore.testing.suite import *  # noqa: F403

        @pytest.fixture
        def kvmcore_arch_plugin():
            return toy_variants.PLUGINS[{name!r}]

        @pytest.fixture
        def kvmcore_expected_failures():
            return {expected or {}!r}
        """
    )
    return pytester.runpytest("-p", "no:cacheprovider", "--kvmcore-examples", "50", *args)


def failure_lines(result: pytest.RunResult) -> str:
    return "\n".join(line for line in result.outlines if line.startswith(("kvmcore conformance", "  fix:")))


# --- the toy passes ------------------------------------------------------------------------
def test_conformance_option_runs_the_suite_against_an_installed_arch(pytester: pytest.Pytester, site: Path, monkeypatch) -> None:
    make_dist(site, "kvmcore-kit-toy", {"kvmcore.arch": {"toy": "kvmcore_kit_toy"}}, {"kvmcore_kit_toy": TOY_SOURCE})
    activate(site, monkeypatch)
    pytester.makepyfile(test_unrelated="def test_not_collected():\n    assert False\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--kvmcore-conformance", "toy", "-rs")
    # describe_syndrome is optional; the toy has none. TestExitDesigns: upstream and the three designs
    # the toy declares (v3-helper, rwx-flags, annotate-efault) x read/write = 8, plus the no-bare-EFAULT
    # check = 9 more passed; arch-hook and arm64-esr x 2 = 4 more skipped.
    result.assert_outcomes(passed=36, skipped=6)
    result.stdout.fnmatch_lines(["*arch under test toy*", "*[[]describe-syndrome[]] arch 'toy': implements no describe_syndrome hook*"])
    assert "test_not_collected" not in result.stdout.str()


def test_plugin_object_through_the_fixture(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "toy")
    result.assert_outcomes(passed=36, skipped=6)


def test_dotted_module_path_selects_an_unpublished_plugin(pytester: pytest.Pytester, site: Path) -> None:
    pytester.mkpydir("toypkg")
    (pytester.path / "toypkg" / "plugin.py").write_text(TOY_SOURCE)
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:cacheprovider", "--kvmcore-conformance", "toypkg.plugin", "--kvmcore-examples", "20")
    result.assert_outcomes(passed=36, skipped=6)


def test_fixtures_give_a_vm_with_the_default_layout(pytester: pytest.Pytester, site: Path) -> None:
    pytester.makepyfile(
        test_fixtures="""
        import kvmcore, toyarch

        def test_layout(kvmcore_vm, kvmcore_vcpu, kvmcore_layout, kvmcore_arch):
            assert kvmcore_arch.name == "toy" and kvmcore_vcpu.vm is kvmcore_vm is kvmcore_layout.vm
            assert [s.id for s in kvmcore_vm.memslots] == [0, 1, 2, 3]
            assert kvmcore_vm.gfn_to_memslot(kvmcore_layout.mmio_gpa >> 12) is None
            res = kvmcore_vcpu.handle_fault({"gpa": kvmcore_layout.ram_gpa, "access": 1})
            assert res.outcome == "mapped"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--kvmcore-arch", "toyarch:")
    result.assert_outcomes(passed=1)


def test_no_arch_chosen_is_an_error_that_says_how(pytester: pytest.Pytester, site: Path) -> None:
    pytester.makepyfile(test_needs_arch="def test_it(kvmcore_vm):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*kvmcore: no arch under test: pass --kvmcore-arch NAME*"])


def test_unknown_arch_lists_the_installed_ones(pytester: pytest.Pytester, site: Path) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--kvmcore-conformance", "mips", "-k", "contract or complete")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*[[]fault-contract[]] arch 'mips' does not load: unknown arch 'mips'; installed arches: *"])


# --- broken toys fail with the designed messages ---------------------------------------------
def test_wrapper_that_changes_gpa(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "gpa")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 6
    text = failure_lines(result)
    assert (
        "kvmcore conformance [userfault] arch 'toy': 4-byte read of gpa 0x42003010 (not_present): arch plugin 'toy' "
        "breaks the fault contract: field 'memory_fault.gpa' must be 0x42003000 as the common helper set it: "
        "a wrapper changed it (under design 'v3-helper+syndrome' common code owns exit_reason, flags, gpa and "
        "size; wrappers may write the syndrome extension (kvm_run bytes 56-95)), found 0x42003008"
    ) in text
    assert (
        "  fix: a prepare_memory_fault_exit wrapper (@hookimpl(wrapper=True)) may add to kvm_run only after "
        "`common = yield` (kvmcore's syndrome extension, docs/syndrome.md); it must never write "
        "memory_fault.flags, .gpa or .size and must return `common` unchanged"
    ) in text
    result.stdout.fnmatch_lines(["FAILED *TestMemoryFaultExit::test_wrappers_leave_common_fields[[]shared[]]*"])


def test_wrapper_that_changes_gpa_and_its_result_alike(pytester: pytest.Pytester, site: Path) -> None:
    """The core's own check compares kvm_run with the returned value; the kit checks the design."""
    result = run_variant(pytester, "consistent_gpa")
    text = failure_lines(result)
    assert (
        "kvmcore conformance [userfault] arch 'toy': a 4-byte read of gpa 0x42003010 (not_present) with its userfault "
        "bit set: memory_fault.gpa is 0x42003008, the design fixes gpa = gfn << PAGE_SHIFT = 0x42003 << 12 = 0x42003000"
    ) in text
    assert "kvmcore conformance [memory-fault-exit] arch 'toy': kvm_prepare_memory_fault_exit for a 4-byte write of gpa 0x40006010 (not_present) returned MemoryFault(flags=0, gpa=1073766408, size=4096), the design fixes MemoryFault(flags=0, gpa=1073766400, size=4096)" in text


def test_decode_that_loses_write(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "write")
    result.stdout.fnmatch_lines(
        [
            "kvmcore conformance [[]round-trip[]] arch 'toy': decode_fault(encode_fault(*-byte write of gpa 0x* (*))) gave write=False, expected True",
            "    registers: {'gpa': *, 'access': 1, 'private': *}",
            "  fix: decode_fault must read write back from the registers encode_fault wrote for it (and encode_fault must write it)",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED *TestEncodeDecode::test_round_trip*"])


def test_faultin_that_maps_a_poisoned_page(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "poison", "-k", "hwpoison")
    result.assert_outcomes(failed=2, passed=1)  # shared read/write fail; the private (gmem) path is untouched
    result.stdout.fnmatch_lines(
        [
            "kvmcore conformance [[]hwpoison[]] arch 'toy': a 4-byte read of gpa 0x40005010 (not_present) to a poisoned page "
            "was mapped: ret=0, exit_reason=none (the guest resumes), outcome='mapped', mapped pfn 0x* size 0x1000 writable=True; "
            "stage 2 maps gfn 0x40005 -> pfn 0x* writable=True",
            "  fix: when kvm_faultin_pfn returns KVM_PFN_ERR_HWPOISON *never map the page",
        ]
    )


def test_hwpoison_as_a_bare_efault_fails(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "bare_efault", "-k", "hwpoison_shared")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*[[]hwpoison[]] arch 'toy': a 4-byte read of gpa 0x40005010 (not_present) to a poisoned page ended in neither a memory fault exit nor SIGBUS: ret=-14 (-EFAULT)*"]
    )


def test_userfault_not_checked(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "userfault", "-k", "userfault_shared")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "kvmcore conformance [[]userfault[]] arch 'toy': a 4-byte read of gpa 0x42003010 (not_present) with its userfault bit set was mapped: *",
            "  fix: call kvmcore.kvm_do_userfault(vcpu, fault) once fault.slot is known*",
        ]
    )


def test_broken_fault_type_fails_the_contract_check(pytester: pytest.Pytester, site: Path, monkeypatch) -> None:
    source = TOY_SOURCE.replace("    write: bool\n", "    write: int\n")
    make_dist(site, "kvmcore-kit-badtype", {"kvmcore.arch": {"toy": "kvmcore_kit_badtype"}}, {"kvmcore_kit_badtype": source})
    activate(site, monkeypatch)
    result = pytester.runpytest("-p", "no:cacheprovider", "--kvmcore-conformance", "toy")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1 and outcomes["errors"] == 41  # 28 + TestExitDesigns' 13
    result.stdout.fnmatch_lines(
        [
            "kvmcore conformance [[]fault-contract[]] arch 'toy': arch plugin 'toy' breaks the fault contract: field 'write' must be bool, found int",
            "  fix: declare the common fields in the fault dataclass exactly as `gfn: int`, `exec: bool`, `write: bool`, "
            "`is_private: bool`, `slot: Memslot | None = None` (types must match exactly: int is not bool)",
        ]
    )
    result.stdout.fnmatch_lines(["*kvmcore: arch 'toy' cannot be loaded: arch plugin 'toy' breaks the fault contract*"])


def test_a_parse_error_that_shows_a_long_texts_start_passes(pytester: pytest.Pytester, site: Path) -> None:
    run_variant(pytester, "trace_cut", "-k", "trace_parse_errors").assert_outcomes(passed=1)


def test_a_parse_error_that_echoes_a_long_text_fails_trace_errors(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "trace_echo", "-k", "trace_parse_errors")
    result.assert_outcomes(failed=1)
    assert "kvmcore conformance [trace-errors] arch 'toy': parse_trace_event('toy_fault', <99,996 characters not in its format>) raised a ValueError of" in failure_lines(result)


# --- documented arch differences are accepted ------------------------------------------------
def test_hwpoison_as_sigbus_is_accepted(pytester: pytest.Pytester, site: Path) -> None:
    run_variant(pytester, "sigbus").assert_outcomes(passed=36, skipped=6)


def test_no_slot_emulated_in_the_kernel_is_accepted(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "emulated", "-rs")
    result.assert_outcomes(passed=35, skipped=7)  # +9 passed, +4 skipped: TestExitDesigns
    result.stdout.fnmatch_lines(["*[[]kvm-run-bytes[]]*ended in 'emulated_in_kernel', not KVM_EXIT_MMIO*"])


def test_is_private_from_attributes_skips_the_mismatch_checks(pytester: pytest.Pytester, site: Path) -> None:
    result = run_variant(pytester, "attributes", "-rs")
    result.assert_outcomes(passed=34, skipped=8)  # +9 passed, +4 skipped: TestExitDesigns
    result.stdout.fnmatch_lines(
        ["*[[]private-mismatch[]] arch 'toy': decode_fault derives is_private from the memory attributes*so no private/shared mismatch can arise"]
    )


# --- known deviations ------------------------------------------------------------------------
def test_expected_failures_are_strict_xfails(pytester: pytest.Pytester, site: Path) -> None:
    expected = {"TestUserfault::test_userfault_shared": "known", "TestHwpoison::test_hwpoison_private": "fixed already"}
    result = run_variant(pytester, "userfault", "-k", "userfault_shared or hwpoison_private", expected=expected)
    result.assert_outcomes(xfailed=2, failed=1)
    result.stdout.fnmatch_lines(["*TestHwpoison.test_hwpoison_private*", "[[]XPASS(strict)[]] fixed already"])


# --- the exit designs (TestExitDesigns), checked against deliberately broken toy plugins ---------
class _ToyDeclaring:
    """toyarch, declaring extra designs in ArchInfo.designs."""

    def __init__(self, *designs: str) -> None:
        self.designs = designs

    @kvmcore.hookimpl
    def arch_info(self) -> kvmcore.ArchInfo:
        import dataclasses

        import toyarch

        return dataclasses.replace(toyarch.arch_info(), designs=self.designs)

    @kvmcore.hookimpl
    def decode_fault(self, vcpu, raw):
        import toyarch

        return toyarch.decode_fault(vcpu, raw)

    @kvmcore.hookimpl
    def encode_fault(self, vcpu, access):
        import toyarch

        return toyarch.encode_fault(vcpu, access)


class _ToyLeakyWrapper(_ToyDeclaring):
    """Writes a syndrome word whatever the design (the bug the upstream check catches)."""

    @kvmcore.hookimpl(wrapper=True)
    def prepare_memory_fault_exit(self, vcpu, fault):
        common = yield
        vcpu.kvm_run.syndrome.syndrome[0] = 0x1234
        return common


def _design_failure(plugin, design: str) -> str:
    from kvmcore.testing.suite import TestExitDesigns

    arch = kvmcore.load_arch(plugin)
    with pytest.raises(pytest.fail.Exception) as info:
        TestExitDesigns().test_userfault_exit_under_design(arch, {}, design, "write")
    return str(info.value)


def test_design_kit_arch_hook_declared_but_not_implemented() -> None:
    text = _design_failure(_ToyDeclaring("v3-helper", "arch-hook"), "arch-hook")
    assert text.startswith("kvmcore conformance [design arch-hook] arch 'toy': declares 'arch-hook' but implements no "
                           "kvm_arch_prepare_memory_fault_exit hook")


def test_design_kit_wrapper_writing_after_memory_fault_in_upstream_mode() -> None:
    # upstream: nothing owns kvm_run bytes 56-95; the wrapper wrote syndrome[0] (offset 64) = 0x1234
    text = _design_failure(_ToyLeakyWrapper("v3-helper"), "upstream")
    assert "kvmcore conformance [design upstream] arch 'toy': a 4-byte write of gpa 0x42005010 (not_present) with its " \
        "userfault bit set, under design 'upstream' common code owns exit_reason, flags, gpa and size; wrappers may " \
        "write nothing in kvm_run: kvm_run bytes 56-95 changed" in text


def test_design_kit_passes_a_correct_plugin() -> None:
    import toyarch

    from kvmcore.testing.suite import TestExitDesigns

    arch = kvmcore.load_arch(toyarch)
    for design in ("upstream", "v3-helper", "rwx-flags", "annotate-efault"):
        TestExitDesigns().test_userfault_exit_under_design(arch, {}, design, "write")
    TestExitDesigns().test_no_bare_efault_under_design(arch, {}, "annotate-efault")
