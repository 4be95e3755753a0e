"""The text form of a scenario run: one column per arch, one block per step (``kvmcore run``)."""

from __future__ import annotations

from kvmcore import abi
from kvmcore.cli.format import flag_names, prot_text, size_text
from kvmcore.cli.scenario.runner import Outcome, StepResult
from kvmcore.cli.scenario.schema import BUILTIN, MEM_FLAGS
from kvmcore.errors import strerror


def _cells(res: StepResult | None, page_size: int) -> dict[str, list[str]]:
    """One arch's column for a fault step: row label -> lines."""
    if res is None:
        return {"path": ["(not run)"]}
    if res.status == "n/a":
        return {"path": ["n/a (see note)"]}
    if res.status == "error":
        return {"path": ["ERROR (see below)"]}
    info = res.info
    cells: dict[str, list[str]] = {}
    cells["registers"] = [f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}" for k, v in info["raw"].items()]
    if info.get("outcome") == "decode_error":
        cells["path"] = ["decode_error"]
        return cells
    access = info["access"] + (" private" if info["is_private"] else "")
    cells["fault"] = [str(info.get("fault_kind") or type(info.get("fault")).__name__),
                      f"{access} gfn {info['gfn']:#x}",
                      "slot " + (str(info["slot"]) if info["slot"] is not None else "none")]
    cells["path"] = [info["outcome"]]
    if info.get("vmm_history"):
        trips = info["round_trips"]
        conv = info["conversions"]
        lines = []
        for h in info["vmm_history"]:
            lines.append(f"exit: {h['outcome']}")
        if trips:
            lines.append(f"-> cleared bit, {trips} round trip{'s' if trips != 1 else ''}")
        if conv:
            lines.append(f"-> converted, {conv} conversion{'s' if conv != 1 else ''}")
        cells["vmm"] = lines
    ret = info["ret"]
    cells["KVM_RUN"] = ["returns 0" if not ret else f"-1, errno {strerror(ret)}"]
    reason = info["exit_reason"]
    if reason is None:
        cells["exit_reason"] = ["none: guest resumes"]
    else:
        name = abi.exit_reason_name(reason).removeprefix("KVM_EXIT_")
        cells["exit_reason"] = [f"{name} ({reason})"]
    mf = info.get("memory_fault")
    if mf is not None:
        names = "|".join(mf["flag_names"]) if mf["flags"] else "none"
        cells["memory_fault"] = [f"flags {mf['flags']:#x} {names}", f"gpa {mf['gpa']:#x}", f"size {mf['size']:#x}"]
    syn = info.get("syndrome")
    if syn is not None:
        words = list(syn["words"])
        while len(words) > 1 and words[-1] == 0:
            words.pop()
        cells["syndrome"] = [syn["arch_name"]] + [f"[{i}] {w:#x}" for i, w in enumerate(words)]
    elif mf is not None:
        cells["syndrome"] = ["(not valid)"]
    mmio = info.get("mmio")
    if mmio is not None:
        rw = "write" if mmio["is_write"] else "read"
        lines = [f"{rw} len {mmio['len']}", f"phys_addr {mmio['phys_addr']:#x}"]
        if mmio["is_write"]:
            lines.append(f"data {mmio['data']:#x}")
        cells["mmio"] = lines
    nisv = info.get("arm_nisv")
    if nisv is not None:
        cells["arm_nisv"] = [f"esr_iss {nisv['esr_iss']:#x}", f"fault_ipa {nisv['fault_ipa']:#x}"]
    mapped = info.get("mapped")
    if mapped is not None:
        perms = "r" + ("w" if mapped["writable"] else "-") + ("x" if mapped["exec"] else "-")
        cells["stage-2"] = [f"{size_text(mapped['size'])} {perms}", f"pfn {mapped['pfn']:#x}"]
    sig = info.get("signal")
    if sig is not None:
        cells["signal"] = [f"{sig['signo']} {sig['code']}", f"addr {sig['addr']:#x}", f"lsb {sig['lsb']}"]
    return cells


ROWS = ("registers", "fault", "path", "vmm", "KVM_RUN", "exit_reason", "memory_fault", "syndrome", "mmio",
        "arm_nisv", "stage-2", "signal", "expect")


