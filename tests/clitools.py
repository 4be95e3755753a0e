"""What the command-line tests share: running ``python -m kvmcore.cli`` (or its ``main`` in this
process) and skipping when an
in-tree arch plugin is not installed (imported as ``clitools``; tests/conftest.py puts tests/ on
``sys.path``)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

import kvmcore

ROOT = Path(__file__).resolve().parents[1]
ARCHES = ("arm64", "x86", "riscv")


def arch_ready(name: str) -> bool:
    """The arch plugin ``name`` is installed and loads."""
    try:
        kvmcore.load_arch(name)
    except Exception:
        return False
    return True


def needs(*names: str) -> pytest.MarkDecorator:
    """Skip unless every arch in ``names`` (default: the three in-tree ones) loads."""
    missing = [n for n in (names or ARCHES) if not arch_ready(n)]
    return pytest.mark.skipif(bool(missing), reason=f"arch plugin(s) {', '.join(missing)} not installed or not loading")


def kvmcore_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
                cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``kvmcore ARGS`` as a user runs it, in a child process (``env`` adds to the environment)."""
    return subprocess.run([sys.executable, "-m", "kvmcore.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=120, cwd=cwd, env={**os.environ, **(env or {})})


def cli(argv: list[str]) -> tuple[int, str, str]:
    """``kvmcore ARGV`` through ``kvmcore.cli.main.main`` in this process: (status, stdout, stderr),
    after checking that neither stream shows a traceback."""
    from kvmcore.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    return status, out.getvalue(), err.getvalue()
