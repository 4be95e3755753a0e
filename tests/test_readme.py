"""The README's Python example runs and prints what the README says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_python_example_prints_its_comment() -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    expected = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    assert out.getvalue().splitlines() == expected


def test_readme_keeps_the_two_setup_commands() -> None:
    assert "kvmcore run" in README and "bash .ci/run" in README


def test_readme_compare_output_is_current(capsys) -> None:
    """The README's `kvmcore compare` block is what the command prints now (the values in it are
    checked by hand in tests/cli/test_cli_compare.py)."""
    from kvmcore.cli.main import main

    block = re.search(r"```\n\$ kvmcore compare --access write@0x40401000 --arch arm64\n(.*?)```", README, re.S).group(1)
    assert main(["compare", "--access", "write@0x40401000", "--arch", "arm64"]) == 0
    assert capsys.readouterr().out == block
