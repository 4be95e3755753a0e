"""In-process benchmarks: the per-arch fault path and the core's scaling and memory.

Every figure is a median over ``repeats`` timed runs (``time.perf_counter_ns``), each run a
pass over a precomputed list of inputs; pipeline and hand-wired passes are interleaved so that
drift (frequency, a noisy neighbour) hits both alike and their ratio stays fair.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import floors

import kvmcore
from kvmcore import abi

#: Guest physical base of every benchmark memslot (1 GiB: inside every arch's IPA/GPA space).
GPA_BASE = 1 << 30
ns = time.perf_counter_ns
cpu_ns = time.thread_time_ns
#: Wall and CPU time of every timed sample: their ratio says how much of the wall time this
#: process spent waiting for a CPU (other load on the machine), which inflates every figure.
CLOCKS = {"wall_ns": 0, "cpu_ns": 0}


@dataclass(frozen=True)
class Params:
    """Sizes of the runs (``--quick`` shrinks them so that CI takes seconds)."""

    repeats: int = 7  # passes over the inputs (plus one untimed warm-up pass)
    pass_faults: int = 32768  # distinct gfns per pass
    userfault_pages: int = 8192
    scaling_faults: int = 16384
    chunk: int = 2048  # inputs per timed sample: many short samples make the median robust
    touch_pages: int = 1_000_000
    replay_events: int = 1_000_000
    replay_rounds: int = 3  # interleaved in-process rounds (kvmcore, floor) over the whole trace
    startup_runs: int = 21  # whole processes of ~0.1 s each: a robust median costs seconds

    @classmethod
    def quick(cls) -> Params:
        return cls(repeats=3, pass_faults=2048, userfault_pages=1024, scaling_faults=2048, chunk=512,
                   touch_pages=20_000, replay_events=20_000, replay_rounds=2, startup_runs=3)


def rate(ops: int, elapsed_ns: int) -> float:
    return ops * 1e9 / max(elapsed_ns, 1)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(loop: Callable[[], int]) -> float:
    """Run ``loop`` (which returns how many operations it did) once; operations per second."""
    gc.collect()
    start = ns()
    ops = loop()
    return rate(ops, ns() - start)


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def interleaved(
    loops: dict[str, tuple[Callable[[list[Any]], int], list[Any]]],
    passes: int,
    chunk: int,
    reset: Callable[[], None] = lambda: None,
    keep: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Median operations per second of each ``name: (loop, inputs)``.

    Each pass calls ``reset()`` (zap stage 2...), then times every loop on chunk after chunk of
    its inputs, alternating between the loops chunk by chunk: each sample is short (a few ms)
    and the variants sit side by side in time, so a burst of load from elsewhere on the machine
    lands on a few samples of every variant, not on one variant's whole run. The first pass is
    an untimed warm-up. ``keep`` (optional) receives every sample's rate by the thread's CPU
    time, for ratios: on a shared machine the time spent waiting for a CPU lands on one sample
    of a pair and not the other, and is not work either side did.
    """
    split = {name: chunks(inputs, chunk) for name, (_, inputs) in loops.items()}
    count = max(len(c) for c in split.values())
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for i in range(passes + 1):
        reset()
        gc.collect()
        for c in range(count):
            for name, (loop, _) in loops.items():
                if c < len(split[name]):
                    start, cpu_start = ns(), cpu_ns()
                    ops = loop(split[name][c])
                    elapsed, cpu = ns() - start, cpu_ns() - cpu_start
                    if i:
                        samples[name].append(rate(ops, elapsed))
                        if keep is not None:  # ratios use CPU time: waiting for a CPU is not work
                            keep[name].append(rate(ops, cpu))
                        CLOCKS["wall_ns"] += elapsed
                        CLOCKS["cpu_ns"] += cpu
    return {name: median(values) for name, values in samples.items()}


#: How a fault figure runs its loops: :func:`interleaved` (timed), or another function of the same
#: signature, e.g. ``fault_instructions.py``'s, which runs one loop under callgrind.
Measure = Callable[
    [dict[str, tuple[Callable[[list[Any]], int], list[Any]]], int, int, Callable[[], None], dict[str, list[float]]],
    dict[str, float],
]


def ratio_stats(slow: list[float], fast: list[float]) -> dict[str, float]:
    """Median, min and max of ``fast[i] / slow[i]``: rates of two variants sampled side by
    side (sample ``i`` of each ran back to back), so each ratio saw the same machine."""
    ratios = sorted(f / s for s, f in zip(slow, fast, strict=True) if s > 0)
    if not ratios:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "samples": 0}
    return {"median": median(ratios), "min": ratios[0], "max": ratios[-1], "samples": len(ratios)}


