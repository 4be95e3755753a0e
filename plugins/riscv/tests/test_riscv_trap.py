"""Guest-page-fault decoding: cause names (asm/csr.h, priv spec) and hand-worked traps."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_riscv.trap import (
    EXCEPTION_NAMES,
    INTERRUPT_NAMES,
    GuestPageFault,
    decode_guest_page_fault,
    scause_name,
)

from kvmcore import DecodeError

IRQ = 1 << 63

# asm/csr.h values, copied by hand (EXC_SOFTWARE_CHECK from the user-space CFI series;
# 11 and 19 have no Linux define).
KERNEL_EXCEPTIONS = {
    0: "EXC_INST_MISALIGNED",
    1: "EXC_INST_ACCESS",
    2: "EXC_INST_ILLEGAL",
    3: "EXC_BREAKPOINT",
    4: "EXC_LOAD_MISALIGNED",
    5: "EXC_LOAD_ACCESS",
    6: "EXC_STORE_MISALIGNED",
    7: "EXC_STORE_ACCESS",
    8: "EXC_SYSCALL",
    9: "EXC_HYPERVISOR_SYSCALL",
    10: "EXC_SUPERVISOR_SYSCALL",
    12: "EXC_INST_PAGE_FAULT",
    13: "EXC_LOAD_PAGE_FAULT",
    15: "EXC_STORE_PAGE_FAULT",
    18: "EXC_SOFTWARE_CHECK",
    20: "EXC_INST_GUEST_PAGE_FAULT",
    21: "EXC_LOAD_GUEST_PAGE_FAULT",
    22: "EXC_VIRTUAL_INST_FAULT",
    23: "EXC_STORE_GUEST_PAGE_FAULT",
}
KERNEL_INTERRUPTS = {
    1: "IRQ_S_SOFT",
    2: "IRQ_VS_SOFT",
    3: "IRQ_M_SOFT",
    5: "IRQ_S_TIMER",
    6: "IRQ_VS_TIMER",
    7: "IRQ_M_TIMER",
    9: "IRQ_S_EXT",
    10: "IRQ_VS_EXT",
    11: "IRQ_M_EXT",
    12: "IRQ_S_GEXT",
    13: "IRQ_PMU_OVF",
}


def test_exception_names_match_kernel():
    for code, name in KERNEL_EXCEPTIONS.items():
        assert EXCEPTION_NAMES[code].name == name
        assert EXCEPTION_NAMES[code].in_kernel
    # Every standard code of the priv spec (1.13) is named; 14, 16, 17 are reserved.
    assert set(EXCEPTION_NAMES) == set(KERNEL_EXCEPTIONS) | {11, 19}
    assert not EXCEPTION_NAMES[11].in_kernel and not EXCEPTION_NAMES[19].in_kernel
    assert EXCEPTION_NAMES[19].name == "EXC_HARDWARE_ERROR"


def test_interrupt_names_match_kernel():
    assert {c: n.name for c, n in INTERRUPT_NAMES.items()} == KERNEL_INTERRUPTS
    assert "Sscofpmf" in INTERRUPT_NAMES[13].meaning


@pytest.mark.parametrize(
    "scause,name",
    [
        (0x15, "EXC_LOAD_GUEST_PAGE_FAULT"),
        (IRQ | 5, "IRQ_S_TIMER"),
        (14, "EXC_RESERVED_14"),
        (24, "EXC_CUSTOM_24"),
        (IRQ | 4, "IRQ_RESERVED_4"),
        (IRQ | 35, "IRQ_PLATFORM_35"),
    ],
)
def test_scause_name(scause, name):
    assert scause_name(scause) == name


# --- Hand-worked guest-page faults --------------------------------------------------------------


def test_reference_trace_example():
    # kvm_exit: SEPC:0xffffffff80a0b1c2, SCAUSE:0x17, STVAL:0xffffffc800000000, HTVAL:0x4000000,
    # HTINST:0xb00023. sb a1,0(a0): 0x00b50023 -> transformed 0x00b00023 (rs2=11, funct3 000).
    # GPA = (0x4000000 << 2) | (0xffffffc800000000 & 3) = 0x10000000 | 0.
    f = decode_guest_page_fault(0x17, 0x4000000, 0xFFFFFFC800000000, 0xB00023)
    assert f.scause_name == "EXC_STORE_GUEST_PAGE_FAULT"
    assert f.access == "store"
    assert f.gpa == 0x10000000 == f.kernel_gpa
    assert f.gfn == 0x10000
    assert f.gva == 0xFFFFFFC800000000
    assert (f.write, f.exec) == (True, False)
    assert (f.htinst_kind, f.insn_length, f.access_size, f.rs2, f.rd) == (
        "transformed",
        4,
        1,
        11,
        None,
    )
    assert f.sign_extend is None and f.addr_offset == 0
    assert f.to_dict() == {
        "scause": 0x17,
        "scause_name": "EXC_STORE_GUEST_PAGE_FAULT",
        "access": "store",
        "gpa": 0x10000000,
        "gva": 0xFFFFFFC800000000,
        "htinst_kind": "transformed",
        "insn_length": 4,
        "access_size": 1,
        "rs2": 11,
        "sign_extend": None,
        "addr_offset": 0,
    }
    json.dumps(f.to_dict())


def test_load_lw_identity_mapped():
    # lw a0 -> transformed 0x00002503 (rd=10, funct3 010). GPA 0x9000000: htval = 0x9000000>>2
    # = 0x2400000; stval = GVA = 0x9000000 (vsatp Bare).
    f = decode_guest_page_fault(0x15, 0x2400000, 0x9000000, 0x2503)
    assert (f.access, f.gpa, f.gfn, f.write, f.exec) == ("load", 0x9000000, 0x9000, False, False)
    assert (f.rd, f.rs2, f.access_size, f.sign_extend) == (10, None, 4, True)
    d = f.to_dict()
    assert "rd" in d and "rs2" not in d and "kernel_gpa" not in d


def test_low_gpa_bits_come_from_stval():
    # lhu a5 (0x00005783) at GVA 0xffffffc800000002 -> GPA 0x10000002.
    # htval = 0x10000002 >> 2 = 0x4000000 (bits 1:0 lost); stval & 3 = 2 restores them.
    f = decode_guest_page_fault(0x15, 0x4000000, 0xFFFFFFC800000002, 0x5783)
    assert f.gpa == 0x10000002 == f.kernel_gpa
    assert (f.rd, f.access_size, f.sign_extend) == (15, 2, False)


def test_pseudo_read_uses_pte_address():
    # Implicit VS-stage PTE read (htinst 0x3000) at GPA 0x80201ff8 while translating
    # VA 0x3fffffd123. htval = 0x80201ff8 >> 2 = 0x200807fe. stval & 3 = 3 says nothing about
    # the (8-byte aligned) PTE: gpa = 0x80201ff8, the kernel computes 0x80201ffb.
    f = decode_guest_page_fault(0x15, 0x200807FE, 0x3FFFFFD123, 0x3000)
    assert f.gpa == 0x80201FF8
    assert f.kernel_gpa == 0x80201FFB
    assert f.gfn == 0x80201
    assert (f.htinst_kind, f.access_size, f.rd, f.rs2, f.insn_length) == (
        "pseudo",
        8,
        None,
        None,
        None,
    )
    d = f.to_dict()
    assert d["kernel_gpa"] == 0x80201FFB and d["gpa"] == 0x80201FF8
    assert d["gva"] == 0x3FFFFFD123


def test_pseudo_write_on_store_fault():
    # A/D update of the PTE at GPA 0x80202000 (htval 0x20080800) during a store's translation:
    # cause = store/AMO guest-page fault (the original access type), htinst 0x3020.
    f = decode_guest_page_fault(0x17, 0x20080800, 0xFFFFFFC800001000, 0x3020)
    assert (f.access, f.gpa, f.write, f.htinst_kind, f.access_size) == (
        "store",
        0x80202000,
        True,
        "pseudo",
        8,
    )
    assert "kernel_gpa" not in f.to_dict()  # stval & 3 = 0: both readings agree


def test_pseudo_rv32_read_on_fetch():
    # Instruction fetch whose VS-stage walk (RV32 guest, 4-byte PTEs) faults at GPA 0x80000ffc:
    # htval = 0x200003ff, htinst 0x2000, cause 20.
    f = decode_guest_page_fault(0x14, 0x200003FF, 0x10002, 0x2000)
    assert (f.access, f.exec, f.gpa, f.kernel_gpa, f.access_size) == (
        "fetch",
        True,
        0x80000FFC,
        0x80000FFE,
        4,
    )


def test_instruction_guest_page_fault():
    # Fetch at GPA 0x80200000 (htval 0x20080000), htinst 0: nothing about the instruction.
    f = decode_guest_page_fault(0x14, 0x20080000, 0x80200000, 0)
    assert (f.access, f.exec, f.write, f.gpa, f.gfn) == ("fetch", True, False, 0x80200000, 0x80200)
    assert (f.htinst_kind, f.insn_length, f.access_size, f.rd, f.sign_extend) == (
        "zero",
        None,
        None,
        None,
        None,
    )
    d = f.to_dict()
    assert d["rd"] is None and "rs2" not in d


def test_compressed_store():
    # c.sw a0,4(a1) -> sw x10 -> 0x00a02023 -> bit 1 cleared -> 0x00a02021; GPA 0x10000004.
    f = decode_guest_page_fault(0x17, 0x4000001, 0x10000004, 0x00A02021)
    assert (f.gpa, f.insn_length, f.access_size, f.rs2) == (0x10000004, 2, 4, 10)


def test_compressed_load_ld():
    # c.ld a5,8(a4) -> ld x15 -> 0x00003781; GPA 0x10000008 -> htval 0x4000002.
    f = decode_guest_page_fault(0x15, 0x4000002, 0xFFFFFFC800000008, 0x00003781)
    assert (f.gpa, f.insn_length, f.access_size, f.rd, f.sign_extend) == (
        0x10000008,
        2,
        8,
        15,
        False,
    )


def test_misaligned_addr_offset():
    # lw a0 straddling a page: original VA 0x10000ffe, the second half faults at VA/GPA 0x10001000.
    # Addr. Offset = 0x10001000 - 0x10000ffe = 2 -> htinst 0x00002503 | 2 << 15 = 0x00012503.
    f = decode_guest_page_fault(0x15, 0x4000400, 0x10001000, 0x00012503)
    assert (f.gpa, f.addr_offset, f.rd) == (0x10001000, 2, 10)


def test_amo_and_lr():
    # amoadd.w a0,a1,(a2) transformed = 0x00b0252f: a store/AMO guest-page fault.
    f = decode_guest_page_fault(0x17, 0x4000000, 0x10000000, 0x00B0252F)
    assert (f.access, f.rd, f.rs2, f.access_size) == ("store", 10, 11, 4)
    assert f.to_dict()["rs2"] == 11
    # lr.w a3,(a0) transformed = 0x100026af: a load guest-page fault.
    f = decode_guest_page_fault(0x15, 0x4000000, 0x10000000, 0x100026AF)
    assert (f.access, f.rd, f.access_size) == ("load", 13, 4)


def test_invalid_and_custom_htinst_decode_like_zero():
    # 0x3004: bit 0 clear, not a pseudoinstruction -> treated as zero; GPA from the kernel formula.
    f = decode_guest_page_fault(0x15, 0x4000000, 0x10000001, 0x3004)
    assert (f.htinst_kind, f.gpa, f.access_size) == ("invalid", 0x10000001, None)
    # custom-0 value 0x0b on a store fault: allowed by the spec, meaning unspecified.
    f = decode_guest_page_fault(0x17, 0x4000000, 0x10000000, 0x0B)
    assert (f.htinst_kind, f.insn_length, f.rs2) == ("custom", 4, None)


def test_htval_limits():
    # Largest Sv57x4 GPA: 2**59 - 1 -> htval = 2**57 - 1, stval & 3 = 3.
    f = decode_guest_page_fault(0x15, (1 << 57) - 1, 3, 0)
    assert f.gpa == (1 << 59) - 1
    # htval = 0 is GPA 0..3 (or "no information"): accepted as the kernel does.
    assert decode_guest_page_fault(0x15, 0, 2, 0).gpa == 2
    with pytest.raises(DecodeError, match=r"htval=0x200000000000000: wider than 57 bits"):
        decode_guest_page_fault(0x15, 1 << 57, 0, 0)


@pytest.mark.parametrize(
    "scause,htinst,match",
    [
        # Instruction guest-page faults never carry a transformed value: sb a1 on cause 20.
        (
            0x14,
            0x00B00023,
            r"htinst=0xb00023: a transformed value \(sb\) cannot accompany scause=0x14",
        ),
        (0x14, 0x0B, r"a custom value"),
        # SW (store) reported as a load guest-page fault.
        (0x15, 0x01C02023, r"transformed sw \(a store/AMO\) cannot cause scause=0x15"),
        # LW (load) reported as a store guest-page fault.
        (0x17, 0x00002503, r"transformed lw \(a load\) cannot cause scause=0x17"),
        # amoadd.w is store/AMO class, never a load guest-page fault.
        (0x15, 0x00B0252F, r"transformed amoadd.w"),
    ],
)
def test_htinst_contradicting_cause(scause, htinst, match):
    with pytest.raises(DecodeError, match=match):
        decode_guest_page_fault(scause, 0x4000000, 0x10000000, htinst)


@pytest.mark.parametrize(
    "scause,text",
    [
        (0x0, "instruction address misaligned [EXC_INST_MISALIGNED]"),
        (0x1, "instruction access fault [EXC_INST_ACCESS]"),
        (0x2, "illegal instruction [EXC_INST_ILLEGAL]"),
        (0x3, "breakpoint [EXC_BREAKPOINT]"),
        (0x4, "load address misaligned [EXC_LOAD_MISALIGNED]"),
        (0x5, "load access fault [EXC_LOAD_ACCESS]"),
        (0x6, "store/AMO address misaligned [EXC_STORE_MISALIGNED]"),
        (0x7, "store/AMO access fault [EXC_STORE_ACCESS]"),
        (0x8, "environment call from U-mode or VU-mode (user ecall) [EXC_SYSCALL]"),
        (0x9, "environment call from HS-mode (supervisor ecall) [EXC_HYPERVISOR_SYSCALL]"),
        (0xA, "environment call from VS-mode (guest ecall, an SBI call) [EXC_SUPERVISOR_SYSCALL]"),
        (0xB, "environment call from M-mode (machine ecall) [EXC_MACHINE_SYSCALL]"),
        (0xC, "instruction page fault [EXC_INST_PAGE_FAULT]"),
        (0xD, "load page fault [EXC_LOAD_PAGE_FAULT]"),
        (0xE, "exception 14 (EXC_RESERVED_14)"),
        (0xF, "store/AMO page fault [EXC_STORE_PAGE_FAULT]"),
        (0x12, "software check (Zicfilp/Zicfiss CFI) [EXC_SOFTWARE_CHECK]"),
        (0x13, "hardware error [EXC_HARDWARE_ERROR]"),
        (0x16, "virtual instruction [EXC_VIRTUAL_INST_FAULT]"),
        (0x18, "exception 24 (EXC_CUSTOM_24)"),
        (IRQ | 1, "interrupt 1 (supervisor software) [IRQ_S_SOFT]"),
        (IRQ | 2, "interrupt 2 (virtual supervisor software) [IRQ_VS_SOFT]"),
        (IRQ | 5, "interrupt 5 (supervisor timer) [IRQ_S_TIMER]"),
        (IRQ | 6, "interrupt 6 (virtual supervisor timer) [IRQ_VS_TIMER]"),
        (IRQ | 9, "interrupt 9 (supervisor external) [IRQ_S_EXT]"),
        (IRQ | 10, "interrupt 10 (virtual supervisor external) [IRQ_VS_EXT]"),
        (IRQ | 12, "interrupt 12 (supervisor guest external) [IRQ_S_GEXT]"),
        (IRQ | 13, "interrupt 13 (counter overflow (Sscofpmf)) [IRQ_PMU_OVF]"),
        # An interrupt whose code happens to be 21 is still an interrupt.
        (IRQ | 21, "interrupt 21 (platform) [IRQ_PLATFORM_21]"),
    ],
)
def test_other_causes_refused_with_their_names(scause, text):
    with pytest.raises(DecodeError) as exc:
        decode_guest_page_fault(scause, 0x4000000, 0x10000000, 0)
    assert str(exc.value) == f"scause=0x{scause:x}: {text} is not a guest-page fault (20, 21 or 23)"


def test_interrupt_message_shape():
    with pytest.raises(
        DecodeError, match=r"^scause=0x8000000000000005: interrupt 5 \(supervisor timer\)"
    ):
        decode_guest_page_fault(0x8000000000000005, 0, 0)
    with pytest.raises(
        DecodeError, match=r"^scause=0x9: .*supervisor ecall.* is not a guest-page fault"
    ):
        decode_guest_page_fault(0x9, 0, 0)


@pytest.mark.parametrize(
    "args,register",
    [
        ((-1, 0, 0, 0), "scause"),
        ((1 << 64, 0, 0, 0), "scause"),
        ((0x15, -4, 0, 0), "htval"),
        ((0x15, 0, -1, 0), "stval"),
        ((0x15, 0, 1 << 64, 0), "stval"),
        ((0x15, 0, 0, 1 << 64), "htinst"),
        ((0x15, 0, 0, -1), "htinst"),
        ((21.0, 0, 0, 0), "scause"),
        ((0x15, "0x10", 0, 0), "htval"),
        ((0x15, 0, None, 0), "stval"),
    ],
)
def test_out_of_range_registers(args, register):
    with pytest.raises(DecodeError, match=rf"^{register}=.*not a 64-bit register value"):
        decode_guest_page_fault(*args)


def test_fields_and_frozen():
    f = decode_guest_page_fault(0x15, 0x2400000, 0x9000000, 0x2503)
    assert f == GuestPageFault(
        scause=0x15,
        scause_name="EXC_LOAD_GUEST_PAGE_FAULT",
        access="load",
        gpa=0x9000000,
        kernel_gpa=0x9000000,
        gva=0x9000000,
        htval=0x2400000,
        stval=0x9000000,
        htinst=0x2503,
        htinst_kind="transformed",
        insn_length=4,
        access_size=4,
        rd=10,
        rs2=None,
        sign_extend=True,
        addr_offset=0,
    )
    with pytest.raises(AttributeError):
        f.gpa = 0  # type: ignore[misc]
    assert hash(f) == hash(decode_guest_page_fault(0x15, 0x2400000, 0x9000000, 0x2503))


# --- Properties ---------------------------------------------------------------------------------

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
INTERESTING_HTINST = st.sampled_from(
    [
        0,
        0x2000,
        0x2020,
        0x3000,
        0x3020,
        0xB00023,
        0x2503,
        0x2401,
        0xB0252F,
        0x100026AF,
        0x0B,
        0x3004,
    ]
)
JSON_KEYS_BASE = {
    "scause",
    "scause_name",
    "access",
    "gpa",
    "gva",
    "htinst_kind",
    "insn_length",
    "access_size",
    "sign_extend",
    "addr_offset",
}


def _check(scause, htval, stval, htinst):
    try:
        f = decode_guest_page_fault(scause, htval, stval, htinst)
    except DecodeError:
        return
    assert scause in (20, 21, 23)
    assert f.kernel_gpa == (htval << 2) | (stval & 3)
    assert f.gpa in (f.kernel_gpa, htval << 2)
    keys = set(f.to_dict())
    reg_key = {"rs2"} if f.access == "store" else {"rd"}
    assert keys - {"kernel_gpa"} == JSON_KEYS_BASE | reg_key
    assert ("kernel_gpa" in keys) == (f.gpa != f.kernel_gpa)
    json.dumps(f.to_dict())


@given(U64, U64, U64, U64)
def test_any_64bit_tuple_decodes_or_raises_decode_error(scause, htval, stval, htinst):
    _check(scause, htval, stval, htinst)


@given(
    st.sampled_from([20, 21, 23]),
    st.integers(min_value=0, max_value=(1 << 58)),
    U64,
    st.one_of(INTERESTING_HTINST, st.integers(min_value=0, max_value=0xFFFFFFFF), U64),
)
def test_guest_page_fault_tuples_decode_or_raise_decode_error(scause, htval, stval, htinst):
    _check(scause, htval, stval, htinst)


@given(st.integers(), st.integers(), st.integers(), st.integers())
def test_any_int_tuple_decodes_or_raises_decode_error(scause, htval, stval, htinst):
    _check(scause, htval, stval, htinst)
