"""htinst decoding and MMIO instruction decoding, worked by hand from the RV ISA encodings.

Transformed instruction (priv spec, H extension): the trapping load/store with its immediate
zeroed and rs1 (bits 19:15) replaced by the Addr. Offset; for a compressed instruction, the
32-bit expansion transformed the same way and then bit 1 cleared. Uncompressed encodings were
cross-checked with ``llvm-mc -triple=riscv64 -show-encoding``; HLV/HSV (not known to that
llvm-mc) are assembled by hand from the H-extension opcode table.
"""

from __future__ import annotations

import errno

import pytest
from kvmcore_riscv.htinst import MmioEmulationError, decode_htinst, mmio_access

from kvmcore import DecodeError

# (htinst, mnemonic, is_write, size, insn_length, rd, rs2, sign_extend, addr_offset, fp)
TRANSFORMED = [
    # sb a1,0(a0) = 0x00b50023: opcode 0100011 funct3 000 rs2=11 rs1=10; rs1 cleared -> 0x00b00023
    (0x00B00023, "sb", True, 1, 4, None, 11, None, 0, False),
    # lw a0,8(a1) = 0x0085a503: imm=8 rs1=11 funct3 010 rd=10 opcode 0000011;
    # imm and rs1 cleared -> rd 10<<7=0x500 | 0x2000 | 0x03 = 0x00002503
    (0x00002503, "lw", False, 4, 4, 10, None, True, 0, False),
    # lb t0,0(a0) = 0x00050283: funct3 000 rd=5 -> 5<<7=0x280 | 0x03 = 0x00000283
    (0x00000283, "lb", False, 1, 4, 5, None, True, 0, False),
    # lbu t1,0(a0) = 0x00054303: funct3 100 rd=6 -> 0x300 | 0x4000 | 0x03 = 0x00004303
    (0x00004303, "lbu", False, 1, 4, 6, None, False, 0, False),
    # lh s1,0(a0) = 0x00051483: funct3 001 rd=9 -> 0x480 | 0x1000 | 0x03 = 0x00001483
    (0x00001483, "lh", False, 2, 4, 9, None, True, 0, False),
    # lhu a5,0(a0) = 0x00055783: funct3 101 rd=15 -> 0x780 | 0x5000 | 0x03 = 0x00005783
    (0x00005783, "lhu", False, 2, 4, 15, None, False, 0, False),
    # lwu a4,0(a0) = 0x00056703: funct3 110 rd=14 -> 0x700 | 0x6000 | 0x03 = 0x00006703
    (0x00006703, "lwu", False, 4, 4, 14, None, False, 0, False),
    # ld s0,0(a0) = 0x00053403: funct3 011 rd=8 -> 0x400 | 0x3000 | 0x03 = 0x00003403 (fills x8)
    (0x00003403, "ld", False, 8, 4, 8, None, False, 0, False),
    # sh a2,0(a0) = 0x00c51023: funct3 001 rs2=12 -> 12<<20=0x00c00000 | 0x1000 | 0x23
    (0x00C01023, "sh", True, 2, 4, None, 12, None, 0, False),
    # sw t3,0(a0) = 0x01c52023: funct3 010 rs2=28 -> 0x01c00000 | 0x2000 | 0x23
    (0x01C02023, "sw", True, 4, 4, None, 28, None, 0, False),
    # sd ra,0(a0) = 0x00153023: funct3 011 rs2=1 -> 0x00100000 | 0x3000 | 0x23
    (0x00103023, "sd", True, 8, 4, None, 1, None, 0, False),
    # c.lw s0,0(s1) = 0x4080 -> lw x8,0(x9) -> 0x00002403 -> bit 1 cleared -> 0x00002401
    (0x00002401, "lw", False, 4, 2, 8, None, True, 0, False),
    # c.sw a0,4(a1) = 0xc1c8 -> sw x10,4(x11) -> 0x00a02023 -> bit 1 cleared -> 0x00a02021
    (0x00A02021, "sw", True, 4, 2, None, 10, None, 0, False),
    # c.ld a5,8(a4) = 0x671c -> ld x15 -> 0x00003783 -> 0x00003781
    (0x00003781, "ld", False, 8, 2, 15, None, False, 0, False),
    # c.sd s1,0(a0) = 0xe104 -> sd x9 -> 0x00903023 -> 0x00903021
    (0x00903021, "sd", True, 8, 2, None, 9, None, 0, False),
    # c.lwsp a0,0(sp) = 0x4502 -> lw x10,0(x2) -> 0x00002503 -> 0x00002501
    (0x00002501, "lw", False, 4, 2, 10, None, True, 0, False),
    # c.sdsp s0,8(sp) = 0xe422 -> sd x8,8(x2) -> 0x00803023 -> 0x00803021
    (0x00803021, "sd", True, 8, 2, None, 8, None, 0, False),
    # c.lbu (Zcb) a0 -> lbu x10 -> 0x00004503 -> 0x00004501
    (0x00004501, "lbu", False, 1, 2, 10, None, False, 0, False),
    # misaligned lw a0 that faulted 2 bytes in: Addr. Offset 2 in bits 19:15 -> 0x00002503 | 0x10000
    (0x00012503, "lw", False, 4, 4, 10, None, True, 2, False),
    # misaligned sd ra, offset 4: 0x00103023 | 4<<15 (0x20000) = 0x00123023
    (0x00123023, "sd", True, 8, 4, None, 1, None, 4, False),
    # flw fa0,0(a0) = 0x00052507: opcode 0000111 funct3 010 rd=f10 -> 0x00002507
    (0x00002507, "flw", False, 4, 4, 10, None, None, 0, True),
    # fsd fs1,0(a0) = 0x00953027: opcode 0100111 funct3 011 rs2=f9 -> 0x00903027
    (0x00903027, "fsd", True, 8, 4, None, 9, None, 0, True),
    # c.fsd fs1,0(a0) = 0xa104 -> fsd f9 -> 0x00903027 -> bit 1 cleared -> 0x00903025
    (0x00903025, "fsd", True, 8, 2, None, 9, None, 0, True),
    # amoadd.w a0,a1,(a2) = 0x00b6252f: funct5 00000 rs2=11 rs1=12 funct3 010 rd=10 opcode 0101111;
    # rs1 cleared (12<<15 = 0x60000) -> 0x00b0252f
    (0x00B0252F, "amoadd.w", True, 4, 4, 10, 11, None, 0, False),
    # amoswap.d.aqrl t0,t1,(a0) = 0x0e6532af: funct5 00001 aq=1 rl=1 rs2=6 rs1=10 funct3 011 rd=5;
    # rs1 cleared (10<<15 = 0x50000) -> 0x0e6032af
    (0x0E6032AF, "amoswap.d", True, 8, 4, 5, 6, None, 0, False),
    # lr.w a3,(a0) = 0x100526af: funct5 00010 rs2=0 rs1=10 funct3 010 rd=13 -> 0x100026af (a load)
    (0x100026AF, "lr.w", False, 4, 4, 13, None, None, 0, False),
    # sc.d a4,a5,(a0) = 0x18f5372f: funct5 00011 rs2=15 rs1=10 funct3 011 rd=14 -> 0x18f0372f
    (0x18F0372F, "sc.d", True, 8, 4, 14, 15, None, 0, False),
    # hlv.b a0,(a1): funct7 0110000 rs2 00000 rs1=11 funct3 100 rd=10 opcode 1110011 = 0x6005c573;
    # rs1 cleared -> 0x60004573
    (0x60004573, "hlv.b", False, 1, 4, 10, None, True, 0, False),
    # hsv.w a2,(a1): funct7 0110101 rs2=12 rs1=11 funct3 100 rd=0 opcode 1110011 = 0x6ac5c073;
    # rs1 cleared -> 0x6ac04073
    (0x6AC04073, "hsv.w", True, 4, 4, None, 12, None, 0, False),
]


