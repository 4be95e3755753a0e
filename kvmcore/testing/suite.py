"""kvmcore's conformance suite: the tests every arch plugin must pass.

Run it against an installed arch with ``pytest --kvmcore-conformance NAME``, or from the
plugin's own test file (SQLAlchemy's compliance-suite style)::

    import pytest
    from kvmcore.testing.suite import *  # noqa: F403

    @pytest.fixture
    def kvmcore_arch_plugin():
        return "loongarch"

The suite is strict where the design fixes behaviour (the fault contract, the common fields of
``KVM_EXIT_MEMORY_FAULT``, the userfault exit) and accepts the differences the kernels document
between arches (hwpoison as a memory fault or as SIGBUS; a no-slot access as an MMIO exit or a
named emulation outcome). Every failure says which check failed and what the plugin must
change. ``docs/writing-an-arch-plugin.md`` lists the checks.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

import pytest

import kvmcore
from kvmcore import Access
from kvmcore.testing._kit import (
    ALL_CAUSES,
    EFAULT,
    EHWPOISON,
    EINTR,
    KINDS,
    KVM_EXIT_INTR,
    KVM_EXIT_MEMORY_FAULT,
    KVM_EXIT_MMIO,
    KVM_EXIT_UNKNOWN,
    KVM_MEMORY_EXIT_FLAG_PRIVATE,
    KVM_MEMORY_EXIT_FLAG_USERFAULT,
    WRAPPER_FIX,
    Kit,
    _tail,
    describe_access,
    describe_result,
    describe_selector,
    fail,
    resolve_arch,
    setup_default_layout,
)

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is in kvmcore[test]
    raise ImportError(
        "kvmcore's conformance suite needs hypothesis: pip install 'kvmcore[test]' (or add hypothesis to your test dependencies)"
    ) from exc

__all__ = [
    "TestArchInfo",
    "TestEncodeDecode",
    "TestExitDesigns",
    "TestHookTracing",
    "TestHwpoison",
    "TestKvmRunLayout",
    "TestMemoryFaultExit",
    "TestNoSlot",
    "TestPrivateMismatch",
    "TestReadOnlySlot",
    "TestUserfault",
]

OFFSET = 0x10  # a byte offset inside the faulting page (8-byte aligned)
DATA_SIZES = (1, 2, 4, 8)
MAX_SETTING_COMBOS = 256


class ConformanceTests:
    """Base of the suite's classes: applies the arch's ``kvmcore_expected_failures``."""

    @pytest.fixture(autouse=True)
    def _kvmcore_expected_failure(self, request: pytest.FixtureRequest, kvmcore_expected_failures: Mapping[str, str]) -> None:
        names = (f"{type(self).__name__}::{request.function.__name__}", f"{type(self).__name__}::{request.node.name}")
        for key, reason in kvmcore_expected_failures.items():
            if key in names:
                request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


def _hypothesis_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# --- the arch's description ------------------------------------------------------------------
class TestArchInfo(ConformanceTests):
    """``arch_info`` and the fault type: what the loader checks, and more."""

    def test_fault_contract(self, kvmcore_arch_plugin: Any) -> None:
        """The fault type has the common fields with their exact types (KVM_ASSERT_TYPE_IS)."""
        label = describe_selector(kvmcore_arch_plugin)
        fields = "`gfn: int`, `exec: bool`, `write: bool`, `is_private: bool`, `slot: Memslot | None = None`"
        try:
            arch = resolve_arch(kvmcore_arch_plugin)
        except kvmcore.FaultContractError as exc:
            fail(
                f"kvmcore conformance [fault-contract] arch {label}: {exc}\n"
                f"  fix: declare the common fields in the fault dataclass exactly as {fields} "
                "(types must match exactly: int is not bool)"
            )
        except kvmcore.PluginLoadError as exc:
            fail(f"kvmcore conformance [fault-contract] arch {label} does not load: {exc}")
        fault_type = arch.info.fault_type
        if fault_type.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            fail(
                f"kvmcore conformance [fault-contract] arch {arch.name!r}: {fault_type.__name__} is a frozen dataclass, "
                "but the core assigns fault.slot after decode_fault\n  fix: use @dataclass(slots=True), not frozen=True"
            )

    def test_arch_info_complete(self, kvmcore_kit: Kit) -> None:
        kit = kvmcore_kit
        info = kit.arch.info
        check = "arch-info"
        if not isinstance(info.name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", info.name):
            kit.fail(check, f"name {info.name!r} is not a lower-case identifier", "name the arch as its entry point is named: lower-case letters, digits, _")
        if not isinstance(info.page_shift, int) or not 12 <= info.page_shift <= 16:
            kit.fail(check, f"page_shift {info.page_shift!r} is not 12..16 (4 KiB to 64 KiB pages)", "set ArchInfo.page_shift to the base page shift of the arch")
        if not isinstance(info.phys_bits, int) or not max(32, info.page_shift + 1) <= info.phys_bits <= 64:
            kit.fail(check, f"phys_bits {info.phys_bits!r} is not 32..64", "set ArchInfo.phys_bits to the guest physical address bits a fault can report")
        if not info.registers or not all(isinstance(r, str) and r for r in info.registers):
            kit.fail(check, f"registers {info.registers!r} is empty or holds non-strings", "list the raw register names decode_fault accepts in ArchInfo.registers")
        if not isinstance(info.description, str) or not info.description.strip() or "\n" in info.description:
            kit.fail(check, f"description {info.description!r} is not one non-empty line", "describe the arch in one line (`kvmcore plugins` shows it)")
        causes = tuple(info.causes)
        unknown = [c for c in causes if c not in ALL_CAUSES]
        if not causes or unknown or "not_present" not in causes:
            kit.fail(
                check,
                f"causes {causes!r} must be a non-empty subset of {ALL_CAUSES} containing 'not_present' (unknown: {unknown})",
                "list in ArchInfo.causes the stage-2 causes encode_fault can express",
            )
        if not isinstance(info.settings, Mapping):
            kit.fail(check, f"settings {info.settings!r} is not a mapping", "ArchInfo.settings maps a setting name to its accepted values, default first")
        for name, values in info.settings.items():
            if not isinstance(name, str) or not isinstance(values, tuple) or not values:
                kit.fail(check, f"setting {name!r}: accepted values {values!r} are not a non-empty tuple", "map each setting name to a tuple of accepted values, default first")

    def test_settings_are_accepted(self, kvmcore_arch: kvmcore.Arch) -> None:
        """Every declared value of every setting makes a VM (with some choice of the other settings,
        which may depend on each other); an undeclared setting is a ValueError naming it."""
        kit = Kit(kvmcore_arch, None, None, None)  # type: ignore[arg-type]
        check = "settings"
        declared = dict(kvmcore_arch.info.settings)
        for name, values in declared.items():
            others = [(other, vals) for other, vals in declared.items() if other != name]
            for value in values:
                errors: list[str] = []
                for combo in itertools.islice(itertools.product(*(vals for _, vals in others)), MAX_SETTING_COMBOS):
                    settings = {name: value, **{other: v for (other, _), v in zip(others, combo, strict=True)}}
                    try:
                        kvmcore.VM(kvmcore_arch, **settings)
                    except ValueError as exc:
                        errors.append(f"{settings}: {exc}")
                        continue
                    except Exception as exc:
                        kit.fail(check, f"VM(arch, **{settings}) raised {type(exc).__name__}: {exc}", "configure_vm must raise ValueError naming the setting it refuses")
                    break
                else:
                    kit.fail(
                        check,
                        f"no VM accepts {name}={value!r} with any combination of the other settings; first refusal: {errors[0] if errors else '?'}",
                        "configure_vm must accept every value ArchInfo.settings declares (or drop the value)",
                    )
        try:
            kvmcore.VM(kvmcore_arch, kvmcore_conformance_bogus=1)
        except ValueError as exc:
            message = str(exc)
        except Exception as exc:
            kit.fail(check, f"an unknown setting raised {type(exc).__name__}: {exc}", "raise ValueError naming the setting")
        else:
            kit.fail(check, "VM(arch, kvmcore_conformance_bogus=1) was accepted", "configure_vm must refuse settings the arch does not declare (ValueError)")
        if "kvmcore_conformance_bogus" not in message:
            kit.fail(check, f"the ValueError for an unknown setting does not name it: {message}", "name the setting and the accepted ones in the message")

    def test_hooks_implemented(self, kvmcore_kit: Kit) -> None:
        kit = kvmcore_kit
        hooks, wrappers = kit.arch.hooks_of(kit.arch.plugin)
        for hook in ("arch_info", "decode_fault", "encode_fault"):
            if hook not in hooks:
                kit.fail("hooks", f"does not implement {hook} (it implements {hooks}, wraps {wrappers})", f"add an @kvmcore.hookimpl function named {hook}")


# --- encode and decode -----------------------------------------------------------------------
class TestEncodeDecode(ConformanceTests):
    def test_encode_expresses_declared_causes(self, kvmcore_kit: Kit) -> None:
        """Each cause in ArchInfo.causes is expressible by some access (on a VM of the default
        settings); the others are ValueError."""
        kit = kvmcore_kit
        check = "encode-causes"
        gpa = kit.layout.page("ram", 2, OFFSET)
        for kind in ("read", "write"):
            kit.require_encode(check, Access(gpa, kind))
        info = kit.arch.info
        # ArchInfo.causes describes the arch; a VM type may express fewer (x86 TDX: no shared fetch)
        default_vm = all(kit.vm.settings.get(name) == values[0] for name, values in info.settings.items())
        for cause in ALL_CAUSES:
            declared = cause in kit.arch.info.causes
            encoded, refusals = [], []
            for kind in KINDS:
                access = Access(gpa, kind, cause)
                try:
                    raw = kit.encode(check, access)
                except ValueError as exc:
                    if not str(exc).strip():
                        kit.fail(check, f"encode_fault refused a {describe_access(access)} with an empty ValueError", "name the access the arch cannot express in the ValueError")
                    refusals.append(f"{kind}: {exc}")
                    continue
                encoded.append(kind)
                if not declared:
                    kit.fail(
                        check,
                        f"encode_fault expressed a {describe_access(access)} as {raw!r}, but ArchInfo.causes {tuple(kit.arch.info.causes)} does not list {cause!r}",
                        f"add {cause!r} to ArchInfo.causes, or raise ValueError for it",
                    )
            if declared and not encoded:
                for kind in KINDS:  # some VM types express an access only as private
                    try:
                        kit.encode(check, Access(gpa, kind, cause, private=True))
                    except ValueError as exc:
                        refusals.append(f"private {kind}: {exc}")
                    else:
                        encoded.append(kind)
                        break
            if declared and not encoded and default_vm:
                kit.fail(check, f"ArchInfo.causes lists {cause!r} but encode_fault refused every access kind: {refusals}", f"remove {cause!r} from ArchInfo.causes, or encode it")

    def test_round_trip(self, kvmcore_kit: Kit, kvmcore_examples: int) -> None:
        """decode_fault(encode_fault(access)) gives back gfn, write, exec and is_private."""
        kit = kvmcore_kit
        check = "round-trip"
        info = kit.arch.info
        causes = tuple(c for c in info.causes if c in ALL_CAUSES) or ("not_present",)
        top = (1 << info.phys_bits) - 1
        registers = set(info.registers)
        extra_keys = set(getattr(info, "extra_keys", ()))
        counts = {"encoded": 0, "refused": 0}

        @_hypothesis_settings(kvmcore_examples)
        @given(st.data())
        def round_trip(data: st.DataObject) -> None:
            kind = data.draw(st.sampled_from(KINDS), label="kind")
            access = Access(
                gpa=data.draw(st.integers(0, top), label="gpa"),
                kind=kind,
                cause=data.draw(st.sampled_from(causes), label="cause"),
                private=data.draw(st.booleans(), label="private"),
                size=data.draw(st.sampled_from(DATA_SIZES), label="size") if kind != "exec" else 4,
            )
            try:
                raw = kit.encode(check, access)
            except ValueError:
                counts["refused"] += 1
                return
            counts["encoded"] += 1
            extra = set(raw) - registers - extra_keys
            if extra or not set(raw) & registers:
                kit.fail(
                    check,
                    f"encode_fault({describe_access(access)}) returned keys {sorted(raw)}: "
                    + (f"{sorted(extra)} are in neither ArchInfo.registers {tuple(info.registers)} nor ArchInfo.extra_keys {tuple(info.extra_keys)}" if extra else f"none of ArchInfo.registers {tuple(info.registers)}"),
                    "list the syndrome registers decode_fault reads in ArchInfo.registers and the modelling inputs "
                    "(private, len, data...) in ArchInfo.extra_keys",
                )
            bad = {k: v for k, v in raw.items() if not isinstance(v, (int, str))}
            if bad:
                kit.fail(check, f"encode_fault returned non-integer register values {bad!r}", "raw registers are ints (a str only for a mode name such as x86's vendor)")
            kit.set_private(access.gpa, access.private)
            fault = kit.decode(check, raw, access)
            gfn = access.gpa >> kit.page_shift
            expected = {"gfn": gfn, "write": access.write, "exec": access.exec, "is_private": access.private}
            for field, want in expected.items():
                found = getattr(fault, field)
                if found != want:
                    kit.fail(
                        check,
                        f"decode_fault(encode_fault({describe_access(access)})) gave {field}={found!r}, expected {want!r}\n"
                        f"    registers: {raw!r}",
                        f"decode_fault must read {field} back from the registers encode_fault wrote for it (and encode_fault must write it)",
                    )

        round_trip()
        if counts["encoded"] == 0:
            kit.fail(check, f"encode_fault raised ValueError for all {counts['refused']} accesses drawn", "encode at least the accesses ArchInfo.causes says the arch can express")

    def test_decode_error_is_decode_error(self, kvmcore_kit: Kit) -> None:
        """Registers that are missing are a DecodeError with a message, not a KeyError."""
        kit = kvmcore_kit
        self._expect_decode_error(kit, {})

    def test_malformed_registers(self, kvmcore_kit: Kit, kvmcore_examples: int) -> None:
        """Any register set decodes to a valid fault or raises DecodeError with a message."""
        kit = kvmcore_kit
        base = dict(kit.require_encode("decode-errors", Access(kit.layout.page("ram", 2, OFFSET), "write")))
        names = sorted(k for k, v in base.items() if isinstance(v, int))
        values = st.one_of(
            st.integers(-(1 << 70), 1 << 70),
            st.sampled_from([-1, 0, 1, (1 << 32) - 1, 1 << 32, (1 << 64) - 1, 1 << 64]),
        )

        @_hypothesis_settings(kvmcore_examples)
        @given(st.data())
        def malformed(data: st.DataObject) -> None:
            raw: dict[str, Any] = dict(base)
            for name in names:
                choice = data.draw(st.sampled_from(("keep", "change", "drop")), label=f"{name} action")
                if choice == "change":
                    raw[name] = data.draw(values, label=name)
                elif choice == "drop":
                    del raw[name]
            if data.draw(st.booleans(), label="add unknown register"):
                raw["kvmcore_conformance_unknown"] = data.draw(values, label="unknown")
            self._decode_or_decode_error(kit, raw)

        malformed()

    @staticmethod
    def _decode_or_decode_error(kit: Kit, raw: Mapping[str, Any]) -> None:
        fault = _decode_checked(
            kit, raw, f"\n{_tail()}",
            "check the registers and raise kvmcore.DecodeError naming the register and the value "
            "(e.g. `esr=0x5a000000: EC 0x16 (HVC64) is not an abort`)",
        )
        if fault is not _REFUSED:
            kit.check_fault_value("decode-errors", fault, raw)

    @staticmethod
    def _expect_decode_error(kit: Kit, raw: Mapping[str, Any]) -> None:
        fault = _decode_checked(
            kit, raw, "", "raise kvmcore.DecodeError naming the missing register (e.g. `esr: missing`)"
        )
        if fault is not _REFUSED:
            kit.fail("decode-errors", f"decode_fault({raw!r}) with no registers gave {fault!r}", "raise kvmcore.DecodeError naming the registers that are missing")


    def test_describe_syndrome(self, kvmcore_kit: Kit) -> None:
        """If implemented (``kvmcore decode`` uses it): a JSON-ready Syndrome of this arch."""
        kit = kvmcore_kit
        check = "describe-syndrome"
        hooks, _ = kit.arch.hooks_of(kit.arch.plugin)
        if "describe_syndrome" not in hooks:
            kit.skip(check, "implements no describe_syndrome hook (optional; `kvmcore decode` needs it)")
        for kind in ("read", "write"):
            access = Access(kit.layout.page("ram", 2, OFFSET), kind)
            raw = kit.require_encode(check, access)
            try:
                syndrome = kit.arch.describe_syndrome(kit.vm, raw)
            except Exception as exc:
                kit.fail(check, f"describe_syndrome({raw!r}) raised {type(exc).__name__}: {exc}", "describe every register set encode_fault produces")
            if not isinstance(syndrome, kvmcore.Syndrome):
                kit.fail(check, f"describe_syndrome returned {type(syndrome).__name__}", "return kvmcore.Syndrome")
            if syndrome.arch != kit.name or not syndrome.guest_fault or syndrome.error is not None:
                kit.fail(
                    check,
                    f"describe_syndrome({describe_access(access)}) gave arch={syndrome.arch!r} guest_fault={syndrome.guest_fault} error={syndrome.error!r}",
                    f"a guest memory fault is Syndrome(arch={kit.name!r}, guest_fault=True, error=None)",
                )
            try:
                json.dumps(dict(syndrome.fields))
            except (TypeError, ValueError) as exc:
                kit.fail(check, f"Syndrome.fields is not JSON-ready: {exc}", "use ints, strs, bools and None as field values")
            missing = [k for k in syndrome.meanings if k not in syndrome.fields]
            if missing:
                kit.fail(check, f"Syndrome.meanings names fields {missing} that Syndrome.fields lacks", "give meanings only for fields you report")

    def test_trace_parse_errors_are_short(self, kvmcore_kit: Kit) -> None:
        """A long text that is not the event's format (a paste gone wrong): ``parse_trace_event``
        returns None or raises ValueError, whose message shows the text's start, not all of it.
        ``kvmcore replay`` keeps such messages while it rejoins wrapped lines, so echoing the
        text makes its memory grow with the input."""
        kit = kvmcore_kit
        check = "trace-errors"
        hooks, _ = kit.arch.hooks_of(kit.arch.plugin)
        events = list(kit.arch.info.trace_patterns)
        if "parse_trace_event" not in hooks or not events:
            kit.skip(check, "parses no trace events (no parse_trace_event hook or no ArchInfo.trace_patterns)")
        for event in events:
            text = f": {event}: " * (100_000 // (len(event) + 4))
            try:
                kit.arch.parse_trace_event(event, text)
            except ValueError as exc:
                if len(str(exc)) > TRACE_ERROR_MAX:
                    kit.fail(
                        check,
                        f"parse_trace_event({event!r}, <{len(text):,} characters not in its format>) raised a "
                        f"ValueError of {len(str(exc)):,} characters",
                        f"show the start of a long text and its length, e.g. with kvmcore.shown_text(text) (at most "
                        f"{TRACE_ERROR_MAX} characters in all)",
                    )
            except Exception as exc:
                kit.fail(check, f"parse_trace_event({event!r}, <{len(text):,} characters>) raised {type(exc).__name__}: "
                         f"{str(exc)[:200]}", "return None or raise ValueError for a text not in the event's format")


#: The longest message a conformance check accepts from ``parse_trace_event`` for a malformed text.
TRACE_ERROR_MAX = 1000


# --- the fault path --------------------------------------------------------------------------
class TestNoSlot(ConformanceTests):
    @pytest.mark.parametrize("kind", KINDS)
    def test_no_slot_access(self, kvmcore_kit: Kit, kind: str) -> None:
        """A shared access to a gfn with no memslot: KVM_EXIT_MMIO (phys_addr, len, is_write) or a
        named emulation outcome; never a mapping, never a memory fault."""
        kit = kvmcore_kit
        check = "no-slot"
        cause = "no_slot" if "no_slot" in kit.arch.info.causes else "not_present"
        access = Access(kit.layout.page("mmio", 0, OFFSET), kind, cause, data=0x12345678 if kind == "write" else 0)
        if kind == "exec":
            try:
                raw = kit.encode(check, access)
            except ValueError as exc:
                kit.skip(check, f"cannot express an instruction fetch from a gfn with no memslot: {exc}")
        else:
            raw = kit.require_encode(check, access)
        result = kit.handle(check, raw, access)
        kit.expect_mmio_or_emulation(check, result, access, f"a {describe_access(access)} (no memslot)")


class TestUserfault(ConformanceTests):
    @pytest.mark.parametrize("kind", ["read", "write"])
    def test_userfault_shared(self, kvmcore_kit: Kit, kind: str) -> None:
        """A set userfault bit: ret -EFAULT, KVM_EXIT_MEMORY_FAULT, flags 0x10, gpa = gfn << PAGE_SHIFT,
        size PAGE_SIZE, no mapping; after clearing the bit the same access is mapped."""
        kit = kvmcore_kit
        layout = kit.layout
        page = 3
        access = Access(layout.page("userfault", page, OFFSET), kind)
        raw = kit.require_encode("userfault", access)
        kvmcore.set_userfault_bits(layout.userfault_bitmap, [page])
        self._userfault_then_resolve(kit, access, raw, layout.userfault_bitmap, page, KVM_MEMORY_EXIT_FLAG_USERFAULT)

    @pytest.mark.parametrize("kind", ["read", "write"])
    def test_userfault_private(self, kvmcore_kit: Kit, kind: str) -> None:
        """The same for a private access to a guest_memfd slot: flags 0x18."""
        kit = kvmcore_kit
        layout = kit.layout
        page = 4
        access, raw = kit.private_access("userfault-private", layout.page("gmem", page, OFFSET), (kind,))
        kit.set_private(access.gpa, True)
        kvmcore.set_userfault_bits(layout.gmem_userfault_bitmap, [page])
        self._userfault_then_resolve(
            kit, access, raw, layout.gmem_userfault_bitmap, page, KVM_MEMORY_EXIT_FLAG_USERFAULT | KVM_MEMORY_EXIT_FLAG_PRIVATE
        )

    @staticmethod
    def _userfault_then_resolve(kit: Kit, access: Access, raw: Mapping[str, Any], bitmap: bytearray, page: int, flags: int) -> None:
        check = "userfault" if not flags & KVM_MEMORY_EXIT_FLAG_PRIVATE else "userfault-private"
        what = f"a {describe_access(access)} with its userfault bit set"
        fix = (
            "call kvmcore.kvm_do_userfault(vcpu, fault) once fault.slot is known (before faulting the page in) and "
            "return Exit(-EFAULT, 'userfault') when it returns True"
        )
        result = kit.handle(check, raw, access)
        kit.expect_no_mapping(check, result, access.gpa, what, fix)
        kit.expect_memory_fault(check, result, access.gpa, flags=flags, ret=-EFAULT, why=what, fix=fix)
        kvmcore.set_userfault_bits(bitmap, [page], False)
        result = kit.handle(check, raw, access)
        kit.expect_mapped(
            check,
            result,
            access,
            f"the same {describe_access(access)} after its userfault bit was cleared",
            "once the bit is clear the fault must proceed as on any memslot (kvm_do_userfault returns False)",
        )


class TestPrivateMismatch(ConformanceTests):
    def _skip_if_attribute_derived(self, kit: Kit) -> None:
        if kit.derives_private_from_attributes("private-mismatch"):
            kit.skip(
                "private-mismatch",
                "decode_fault derives is_private from the memory attributes (a shared access to a private gfn "
                "decodes as private), so no private/shared mismatch can arise",
            )

    def test_shared_access_to_private_gfn(self, kvmcore_kit: Kit) -> None:
        """ret -EFAULT, KVM_EXIT_MEMORY_FAULT with flags 0 (the access was shared), no mapping."""
        kit = kvmcore_kit
        self._skip_if_attribute_derived(kit)
        access = Access(kit.layout.page("gmem", 5, OFFSET), "read")
        raw = kit.require_encode("private-mismatch", access)
        kit.set_private(access.gpa, True)
        self._expect_mismatch_exit(kit, access, raw, 0)

    def test_private_access_to_shared_gfn(self, kvmcore_kit: Kit) -> None:
        """ret -EFAULT, KVM_EXIT_MEMORY_FAULT with flags 0x8 (the access was private), no mapping."""
        kit = kvmcore_kit
        self._skip_if_attribute_derived(kit)
        refusals = []
        for kind in ("read", "write"):
            access = Access(kit.layout.page("gmem", 6, OFFSET), kind, private=True)
            try:
                raw = kit.encode("private-mismatch", access)
                break
            except ValueError as exc:
                refusals.append(f"{kind}: {exc}")
        else:
            kit.skip("private-mismatch", f"cannot express a private access (encode_fault: {'; '.join(refusals)})")
        kit.set_private(access.gpa, False)
        self._expect_mismatch_exit(kit, access, raw, KVM_MEMORY_EXIT_FLAG_PRIVATE)

    @staticmethod
    def _expect_mismatch_exit(kit: Kit, access: Access, raw: Mapping[str, Any], flags: int) -> None:
        check = "private-mismatch"
        state = "private" if not access.private else "shared"
        what = f"a {describe_access(access)} to a gfn whose attribute is {state}"
        fix = (
            "compare fault.is_private with vcpu.vm.mem_is_private(fault.gfn) first in faultin_pfn; on a mismatch call "
            "kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault) and return Exit(-EFAULT, 'private_mismatch') so the "
            "VMM converts the range and retries"
        )
        result = kit.handle(check, raw, access)
        kit.expect_no_mapping(check, result, access.gpa, what, fix)
        kit.expect_memory_fault(check, result, access.gpa, flags=flags, ret=-EFAULT, why=what, fix=fix)


class TestHwpoison(ConformanceTests):
    FIX = (
        "when kvm_faultin_pfn returns KVM_PFN_ERR_HWPOISON (or kvm_gmem_get_pfn raises EHWPOISON), either exit with "
        "kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault) and Exit(-EHWPOISON, 'hwpoison'), or call "
        "kvmcore.send_sig_mceerr(vcpu, hva, PAGE_SHIFT) and resume (Retry) or return -EINTR; never map the page"
    )

    @pytest.mark.parametrize("kind", ["read", "write"])
    def test_hwpoison_shared(self, kvmcore_kit: Kit, kind: str) -> None:
        """A poisoned host page: a -EHWPOISON memory fault exit, or SIGBUS (BUS_MCEERR_AR) with resume
        or -EINTR; never a mapping of the poisoned page."""
        kit = kvmcore_kit
        access = Access(kit.layout.page("ram", 5, OFFSET), kind)
        raw = kit.require_encode("hwpoison", access)
        gfn = kit.gfn(access.gpa)
        slot = kit.vm.gfn_to_memslot(gfn)
        assert slot is not None  # the default layout's RAM slot
        hva = slot.gfn_to_hva(gfn)
        kit.vm.host.memory_failure(hva)
        self._expect_poison_handled(kit, access, raw, hva)

    def test_hwpoison_private(self, kvmcore_kit: Kit) -> None:
        """The same for a poisoned guest_memfd page."""
        kit = kvmcore_kit
        layout = kit.layout
        page = 7
        access, raw = kit.private_access("hwpoison-private", layout.page("gmem", page, OFFSET))
        kit.set_private(access.gpa, True)
        kit.vm.guest_memfd(layout.gmem_fd).memory_failure(page * kit.page_size)
        self._expect_poison_handled(kit, access, raw, None)

    def _expect_poison_handled(self, kit: Kit, access: Access, raw: Mapping[str, Any], hva: int | None) -> None:
        check = "hwpoison" if hva is not None else "hwpoison-private"
        what = f"a {describe_access(access)} to a poisoned page"
        result = kit.handle(check, raw, access)
        kit.expect_no_mapping(check, result, access.gpa, what, self.FIX)
        if result.exit_reason == KVM_EXIT_MEMORY_FAULT:
            flags = KVM_MEMORY_EXIT_FLAG_PRIVATE if result.fault.is_private else 0
            kit.expect_memory_fault(check, result, access.gpa, flags=flags, ret=-EHWPOISON, why=what, fix=self.FIX)
            return
        signal = result.signal
        if signal is None:
            kit.fail(check, f"{what} ended in neither a memory fault exit nor SIGBUS: {describe_result(result)}", self.FIX)
        if (signal.signo, signal.code) != ("SIGBUS", "BUS_MCEERR_AR"):
            kit.fail(check, f"{what} sent {signal.signo} {signal.code}, expected SIGBUS BUS_MCEERR_AR", "use kvmcore.send_sig_mceerr(vcpu, hva, lsb)")
        if hva is not None and signal.addr >> kit.page_shift != hva >> kit.page_shift:
            kit.fail(check, f"{what}: SIGBUS addr {signal.addr:#x} is not in the poisoned page at hva {hva:#x}", "pass the hva of the faulting gfn to send_sig_mceerr")
        if signal.lsb < kit.page_shift:
            kit.fail(check, f"{what}: SIGBUS lsb {signal.lsb} is below PAGE_SHIFT {kit.page_shift}", "pass the mapping shift (at least PAGE_SHIFT) as lsb")
        resumed = result.ret == 0 and result.exit_reason is None
        interrupted = result.ret == -EINTR and result.exit_reason in (None, KVM_EXIT_UNKNOWN, KVM_EXIT_INTR)
        if not (resumed or interrupted):
            kit.fail(check, f"{what} sent SIGBUS but ended with {describe_result(result)}", "after SIGBUS resume the guest (Retry) or return -EINTR")


class TestReadOnlySlot(ConformanceTests):
    def test_read_maps_readonly(self, kvmcore_kit: Kit) -> None:
        """A read from a KVM_MEM_READONLY slot is mapped, read-only."""
        kit = kvmcore_kit
        check = "readonly-slot"
        access = Access(kit.layout.page("rom", 2, OFFSET), "read")
        raw = kit.require_encode(check, access)
        result = kit.handle(check, raw, access)
        what = f"a {describe_access(access)} (KVM_MEM_READONLY slot)"
        kit.expect_mapped(check, result, access, what, "reads of a read-only memslot map normally (kvm_faultin_pfn gives the pfn)")
        entry = kit.vm.stage2.lookup(kit.gfn(access.gpa))
        assert result.mapped is not None and entry is not None  # expect_mapped failed otherwise
        if result.mapped.writable or entry.writable:
            kit.fail(check, f"{what} was mapped writable: {describe_result(result)}", "map a read-only memslot's pages without write permission")

    @pytest.mark.parametrize("cause", ["not_present", "read_only"])
    def test_write_is_emulated(self, kvmcore_kit: Kit, cause: str) -> None:
        """A write to a KVM_MEM_READONLY slot: KVM_EXIT_MMIO with is_write=1 or a named emulation
        outcome; never a writable mapping, never a memory fault."""
        kit = kvmcore_kit
        check = "readonly-slot"
        access = Access(kit.layout.page("rom", 3, OFFSET), "write", cause, data=0x5A)
        if cause == "read_only":
            if cause not in kit.arch.info.causes:
                kit.skip(check, "ArchInfo.causes has no 'read_only'")
            read = Access(access.gpa, "read")
            kit.handle(check, kit.require_encode(check, read), read)  # map it read-only first
        raw = kit.require_encode(check, access, "a write to a read-only mapping is a permission fault every arch reports") if cause == "read_only" else kit.require_encode(check, access)
        result = kit.handle(check, raw, access)
        what = f"a {describe_access(access)} (KVM_MEM_READONLY slot)"
        entry = kit.vm.stage2.lookup(kit.gfn(access.gpa))
        if (result.mapped is not None and result.mapped.writable) or (entry is not None and entry.writable):
            kit.fail(check, f"{what} made the page writable: {describe_result(result)}", "a write to a read-only memslot is emulated as MMIO (kvm_faultin_pfn gives KVM_PFN_ERR_RO_FAULT)")
        if cause == "read_only" and result.mapped is None and entry is not None:
            # the read-only mapping stays; only the write is emulated
            if result.exit_reason == KVM_EXIT_MEMORY_FAULT:
                kit.fail(check, f"{what} ended in a memory fault exit: {describe_result(result)}", "emulate the write as MMIO")
            return
        kit.expect_mmio_or_emulation(check, result, access, what)


# --- the memory fault exit and kvm_run -------------------------------------------------------
class TestMemoryFaultExit(ConformanceTests):
    @pytest.mark.parametrize("private", [False, True], ids=["shared", "private"])
    def test_wrappers_leave_common_fields(self, kvmcore_kit: Kit, private: bool) -> None:
        """kvm_prepare_memory_fault_exit through the arch's wrappers: exit 39, flags/gpa/size exactly as
        the common helper sets them, the syndrome extension valid or cleared (stale bytes are overwritten)."""
        kit = kvmcore_kit
        check = "memory-fault-exit"
        region, page = ("gmem", 8) if private else ("ram", 6)
        gpa = kit.layout.page(region, page, OFFSET)
        if private:
            access, raw = kit.private_access(check, gpa, ("write", "read"))
        else:
            access = Access(gpa, "write")
            raw = kit.require_encode(check, access)
        kit.set_private(access.gpa, private)
        fault = kit.decode(check, raw, access)
        fault.slot = kit.vm.gfn_to_memslot(fault.gfn)
        run = kit.vcpu.kvm_run
        run.exit_reason = 0
        mf_ext = run.exit.kvmcore
        mf_ext.memory_fault.flags, mf_ext.memory_fault.gpa, mf_ext.memory_fault.size = 0xFFFF, 0xDEAD000, 0x123
        mf_ext.syndrome.flags, mf_ext.syndrome.arch = 0, 7
        for i in range(len(mf_ext.syndrome.syndrome)):
            mf_ext.syndrome.syndrome[i] = 0xBAD0 + i
        what = f"kvm_prepare_memory_fault_exit for a {describe_access(access)}"
        try:
            common = kvmcore.kvm_prepare_memory_fault_exit(kit.vcpu, fault)
        except kvmcore.FaultContractError as exc:
            kit.fail(check, f"{what}: {exc}", "prepare_memory_fault_exit must fill the exit (exit_reason 39); " + WRAPPER_FIX)
        except Exception as exc:
            kit.fail(check, f"{what} raised {type(exc).__name__}: {exc}", WRAPPER_FIX)
        flags = KVM_MEMORY_EXIT_FLAG_PRIVATE if private else 0
        want = kvmcore.MemoryFault(flags, kit.gfn(access.gpa) << kit.page_shift, kit.page_size)
        if common != want:
            kit.fail(check, f"{what} returned {common!r}, the design fixes {want!r}", WRAPPER_FIX)
        if run.exit_reason != KVM_EXIT_MEMORY_FAULT:
            kit.fail(check, f"{what} left exit_reason {run.exit_reason}", WRAPPER_FIX)
        kit.expect_memory_fault_fields(check, access.gpa, flags, what)


class TestKvmRunLayout(ConformanceTests):
    def test_exit_bytes_at_uapi_offsets(self, kvmcore_kit: Kit) -> None:
        """What a VMM reads from the kvm_run mmap: exit_reason @8; memory_fault flags @32, gpa @40,
        size @48; mmio phys_addr @32, len @48, is_write @52."""
        kit = kvmcore_kit
        check = "kvm-run-bytes"
        layout = kit.layout
        access = Access(layout.page("userfault", 9, OFFSET), "write")
        raw = kit.require_encode(check, access)
        kvmcore.set_userfault_bits(layout.userfault_bitmap, [9])
        result = kit.handle(check, raw, access)
        if result.exit_reason == KVM_EXIT_MEMORY_FAULT:
            kit.expect_bytes(
                check,
                {
                    "exit_reason": KVM_EXIT_MEMORY_FAULT,
                    "memory_fault.flags": KVM_MEMORY_EXIT_FLAG_USERFAULT,
                    "memory_fault.gpa": kit.gfn(access.gpa) << kit.page_shift,
                    "memory_fault.size": kit.page_size,
                },
            )
        else:
            kit.fail(check, f"a userfault write did not exit with KVM_EXIT_MEMORY_FAULT: {describe_result(result)}", "see the [userfault] check")
        cause = "no_slot" if "no_slot" in kit.arch.info.causes else "not_present"
        access = Access(layout.page("mmio", 1, OFFSET), "write", cause, data=0x42)
        result = kit.handle(check, kit.require_encode(check, access), access)
        if result.exit_reason != KVM_EXIT_MMIO:
            kit.skip(check, f"(memory fault bytes checked) the no-slot write ended in {result.outcome!r}, not KVM_EXIT_MMIO, so the mmio bytes are not checked")
        mmio = kit.vcpu.kvm_run.mmio
        kit.expect_bytes(check, {"exit_reason": KVM_EXIT_MMIO, "mmio.phys_addr": mmio.phys_addr, "mmio.len": mmio.len, "mmio.is_write": 1})
        if mmio.phys_addr >> kit.page_shift != kit.gfn(access.gpa):
            kit.fail(check, f"mmio.phys_addr {mmio.phys_addr:#x} is not in the faulting page {access.gpa:#x}", "pass the faulting gpa to kvm_prepare_mmio_exit")


# --- the memory-fault exit designs ----------------------------------------------------------
#: Every design the kit can check: upstream (every arch) and the exit designs of docs/designs.md.
DESIGNS_CHECKED = ("upstream", "v3-helper", "arch-hook", "arm64-esr", "rwx-flags", "annotate-efault")
_PATTERN = 0xA5  # kvm_run bytes 56-95 before the fault: a design that does not own them keeps them


class TestExitDesigns(ConformanceTests):
    """Each design the arch declares in ``ArchInfo.designs`` (and upstream, which every arch has):
    a userfault exit's bytes follow the design's rules, and nothing writes what the design gives
    to someone else. A failure names the design and its ownership rule."""

    @pytest.mark.parametrize("design", DESIGNS_CHECKED)
    @pytest.mark.parametrize("kind", ["read", "write"])
    def test_userfault_exit_under_design(self, kvmcore_arch: kvmcore.Arch, kvmcore_vm_settings: dict[str, Any],
                                         design: str, kind: str) -> None:
        from kvmcore.kvm.designs import ARCH_HOOK, ARM64_ESR, EXIT_DESIGNS, SYNDROME, access_flags
        from kvmcore.kvm.proposals import default_proposals

        arch = kvmcore_arch
        check = f"design {design}"
        if design != "upstream" and design not in arch.info.designs:
            pytest.skip(f"{arch.name} does not declare {design!r} in ArchInfo.designs")
        features = [n for n in default_proposals(arch.name) if n not in EXIT_DESIGNS and n != SYNDROME]
        proposals = tuple(features) + (() if design == "upstream" else (design,))
        if "userfault" not in proposals:
            proposals += ("userfault",)
        try:
            vm = kvmcore.VM(arch, proposals=proposals, **kvmcore_vm_settings)
        except ValueError as exc:
            fail(f"kvmcore conformance [{check}] arch {arch.name!r}: declared in ArchInfo.designs but refused: {exc}\n"
                 "  fix: list in ArchInfo.designs only the designs the plugin implements")
        if design == ARCH_HOOK:
            hooks, _ = arch.hooks_of(arch.plugin)
            if "kvm_arch_prepare_memory_fault_exit" not in hooks:
                fail(f"kvmcore conformance [{check}] arch {arch.name!r}: declares 'arch-hook' but implements no "
                     "kvm_arch_prepare_memory_fault_exit hook, so its exits would carry no flag (not even PRIVATE)\n"
                     "  fix: implement kvm_arch_prepare_memory_fault_exit(vcpu, fault) (docs/hooks.md) or drop "
                     "'arch-hook' from ArchInfo.designs")
        layout = setup_default_layout(vm)
        vcpu = vm.create_vcpu()
        kit = Kit(arch, vm, vcpu, layout)
        page = 5
        access = Access(layout.page("userfault", page, OFFSET), kind)
        raw = kit.require_encode(check, access)
        kvmcore.set_userfault_bits(layout.userfault_bitmap, [page])
        run = vcpu.kvm_run
        ctypes.memset(ctypes.addressof(run) + 56, _PATTERN, 40)  # kvm_run bytes 56-95
        rule = vm.exit_design.ownership_rule()
        result = kit.handle(check, raw, access)
        flags = KVM_MEMORY_EXIT_FLAG_USERFAULT
        if vm.exit_design.rwx:
            flags |= access_flags(access.write, access.exec)
        why = f"a {describe_access(access)} with its userfault bit set, {rule}"
        if result.exit_reason != KVM_EXIT_MEMORY_FAULT or result.ret != -EFAULT:
            kit.fail(check, f"{why}: expected -EFAULT with KVM_EXIT_MEMORY_FAULT, found {describe_result(result)}",
                     "see the [userfault] check")
        mf = run.memory_fault
        expected = {"flags": flags, "gpa": kit.gfn(access.gpa) << kit.page_shift, "size": kit.page_size}
        for field, want in expected.items():
            found = getattr(mf, field)
            if found != want:
                kit.fail(check, f"{why}: memory_fault.{field} is {found:#x}, the design gives {want:#x}",
                         "compute only what the design gives the arch, and all of it (docs/designs.md)")
        after = bytes(run)[56:96]
        owned = 8 if design == ARM64_ESR else 0
        if after[owned:] != bytes([_PATTERN]) * (40 - owned):
            fail(f"kvmcore conformance [{check}] arch {arch.name!r}: {why}: kvm_run bytes {56 + owned}-95 changed "
                 f"({after[owned:].hex()}), but the design gives them to no one\n"
                 "  fix: a prepare_memory_fault_exit wrapper writes its syndrome only when vcpu.vm.exit_design says so "
                 "(.syndrome or .arm64_esr)")
        if design == ARM64_ESR and (run.memory_fault_esr.esr >> 26) not in (0x20, 0x24):
            fail(f"kvmcore conformance [{check}] arch {arch.name!r}: {why}: memory_fault.esr is "
                 f"{run.memory_fault_esr.esr:#x}, not a lower-EL abort's sanitised ESR (EC 0x20 or 0x24)\n"
                 "  fix: write the sanitised ESR of the abort at kvm_run offset 56 on every memory-fault exit")

    @pytest.mark.parametrize("design", ["annotate-efault"])
    def test_no_bare_efault_under_design(self, kvmcore_arch: kvmcore.Arch, kvmcore_vm_settings: dict[str, Any],
                                         design: str) -> None:
        """annotate-efault: a write whose host memory is gone (no VMA) exits with
        KVM_EXIT_MEMORY_FAULT for the faulting page, never a bare -EFAULT."""
        from kvmcore.kvm.designs import EXIT_DESIGNS, SYNDROME
        from kvmcore.kvm.proposals import default_proposals

        arch = kvmcore_arch
        check = f"design {design}"
        if design not in arch.info.designs:
            pytest.skip(f"{arch.name} does not declare {design!r} in ArchInfo.designs")
        features = [n for n in default_proposals(arch.name) if n not in EXIT_DESIGNS and n != SYNDROME]
        vm = kvmcore.VM(arch, proposals=(*features, "v3-helper", design), **kvmcore_vm_settings)
        layout = setup_default_layout(vm)
        vcpu = vm.create_vcpu()
        kit = Kit(arch, vm, vcpu, layout)
        access = Access(layout.page("ram", 7, OFFSET), "write")
        raw = kit.require_encode(check, access)
        slot = vm.gfn_to_memslot(kit.gfn(access.gpa))
        assert slot is not None
        vm.host.munmap(slot.gfn_to_hva(kit.gfn(access.gpa)), vm.page_size)
        result = kit.handle(check, raw, access)
        mf = vcpu.kvm_run.memory_fault
        if result.ret != -EFAULT or result.exit_reason != KVM_EXIT_MEMORY_FAULT or mf.gpa >> kit.page_shift != kit.gfn(access.gpa):
            fail(f"kvmcore conformance [{check}] arch {arch.name!r}: a {describe_access(access)} to RAM whose host page "
                 f"was unmapped ended {describe_result(result)} (memory_fault.gpa {mf.gpa:#x}); under "
                 f"{vm.exit_design.name!r} every -EFAULT of the fault path is a KVM_EXIT_MEMORY_FAULT for the faulting page\n"
                 "  fix: return Exit(-EFAULT, ...) and let common code annotate it, or call "
                 "kvm_prepare_memory_fault_exit(vcpu, fault) before returning")


# --- tracing ---------------------------------------------------------------------------------
class TestHookTracing(ConformanceTests):
    def test_trace_shows_plugin_hooks(self, kvmcore_arch: kvmcore.Arch, kvmcore_vm_settings: dict[str, Any]) -> None:
        """With hook tracing on (KVMCORE_TRACE_HOOKS=1), every hook of the plugin that a fault runs
        shows up, under that hook, with the plugin's name."""
        lines: list[str] = []
        kvmcore.enable_hook_tracing(lines.append)
        try:
            vm = kvmcore.VM(kvmcore_arch, **kvmcore_vm_settings)
            layout = setup_default_layout(vm)
            kit = Kit(kvmcore_arch, vm, vm.create_vcpu(), layout)
            access = Access(layout.page("userfault", 10, OFFSET), "write")
            raw = kit.require_encode("hook-tracing", access)
            kvmcore.set_userfault_bits(layout.userfault_bitmap, [10])
            kit.handle("hook-tracing", raw, access)
            kvmcore.set_userfault_bits(layout.userfault_bitmap, [10], False)
            kit.handle("hook-tracing", raw, access)
            hooks, wrappers = kvmcore_arch.hooks_of(kvmcore_arch.plugin)
            if "describe_syndrome" in hooks:
                try:
                    kvmcore_arch.describe_syndrome(vm, raw)
                except Exception:  # the describe-syndrome check reports it
                    pass
        finally:
            kvmcore.disable_hook_tracing()
        sections = _trace_sections("".join(lines))
        plugin_name = kvmcore_arch.pm.get_name(kvmcore_arch.plugin)
        exercised = {"configure_vm", "prepare_memory_region", "encode_fault", "decode_fault", "faultin_pfn", "prepare_memory_fault_exit", "describe_syndrome"}
        for hook in sorted(exercised & set(hooks + wrappers)):
            marks = (f"answered by {plugin_name}:", f"{plugin_name}: no answer", f"wrapper {plugin_name}: enter")
            if hook not in sections:
                kit.fail("hook-tracing", f"the trace has no call of {hook}, which the plugin implements", "call hooks through the core (vcpu.handle_fault, kvmcore.kvm_prepare_memory_fault_exit), not the plugin's functions directly")
            if not any(line.startswith(marks) for line in sections[hook]):
                kit.fail(
                    "hook-tracing",
                    f"the trace of {hook} does not show plugin {plugin_name!r}: {sections[hook][:6]}",
                    "register the hook implementations on the plugin object the entry point names (module-level @kvmcore.hookimpl functions)",
                )


