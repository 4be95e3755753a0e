"""The Dask recipe in docs/scale-out.md runs as written, on a local 2-process cluster, and finds
the hot gfns and writes of a trace whose counts are known by construction.

Skipped where Dask is not installed (CI does not install it: see docs/scale-out.md)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvmcore.cli import replay

pytest.importorskip("pyarrow", reason="--events needs pyarrow (kvmcore[arrow])")
pytest.importorskip("dask.dataframe", reason="the Dask recipe needs dask[dataframe] (not in CI: docs/scale-out.md)")
pytest.importorskip("dask.distributed", reason="the Dask recipe needs distributed (not in CI: docs/scale-out.md)")

ROOT = Path(__file__).resolve().parents[2]


def test_dask_recipe_from_the_docs(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "scale-out.md").read_text()
    block = re.search(r"run by tests/cli/test_scale_out_recipe.py.*?```python\n(.*?)```", text, re.S)
    assert block, "docs/scale-out.md lost the tested Dask block"
    # 0x92000007: DABT_LOW translation L3 read; 0x92000047 the same with WnR: a write (gfn = ipa >> 12)
    lines = []
    for i in range(3000):
        gfn = 0x40000 + (7 if i % 3 == 0 else i % 500)  # gfn 0x40007 is hit most
        hsr = 0x92000047 if i % 4 == 0 else 0x92000007
        lines.append(f" CPU 0/KVM-1 [000] ..... {1 + i * 1e-6:.6f}: kvm_guest_fault: ipa {gfn << 12:#x}, "
                     f"hsr {hsr:#x}, hxfar {gfn << 12:#x}, pc 0xffff000000001000\n")
    (tmp_path / "t").write_text("".join(lines))
    events = tmp_path / "events.parquet"
    replay.replay(str(tmp_path / "t"), arch="arm64", events=str(events), progress=False)
    script = tmp_path / "recipe.py"
    script.write_text(f"EVENTS = {str(events)!r}\n" + block[1])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hot, writes = proc.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert int(writes) == 750  # every 4th of 3000 lines
    top = ast.literal_eval(hot)  # {gfn: count}
    assert next(iter(top)) == 0x40007 and top[0x40007] == 1000 + sum(1 for i in range(3000) if i % 3 and i % 500 == 7)
