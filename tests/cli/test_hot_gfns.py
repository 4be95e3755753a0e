"""``kvmcore replay``'s hottest gfns against exact counts computed here, from the generated lines.

Traces are arm64 ``kvm_guest_fault`` lines (arch/arm64/kvm/trace_arm.h: "ipa %#llx, hsr %#08lx,
hxfar %#08lx, pc %#016lx") with hsr 0x92000007: EC 0x24 (DABT_LOW), IL, FSC 0x07 (translation
fault, level 3), a read; with the 4K granule gfn = ipa >> 12 (arch/arm64 kvm_handle_guest_abort()).
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kvmcore.cli import replay
from kvmcore.cli.hotgfns import HotGfns, SpaceSaving, parse_size

BASE_GFN = 0x40000  # ipa 0x4000_0000


def write_trace(path: Path, gfns: list[int]) -> Counter[int]:
    with path.open("w") as f:
        for i, gfn in enumerate(gfns):
            ipa = gfn << 12
            f.write(f" CPU 0/KVM-812    [000] ..... {88.1 + i * 1e-6:.6f}: kvm_guest_fault: "
                    f"ipa {ipa:#x}, hsr 0x92000007, hxfar {ipa:#x}, pc 0xffffc0c8a1b20000\n")
    return Counter(gfns)


def check_sound(hot: dict, truth: Counter[int]) -> None:
    """Every row's true count lies in its range, the rows are the true hottest, and every other
    gfn is within ``others_at_most``."""
    rows = hot["top"]
    listed = {r["gfn"] for r in rows}
    for r in rows:
        assert r["count"] - r["max_overcount"] <= truth[r["gfn"]] <= r["count"], (r, truth[r["gfn"]])
    unlisted_max = max((c for g, c in truth.items() if g not in listed), default=0)
    if not hot["exact"]:
        assert unlisted_max <= hot["others_at_most"], (unlisted_max, hot["others_at_most"])
    assert all(truth[g] >= unlisted_max for g in listed)  # nothing hotter was left out


def test_uniform_65536_gfns_exact_within_default_budget(tmp_path: Path) -> None:
    gfns = [BASE_GFN + i for i in range(65536)] * 2
    random.Random(5).shuffle(gfns)
    truth = write_trace(tmp_path / "t", gfns)
    obj = replay.replay(str(tmp_path / "t"), arch="arm64", progress=False).as_dict()
    hot = obj["hot_gfns"]["arm64"]
    assert hot["exact"] is True and hot["distinct"] == 65536 and hot["hits"] == 131072
    assert len(hot["top"]) == 10 and all(r["count"] == 2 and r["max_overcount"] == 0 for r in hot["top"])
    check_sound(hot, truth)


def test_uniform_over_budget_claims_nothing_false(tmp_path: Path) -> None:
    gfns = [BASE_GFN + i for i in range(65536)] * 2
    random.Random(6).shuffle(gfns)
    truth = write_trace(tmp_path / "t", gfns)
    summary = replay.replay(str(tmp_path / "t"), arch="arm64", memory=256 << 10, progress=False)
    hot = summary.as_dict()["hot_gfns"]["arm64"]
    assert hot["exact"] is False and hot["counters"] == (256 << 10) // 320
    check_sound(hot, truth)
    # every gfn was hit twice: no sketch of fewer counters than gfns can single one out
    assert hot["top"] == []
    assert hot["others_at_most"] <= 131072 // hot["counters"] + 1
    assert "no gfn stands out" in summary.render()


def test_skewed_over_budget_finds_the_true_hottest(tmp_path: Path) -> None:
    hot_gfns = {BASE_GFN + 7 * i: 3000 - 100 * i for i in range(12)}  # 3000, 2900, ... 1900
    gfns = [g for g, n in hot_gfns.items() for _ in range(n)]
    gfns += [BASE_GFN + 100_000 + i for i in range(60_000)]  # 60,000 gfns hit once
    random.Random(7).shuffle(gfns)
    truth = write_trace(tmp_path / "t", gfns)
    for memory in (64 << 20, 512 << 10):
        hot = replay.replay(str(tmp_path / "t"), arch="arm64", memory=memory, progress=False).as_dict()["hot_gfns"]["arm64"]
        check_sound(hot, truth)
        assert hot["exact"] is (memory == 64 << 20)
        # the 10 hottest, in order, whichever way they were counted
        assert [r["gfn"] for r in hot["top"]] == sorted(hot_gfns, key=lambda g: -hot_gfns[g])[:10]
        if hot["exact"]:
            assert [r["count"] for r in hot["top"]] == [3000 - 100 * i for i in range(10)]


def test_memory_option_on_the_command_line(tmp_path: Path) -> None:
    write_trace(tmp_path / "t", [BASE_GFN + i for i in range(5000)])
    proc = subprocess.run([sys.executable, "-m", "kvmcore.cli", "replay", str(tmp_path / "t"), "--arch", "arm64",
                           "--memory", "64K", "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "approximate: more distinct gfns than 64 KiB holds" in proc.stdout and "no gfn stands out" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "kvmcore.cli", "replay", str(tmp_path / "t"), "--memory", "lots"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "memory size 'lots'" in bad.stderr and "Traceback" not in bad.stderr


def test_parse_size() -> None:
    assert parse_size("64M") == parse_size("64MiB") == 64 << 20
    assert parse_size("1g") == 1 << 30 and parse_size("4096") == 4096 and parse_size("2K") == 2048
    for bad in ("", "M", "-1K", "0", "12X"):
        with pytest.raises(ValueError, match="memory size"):
            parse_size(bad)


def test_merge_of_parts_is_sound() -> None:
    """Counting two halves of a stream and merging keeps every bound (what parallel replay does)."""
    rng = random.Random(8)
    stream = [rng.choice(range(40)) if rng.random() < 0.5 else 1000 + rng.randrange(5000) for _ in range(40_000)]
    truth = Counter(stream)
    for budget in (64 << 20, 64 << 10):
        halves = []
        for part in (stream[:20_000], stream[20_000:]):
            h = HotGfns(budget)
            for g in part:
                c = h.counts.get(g)
                if c is None:
                    h.add_new(g)
                else:
                    h.counts[g] = c + 1
            halves.append(h)
        halves[0].merge(halves[1])
        rep = halves[0].report(10, len(stream))
        listed = {g for g, _, _ in rep.rows}
        for g, lo, hi in rep.rows:
            assert lo <= truth[g] <= hi
        if rep.others_at_most is not None:
            assert max(c for g, c in truth.items() if g not in listed) <= rep.others_at_most
        if budget == 64 << 20:
            assert rep.exact and [(g, c) for g, c, _ in rep.rows] == [(g, c) for g, c in
                                                                       sorted(truth.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]


def test_space_saving_tracks_its_floor() -> None:
    sketch = SpaceSaving(2)
    for key in [1, 1, 1, 2, 3, 1, 3, 3]:
        if key in sketch.counts:
            sketch.counts[key] += 1
        else:
            sketch.add_new(key)
    # 1 is the true heavy hitter (4 of 8); 3 replaced 2 (count 1 + 1, error 1), then grew to 4;
    # 2 (count 1) was evicted for 3: any key not tracked was seen at most once
    assert sketch.top(2) == [(1, 4, 0), (3, 4, 1)] and sketch.min_count() == 1 and not sketch.exact
