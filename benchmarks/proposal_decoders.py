"""Proposals for the arch plugins' decoders, measured: the same faults, less work per call.

    python benchmarks/proposal_decoders.py

For each installed arch with a proposal here, the proposed ``decode_fault`` is checked to give
identical faults (and identical errors on bad input) on every access kind and cause the arch can
encode, with and without optional registers, shared and private; then timed against the
current decoder, alone, in the mapped path and in the userfault round trip (also with the
facade proposal of ``proposals.py``), all interleaved sample by sample.

arm64 (``plugins/arm64/src/kvmcore_arm64/fault.py``):

* the raw check becomes one set comparison on the keys plus type/range checks of the values
  present (anything unusual goes to the current decoder, which raises with its message);
* everything that depends only on ESR_EL2 (the 14 syndrome fields, exec, write,
  hpfar_trusted) is computed once per distinct ESR value and cached as a tuple;
* the 26-field ``Arm64Fault`` is built positionally (``__init__`` with keywords costs more).

riscv (``plugins/riscv/src/kvmcore_riscv/fault.py``): the same one-step raw check, and
``RiscvFault`` built positionally from the trap decode.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402
import proposals  # noqa: E402

import kvmcore  # noqa: E402
from kvmcore import abi  # noqa: E402

_U64 = (1 << 64) - 1


# --- arm64 ----------------------------------------------------------------------------------
def arm64_proposal() -> tuple[Any, str, Any]:
    """(module whose attribute the hookimpl looks up per call, attribute, proposed function)."""
    from kvmcore_arm64 import esr as E
    from kvmcore_arm64 import fault as F

    known = frozenset(F.REGISTERS + F.MODEL_KEYS)
    original = F.decode_fault

    @lru_cache(maxsize=4096)
    def _by_esr(esr: int) -> tuple[Any, ...]:
        info = E.decode_guest_abort(esr)
        return (
            E.is_exec_fault(info), E.is_write_fault(info), info.esr, info.ec, info.fsc, info.fault_kind,
            info.fault_level, bool(info.s1ptw), not info.is_data_abort, info.isv, info.wnr, info.cm,
            info.access_size, info.srt, E.hpfar_trusted(info), info,
        )


    def decode_fault(vcpu: Any, raw: Any) -> Any:
        """``kvmcore_arm64.fault.decode_fault`` with the per-ESR work cached."""
        if not raw.keys() <= known or "esr" not in raw or "hpfar" not in raw:
            return original(vcpu, raw)  # raises with the current message
        esr = raw["esr"]
        hpfar = raw["hpfar"]
        far = raw.get("far")
        data = raw.get("data", 0)
        if (
            esr.__class__ is not int or not 0 <= esr <= _U64
            or hpfar.__class__ is not int or not 0 <= hpfar <= _U64
            or (far is not None and (far.__class__ is not int or not 0 <= far <= _U64))
            or (data.__class__ is not int or not 0 <= data <= _U64)
        ):
            return original(vcpu, raw)
        (exec_, write, esr_, ec, fsc, kind, level, s1ptw, is_iabt, isv, wnr, cm, size, srt, trusted, info) = _by_esr(esr)
        ipa = E.hpfar_to_ipa(hpfar)
        private = raw.get("private", 0)
        if private.__class__ is not int or not 0 <= private <= 1:
            private = F.raw_private(raw)
        page_shift = vcpu.vm.page_shift
        return F.Arm64Fault(
            ipa >> page_shift if page_shift in (12, 14, 16) else E.gpa_to_gfn(ipa, page_shift),
            exec_, write, bool(private), esr_, ec, fsc, kind, level, s1ptw, is_iabt, isv, wnr, cm, size,
            srt, ipa, ipa | (far & 0xFFF) if far is not None else ipa, far, hpfar, trusted, data, info,
        )

    return F, "decode_fault", decode_fault


# --- riscv ----------------------------------------------------------------------------------
def riscv_proposal() -> tuple[Any, str, Any]:
    from kvmcore_riscv import fault as R
    from kvmcore_riscv import plugin as P

    required = frozenset(R.REQUIRED)
    known = frozenset(R.REGISTERS + R.MODEL_KEYS)
    fault_kinds = {a: "guest_page_fault_" + a for a in ("fetch", "load", "store")}
    original = R.decode_riscv_fault

    def decode_riscv_fault(raw: Any) -> Any:
        """``kvmcore_riscv.fault.decode_riscv_fault`` with a one-step key check, built positionally."""
        keys = raw.keys()
        if not keys <= known or not required <= keys:
            return original(raw)
        sepc, insn, data, private = raw.get("sepc"), raw.get("insn"), raw.get("data"), raw.get("private", 0)
        if (
            (sepc is not None and (sepc.__class__ is not int or not 0 <= sepc <= _U64))
            or (insn is not None and (insn.__class__ is not int or not 0 <= insn <= 0xFFFFFFFF))
            or (data is not None and (data.__class__ is not int or not 0 <= data <= _U64))
            or private.__class__ is not int or not 0 <= private <= 1
        ):
            return original(raw)  # the current code raises with its message (or accepts a bool)
        t = R.decode_guest_page_fault(raw["scause"], raw["htval"], raw["stval"], raw.get("htinst", 0))
        return R.RiscvFault(
            t.gfn, t.exec, t.write, private == 1, t.scause, t.scause_name, t.access, fault_kinds[t.access],
            t.gpa, t.kernel_gpa, t.gva, t.htval, t.stval, t.htinst, t.htinst_kind, t.insn_length,
            t.access_size, t.rd, t.rs2, t.sign_extend, t.addr_offset, sepc, insn, data,
        )

    return P, "decode_riscv_fault", decode_riscv_fault


# --- x86 ------------------------------------------------------------------------------------
def x86_proposal() -> tuple[Any, str, Any]:
    import dataclasses

    from kvmcore_x86 import decode as D
    from kvmcore_x86.fault import X86Fault, fault_kind
    from kvmcore_x86.pferr import (
        PFERR_FETCH_MASK,
        PFERR_PRESENT_MASK,
        PFERR_PRIVATE_ACCESS,
        PFERR_RSVD_MASK,
        PFERR_USER_MASK,
        PFERR_WRITE_MASK,
    )

    original = D.decode_fault
    # X86Fault built positionally: every field, defaults passed as constants
    given = ("gfn", "exec", "write", "is_private", "slot", "addr", "error_code", "present", "rsvd", "user",
             "vendor", "gpa", "fault_kind", "exit_qualification", "npf_error_code", "gla",
             "nx_huge_page_workaround_enabled", "mmio_len", "mmio_data")
    names, args = [], []
    for f in dataclasses.fields(X86Fault):
        if f.name in given:
            args.append(f.name)
        else:
            names.append(f.name)
            args.append(f"_default_{f.name}")
    ns = {f"_default_{f.name}": f.default for f in dataclasses.fields(X86Fault) if f.name not in given}
    ns["X86Fault"] = X86Fault
    exec(f"def make({', '.join(given)}):\n    return X86Fault({', '.join(args)})", ns)
    make = ns["make"]
    registers = ("gpa", "exit_qualification", "error_code", "exit_reason", "gla", "len", "data")
    #: (vendor, register, exit_reason, private, settings...) -> (eq, npf, error_code) for non-TDX VMs
    cache: dict[tuple[Any, ...], tuple[Any, Any, int]] = {}

    def decode_fault(vcpu: Any, raw: Any) -> Any:
        """``kvmcore_x86.decode.decode_fault`` with the exit-qualification / error-code work cached
        (everything but TDX, whose PFERR depends on the GPA, and odd inputs, which go the old way)."""
        vm = vcpu.vm
        settings = vm.settings
        vm_type = settings["vm_type"]
        if vm_type == "tdx" or not raw.keys() <= D.RAW_KEYS:
            return original(vcpu, raw)
        for key in registers:
            value = raw.get(key)
            if value is not None and (value.__class__ is not int or not 0 <= value <= _U64):
                return original(vcpu, raw)
        private = raw.get("private", 0)
        gpa = raw.get("gpa")
        if gpa is None or gpa >> D.GPA_BITS or private.__class__ is not int or not 0 <= private <= 1:
            return original(vcpu, raw)
        vendor = raw.get("vendor")
        if vendor is None:
            vendor = D.resolve_vendor(raw, settings["vendor"])
        if vendor == "vmx":
            if "error_code" in raw:
                return original(vcpu, raw)
            key = ("vmx", raw.get("exit_qualification"), raw.get("exit_reason"), private,
                   vm_type, settings["kernel"], settings["mbec"], settings["vendor"])
        elif vendor == "svm":
            if "exit_qualification" in raw or "exit_reason" in raw or "gla" in raw:
                return original(vcpu, raw)
            key = ("svm", raw.get("error_code"), None, private, vm_type, settings["vendor"])
        else:
            return original(vcpu, raw)
        cached = cache.get(key)
        if cached is None:
            if (vm_type, vendor) in (("snp", "vmx"), ("tdx", "svm")):
                return original(vcpu, raw)
            try:
                if vendor == "vmx":
                    eq, error_code, _ = D._decode_vmx(vm, {k: raw[k] for k in ("exit_qualification", "exit_reason") if k in raw}, gpa, bool(private))
                    cached = (eq, None, error_code)
                else:
                    npf, error_code = D._decode_svm(vm, {"error_code": raw["error_code"]}, bool(private))
                    cached = (None, npf, error_code)
            except Exception:
                return original(vcpu, raw)  # the current code raises with its message
            if len(cache) > 4096:
                cache.clear()
            cache[key] = cached
        eq, npf, error_code = cached
        gla = raw.get("gla") if eq is not None and eq & D.EPT_VIOLATION_GVA_IS_VALID else None
        if vm_type == "sw_protected" and not error_code & PFERR_RSVD_MASK and vm.mem_is_private(gpa >> vm.page_shift):
            error_code |= PFERR_PRIVATE_ACCESS
        mmio_len = raw.get("len")
        if mmio_len is not None and mmio_len not in D.MMIO_LENGTHS:
            return original(vcpu, raw)
        return make(
            gpa >> vm.page_shift, bool(error_code & PFERR_FETCH_MASK), bool(error_code & PFERR_WRITE_MASK),
            bool(error_code & PFERR_PRIVATE_ACCESS), None, gpa, error_code, bool(error_code & PFERR_PRESENT_MASK),
            bool(error_code & PFERR_RSVD_MASK), bool(error_code & PFERR_USER_MASK), vendor, gpa,
            fault_kind(error_code), eq, npf, gla, bool(settings.get("nx_huge_pages", False)), mmio_len,
            raw.get("data") or 0,
        )

    return D, "decode_fault", decode_fault


PROPOSALS = {"arm64": arm64_proposal, "riscv": riscv_proposal, "x86": x86_proposal}
SETTINGS = {
    "arm64": ({}, {"granule": "16K"}, {"granule": "64K", "ipa_bits": 48}),
    "riscv": ({}, {"kernel": "7.2"}),
    "x86": ({}, {"vendor": "svm"}, {"vm_type": "snp"}, {"vm_type": "sw_protected"}, {"vm_type": "tdx"},
            {"kernel": "6.17"}, {"kernel": "7.2", "mbec": True}, {"nx_huge_pages": True}),
}
BAD_INPUTS = {
    "arm64": ({"esr": 1}, {"esr": 0x92000007, "hpfar": -1}, {"esr": 0x92000007, "hpfar": 0, "x": 1},
              {"esr": 0x92000007, "hpfar": 0, "private": 2}, {"esr": 0, "hpfar": 0},
              {"esr": 0x92000007, "hpfar": 0, "far": "x"}, {"esr": 0x92000007, "hpfar": 0, "private": True}),
    "riscv": ({"scause": 21}, {"scause": 21, "htval": 0, "stval": 0, "x": 1}, {"scause": 5, "htval": 0, "stval": 0},
              {"scause": 21, "htval": 0, "stval": 0, "sepc": -1}, {"scause": 21, "htval": 0, "stval": 0, "private": 3},
              {"scause": 21, "htval": 0, "stval": 0, "private": True}, {"scause": 21, "htval": 1 << 60, "stval": 0}),
    "x86": ({"gpa": 0}, {"gpa": 0, "exit_qualification": 0}, {"gpa": 1 << 60, "exit_qualification": 0x181},
            {"gpa": 0, "exit_qualification": 0x181, "error_code": 4}, {"gpa": 0, "exit_qualification": 0x181, "x": 1},
            {"gpa": 0, "exit_qualification": 0x181, "exit_reason": 12}, {"gpa": 0, "exit_qualification": 0x181, "len": 3},
            {"gpa": 0, "error_code": 1 << 40}, {"gpa": 0, "error_code": 6, "gla": 5}, {"gpa": 0, "vendor": "arm"},
            {"gpa": 0, "exit_qualification": 0x181, "private": 2}, {"gpa": 0, "exit_qualification": 0x181, "gla": 0x1000},
            {"gpa": 0x1000, "exit_qualification": 0x181, "exit_reason": 49}),
}


def raws_for(arch: kvmcore.Arch, vcpu: kvmcore.VCPU) -> list[dict[str, Any]]:
    """Every access kind x cause x private the arch encodes at a few addresses, each also
    without each optional register."""
    out = []
    for gpa in (0, 0x1008, 0x40001000, 0x8_0000_0ABC, (1 << 40) - 8):
        for kind in ("read", "write", "exec"):
            for cause in arch.info.causes:
                for private in (False, True):
                    try:
                        raw = dict(arch.encode_fault(vcpu, kvmcore.Access(gpa, kind, cause, private)))
                    except ValueError:
                        continue
                    out.append(raw)
                    for key in raw:
                        if key not in ("esr", "hpfar", "scause", "htval", "stval"):
                            out.append({k: v for k, v in raw.items() if k != key})
    return out


def outcome(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as exc:
        return (type(exc), str(exc))


def check_equal(name: str, arch: kvmcore.Arch, module: Any, attr: str, proposed: Any) -> int:
    original = getattr(module, attr)
    takes_vcpu = attr == "decode_fault"
    count = 0
    for settings in SETTINGS.get(name, ({},)):
        vm = kvmcore.VM(arch, **settings)
        if settings.get("vm_type") == "sw_protected":
            vm.set_memory_attributes(0x40001000, 0x1000, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        vcpu = vm.create_vcpu()
        inputs = raws_for(arch, vcpu) + [dict(b) for b in BAD_INPUTS.get(name, ())]
        for raw in inputs:
            args = (vcpu, raw) if takes_vcpu else (raw,)
            a, b = outcome(original, *args), outcome(proposed, *args)
            assert a == b, (name, settings, raw, a, b)
        count += len(inputs)
    return count


def compare(name: str, arch: kvmcore.Arch, p: bench_core.Params) -> dict[str, float]:
    module, attr, proposed = PROPOSALS[name]()
    print(f"{name}: identical results on {check_equal(name, arch, module, attr, proposed)} inputs")
    original = getattr(module, attr)
    impl = bench_core.first_impl(arch, "decode_fault", arch.plugin)
    fast = proposals.fast_arch(arch)
    loops: dict[str, Any] = {}
    resets = []

    def using(function: Any, inner: Any) -> Any:
        def loop(chunk: list[Any]) -> int:
            setattr(module, attr, function)  # the hookimpl looks it up on each call
            return inner(chunk)

        return loop

    vm, vcpu = bench_core.new_vm(arch, p.pass_faults)
    base = bench_core.GPA_BASE >> vm.page_shift
    raws = bench_core.encode_reads(vm, vcpu, list(range(base, base + p.pass_faults)))
    decode = bench_core.compile_loop(bench_core.call("decode", impl), decode=impl.function, vcpu=vcpu)
    loops["decode: as is"] = (using(original, decode), raws)
    loops["decode: proposed"] = (using(proposed, decode), raws)
    for label, variant, function in (("as is", arch, original), ("proposed", arch, proposed),
                                     ("proposed + facade", fast, proposed)):
        vm, vcpu = bench_core.new_vm(variant, p.pass_faults)
        pipeline = bench_core.compile_loop("handle_fault(raw)", handle_fault=vcpu.handle_fault)
        loops[f"mapped: {label}"] = (using(function, pipeline), raws)
        bitmap = bytearray(b"\xff" * ((p.userfault_pages + 63) // 64 * 8))
        uvm, uvcpu = bench_core.new_vm(variant, p.userfault_pages, abi.KVM_MEM_USERFAULT, bitmap)
        work = [(raw, k >> 3, ~(1 << (k & 7)) & 0xFF) for k, raw in enumerate(raws[: p.userfault_pages])]

        def uloop(items: list[Any], hf: Any = uvcpu.handle_fault, bitmap: bytearray = bitmap) -> int:
            for raw, byte, mask in items:
                hf(raw)
                bitmap[byte] &= mask
                hf(raw)
            return len(items)

        loops[f"userfault: {label}"] = (using(function, uloop), work)
        resets.append((vm, uvm, bitmap))

    def reset() -> None:
        for vm, uvm, bitmap in resets:
            vm.stage2.unmap_range(base, base + p.pass_faults)
            uvm.stage2.unmap_range(base, base + p.userfault_pages)
            bitmap[:] = b"\xff" * len(bitmap)

    try:
        return bench_core.interleaved(loops, p.repeats, p.chunk, reset)
    finally:
        setattr(module, attr, original)


def main() -> int:
    p = bench_core.Params(repeats=7, pass_faults=16384, userfault_pages=4096, chunk=1024)
    for name in PROPOSALS:
        try:
            arch = kvmcore.load_arch(name)
        except Exception as exc:
            print(f"{name}: not loaded ({exc})")
            continue
        for label, r in compare(name, arch, p).items():
            per = "round trip" if label.startswith("userfault") else ""
            print(f"  {label:30} {r:>12,.0f}/s {1e6 / r:6.2f} us {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
