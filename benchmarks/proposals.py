"""Measure proposed changes to files this suite may not edit, by patching them in process.

    python benchmarks/proposals.py [--quick]

Prints, per installed arch, the mapped path and the userfault round trip as they are, then with
each proposal applied on top of the previous ones:

* ``facade``: ``kvmcore/_loader.py``'s ``Arch`` binds its hot hooks to generated direct callers
  for every exact case (a lone implementation taking any subset of the arguments, several
  implementations in pluggy's first-result order, new-style ``wrapper=True`` wrappers driven
  inline), and the typed methods call them positionally;
* ``handle_fault``: ``kvmcore/_vm.py``'s ``VCPU.handle_fault`` with its lookups hoisted.

Nothing here is used by ``run.py``; the patches live only in this process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402

import kvmcore  # noqa: E402
from kvmcore import _loader, _vm, abi  # noqa: E402
from kvmcore._types import Exit, FaultResult, Mapped, Retry  # noqa: E402
from kvmcore.errors import DecodeError  # noqa: E402

HOT = {"decode_fault": ("vcpu", "raw"), "faultin_pfn": ("vcpu", "fault"), "prepare_memory_fault_exit": ("vcpu", "fault")}


# --- proposal 1: the facade ------------------------------------------------------------------
def direct_caller(arch: Any, name: str) -> Any:
    """A positional caller for hook ``name`` equivalent to pluggy's firstresult call, or None
    when only pluggy itself is exact (tracing, monitoring, old-style hookwrappers)."""
    caller = getattr(arch.pm.hook, name)
    if arch._tracing_undo is not None or arch.pm.monitored:
        return None
    impls = caller.get_hookimpls()
    if any(i.hookwrapper or i.kwargnames for i in impls):
        return None
    params = HOT[name]
    sig = ", ".join(params)
    plain = [i for i in reversed(impls) if not i.wrapper]  # pluggy's call order
    wrappers = [i for i in reversed(impls) if i.wrapper]  # outermost first
    ns: dict[str, Any] = {}
    lines = [f"def inner({sig}):"]
    for k, impl in enumerate(plain):
        ns[f"f{k}"] = impl.function
        lines.append(f"    r = f{k}({', '.join(impl.argnames)})")
        lines.append("    if r is not None:\n        return r")
    lines.append("    return None")
    exec("\n".join(lines), ns)
    function = ns["inner"]
    for impl in reversed(wrappers):  # innermost wrapper first
        function = wrap(impl.function, impl.argnames, function, params)
    return function


def wrap(wrapper: Any, argnames: tuple[str, ...], inner: Any, params: tuple[str, ...]) -> Any:
    """pluggy's new-style wrapper protocol (``result = yield``) for one wrapper around ``inner``."""
    pick = [params.index(a) for a in argnames]
    everything = pick == list(range(len(params)))

    def call(*args: Any) -> Any:
        gen = wrapper(*args) if everything else wrapper(*[args[i] for i in pick])
        try:
            next(gen)
        except StopIteration:
            raise RuntimeError(f"wrapper {wrapper.__qualname__} did not yield") from None
        try:
            result = inner(*args)
        except BaseException as exc:
            try:
                gen.throw(exc)
            except StopIteration as stop:
                return stop.value
            raise RuntimeError(f"wrapper {wrapper.__qualname__} has a second yield") from None
        try:
            gen.send(result)
        except StopIteration as stop:
            return stop.value
        raise RuntimeError(f"wrapper {wrapper.__qualname__} has a second yield")

    return call


def keyword_caller(hook: Any, a: str, b: str) -> Any:
    return lambda x, y: hook(**{a: x, b: y})


class FastArch(_loader.Arch):
    """``Arch`` with proposal 1 (what ``kvmcore/_loader.py`` would become)."""

    def _bind(self) -> None:
        for name in HOT:
            direct = direct_caller(self, name)
            if direct is None:  # pluggy itself: called with keywords, as pluggy requires
                direct = keyword_caller(getattr(self.pm.hook, name), *HOT[name])
            setattr(self, f"_{name}", direct)

    def decode_fault(self, vcpu: Any, raw: Any) -> Any:
        fault = self._decode_fault(vcpu, raw)
        if fault is None:
            raise DecodeError(f"arch {self.name!r}: no decode_fault implementation answered for {dict(raw)}")
        if self.debug:
            _loader.check_fault(fault, self.name, self.info.fault_type)
        return fault

    def faultin_pfn(self, vcpu: Any, fault: Any) -> Any:
        return self._faultin_pfn(vcpu, fault)

    def prepare_memory_fault_exit(self, vcpu: Any, fault: Any) -> Any:
        return self._prepare_memory_fault_exit(vcpu, fault)


def fast_arch(arch: _loader.Arch) -> FastArch:
    """A second, independent load of ``arch``'s plugin with the proposed facade."""
    other = _loader.build_arch(arch.plugin, name=arch.name, dist=arch.dist, version=arch.version)
    other.__class__ = FastArch
    other._bind()
    other.pm.on_change = other._bind
    return other


