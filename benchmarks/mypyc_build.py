"""Experiment (issue 15): compile the fault path's modules with mypyc, in place.

    python benchmarks/mypyc_build.py            # build the FAULT_PATH modules next to their .py
    python benchmarks/mypyc_build.py a.py b.py  # build just these (paths from the repo root)
    python benchmarks/mypyc_build.py --clean    # remove every compiled module again
    python benchmarks/mypyc_build.py --stash    # move them to build/mypyc-stash (interpreted)
    python benchmarks/mypyc_build.py --unstash  # and back (compiled), for A/B runs

First apply the source changes mypyc needs (benchmarks/mypyc_compat.patch; the notes in
benchmarks/mypyc_experiment.md say what each is for) -- without them the build fails or the
compiled modules crash -- and undo them afterwards:

    git apply benchmarks/mypyc_compat.patch && python benchmarks/mypyc_build.py
    ...
    python benchmarks/mypyc_build.py --clean && git apply -R benchmarks/mypyc_compat.patch

Run from the repository root of a worktree with the editable installs of kvmcore and the three
plugins (mypy, which brings mypyc and mypy_extensions, and gcc). The extension modules land beside their sources (``build_ext --inplace``), so the
editable installs import them in preference to the ``.py`` files (CPython's path finder tries
extension suffixes first); ``--clean`` restores the interpreted build. All the modules form
one group (one shared library, ``kvmcore/_mypyc__mypyc*.so``), so calls between them are
native calls. See benchmarks/mypyc_experiment.md for the figures.
"""

from __future__ import annotations

import glob
import os
import sys
import time

#: The modules a fault runs through (sys.setprofile over mapped, userfault and MMIO faults on
#: every arch), plus what they call on the way.
FAULT_PATH = [
    "kvmcore/_types.py",
    # "kvmcore/_kvm_run.py": ctypes.Structure subclasses; mypyc emits C that names an undeclared
    # CPyModule__ctypes (typeshed defines Structure in _ctypes) and gcc stops. Nothing to gain.
    "kvmcore/kvm/kvm_main.py",
    "kvmcore/kvm/faultin.py",
    "kvmcore/kvm/memslot.py",
    "kvmcore/kvm/memory_attributes.py",
    "kvmcore/kvm/stage2.py",
    "kvmcore/kvm/host_mm.py",
    "kvmcore/kvm/userfault.py",
    # "kvmcore/kvm/default_hooks.py": hook implementations (see HOOKIMPL_MODULES)
    "kvmcore/kvm/version.py",
    "kvmcore/plugin/loader.py",
    # "plugins/arm64/src/kvmcore_arm64/plugin.py": hook implementations (see HOOKIMPL_MODULES)
    "plugins/arm64/src/kvmcore_arm64/fault.py",
    "plugins/arm64/src/kvmcore_arm64/fault_type.py",
    "plugins/arm64/src/kvmcore_arm64/abort.py",
    "plugins/arm64/src/kvmcore_arm64/esr.py",
    "plugins/arm64/src/kvmcore_arm64/syndrome.py",
    "plugins/arm64/src/kvmcore_arm64/kernels.py",
    # "plugins/riscv/src/kvmcore_riscv/plugin.py": hook implementations (see HOOKIMPL_MODULES)
    "plugins/riscv/src/kvmcore_riscv/fault.py",
    "plugins/riscv/src/kvmcore_riscv/fault_type.py",
    "plugins/riscv/src/kvmcore_riscv/gstage.py",
    "plugins/riscv/src/kvmcore_riscv/htinst.py",
    "plugins/riscv/src/kvmcore_riscv/kernels.py",
    # "plugins/x86/src/kvmcore_x86/plugin.py": hook implementations (see HOOKIMPL_MODULES)
    "plugins/x86/src/kvmcore_x86/fault.py",
    "plugins/x86/src/kvmcore_x86/decode.py",
    "plugins/x86/src/kvmcore_x86/mmu.py",
]

#: Not compiled: pluggy's HookimplMarker sets an attribute on each hook implementation (a compiled
#: function is a builtin: AttributeError at import), and pluggy 1.7's varnames() reads
#: ``__code__``, which a compiled function lacks (it would call the hook with no arguments).
HOOKIMPL_MODULES = [
    "kvmcore/kvm/default_hooks.py",
    "plugins/arm64/src/kvmcore_arm64/plugin.py",
    "plugins/riscv/src/kvmcore_riscv/plugin.py",
    "plugins/x86/src/kvmcore_x86/plugin.py",
]

#: Where build_ext --inplace puts each package's extensions.
PACKAGE_DIRS = {
    "kvmcore": "kvmcore",
    "kvmcore_arm64": "plugins/arm64/src/kvmcore_arm64",
    "kvmcore_riscv": "plugins/riscv/src/kvmcore_riscv",
    "kvmcore_x86": "plugins/x86/src/kvmcore_x86",
}


def compiled() -> list[str]:
    found: list[str] = []
    for top in PACKAGE_DIRS.values():
        found += glob.glob(f"{top}/**/*.cpython-*.so", recursive=True)
    return sorted(found)


def _stashed(stash: str) -> list[str]:
    return sorted(os.path.relpath(p, stash) for p in glob.glob(f"{stash}/**/*.so", recursive=True))


def main(argv: list[str]) -> int:
    if not os.path.isdir("kvmcore") or not os.path.isdir("plugins"):
        print("run from the repository root", file=sys.stderr)
        return 2
    if argv[:1] in (["--stash"], ["--unstash"]):
        stash = "build/mypyc-stash"
        moves = ([(p, os.path.join(stash, p)) for p in compiled()] if argv[0] == "--stash" else
                 [(os.path.join(stash, p), p) for p in _stashed(stash)])
        for src, dst in moves:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
        print(f"{argv[0][2:]}: moved {len(moves)} compiled modules")
        return 0
    if argv[:1] == ["--clean"]:
        for path in compiled():
            os.remove(path)
            print("removed", path)
        return 0
    paths = argv or FAULT_PATH
    from mypyc.build import mypycify
    from setuptools import setup

    start = time.perf_counter()
    ext = mypycify(paths, group_name="kvmcore._mypyc", opt_level=os.environ.get("MYPYC_OPT_LEVEL", "3"),
                   target_dir="build/mypyc")
    for e in ext:
        # gcc 12 at -O3 reports a 'maybe-uninitialized' in mypyc's C for x86 decode.py's
        # decode_fault, and mypyc builds with -Werror: a false positive of the C compiler
        if os.environ.get("MYPYC_NO_WERROR_FIX") is None:
            e.extra_compile_args.append("-Wno-maybe-uninitialized")
    generated = time.perf_counter()
    setup(name="kvmcore-mypyc-experiment", ext_modules=ext, package_dir=PACKAGE_DIRS,
          script_args=["build_ext", "--inplace", "--force", "-j", "2"])
    done = time.perf_counter()
    print(f"mypyc: {len(paths)} modules, mypy+IR+C {generated - start:.1f} s, C compile {done - generated:.1f} s, "
          f"total {done - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