def render(outcome: Outcome) -> str:
    scn = outcome.scenario
    out: list[str] = []
    title = "built-in example" if scn.file == BUILTIN else scn.file
    out.append(f"scenario {scn.name!r} ({title})")
    if scn.description:
        for line in scn.description.strip().splitlines():
            out.append(f"  {line.strip()}")
    runs = outcome.runs
    arches = ", ".join(f"{r.arch} ({r.label}, {size_text(r.page_size)} pages)" if not r.error or r.page_size
                       else f"{r.arch} (not run)" for r in runs)
    out.append(f"arches: {arches}")
    models = {(r.model["kernel"], tuple(r.model["proposals"])) for r in runs if r.model}
    if len(models) == 1 and all(r.model for r in runs):
        kernel, names = next(iter(models))
        out.append(f"kernel: {kernel}; proposals: {', '.join(names) if names else 'none (upstream mode)'}")
    elif models:
        parts = [f"{r.arch} {r.model['kernel']} [{', '.join(r.model['proposals']) or 'upstream'}]" for r in runs if r.model]
        out.append(f"kernel and proposals: {'; '.join(parts)}")
    policy = f"vmm: userfault exits -> {scn.userfault_policy}, private/shared mismatch -> {scn.mismatch_policy}"
    out.append(policy)
    if scn.memslots:
        out.append("memslots:")
        for spec in scn.memslots:
            extra = []
            if spec.flags:
                extra.append(flag_names(spec.flags, MEM_FLAGS).split(" ", 1)[1].strip("()"))
            if spec.host_page_size:
                extra.append(f"host pages {size_text(spec.host_page_size)}{' (THP)' if spec.host_thp else ''}")
            if spec.host_prot is not None:
                extra.append(f"host prot {prot_text(spec.host_prot)}")
            if spec.userfault:
                extra.append("userfault bits: " + ("all pages" if isinstance(spec.userfault, str) else
                                                   ", ".join(f"{g:#x}" for g, _ in spec.userfault)))
            out.append(f"  slot {spec.slot}: gpa [{spec.gpa:#x}, {spec.gpa + spec.size:#x}) {size_text(spec.size)}"
                       + (f"  {'; '.join(extra)}" if extra else ""))
    for _, gpa, size, private in scn.attributes:
        out.append(f"attributes: [{gpa:#x}, {gpa + size:#x}) {'private' if private else 'shared'}")
    for run in runs:
        if run.error and not run.results:
            out.append(f"{run.arch}: not run: {run.error}")
    out.append("")
    multi = len(runs) > 1
    for i, step in enumerate(scn.steps):
        results = [(r, r.results[i] if i < len(r.results) else None) for r in runs if r.results or not r.error]
        out.append(f"step {step.number}: {step.title()}")
        if not step.is_fault:
            bad = [(r.arch, res) for r, res in results if res is not None and res.status == "error"]
            for arch, failed in bad:
                out.append(f"  {arch}: ERROR: {failed.note}")
            if not bad:
                ran = [r.arch for r, res in results if res is not None]
                if ran:
                    out.append("  done" + (f" on {', '.join(ran)}" if multi else ""))
            out.append("")
            continue
        columns = [(r.arch, _cells(res, r.page_size)) for r, res in results]
        for (r, res), (_, cells) in zip(results, columns, strict=True):
            if res is not None and res.status in ("ok", "fail") and (step.expect or step.expect_arch.get(r.arch)):
                cells["expect"] = ["FAIL" if res.failures else "ok"]
        out.extend(_table(columns))
        for r, step_res in results:
            if step_res is None:
                continue
            who = f"{r.arch}: " if multi else ""
            if step_res.status in ("n/a", "error") and step_res.note:
                out.append(f"  note: {who}{step_res.note}")
            elif step_res.info.get("detail") and step_res.info.get("outcome") != "decode_error":
                out.append(f"  note: {who}{step_res.info['detail']}")
            elif step_res.info.get("outcome") == "decode_error":
                out.append(f"  note: {who}{step_res.note}")
            for failure in step_res.failures:
                out.append(f"  FAILED: {who}{failure}")
        out.append("")
    for run in runs:
        if run.error and run.results:
            out.append(f"{run.arch}: stopped: {run.error}")
    total = sum(1 for s in scn.steps if s.is_fault)
    verdict = "all expectations met" if outcome.ok else (
        f"{len(outcome.failures)} expectation(s) failed" + (f", {len(outcome.errors)} error(s)" if outcome.errors else "")
        if outcome.failures else f"{len(outcome.errors)} error(s)")
    out.append(f"{total} fault step(s) on {len(runs)} arch(es): {verdict}")
    if scn.file == BUILTIN:
        out += tour_compare_section([r.arch for r in runs if not r.error])
    return "\n".join(out) + "\n"


#: The tour's access shown under every design (its post-copy step).
TOUR_COMPARE_ACCESS = "write@0x40401000"


def tour_compare_section(arches: list[str]) -> list[str]:
    """The tour's last part: its post-copy write under each memory-fault exit design of the
    v3 review (``kvmcore compare``, docs/designs.md), on the arches that ran."""
    if not arches:
        return []
    from importlib import resources

    from kvmcore.cli import compare

    text = resources.files("kvmcore").joinpath("examples/builtin.toml").read_text(encoding="utf-8")
    result = compare.compare(compare.one_access(text, TOUR_COMPARE_ACCESS, BUILTIN), arches,
                             compare.select_presets(None))
    body = compare.render(result).splitlines()
    first = next(i for i, line in enumerate(body) if line.startswith("step "))
    return ["", f"the same post-copy write under each design of the v3 review (kvmcore compare --access "
            f"{TOUR_COMPARE_ACCESS}; docs/designs.md):", *body[first + 1:]]


def _table(columns: list[tuple[str, dict[str, list[str]]]]) -> list[str]:
    labels = [row for row in ROWS if any(row in cells for _, cells in columns)]
    label_width = max(len(label) for label in labels) if labels else 0
    widths = []
    for arch, cells in columns:
        widest = max([len(arch)] + [len(line) for lines in cells.values() for line in lines])
        widths.append(widest)
    lines = []
    if len(columns) > 1:
        lines.append("  " + " " * label_width + "  " + "  ".join(f"{arch:<{w}}" for (arch, _), w in zip(columns, widths, strict=True)).rstrip())
    for label in labels:
        depth = max(len(cells.get(label, [])) for _, cells in columns)
        for k in range(depth):
            parts = []
            for (_, cells), w in zip(columns, widths, strict=True):
                col = cells.get(label, [])
                parts.append(f"{col[k] if k < len(col) else '':<{w}}")
            head = label if k == 0 else ""
            lines.append(f"  {head:<{label_width}}  " + "  ".join(parts).rstrip())
    return lines
