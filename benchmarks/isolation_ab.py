"""What isolating every hook call costs the fault path: ``python benchmarks/isolation_ab.py``.

In one process, interleaved chunk by chunk (bench_core.interleaved): the fault path as it was
before hook isolation (the facade methods and ``VCPU.handle_fault`` copied from main ca56692: no
guards, no result checks) against the current one (guards and type checks). Same arch plugin,
same inputs, twin VMs; prints mapped faults/s and userfault round trips/s of both and their
ratio. A one-off comparison kept for reruns: the copied code is the baseline, not a model.
"""
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as bc  # noqa: E402

import kvmcore  # noqa: E402
from kvmcore import abi  # noqa: E402
from kvmcore._types import Exit, FaultResult, Mapped, Retry  # noqa: E402
from kvmcore.errors import DecodeError  # noqa: E402
from kvmcore.plugin.contract import check_fault  # noqa: E402


class MainFacade:
    """main's Arch.decode_fault / faultin_pfn / prepare_memory_fault_exit."""
    def __init__(self, arch):
        self._a = arch
        self.name, self.info, self.debug = arch.name, arch.info, arch.debug
        self._decode_fault, self._faultin_pfn = arch._decode_fault, arch._faultin_pfn
        self._prepare_memory_fault_exit = arch._prepare_memory_fault_exit
    def __getattr__(self, name):
        return getattr(self._a, name)
    def decode_fault(self, vcpu, raw):
        fault = self._decode_fault(vcpu, raw)
        if fault is None:
            raise DecodeError(f"arch {self.name!r}: no decode_fault implementation answered for {dict(raw)}")
        if self.debug:
            check_fault(fault, self.name, self.info.fault_type)
        return fault
    def faultin_pfn(self, vcpu, fault):
        return self._faultin_pfn(vcpu, fault)
    def prepare_memory_fault_exit(self, vcpu, fault):
        return self._prepare_memory_fault_exit(vcpu, fault)


class MainVCPU(kvmcore.VCPU):
    def handle_fault(self, raw):
        run = self.kvm_run
        run.exit_reason = abi.KVM_EXIT_UNKNOWN
        self.pending_signal = None
        arch = self.vm.arch
        fault = arch.decode_fault(self, raw)
        fault.slot = self.vm.memslots.find(fault.gfn)
        result = arch.faultin_pfn(self, fault)
        if type(result) is Mapped:
            self.vm.stage2.map(fault.gfn, result.pfn, result.size, result.writable, result.exec)
            if result.writable and fault.slot is not None and fault.slot.dirty_bitmap is not None:
                fault.slot.mark_dirty(fault.gfn)
            return FaultResult(fault, 0, None, result.outcome, result, self.pending_signal)
        if type(result) is Retry:
            return FaultResult(fault, 0, None, result.outcome, None, self.pending_signal, result.detail)
        if type(result) is Exit:
            return FaultResult(fault, result.ret, run.exit_reason, result.outcome, None, self.pending_signal, result.detail)
        raise TypeError(result)


def twin(arch, pages, flags=0, bitmap=None):
    vm, vcpu = bc.new_vm(arch, pages, flags, bitmap)
    vm_old, _ = bc.new_vm(arch, pages, flags, None if bitmap is None else bytearray(bitmap))
    vm_old.arch = MainFacade(arch)
    old = MainVCPU(vm_old, 0)
    return vm, vcpu, vm_old, old


def mapped(arch, n, repeats, chunk):
    vm, vcpu, vm_old, old = twin(arch, n)
    base = bc.GPA_BASE >> vm.page_shift
    gfns = list(range(base, base + n))
    random.Random(1).shuffle(gfns)
    raws = bc.encode_reads(vm, vcpu, gfns)
    assert old.handle_fault(raws[0]).mapped is not None and vcpu.handle_fault(raws[0]).mapped is not None
    new_loop = bc.compile_loop("handle_fault(raw)", handle_fault=vcpu.handle_fault)
    old_loop = bc.compile_loop("handle_fault(raw)", handle_fault=old.handle_fault)
    def reset():
        vm.stage2.unmap_range(base, base + n)
        vm_old.stage2.unmap_range(base, base + n)
    return bc.interleaved({"main": (old_loop, raws), "branch": (new_loop, raws)}, repeats, chunk, reset)


def userfault(arch, n, repeats, chunk):
    full = b"\xff" * ((n + 63) // 64 * 8)
    bm_new, bm_old = bytearray(full), bytearray(full)
    vm, vcpu = bc.new_vm(arch, n, abi.KVM_MEM_USERFAULT, bm_new)
    vm_old, _ = bc.new_vm(arch, n, abi.KVM_MEM_USERFAULT, bm_old)
    vm_old.arch = MainFacade(arch)
    old = MainVCPU(vm_old, 0)
    base = bc.GPA_BASE >> vm.page_shift
    gfns = list(range(base, base + n))
    random.Random(2).shuffle(gfns)
    raws = bc.encode_reads(vm, vcpu, gfns)
    work = [(raw, (g - base) >> 3, ~(1 << ((g - base) & 7)) & 0xFF) for raw, g in zip(raws, gfns, strict=True)]
    assert old.handle_fault(raws[0]).outcome == "userfault" and vcpu.handle_fault(raws[0]).outcome == "userfault"
    def make(hf, bm):
        def loop(items):
            for raw, byte, mask in items:
                hf(raw)  # userfault exit
                bm[byte] &= mask  # the VMM fetched the page
                hf(raw)  # mapped
            return len(items)
        return loop
    def reset():
        bm_new[:] = full
        bm_old[:] = full
        vm.stage2.unmap_range(base, base + n)
        vm_old.stage2.unmap_range(base, base + n)
    return bc.interleaved({"main": (make(old.handle_fault, bm_old), work), "branch": (make(vcpu.handle_fault, bm_new), work)},
                          repeats, chunk, reset)


for name in ("arm64", "x86", "riscv"):
    arch = kvmcore.load_arch(name)
    m = mapped(arch, 16384, 9, 1024)
    u = userfault(arch, 8192, 9, 512)
    print(f"{name:6} mapped/s main {m['main']:10,.0f} branch {m['branch']:10,.0f} ratio {m['branch'] / m['main']:.3f}   "
          f"userfault round trips/s main {u['main']:9,.0f} branch {u['branch']:9,.0f} ratio {u['branch'] / u['main']:.3f}", flush=True)
print("wall/cpu", round(bc.CLOCKS["wall_ns"] / bc.CLOCKS["cpu_ns"], 2))
