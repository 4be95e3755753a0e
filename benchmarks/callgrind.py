"""Counting a command's user-space instructions with valgrind's callgrind (``Ir``), for
``startup_instructions.py`` and ``fault_instructions.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def child_env() -> dict[str, str]:
    """The commands' environment: the same dict layouts run to run, and bytecode written (as an
    installed package has it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONHASHSEED"] = "0"
    return env


def compiled(argv: list[str]) -> None:
    """Run ``argv`` once without valgrind: a module changed since its bytecode was written is
    compiled (and written) now, not inside a counted run."""
    subprocess.run(argv, capture_output=True, env=child_env(), check=True)


def collected(argv: list[str], options: tuple[str, ...] = ()) -> tuple[int, str]:
    """``(instructions, stdout)`` of ``argv`` under callgrind with ``options``; exits naming the
    command if it fails or valgrind reports no count."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *options, *argv],
                          capture_output=True, text=True, env=child_env())
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} under valgrind exited {proc.returncode}: {proc.stderr[-800:]}")
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        sys.exit(f"no instruction count in valgrind's output: {proc.stderr[-500:]}")
    return int(found.group(1)), proc.stdout