# --- hook implementations, found as pluggy would call them -----------------------------------
def first_impl(arch: kvmcore.Arch, hook: str, plugin: Any = None) -> Any:
    """The ``HookImpl`` pluggy calls first for ``hook`` (wrappers skipped), or ``plugin``'s own."""
    impls = [i for i in getattr(arch.pm.hook, hook).get_hookimpls() if not (i.wrapper or i.hookwrapper)]
    own = [i for i in impls if plugin is not None and i.plugin is plugin]
    if own:
        return own[-1]
    if not impls:
        raise LookupError(f"arch {arch.name!r}: no {hook} implementation")
    return impls[-1]  # pluggy calls the last registered (and tryfirst) first


def compile_loop(body: str, **names: Any) -> Callable[..., int]:
    """``def loop(raws): for raw in raws: BODY; return len(raws)``, compiled with ``names`` as
    globals, so a hookimpl is called with exactly the arguments it declares (pluggy lets an
    implementation take a subset: ``decode_fault(raw)``) and nothing is in between."""
    lines = [line.strip() for line in body.strip().splitlines()]
    src = "def loop(raws):\n    for raw in raws:\n" + "".join(f"        {line}\n" for line in lines)
    src += "    return len(raws)\n"
    namespace = dict(names)
    exec(compile(src, f"<benchmark loop {body.strip().splitlines()[0]}>", "exec"), namespace)
    return namespace["loop"]


def call(name: str, impl: Any) -> str:
    """``name(vcpu, raw)`` with the hookimpl's own argument names."""
    return f"{name}({', '.join(impl.argnames)})"


# --- VM set-up ----------------------------------------------------------------------------------
def new_vm(arch: kvmcore.Arch, pages: int, flags: int = 0, bitmap: Any = None) -> tuple[kvmcore.VM, kvmcore.VCPU]:
    vm = kvmcore.VM(arch)
    vm.set_user_memory_region(0, GPA_BASE, pages << vm.page_shift, flags=flags, userfault_bitmap=bitmap)
    return vm, vm.create_vcpu()


def encode_reads(vm: kvmcore.VM, vcpu: kvmcore.VCPU, gfns: list[int]) -> list[Any]:
    """Raw registers of a read translation fault (stage 2 not present) at each gfn."""
    encode = vm.arch.encode_fault
    shift = vm.page_shift
    return [encode(vcpu, kvmcore.Access(gfn << shift, "read", "not_present")) for gfn in gfns]


def check_mapped(vcpu: kvmcore.VCPU, raw: Any, what: str) -> None:
    result = vcpu.handle_fault(raw)
    if result.mapped is None:
        raise RuntimeError(f"{what}: the benchmark fault did not end mapped: {result}")


# --- per arch -----------------------------------------------------------------------------------
def bench_arch(arch: kvmcore.Arch, p: Params) -> dict[str, Any]:
    """decode, mapped path (with the hand-wired path and the floor), userfault round trips and
    MMIO exits, each against its floor."""
    out: dict[str, Any] = {}
    for figure in FAULT_FIGURES.values():
        out.update(figure(arch, p))
    return out


def floor_of(vm: kvmcore.VM) -> floors.FaultFloor | None:
    """The minimal fault function over ``vm``'s slots (None for an arch it does not know)."""
    if vm.arch.name not in floors.EXTRACT:
        return None
    slots = [(s.base_gfn, s.npages, s.userspace_addr, s.flags, s.userfault_bitmap) for s in vm.memslots]
    return floors.FaultFloor(vm.arch.name, vm.page_shift, slots)


def floor_loop(floor: floors.FaultFloor) -> Callable[[list[Any]], int]:
    return compile_loop("fault(raw)", fault=floor.fault)


def handwired(vm: kvmcore.VM, vcpu: kvmcore.VCPU) -> Callable[[list[Any]], int]:
    """The mapped path with the same arch functions called directly, in the pipeline's order:
    decode hookimpl, ``vm.gfn_to_memslot``, faultin hookimpl, ``vm.stage2.map``."""
    decode = first_impl(vm.arch, "decode_fault", vm.arch.plugin)
    faultin = first_impl(vm.arch, "faultin_pfn")
    body = f"""
        fault = {call("decode", decode)}
        fault.slot = gfn_to_memslot(fault.gfn)
        r = {call("faultin", faultin)}
        stage2_map(fault.gfn, r.pfn, r.size, r.writable, r.exec)
    """
    return compile_loop(body, decode=decode.function, faultin=faultin.function, vcpu=vcpu,
                        gfn_to_memslot=vm.gfn_to_memslot, stage2_map=vm.stage2.map)


