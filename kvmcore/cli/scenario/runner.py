"""Running a scenario: each arch's VM set up as the scenario says, each step applied in order,
the fault steps checked against their expectations (``kvmcore run``)."""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from typing import Any

import kvmcore
from kvmcore import abi
from kvmcore.cli.format import flag_list, flag_names, reason_text, ret_text, size_text
from kvmcore.cli.model import ModelChoice
from kvmcore.cli.model import as_dict as model_dict
from kvmcore.cli.scenario.schema import EXIT_FLAGS, SYNDROME_ARCHES, Scenario, SlotSpec, Step
from kvmcore.errors import KvmError, strerror
from kvmcore.kvm.userfault import bitmap_bytes

#: The scenario runner (the VMM side) allocates userfault bitmaps: at most this many bytes in
#: all, the bitmap of one slot of KVM_MEM_MAX_NR_PAGES pages, so memory stays bounded.
USERFAULT_BITMAP_BUDGET = bitmap_bytes(abi.KVM_MEM_MAX_NR_PAGES)


# --- running -----------------------------------------------------------------------------------
@dataclass
class StepResult:
    """What one step did on one arch. ``status``: ``done`` (state change), ``ok``/``fail`` (a
    fault, with or without expectations met), ``n/a`` (the arch cannot express it), ``error``."""

    status: str
    info: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class ArchRun:
    arch: str
    label: str = ""
    page_size: int = 0
    #: ``{"kernel": "7.3", "proposals": [...]}``: what the arch's VM modelled (empty if not made).
    model: dict[str, Any] = field(default_factory=dict)
    results: list[StepResult | None] = field(default_factory=list)
    error: str | None = None
    #: Setup the VM refused and a tolerant run (``kvmcore compare``) went on without.
    skipped: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    scenario: Scenario
    runs: list[ArchRun]
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors

    def as_dict(self) -> dict[str, Any]:
        scn = self.scenario
        steps = []
        for i, step in enumerate(scn.steps):
            entry: dict[str, Any] = {"step": step.number, "name": step.name, "action": step.action,
                                     "title": step.title(), "results": {}}
            for run in self.runs:
                res = run.results[i] if i < len(run.results) else None
                if res is None:
                    entry["results"][run.arch] = None
                    continue
                entry["results"][run.arch] = {"status": res.status, **res.info,
                                              "failures": res.failures, "note": res.note or None}
            steps.append(entry)
        return {
            "scenario": scn.name,
            "file": scn.file,
            "description": scn.description,
            "arches": [{"arch": r.arch, "plugin": r.label, "page_size": r.page_size, **r.model, "error": r.error}
                       for r in self.runs],
            "vmm": {"userfault": scn.userfault_policy, "private_mismatch": scn.mismatch_policy},
            "steps": steps,
            "ok": self.ok,
            "failures": self.failures,
            "errors": self.errors,
        }


def select_arches(scenario: Scenario, arch: str | None) -> list[str]:
    if arch is not None:
        if arch == "all":
            return kvmcore.installed_arches()
        return [a.strip() for a in arch.split(",") if a.strip()]
    if scenario.arches is None:
        return kvmcore.installed_arches()
    return scenario.arches


def run(
    scenario: Scenario, arch: str | None = None, vm_kwargs: dict[str, Any] | None = None, choice: ModelChoice | None = None
) -> Outcome:
    """Run ``scenario`` on each selected arch (``arch``: a name, ``"all"``, or the scenario's).

    ``choice`` is the command line's kernel and proposals (over the scenario's own ``kernel`` and
    ``proposals``); ``vm_kwargs`` go to every ``kvmcore.VM()`` on top (e.g. ``proposals``, as
    ``kvmcore compare`` does).
    """
    names = select_arches(scenario, arch)
    outcome = Outcome(scenario, [])
    if not names:
        outcome.errors.append("no arch plugins installed (see 'kvmcore plugins')")
        return outcome
    for name in names:
        kwargs = {**choice.vm_kwargs(name), **(vm_kwargs or {})} if choice is not None else vm_kwargs
        arch_run = run_arch(scenario, name, kwargs)
        # The arch's VM is a reference cycle (vm.vcpus[i].vm), freed by the cyclic collector,
        # not when run_arch returns: collect it here, so that its memslot bitmaps are gone
        # before the next arch allocates its own and `--arch all` needs the memory of one.
        gc.collect()
        outcome.runs.append(arch_run)
        if arch_run.error:
            outcome.errors.append(f"{scenario.file}: {name}: {arch_run.error}")
        for step, res in zip(scenario.steps, arch_run.results, strict=False):
            if res is None:
                continue
            for failure in res.failures:
                outcome.failures.append(f"{scenario.file}: step {step.number} ({_short(step)}) on {name}: {failure}")
    return outcome


