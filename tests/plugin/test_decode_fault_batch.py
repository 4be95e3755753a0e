"""``decode_fault_batch``: every row of random batches against the scalar ``decode_fault`` (the
oracle), per arch. Rows are encoded faults (``encode_fault``), some with a register replaced by
an arbitrary 64-bit value, so that both decodable and refused rows occur."""

from __future__ import annotations

from typing import Any

import pytest

import kvmcore

np = pytest.importorskip("numpy", reason="decode_fault_batch needs numpy (kvmcore[arrow])")
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

#: (arch, VM settings, the columns of a batch with their default when encode_fault omits one)
CASES = {
    "arm64": ("arm64", {}, {"esr": 0, "far": 0, "hpfar": 0}),
    "x86-vmx": ("x86", {}, {"exit_qualification": 0, "gpa": 0}),
    "x86-svm": ("x86", {"vendor": "svm"}, {"error_code": 0, "gpa": 0}),
    "riscv": ("riscv", {}, {"scause": 0, "htval": 0, "stval": 0, "htinst": 0}),
}
U64 = st.integers(0, 2**64 - 1)


def vcpu_for(case: str) -> kvmcore.VCPU:
    name, settings, _ = CASES[case]
    if name not in kvmcore.installed_arches():
        pytest.skip(f"arch {name} not installed")
    vm = kvmcore.VM(name, **settings)
    vm.set_user_memory_region(0, 1 << 30, 1 << 24)
    return vm.create_vcpu()


@st.composite
def rows(draw: Any, vcpu: kvmcore.VCPU, defaults: dict[str, int]) -> dict[str, int]:
    arch = vcpu.vm.arch
    access = kvmcore.Access(
        draw(st.sampled_from([1 << 30, (1 << 30) + 0x5008, 0x9000_0000, 0x7_0000_1234, 0])) + draw(st.integers(0, 64)) * 4096,
        draw(st.sampled_from(kvmcore.ACCESS_KINDS)),
        draw(st.sampled_from(arch.info.causes)),
    )
    try:
        raw = dict(arch.encode_fault(vcpu, access))
    except (ValueError, NotImplementedError):
        raw = {}
    row = {k: int(raw.get(k, v)) for k, v in defaults.items()}
    if draw(st.integers(0, 3)) == 0:  # one register replaced by anything
        row[draw(st.sampled_from(sorted(defaults)))] = draw(U64)
    return row


@pytest.mark.parametrize("case", sorted(CASES))
def test_hook_decode_fault_batch_matches_the_scalar_decoder(case: str) -> None:
    vcpu = vcpu_for(case)
    defaults = CASES[case][2]

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(st.lists(rows(vcpu, defaults), min_size=1, max_size=30))
    def check(batch: list[dict[str, int]]) -> None:
        columns = {k: np.array([r[k] for r in batch], dtype=np.uint64) for k in defaults}
        out = vcpu.vm.arch.decode_fault_batch(vcpu, columns)
        assert {"valid", "gfn", "exec", "write", "is_private", "fault_kind"} <= out.keys()
        for i, raw in enumerate(batch):
            try:
                fault = vcpu.vm.arch.decode_fault(vcpu, raw)
            except kvmcore.DecodeError:
                assert not out["valid"][i], (raw, {k: v[i] for k, v in out.items()})
                continue
            assert out["valid"][i], raw
            for key, values in out.items():
                if key != "valid":
                    assert values[i] == getattr(fault, key), (key, raw, values[i], getattr(fault, key))

    check()


def test_hook_decode_fault_batch_inputs() -> None:
    vcpu = vcpu_for("arm64")
    arch = vcpu.vm.arch
    esr, hpfar = 0x92000007, 0x40_0050  # DABT_LOW, translation L3 read; ipa 0x4000_5000
    out = arch.decode_fault_batch(vcpu, {"esr": [esr, esr], "hpfar": np.array([hpfar, -1], dtype=np.int64)})
    assert out["valid"].tolist() == [True, False]  # -1 is not a register value
    assert out["gfn"].tolist() == [0x40005, 0] and out["fault_kind"].tolist() == ["translation", ""]
    with pytest.raises(kvmcore.DecodeError, match="different lengths"):
        arch.decode_fault_batch(vcpu, {"esr": [esr], "hpfar": [hpfar, hpfar]})
    with pytest.raises(kvmcore.DecodeError, match="expected integers"):
        arch.decode_fault_batch(vcpu, {"esr": ["x"], "hpfar": [hpfar]})
    # a register the arch does not take: the scalar decoder refuses every row
    out = arch.decode_fault_batch(vcpu, {"esr": [esr], "hpfar": [hpfar], "rip": [1]})
    assert out["valid"].tolist() == [False]
    if "x86" in kvmcore.installed_arches():
        tdx = kvmcore.VM("x86", vm_type="tdx").create_vcpu()
        with pytest.raises(NotImplementedError, match="cannot decode this VM's faults in batches"):
            tdx.vm.arch.decode_fault_batch(tdx, {"exit_qualification": [0x181], "gpa": [1 << 30]})
