"""``kvmcore check-host``: the model against the running kernel's ``/dev/kvm``, side by side.

(a) memslot and guest_memfd calls (``kvmcore.cli.host_calls``): the fixed edge cases, then
``--count`` random calls from ``--seed``, each on a fresh real VM and a fresh model VM in upstream
mode for the host's kernel version, compared call by call. (b) guest accesses
(``kvmcore.cli.host_accesses``): every slot configuration x (read, write, fetch) through a tiny
real guest and through the model. Every disagreement is either one of :data:`EXPECTED` (each
with its cause and how it was established) or unexpected; any unexpected one makes the exit
status 1. See ``docs/check-host.md``.
"""

from __future__ import annotations

import errno
import inspect
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvmcore import abi, uapi
from kvmcore.cli.format import print_json

if TYPE_CHECKING:  # imported when the command runs: `kvmcore decode` must not pay for them
    from kvmcore.cli import host_accesses, host_calls
    from kvmcore.realkvm import guest as g


@dataclass(slots=True, frozen=True)
class Expected:
    """A documented expected difference: ``name``, its ``cause`` and how it was ``established``."""

    name: str
    cause: str
    established: str


EXPECTED: dict[str, Expected] = {e.name: e for e in (
    Expected(
        "memory-attributes-cap-0",
        "the host kernel has no KVM_SET_MEMORY_ATTRIBUTES (built without CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES, "
        "as this x86 PVM kernel is): the ioctl is ENOTTY; the model implements it",
        "KVM_CHECK_EXTENSION(KVM_CAP_MEMORY_ATTRIBUTES) returned 0 in this run; the ioctl returned ENOTTY",
    ),
    Expected(
        "host-one-address-space",
        "the host kernel has one memslot address space (built without CONFIG_KVM_SMM, or PVM), so a slot id "
        "with address-space bits (slot >> 16 = 1) is EINVAL (kvm_set_memory_region(): as_id >= "
        "kvm_arch_nr_memslot_as_ids()); a model of a distribution x86 kernel has the SMM address space",
        "KVM_CHECK_EXTENSION(KVM_CAP_MULTI_ADDRESS_SPACE) returned 0 or 1 in this run, and the disagreement "
        "is that capability or a call whose slot id has address-space bits",
    ),
    Expected(
        "host-vm-types",
        "KVM_CAP_VM_TYPES depends on the kernel's Kconfig, its MMU and the CPU: SW_PROTECTED needs "
        "CONFIG_KVM_SW_PROTECTED_VM and the TDP MMU, SEV/SNP and TDX their hardware (arch/x86/kvm/x86.c, "
        "svm/sev.c, vmx/main.c); the model reports DEFAULT|SW_PROTECTED, a distribution kernel with the TDP "
        "MMU on a CPU without SEV or TDX",
        "KVM_CHECK_EXTENSION(KVM_CAP_VM_TYPES) in this run has KVM_X86_DEFAULT_VM and only types the model also "
        "reports (or only SEV/TDX bits the model does not assume); on this PVM host it is 0x1 and "
        "/sys/module/kvm/parameters/tdp_mmu is N",
    ),
    Expected(
        "fetch-from-mmio",
        "an instruction fetch from a GPA with no memslot ends in the instruction emulator, which cannot fetch "
        "from MMIO; KVM reports the failure as KVM_EXIT_INTERNAL_ERROR (suberror 1, KVM_INTERNAL_ERROR_EMULATION). "
        "Upstream handle_emulation_failure() exits so only at CPL 0 and injects #UD at CPL > 0, so this CPL 3 "
        "guest getting the exit is PVM's doing; the model stops at RET_PF_EMULATE (docs/arch/x86.md, "
        "'The emulate outcome': emulation failures are not modelled)",
        "this run: the row's stats show insn_emulation_fail 1, and the model's outcome is 'emulate'",
    ),
    Expected(
        "pvm-cpl0-emulated",
        "with --cpl 0 on a PVM host every guest instruction goes through KVM's x86 emulator (no shadow page "
        "fault is taken), which accesses guest memory through userspace_addr and turns every failure into "
        "KVM_EXIT_MMIO; the model follows the page-fault path",
        "this run: the row's stats show pf_taken 0 and insn_emulation >= 1 (and "
        "/work/shared/reference/realkvm-findings.md section 2 measured 3002 emulations for a 3000-instruction loop)",
    ),
)}


