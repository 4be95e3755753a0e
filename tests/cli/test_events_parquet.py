"""``kvmcore replay --events OUT.parquet`` and the DuckDB path: query the Parquet, and decode its
raw registers through ``decode_fault_batch`` over Arrow batches.

The trace is arm64 ``kvm_guest_fault`` lines (arch/arm64/kvm/trace_arm.h: "ipa %#llx, hsr %#08lx,
hxfar %#08lx, pc %#016lx"). Hand-decoded syndromes: 0x92000007 is EC 0x24 (DABT_LOW), IL, FSC
0x07 (translation, level 3), WnR 0: a read; 0x92000047 the same with WnR (bit 6): a write;
0x82000007 is EC 0x20 (IABT_LOW), an instruction fetch; 0x5a000000 is EC 0x16 (HVC64), not an
abort, which decode_fault refuses. gfn = ipa >> 12 (4K granule).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import kvmcore
from kvmcore.cli import replay

pa = pytest.importorskip("pyarrow", reason="--events needs pyarrow (kvmcore[arrow])")
pq = pytest.importorskip("pyarrow.parquet")
np = pytest.importorskip("numpy")

HSR = {0x92000007: "read", 0x92000047: "write", 0x82000007: "exec"}


def trace(path: Path, n: int) -> list[tuple[int, int, int]]:
    """``n`` fault lines between header and other-event lines; ``(line number, ipa, hsr)`` of each."""
    lines = ["# tracer: nop\n", "#\n"]
    faults = []
    hsrs = [*HSR, 0x5A000000]
    for i in range(n):
        ipa = (0x40000 + (i * 7919) % 5000) << 12
        hsr = hsrs[i % 7 % 4]
        lines.append(f"       CPU {i % 3}/KVM-812     [00{i % 2}] .....  {90 + i * 1e-6:.6f}: kvm_entry: PC: 0xffffc0c8a1b2c3d4\n")
        lines.append(f"       CPU {i % 3}/KVM-812     [00{i % 2}] .....  {90 + i * 1e-6:.6f}: kvm_guest_fault: "
                     f"ipa {ipa:#x}, hsr {hsr:#x}, hxfar {ipa | 0x18:#x}, pc 0xffffc0c8a1b2c3d4\n")
        faults.append((len(lines), ipa, hsr))
    path.write_text("".join(lines))
    return faults


def test_events_parquet_rows(tmp_path: Path) -> None:
    faults = trace(tmp_path / "t", 300)
    out = tmp_path / "events.parquet"
    summary = replay.replay(str(tmp_path / "t"), arch="arm64", events=str(out), progress=False)
    table = pq.read_table(out)
    assert table.num_rows == len(faults) == summary.by_arch_kind["arm64"]["guest_fault"]
    rows = table.to_pylist()
    for i, (row, (lineno, ipa, hsr)) in enumerate(zip(rows, faults, strict=True)):
        assert (row["arch"], row["line"], row["event"]) == ("arm64", lineno, "kvm_guest_fault")
        assert (row["esr"], row["far"], row["hpfar"]) == (hsr, ipa | 0x18, ipa >> 8)  # HPFAR.FIPA = IPA[55:12] at [47:4]
        assert row["vcpu"] == i % 3 and row["cpu"] == i % 2 and row["timestamp"] == pytest.approx(90 + i * 1e-6)
        if hsr in HSR:
            assert row["decoded"] and row["gfn"] == ipa >> 12 and row["access"] == HSR[hsr]
            assert row["fault_kind"] == "translation" and row["error"] is None
            assert f'"ec": {hsr >> 26}' in row["fields"]
        else:
            assert not row["decoded"] and row["gfn"] is None and "HVC64" in row["error"]
    # the same counts as the summary
    by_access = Counter(r["access"] for r in rows if r["decoded"])
    assert by_access == Counter({acc: n for (_, _, acc, _), n in summary.faults.items()})
    assert summary.undecodable == sum(not r["decoded"] for r in rows)


def test_events_of_lines_pasted_without_their_prefix(tmp_path: Path) -> None:
    """A bug report's bare event text (no thread, CPU or timestamp) is a row with those null."""
    path = tmp_path / "t"
    path.write_text("kvm_guest_fault: ipa 0x40001000, hsr 0x92000047, hxfar 0x40001008, pc 0xffff800010001234\n")
    out = tmp_path / "events.parquet"
    replay.replay(str(path), arch="arm64", events=str(out), progress=False)
    (row,) = pq.read_table(out).to_pylist()
    assert (row["line"], row["timestamp"], row["cpu"], row["vcpu"]) == (1, None, None, None)
    assert row["decoded"] and row["gfn"] == 0x40001 and row["access"] == "write"  # WnR, bit 6 of 0x92000047


def test_events_need_a_writable_path(tmp_path: Path) -> None:
    trace(tmp_path / "t", 3)
    proc = subprocess.run([sys.executable, "-m", "kvmcore.cli", "replay", str(tmp_path / "t"),
                           "--events", str(tmp_path / "no" / "such" / "dir" / "e.parquet")], capture_output=True, text=True)
    assert proc.returncode == 1 and "--events" in proc.stderr and "Traceback" not in proc.stderr


def test_duckdb_queries_and_batch_decodes_the_parquet(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb", reason="DuckDB path (kvmcore[arrow] test extra)")
    faults = trace(tmp_path / "t", 2000)
    out = tmp_path / "events.parquet"
    replay.replay(str(tmp_path / "t"), arch="arm64", events=str(out), progress=False)
    con = duckdb.connect()
    got = dict(con.execute("SELECT access, count(*) FROM read_parquet(?) WHERE decoded GROUP BY access", [str(out)]).fetchall())
    expected = Counter(HSR[h] for _, _, h in faults if h in HSR)
    assert got == dict(expected)
    level = con.execute("SELECT DISTINCT CAST(json_extract(fields, '$.fault_level') AS INTEGER) FROM read_parquet(?) "
                        "WHERE decoded", [str(out)]).fetchall()
    assert level == [(3,)]
    # decode the raw registers again, vectorised, over Arrow record batches from DuckDB
    vm = kvmcore.VM("arm64")
    vcpu = vm.create_vcpu()
    path = str(out).replace("'", "''")
    rel = con.sql(f"SELECT esr, far, hpfar, decoded, gfn, write, exec, fault_kind FROM read_parquet('{path}') ORDER BY line")
    reader = rel.to_arrow_reader(512) if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader(512)
    rows = 0
    for batch in reader:
        cols = {name: batch.column(name).to_numpy() for name in ("esr", "far", "hpfar")}
        dec = vm.arch.decode_fault_batch(vcpu, cols)
        decoded = batch.column("decoded").to_numpy(zero_copy_only=False)
        assert dec["valid"].tolist() == decoded.tolist()
        ok = decoded.astype(bool)
        assert dec["gfn"][ok].tolist() == batch.column("gfn").to_numpy(zero_copy_only=False)[ok].astype(np.uint64).tolist()
        for name in ("write", "exec", "fault_kind"):
            assert dec[name][ok].tolist() == np.asarray(batch.column(name).to_pylist(), dtype=object)[ok].tolist()
        rows += batch.num_rows
    assert rows == len(faults)
