"""``kvmcore replay`` on small traces in the kernel's exact formats (ftrace, trace-cmd, perf).

The trace lines follow the TP_printk formats of the project reference, section 6. Expected
counts are worked out by hand from the lines (comments give the bits).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from clitools import kvmcore_cli, needs

ROOT = Path(__file__).resolve().parents[2]
TRACES = Path(__file__).resolve().parent / "traces"

pytestmark = needs()


def replay(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return kvmcore_cli("replay", *args, stdin=stdin)


def summary(*args: str) -> dict:
    proc = replay(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def faults(obj: dict) -> dict[tuple[str, str, bool], int]:
    return {(f["fault_kind"], f["access"], f["private"]): f["count"] for f in obj["faults"]}


def test_arm64_ftrace() -> None:
    obj = summary(str(TRACES / "arm64-ftrace.txt"))
    assert obj["arch_mode"] == "auto (arm64)"
    assert obj["events"] == 9 and obj["header_lines"] == 12 and obj["skipped"] == 0
    assert obj["events_by_arch"]["arm64"]["guest_fault"] == 4
    # hsr 0x93810046: EC 0x24 DABT_LOW, ISV, SAS=2, SRT=1, WnR=1 (bit 6), DFSC 0x06 translation L2
    # hsr 0x93c08047: DABT_LOW, WnR=1, DFSC 0x07 translation L3
    # hsr 0x9200004f: DABT_LOW, ISV=0, WnR=1, DFSC 0x0f permission L3
    # hsr 0x82000007: EC 0x20 IABT_LOW (an instruction fetch), IFSC 0x07 translation L3
    assert faults(obj) == {("translation", "write", False): 2, ("permission", "write", False): 1,
                           ("translation", "exec", False): 1}
    hot = obj["hot_gfns"]["arm64"]
    assert hot["exact"] is True
    assert hot["top"][0] == {"gfn": 0x40A31, "gpa": 0x40A31000, "count": 2, "max_overcount": 0}
    assert obj["userspace_exits"] == {"KVM_EXIT_MMIO (6)": 1}


def test_x86_trace_cmd() -> None:
    obj = summary(str(TRACES / "x86-trace-cmd.txt"))
    assert obj["arch_mode"] == "auto (x86)"
    # EPT exit qualifications: 0x182 = data write (bit 1) + GVA bits 7/8; 0x181 = data read (bit 0);
    # 0x184 = instruction fetch (bit 2)
    counts = {(k, a): n for (k, a, _), n in faults(obj).items()}
    assert sum(counts.values()) == 4
    assert sum(n for (_, a), n in counts.items() if a == "write") == 2
    assert sum(n for (_, a), n in counts.items() if a == "read") == 1
    assert sum(n for (_, a), n in counts.items() if a == "exec") == 1
    assert obj["hot_gfns"]["x86"]["top"][0]["gfn"] == 0x12345 and obj["hot_gfns"]["x86"]["top"][0]["count"] == 3
    assert obj["other_events"]["sched_switch"] == 1
    assert obj["userspace_exits"]["error -EFAULT (14)"] == 1


def test_riscv_perf_script() -> None:
    obj = summary(str(TRACES / "riscv-perf.txt"))
    assert obj["arch_mode"] == "auto (riscv)"  # kvm_exit's SEPC/SCAUSE format picks riscv
    # SCAUSE 0x17 store guest-page fault, GPA = HTVAL << 2 = 0x10000000;
    # SCAUSE 0x15 load, HTVAL 0x20000400 -> 0x80001000; SCAUSE 0x14 instruction, 0x80002000;
    # SCAUSE 0xa is an environment call from VS-mode: an exit, not a fault
    accesses = {a: n for (_, a, _), n in faults(obj).items()}
    assert accesses == {"write": 1, "read": 1, "exec": 1}
    gfns = {row["gfn"] for row in obj["hot_gfns"]["riscv"]["top"]}
    assert gfns == {0x10000, 0x80001, 0x80002}
    assert obj["events_by_arch"]["riscv"]["entry"] == 2  # "PC: 0x016..." (the upstream typo) is riscv's


def test_corrupt_lines_are_counted_and_shown() -> None:
    path = str(TRACES / "corrupt-ftrace.txt")
    proc = replay(path)
    assert proc.returncode == 0
    out = proc.stdout
    assert "skipped lines: 3 (2 malformed KVM event lines)" in out
    assert "line 4: malformed kvm_guest_fault" in out and "line 5: not a trace event line" in out
    assert "line 6: malformed kvm_guest_fault" in out
    assert "lost 17 events" in out
    obj = summary(path)
    assert obj["events"] == 2 and obj["malformed"] == 2 and obj["lost_events"] == 17
    strict = replay(path, "--strict")
    assert strict.returncode == 1 and "--strict" in strict.stderr and "line 4" in strict.stderr


def test_stdin_and_fixed_arch() -> None:
    text = (TRACES / "arm64-ftrace.txt").read_text()
    proc = replay("-", "--arch", "arm64", "--json", stdin=text)
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["source"] == "<stdin>" and obj["events_by_arch"]["arm64"]["guest_fault"] == 4
    # the same lines read as x86: none of its events, nothing decoded, nothing dropped silently
    obj = summary(str(TRACES / "arm64-ftrace.txt"), "--arch", "x86")
    assert obj["faults"] == [] and obj["other_events"]["kvm_guest_fault"] == 4


def test_heavy_hitters_say_when_approximate() -> None:
    obj = summary(str(TRACES / "arm64-ftrace.txt"), "--memory", "320")
    assert obj["hot_gfns"]["arm64"]["exact"] is False
    out = replay(str(TRACES / "arm64-ftrace.txt"), "--memory", "320").stdout
    assert "approximate" in out


def test_memslots_layout_gives_per_slot_counts(tmp_path: Path) -> None:
    layout = tmp_path / "layout.toml"
    layout.write_text('[[memslots]]\nslot = 3\ngpa = 0x40000000\nsize = "16M"\n')
    obj = summary(str(TRACES / "arm64-ftrace.txt"), "--memslots", str(layout))
    # ipa 0x40a31000 (x2) and 0x40b00000 are in slot 3; 0x9000000 (the UART) in none
    assert obj["slots"]["arm64"] == {"slot 3": 3, "no slot": 1}


def test_bad_input() -> None:
    proc = replay(str(TRACES / "does-not-exist.txt"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
    proc = replay(str(TRACES / "arm64-ftrace.txt"), "--arch", "mips")
    assert proc.returncode == 1 and "unknown arch 'mips'" in proc.stderr
