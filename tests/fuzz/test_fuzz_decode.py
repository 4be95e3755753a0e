"""Fuzzing ``kvmcore decode``: random arch names, register and setting assignments.

Properties: exit status 0, 1 or 2 and no traceback (``fuzzcli.check_common``); with ``--json``
and status 0 or 1, stdout is exactly one JSON object, with an ``error`` member exactly when
the status is 1.
"""

from __future__ import annotations

import json

from fuzzcli import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvmcore

ARCHES = kvmcore.installed_arches()
REGISTERS = sorted({r for a in ARCHES for r in (*kvmcore.load_arch(a).info.registers, *kvmcore.load_arch(a).info.extra_keys)})
SETTINGS = sorted({s for a in ARCHES for s in kvmcore.load_arch(a).info.settings})

#: Register values as typed: numbers in every base and size, near-misses, junk.
NUMBERS = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.integers(0, (1 << 66)).map(hex),
    st.integers(0, 1 << 64).map(bin),
    st.sampled_from(["0x", "0x-1", "0xZZZ", "1e3", "1.5", "nan", "-0", "0_1", "++1", " 0x10 ", "０", "0x" + "f" * 400,
                     "vmx", "svm", "true", "16K", "4K", "64K", "", "\x00", "\x1b[31m1", "9" * 5000]),
    st.text(max_size=30),
)
NAMES = st.one_of(st.sampled_from(REGISTERS + SETTINGS), st.text(min_size=0, max_size=12))
ASSIGNMENTS = st.lists(st.tuples(NAMES, st.sampled_from(["=", "", "==", " = "]), NUMBERS).map("".join), max_size=6)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arch=st.one_of(st.sampled_from(ARCHES), st.sampled_from(["mips", "ARM64", "x86_64", "", "-", "--json"]), st.text(max_size=10)),
    registers=ASSIGNMENTS,
    sets=ASSIGNMENTS,
    as_json=st.booleans(),
)
def test_decode_never_fails_badly(arch: str, registers: list[str], sets: list[str], as_json: bool) -> None:
    argv = ["decode", arch, *registers]
    for item in sets:
        argv += ["--set", item]
    if as_json:
        argv.append("--json")
    run = run_cli(argv)
    if as_json and run.status in (0, 1) and "--" not in arch and not any(a.startswith("-") for a in registers):
        obj = json.loads(run.out)
        assert isinstance(obj, dict)
        assert ("error" in obj) == (run.status == 1), (argv, obj)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=st.sampled_from(ARCHES), data=st.data())
def test_decode_registers_of_each_arch(arch: str, data: st.DataObject) -> None:
    """Every register of the arch, each with a random 0..2**64 value or a junk one."""
    info = kvmcore.load_arch(arch).info
    values = st.one_of(st.integers(0, (1 << 64) - 1).map(hex), NUMBERS)
    regs = [f"{name}={data.draw(values)}" for name in info.registers if data.draw(st.booleans()) or name == info.registers[0]]
    run = run_cli(["decode", arch, *regs, "--json"])
    if run.status in (0, 1):
        obj = json.loads(run.out)
        assert ("error" in obj) == (run.status == 1), (regs, obj)
