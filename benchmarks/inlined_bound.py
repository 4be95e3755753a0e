"""How close to the floor can a model that keeps the kernel's checks get? (arm64, mapped fault)

``python benchmarks/inlined_bound.py [--passes N]``

An experiment, not part of kvmcore: ``inlined`` below is the arm64 read translation fault that
``benchmarks/run.py`` times (``bench_core.bench_mapped``), with every check the model makes on
that path (``decode_fault``, then ``kvm_handle_guest_abort()`` -> ``user_mem_abort()`` in
``kvmcore_arm64.abort``, then the core's stage-2 map) written out in one function: no hooks, no
facade, no helper calls but the host-memory and stage-2 lookups, and only the branches this
fault takes (every other one raises). It returns the same ``FaultResult`` as
``vcpu.handle_fault`` (checked on every input before timing).

``no objects`` is the same function building none of the three objects the API returns (the
fault, ``Mapped``, ``FaultResult``): it must return the model's pfn and leave the same stage-2
leaves. It measures what the result objects cost on top of the checks.

It prints all three against ``floors.FaultFloor`` as ``run.py`` measures its verdicts
(``bench_core.interleaved``: sample pairs run back to back, CPU time, median and range of the
ratios). The inlined function is the bound for the issue's 4x target
on this path: what remains is the work of the checks and of the objects the API returns, not
the structure of the code.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402
from kvmcore_arm64 import esr as E  # noqa: E402
from kvmcore_arm64 import fault as F  # noqa: E402

import kvmcore  # noqa: E402
from kvmcore import FaultResult, Mapped, abi  # noqa: E402
from kvmcore._types import KVM_PFN_ERR_NOSLOT_MASK  # noqa: E402


def inlined(vm: kvmcore.VM, vcpu: kvmcore.VCPU, objects: bool = True) -> Any:
    """The mapped arm64 fault, every check of the model's path in one function. ``objects=False``:
    the same work without building the three objects the API returns (the ``Arm64Fault``,
    ``Mapped``, ``FaultResult``); the fault then returns the pfn it mapped."""
    memslots, host, stage2, settings = vm.memslots, vm.host, vm.stage2, vm.settings
    shift, page_size, proposals = vm.page_shift, vm.page_size, vm.proposals
    abort_fields, fault_type, sea_kinds = F._abort_fields, F.Arm64Fault, E._SEA_KINDS
    plain, not_u64, hpfar_invalid = F._PLAIN_KEYS, F._NOT_U64, F._HPFAR_INVALID

    def fault(raw: Any) -> FaultResult:
        vcpu.kvm_run.exit_reason = abi.KVM_EXIT_UNKNOWN
        vcpu.pending_signal = None
        # decode_fault: the plain-abort test, the per-ESR fields, the fault
        esr, hpfar, far, data = raw.get("esr"), raw.get("hpfar"), raw.get("far"), raw.get("data", 0)
        if not (
            raw.keys() <= plain and esr.__class__ is int and hpfar.__class__ is int and not esr & not_u64
            and not hpfar & hpfar_invalid and (far is None or (far.__class__ is int and not far & not_u64))
            and data.__class__ is int and not data & not_u64
        ):  # fmt: skip
            raise ValueError("not a plain abort")
        exec_, write, syndrome, trusted, info = abort_fields(esr)
        ipa = (hpfar & F._FIPA_MASK) << F._FIPA_TO_IPA
        gfn = ipa >> shift
        gpa = ipa if far is None else ipa | (far & 0xFFF)
        slot = memslots.find(gfn)
        if objects:
            f = fault_type(gfn, exec_, write, False, *syndrome, ipa, gpa, far, hpfar, trusted, data, info)
            f.slot = slot
        # kvm_handle_guest_abort()
        kind = info.fault_kind
        if kind in sea_kinds:
            raise ValueError("SEA")
        if kind == "translation" and info.fault_level >= -1:
            if ipa >= 1 << 52 or ipa >= 1 << settings["ipa_bits"]:
                raise ValueError("IPA out of range")
        elif kind != "permission" and kind != "access_flag":
            raise ValueError("unsupported FSC")
        if "arm64-private" in proposals and vm.mem_is_private(gfn):
            raise ValueError("private mismatch")
        if slot is None or (write and slot.flags & abi.KVM_MEM_READONLY):
            raise ValueError("MMIO")
        if kind == "access_flag" or slot.flags & abi.KVM_MEM_GUEST_MEMFD:
            raise ValueError("access flag / gmem")
        # user_mem_abort()
        if kind == "permission":
            raise ValueError("permission fault")
        hva = slot.userspace_addr + ((gfn - slot.base_gfn) << shift)
        vma = host.find_vma(hva)
        if vma is None:
            raise ValueError("no VMA")
        logging = slot.dirty_bitmap is not None and not slot.flags & abi.KVM_MEM_READONLY
        force_pte = logging or slot.flags & abi.KVM_MEM_USERFAULT
        if not force_pte and vma.page_size > page_size and not vma.thp:
            raise ValueError("hugetlbfs VMA")
        if slot.flags & abi.KVM_MEM_USERFAULT:
            raise ValueError("userfault slot")
        pfn, writable = host.hva_to_pfn(hva, write)
        if pfn & KVM_PFN_ERR_NOSLOT_MASK or info.fsc == 0x35:
            raise ValueError("error pfn / exclusive atomic")
        if logging and not write:
            writable = False
        size = page_size
        if not force_pte:  # transparent_hugepage_adjust()
            pmd = 1 << 21
            mask, start = pmd - 1, slot.userspace_addr
            block = hva & ~mask
            if ((slot.base_gfn << shift) & mask) == (start & mask) and block >= start \
                    and block + pmd <= start + (slot.npages << shift) and host.mapping_size(hva) >= pmd:  # fmt: skip
                size = pmd
        stage2.map(gfn, pfn, size, writable, exec_)
        if not objects:
            return pfn
        return FaultResult(f, 0, None, "mapped", Mapped(pfn, writable, size, exec_, "mapped"), None)

    return fault


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=15, help="interleaved passes (default 15)")
    args = parser.parse_args()
    arch = kvmcore.load_arch("arm64")
    pages = 4096
    vm, vcpu = bench_core.new_vm(arch, pages)
    twin, twin_vcpu = bench_core.new_vm(arch, pages)
    base = bench_core.GPA_BASE >> vm.page_shift
    gfns = list(range(base, base + pages))
    random.Random(1).shuffle(gfns)
    raws = bench_core.encode_reads(vm, vcpu, gfns)
    floor = bench_core.floor_of(vm)
    assert floor is not None
    bare, bare_vcpu = bench_core.new_vm(arch, pages)
    fast, lean = inlined(twin, twin_vcpu), inlined(bare, bare_vcpu, objects=False)
    for raw in raws:  # the same answer as the model (the twin VM's slot prints alike), or no bound
        want, got, pfn = vcpu.handle_fault(raw), fast(raw), lean(raw)
        if repr(want) != repr(got) or want.mapped is None or pfn != want.mapped.pfn:
            raise SystemExit(f"inlined path differs from vcpu.handle_fault for {raw}: {got} ({pfn}) != {want}")
    for gfn in gfns:  # and the same stage-2 leaves
        if not repr(vm.stage2.lookup(gfn)) == repr(twin.stage2.lookup(gfn)) == repr(bare.stage2.lookup(gfn)):
            raise SystemExit(f"inlined paths left another stage-2 leaf at gfn {gfn:#x} than vcpu.handle_fault")

    def reset() -> None:
        vm.stage2.unmap_range(base, base + pages)
        twin.stage2.unmap_range(base, base + pages)
        bare.stage2.unmap_range(base, base + pages)
        floor.stage2.clear()

    loops = {name: (bench_core.compile_loop("fault(raw)", fault=function), raws)
             for name, function in (("floor", floor.fault), ("model", vcpu.handle_fault), ("inlined", fast),
                                    ("no objects", lean))}
    samples: dict[str, list[float]] = {name: [] for name in loops}
    bench_core.interleaved(loops, args.passes, bench_core.Params().chunk, reset, samples)
    print(f"arm64 mapped fault, {pages} shuffled gfns, {args.passes} passes of sample pairs run back to back (CPU time)")
    print(f"  floor      {1e6 / statistics.median(samples['floor']):5.2f} us")
    for name in ("model", "inlined", "no objects"):
        r = bench_core.ratio_stats(samples[name], samples["floor"])
        print(f"  {name:10} {1e6 / statistics.median(samples[name]):5.2f} us  {r['median']:.2f}x the floor "
              f"[{r['min']:.2f}-{r['max']:.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