@pytest.mark.parametrize(
    "htinst,mnemonic,is_write,size,insn_length,rd,rs2,sign_extend,addr_offset,fp", TRANSFORMED
)
def test_transformed(
    htinst, mnemonic, is_write, size, insn_length, rd, rs2, sign_extend, addr_offset, fp
):
    info = decode_htinst(htinst)
    assert info.kind == "transformed"
    assert info.htinst == htinst
    assert info.mnemonic == mnemonic
    assert info.is_write is is_write
    assert info.access_size == size
    assert info.insn_length == insn_length
    assert info.rd == rd
    assert info.rs2 == rs2
    assert info.sign_extend is sign_extend
    assert info.addr_offset == addr_offset
    assert info.fp is fp


@pytest.mark.parametrize(
    "htinst,is_write,size",
    [
        (0x00002000, False, 4),  # 32-bit read for VS-stage translation (RV32 guest)
        (0x00002020, True, 4),  # 32-bit write (A/D update), RV32
        (0x00003000, False, 8),  # 64-bit read for VS-stage translation (RV64 guest)
        (0x00003020, True, 8),  # 64-bit write (A/D update), RV64
    ],
)
def test_pseudoinstructions(htinst, is_write, size):
    info = decode_htinst(htinst)
    assert (info.kind, info.is_write, info.access_size) == ("pseudo", is_write, size)
    assert info.mnemonic is None and info.rd is None and info.rs2 is None
    assert info.insn_length is None and info.addr_offset is None


def test_zero():
    info = decode_htinst(0)
    assert info.kind == "zero"
    assert info.access_size is None and info.insn_length is None and info.is_write is None


