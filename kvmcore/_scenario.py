"""Scenario files for ``kvmcore run``: the TOML schema, its validation, and the runner.

A scenario describes what a VMM sets up (memslots, memory attributes, guest_memfd, userfault
bitmaps), then an ordered list of steps: guest faults (a logical access that each arch's
``encode_fault`` hook turns into its raw registers, or raw registers for one arch) interleaved
with the state changes a VMM or the host makes (attribute conversion, userfault bits,
mprotect/munmap, memory_failure, memslot changes). Each fault may carry an ``expect`` table,
with per-arch overrides. ``docs/scenarios.md`` is the reference.

Every schema error is a :class:`kvmcore.ScenarioError` naming the file, the key path (array
entries numbered from 1, as the output numbers steps), the value and what was expected.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kvmcore
from kvmcore import abi
from kvmcore.errors import ERRNO_NAMES, KvmError, ScenarioError, strerror

BUILTIN = "builtin"

ACCESS_KINDS = ("read", "write", "exec")
CAUSES = ("not_present", "read_only", "no_exec", "access_flag", "no_slot")
MEM_FLAGS = {
    "LOG_DIRTY_PAGES": abi.KVM_MEM_LOG_DIRTY_PAGES,
    "READONLY": abi.KVM_MEM_READONLY,
    "GUEST_MEMFD": abi.KVM_MEM_GUEST_MEMFD,
    "USERFAULT": abi.KVM_MEM_USERFAULT,
}
EXIT_FLAGS = {
    "PRIVATE": abi.KVM_MEMORY_EXIT_FLAG_PRIVATE,
    "USERFAULT": abi.KVM_MEMORY_EXIT_FLAG_USERFAULT,
}
PROTS = {"r": kvmcore.PROT_READ, "w": kvmcore.PROT_WRITE, "x": kvmcore.PROT_EXEC}
SYNDROME_ARCHES = {
    abi.KVMCORE_SYNDROME_ARCH_NONE: "NONE",
    abi.KVMCORE_SYNDROME_ARCH_ARM64: "ARM64",
    abi.KVMCORE_SYNDROME_ARCH_X86_VMX: "X86_VMX",
    abi.KVMCORE_SYNDROME_ARCH_X86_SVM: "X86_SVM",
    abi.KVMCORE_SYNDROME_ARCH_RISCV: "RISCV",
}
_ERRNO_BY_NAME = {name: num for num, name in ERRNO_NAMES.items()}
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"\s*(0x[0-9a-f_]+|0b[01_]+|0o[0-7_]+|[0-9][0-9_]*)\s*(?:([kmgt])(?:i?b)?|b)?\s*", re.I)


# --- schema ------------------------------------------------------------------------------------
@dataclass
class SlotSpec:
    path: str
    slot: int
    gpa: int
    size: int
    flags: int = 0
    guest_memfd: bool = False
    guest_memfd_offset: int = 0
    host_page_size: int | None = None
    host_prot: int | None = None
    userfault: list[tuple[int, int]] | str | None = None  # "all" or (gpa, size) ranges


@dataclass
class Step:
    number: int
    path: str
    action: str
    params: dict[str, Any]
    name: str = ""
    expect: dict[str, Any] = field(default_factory=dict)
    expect_arch: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_fault(self) -> bool:
        return self.action in ("access", "raw")

    def title(self) -> str:
        p = self.params
        if self.action == "access":
            extra = [p["cause"]]
            if p["private"]:
                extra.append("private")
            if p["kind"] != "exec":
                extra.append(f"{p['size']} byte{'s' if p['size'] != 1 else ''}")
            if p["kind"] == "write" and p["data"]:
                extra.append(f"data {p['data']:#x}")
            text = f"guest {p['kind']} gpa {p['gpa']:#x} ({', '.join(extra)})"
        elif self.action == "raw":
            text = "raw registers for " + ", ".join(p["regs"])
        elif self.action == "set_attributes":
            text = (f"VMM: KVM_SET_MEMORY_ATTRIBUTES [{p['gpa']:#x}, +{p['size']:#x}) -> "
                    + ("private" if p["private"] else "shared"))
        elif self.action == "userfault":
            where = f"[{p['gpa']:#x}, +{p['size']:#x})" if p["size"] else f"the page of {p['gpa']:#x}"
            text = f"VMM: {'set' if p['set'] else 'clear'} userfault bit(s) for {where}"
        elif self.action == "mprotect":
            text = f"host: mprotect [{p['gpa']:#x}, +{p['size']:#x}) to {_prot_text(p['prot'])}"
        elif self.action == "munmap":
            text = f"host: munmap the hva of [{p['gpa']:#x}, +{p['size']:#x})"
        elif self.action == "memory_failure":
            where = "guest_memfd page" if p["private"] else "host page"
            text = f"host: memory_failure (uncorrectable error) on the {where} of gpa {p['gpa']:#x}"
        elif self.action == "memslot":
            spec: SlotSpec = p["spec"]
            text = (f"VMM: KVM_SET_USER_MEMORY_REGION2 slot {spec.slot} [{spec.gpa:#x}, +{spec.size:#x})"
                    + (f" flags {_flag_names(spec.flags, MEM_FLAGS)}" if spec.flags else ""))
        elif self.action == "enable_cap":
            text = f"VMM: KVM_ENABLE_CAP {p['name']}"
        else:  # pragma: no cover
            text = self.action
        return f"{text} - {self.name}" if self.name else text


@dataclass
class Scenario:
    file: str
    name: str
    description: str = ""
    arches: list[str] | None = None  # None: every installed arch
    caps: list[tuple[str, int]] = field(default_factory=list)
    vm: dict[str, dict[str, Any]] = field(default_factory=dict)
    vm_caps: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    memslots: list[SlotSpec] = field(default_factory=list)
    attributes: list[tuple[str, int, int, bool]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    userfault_policy: str = "exit"
    mismatch_policy: str = "exit"
    max_round_trips: int = 8


# --- loading -----------------------------------------------------------------------------------
def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def load(path: str | None) -> Scenario:
    """Read and validate a scenario file (``None``: the built-in example)."""
    if path is None:
        from importlib import resources

        text = resources.files("kvmcore").joinpath("examples/builtin.toml").read_text(encoding="utf-8")
        return loads(text, BUILTIN)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text: {exc}") from None
    return loads(text, path)


def loads(text: str, file: str = "<string>") -> Scenario:
    tomllib = _toml()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if m:
            reason = message[: m.start()].strip()
            raise ScenarioError(f"{file}:{m[1]}:{m[2]}: TOML syntax error: {reason}") from None
        raise ScenarioError(f"{file}: TOML syntax error: {message}") from None
    return Parser(file).scenario(doc)


class Parser:
    """Validates the TOML document; every refusal names the key path, the value and what was expected."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, path: str, value: Any, expected: str) -> ScenarioError:
        return ScenarioError(f"{self.file}: {path} = {_show(value)}: expected {expected}")

    def keys(self, table: dict[str, Any], path: str, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                raise ScenarioError(
                    f"{self.file}: {where}: unknown key; expected one of: {', '.join(allowed)}"
                )

    def table(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, value, "a table")
        return value

    def array_of_tables(self, value: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(path, value, f"an array of tables ([[{path}]])")
        return value

    def string(self, value: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or (choices is not None and value not in choices):
            raise self.error(path, value, "one of " + ", ".join(repr(c) for c in choices) if choices else "a string")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, value, "true or false")
        return value

    def integer(self, value: Any, path: str, what: str = "an integer", minimum: int | None = 0) -> int:
        if isinstance(value, bool):
            raise self.error(path, value, what)
        if isinstance(value, str):
            try:
                value = int(value.replace("_", ""), 0)
            except ValueError:
                raise self.error(path, value, what) from None
        if not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(path, value, what)
        return value

    def address(self, value: Any, path: str) -> int:
        return self.integer(value, path, "a guest physical address (an integer, or a string such as \"0x40000000\")")

    def size(self, value: Any, path: str, allow_zero: bool = False) -> int:
        what = 'a size: an integer or a string with a unit such as "4K", "2M", "1G"'
        if isinstance(value, str):
            m = _SIZE_RE.fullmatch(value)
            if m is None:
                raise self.error(path, value, what)
            result = int(m[1].replace("_", ""), 0) * _UNITS[(m[2] or "").lower()]
        else:
            result = self.integer(value, path, what)
        if result < 0 or (result == 0 and not allow_zero):
            raise self.error(path, value, what + (" (0 deletes the slot)" if allow_zero else ", not 0"))
        return result

    def names_or_int(self, value: Any, path: str, names: dict[str, int], prefix: str) -> int:
        what = f"a list of names ({', '.join(names)}; the {prefix} prefix is optional) or an integer"
        if isinstance(value, list):
            result = 0
            for i, item in enumerate(value, 1):
                key = item.upper().removeprefix(prefix) if isinstance(item, str) else None
                if key not in names:
                    raise self.error(f"{path}[{i}]", item, what)
                result |= names[key]
            return result
        if isinstance(value, str):
            return self.names_or_int([value], path, names, prefix)
        return self.integer(value, path, what)

    def cap(self, value: Any, path: str) -> tuple[str, int]:
        if isinstance(value, str):
            name = value if value.startswith("KVM_CAP_") else f"KVM_CAP_{value}"
            number = getattr(abi, name, None)
            if not isinstance(number, int):
                caps = sorted(n for n in dir(abi) if n.startswith("KVM_CAP_"))
                raise self.error(path, value, "a capability name (" + ", ".join(caps) + ") or number")
            return name, number
        number = self.integer(value, path, "a capability name or number")
        return f"cap {number}", number

    # -- the document ----------------------------------------------------------------------------
    def scenario(self, doc: dict[str, Any]) -> Scenario:
        self.keys(doc, "", ("name", "description", "arch", "vm", "vmm", "memslots", "attributes", "steps"))
        name = self.string(doc.get("name", Path(self.file).stem), "name")
        scn = Scenario(self.file, name, self.string(doc.get("description", ""), "description"))
        arch = doc.get("arch", "all")
        if isinstance(arch, str):
            scn.arches = None if arch == "all" else [arch]
        elif isinstance(arch, list) and arch and all(isinstance(a, str) for a in arch):
            scn.arches = list(arch)
        else:
            raise self.error("arch", arch, 'an arch name, a list of arch names, or "all"')

        vm = self.table(doc.get("vm", {}), "vm")
        for key, value in vm.items():
            if key == "caps":
                scn.caps = self.caps(value, "vm.caps")
                continue
            table = self.table(value, f"vm.{key}") if isinstance(value, dict) else None
            if table is None:
                raise ScenarioError(
                    f"{self.file}: vm.{key} = {_show(value)}: expected a table of VM settings for arch "
                    f"{key!r} ([vm.{key}]) or vm.caps; arch settings go in their arch's table, e.g. "
                    '[vm.arm64] granule = "16K"'
                )
            settings = dict(table)
            if "caps" in settings:
                scn.vm_caps[key] = self.caps(settings.pop("caps"), f"vm.{key}.caps")
            scn.vm[key] = settings

        vmm = self.table(doc.get("vmm", {}), "vmm")
        self.keys(vmm, "vmm", ("userfault", "private_mismatch", "max_round_trips"))
        scn.userfault_policy = self.string(vmm.get("userfault", "exit"), "vmm.userfault", ("exit", "resolve"))
        scn.mismatch_policy = self.string(vmm.get("private_mismatch", "exit"), "vmm.private_mismatch", ("exit", "convert"))
        scn.max_round_trips = self.integer(vmm.get("max_round_trips", 8), "vmm.max_round_trips", "a positive integer", 1)

        for i, table in enumerate(self.array_of_tables(doc.get("memslots", []), "memslots"), 1):
            scn.memslots.append(self.memslot(table, f"memslots[{i}]", default_slot=i - 1))
        for i, table in enumerate(self.array_of_tables(doc.get("attributes", []), "attributes"), 1):
            path = f"attributes[{i}]"
            self.keys(table, path, ("gpa", "size", "private"))
            scn.attributes.append((
                path,
                self.address(self.require(table, "gpa", path), f"{path}.gpa"),
                self.size(self.require(table, "size", path), f"{path}.size"),
                self.boolean(table.get("private", True), f"{path}.private"),
            ))
        for i, table in enumerate(self.array_of_tables(doc.get("steps", []), "steps"), 1):
            scn.steps.append(self.step(table, f"steps[{i}]", i))
        return scn

    def caps(self, value: Any, path: str) -> list[tuple[str, int]]:
        if not isinstance(value, list):
            raise self.error(path, value, "a list of capability names")
        return [self.cap(v, f"{path}[{i}]") for i, v in enumerate(value, 1)]

    def require(self, table: dict[str, Any], key: str, path: str) -> Any:
        if key not in table:
            raise ScenarioError(f"{self.file}: {path}.{key}: missing (required)")
        return table[key]

    def memslot(self, table: dict[str, Any], path: str, default_slot: int, allow_delete: bool = False) -> SlotSpec:
        self.keys(table, path, ("slot", "gpa", "size", "flags", "guest_memfd", "guest_memfd_offset",
                                "host_page_size", "host_prot", "userfault"))
        spec = SlotSpec(
            path,
            self.integer(table.get("slot", default_slot), f"{path}.slot", "a slot number"),
            self.address(self.require(table, "gpa", path), f"{path}.gpa"),
            self.size(self.require(table, "size", path), f"{path}.size", allow_zero=allow_delete),
        )
        spec.flags = self.names_or_int(table.get("flags", []), f"{path}.flags", MEM_FLAGS, "KVM_MEM_")
        spec.guest_memfd = self.boolean(table.get("guest_memfd", False), f"{path}.guest_memfd")
        if spec.guest_memfd:
            spec.flags |= abi.KVM_MEM_GUEST_MEMFD
        spec.guest_memfd_offset = self.size(table.get("guest_memfd_offset", 0), f"{path}.guest_memfd_offset", True)
        if "host_page_size" in table:
            spec.host_page_size = self.size(table["host_page_size"], f"{path}.host_page_size")
        if "host_prot" in table:
            spec.host_prot = self.prot(table["host_prot"], f"{path}.host_prot")
        if "userfault" in table:
            value = table["userfault"]
            if value == "all":
                spec.userfault = "all"
            elif isinstance(value, list):
                spec.userfault = [self.range(v, f"{path}.userfault[{i}]") for i, v in enumerate(value, 1)]
            else:
                raise self.error(f"{path}.userfault", value, '"all" or a list of gpas or {gpa, size} tables')
            spec.flags |= abi.KVM_MEM_USERFAULT
        return spec

    def range(self, value: Any, path: str) -> tuple[int, int]:
        if isinstance(value, dict):
            self.keys(value, path, ("gpa", "size"))
            return (self.address(self.require(value, "gpa", path), f"{path}.gpa"),
                    self.size(value.get("size", 0), f"{path}.size", True))
        return self.address(value, path), 0  # 0: one page of the VM's page size

    def prot(self, value: Any, path: str) -> int:
        what = 'a protection: "none" or letters from "rwx" (e.g. "r", "rw")'
        if not isinstance(value, str):
            raise self.error(path, value, what)
        if value == "none":
            return kvmcore.PROT_NONE
        if not value or any(c not in PROTS for c in value):
            raise self.error(path, value, what)
        result = 0
        for c in value:
            result |= PROTS[c]
        return result

    ACTIONS = ("access", "raw", "set_attributes", "userfault", "mprotect", "munmap", "memory_failure",
               "memslot", "enable_cap")
    ACCESS_KEYS = ("gpa", "cause", "private", "size", "data")

    def step(self, table: dict[str, Any], path: str, number: int) -> Step:
        actions = [a for a in self.ACTIONS if a in table]
        if len(actions) != 1:
            raise ScenarioError(
                f"{self.file}: {path}: expected exactly one action key ({', '.join(self.ACTIONS)}), found "
                + (", ".join(actions) if actions else "none")
            )
        action = actions[0]
        common = ("name", "expect", action)
        params: dict[str, Any] = {}
        if action == "access":
            self.keys(table, path, common + self.ACCESS_KEYS)
            params["kind"] = self.string(table["access"], f"{path}.access", ACCESS_KINDS)
            params["gpa"] = self.address(self.require(table, "gpa", path), f"{path}.gpa")
            params["cause"] = self.string(table.get("cause", "not_present"), f"{path}.cause", CAUSES)
            params["private"] = self.boolean(table.get("private", False), f"{path}.private")
            params["size"] = self.integer(table.get("size", 4), f"{path}.size", "an access size in bytes (1, 2, 4, 8...)", 1)
            params["data"] = self.integer(table.get("data", 0), f"{path}.data", "the data a write stores (an integer)")
        elif action == "raw":
            self.keys(table, path, common)
            regs = self.table(table["raw"], f"{path}.raw")
            if not regs:
                raise self.error(f"{path}.raw", regs, "a table per arch, e.g. [steps.raw.arm64] esr = 0x93c08006")
            params["regs"] = {}
            for arch, values in regs.items():
                if not isinstance(values, dict):
                    raise ScenarioError(
                        f"{self.file}: {path}.raw.{arch} = {_show(values)}: expected a table of the {arch!r} "
                        f"arch's registers (raw registers are given per arch: raw.{arch} = {{ ... }})"
                    )
                params["regs"][arch] = {
                    k: (v if isinstance(v, str) else self.integer(v, f"{path}.raw.{arch}.{k}", "a register value"))
                    for k, v in values.items()
                }
        else:
            self.keys(table, path, common)
            value = table[action]
            p = f"{path}.{action}"
            if action == "enable_cap":
                params["name"], params["cap"] = self.cap(value, p)
            elif action == "memslot":
                params["spec"] = self.memslot(self.table(value, p), p, default_slot=0, allow_delete=True)
            else:
                body = self.table(value, p)
                allowed = {
                    "set_attributes": ("gpa", "size", "private"),
                    "userfault": ("gpa", "size", "set"),
                    "mprotect": ("gpa", "size", "prot"),
                    "munmap": ("gpa", "size"),
                    "memory_failure": ("gpa", "private"),
                }[action]
                self.keys(body, p, allowed)
                params["gpa"] = self.address(self.require(body, "gpa", p), f"{p}.gpa")
                if "size" in allowed:
                    params["size"] = self.size(body.get("size", 0), f"{p}.size", allow_zero=action == "userfault")
                    if action != "userfault" and "size" not in body:
                        raise ScenarioError(f"{self.file}: {p}.size: missing (required)")
                if action == "set_attributes":
                    params["private"] = self.boolean(body.get("private", True), f"{p}.private")
                elif action == "userfault":
                    params["set"] = self.boolean(body.get("set", True), f"{p}.set")
                elif action == "mprotect":
                    params["prot"] = self.prot(self.require(body, "prot", p), f"{p}.prot")
                elif action == "memory_failure":
                    params["private"] = self.boolean(body.get("private", False), f"{p}.private")
        step = Step(number, path, action, params, self.string(table.get("name", ""), f"{path}.name"))
        if "expect" in table:
            if not step.is_fault:
                raise ScenarioError(f"{self.file}: {path}.expect: only fault steps (access, raw) take an expect table")
            expect = self.table(table["expect"], f"{path}.expect")
            for key, value in expect.items():
                if key in EXPECT_KEYS:
                    step.expect[key] = self.expectation(key, value, f"{path}.expect.{key}")
                elif isinstance(value, dict):
                    per_arch = {}
                    for k2, v2 in value.items():
                        if k2 not in EXPECT_KEYS:
                            raise ScenarioError(
                                f"{self.file}: {path}.expect.{key}.{k2}: unknown expectation; expected one of: "
                                + ", ".join(EXPECT_KEYS)
                            )
                        per_arch[k2] = self.expectation(k2, v2, f"{path}.expect.{key}.{k2}")
                    step.expect_arch[key] = per_arch
                else:
                    raise ScenarioError(
                        f"{self.file}: {path}.expect.{key}: unknown expectation; expected one of: "
                        + ", ".join(EXPECT_KEYS) + f", or a per-arch table ([{path}.expect.<arch>])"
                    )
        return step

    def expectation(self, key: str, value: Any, path: str) -> Any:
        if key == "outcome":
            if isinstance(value, str):
                return [value]
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return value
            raise self.error(path, value, "an outcome name or a list of them")
        if key == "exit_reason":
            if isinstance(value, str):
                if value.lower() == "none":
                    return None
                name = value.upper()
                name = name if name.startswith("KVM_EXIT_") else "KVM_EXIT_" + name
                if name not in abi.EXIT_REASON_NAMES.values():
                    raise self.error(path, value, '"none" or an exit reason name (MMIO, MEMORY_FAULT, ARM_NISV, ...)')
                return getattr(abi, name)
            return self.integer(value, path, '"none", an exit reason name or number')
        if key == "ret":
            if isinstance(value, str):
                name = value.lstrip("-").upper()
                if name not in _ERRNO_BY_NAME:
                    raise self.error(path, value, 'an errno name such as "EFAULT" or "EHWPOISON", or 0, or -errno')
                return -_ERRNO_BY_NAME[name]
            return self.integer(value, path, "0 or a negative errno (or its name)", None)
        if key == "flags":
            return self.names_or_int(value, path, EXIT_FLAGS, "KVM_MEMORY_EXIT_FLAG_")
        if key in ("gpa",):
            return self.address(value, path)
        if key in ("size", "mapped_size"):
            return self.size(value, path)
        if key == "signal":
            if value == "none":
                return None
            return self.string(value, path, ("SIGBUS", "none"))
        if key in ("round_trips", "conversions"):
            return self.integer(value, path, "a count")
        if key == "fault_kind":
            return self.string(value, path)
        raise AssertionError(key)  # pragma: no cover


EXPECT_KEYS = ("outcome", "exit_reason", "ret", "flags", "gpa", "size", "mapped_size", "signal",
               "round_trips", "conversions", "fault_kind")


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
    results: list[StepResult | None] = field(default_factory=list)
    error: str | None = None


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
            "arches": [{"arch": r.arch, "plugin": r.label, "page_size": r.page_size, "error": r.error} for r in self.runs],
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


def run(scenario: Scenario, arch: str | None = None) -> Outcome:
    """Run ``scenario`` on each selected arch (``arch``: a name, ``"all"``, or the scenario's)."""
    names = select_arches(scenario, arch)
    outcome = Outcome(scenario, [])
    if not names:
        outcome.errors.append("no arch plugins installed (see 'kvmcore plugins')")
        return outcome
    for name in names:
        arch_run = _run_arch(scenario, name)
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


def _run_arch(scn: Scenario, name: str) -> ArchRun:
    result = ArchRun(name)
    try:
        arch = kvmcore.load_arch(name)
    except (kvmcore.PluginLoadError, kvmcore.FaultContractError) as exc:
        result.error = str(exc)
        return result
    result.label = f"{arch.dist or 'unpublished'} {arch.version or ''}".strip()
    try:
        vm = kvmcore.VM(arch, **scn.vm.get(name, {}))
    except (ValueError, TypeError) as exc:
        result.error = f"vm.{name}: {exc}"
        return result
    result.page_size = vm.page_size
    state = _State(vm, scn)
    try:
        for _cap_name, cap in scn.caps + scn.vm_caps.get(name, []):
            vm.enable_cap(cap)
        for spec in scn.memslots:
            try:
                state.set_memslot(spec)
            except KvmError as exc:
                raise _StepError(f"{spec.path} (slot {spec.slot}): KVM_SET_USER_MEMORY_REGION2 failed: {exc}") from None
        for path, gpa, size, private in scn.attributes:
            try:
                vm.set_memory_attributes(gpa, size, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
            except KvmError as exc:
                raise _StepError(f"{path}: KVM_SET_MEMORY_ATTRIBUTES failed: {exc}") from None
    except _StepError as exc:
        result.error = str(exc)
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

    def set_memslot(self, spec: SlotSpec) -> None:
        vm = self.vm
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
                hva = vm.host.mmap(spec.size, prot, page_size=spec.host_page_size)
            if spec.flags & abi.KVM_MEM_GUEST_MEMFD:
                gmem = vm.create_guest_memfd(spec.guest_memfd_offset + spec.size)
        bitmap = None
        if spec.flags & abi.KVM_MEM_USERFAULT:
            npages = spec.size >> vm.page_shift
            bitmap = self.bitmaps.get(spec.slot)
            if bitmap is None or len(bitmap) * 8 < npages:
                bitmap = bytearray((npages + 63) // 64 * 8)
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
    except KvmError as exc:
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
        info["memory_fault"] = {"flags": mf.flags, "flag_names": _flag_list(mf.flags, EXIT_FLAGS),
                                "gpa": mf.gpa, "size": mf.size}
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
                failures.append(f"exit_reason: expected {_reason(want)}, got {_reason(got)}")
        elif key == "ret":
            got = info.get("ret")
            if got != want:
                failures.append(f"ret: expected {_ret(want)}, got {_ret(got)}")
        elif key == "flags":
            if mf is None:
                failures.append(f"flags: expected memory_fault.flags {_flag_names(want, EXIT_FLAGS)}, "
                                f"but the exit is {_reason(info.get('exit_reason'))}")
            elif mf["flags"] != want:
                failures.append(f"flags: expected {_flag_names(want, EXIT_FLAGS)}, got {_flag_names(mf['flags'], EXIT_FLAGS)}")
        elif key in ("gpa", "size"):
            src = mf if mf is not None else ({"gpa": mmio["phys_addr"], "size": mmio["len"]} if mmio else None)
            if src is None:
                failures.append(f"{key}: expected {want:#x}, but the exit is {_reason(info.get('exit_reason'))} "
                                "(gpa/size compare the memory_fault or mmio exit)")
            elif src[key] != want:
                failures.append(f"{key}: expected {want:#x}, got {src[key]:#x}")
        elif key == "mapped_size":
            mapped = info.get("mapped")
            if mapped is None:
                failures.append(f"mapped_size: expected a {_size(want)} mapping, but the outcome is {info.get('outcome')}")
            elif mapped["size"] != want:
                failures.append(f"mapped_size: expected {_size(want)}, got {_size(mapped['size'])}")
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


# --- rendering -----------------------------------------------------------------------------------
def _reason(reason: int | None) -> str:
    if reason is None:
        return "none (the guest resumes)"
    return f"{abi.exit_reason_name(reason)} ({reason})"


def _ret(ret: int | None) -> str:
    if not ret:
        return "0"
    return f"-{strerror(ret)} ({ret})"


def _size(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size:#x}"


def _flag_list(flags: int, names: dict[str, int]) -> list[str]:
    out = [name for name, bit in names.items() if flags & bit]
    rest = flags & ~sum(names.values())
    if rest:
        out.append(f"{rest:#x}")
    return out


def _flag_names(flags: int, names: dict[str, int]) -> str:
    if not flags:
        return "0"
    return f"{flags:#x} (" + "|".join(_flag_list(flags, names)) + ")"


def _prot_text(prot: int) -> str:
    return "".join(c for c, bit in PROTS.items() if prot & bit) or "none"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


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
        cells["stage-2"] = [f"{_size(mapped['size'])} {perms}", f"pfn {mapped['pfn']:#x}"]
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
    arches = ", ".join(f"{r.arch} ({r.label}, {_size(r.page_size)} pages)" if not r.error or r.page_size
                       else f"{r.arch} (not run)" for r in runs)
    out.append(f"arches: {arches}")
    policy = f"vmm: userfault exits -> {scn.userfault_policy}, private/shared mismatch -> {scn.mismatch_policy}"
    out.append(policy)
    if scn.memslots:
        out.append("memslots:")
        for spec in scn.memslots:
            extra = []
            if spec.flags:
                extra.append(_flag_names(spec.flags, MEM_FLAGS).split(" ", 1)[1].strip("()"))
            if spec.host_page_size:
                extra.append(f"host pages {_size(spec.host_page_size)}")
            if spec.host_prot is not None:
                extra.append(f"host prot {_prot_text(spec.host_prot)}")
            if spec.userfault:
                extra.append("userfault bits: " + ("all pages" if isinstance(spec.userfault, str) else
                                                   ", ".join(f"{g:#x}" for g, _ in spec.userfault)))
            out.append(f"  slot {spec.slot}: gpa [{spec.gpa:#x}, {spec.gpa + spec.size:#x}) {_size(spec.size)}"
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
    return "\n".join(out) + "\n"


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