def patch_facade() -> None:
    """Apply proposal 1 to every ``Arch`` built from now on (for running the tests with it)."""
    for name in ("_bind", "decode_fault", "faultin_pfn", "prepare_memory_fault_exit"):
        setattr(_loader.Arch, name, FastArch.__dict__[name])


# --- proposal 2: handle_fault ----------------------------------------------------------------
def handle_fault(self: Any, raw: Any) -> FaultResult:
    run = self.kvm_run
    run.exit_reason = abi.KVM_EXIT_UNKNOWN
    self.pending_signal = None
    vm = self.vm
    arch = vm.arch
    fault = arch.decode_fault(self, raw)
    gfn = fault.gfn
    slot = fault.slot = vm.memslots.find(gfn)
    result = arch.faultin_pfn(self, fault)
    result_type = type(result)
    if result_type is Mapped:
        vm.stage2.map(gfn, result.pfn, result.size, result.writable, result.exec)
        if result.writable and slot is not None and slot.dirty_bitmap is not None:
            slot.mark_dirty(gfn)
        return FaultResult(fault, 0, None, result.outcome, result, self.pending_signal)
    if result_type is Retry:
        return FaultResult(fault, 0, None, result.outcome, None, self.pending_signal, result.detail)
    if result_type is Exit:
        return FaultResult(fault, result.ret, run.exit_reason, result.outcome, None, self.pending_signal, result.detail)
    raise TypeError(f"arch {arch.name!r}: faultin_pfn must return Mapped, Retry or Exit, got {result!r}")


class FastVCPU(_vm.VCPU):
    handle_fault = handle_fault


def patch_handle_fault() -> None:
    _vm.VCPU.handle_fault = handle_fault


def variants(arch: _loader.Arch) -> list[tuple[str, Any, Any]]:
    fast = fast_arch(arch)
    return [("as is", arch, None), ("+ facade", fast, None), ("+ facade + handle_fault", fast, FastVCPU)]


def measure(p: bench_core.Params) -> list[tuple[str, str, dict[str, float]]]:
    """Every variant of every arch, their samples interleaved (``bench_core.interleaved``)."""
    rows = []
    for name in kvmcore.installed_arches():
        try:
            arch = kvmcore.load_arch(name)
        except Exception as exc:
            print(f"{name}: skipped ({exc})")
            continue
        mapped_loops, uf_loops, resets = {}, {}, []
        for label, variant, vcpu_class in variants(arch):
            vm, vcpu = bench_core.new_vm(variant, p.pass_faults)
            bitmap = bytearray(b"\xff" * ((p.userfault_pages + 63) // 64 * 8))
            uvm, uvcpu = bench_core.new_vm(variant, p.userfault_pages, abi.KVM_MEM_USERFAULT, bitmap)
            if vcpu_class is not None:
                vcpu.__class__ = uvcpu.__class__ = vcpu_class
            base = bench_core.GPA_BASE >> vm.page_shift
            raws = bench_core.encode_reads(vm, vcpu, list(range(base, base + p.pass_faults)))
            mapped_loops[label] = (bench_core.compile_loop("handle_fault(raw)", handle_fault=vcpu.handle_fault), raws)
            work = [(raw, k >> 3, ~(1 << (k & 7)) & 0xFF) for k, raw in enumerate(raws[: p.userfault_pages])]

            def uloop(items: list[Any], hf: Any = uvcpu.handle_fault, bitmap: bytearray = bitmap) -> int:
                for raw, byte, mask in items:
                    hf(raw)
                    bitmap[byte] &= mask
                    hf(raw)
                return len(items)

            uf_loops[label] = (uloop, work)
            resets.append((vm, uvm, bitmap, base))

        def reset(resets: list[Any] = resets) -> None:
            for vm, uvm, bitmap, base in resets:
                vm.stage2.unmap_range(base, base + p.pass_faults)
                uvm.stage2.unmap_range(base, base + p.userfault_pages)
                bitmap[:] = b"\xff" * len(bitmap)

        mapped = bench_core.interleaved(mapped_loops, p.repeats, p.chunk, reset)
        userfault = bench_core.interleaved(uf_loops, p.repeats, p.chunk // 2, reset)
        for label in mapped:
            rows.append((label, name, {"mapped_per_s": mapped[label], "userfault_roundtrips_per_s": userfault[label]}))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    p = bench_core.Params.quick() if args.quick else bench_core.Params(repeats=7, pass_faults=16384, userfault_pages=4096)
    rows = measure(p)
    print(f"{'step':26} {'arch':6} {'mapped path':>22} {'userfault round trip':>24}")
    for label, name, r in rows:
        print(f"{label:26} {name:6} {r['mapped_per_s']:>12,.0f}/s {1e6 / r['mapped_per_s']:5.2f}us "
              f"{r['userfault_roundtrips_per_s']:>12,.0f}/s {1e6 / r['userfault_roundtrips_per_s']:6.2f}us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