@pytest.mark.parametrize(
    "htinst,why",
    [
        (0x00003004, "bit 0 clear and not one of the four pseudoinstructions"),
        (0x00003002, "bits 1:0 = 10: excluded by the spec"),
        (0x1_00002503, "bits 63:32 nonzero: software must not trust the low half"),
        (
            0x00000033,
            "add x0,x0,x0 with bit 0 set: a standard non-memory instruction has no transformation",
        ),
        (0x00000007, "LOAD-FP funct3 000 is a vector load (vle8.v): no transformation"),
        (0x00007003, "LOAD funct3 111: reserved on RV64"),
        (0x00004023, "STORE funct3 100 is SQ (RV128 only)"),
        (0x00002505, "flw compressed: C.FLW does not exist on RV64"),
        (0x00B0252D, "amoadd.w with bit 1 clear: AMOs have no compressed form"),
        (0x00006701, "lwu with bit 1 clear: there is no C.LWU"),
        (0x101026AF, "lr.w with rs2 = 1: LR requires rs2 = x0"),
        (0xFFFFFFFFFFFFFFFF, "all ones"),
    ],
)
def test_invalid(htinst, why):
    assert decode_htinst(htinst).kind == "invalid", why


@pytest.mark.parametrize(
    "htinst,length",
    [
        (0x0000000B, 4),  # custom-0 opcode 0001011
        (0x0000002B, 4),  # custom-1 opcode 0101011
        (0x0000005B, 4),  # custom-2 opcode 1011011
        (0x0000007B, 4),  # custom-3 opcode 1111011
        (0x00000009, 2),  # custom-0 with bit 1 cleared: a compressed trapping instruction
    ],
)
def test_custom(htinst, length):
    info = decode_htinst(htinst)
    assert info.kind == "custom"
    assert info.insn_length == length
    assert info.mnemonic is None


@pytest.mark.parametrize("bad", [-1, 1 << 64, "0x3000", 3.0, None])
def test_decode_htinst_refuses_non_register(bad):
    with pytest.raises(DecodeError, match="htinst="):
        decode_htinst(bad)


# --- mmio_access: kvm_riscv_vcpu_mmio_load/store ------------------------------------------------


@pytest.mark.parametrize(
    "htinst,insn,is_write,length,reg,shift,insn_len",
    [
        # transformed sb a1: store, len 1, data from x11
        (0x00B00023, None, True, 1, 11, 0, 4),
        # transformed lw a0: len 4, shift 8*(8-4) = 32 (sign-extend)
        (0x00002503, None, False, 4, 10, 32, 4),
        # transformed lb t0: shift 56
        (0x00000283, None, False, 1, 5, 56, 4),
        # transformed lbu t1: zero-extended, shift 0
        (0x00004303, None, False, 1, 6, 0, 4),
        # transformed lh s1: shift 48
        (0x00001483, None, False, 2, 9, 48, 4),
        # transformed lwu a4: shift 0
        (0x00006703, None, False, 4, 14, 0, 4),
        # transformed ld s0: shift 8*(8-8) = 0
        (0x00003403, None, False, 8, 8, 0, 4),
        # transformed sd ra
        (0x00103023, None, True, 8, 1, 0, 4),
        # transformed c.lw s0 (bit 1 = 0): kernel uses htinst|3 = lw x8 and insn_len 2
        (0x00002401, None, False, 4, 8, 32, 2),
        # transformed c.sd s1: 0x00903021 | 3 = sd x9, insn_len 2
        (0x00903021, None, True, 8, 9, 0, 2),
        # htinst 0: insn fetched from sepc. lw a0,8(a1) = 0x0085a503 (imm 8, rs1 11, rd 10)
        (0, 0x0085A503, False, 4, 10, 32, 4),
        # c.lw s0,0(s1) = 0x4080: 010 uimm 001(s1') 0 0 000(s0') 00; rd' bits 4:2 = 0 -> x8
        (0, 0x4080, False, 4, 8, 32, 2),
        # c.sw a0,4(a1) = 0xc1c8: rs2' bits 4:2 = 010 -> x10
        (0, 0xC1C8, True, 4, 10, 0, 2),
        # c.ld a5,8(a4) = 0x671c: rd' bits 4:2 = 111 -> x15
        (0, 0x671C, False, 8, 15, 0, 2),
        # c.sd s1,0(a0) = 0xe104: rs2' bits 4:2 = 001 -> x9
        (0, 0xE104, True, 8, 9, 0, 2),
        # c.lwsp a0,0(sp) = 0x4502: rd bits 11:7 = 01010 -> x10
        (0, 0x4502, False, 4, 10, 32, 2),
        # c.ldsp ra,8(sp) = 0x60a2: rd bits 11:7 = 00001 -> x1
        (0, 0x60A2, False, 8, 1, 0, 2),
        # c.swsp a0,4(sp) = 0xc22a: rs2 bits 6:2 = 01010 -> x10; bits 11:7 = 00100 != 0
        (0, 0xC22A, True, 4, 10, 0, 2),
        # c.sdsp s0,8(sp) = 0xe422: rs2 bits 6:2 = 01000 -> x8; bits 11:7 = 01000 != 0
        (0, 0xE422, True, 8, 8, 0, 2),
        # a 16-bit instruction handed over with junk in the upper half: only bits 15:0 count
        (0, 0xDEAD4080, False, 4, 8, 32, 2),
        # pseudoinstruction (bit 0 = 0): the kernel ignores it and decodes the insn at sepc
        (0x00003000, 0x0085A503, False, 4, 10, 32, 4),
    ],
)
def test_mmio_access(htinst, insn, is_write, length, reg, shift, insn_len):
    acc = mmio_access(htinst, insn)
    assert (acc.is_write, acc.len, acc.reg, acc.shift, acc.insn_len) == (
        is_write,
        length,
        reg,
        shift,
        insn_len,
    )
    assert acc.sign_extend is (shift != 0)
    # The direction the fault reported gives the same answer.
    assert mmio_access(htinst, insn, is_write=is_write) == acc


