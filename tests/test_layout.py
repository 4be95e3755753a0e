"""The package layout: the wings depend in one direction and no run-time import forms a circle.

tools (``kvmcore.cli``) -> model (``kvmcore.kvm``) -> machinery (``kvmcore.plugin``) -> the top
(``abi``, ``errors``, ``hookspecs``, ``_types``). ``kvmcore/__init__.py`` is the composition
root and may import anything; ``kvmcore.testing`` uses the public API. Imports under
``if TYPE_CHECKING:`` do not run and are left out; imports inside functions do run and count.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kvmcore"

#: wing -> the wings its modules may import at run time
ALLOWED = {
    "top": {"top"},
    "plugin": {"top", "plugin"},
    "kvm": {"top", "plugin", "kvm"},
    "cli": {"top", "plugin", "kvm", "cli", "realkvm", "root"},
    # the real-KVM backend: /dev/kvm through the top-level uAPI modules only, never the model
    "realkvm": {"top", "realkvm"},
    "testing": {"top", "plugin", "kvm", "cli", "testing", "root"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in ("kvm", "plugin", "cli", "testing", "realkvm"):
        return parts[1]
    return "top"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path) -> set[str]:
    """The kvmcore modules ``path`` imports when it runs (``from kvmcore import abi`` names the
    module ``kvmcore.abi``; ``from kvmcore import VM`` names the package root)."""
    found: set[str] = set()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "kvmcore")
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.split(".")[0] == "kvmcore":
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.add(sub if sub in modules else child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    return {module_name(p): runtime_imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_graph_sees_known_edges() -> None:
    g = graph()
    # hand-checked in the source: kvm_main imports the loader, the loader the contract
    assert "kvmcore.plugin.loader" in g["kvmcore.kvm.kvm_main"]
    assert "kvmcore.plugin.contract" in g["kvmcore.plugin.loader"]
    # type-only imports are not edges: hookspecs names VM under TYPE_CHECKING only
    assert "kvmcore.kvm.kvm_main" not in g["kvmcore.hookspecs"]


def test_no_runtime_import_circle() -> None:
    g = graph()
    # A package imports its parents' __init__ first; the root is the composition root that
    # imports everything, so edges into it (``import kvmcore`` from the tools) are not followed.
    edges = {m: {d for d in deps if d in g and d != "kvmcore" and d != m} for m, deps in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("run-time import circle: " + " -> ".join(cycle))
            if dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node)


@pytest.mark.parametrize("module", sorted(graph()))
def test_wings_depend_in_one_direction(module: str) -> None:
    source = wing(module)
    if source == "root":
        return  # kvmcore/__init__.py: the composition root
    bad = sorted(dep for dep in graph()[module] if dep != module and wing(dep) not in ALLOWED[source])
    assert not bad, f"{module} ({source}) imports {bad}; allowed: {sorted(ALLOWED[source])}"


def test_realkvm_imports_only_abi_errors_types_and_uapi() -> None:
    top = {"kvmcore.abi", "kvmcore.errors", "kvmcore._types", "kvmcore.uapi"}
    for module, deps in graph().items():
        if wing(module) == "realkvm":
            bad = sorted(d for d in deps if wing(d) != "realkvm" and d not in top)
            assert not bad, f"{module} imports {bad}; the backend may import only {sorted(top)}"


def test_the_model_and_the_plugins_never_import_realkvm() -> None:
    g = graph()
    assert any(wing(m) == "realkvm" for m in g)  # the check below sees the wing
    for module, deps in g.items():
        if wing(module) in ("kvm", "plugin", "top", "root", "testing"):
            assert not [d for d in deps if wing(d) == "realkvm"], f"{module} imports the real-KVM backend"
    plugins = PACKAGE.parent / "plugins"
    for path in plugins.glob("*/src/**/*.py"):
        text = path.read_text()
        assert "kvmcore.realkvm" not in text and "kvmcore import realkvm" not in text, f"{path} imports the real-KVM backend"


# --- the fault path reads no names through a module __getattr__ -----------------------------------
#: Modules every fault runs through. ``kvmcore`` and ``kvmcore.abi`` define a module
#: ``__getattr__`` (PEP 562, for their names imported on first use), and on CPython 3.11 that keeps
#: every ``kvmcore.X`` / ``abi.X`` read from being specialised: 1.4-1.7% of a fault, measured
#: with callgrind. These modules import the names they use instead.
FAULT_PATH = (
    "kvmcore/kvm/kvm_main.py", "kvmcore/kvm/faultin.py", "kvmcore/kvm/default_hooks.py",
    "kvmcore/kvm/userfault.py", "kvmcore/kvm/host_mm.py", "kvmcore/kvm/guest_memfd.py", "kvmcore/_types.py",
    "plugins/arm64/src/kvmcore_arm64/abort.py", "plugins/x86/src/kvmcore_x86/mmu.py",
    "plugins/riscv/src/kvmcore_riscv/gstage.py", "plugins/riscv/src/kvmcore_riscv/plugin.py",
    "plugins/arm64/src/kvmcore_arm64/convert.py",  # a replay's parse of each distinct text
)  # fmt: skip
#: abi's names made on first use (reading them through abi is the point).
LAZY_ABI = {"kvm_run", "KVM_RUN_OFFSETS", "KVM_RUN_SIZE"}


def _reads_through_getattr_modules(tree: ast.AST) -> list[str]:
    """``kvmcore.X`` and ``abi.X`` reads in function bodies (annotations are not run)."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        stack: list[ast.AST] = list(function.body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.AnnAssign):  # its annotation is not run
                stack.extend(n for n in (node.target, node.value) if n is not None)
                continue
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):  # a nested one is visited itself
                stack.extend(ast.iter_child_nodes(node))
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ("kvmcore", "abi") and node.attr not in LAZY_ABI | {"abi"}):
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return sorted(found)


@pytest.mark.parametrize("path", FAULT_PATH)
def test_fault_path_imports_core_names(path: str) -> None:
    tree = ast.parse((PACKAGE.parent / path).read_text())
    assert _reads_through_getattr_modules(tree) == [], f"{path}: import these names instead"


def test_the_check_finds_such_reads() -> None:
    """The check above can fail: a read through each module in a function body is found, an
    annotation is not."""
    tree = ast.parse("def f(vm: kvmcore.VM) -> None:\n    x: kvmcore.VM = vm\n    kvmcore.kvm_faultin_pfn(vm)\n"
                     "    return abi.KVM_EXIT_MMIO + abi.KVM_RUN_SIZE\n")
    assert _reads_through_getattr_modules(tree) == ["line 3: kvmcore.kvm_faultin_pfn", "line 4: abi.KVM_EXIT_MMIO"]