def expected_for_call(cls: host_calls.Disagreement, caps: dict[str, int]) -> str | None:
    if cls.op == "set_memory_attributes" and cls.real == errno.ENOTTY and caps.get("MEMORY_ATTRIBUTES") == 0:
        return "memory-attributes-cap-0"
    if (cls.op == "set_user_memory_region2" and cls.real == errno.EINVAL and "slot:address-space" in cls.tags
            and caps.get("MULTI_ADDRESS_SPACE", 0) <= 1):
        return "host-one-address-space"
    return None


def expected_for_cap(name: str, real: int, model: int, caps: dict[str, int]) -> str | None:
    if name == "MULTI_ADDRESS_SPACE" and real <= 1 < model:
        return "host-one-address-space"
    if name == "MEMORY_ATTRIBUTES" and real == 0:
        return "memory-attributes-cap-0"
    if name == "VM_TYPES" and real & model & 1 and not real & 0b11 & ~model:
        # DEFAULT on both; of DEFAULT and SW_PROTECTED the host has no more than the model; SEV
        # (bits 2-4) and TDX (bit 5) types, which need their hardware, may come on top
        return "host-vm-types"
    return None


def compare_caps(system: Any, make_vm: Callable[[], Any], caps: dict[str, int]) -> dict[str, Any]:
    """``KVM_CHECK_EXTENSION`` on a fresh real VM and ``check_extension`` on a fresh model VM, for
    :data:`CAPS` (skipped, saying so, when the model VM has no ``check_extension``)."""
    model_vm = make_vm()
    if not callable(getattr(model_vm, "check_extension", None)):
        return {"compared": False, "why": "the model's VM has no check_extension()", "rows": []}
    rows = []
    with system.create_vm() as vm:
        for name, cap in CAPS:
            real, model = vm.check_extension(cap), model_vm.check_extension(cap)
            expected = None if real == model else expected_for_cap(name, real, model, caps)
            rows.append({"cap": name, "number": cap, "real": real, "model": model, "agree": real == model,
                         "expected": expected})
    return {"compared": True, "why": None, "rows": rows}


def expected_for_access(row: host_accesses.AccessRow, host: g.HostKvm, cpl: int) -> str | None:
    if host.flavour == "pvm" and cpl == 0 and row.stats.get("pf_taken", 0) == 0 and row.stats.get("insn_emulation", 0) >= 1:
        return "pvm-cpl0-emulated"
    if (row.case.config.no_slot and row.case.access == "fetch" and row.real.exit_reason == abi.KVM_EXIT_INTERNAL_ERROR
            and row.stats.get("insn_emulation_fail", 0) >= 1 and row.model.exit_reason is None
            and row.model.detail.startswith("emulate")):
        return "fetch-from-mmio"
    return None


# --- the model VM ------------------------------------------------------------------------------------
@dataclass(slots=True)
class ModelChoice:
    """Which model VM stands for the host: arch x86, ``kernel``, ``proposals`` (``()`` = upstream),
    ``vendor``; ``gap`` says what the model could not be told (e.g. no upstream mode yet)."""

    kernel: str
    vendor: str
    upstream: bool
    gap: str | None
    factory: Callable[[], Any]

    def as_dict(self) -> dict[str, Any]:
        return {"arch": "x86", "kernel": self.kernel, "vendor": self.vendor, "upstream_mode": self.upstream, "gap": self.gap}


def choose_model(host: g.HostKvm) -> ModelChoice:
    """``kvmcore.VM("x86", kernel=<newest modelled version <= the host's>, proposals=())``.

    The vendor: ``vmx``/``svm`` as the host's; on PVM (shadow paging, no stage-2 fault) ``svm``,
    the closest TDP input for this AMD host (``host_accesses`` explains the choice).
    """
    import kvmcore

    vendor = "vmx" if host.flavour == "vmx" else "svm"
    versions = tuple(getattr(kvmcore, "KERNEL_VERSIONS", ("6.18", "7.2")))
    def as_tuple(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))
    fitting = [v for v in versions if as_tuple(v) <= host.kernel]
    kernel = max(fitting, key=as_tuple) if fitting else min(versions, key=as_tuple)
    gaps = []
    if as_tuple(kernel) != host.kernel:
        gaps.append(f"the model has no kernel {host.kernel[0]}.{host.kernel[1]}; using {kernel}")
    upstream = "proposals" in inspect.signature(kvmcore.VM.__init__).parameters
    kwargs: dict[str, Any] = {"kernel": kernel, "vendor": vendor}
    if upstream:
        kwargs["proposals"] = ()
    else:
        gaps.append("kvmcore.VM has no proposals= yet: the model runs with its proposals (KVM Userfault v3) on")
    kvmcore.VM("x86", **kwargs)  # fail here, not in the middle of a run, if the settings are refused

    def factory() -> Any:
        return kvmcore.VM("x86", **kwargs)

    return ModelChoice(kernel, vendor, upstream, "; ".join(gaps) or None, factory)


