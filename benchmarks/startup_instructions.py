"""Start-up in instructions, which a busy machine does not change: ``python benchmarks/startup_instructions.py``.

Counts the user-space instructions (valgrind's callgrind, ``Ir``) of the floor ``python -c
"import pluggy, stevedore"``, ``kvmcore decode arm64 ...`` and ``kvmcore plugins`` (the installed
console script next to this interpreter) and prints each with its ratio to the floor. Then, with
``--steps``, what each step of ``kvmcore decode`` adds (import kvmcore, the CLI, the parser, entry
points, the arch plugin, loading it, the model, the VM, the decode module, the run), each step
counted in a fresh interpreter that ran the steps before it.

The CPU-time ratios of ``benchmarks/run.py`` (``bench_startup``) are the verdicts; on this shared
2-core machine they move by 10-20% with the load. The instruction counts do not (two runs agree
within about 0.2%), so they show whether a change helped; they leave out kernel time (``exec``,
page faults, reading files), a larger share of the floor's time than of kvmcore's, so their
ratios are higher than the CPU-time ones. Needs valgrind; about 10 s per command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from callgrind import collected, compiled

FLOOR = "import pluggy, stevedore"
REGISTERS = ("esr=0x93c08047", "far=0x40000000", "hpfar=0x400000")  # a level-3 write translation fault
DECODE = ["decode", "arm64", *REGISTERS]
#: ``kvmcore decode``'s steps, each added to the ones before it (``M`` is kvmcore.cli.main).
STEPS = (
    ("import kvmcore", "import kvmcore"),
    ("import kvmcore.cli.main", "import kvmcore.cli.main; M = sys.modules['kvmcore.cli.main']"),
    ("parser for decode, parse", f"a = M.build_parser('decode').parse_args({DECODE!r})"),
    ("entry points", "kvmcore.plugin.loader.entry_points('kvmcore.arch')"),
    ("import the arm64 plugin", "import kvmcore_arm64.plugin"),
    ("load_arch (stevedore, pluggy, contract)", "arch = kvmcore.load_arch('arm64')"),
    ("import the model (kvm_main)", "import kvmcore.kvm.kvm_main"),
    ("VM and vCPU", "vm = kvmcore.VM(arch); vm.create_vcpu()"),
    ("import kvmcore.cli.decode", "import kvmcore.cli.decode"),
    ("the rest of main()", f"M.main({DECODE!r})"),
)


def kvmcore_script() -> str:
    script = Path(sys.executable).with_name("kvmcore")
    found = str(script) if script.exists() else shutil.which("kvmcore")
    if not found:
        sys.exit("no kvmcore console script next to this interpreter or on PATH")
    return found


def instructions(argv: list[str]) -> int:
    compiled(argv)  # bytecode written, as installed
    return collected(argv)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", action="store_true", help="also what each step of kvmcore decode adds")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    kvmcore = kvmcore_script()
    runs = {"floor": [sys.executable, "-c", FLOOR], "decode": [kvmcore, *DECODE], "plugins": [kvmcore, "plugins"]}
    if args.steps:
        code = f"{FLOOR}; import sys"
        for label, step in STEPS:
            code += f"; {step}"
            runs[label] = [sys.executable, "-c", code]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(instructions, runs.values()), strict=True))
    floor = counts["floor"]
    print(f"instructions (valgrind Ir), {sys.executable}")
    for label in ("floor", "decode", "plugins"):
        print(f"  {label:8} {counts[label] / 1e6:8.1f} M  {counts[label] / floor:.3f}x the floor")
    if args.steps:
        print("kvmcore decode, step by step (instructions each step adds):")
        before = floor
        for label, _ in STEPS:
            print(f"  {(counts[label] - before) / 1e6:+8.1f} M  {label}")
            before = counts[label]
    return 0


if __name__ == "__main__":
    sys.exit(main())