#: The steps of a mapped fault timed on their own beside the floor (``steps``), in pipeline order.
STEPS = ("decode", "faultin", "objects")


def steps(vm: kvmcore.VM, vcpu: kvmcore.VCPU, raws: list[Any]) -> dict[str, tuple[Callable[[list[Any]], int], list[Any]]]:
    """Loops over the parts of a mapped fault, for the breakdown beside the verdict:

    * ``decode``: the arch's ``decode_fault`` implementation alone;
    * ``faultin``: the ``faultin_pfn`` hook through the arch's direct caller, on faults decoded
      beforehand with their memslot filled (what ``handle_fault`` hands it; translation faults,
      so stage 2's state does not change the path);
    * ``objects``: only building what ``handle_fault`` returns (the arch's fault, ``Mapped``,
      ``FaultResult``) from values decoded beforehand: the allocations the API implies, with no
      modelling work (skipped if the fault type is no dataclass).
    """
    decode = first_impl(vm.arch, "decode_fault", vm.arch.plugin)
    out = {"decode": (compile_loop(call("decode", decode), decode=decode.function, vcpu=vcpu), raws)}
    faults = [vm.arch.decode_fault(vcpu, raw) for raw in raws]
    for fault in faults:
        fault.slot = vm.gfn_to_memslot(fault.gfn)
    out["faultin"] = (compile_loop("faultin(vcpu, raw)", faultin=vm.arch.faultin_pfn, vcpu=vcpu), faults)
    fault_type = type(faults[0])
    if dataclasses.is_dataclass(fault_type):
        names = [f.name for f in dataclasses.fields(fault_type)]
        args = [tuple(getattr(f, name) for name in names) for f in faults]
        body = 'FaultResult(fault_type(*raw), 0, None, "mapped", Mapped(1, True, page_size, True, "mapped"), None)'
        out["objects"] = (compile_loop(body, fault_type=fault_type, FaultResult=kvmcore.FaultResult,
                                       Mapped=kvmcore.Mapped, page_size=vm.page_size), args)
    return out


def bench_mapped(arch: kvmcore.Arch, p: Params, measure: Measure = interleaved) -> dict[str, Any]:
    """The pipeline on one VM, the hand-wired path on a twin VM and the floor, same inputs,
    interleaved sample by sample."""
    vm, vcpu = new_vm(arch, p.pass_faults)
    twin, twin_vcpu = new_vm(arch, p.pass_faults)
    base = GPA_BASE >> vm.page_shift
    gfns = list(range(base, base + p.pass_faults))
    random.Random(1).shuffle(gfns)
    raws = encode_reads(vm, vcpu, gfns)
    check_mapped(vcpu, raws[0], f"{arch.name} mapped path")
    pipeline = compile_loop("handle_fault(raw)", handle_fault=vcpu.handle_fault)
    floor = floor_of(vm)

    def reset() -> None:
        vm.stage2.unmap_range(base, base + p.pass_faults)
        twin.stage2.unmap_range(base, base + p.pass_faults)
        if floor is not None:
            floor.stage2.clear()

    loops = {"pipeline": (pipeline, raws), "handwired": (handwired(twin, twin_vcpu), raws), **steps(vm, vcpu, raws)}
    if floor is not None:
        loops["floor"] = (floor_loop(floor), raws)
    samples: dict[str, list[float]] = {name: [] for name in loops}
    rates = measure(loops, p.repeats, p.chunk, reset, samples)
    for v in (vm, twin):
        if len(v.stage2) != p.pass_faults:
            raise RuntimeError(f"{arch.name}: expected {p.pass_faults} stage-2 leaves, found {len(v.stage2)}")
    mapped, wired = rates["pipeline"], rates["handwired"]
    out: dict[str, Any] = {"decode_per_s": rates["decode"], "mapped_per_s": mapped, "handwired_per_s": wired,
                           "overhead_ratio": wired / mapped,
                           "handwired_ratio": ratio_stats(samples["pipeline"], samples["handwired"])}
    if floor is not None:
        if len(floor.stage2) != p.pass_faults:
            raise RuntimeError(f"{arch.name}: the floor mapped {len(floor.stage2)} of {p.pass_faults} pages")
        out["mapped_floor_per_s"] = rates["floor"]
        out["mapped_ratio"] = ratio_stats(samples["pipeline"], samples["floor"])
        # where the time goes, each step against the floor in the same samples (information)
        out["steps"] = {name: ratio_stats(samples[name], samples["floor"]) for name in STEPS if name in rates}
    return out