def _trace_sections(text: str) -> dict[str, list[str]]:
    """Lines of a hook trace grouped by the hook call they are nested in."""
    sections: dict[str, list[str]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        start = re.fullmatch(r"(\w+) \[hook\]", stripped)
        if start:
            stack.append(start.group(1))
            sections.setdefault(start.group(1), [])
            continue
        if stripped.startswith("finish ") and stack:
            stack.pop()
            continue
        if stack:
            sections[stack[-1]].append(stripped)
    return sections


_REFUSED = object()  # decode_fault refused the registers with a DecodeError


def _decode_checked(kit: Kit, raw: Mapping[str, Any], context: str, fix: str) -> Any:
    """``decode_fault(raw)``, or ``_REFUSED`` for a DecodeError with a message; any other
    exception, or a DecodeError with an empty message, fails the check."""
    try:
        return kit.arch.decode_fault(kit.vcpu, raw)
    except kvmcore.DecodeError as exc:
        if not str(exc).strip():
            kit.fail("decode-errors", f"decode_fault({raw!r}) raised DecodeError with an empty message", "name the register and its value in the DecodeError")
        return _REFUSED
    except Exception as exc:
        kit.fail("decode-errors", f"decode_fault({raw!r}) raised {type(exc).__name__}: {exc}{context}", fix)
