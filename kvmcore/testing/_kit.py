"""The machinery behind the conformance suite: choosing the arch, the default memslot layout,
and the checks that turn a wrong answer into a message saying what the plugin must change.

Values the design fixes are written here as literals (from the uAPI headers and the project
reference), not taken from ``kvmcore.abi``: the kit checks the model, it does not trust it.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, NoReturn

import pytest

import kvmcore
from kvmcore import Access, Arch, FaultResult

# --- what the design fixes (include/uapi/linux/kvm.h; KVM Userfault v3) ----------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_MMIO = 6
KVM_EXIT_INTR = 10
KVM_EXIT_MEMORY_FAULT = 39
KVM_MEMORY_EXIT_FLAG_PRIVATE = 0x8
KVM_MEMORY_EXIT_FLAG_USERFAULT = 0x10
KVM_MEMORY_ATTRIBUTE_PRIVATE = 0x8
KVM_MEM_READONLY = 0x2
KVM_MEM_GUEST_MEMFD = 0x4
KVM_MEM_USERFAULT = 0x8
GUEST_MEMFD_FLAG_MMAP = 0x1  # 6.18+
EINTR = 4
EFAULT = 14
EHWPOISON = 133
KVMCORE_SYNDROME_VALID = 0x1

#: Byte offsets in ``struct kvm_run`` (non-s390), from the compiled table in the reference
#: (kvm-fault-facts.md section 2.1): ``(offset, size)``.
KVM_RUN_LAYOUT: dict[str, tuple[int, int]] = {
    "exit_reason": (8, 4),
    "memory_fault.flags": (32, 8),
    "memory_fault.gpa": (40, 8),
    "memory_fault.size": (48, 8),
    "mmio.phys_addr": (32, 8),
    "mmio.len": (48, 4),
    "mmio.is_write": (52, 1),
}

#: The stage-2 causes ``kvmcore.Access`` knows.
ALL_CAUSES = ("not_present", "read_only", "no_exec", "access_flag", "no_slot")
KINDS = ("read", "write", "exec")

ERRNO_NAMES = {0: "0", EINTR: "EINTR", EFAULT: "EFAULT", EHWPOISON: "EHWPOISON"}
EXIT_NAMES = {
    KVM_EXIT_UNKNOWN: "KVM_EXIT_UNKNOWN",
    KVM_EXIT_MMIO: "KVM_EXIT_MMIO",
    KVM_EXIT_INTR: "KVM_EXIT_INTR",
    KVM_EXIT_MEMORY_FAULT: "KVM_EXIT_MEMORY_FAULT",
}

WRAPPER_FIX = (
    "a prepare_memory_fault_exit wrapper (@hookimpl(wrapper=True)) may add to kvm_run only after "
    "`common = yield` (kvmcore's syndrome extension, docs/syndrome.md); it must never write "
    "memory_fault.flags, .gpa or .size and must return `common` unchanged"
)


def fail(message: str) -> NoReturn:
    """``pytest.fail`` without a traceback or the exception being handled: the message is the report."""
    raise pytest.fail.Exception(message, pytrace=False) from None


# --- choosing the arch under test ------------------------------------------------------------
_built: dict[int, Arch] = {}


def resolve_arch(selector: Any) -> Arch:
    """The :class:`kvmcore.Arch` for ``selector``.

    ``selector`` is an installed arch name (``"arm64"``, loaded through its entry point), a
    dotted module path (``"kvmcore_loongarch.plugin"``; ``"module:"`` for a top-level module)
    of an unpublished plugin, a plugin object (a module with hookimpls), or an ``Arch``.

    :raises kvmcore.PluginLoadError, kvmcore.FaultContractError: as the loader does.
    """
    if isinstance(selector, Arch):
        return selector
    if isinstance(selector, str):
        if "." not in selector and ":" not in selector:
            return kvmcore.load_arch(selector)
        module_name, _, attribute = selector.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise kvmcore.PluginLoadError(f"plugin module {module_name!r} cannot be imported: {exc}") from exc
        selector = getattr(module, attribute) if attribute else module
    arch = _built.get(id(selector))
    if arch is None or arch.plugin is not selector:

        arch = kvmcore.load_arch(selector)
        _built[id(selector)] = arch
    return arch


def forget_built_arches() -> None:
    """Drop the arches built from plugin objects (between pytest sessions)."""
    _built.clear()


def describe_selector(selector: Any) -> str:
    if isinstance(selector, str):
        return repr(selector)
    return getattr(selector, "__name__", None) or type(selector).__name__


# --- the default memslot layout --------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """The memslots :func:`setup_default_layout` creates, by guest physical address.

    ============  ====  ==========================================  =====================
    region        slot  flags                                       gpa
    ============  ====  ==========================================  =====================
    ``mmio``      none  (a hole: no memslot)                        ``0x0900_0000``
    ``ram``       0     0, 2 MiB of read-write anonymous memory     ``0x4000_0000``
    ``rom``       1     ``KVM_MEM_READONLY``                        ``0x4100_0000``
    ``userfault`` 2     ``KVM_MEM_USERFAULT`` (bitmap all clear)    ``0x4200_0000``
    ``gmem``      3     ``KVM_MEM_GUEST_MEMFD | KVM_MEM_USERFAULT``  ``0x4300_0000``
    ============  ====  ==========================================  =====================

    The small slots are :attr:`SMALL_PAGES` pages each. Every gfn is shared (no memory
    attributes set). ``userfault_bitmap`` and ``gmem_userfault_bitmap`` are the VMM's
    buffers: set bits with :func:`kvmcore.set_userfault_bits`. A region the VM cannot have
    (``vm.config``: no read-only memory on a VM with protected state, no guest_memfd slots,
    the userfault proposal off) is left out, and a check that uses it is skipped with the
    reason in :attr:`missing`.
    """

    SMALL_PAGES = 16

    vm: kvmcore.VM
    userfault_bitmap: bytearray
    gmem_userfault_bitmap: bytearray
    gmem_fd: int
    mmio_gpa: int = 0x0900_0000
    ram_gpa: int = 0x4000_0000
    rom_gpa: int = 0x4100_0000
    userfault_gpa: int = 0x4200_0000
    gmem_gpa: int = 0x4300_0000
    #: region -> why this VM has no such memslot.
    missing: dict[str, str] = dataclass_field(default_factory=dict)

    @property
    def page_size(self) -> int:
        return self.vm.page_size

    @property
    def ram_size(self) -> int:
        return max(2 << 20, self.SMALL_PAGES * self.page_size)

    @property
    def small_size(self) -> int:
        return self.SMALL_PAGES * self.page_size

    def page(self, region: str, index: int, offset: int = 0) -> int:
        """The gpa of byte ``offset`` of page ``index`` of ``region`` (``"ram"``, ``"rom"``...);
        skips the calling check if the VM has no such region."""
        if region in self.missing:
            pytest.skip(f"[layout] no {region!r} memslot: {self.missing[region]}")
        return getattr(self, f"{region}_gpa") + index * self.page_size + offset


def setup_default_layout(vm: kvmcore.VM) -> Layout:
    """Create the memslots of :class:`Layout` in ``vm`` (which must have none) and return it."""
    page_size = vm.page_size
    small = Layout.SMALL_PAGES * page_size
    bitmap_bytes = (Layout.SMALL_PAGES + 63) // 64 * 8
    userfault_bitmap = bytearray(bitmap_bytes)
    gmem_bitmap = bytearray(bitmap_bytes)
    config = vm.config
    missing: dict[str, str] = {}
    if not config.has_readonly_mem:
        missing["rom"] = "kvm_arch_has_readonly_mem() is false for this VM (protected state)"
    if not config.userfault:
        missing["userfault"] = "KVM_MEM_USERFAULT is off (the userfault proposal)"
    if not config.gmem_slots:
        missing["gmem"] = f"no guest_memfd slots on this VM (kernel {vm.kernel})"
    # A VM without private memory uses guest_memfd as mappable shared memory (6.18+ MMAP; upstream
    # arm64 refuses any other guest_memfd slot, arch/arm64/kvm/mmu.c)
    mappable = not config.has_private_mem and config.gmem_flags & GUEST_MEMFD_FLAG_MMAP
    gmem_fd = vm.create_guest_memfd(small, GUEST_MEMFD_FLAG_MMAP if mappable else 0) if "gmem" not in missing else -1
    layout = Layout(vm, userfault_bitmap, gmem_bitmap, gmem_fd, missing=missing)
    vm.set_user_memory_region(0, layout.ram_gpa, layout.ram_size)
    if "rom" not in missing:
        vm.set_user_memory_region(1, layout.rom_gpa, small, flags=KVM_MEM_READONLY)
    if "userfault" not in missing:
        vm.set_user_memory_region(2, layout.userfault_gpa, small, flags=KVM_MEM_USERFAULT, userfault_bitmap=userfault_bitmap)
    if "gmem" not in missing:
        userfault = KVM_MEM_USERFAULT if config.userfault else 0
        vm.set_user_memory_region(
            3,
            layout.gmem_gpa,
            small,
            flags=KVM_MEM_GUEST_MEMFD | userfault,
            guest_memfd=gmem_fd,
            userfault_bitmap=gmem_bitmap if userfault else None,
        )
    return layout


# --- reading kvm_run as a VMM does ---------------------------------------------------------
def kvm_run_fields(run: Any) -> dict[str, int]:
    """The fields of :data:`KVM_RUN_LAYOUT`, read from the bytes of ``run`` at their uAPI offsets."""
    raw = bytes(run)
    return {
        name: int.from_bytes(raw[offset : offset + size], sys.byteorder)
        for name, (offset, size) in KVM_RUN_LAYOUT.items()
    }


def errno_name(ret: int) -> str:
    return ERRNO_NAMES.get(abs(ret), f"errno {abs(ret)}") if ret else "0"


def exit_name(reason: int | None) -> str:
    if reason is None:
        return "none (the guest resumes)"
    return f"{reason} ({EXIT_NAMES.get(reason, kvmcore.abi.exit_reason_name(reason))})"


def describe_result(result: FaultResult) -> str:
    """One line for a fault's end: ret, exit reason, outcome, mapping, signal."""
    parts = [
        f"ret={result.ret}" + (f" (-{errno_name(result.ret)})" if result.ret < 0 else ""),
        f"exit_reason={exit_name(result.exit_reason)}",
        f"outcome={result.outcome!r}",
    ]
    if result.mapped is not None:
        m = result.mapped
        parts.append(f"mapped pfn {m.pfn:#x} size {m.size:#x} writable={m.writable}")
    if result.signal is not None:
        s = result.signal
        parts.append(f"signal {s.signo} {s.code} addr={s.addr:#x} lsb={s.lsb}")
    if result.detail:
        parts.append(f"detail={result.detail!r}")
    return ", ".join(parts)


