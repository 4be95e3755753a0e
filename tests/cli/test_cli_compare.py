"""``kvmcore compare``: expected values worked out by hand from each design's rules."""

from __future__ import annotations

import json

import pytest

from kvmcore.cli.main import main


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["compare", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_one_postcopy_write_under_every_design_on_arm64(capsys: pytest.CaptureFixture[str]) -> None:
    # The tour's slot 1 (0x4040_0000, 2 MiB) has every userfault bit set. A write to 0x4040_1000:
    # upstream has no KVM_MEM_USERFAULT -> the page maps, KVM_RUN returns 0, no exit.
    # Every other design: -EFAULT, exit 39, gpa = 0x40401 << 12, size 0x1000, USERFAULT 0x10;
    # rwx adds WRITE (bit 1): 0x12; kvmcore adds arm64 syndrome words: sanitised ESR of a DABT_LOW
    # write translation fault at level 3 = EC 0x24<<26 | IL | WnR | 0x07 = 0x9200_0047, then
    # IPA | FAR[11:0] = 0x4040_1000; arm64-esr puts the same ESR in memory_fault.esr.
    out = run_json(capsys, "--access", "write@0x40401000", "--arch", "arm64")
    (step,) = out["steps"]
    cells = step["arches"]["arm64"]["designs"]
    assert (cells["upstream"]["ret"], cells["upstream"]["exit"], cells["upstream"]["flags"]) == (0, None, None)
    for name in ("v3", "kvmcore", "compromise", "arm64-esr", "rwx", "annotate-efault"):
        cell = cells[name]
        assert (cell["ret"], cell["exit"], cell["gpa"], cell["size"]) == (-14, 39, 0x4040_1000, 0x1000), name
        assert cell["flags"] == (0x12 if name == "rwx" else 0x10), name
    assert cells["kvmcore"]["syndrome"] == {"arch": "ARM64", "words": [0x9200_0047, 0x4040_1000, 0, 0]}
    assert cells["arm64-esr"]["syndrome"] == {"esr": 0x9200_0047}
    assert cells["v3"]["syndrome"] is None and cells["compromise"]["syndrome"] is None
    assert step["arches"]["arm64"]["differs"] == ["outcome", "ret", "exit", "flags", "gpa", "size", "syndrome"]


def test_arm64_esr_is_refused_on_x86_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--access", "read@0x40401000", "--arch", "x86", "--designs", "v3,arm64-esr")
    cells = out["steps"][0]["arches"]["x86"]["designs"]
    assert cells["arm64-esr"] == {"refused": "arm64-esr applies to arm64 only: ESR_EL2 exists only on arm64"}
    # a read: USERFAULT only (0x10) under v3
    assert cells["v3"]["flags"] == 0x10


def test_two_designs_that_differ_are_both_marked(capsys: pytest.CaptureFixture[str]) -> None:
    # upstream (mapped, ret 0, no exit) against v3 (userfault exit): neither is "most designs", so
    # every differing cell of both rows is marked; the syndrome column (none in both) is not.
    assert main(["compare", "--access", "write@0x40401000", "--arch", "x86", "--designs", "upstream,v3",
                 "--kernel", "6.12"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("    ")]
    assert rows[-2][:3] == ["upstream", "mapped", "*"] and rows[-2][-1] == "-"
    assert rows[-1][:3] == ["v3", "userfault", "*"] and rows[-1][-1] == "-"


def test_text_marks_the_odd_cells(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--access", "write@0x40401000", "--arch", "x86", "--designs", "v3,rwx,compromise"]) == 0
    text = capsys.readouterr().out
    assert "0x12 WRITE|USERFAULT *" in text  # rwx is the one that differs
    assert "0x10 USERFAULT  " in text


@pytest.mark.parametrize(
    "args,message",
    [
        (["--designs", "v4"], "--designs 'v4': unknown 'v4' (known: upstream, v3, kvmcore, compromise, arm64-esr, rwx, annotate-efault, or all)"),
        (["--access", "poke@0x1000"], "--access 'poke@0x1000': expected KIND@GPA[:private]"),
        (["--arch", "mips"], "--arch: unknown 'mips'"),
        (["--kernel", "5.4"], "--kernel='5.4': kvmcore models the kernels 6.12, 6.18, 7.3"),
    ],
)
def test_bad_input_is_named(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["compare", *args]) == 1
    assert message in capsys.readouterr().err


def test_text_fits_a_mail(capsys: pytest.CaptureFixture[str]) -> None:
    """Prose lines wrap at 100 columns; a cell gives the errno's and exit's names (numbers are in
    --json) and the syndrome words bare: -14 is EFAULT, 39 KVM_EXIT_MEMORY_FAULT (uapi/linux/kvm.h)."""
    assert main(["compare", "--access", "write@0x40401000", "--arch", "arm64"]) == 0
    text = capsys.readouterr().out
    prose = text.split("\n\n")[0].splitlines()  # the designs and what each left out
    assert len(prose) > 8 and all(len(line) <= 100 for line in prose)
    rows = [line for line in text.splitlines() if line.startswith("    ")]
    v3 = next(r for r in rows if r.split()[0] == "v3").split()
    assert v3[1:4] == ["userfault", "-EFAULT", "MEMORY_FAULT"]
    # the kvmcore design's arm64 words: ESR 0x92000047, IPA | FAR[11:0], two zero words
    assert "ARM64 0x92000047 0x40401000 0 0 *" in text
