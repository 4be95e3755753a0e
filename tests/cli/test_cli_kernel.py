"""``--kernel``, ``--upstream``, ``--proposals`` and a scenario's ``kernel``/``proposals``: the
commands say which kernel and proposals they modelled (in-process through ``main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kvmcore
from kvmcore.cli.main import main

SCENARIO = """
name = "upstream-6.18"
arch = "x86"
kernel = "6.18"
proposals = []

[[memslots]]
slot = 0
gpa = 0x100000
size = "2M"

[[steps]]
access = "read"
gpa = 0x100000
expect = { exit_reason = "none" }
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plugins_json_lists_the_kernels_and_proposals(capsys) -> None:
    code, out, _ = run(capsys, "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["x86"]["kernels"] == ["6.12", "6.18", "7.3"] and rows["x86"]["default_kernel"] == "7.3"
    assert "riscv-gmem" in rows["riscv"]["proposals"] and "riscv-gmem" not in rows["x86"]["proposals"]


def test_decode_says_what_it_modelled(capsys) -> None:
    code, out, _ = run(capsys, "decode", "x86", "exit_qualification=0x181", "gpa=0x1000", "--kernel", "6.12", "--upstream")
    assert code == 0 and "modelled: kernel 6.12, upstream (no proposals)" in out
    code, out, _ = run(capsys, "decode", "x86", "exit_qualification=0x181", "gpa=0x1000", "--json", "--proposals", "userfault")
    obj = json.loads(out)
    assert (obj["kernel"], obj["proposals"]) == ("7.3", ["userfault"])
    # the PFERR word is the kernel's: 6.12 maps a read to PFERR_USER (arch/x86/kvm/vmx/common.h)
    code, out, _ = run(capsys, "decode", "x86", "exit_qualification=0x181", "gpa=0x1000", "--json", "--kernel", "6.12")
    assert json.loads(out)["user"] is True


def test_bad_choices_are_named(capsys) -> None:
    code, _, err = run(capsys, "decode", "x86", "exit_qualification=0x181", "--proposals", "userfault,bogus")
    assert code != 0 and "unknown proposal 'bogus'" in err
    with pytest.raises(SystemExit):
        main(["decode", "x86", "exit_qualification=0x181", "--kernel", "6.17"])
    assert "6.12" in capsys.readouterr().err


def test_scenario_kernel_and_proposals(tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    code, out, err = run(capsys, "run", str(path))
    assert code == 0, err
    assert "kernel: 6.18; proposals: none (upstream mode)" in out
    code, out, _ = run(capsys, "run", str(path), "--kernel", "7.3", "--proposals", "syndrome", "--json")
    arches = json.loads(out)["arches"]
    assert (arches[0]["kernel"], arches[0]["proposals"]) == ("7.3", ["syndrome"])  # the command line wins


@pytest.mark.parametrize(("line", "message"), [
    ('kernel = "6.17"', 'kernel = "6.17": expected one of'),
    ('proposals = ["nope"]', "'nope' is none"),
    ('proposals = "userfault"', "a list of proposal names"),
])
def test_scenario_refusals(tmp_path: Path, capsys, line, message) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f'name = "x"\n{line}\n')
    code, _, err = run(capsys, "run", str(path))
    assert code != 0 and message in err, err


def test_replay_says_what_it_modelled(tmp_path: Path, capsys) -> None:
    trace = Path(__file__).parent / "traces" / "arm64-ftrace.txt"
    code, out, _ = run(capsys, "replay", str(trace), "--arch", "arm64", "--kernel", "6.12", "--upstream")
    assert code == 0 and "modelled on arm64: kernel 6.12, proposals: none (upstream mode)" in out
    assert kvmcore.KERNEL_VERSIONS[0] == "6.12"