def describe_access(access: Access) -> str:
    extra = " private" if access.private else ""
    return f"{access.size}-byte {access.kind} of gpa {access.gpa:#x} ({access.cause}{extra})"


# --- the checks ------------------------------------------------------------------------------
class Kit:
    """One arch under test with a VM of the default layout and a vCPU; every check's helpers.

    Every failure goes through :meth:`fail`, which names the check, the arch, what was found
    and what the plugin must change.
    """

    def __init__(self, arch: Arch, vm: kvmcore.VM, vcpu: kvmcore.VCPU, layout: Layout) -> None:
        self.arch = arch
        self.name = arch.name
        self.vm = vm
        self.vcpu = vcpu
        self.layout = layout

    @property
    def page_shift(self) -> int:
        return self.vm.page_shift

    @property
    def page_size(self) -> int:
        return self.vm.page_size

    def gfn(self, gpa: int) -> int:
        return gpa >> self.page_shift

    # -- failing ------------------------------------------------------------------------------
    def fail(self, check: str, problem: str, fix: str) -> NoReturn:
        fail(f"kvmcore conformance [{check}] arch {self.name!r}: {problem}\n  fix: {fix}")

    def skip(self, check: str, reason: str) -> NoReturn:
        pytest.skip(f"[{check}] arch {self.name!r}: {reason}")

    # -- hooks, with failures turned into messages ----------------------------------------------
    def encode(self, check: str, access: Access) -> Mapping[str, Any]:
        """``encode_fault``; ValueError (the arch cannot express the access) propagates."""
        try:
            raw = self.arch.encode_fault(self.vcpu, access)
        except NotImplementedError:
            failure = (
                "implements no encode_fault hook",
                "implement encode_fault(vcpu, access) returning the raw registers decode_fault accepts "
                "(the kit drives every check through it)",
            )
        except ValueError:
            raise
        except Exception as exc:
            failure = (
                f"encode_fault({describe_access(access)}) raised {type(exc).__name__}: {exc}\n{_tail()}",
                "encode_fault must return the raw registers, or raise ValueError naming the access when "
                "the arch cannot express it",
            )
        else:
            if isinstance(raw, Mapping):
                return raw
            failure = (f"encode_fault returned {type(raw).__name__} {raw!r}", "return a mapping register name -> value")
        self.fail(check, *failure)

    def require_encode(self, check: str, access: Access, why: str = "") -> Mapping[str, Any]:
        """``encode_fault`` for an access every arch can express; ValueError fails the check."""
        try:
            return self.encode(check, access)
        except ValueError as exc:
            refusal = f"encode_fault refused a {describe_access(access)}: ValueError: {exc}"
        self.fail(
            check,
            refusal,
            why
            or "every arch can report a read or a write that finds no stage-2 entry: encode it "
            "(raise ValueError only for accesses the hardware cannot report)",
        )

    def decode(self, check: str, raw: Mapping[str, Any], access: Access | None = None) -> Any:
        what = f" ({describe_access(access)})" if access is not None else ""
        try:
            fault = self.arch.decode_fault(self.vcpu, raw)
        except kvmcore.DecodeError as exc:
            failure = (
                f"decode_fault refused what encode_fault produced{what}: {_fmt_raw(raw)}: DecodeError: {exc}",
                "decode_fault must accept every register set encode_fault returns",
            )
        except kvmcore.FaultContractError as exc:
            failure = (str(exc), "decode_fault must return an instance of ArchInfo.fault_type with the common fields typed as declared")
        except Exception as exc:
            failure = (
                f"decode_fault({_fmt_raw(raw)}){what} raised {type(exc).__name__}: {exc}\n{_tail()}",
                "decode_fault must return the arch's fault object, or raise kvmcore.DecodeError naming the register and value",
            )
        else:
            self.check_fault_value(check, fault, raw)
            return fault
        self.fail(check, *failure)

    def check_fault_value(self, check: str, fault: Any, raw: Mapping[str, Any]) -> None:
        try:
            kvmcore.check_fault(fault, self.name, self.arch.info.fault_type)
        except kvmcore.FaultContractError as exc:
            problem = f"decode_fault({_fmt_raw(raw)}) gave {fault!r}: {exc}"
        else:
            if fault.gfn >= 0:
                return
            self.fail(
                check,
                f"decode_fault({_fmt_raw(raw)}) gave gfn={fault.gfn}",
                "a gfn is never negative: raise kvmcore.DecodeError for register values that are not unsigned",
            )
        self.fail(
            check,
            problem,
            "decode_fault must return ArchInfo.fault_type with gfn an int and exec/write/is_private real bools "
            "(bool(x), not an int or a bit mask)",
        )

    def handle(self, check: str, raw: Mapping[str, Any], access: Access | None = None) -> FaultResult:
        """``vcpu.handle_fault(raw)``; a broken wrapper or any exception fails the check."""
        what = describe_access(access) if access is not None else _fmt_raw(raw)
        try:
            return self.vcpu.handle_fault(raw)
        except kvmcore.FaultContractError as exc:
            wrapper = exc.field.startswith("memory_fault.") or exc.field in ("exit_reason", "prepare_memory_fault_exit")
            failure = (f"{what}: {exc}", WRAPPER_FIX if wrapper else "keep the fault object as ArchInfo.fault_type declares it")
        except Exception as exc:
            failure = (
                f"handle_fault for a {what} raised {type(exc).__name__}: {exc}\n{_tail()}",
                "faultin_pfn must end every fault with Mapped, Retry or Exit (Exit(-errno, ...) for errors)",
            )
        self.fail(check, *failure)

    # -- memory attributes and private accesses -----------------------------------------------
    def set_private(self, gpa: int, private: bool) -> None:
        """Give the page at ``gpa`` the PRIVATE attribute or none; skips the check when the VM
        has no private memory (``kvm_arch_has_private_mem()``), and does nothing to make a
        page shared on a VM without memory attributes (every page is shared there)."""
        config = self.vm.config
        if private and not config.has_private_mem:
            self.skip("private-memory", f"this VM has no private memory (kvm_arch_has_private_mem() is false; kernel {self.vm.kernel})")
        if not config.memory_attributes:
            return
        base = gpa & ~(self.page_size - 1)
        self.vm.set_memory_attributes(base, self.page_size, KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)

    def derives_private_from_attributes(self, check: str) -> bool:
        """Does decode_fault take is_private from the memory attributes (no mismatch possible)?"""
        gpa = self._probe_gpa()
        raw = self.require_encode(check, Access(gpa, "read"))
        self.set_private(gpa, True)
        try:
            return bool(self.decode(check, raw).is_private)
        finally:
            self.set_private(gpa, False)

    def private_access(self, check: str, gpa: int, kinds: tuple[str, ...] = ("read", "write")) -> tuple[Access, Mapping[str, Any]]:
        """A private access to ``gpa`` of the first of ``kinds`` the arch can express, and its
        registers (the gfn's attribute must be private when they are decoded).

        Skips the check when the arch cannot express one: encode_fault refuses ``private=True``
        for every kind and decode_fault does not follow the memory attributes either.
        """
        refusals = []
        for kind in kinds:
            access = Access(gpa, kind, private=True)
            try:
                return access, self.encode(check, access)
            except ValueError as exc:
                refusals.append(f"{kind}: ValueError: {exc}")
        if self.derives_private_from_attributes(check):
            access = Access(gpa, kinds[0], private=True)
            return access, self.require_encode(check, Access(gpa, kinds[0]))
        self.skip(
            check,
            f"cannot express a private {' or '.join(kinds)}: encode_fault refused it ({'; '.join(refusals)}) "
            "and decode_fault does not take is_private from the memory attributes",
        )

    def _probe_gpa(self) -> int:
        if self.layout is not None:
            return self.layout.page("ram", 1, 0x10)
        return 0x4000_1010

    # -- expectations -------------------------------------------------------------------------
    def expect_no_mapping(self, check: str, result: FaultResult, gpa: int, what: str, fix: str) -> None:
        gfn = self.gfn(gpa)
        entry = self.vm.stage2.lookup(gfn)
        if result.mapped is not None or entry is not None:
            found = describe_result(result)
            if entry is not None:
                found += f"; stage 2 maps gfn {gfn:#x} -> pfn {entry.pfn:#x} writable={entry.writable}"
            self.fail(check, f"{what} was mapped: {found}", fix)

    def expect_memory_fault(self, check: str, result: FaultResult, gpa: int, *, flags: int, ret: int, why: str, fix: str) -> None:
        """A KVM_EXIT_MEMORY_FAULT with the common fields as the design fixes them."""
        if result.exit_reason != KVM_EXIT_MEMORY_FAULT:
            self.fail(check, f"{why}: expected KVM_EXIT_MEMORY_FAULT (39) with ret {ret} (-{errno_name(ret)}), found {describe_result(result)}", fix)
        if result.ret != ret:
            self.fail(
                check,
                f"{why}: KVM_RUN must return {ret} (-{errno_name(ret)}) with KVM_EXIT_MEMORY_FAULT, found {describe_result(result)}",
                fix,
            )
        self.expect_memory_fault_fields(check, gpa, flags, why)

    def expect_memory_fault_fields(self, check: str, gpa: int, flags: int, why: str) -> None:
        mf = self.vcpu.kvm_run.memory_fault
        gfn = self.gfn(gpa)
        expected = {"flags": flags, "gpa": gfn << self.page_shift, "size": self.page_size}
        rules = {
            "flags": _flags_rule(flags),
            "gpa": f"gpa = gfn << PAGE_SHIFT = {gfn:#x} << {self.page_shift}",
            "size": f"size = PAGE_SIZE = {self.page_size:#x}",
        }
        for field, want in expected.items():
            found = getattr(mf, field)
            if found != want:
                self.fail(
                    check,
                    f"{why}: memory_fault.{field} is {found:#x}, the design fixes {rules[field]} = {want:#x}",
                    "fill the exit only through kvmcore.kvm_prepare_memory_fault_exit(vcpu, fault) (the common helper; "
                    "kvm_do_userfault adds the USERFAULT flag); " + WRAPPER_FIX,
                )
        self.expect_bytes(check, {"exit_reason": KVM_EXIT_MEMORY_FAULT, **{f"memory_fault.{k}": v for k, v in expected.items()}})
        self.expect_syndrome_extension(check)

    def expect_syndrome_extension(self, check: str) -> None:
        syn = self.vcpu.kvm_run.syndrome
        words = list(syn.syndrome)
        if syn.flags & ~KVMCORE_SYNDROME_VALID:
            self.fail(check, f"kvmcore_syndrome.flags is {syn.flags:#x}: only KVMCORE_SYNDROME_VALID (bit 0) is defined", "set syndrome.flags to KVMCORE_SYNDROME_VALID or leave it 0")
        if syn.flags & KVMCORE_SYNDROME_VALID and syn.arch == 0:
            self.fail(check, "kvmcore_syndrome has KVMCORE_SYNDROME_VALID but arch 0 (KVMCORE_SYNDROME_ARCH_NONE)", "set syndrome.arch to the layout the words follow (docs/syndrome.md)")
        if not syn.flags & KVMCORE_SYNDROME_VALID and (syn.arch or any(words)):
            self.fail(
                check,
                f"kvmcore_syndrome is not VALID but holds arch={syn.arch} words={[hex(w) for w in words]} (stale, or written without the flag)",
                "let the common helper clear the extension; a wrapper that fills it must set KVMCORE_SYNDROME_VALID and arch",
            )

    def expect_bytes(self, check: str, expected: Mapping[str, int]) -> None:
        fields = kvm_run_fields(self.vcpu.kvm_run)
        for name, want in expected.items():
            offset, size = KVM_RUN_LAYOUT[name]
            if fields[name] != want:
                self.fail(
                    check,
                    f"the {size} bytes at kvm_run offset {offset} ({name}) hold {fields[name]:#x}, expected {want:#x}",
                    "write kvm_run only through its fields (vcpu.kvm_run.exit_reason, .memory_fault, .mmio) and the core helpers",
                )

    def expect_mmio_or_emulation(self, check: str, result: FaultResult, access: Access, what: str) -> None:
        """The end of an access KVM must emulate: KVM_EXIT_MMIO with the right fields, or another
        named outcome (in-kernel emulation, an injected abort, an arch exit); never a mapping,
        never a memory fault."""
        fix_mmio = (
            "an access with no RAM behind it is emulated: fill the exit with kvmcore.kvm_prepare_mmio_exit(vcpu, "
            "gpa, length, is_write, data) and return Exit(0, 'mmio'), or end it with a named outcome of your "
            "kernel (Retry/Exit with the outcome listed in your docs)"
        )
        self.expect_no_mapping(check, result, access.gpa, what, fix_mmio)
        if result.exit_reason == KVM_EXIT_MEMORY_FAULT:
            self.fail(check, f"{what} ended in a memory fault exit: {describe_result(result)}", fix_mmio)
        if not isinstance(result.outcome, str) or not result.outcome or result.outcome.startswith("mapped"):
            self.fail(check, f"{what} ended with outcome {result.outcome!r}: {describe_result(result)}", "name every outcome (Exit.outcome / Retry.outcome)")
        if result.exit_reason != KVM_EXIT_MMIO:
            return
        if result.ret != 0:
            self.fail(check, f"{what}: KVM_EXIT_MMIO must come with ret 0, found {describe_result(result)}", fix_mmio)
        mmio = self.vcpu.kvm_run.mmio
        page = access.gpa & ~(self.page_size - 1)
        if mmio.phys_addr not in (access.gpa, page):
            self.fail(
                check,
                f"{what}: mmio.phys_addr is {mmio.phys_addr:#x}, expected the faulting gpa {access.gpa:#x} "
                f"(or its page, {page:#x}, where the syndrome has no page offset)",
                "pass the faulting guest physical address to kvm_prepare_mmio_exit",
            )
        if mmio.is_write != int(access.write):
            self.fail(check, f"{what}: mmio.is_write is {mmio.is_write}, expected {int(access.write)}", "set is_write from the fault's write bit")
        if mmio.len not in (0, access.size):
            self.fail(
                check,
                f"{what}: mmio.len is {mmio.len}, expected the access size {access.size} (or 0 where the syndrome does not give it)",
                "take the access width from the syndrome (or pass 0 when the arch cannot know it)",
            )
        self.expect_bytes(
            check,
            {"exit_reason": KVM_EXIT_MMIO, "mmio.phys_addr": mmio.phys_addr, "mmio.len": mmio.len, "mmio.is_write": int(access.write)},
        )

    def expect_mapped(self, check: str, result: FaultResult, access: Access, what: str, fix: str) -> None:
        gfn = self.gfn(access.gpa)
        entry = self.vm.stage2.lookup(gfn)
        if result.mapped is None or entry is None:
            self.fail(check, f"{what} was not mapped: {describe_result(result)}", fix)
        if access.write and not (result.mapped.writable and entry.writable):
            self.fail(check, f"{what}: a write fault was mapped read-only ({describe_result(result)}), so the guest faults again forever", fix)


def _flags_rule(flags: int) -> str:
    names = []
    if flags & KVM_MEMORY_EXIT_FLAG_USERFAULT:
        names.append("KVM_MEMORY_EXIT_FLAG_USERFAULT (0x10)")
    if flags & KVM_MEMORY_EXIT_FLAG_PRIVATE:
        names.append("KVM_MEMORY_EXIT_FLAG_PRIVATE (0x8)")
    return "flags = " + (" | ".join(names) if names else "0 (a shared access; RWX bits stay 0)")


def _fmt_raw(raw: Mapping[str, Any]) -> str:
    try:
        return "{" + ", ".join(f"{k!r}: {v:#x}" if isinstance(v, int) else f"{k!r}: {v!r}" for k, v in raw.items()) + "}"
    except Exception:  # pragma: no cover - a raw that is not a mapping
        return repr(raw)


def _tail() -> str:
    """The last frames of the exception being handled, to find it in the plugin."""
    lines = traceback.format_exc().rstrip().splitlines()
    return "\n".join("    " + line for line in lines[-7:])
