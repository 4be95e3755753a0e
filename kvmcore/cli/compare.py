"""``kvmcore compare``: one scenario (or one access) under several memory-fault exit designs.

Each design (``kvmcore.kvm.presets.PRESETS``: upstream, v3, kvmcore, compromise, arm64-esr, rwx,
annotate-efault) is a set of proposals; the scenario runs once per arch and design, and for every
fault step the table shows what userspace sees: KVM_RUN's return value, the exit reason, every
``memory_fault`` field and the syndrome words (or arm64-esr's ``esr``). A cell that differs from
what most designs give is marked ``*``. ``docs/designs.md`` explains each design.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from typing import Any

import kvmcore
from kvmcore import abi
from kvmcore.cli.format import flag_list
from kvmcore.cli.scenario import runner, schema
from kvmcore.cli.scenario.schema import EXIT_FLAGS, Scenario
from kvmcore.errors import strerror
from kvmcore.kvm.designs import exit_design
from kvmcore.kvm.presets import PRESETS, DesignPreset
from kvmcore.kvm.proposals import default_proposals

#: The row fields compared, in order.
FIELDS = ("outcome", "ret", "exit", "flags", "gpa", "size", "syndrome")
ACCESS_RE = re.compile(r"^(read|write|exec)@(0x[0-9a-fA-F_]+|\d+)(:private)?$")


class CompareError(Exception):
    """Bad ``kvmcore compare`` input (named in the message)."""


def select_presets(text: str | None) -> list[DesignPreset]:
    """``"upstream,v3"`` -> those presets; None or ``"all"`` -> every one, in order."""
    if text is None or text == "all":
        return list(PRESETS.values())
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        raise CompareError(f"--designs {text!r}: unknown {', '.join(map(repr, unknown)) or 'empty list'} "
                           f"(known: {', '.join(PRESETS)}, or all)")
    return [PRESETS[n] for n in names]


def one_access(scenario_text: str, access: str, file: str) -> Scenario:
    """The scenario's setup (memslots, attributes, vmm policy) with a single fault step:
    ``KIND@GPA`` or ``KIND@GPA:private``, e.g. ``write@0x40401000``."""
    m = ACCESS_RE.match(access.strip())
    if m is None:
        raise CompareError(f"--access {access!r}: expected KIND@GPA[:private] with KIND read, write or exec, "
                           "e.g. write@0x40401000")
    head = scenario_text.split("\n[[steps]]", 1)[0]
    gpa = int(m[2].replace("_", ""), 0)
    step = f'\n[[steps]]\nname = "{access.strip()}"\naccess = "{m[1]}"\ngpa = {gpa:#x}\n'
    if m[3]:
        step += "private = true\n"
    return schema.loads(head + step, file)


def view(info: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of one fault's snapshot that ``compare`` shows, JSON-ready."""
    if not info:
        return {f: None for f in FIELDS}
    mf = info.get("memory_fault")
    syndrome: Any = None
    if mf is not None and "esr" in mf:
        syndrome = {"esr": mf["esr"]}
    elif info.get("syndrome"):
        syndrome = {"arch": info["syndrome"]["arch_name"], "words": info["syndrome"]["words"]}
    return {
        "outcome": info.get("outcome"),
        "ret": info.get("ret"),
        "exit": info.get("exit_reason"),
        "flags": mf["flags"] if mf else None,
        "gpa": mf["gpa"] if mf else None,
        "size": mf["size"] if mf else None,
        "syndrome": syndrome,
    }


def compare(scenario: Scenario, arches: list[str], presets: list[DesignPreset], kernel: str | None = None) -> dict[str, Any]:
    """Run ``scenario`` under each design on each arch (``kernel``: the kernel modelled, default
    the newest); the JSON form of the comparison."""
    extra = {} if kernel is None else {"kernel": kernel}
    designs: list[dict[str, Any]] = []
    runs: dict[str, dict[str, Any]] = {}
    for preset in presets:
        design = exit_design(preset.adds)
        designs.append({"name": preset.name, "title": preset.title, "proposals": {},
                        "flags_by": design.flags_owner, "after_size": design.wrapper_may_write})
    for arch in arches:
        runs[arch] = {}
        for preset, entry in zip(presets, designs, strict=True):
            if preset.arches is not None and arch not in preset.arches:
                runs[arch][preset.name] = {"refused": f"{preset.name} applies to {', '.join(preset.arches)} only: "
                                                      f"{preset.arch_reason}"}
                continue
            proposals = preset.proposals(default_proposals(arch))
            entry["proposals"][arch] = list(proposals)
            arch_run = runner.run_arch(scenario, arch, {"proposals": proposals, **extra}, tolerant=True)
            runs[arch][preset.name] = {"run": arch_run}
            if arch_run.skipped:
                entry.setdefault("skipped", {})[arch] = arch_run.skipped
    steps = []
    for i, step in enumerate(scenario.steps):
        if step.action not in ("access", "raw"):
            continue
        per_arch: dict[str, Any] = {}
        for arch in arches:
            cells: dict[str, Any] = {}
            for preset in presets:
                slot = runs[arch][preset.name]
                if "refused" in slot:
                    cells[preset.name] = {"refused": slot["refused"]}
                    continue
                arch_run = slot["run"]
                res = arch_run.results[i] if i < len(arch_run.results) else None
                if res is None or res.status in ("error", "n/a"):
                    why = (res.note if res is not None else None) or arch_run.error or "not run"
                    cells[preset.name] = {"error": why}
                    continue
                cells[preset.name] = view(res.info)
            shown = [c for c in cells.values() if "refused" not in c and "error" not in c]
            differs = [f for f in FIELDS if len({repr(c[f]) for c in shown}) > 1]
            per_arch[arch] = {"designs": cells, "differs": differs}
        steps.append({"step": step.number, "title": step.title(), "arches": per_arch})
    return {"scenario": scenario.name, "file": scenario.file, "kernel": kernel, "designs": designs, "steps": steps}