def _short(step: Step) -> str:
    return repr(step.name) if step.name else step.title().split(" (")[0]


class _StepError(Exception):
    pass


def run_arch(scn: Scenario, name: str, vm_kwargs: dict[str, Any] | None = None, tolerant: bool = False) -> ArchRun:
    """Run ``scn`` on the arch ``name`` (one VM, made with ``vm_kwargs`` and the scenario's settings).

    A VM without the proposal ``userfault`` (upstream) cannot have ``KVM_MEM_USERFAULT`` slots:
    they are made without the flag and the scenario's userfault steps do nothing, as for a VMM
    that resolves post-copy faults with userfaultfd instead. ``tolerant``: a memslot or memory
    attribute the VM refuses (upstream arm64 has no memory attributes) is left out and named in
    ``ArchRun.skipped``, and the steps run without it.
    """
    result = ArchRun(name)
    try:
        arch = kvmcore.load_arch(name)
    except (kvmcore.PluginLoadError, kvmcore.FaultContractError) as exc:
        result.error = str(exc)
        return result
    result.label = f"{arch.dist or 'unpublished'} {arch.version or ''}".strip()
    try:
        scenario_choice = ModelChoice(scn.kernel, scn.proposals).vm_kwargs(name)
        vm = kvmcore.VM(arch, **{**scenario_choice, **(vm_kwargs or {})}, **scn.vm.get(name, {}))
    except kvmcore.PluginError as exc:
        result.error = str(exc)
        return result
    except (ValueError, TypeError) as exc:
        result.error = f"vm.{name}: {exc}"
        return result
    result.page_size = vm.page_size
    result.model = model_dict(vm)
    state = _State(vm, scn)
    state.drop_userfault = not vm.has_proposal("userfault")
    try:
        return _run_steps(result, state, scn, name, tolerant)
    except (kvmcore.PluginError, kvmcore.FaultContractError) as exc:
        # a broken plugin: this arch's column shows why, the other arches still run
        step = scn.steps[len(result.results)]  # the step that was running
        result.results.append(StepResult("error", note=str(exc)))
        result.error = f"step {step.number} ({step.path}): {exc}"
        return result