@pytest.mark.parametrize(
    "htinst,insn,is_write",
    [
        (0x00002507, None, None),  # flw: not decoded by KVM's MMIO path
        (0x00903027, None, None),  # fsd
        (0x00B0252F, None, True),  # amoadd.w
        (0x60004573, None, None),  # hlv.b
        (0x0000000B, None, None),  # custom-0 value
        (
            0x00B00023,
            None,
            False,
        ),  # sb reported as a load guest-page fault: mmio_load finds no match
        (0x00002503, None, True),  # lw reported as a store guest-page fault
        # c.swsp a0,0(sp) = 0xc02a: bits 11:7 (uimm[5:2]) = 0 -> the kernel's "rd != 0" test refuses it
        (0, 0xC02A, True),
        # c.sdsp s0,0(sp) = 0xe022: likewise refused
        (0, 0xE022, True),
        # c.lwsp x0,0(sp) = 0x4002: rd = 0 is reserved; refused
        (0, 0x4002, False),
        # c.addi a0,1 = 0x0505: not a load/store
        (0, 0x0505, None),
    ],
)
def test_mmio_access_eopnotsupp(htinst, insn, is_write):
    with pytest.raises(MmioEmulationError, match="EOPNOTSUPP") as exc:
        mmio_access(htinst, insn, is_write=is_write)
    assert exc.value.errno == errno.EOPNOTSUPP
    assert isinstance(exc.value, DecodeError)


def test_mmio_access_misaligned_gpa_is_eio():
    # lw at GPA 0x9000002: 0x9000002 & (4 - 1) = 2 -> -EIO
    with pytest.raises(MmioEmulationError, match="EIO") as exc:
        mmio_access(0x00002503, fault_addr=0x9000002)
    assert exc.value.errno == errno.EIO
    assert mmio_access(0x00002503, fault_addr=0x9000004).len == 4


def test_mmio_access_needs_insn_without_transformed_htinst():
    with pytest.raises(DecodeError, match="sepc") as exc:
        mmio_access(0)
    assert not isinstance(exc.value, MmioEmulationError)
    with pytest.raises(DecodeError, match="insn="):
        mmio_access(0, 1 << 32)


def test_mmio_access_messages_name_what_was_decoded():
    """The -EOPNOTSUPP message names the encoding KVM decoded: ``htinst`` when bit 0 says it
    carries the transformed instruction, else the ``insn`` read at sepc (16-bit forms cut to
    their low half, as the kernel reads them); with the kernel function that refuses it."""
    # sb a0,0(a1) = 0x00a58023 transformed (bit 1 set: 32-bit), reported as a load
    with pytest.raises(MmioEmulationError) as exc:
        mmio_access(0x00A58023, is_write=False)
    assert str(exc.value).startswith("htinst=0xa58023: not an MMIO load KVM decodes; kvm_riscv_vcpu_mmio_load")
    # c.addi a0,1 = 0x0505 read at sepc (htinst 0), the upper half of the word ignored
    with pytest.raises(MmioEmulationError) as exc:
        mmio_access(0, 0xFFFF0505, is_write=True)
    assert str(exc.value).startswith("insn=0x505: not an MMIO store KVM decodes; kvm_riscv_vcpu_mmio_store")
    with pytest.raises(MmioEmulationError) as exc:  # lw at a GPA not 4-byte aligned
        mmio_access(0x00002503, is_write=False, fault_addr=0x9000002)
    assert str(exc.value).endswith("not aligned to the 4-byte lw; kvm_riscv_vcpu_mmio_load returns -EIO")