# --- the run -----------------------------------------------------------------------------------------
CAPS = (("NR_MEMSLOTS", uapi.KVM_CAP_NR_MEMSLOTS), ("READONLY_MEM", uapi.KVM_CAP_READONLY_MEM),
        ("MULTI_ADDRESS_SPACE", uapi.KVM_CAP_MULTI_ADDRESS_SPACE), ("USER_MEMORY2", uapi.KVM_CAP_USER_MEMORY2),
        ("MEMORY_FAULT_INFO", uapi.KVM_CAP_MEMORY_FAULT_INFO), ("MEMORY_ATTRIBUTES", uapi.KVM_CAP_MEMORY_ATTRIBUTES),
        ("GUEST_MEMFD", uapi.KVM_CAP_GUEST_MEMFD), ("VM_TYPES", uapi.KVM_CAP_VM_TYPES),
        ("GUEST_MEMFD_FLAGS", uapi.KVM_CAP_GUEST_MEMFD_FLAGS))


def check_host(seed: int = 0, count: int = 1000, cpl: int | None = None, calls: bool = True,
               accesses: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run both parts; returns the report (``report["unexpected"]`` counts what is not expected)."""
    from kvmcore.cli import host_accesses, host_calls
    from kvmcore.realkvm import guest as g
    from kvmcore.realkvm.kvm import System

    start = time.perf_counter()
    host = g.detect_host()
    run_cpl = host.cpl if cpl is None else cpl
    model = choose_model(host)
    report: dict[str, Any] = {}
    with System() as system:
        g.check_host_usable(system)
        caps = {name: system.check_extension(cap) for name, cap in CAPS}
        report["host"] = {"flavour": host.flavour, "evidence": host.evidence, "release": host.release,
                          "cpl": run_cpl, "caps": caps}
        report["model"] = model.as_dict()
        unexpected = 0
        if calls:  # the capability comparison belongs to the calls part
            report["caps"] = compare_caps(system, model.factory, caps)
            unexpected = sum(1 for row in report["caps"]["rows"] if not row["agree"] and row["expected"] is None)
        if calls:
            t0 = time.perf_counter()
            with host_calls.Comparer(system, model.factory) as comparer:
                for _name, seq in host_calls.edge_cases():
                    comparer.count(comparer.run(seq), edge=True)
                done = 0
                for seq in host_calls.random_sequences(seed, count):
                    comparer.count(comparer.run(seq))
                    done += len(seq)
                    if progress is not None and done % 1000 < len(seq):
                        progress(f"{done}/{count} random calls")
                r = comparer.report
            classes = sorted(r.classes.values(), key=lambda c: -c.count)
            for cls in classes:
                cls.expected = expected_for_call(cls, caps)
                unexpected += cls.expected is None
            report["calls"] = {
                "seed": seed, "count": count, "calls": r.calls, "agreed": r.agreed, "rate": r.rate,
                "edge_calls": r.edge_calls, "edge_agreed": r.edge_agreed,
                "disagreements": sum(c.count for c in classes),
                "agreed_or_expected": r.agreed + sum(c.count for c in classes if c.expected is not None),
                "unexpected_disagreements": sum(c.count for c in classes if c.expected is None),
                "classes": [c.as_dict() for c in classes], "seconds": round(time.perf_counter() - t0, 2),
            }
        if accesses:
            t0 = time.perf_counter()
            run_host = g.HostKvm(host.flavour, host.evidence, host.release, run_cpl)
            rows = host_accesses.run_matrix(system, run_host, model.factory, model.vendor)
            for row in rows:
                if not row.agree:
                    row.expected = expected_for_access(row, host, run_cpl)
                    unexpected += row.expected is None
            report["accesses"] = {
                "cases": len(rows), "agreed": sum(r.agree for r in rows),
                "rows": [{"case": r.case.name, "config": r.case.config.description, "access": r.case.access,
                          "width": r.case.width, "gpa": r.case.gpa, "agree": r.agree, "expected": r.expected,
                          "real": r.real.as_dict(), "model": r.model.as_dict(), "stats": r.stats} for r in rows],
                "seconds": round(time.perf_counter() - t0, 2),
            }
    report["expected_differences"] = {n: {"cause": e.cause, "established": e.established} for n, e in EXPECTED.items()}
    report["unexpected"] = unexpected
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


# --- output ------------------------------------------------------------------------------------------
def render(report: dict[str, Any]) -> str:
    from kvmcore.cli import host_accesses

    out: list[str] = []
    h, m = report["host"], report["model"]
    out.append(f"host:  Linux {h['release']}, KVM {h['flavour']} ({h['evidence']}); guest accesses at CPL {h['cpl']}")
    out.append("       caps: " + ", ".join(f"{k} {v}" for k, v in h["caps"].items()))
    out.append(f"model: kvmcore.VM('x86', kernel={m['kernel']!r}, vendor={m['vendor']!r}"
               + (", proposals=())" if m["upstream_mode"] else ")") + (f"\n       gap: {m['gap']}" if m["gap"] else ""))
    used: set[str] = set()
    caps = report.get("caps")
    if caps is not None:
        out.append("")
        if not caps["compared"]:
            out.append(f"capabilities: not compared ({caps['why']})")
        else:
            rows = caps["rows"]
            out.append(f"capabilities (KVM_CHECK_EXTENSION on a VM): {sum(r['agree'] for r in rows)}/{len(rows)} agree")
            for row in rows:
                if row["agree"]:
                    continue
                verdict = f"expected: {row['expected']}" if row["expected"] else "DISAGREE"
                if row["expected"]:
                    used.add(row["expected"])
                out.append(f"  KVM_CAP_{row['cap']} ({row['number']}): real {row['real']}, model {row['model']}  {verdict}")
    if "accesses" in report:
        a = report["accesses"]
        out.append("")
        out.append(f"guest accesses: {a['agreed']}/{a['cases']} agree ({a['seconds']} s)")
        out.append(f"  {'case':<28} {'real':<48} {'model':<48} verdict")
        for row in a["rows"]:
            real, model = host_accesses.Seen.from_dict(row["real"]), host_accesses.Seen.from_dict(row["model"])
            verdict = "agree" if row["agree"] else f"expected: {row['expected']}" if row["expected"] else "DISAGREE"
            if row["expected"]:
                used.add(row["expected"])
            out.append(f"  {row['case']:<28} {_cut(real.summary(), 48)} {_cut(model.summary(), 48)} {verdict}")
    if "calls" in report:
        c = report["calls"]
        out.append("")
        out.append(f"memslot/guest_memfd calls: {c['agreed']}/{c['calls']} agree ({100 * c['rate']:.2f}%; "
                   f"{100 * c['agreed_or_expected'] / max(c['calls'], 1):.2f}% with the expected differences), "
                   f"edge cases {c['edge_agreed']}/{c['edge_calls']}, random --seed {c['seed']} --count {c['count']} "
                   f"({c['seconds']} s)")
        for cls in c["classes"]:
            verdict = f"expected: {cls['expected']}" if cls["expected"] else "DISAGREE"
            if cls["expected"]:
                used.add(cls["expected"])
            tags = f" [{', '.join(cls['tags'])}]" if cls["tags"] else ""
            out.append(f"  {cls['count']:>5}x {cls['op']}: real {cls['real']}, model {cls['model']}{tags}  {verdict}")
            for line in cls["reproducer"]:
                out.append(f"           {line}")
    if used:
        out.append("")
        out.append("expected differences seen:")
        for name in sorted(used):
            e = report["expected_differences"][name]
            out.append(f"  {name}: {e['cause']}")
            out.append(f"    established: {e['established']}")
    out.append("")
    out.append(f"{report['unexpected']} unexpected disagreement class(es); {report['seconds']} s")
    return "\n".join(out) + "\n"


def _cut(text: str, width: int) -> str:
    return f"{text:<{width}}" if len(text) <= width else text[: width - 3] + "..."


def _fail(message: str) -> int:
    """Bad input or an unusable /dev/kvm: ``kvmcore check-host: <message>`` on stderr, status 1."""
    print(f"kvmcore check-host: {message}", file=sys.stderr)
    return 1


def cmd_check_host(args: Any) -> int:
    import kvmcore

    if args.count < 0:
        return _fail(f"--count {args.count}: expected a number of calls >= 0")
    if not os.path.exists("/dev/kvm"):
        return _fail("/dev/kvm does not exist on this machine: check-host compares the model with a running KVM")
    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(text: str) -> None:
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
    try:
        report = check_host(args.seed, args.count, None if args.cpl == "auto" else int(args.cpl),
                            calls=args.only in (None, "calls"), accesses=args.only in (None, "accesses"),
                            progress=progress)
    except kvmcore.KvmError as exc:
        return _fail(f"/dev/kvm: {exc}")
    if progress is not None:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    if args.json:
        print_json(report)
    else:
        print(render(report), end="")
    return 1 if report["unexpected"] else 0


__all__ = ["EXPECTED", "Expected", "check_host", "choose_model", "render"]