# --- text --------------------------------------------------------------------------------------
def _cell(field: str, value: Any) -> str:
    if value is None:
        return "-"
    if field == "ret":  # the errno's name, from the table the rest of the CLI uses (the number is in --json)
        return f"-{strerror(value)}" if value else "0"
    if field == "exit":
        return abi.exit_reason_name(value).replace("KVM_EXIT_", "")
    if field == "flags":
        names = flag_list(value, EXIT_FLAGS)
        return f"{value:#x}" + (f" {'|'.join(names)}" if names else "")
    if field in ("gpa", "size"):
        return f"{value:#x}"
    if field == "syndrome":
        if "esr" in value:
            return f"esr={value['esr']:#x}"
        return f"{value['arch']} " + " ".join(f"{w:#x}" if w else "0" for w in value["words"])
    return str(value)


def _usual(values: list[str]) -> str | None:
    """The value most designs give, or None when no value is more common than every other (then
    every cell of a column that differs at all is marked)."""
    counts = Counter(values).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


#: The width the prose lines of the text report are wrapped at (the table rows are not wrapped).
WIDTH = 100


def _wrapped(line: str, indent: str) -> list[str]:
    return textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)


def render(result: dict[str, Any]) -> str:
    """Per step and arch, one row per design; ``*`` marks a cell that differs from what most
    designs give for that step and arch."""
    out = [f"kvmcore compare: {result['scenario']} under {len(result['designs'])} designs "
           "(docs/designs.md; * = differs from most designs)"]
    for d in result["designs"]:
        out += _wrapped(f"  {d['name']:<16} {d['title']}", " " * 19)
        out += _wrapped(f"{' ' * 19}flags by {d['flags_by']}; after size: {d['after_size']}", " " * 19)
        for arch, skipped in d.get("skipped", {}).items():
            for message in skipped:
                out += _wrapped(f"{' ' * 21}{arch}: left out: {message}", " " * 23)
    for step in result["steps"]:
        out.append("")
        out.append(f"step {step['step']}: {step['title']}")
        for arch, entry in step["arches"].items():
            rows = [["  " + arch, *FIELDS]]
            shown = [c for c in entry["designs"].values() if "refused" not in c and "error" not in c]
            usual = {f: _usual([repr(c[f]) for c in shown]) for f in FIELDS}
            for name, cell in entry["designs"].items():
                if "refused" in cell or "error" in cell:
                    rows.append([f"    {name}", f"({cell.get('refused') or cell.get('error')})"])
                    continue
                row = [f"    {name}"]
                for f in FIELDS:
                    text = _cell(f, cell[f])
                    if f in entry["differs"] and repr(cell[f]) != usual[f]:
                        text += " *"
                    row.append(text)
                rows.append(row)
            widths = [max(len(r[i]) for r in rows if len(r) > i and len(r) == len(FIELDS) + 1)
                      for i in range(len(FIELDS) + 1)]
            for r in rows:
                if len(r) != len(FIELDS) + 1:
                    out.append(f"{r[0]:<{widths[0]}}  {r[1]}")
                else:
                    out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"


def main(scenario_path: str | None, arch: str | None, designs: str | None, access: str | None,
         kernel: str | None = None) -> dict[str, Any]:
    """What ``kvmcore compare`` runs: load, select, compare. Raises CompareError/ScenarioError."""
    if scenario_path is None:
        from importlib import resources

        text = resources.files("kvmcore").joinpath("examples/builtin.toml").read_text(encoding="utf-8")
        file = schema.BUILTIN
    else:
        try:
            with open(scenario_path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CompareError(f"{scenario_path}: cannot read scenario: {exc}") from None
        file = scenario_path
    scenario = one_access(text, access, file) if access else schema.loads(text, file)
    arches = runner.select_arches(scenario, arch or "all")
    if not arches:
        raise CompareError("no arch plugins installed (see 'kvmcore plugins')")
    unknown = [a for a in arches if a not in kvmcore.installed_arches()]
    if unknown:
        raise CompareError(f"--arch: unknown {', '.join(map(repr, unknown))} (installed: {', '.join(kvmcore.installed_arches())})")
    if kernel is not None:
        try:
            kvmcore.KernelVersion.parse(kernel, "--kernel")
        except ValueError as exc:
            raise CompareError(str(exc)) from None
    return compare(scenario, arches, select_presets(designs), kernel)


__all__ = ["FIELDS", "CompareError", "compare", "main", "one_access", "render", "select_presets", "view"]
_ = abi  # the exit reasons and flags the rows show are abi's
