"""Scenario files for ``kvmcore run``: the TOML schema and its validation.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kvmcore
from kvmcore import abi
from kvmcore.cli.format import flag_names, prot_text, toml_text
from kvmcore.errors import ERRNO_NAMES, ScenarioError

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
    # READ/WRITE/EXEC: the design rwx-flags (docs/designs.md), not upstream
    "READ": abi.KVM_MEMORY_EXIT_FLAG_READ,
    "WRITE": abi.KVM_MEMORY_EXIT_FLAG_WRITE,
    "EXEC": abi.KVM_MEMORY_EXIT_FLAG_EXEC,
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
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
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
    host_thp: bool = False
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
            text = f"host: mprotect [{p['gpa']:#x}, +{p['size']:#x}) to {prot_text(p['prot'])}"
        elif self.action == "munmap":
            text = f"host: munmap the hva of [{p['gpa']:#x}, +{p['size']:#x})"
        elif self.action == "memory_failure":
            where = "guest_memfd page" if p["private"] else "host page"
            text = f"host: memory_failure (uncorrectable error) on the {where} of gpa {p['gpa']:#x}"
        elif self.action == "memslot":
            spec: SlotSpec = p["spec"]
            text = (f"VMM: KVM_SET_USER_MEMORY_REGION2 slot {spec.slot} [{spec.gpa:#x}, +{spec.size:#x})"
                    + (f" flags {flag_names(spec.flags, MEM_FLAGS)}" if spec.flags else ""))
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
    #: Top-level ``kernel = "6.18"`` and ``proposals = [...]`` (None: the defaults).
    kernel: str | None = None
    proposals: tuple[str, ...] | None = None


# --- loading -----------------------------------------------------------------------------------
def load(path: str | None) -> Scenario:
    """Read and validate a scenario file (``None``: the built-in example; ``-``: standard input)."""
    if path == "-":
        import sys

        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise ScenarioError(f"<stdin>: not UTF-8 text: {exc}") from None
        return loads(text, "<stdin>")
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
    import tomllib  # on first use: decode and replay never read a scenario

    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise ScenarioError(f"{file}: values nested too deeply (arrays or inline tables within each other "
                            f"hundreds of levels deep); a scenario needs at most a few levels") from None
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
        return ScenarioError(f"{self.file}: {path} = {toml_text(value)}: expected {expected}")

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

    def integer(self, value: Any, path: str, what: str = "an integer", minimum: int | None = 0, maximum: int | None = U64_MAX) -> int:
        if isinstance(value, bool):
            raise self.error(path, value, what)
        if isinstance(value, str):
            try:
                value = int(value.replace("_", ""), 0)
            except ValueError:
                raise self.error(path, value, what) from None
        if not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(path, value, what)
        if maximum is not None and value > maximum:
            raise self.error(path, value, f"{what}, at most {maximum:#x} (the ioctl's field is __u{maximum.bit_length()})")
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
            if result > U64_MAX:
                raise self.error(path, value, f"{what}, at most 2**64-1 bytes (the ioctl's field is __u64)")
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
        self.keys(doc, "", ("name", "description", "arch", "kernel", "proposals", "vm", "vmm", "memslots", "attributes", "steps"))
        name = self.string(doc.get("name", Path(self.file).stem), "name")
        scn = Scenario(self.file, name, self.string(doc.get("description", ""), "description"))
        arch = doc.get("arch", "all")
        if isinstance(arch, str):
            scn.arches = None if arch == "all" else [arch]
        elif isinstance(arch, list) and arch and all(isinstance(a, str) for a in arch):
            scn.arches = list(arch)
        else:
            raise self.error("arch", arch, 'an arch name, a list of arch names, or "all"')

        if "kernel" in doc:
            scn.kernel = self.string(doc["kernel"], "kernel", kvmcore.KERNEL_VERSIONS)
        if "proposals" in doc:
            value = doc["proposals"]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.error("proposals", value, "a list of proposal names (an empty list is upstream mode)")
            for name in value:
                if name not in kvmcore.PROPOSALS:
                    raise self.error("proposals", value, f"proposal names from {', '.join(kvmcore.PROPOSALS)} ({name!r} is none)")
            scn.proposals = tuple(value)
        vm = self.table(doc.get("vm", {}), "vm")
        for key, value in vm.items():
            if key == "caps":
                scn.caps = self.caps(value, "vm.caps")
                continue
            table = self.table(value, f"vm.{key}") if isinstance(value, dict) else None
            if table is None:
                raise ScenarioError(
                    f"{self.file}: vm.{key} = {toml_text(value)}: expected a table of VM settings for arch "
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
        self.arch_keys(scn)
        return scn

    def arch_keys(self, scn: Scenario) -> None:
        """Arch names used as keys (``[vm.<arch>]``, ``raw.<arch>``) must be installed arches
        (or named in ``arch``), and ``[vm.<arch>]`` keys settings that arch declares: a typo
        is an error naming the key, never a silently ignored table."""
        installed = kvmcore.installed_arches()
        known = set(installed) | set(scn.arches or ())
        listing = ", ".join(installed) or "none"
        for arch in scn.vm:
            if arch not in known:
                raise ScenarioError(f"{self.file}: vm.{arch}: unknown arch {arch!r}; installed arches: {listing}")
        for step in scn.steps:
            for arch in step.params.get("regs", {}) if step.action == "raw" else ():
                if arch not in known:
                    raise ScenarioError(f"{self.file}: {step.path}.raw.{arch}: unknown arch {arch!r}; installed arches: {listing}")
        for arch, settings in scn.vm.items():
            try:
                declared = kvmcore.load_arch(arch).info.settings
            except (kvmcore.PluginLoadError, kvmcore.FaultContractError):
                continue  # the run reports the arch's own error in its column
            for key in settings:
                if key not in declared and key not in ("kernel", "proposals"):  # VM()'s own parameters
                    raise ScenarioError(
                        f"{self.file}: vm.{arch}.{key}: unknown setting for arch {arch!r}; its settings: "
                        + (", ".join(declared) or "(none)")
                    )

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
                                "host_page_size", "host_thp", "host_prot", "userfault"))
        spec = SlotSpec(
            path,
            self.integer(table.get("slot", default_slot), f"{path}.slot", "a slot number", maximum=U32_MAX),
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
        spec.host_thp = self.boolean(table.get("host_thp", False), f"{path}.host_thp")
        if spec.host_thp and spec.host_page_size is None:
            raise ScenarioError(f"{self.file}: {path}.host_thp: needs host_page_size (the THP size, e.g. \"2M\")")
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
                        f"{self.file}: {path}.raw.{arch} = {toml_text(values)}: expected a table of the {arch!r} "
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
