"""Fuzzing ``kvmcore run``: scenario TOML generated from the schema (docs/scenarios.md), then
mutated: values swapped for hostile ones (huge, negative, nested, wrong types), text edited.

Properties: exit status 0, 1 or 2 and no traceback (``fuzzcli.check_common``), bounded time;
a scenario that loads gives one JSON report with a column per arch, and an arch that fails
has its error in its column.
"""

from __future__ import annotations

import json

from fuzzcli import run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import kvmcore

ARCHES = kvmcore.installed_arches()
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def toml_value(value: object) -> str:
    """A TOML literal (the few forms the generator uses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x10000 and not 0xD800 <= ord(c) < 0xE000 else "?" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Nested):
        return "[" * value.depth + "1" + "]" * value.depth
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() else toml_value(key)


class Nested:
    """``[[[...1...]]]`` ``depth`` deep, kept flat until rendered (deep objects break printing)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __repr__(self) -> str:
        return f"Nested({self.depth})"


#: Values a hostile or careless author writes where a number, size, name or table belongs.
HOSTILE = st.one_of(
    st.integers(-(1 << 70), 1 << 70),
    st.sampled_from([-1, 0, 1, (1 << 64) - 1, 1 << 64, (1 << 63), (1 << 31) - 1, 1 << 31, 1 << 52, 0x1000, 0xFFF]),
    st.sampled_from(["8T", "16T", "1024T", "0x7fffffff000", "1_000_000G", "all", "4K", "2M", "-4K", "0x", "", "1.5M"]),
    st.text(max_size=12),
    st.floats(allow_nan=False),
    st.booleans(),
    st.builds(Nested, st.integers(0, 3000)),
    st.lists(st.integers(-4, 1 << 40), max_size=4),
    st.dictionaries(st.sampled_from(["gpa", "size", "x", "arm64", "slot"]), st.integers(-1, 1 << 65), max_size=3),
)
ALIGNED = st.integers(0, 1 << 20).map(lambda n: n * 0x200000)
SIZES = st.sampled_from(["4K", "64K", "2M", "1G", "8T", 0x1000, 0x200000, "0x7ffffffff000"])


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly ``strategy`` (so runs get deep), one time in 25 a hostile value."""
    return st.integers(0, 24).flatmap(lambda n: HOSTILE if n == 0 else strategy)


MEMSLOT = st.fixed_dictionaries(
    {"gpa": maybe(ALIGNED), "size": maybe(SIZES)},
    optional={
        "slot": maybe(st.integers(0, 40)),
        "flags": maybe(st.lists(st.sampled_from(["LOG_DIRTY_PAGES", "READONLY", "GUEST_MEMFD", "USERFAULT"]), max_size=2)),
        "guest_memfd": maybe(st.booleans()),
        "host_page_size": maybe(st.sampled_from(["4K", "2M", "1G", "64K"])),
        "host_prot": maybe(st.sampled_from(["r", "rw", "rwx", "none"])),
        "userfault": maybe(st.one_of(st.just("all"), st.lists(ALIGNED, max_size=3))),
    },
)
ACCESS = st.fixed_dictionaries(
    {"access": maybe(st.sampled_from(["read", "write", "exec"])), "gpa": maybe(st.integers(0, 1 << 41))},
    optional={"cause": maybe(st.sampled_from(["not_present", "read_only", "no_exec", "access_flag", "no_slot"])),
              "private": maybe(st.booleans()), "size": maybe(st.sampled_from([1, 2, 4, 8])), "data": maybe(st.integers(0, 255)),
              "expect": maybe(st.fixed_dictionaries({}, optional={"outcome": st.just("mapped"), "ret": st.just("EFAULT"),
                                                                 "exit_reason": st.sampled_from(["none", "MMIO", "MEMORY_FAULT"])}))},
)
RANGE = st.fixed_dictionaries({"gpa": maybe(ALIGNED), "size": maybe(SIZES)})
STEP = st.one_of(
    ACCESS,
    st.builds(lambda r, p: {"set_attributes": {**r, "private": p}}, RANGE, st.booleans()),
    st.builds(lambda r, s: {"userfault": {**r, "set": s}}, RANGE, st.booleans()),
    st.builds(lambda r: {"mprotect": {**r, "prot": "r"}}, RANGE),
    st.builds(lambda r: {"munmap": r}, RANGE),
    st.builds(lambda g, p: {"memory_failure": {"gpa": g, "private": p}}, maybe(ALIGNED), st.booleans()),
    st.builds(lambda m: {"memslot": m}, MEMSLOT),
    st.builds(lambda c: {"enable_cap": c}, maybe(st.sampled_from(["ARM_NISV_TO_USER", "USERFAULT", "KVM_CAP_GUEST_MEMFD", 999]))),
    st.builds(lambda a, r: {"raw": {str(a): r}}, maybe(st.sampled_from([*ARCHES, "mips"])),
              st.dictionaries(st.sampled_from(["esr", "far", "hpfar", "gpa", "error_code", "scause", "htval", "vendor"]),
                              maybe(st.integers(0, (1 << 64) - 1)), max_size=4)),
)
SCENARIO = st.fixed_dictionaries(
    {"memslots": st.lists(MEMSLOT, max_size=4), "steps": st.lists(STEP, max_size=6)},
    optional={
        "arch": maybe(st.one_of(st.just("all"), st.sampled_from(ARCHES), st.lists(st.sampled_from([*ARCHES, "mips"]), min_size=1, max_size=3))),
        "vm": st.dictionaries(st.sampled_from([*ARCHES, "arm46", "caps"]), maybe(st.dictionaries(
            st.sampled_from(["granule", "vendor", "ipa_bits", "userfault_gmem", "colour"]),
            maybe(st.sampled_from(["4K", "16K", "64K", "vmx", "svm", "v3", 40, 52])), max_size=2)), max_size=2),
        "vmm": st.fixed_dictionaries({}, optional={"userfault": maybe(st.sampled_from(["exit", "resolve"])),
                                                   "private_mismatch": maybe(st.sampled_from(["exit", "convert"])),
                                                   "max_round_trips": maybe(st.integers(0, 10))}),
        "attributes": st.lists(st.builds(lambda r, p: {**r, "private": p}, RANGE, st.booleans()), max_size=2),
    },
)


def render(doc: dict) -> str:
    lines = []
    for key, value in doc.items():
        if key in ("memslots", "steps", "attributes") and isinstance(value, list):
            continue
        lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key in ("memslots", "attributes", "steps"):
        for table in doc.get(key, []):
            lines.append(f"\n[[{key}]]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def mutate_text(text: str, edits: list[tuple[int, int, str]]) -> str:
    for pos, cut, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + cut:]
    return text


EDITS = st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 6),
                           st.one_of(st.sampled_from(["[", "]", "[[", "=", '"', "\n", "0x", "9" * 30, "{", "}", ",", "-", "\x00", "#"]),
                                     st.text(max_size=4))), max_size=3)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=SCENARIO, edits=st.one_of(st.just([]), st.just([]), EDITS), arch=st.sampled_from([None, "all", *ARCHES]))
def test_run_never_fails_badly(tmp_path_factory, doc: dict, edits: list, arch: str | None) -> None:
    text = mutate_text(render(doc), edits)
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"  # one file, rewritten per example
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    run = run_cli(["run", str(path), "--json"] + (["--arch", arch] if arch else []))
    assert run.status in (0, 1), run.err
    event("scenario ran" if run.out else "scenario refused")
    if run.out:  # the scenario loaded: one report, each arch in its column
        report = json.loads(run.out)
        for column in report["arches"]:
            if column["error"]:
                assert column["arch"] in run.err, run.err