def _run_steps(result: ArchRun, state: _State, scn: Scenario, name: str, tolerant: bool) -> ArchRun:
    vm = state.vm
    try:
        for _cap_name, cap in scn.caps + scn.vm_caps.get(name, []):
            vm.enable_cap(cap)
        for spec in scn.memslots:
            try:
                state.set_memslot(spec)
            except KvmError as exc:
                message = f"{spec.path} (slot {spec.slot}): KVM_SET_USER_MEMORY_REGION2 failed: {exc}"
                if not tolerant:
                    raise _StepError(message) from None
                result.skipped.append(message)
        for path, gpa, size, private in scn.attributes:
            try:
                vm.set_memory_attributes(gpa, size, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
            except KvmError as exc:
                if not tolerant:
                    raise _StepError(f"{path}: KVM_SET_MEMORY_ATTRIBUTES failed: {exc}") from None
                result.skipped.append(f"{path}: KVM_SET_MEMORY_ATTRIBUTES failed: {exc}")
    except _StepError as exc:
        result.error = str(exc)
        return result
    except (kvmcore.PluginError, kvmcore.FaultContractError) as exc:
        result.error = f"setting up the VM: {exc}"
        return result
    vcpu = vm.create_vcpu()
    for step in scn.steps:
        try:
            res = _run_step(state, vcpu, step, name)
        except _StepError as exc:
            result.results.append(StepResult("error", note=str(exc)))
            result.error = f"step {step.number} ({step.path}): {exc}"
            break
        result.results.append(res)
    return result


class _State:
    """The VMM side of a run: its memslot bitmaps and guest_memfds."""

    def __init__(self, vm: kvmcore.VM, scn: Scenario) -> None:
        self.vm = vm
        self.scn = scn
        self.bitmaps: dict[int, bytearray] = {}
        self.drop_userfault = False

    def set_memslot(self, spec: SlotSpec) -> None:
        vm = self.vm
        if self.drop_userfault and spec.flags & abi.KVM_MEM_USERFAULT:
            spec = dataclasses.replace(spec, flags=spec.flags & ~abi.KVM_MEM_USERFAULT)
        # the ioctl's own checks first: nothing is sized from a slot the kernel would refuse
        try:
            npages = vm._check_memory_region(spec.slot, spec.gpa, spec.size, None, spec.flags, spec.guest_memfd_offset)
        except (ValueError, TypeError) as exc:  # a value no ioctl field holds
            raise _StepError(f"{spec.path}: {exc}") from None
        if spec.flags & abi.KVM_MEM_USERFAULT:
            need = bitmap_bytes(npages)
            held = sum(len(b) for slot, b in self.bitmaps.items() if slot != spec.slot)
            if held + need > USERFAULT_BITMAP_BUDGET:
                raise _StepError(
                    f"{spec.path}: the userfault bitmaps would take {held + need:,} bytes; a scenario may use up to "
                    f"{USERFAULT_BITMAP_BUDGET:,} (one bitmap of KVM_MEM_MAX_NR_PAGES pages), a limit of kvmcore's, not the kernel's"
                )
        if spec.size == 0:
            vm.set_user_memory_region(spec.slot, spec.gpa, 0)
            self.bitmaps.pop(spec.slot, None)
            return
        existing = vm.memslots.by_id.get(spec.slot)
        hva = None
        gmem = None
        if existing is None:
            if spec.host_page_size is not None or spec.host_prot is not None:
                prot = spec.host_prot if spec.host_prot is not None else kvmcore.PROT_READ | kvmcore.PROT_WRITE
                hva = vm.host.mmap(spec.size, prot, page_size=spec.host_page_size, thp=spec.host_thp)
            if spec.flags & abi.KVM_MEM_GUEST_MEMFD:
                gmem = vm.create_guest_memfd(spec.guest_memfd_offset + spec.size)
        bitmap = None
        if spec.flags & abi.KVM_MEM_USERFAULT:
            bitmap = self.bitmaps.get(spec.slot)
            if bitmap is None or len(bitmap) * 8 < npages:
                bitmap = bytearray(bitmap_bytes(npages))
            if spec.userfault == "all":
                kvmcore.set_userfault_bits(bitmap, range(npages))
            elif isinstance(spec.userfault, list):
                for gpa, size in spec.userfault:
                    kvmcore.set_userfault_bits(bitmap, self._pages(spec.gpa, npages, gpa, size, spec.path))
        vm.set_user_memory_region(
            spec.slot, spec.gpa, spec.size, userspace_addr=hva, flags=spec.flags,
            guest_memfd=gmem, guest_memfd_offset=spec.guest_memfd_offset, userfault_bitmap=bitmap,
        )
        if bitmap is not None:
            self.bitmaps[spec.slot] = bitmap

    def _pages(self, base: int, npages: int, gpa: int, size: int, path: str) -> range:
        shift = self.vm.page_shift
        first = (gpa - base) >> shift
        count = max(1, (size + (1 << shift) - 1) >> shift) if size else 1
        if first < 0 or first + count > npages:
            raise _StepError(f"{path}: userfault range [{gpa:#x}, +{size:#x}) is outside the slot")
        return range(first, first + count)

    def slot_of(self, gpa: int, what: str) -> kvmcore.Memslot:
        slot = self.vm.gfn_to_memslot(gpa >> self.vm.page_shift)
        if slot is None:
            raise _StepError(f"{what}: gpa {gpa:#x} is in no memslot")
        return slot

    def hva_range(self, gpa: int, size: int, what: str) -> int:
        slot = self.slot_of(gpa, what)
        if gpa + size > slot.guest_phys_addr + slot.memory_size:
            raise _StepError(f"{what}: [{gpa:#x}, +{size:#x}) runs past the end of slot {slot.id}")
        return slot.gfn_to_hva(gpa >> self.vm.page_shift) + (gpa & (self.vm.page_size - 1))

    def set_userfault(self, gpa: int, size: int, value: bool, what: str) -> None:
        slot = self.slot_of(gpa, what)
        bitmap = self.bitmaps.get(slot.id)
        if bitmap is None:
            raise _StepError(f"{what}: slot {slot.id} has no userfault bitmap (flags lack USERFAULT)")
        pages = self._pages(slot.guest_phys_addr, slot.npages, gpa, size, what)
        kvmcore.set_userfault_bits(bitmap, pages, value)


def _run_step(state: _State, vcpu: kvmcore.VCPU, step: Step, arch_name: str) -> StepResult:
    vm = state.vm
    p = step.params
    what = f"{step.action}"
    try:
        if step.action == "set_attributes":
            vm.set_memory_attributes(p["gpa"], p["size"], abi.KVM_MEMORY_ATTRIBUTE_PRIVATE if p["private"] else 0)
        elif step.action == "userfault":
            if state.drop_userfault:
                return StepResult("done", note="no KVM_MEM_USERFAULT without the proposal 'userfault'")
            state.set_userfault(p["gpa"], p["size"], p["set"], what)
        elif step.action == "mprotect":
            vm.host.mprotect(state.hva_range(p["gpa"], p["size"], what), p["size"], p["prot"])
        elif step.action == "munmap":
            vm.host.munmap(state.hva_range(p["gpa"], p["size"], what), p["size"])
        elif step.action == "memory_failure":
            slot = state.slot_of(p["gpa"], what)
            gfn = p["gpa"] >> vm.page_shift
            if p["private"]:
                if slot.gmem is None:
                    raise _StepError(f"{what}: slot {slot.id} has no guest_memfd (private = true needs one)")
                slot.gmem.memory_failure(((gfn - slot.base_gfn) << vm.page_shift) + slot.gmem_pgoff)
            else:
                vm.host.memory_failure(slot.gfn_to_hva(gfn))
        elif step.action == "memslot":
            state.set_memslot(p["spec"])
        elif step.action == "enable_cap":
            vm.enable_cap(p["cap"])
        else:
            return _run_fault(state, vcpu, step, arch_name)
    except (KvmError, ValueError, TypeError) as exc:  # the kernel's refusal, or a value no ioctl field holds
        raise _StepError(f"{step.title()}: {exc}") from None
    return StepResult("done")


def _run_fault(state: _State, vcpu: kvmcore.VCPU, step: Step, arch_name: str) -> StepResult:
    vm = state.vm
    arch = vm.arch
    scn = state.scn
    p = step.params
    if step.action == "raw":
        raw = p["regs"].get(arch_name)
        if raw is None:
            return StepResult("n/a", note=f"raw registers given only for {', '.join(p['regs'])}")
        raw = dict(raw)
    else:
        access = kvmcore.Access(p["gpa"], p["kind"], p["cause"], p["private"], p["size"], p["data"])
        try:
            raw = dict(arch.encode_fault(vcpu, access))
        except NotImplementedError as exc:
            return StepResult("n/a", note=str(exc))
        except ValueError as exc:
            return StepResult("n/a", note=f"{arch_name} cannot express this access: {exc}")
    round_trips = 0
    conversions = 0
    history: list[dict[str, Any]] = []
    while True:
        try:
            res = vcpu.handle_fault(raw)
        except kvmcore.DecodeError as exc:
            error_info: dict[str, Any] = {"raw": raw, "outcome": "decode_error", "detail": str(exc)}
            result = StepResult("fail", error_info, note=str(exc))
            result.failures.extend(_check(step, arch_name, error_info) or [f"decode_fault refused the registers: {exc}"])
            return result
        except kvmcore.FaultContractError as exc:
            raise _StepError(f"the {arch_name} plugin broke the fault contract: {exc}") from None
        except kvmcore.PluginError as exc:
            raise _StepError(str(exc)) from None
        info = snapshot(vm, vcpu, res, raw)
        mf = info.get("memory_fault")
        if mf is None or len(history) >= scn.max_round_trips:
            break
        if scn.userfault_policy == "resolve" and mf["flags"] & abi.KVM_MEMORY_EXIT_FLAG_USERFAULT:
            # A post-copy VMM: fetch the page (UFFDIO_COPY), clear its bit, KVM_RUN again.
            history.append(_brief(info))
            state.set_userfault(mf["gpa"], mf["size"], False, "vmm.userfault = resolve")
            round_trips += 1
            continue
        if (scn.mismatch_policy == "convert" and info["ret"] == -abi.EFAULT
                and not mf["flags"] & abi.KVM_MEMORY_EXIT_FLAG_USERFAULT):
            # What QEMU's kvm_convert_memory() does: make the range what the guest accessed.
            history.append(_brief(info))
            private = bool(mf["flags"] & abi.KVM_MEMORY_EXIT_FLAG_PRIVATE)
            if vm.mem_is_private(mf["gpa"] >> vm.page_shift) == private:
                break  # converting would not change anything: report the exit
            try:
                vm.set_memory_attributes(mf["gpa"], mf["size"], abi.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
            except KvmError as exc:
                raise _StepError(f"vmm.private_mismatch = convert: KVM_SET_MEMORY_ATTRIBUTES failed: {exc}") from None
            conversions += 1
            continue
        break
    info["round_trips"] = round_trips
    info["conversions"] = conversions
    if history:
        info["vmm_history"] = history
    failures = _check(step, arch_name, info)
    return StepResult("fail" if failures else "ok", info, failures)


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    mf = info.get("memory_fault") or {}
    return {"outcome": info["outcome"], "ret": info["ret"], "exit_reason": info["exit_reason"],
            "flags": mf.get("flags"), "gpa": mf.get("gpa"), "size": mf.get("size")}


def snapshot(vm: kvmcore.VM, vcpu: kvmcore.VCPU, res: kvmcore.FaultResult, raw: dict[str, Any]) -> dict[str, Any]:
    """What userspace (and the model) saw for one fault, JSON-ready."""
    import dataclasses

    fault = res.fault
    run = vcpu.kvm_run
    fields = {}
    if dataclasses.is_dataclass(fault):
        fields = {f.name: getattr(fault, f.name) for f in dataclasses.fields(fault) if f.name != "slot"}
    slot = getattr(fault, "slot", None)
    info: dict[str, Any] = {
        "raw": raw,
        "fault": fields,
        "fault_kind": getattr(fault, "fault_kind", None),
        "gfn": fault.gfn,
        "gpa": getattr(fault, "gpa", fault.gfn << vm.page_shift),
        "access": "exec" if fault.exec else "write" if fault.write else "read",
        "is_private": bool(fault.is_private),
        "slot": None if slot is None else slot.id,
        "outcome": res.outcome,
        "detail": res.detail or None,
        "ret": res.ret,
        "errno": strerror(res.ret) if res.ret else None,
        "exit_reason": res.exit_reason,
        "exit_reason_name": res.exit_reason_name if res.exit_reason is not None else None,
    }
    reason = res.exit_reason
    if reason == abi.KVM_EXIT_MEMORY_FAULT:
        mf = run.memory_fault
        info["memory_fault"] = {"flags": mf.flags, "flag_names": flag_list(mf.flags, EXIT_FLAGS),
                                "gpa": mf.gpa, "size": mf.size}
        if vm.exit_design.arm64_esr:
            info["memory_fault"]["esr"] = run.memory_fault_esr.esr
        syn = run.syndrome
        if syn.flags & abi.KVMCORE_SYNDROME_VALID:
            info["syndrome"] = {"arch": syn.arch, "arch_name": SYNDROME_ARCHES.get(syn.arch, str(syn.arch)),
                                "words": list(syn.syndrome)}
    elif reason == abi.KVM_EXIT_MMIO:
        mmio = run.mmio
        length = mmio.len
        info["mmio"] = {"phys_addr": mmio.phys_addr, "len": length, "is_write": bool(mmio.is_write),
                        "data": int.from_bytes(bytes(mmio.data)[: min(length, 8)], "little")}
    elif reason == abi.KVM_EXIT_ARM_NISV:
        info["arm_nisv"] = {"esr_iss": run.arm_nisv.esr_iss, "fault_ipa": run.arm_nisv.fault_ipa}
    elif reason == abi.KVM_EXIT_INTERNAL_ERROR:
        info["internal"] = {"suberror": run.internal.suberror, "ndata": run.internal.ndata}
    if res.mapped is not None:
        m = res.mapped
        info["mapped"] = {"pfn": m.pfn, "size": m.size, "writable": m.writable, "exec": m.exec}
    if res.signal is not None:
        s = res.signal
        info["signal"] = {"signo": s.signo, "code": s.code, "addr": s.addr, "lsb": s.lsb}
    return info


def _check(step: Step, arch: str, info: dict[str, Any]) -> list[str]:
    expect = {**step.expect, **step.expect_arch.get(arch, {})}
    failures = []
    mf = info.get("memory_fault")
    mmio = info.get("mmio")
    for key, want in expect.items():
        if key == "outcome":
            got = info.get("outcome")
            if got not in want:
                failures.append(f"outcome: expected {' or '.join(want)}, got {got}")
            continue
        if key == "exit_reason":
            got = info.get("exit_reason")
            if got != want:
                failures.append(f"exit_reason: expected {reason_text(want)}, got {reason_text(got)}")
        elif key == "ret":
            got = info.get("ret")
            if got != want:
                failures.append(f"ret: expected {ret_text(want)}, got {ret_text(got)}")
        elif key == "flags":
            if mf is None:
                failures.append(f"flags: expected memory_fault.flags {flag_names(want, EXIT_FLAGS)}, "
                                f"but the exit is {reason_text(info.get('exit_reason'))}")
            elif mf["flags"] != want:
                failures.append(f"flags: expected {flag_names(want, EXIT_FLAGS)}, got {flag_names(mf['flags'], EXIT_FLAGS)}")
        elif key in ("gpa", "size"):
            src = mf if mf is not None else ({"gpa": mmio["phys_addr"], "size": mmio["len"]} if mmio else None)
            if src is None:
                failures.append(f"{key}: expected {want:#x}, but the exit is {reason_text(info.get('exit_reason'))} "
                                "(gpa/size compare the memory_fault or mmio exit)")
            elif src[key] != want:
                failures.append(f"{key}: expected {want:#x}, got {src[key]:#x}")
        elif key == "mapped_size":
            mapped = info.get("mapped")
            if mapped is None:
                failures.append(f"mapped_size: expected a {size_text(want)} mapping, but the outcome is {info.get('outcome')}")
            elif mapped["size"] != want:
                failures.append(f"mapped_size: expected {size_text(want)}, got {size_text(mapped['size'])}")
        elif key == "signal":
            got = info.get("signal")
            got_name = got["signo"] if got else None
            if got_name != want:
                failures.append(f"signal: expected {want or 'none'}, got {got_name or 'none'}")
        elif key in ("round_trips", "conversions", "fault_kind"):
            got = info.get(key)
            if got != want:
                failures.append(f"{key}: expected {want}, got {got}")
    return failures