def bench_userfault(arch: kvmcore.Arch, p: Params, measure: Measure = interleaved) -> dict[str, Any]:
    """Fault (userfault exit), clear the bitmap bit as the VMM does, fault again (mapped);
    the same round trip through the floor on a bitmap of its own."""
    pages = p.userfault_pages
    bitmap = bytearray(b"\xff" * ((pages + 63) // 64 * 8))
    vm, vcpu = new_vm(arch, pages, abi.KVM_MEM_USERFAULT, bitmap)
    base = GPA_BASE >> vm.page_shift
    gfns = list(range(base, base + pages))
    random.Random(2).shuffle(gfns)
    raws = encode_reads(vm, vcpu, gfns)
    work = [(raw, (gfn - base) >> 3, ~(1 << ((gfn - base) & 7)) & 0xFF) for raw, gfn in zip(raws, gfns, strict=True)]
    first = vcpu.handle_fault(raws[0])
    if first.outcome != "userfault" or first.ret != -abi.EFAULT or not (
        vcpu.kvm_run.exit.memory_fault.flags & abi.KVM_MEMORY_EXIT_FLAG_USERFAULT
    ):
        raise RuntimeError(f"{arch.name}: expected a userfault exit, got {first}")
    full = b"\xff" * len(bitmap)
    floor_bitmap = bytearray(full)
    floor = None
    if arch.name in floors.EXTRACT:
        floor = floors.FaultFloor(arch.name, vm.page_shift, [(base, pages, vm.memslots.by_id[0].userspace_addr,
                                                              abi.KVM_MEM_USERFAULT, floor_bitmap)])

    def round_trips(handle_fault: Callable[[Any], Any], bits: bytearray) -> Callable[[list[Any]], int]:
        def loop(items: list[tuple[Any, int, int]]) -> int:
            for raw, byte, mask in items:
                handle_fault(raw)  # exit: KVM_EXIT_MEMORY_FAULT with the USERFAULT flag, -EFAULT
                bits[byte] &= mask  # the VMM fetched the page: clear its bit
                handle_fault(raw)  # mapped
            return len(items)

        return loop

    def reset() -> None:
        bitmap[:] = full
        floor_bitmap[:] = full
        vm.stage2.unmap_range(base, base + pages)
        if floor is not None:
            floor.stage2.clear()

    loops = {"userfault": (round_trips(vcpu.handle_fault, bitmap), work)}
    if floor is not None:
        loops["floor"] = (round_trips(floor.fault, floor_bitmap), work)
    samples: dict[str, list[float]] = {name: [] for name in loops}
    rates = measure(loops, p.repeats, p.chunk // 2, reset, samples)
    if len(vm.stage2) != pages:
        raise RuntimeError(f"{arch.name}: userfault round trips left {len(vm.stage2)} of {pages} pages mapped")
    out: dict[str, Any] = {"userfault_roundtrips_per_s": rates["userfault"]}
    if floor is not None:
        out["userfault_floor_per_s"] = rates["floor"]
        out["userfault_ratio"] = ratio_stats(samples["userfault"], samples["floor"])
    return out


def bench_mmio(arch: kvmcore.Arch, p: Params, measure: Measure = interleaved) -> dict[str, Any]:
    """A store outside every memslot: ``KVM_EXIT_MMIO`` (the raws from ``encode_fault``'s
    ``no_slot`` cause), against the floor filling the same exit fields."""
    vm, vcpu = new_vm(arch, 16)
    shift = vm.page_shift
    encode = vm.arch.encode_fault
    base = (GPA_BASE >> shift) + 4096  # well above the slot
    raws = [encode(vcpu, kvmcore.Access((base + i) << shift | 8, "write", "no_slot", data=i))
            for i in range(p.pass_faults // 4)]
    first = vcpu.handle_fault(raws[0])
    if first.exit_reason != abi.KVM_EXIT_MMIO:
        raise RuntimeError(f"{arch.name}: expected an MMIO exit, got {first}")
    loops = {"mmio": (compile_loop("handle_fault(raw)", handle_fault=vcpu.handle_fault), raws)}
    floor = floor_of(vm)
    if floor is not None:
        loops["floor"] = (floor_loop(floor), raws)
    samples: dict[str, list[float]] = {name: [] for name in loops}
    rates = measure(loops, p.repeats, p.chunk, lambda: None, samples)
    out: dict[str, Any] = {"mmio_exits_per_s": rates["mmio"]}
    if floor is not None:
        out["mmio_floor_per_s"] = rates["floor"]
        out["mmio_ratio"] = ratio_stats(samples["mmio"], samples["floor"])
    return out


#: The fault figures with a floor, by name: ``bench_arch`` runs them in this order.
FAULT_FIGURES: dict[str, Callable[..., dict[str, Any]]] = {
    "mapped": bench_mapped, "userfault": bench_userfault, "mmio": bench_mmio,
}


# --- scaling -------------------------------------------------------------------------------------
SLOT_COUNTS = (1, 100, 10_000, abi.KVM_USER_MEM_SLOTS)


def bench_slots(arch: kvmcore.Arch, p: Params) -> dict[str, float]:
    """Mapped-path faults per second with 1 ... KVM_USER_MEM_SLOTS memslots.

    The same number of faults per pass in every case, spread over all the slots in a shuffled
    order, so each fault's slot lookup is a real search.
    """
    results: dict[str, float] = {}
    setups = []
    for count in SLOT_COUNTS:
        vm = kvmcore.VM(arch)
        pages = max(1, -(-p.scaling_faults // count))  # pages per slot
        size = pages << vm.page_shift
        stride = size + (2 << 20)  # a gap between slots
        for slot in range(count):
            vm.set_user_memory_region(slot, GPA_BASE + slot * stride, size)
        vcpu = vm.create_vcpu()
        base = GPA_BASE >> vm.page_shift
        gfns = [base + (i % count) * (stride >> vm.page_shift) + (i // count) % pages for i in range(p.scaling_faults)]
        random.Random(3).shuffle(gfns)
        raws = encode_reads(vm, vcpu, gfns)
        check_mapped(vcpu, raws[0], f"{count} memslots")
        end = base + count * (stride >> vm.page_shift)
        setups.append((count, vm, vcpu.handle_fault, raws, end))

    def reset() -> None:
        for _, vm, _, _, end in setups:
            vm.stage2.unmap_range(GPA_BASE >> vm.page_shift, end)

    loops = {str(count): (compile_loop("handle_fault(raw)", handle_fault=hf), raws) for count, _, hf, raws, _ in setups}
    samples: dict[str, list[float]] = {name: [] for name in loops}
    results.update(interleaved(loops, p.repeats, p.chunk, reset, samples))
    SLOT_RATIO.clear()
    SLOT_RATIO.update(ratio_stats(samples[str(SLOT_COUNTS[-1])], samples[str(SLOT_COUNTS[0])]))
    return results


#: The last :func:`bench_slots` run's most-slots / 1-slot time ratio (CPU time, sample pairs).
SLOT_RATIO: dict[str, float] = {}


def bench_memory(arch: kvmcore.Arch, p: Params) -> dict[str, float]:
    """tracemalloc'd bytes of a VM with one 1 TiB memslot, before and after touching pages.

    Before: everything allocated to create the VM, its 1 TiB memslot (and the host mapping
    behind it) and a vCPU. After: plus what faulting ``touch_pages`` pages through
    ``vcpu.handle_fault`` left allocated, the pages spread evenly over the slot (as post-copy
    touches a guest). The raw registers are encoded before tracing restarts, so they are not
    counted (tracemalloc ignores frees of blocks allocated while it was off); the stage-2 table
    is allocated while tracing, as it grows.
    """
    tib = 1 << 40
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        vm = kvmcore.VM(arch)
        vm.set_user_memory_region(0, 0, tib)  # at 0: arm64's default IPA space is exactly 1 TiB
        vcpu = vm.create_vcpu()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    npages = tib >> vm.page_shift
    stride = max(1, npages // p.touch_pages)
    raws = encode_reads(vm, vcpu, [i * stride for i in range(p.touch_pages)])
    handle_fault = vcpu.handle_fault
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for raw in raws:
            handle_fault(raw)
        del raw
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    if len(vm.stage2) != p.touch_pages:
        raise RuntimeError(f"touched {p.touch_pages} pages but stage 2 holds {len(vm.stage2)}")
    return {
        "bytes_untouched_1tib": before,
        "bytes_after_touch": before + grown,
        "pages_touched": p.touch_pages,
        "bytes_per_mapped_page": grown / p.touch_pages,
    }
