"""Tests for kvmcore_arm64.esr.

Expected values are worked out by hand from the bit layout (reference section 4, Arm ARM), never
by calling the code under test. Layout reminder:

    [63:56] RES0 | [55:32] ISS2 | [31:26] EC | [25] IL | [24:0] ISS
    abort ISS: 24 ISV | 23:22 SAS | 21 SSE | 20:16 SRT | 15 SF | 14 AR | 13 VNCR | 12:11 SET |
               10 FnV | 9 EA | 8 CM | 7 S1PTW | 6 WnR | 5:0 FSC
    data-abort ISS2: 11 HDBSSF | 10 TnD | 9 TagAccess | 8 GCS | 7 AssuredOnly | 6 Overlay |
                     5 DirtyBit | 4:0 Xs
    EC<<26 bases: 0x20 -> 0x80000000, 0x21 -> 0x84000000, 0x24 -> 0x90000000,
                  0x25 -> 0x94000000; IL adds 0x02000000, ISV adds 0x01000000.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kvmcore_arm64 import esr as E

from kvmcore import DecodeError

# Fields that must be None for every instruction abort / non-abort.
DABT_ONLY = ("isv", "sas", "sse", "srt", "sf", "ar", "vncr", "cm", "wnr",
             "tnd", "tag_access", "gcs", "assured_only", "overlay", "dirty_bit", "xs", "hdbssf")
ABORT_FIELDS = DABT_ONLY + ("set", "fnv", "ea", "s1ptw", "fsc", "fsc_name", "fault_kind",
                            "fault_level")

# (esr, expected fields). Every expected value below comes from the worked bits in the comment.
DABT_CASES = [
    # 0x93810046: EC=0b100100 (0x24 DABT_LOW) IL=1 ISV=1 SAS=0b10 SSE=0 SRT=0b00001 SF=0 AR=0
    #             VNCR=0 FnV=0 EA=0 CM=0 S1PTW=0 WnR=1 DFSC=0b000110 (0x06 translation L2)
    # (the reference's kvm_guest_fault example: 32-bit STR w1)
    (0x93810046, dict(ec=0x24, il=True, iss=0x1810046, iss2=0, isv=True, sas=2, sse=False,
                      srt=1, sf=False, ar=False, vncr=False, set=None, fnv=False, ea=False,
                      cm=False, s1ptw=False, wnr=True, fsc=0x06, fault_kind="translation",
                      fault_level=2, xs=0)),
    # 0x93c08006: EC=0x24 IL=1 ISV=1 SAS=0b11 SSE=0 SRT=0 SF=1 (bit 15 of 0x8006) AR=0 WnR=0
    #             DFSC=0x06 translation L2 (64-bit LDR x0)
    (0x93C08006, dict(ec=0x24, isv=True, sas=3, sse=False, srt=0, sf=True, ar=False,
                      wnr=False, fsc=0x06, fault_kind="translation", fault_level=2)),
    # 0x92000046: EC=0x24 IL=1 ISV=0 (0x92 = 1001_0010: bit 24 clear) WnR=1 DFSC=0x06
    #             -> no instruction syndrome (the reference's kvm_mmio_nisv example)
    (0x92000046, dict(ec=0x24, il=True, isv=False, sas=None, sse=None, srt=None, sf=None,
                      ar=None, wnr=True, fsc=0x06, fault_kind="translation", fault_level=2)),
    # 0x92000007: EC=0x24 ISV=0 WnR=0 DFSC=0x07 translation L3, read
    (0x92000007, dict(isv=False, wnr=False, fsc=0x07, fault_kind="translation", fault_level=3)),
    # 0x9200004f: 0x4F = 0100_1111 -> WnR=1, DFSC=0x0F permission L3
    (0x9200004F, dict(wnr=True, s1ptw=False, fsc=0x0F, fault_kind="permission", fault_level=3)),
    # 0x9300000b: ISV=1 SAS=0b00 (1 byte) SRT=0 WnR=0 DFSC=0x0B access flag L3
    (0x9300000B, dict(isv=True, sas=0, srt=0, sf=False, wnr=False, fsc=0x0B,
                      fault_kind="access_flag", fault_level=3)),
    # 0x93400047: ISV=1, 0x40 in bits 23:16 -> SAS=0b01 (2 bytes) SRT=0, WnR=1, DFSC=0x07
    (0x93400047, dict(isv=True, sas=1, srt=0, wnr=True, fsc=0x07, fault_level=3)),
    # 0x93250004: bits 23:16 = 0x25 = 0010_0101 -> SAS=0b00 SSE=1 SRT=0b00101; DFSC=0x04 L0
    (0x93250004, dict(isv=True, sas=0, sse=True, srt=5, sf=False, wnr=False, fsc=0x04,
                      fault_kind="translation", fault_level=0)),
    # 0x93dfc045: bits 23:16 = 0xDF = 1101_1111 -> SAS=0b11 SSE=0 SRT=31; bits 15:8 = 0xC0 ->
    #             SF=1 AR=1; 0x45 -> WnR=1 DFSC=0x05 translation L1
    (0x93DFC045, dict(isv=True, sas=3, sse=False, srt=31, sf=True, ar=True, vncr=False,
                      wnr=True, fsc=0x05, fault_kind="translation", fault_level=1)),
    # 0x92000087: 0x87 = 1000_0111 -> S1PTW=1 WnR=0 DFSC=0x07 (stage-2 fault on a s1 walk)
    (0x92000087, dict(s1ptw=True, wnr=False, fsc=0x07, fault_kind="translation")),
    # 0x920000cf: 0xCF = 1100_1111 -> S1PTW=1 WnR=1 DFSC=0x0F permission L3
    (0x920000CF, dict(s1ptw=True, wnr=True, fsc=0x0F, fault_kind="permission")),
    # 0x9200008f: S1PTW=1 WnR=0 DFSC=0x0F permission L3
    (0x9200008F, dict(s1ptw=True, wnr=False, fsc=0x0F, fault_kind="permission")),
    # 0x92000147: 0x147 = 1_0100_0111 -> CM=1 WnR=1 DFSC=0x07 (DC to an unmapped page)
    (0x92000147, dict(cm=True, s1ptw=False, wnr=True, isv=False, fsc=0x07)),
    # 0x9200014e: CM=1 WnR=1 DFSC=0x0E permission L2
    (0x9200014E, dict(cm=True, wnr=True, fsc=0x0E, fault_kind="permission", fault_level=2)),
    # 0x92002047: 0x2047 -> bit 13 VNCR=1, WnR=1, DFSC=0x07
    (0x92002047, dict(vncr=True, set=None, wnr=True, fsc=0x07)),
    # 0x92001810: 0x1810 = 1_1000_0001_0000 -> VNCR=0 SET=0b11 (bits 12:11) DFSC=0x10 SEA
    (0x92001810, dict(vncr=False, set=3, fnv=False, ea=False, fsc=0x10,
                      fault_kind="sync_external_abort", fault_level=None)),
    # 0x92000610: 0x610 = 0110_0001_0000 -> FnV=1 EA=1 SET=0b00 DFSC=0x10
    (0x92000610, dict(set=0, fnv=True, ea=True, cm=False, fsc=0x10,
                      fault_kind="sync_external_abort")),
    # 0x92000813: bit 11 set but DFSC=0x13 (SEA on walk, L-1): SET is only defined for 0x10
    (0x92000813, dict(set=None, fsc=0x13, fault_kind="sync_external_abort_ttw",
                      fault_level=-1)),
    # 0x92000014 / 0x92000017: DFSC=0x14 / 0x17 -> SEA on walk, L0 / L3
    (0x92000014, dict(fsc=0x14, fault_kind="sync_external_abort_ttw", fault_level=0)),
    (0x92000017, dict(fsc=0x17, fault_kind="sync_external_abort_ttw", fault_level=3)),
    # 0x92000011: DFSC=0x11 synchronous tag check fault (MTE)
    (0x92000011, dict(fsc=0x11, fault_kind="tag_check", fault_level=None)),
    # 0x92000018: DFSC=0x18 parity/ECC, not on a walk
    (0x92000018, dict(fsc=0x18, fault_kind="sync_parity_ecc", fault_level=None, set=None)),
    # 0x9200001b / 0x9200001f: DFSC=0x1B / 0x1F parity/ECC on walk, L-1 / L3
    (0x9200001B, dict(fsc=0x1B, fault_kind="sync_parity_ecc_ttw", fault_level=-1)),
    (0x9200001F, dict(fsc=0x1F, fault_kind="sync_parity_ecc_ttw", fault_level=3)),
    # 0x92000021: DFSC=0b100001 alignment fault
    (0x92000021, dict(fsc=0x21, fault_kind="alignment", fault_level=None)),
    # 0x92000023..0x92000028: GPF on walk L-1, L0, L3; GPF not on walk
    (0x92000023, dict(fsc=0x23, fault_kind="granule_protection_ttw", fault_level=-1)),
    (0x92000024, dict(fsc=0x24, fault_kind="granule_protection_ttw", fault_level=0)),
    (0x92000027, dict(fsc=0x27, fault_kind="granule_protection_ttw", fault_level=3)),
    (0x92000028, dict(fsc=0x28, fault_kind="granule_protection", fault_level=None)),
    # 0x92000000 / 0x92000003: DFSC=0x00 / 0x03 address size L0 / L3
    (0x92000000, dict(fsc=0x00, fault_kind="address_size", fault_level=0)),
    (0x92000003, dict(fsc=0x03, fault_kind="address_size", fault_level=3)),
    # 0x92000029: DFSC=0b101001 address size L-1; 0x9200002c: DFSC=0b101100 address size L-2
    (0x92000029, dict(fsc=0x29, fault_kind="address_size", fault_level=-1)),
    (0x9200002C, dict(fsc=0x2C, fault_kind="address_size", fault_level=-2)),
    # 0x9200002b: DFSC=0b101011 translation L-1 (FEAT_LPA2); 0x9200002a: translation L-2
    (0x9200002B, dict(fsc=0x2B, fault_kind="translation", fault_level=-1)),
    (0x9200002A, dict(fsc=0x2A, fault_kind="translation", fault_level=-2)),
    # 0x92000008 / 0x9200000c: access flag L0 / permission L0
    (0x92000008, dict(fsc=0x08, fault_kind="access_flag", fault_level=0)),
    (0x9200000C, dict(fsc=0x0C, fault_kind="permission", fault_level=0)),
    # 0x92000030, 0x31, 0x34, 0x35: TLB conflict, unsupported atomic HW update, IMPDEF x2
    (0x92000030, dict(fsc=0x30, fault_kind="tlb_conflict", fault_level=None)),
    (0x92000031, dict(fsc=0x31, fault_kind="unsupported_atomic_hw_update", fault_level=None)),
    (0x92000034, dict(fsc=0x34, fault_kind="impdef_lockdown", fault_level=None)),
    (0x92000035, dict(fsc=0x35, fault_kind="impdef_unsupported_exclusive_atomic")),
    # Reserved codes: 0x12, 0x19, 0x1A, 0x20, 0x22, 0x2D, 0x3F
    (0x92000012, dict(fsc=0x12, fault_kind="reserved", fsc_name="reserved", fault_level=None)),
    (0x92000019, dict(fsc=0x19, fault_kind="reserved", fault_level=None)),
    (0x9200001A, dict(fsc=0x1A, fault_kind="reserved")),
    (0x92000020, dict(fsc=0x20, fault_kind="reserved")),
    (0x92000022, dict(fsc=0x22, fault_kind="reserved")),
    (0x9200002D, dict(fsc=0x2D, fault_kind="reserved")),
    (0x9200003F, dict(fsc=0x3F, fault_kind="reserved", fault_level=None)),
    # ISS2 (ESR bit = 32 + ISS2 bit):
    # 0x0000_0200_9200_004f: bit 41 = ISS2[9] TagAccess; write permission L3 (FEAT_MTE_PERM)
    (0x000002009200004F, dict(iss2=0x200, tag_access=True, tnd=False, gcs=False,
                              assured_only=False, overlay=False, dirty_bit=False, xs=0,
                              hdbssf=False, fault_kind="permission", wnr=True)),
    # 0x0000_0080_9200_004f: bit 39 = ISS2[7] AssuredOnly (FEAT_THE)
    (0x000000809200004F, dict(iss2=0x80, assured_only=True, tag_access=False)),
    # 0x0000_0040_9200_004f: bit 38 = ISS2[6] Overlay
    (0x000000409200004F, dict(iss2=0x40, overlay=True, assured_only=False)),
    # 0x0000_0020_9200_004f: bit 37 = ISS2[5] DirtyBit
    (0x000000209200004F, dict(iss2=0x20, dirty_bit=True, overlay=False)),
    # 0x0000_0100_9200_004f: bit 40 = ISS2[8] GCS
    (0x000001009200004F, dict(iss2=0x100, gcs=True, tag_access=False)),
    # 0x0000_0400_9200_000f: bit 42 = ISS2[10] TnD, read permission L3
    (0x000004009200000F, dict(iss2=0x400, tnd=True, wnr=False)),
    # 0x0000_0800_9200_004f: bit 43 = ISS2[11] HDBSSF
    (0x000008009200004F, dict(iss2=0x800, hdbssf=True, tnd=False)),
    # 0x0000_001f_9200_0047: bits 36:32 = ISS2[4:0] Xs = 31 (ST64BV)
    (0x0000001F92000047, dict(iss2=0x1F, xs=31, tag_access=False, fsc=0x07)),
    # 0x0000_0fff_9200_004f: ISS2 = 0xFFF -> every named flag set, Xs=31
    (0x00000FFF9200004F, dict(iss2=0xFFF, tnd=True, tag_access=True, gcs=True,
                              assured_only=True, overlay=True, dirty_bit=True, xs=31,
                              hdbssf=True)),
    # 0x0080_0000_9200_0047: bit 55 = ISS2[23], no named field; bits 63:56 still clear
    (0x0080000092000047, dict(iss2=0x800000, xs=0, hdbssf=False, tnd=False)),
    # 0x00ff_ffff_97ff_ffff: EC=0b100101 (0x25 DABT_CUR) IL=1 ISS=0x1FFFFFF (all ones):
    #   ISV=1 SAS=3 SSE=1 SRT=31 SF=1 AR=1 VNCR=1 FnV=1 EA=1 CM=1 S1PTW=1 WnR=1 FSC=0x3F
    #   (reserved, so SET undefined), ISS2=0xFFFFFF
    (0x00FFFFFF97FFFFFF, dict(ec=0x25, ec_name="DABT_CUR", il=True, iss=0x1FFFFFF,
                              iss2=0xFFFFFF, guest_fault=False, isv=True, sas=3, sse=True,
                              srt=31, sf=True, ar=True, vncr=True, set=None, fnv=True,
                              ea=True, cm=True, s1ptw=True, wnr=True, fsc=0x3F,
                              fault_kind="reserved", tnd=True, xs=31, hdbssf=True)),
    # Host oops values (ESR_EL1, EC 0x25 DABT_CUR):
    # 0x96000004: EC=0x25 IL=1 ISV=0 WnR=0 DFSC=0x04 translation L0 (NULL dereference)
    (0x96000004, dict(ec=0x25, ec_name="DABT_CUR", guest_fault=False, isv=False, wnr=False,
                      fsc=0x04, fault_kind="translation", fault_level=0)),
    # 0x96000045: EC=0x25 IL=1 WnR=1 DFSC=0x05 translation L1
    (0x96000045, dict(ec=0x25, guest_fault=False, wnr=True, fsc=0x05, fault_level=1)),
    # 0x9600004f: EC=0x25 WnR=1 DFSC=0x0F permission L3 (write to read-only kernel data)
    (0x9600004F, dict(ec=0x25, guest_fault=False, wnr=True, fault_kind="permission")),
    # 0x97c08006: EC=0x25 IL=1 ISV=1 SAS=3 SF=1 DFSC=0x06 (same ISS as 0x93c08006)
    (0x97C08006, dict(ec=0x25, guest_fault=False, isv=True, sas=3, sf=True, fsc=0x06)),
]


@pytest.mark.parametrize(("esr", "expected"), DABT_CASES, ids=[hex(c[0]) for c in DABT_CASES])
def test_decode_data_abort(esr: int, expected: dict) -> None:
    info = E.decode_esr(esr)
    assert info.esr == esr
    assert info.is_abort is True
    assert info.is_data_abort is True
    for field, want in expected.items():
        assert getattr(info, field) == want, field
        if isinstance(want, bool):
            assert getattr(info, field) is want, field
    if "ec" not in expected:
        assert info.ec == 0x24 and info.ec_name == "DABT_LOW" and info.guest_fault is True


IABT_CASES = [
    # 0x82000007: EC=0b100000 (0x20 IABT_LOW) IL=1 IFSC=0x07 translation L3
    (0x82000007, dict(ec=0x20, ec_name="IABT_LOW", guest_fault=True, s1ptw=False,
                      fsc=0x07, fault_kind="translation", fault_level=3)),
    # 0x8200000f: IFSC=0x0F permission L3 (execute-never at stage 2)
    (0x8200000F, dict(fsc=0x0F, fault_kind="permission", fault_level=3)),
    # 0x82000087: S1PTW=1 IFSC=0x07: the fetch's stage-1 walk hit a stage-2 translation fault
    (0x82000087, dict(s1ptw=True, fsc=0x07)),
    # 0x8200008f: S1PTW=1 IFSC=0x0F permission (walker AF/DBM update at stage 2)
    (0x8200008F, dict(s1ptw=True, fsc=0x0F, fault_kind="permission")),
    # 0x8200000b: IFSC=0x0B access flag L3
    (0x8200000B, dict(fsc=0x0B, fault_kind="access_flag", fault_level=3)),
    # 0x82000410: FnV=1 (0x410 = 0100_0001_0000) IFSC=0x10 SEA, SET=0
    (0x82000410, dict(fnv=True, ea=False, set=0, fsc=0x10, fault_kind="sync_external_abort")),
    # 0x82001210: 0x1210 = 1_0010_0001_0000 -> SET=0b10 EA=1 IFSC=0x10
    (0x82001210, dict(set=2, ea=True, fnv=False, fsc=0x10)),
    # 0x82000047: bit 6 (WnR position) is RES0 for IABT: still decodes, wnr stays None
    (0x82000047, dict(fsc=0x07, wnr=None)),
    # 0x0000_0200_8200_000f: ISS2 bit 9 set on an IABT: kept raw in iss2, no TagAccess field
    (0x000002008200000F, dict(iss2=0x200, tag_access=None, fsc=0x0F)),
    # 0x86000007: EC=0b100001 (0x21 IABT_CUR) IL=1 IFSC=0x07: a host instruction abort
    (0x86000007, dict(ec=0x21, ec_name="IABT_CUR", guest_fault=False, fsc=0x07)),
    # 0x8600000f: IABT_CUR permission L3 (host executed a non-executable page)
    (0x8600000F, dict(ec=0x21, guest_fault=False, fault_kind="permission")),
]


@pytest.mark.parametrize(("esr", "expected"), IABT_CASES, ids=[hex(c[0]) for c in IABT_CASES])
def test_decode_instruction_abort(esr: int, expected: dict) -> None:
    info = E.decode_esr(esr)
    assert info.is_abort is True
    assert info.is_data_abort is False
    for field in DABT_ONLY:
        assert getattr(info, field) is None, field
    for field, want in expected.items():
        assert getattr(info, field) == want, field
    if "ec" not in expected:
        assert info.ec == 0x20 and info.guest_fault is True


NON_ABORT_CASES = [
    # 0x5a000000: EC=0b010110 (0x16 HVC64) IL=1 ISS=0 (HVC #0)
    (0x5A000000, 0x16, "HVC64", True, 0x0, 0),
    # 0x56000080: EC=0b010101 (0x15 SVC64) IL=1 ISS=0x80 (SVC #0x80)
    (0x56000080, 0x15, "SVC64", True, 0x80, 0),
    # 0xf2000800: EC=0b111100 (0x3C BRK64) IL=1 ISS=0x800 (BRK #0x800, a BUG())
    (0xF2000800, 0x3C, "BRK64", True, 0x800, 0),
    # 0x5e000000: EC=0b010111 (0x17 SMC64) IL=1
    (0x5E000000, 0x17, "SMC64", True, 0, 0),
    # 0x62000000: EC=0b011000 (0x18 SYS64) IL=1
    (0x62000000, 0x18, "SYS64", True, 0, 0),
    # 0x02000000: EC=0 (UNKNOWN) IL=1
    (0x02000000, 0x00, "UNKNOWN", True, 0, 0),
    # 0x0: EC=0 IL=0 ISS=0
    (0x0, 0x00, "UNKNOWN", False, 0, 0),
    # 0x04000001: EC=0b000001 (0x01 WFx) IL=0 ISS=1 (WFE)
    (0x04000001, 0x01, "WFx", False, 1, 0),
    # 0x8a000000: EC=0b100010 (0x22 PC_ALIGN) IL=1
    (0x8A000000, 0x22, "PC_ALIGN", True, 0, 0),
    # 0x9a000000: EC=0b100110 (0x26 SP_ALIGN) IL=1
    (0x9A000000, 0x26, "SP_ALIGN", True, 0, 0),
    # 0xbe000000: EC=0b101111 (0x2F SERROR) IL=1
    (0xBE000000, 0x2F, "SERROR", True, 0, 0),
    # 0xb4000000: EC=0b101101 (0x2D GCS) IL=0
    (0xB4000000, 0x2D, "GCS", False, 0, 0),
    # 0x9c000000: EC=0b100111 (0x27 MOPS)
    (0x9C000000, 0x27, "MOPS", False, 0, 0),
    # 0x64000000: EC=0b011001 (0x19 SVE)
    (0x64000000, 0x19, "SVE", False, 0, 0),
    # 0x70000000: EC=0b011100 (0x1C FPAC); 0x74000000: EC=0b011101 (0x1D SME)
    (0x70000000, 0x1C, "FPAC", False, 0, 0),
    (0x74000000, 0x1D, "SME", False, 0, 0),
    # 0x28000000: EC=0b001010 (0x0A OTHER); 0x78000000: EC=0b011110 (0x1E GPC)
    (0x28000000, 0x0A, "OTHER", False, 0, 0),
    (0x78000000, 0x1E, "GPC", False, 0, 0),
    # 0xc8000000: EC=0b110010 (0x32 SOFTSTP_LOW); 0xe8000000: EC=0b111010 (0x3A VECTOR32)
    (0xC8000000, 0x32, "SOFTSTP_LOW", False, 0, 0),
    (0xE8000000, 0x3A, "VECTOR32", False, 0, 0),
    # Unallocated: 0x08000000 EC=0b000010 (0x02); 0x8c000000 EC=0b100011 (0x23);
    #              0xfc000000 EC=0b111111 (0x3F)
    (0x08000000, 0x02, "UNALLOCATED", False, 0, 0),
    (0x8C000000, 0x23, "UNALLOCATED", False, 0, 0),
    (0xFC000000, 0x3F, "UNALLOCATED", False, 0, 0),
    # 0x00ff_ffff_ffff_ffff: largest valid value: EC=0x3F IL=1 ISS=0x1FFFFFF ISS2=0xFFFFFF
    (0x00FFFFFFFFFFFFFF, 0x3F, "UNALLOCATED", True, 0x1FFFFFF, 0xFFFFFF),
    # 0x00ff_ffff_5a00_0000: HVC64 with ISS2 all ones: kept raw, no abort fields
    (0x00FFFFFF5A000000, 0x16, "HVC64", True, 0, 0xFFFFFF),
]


@pytest.mark.parametrize(("esr", "ec", "name", "il", "iss", "iss2"), NON_ABORT_CASES,
                         ids=[hex(c[0]) for c in NON_ABORT_CASES])
def test_decode_non_abort(esr: int, ec: int, name: str, il: bool, iss: int, iss2: int) -> None:
    info = E.decode_esr(esr)
    assert (info.ec, info.ec_name, info.il, info.iss, info.iss2) == (ec, name, il, iss, iss2)
    assert info.is_abort is False and info.guest_fault is False and info.is_data_abort is False
    for field in ABORT_FIELDS:
        assert getattr(info, field) is None, field


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # bit 56 set: 0x0100_0000_9381_0046
        (0x0100000093810046, "esr=0x100000093810046: bits [63:56] are RES0"),
        (0xFF00000000000000, "esr=0xff00000000000000: bits [63:56] are RES0"),
        (0x8000000000000000, "esr=0x8000000000000000: bits [63:56] are RES0"),
        (-1, "esr=-0x1: not a 64-bit register value"),
        (1 << 64, "esr=0x10000000000000000: not a 64-bit register value"),
    ],
)
def test_decode_errors(value: int, message: str) -> None:
    with pytest.raises(DecodeError) as exc:
        E.decode_esr(value)
    assert str(exc.value).startswith(message)
    assert isinstance(exc.value, ValueError)


def test_decode_rejects_non_int() -> None:
    with pytest.raises(TypeError, match="esr must be an int"):
        E.decode_esr("0x93810046")  # type: ignore[arg-type]


def test_decode_bool_and_intenum_are_ints() -> None:
    assert E.decode_esr(True).esr == 1 and E.decode_esr(True).esr.__class__ is int


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_every_u64_decodes_or_raises_decode_error(esr: int) -> None:
    try:
        info = E.decode_esr(esr)
    except DecodeError as e:
        assert esr >> 56, "only values with RES0 bits set may be refused"
        assert f"esr={esr:#x}" in str(e)
    else:
        assert esr >> 56 == 0
        json.dumps(info.to_dict())


@given(st.integers(min_value=0, max_value=(1 << 56) - 1))
def test_every_value_without_res0_decodes(esr: int) -> None:
    info = E.decode_esr(esr)
    assert info.ec == (esr >> 26) & 0x3F
    assert info.iss | (int(info.il) << 25) | (info.ec << 26) | (info.iss2 << 32) == esr
    assert info.is_abort == (info.ec in (0x20, 0x21, 0x24, 0x25))


# --------------------------------------------------------------------------------------------
# check_guest_abort / decode_guest_abort
# --------------------------------------------------------------------------------------------


def test_check_guest_abort_messages() -> None:
    with pytest.raises(DecodeError) as exc:
        E.check_guest_abort(E.decode_esr(0x5A000000))
    assert str(exc.value) == "esr=0x5a000000: EC 0x16 (HVC64) is not an abort"
    with pytest.raises(DecodeError) as exc:
        E.decode_guest_abort(0x96000045)
    assert str(exc.value) == (
        "esr=0x96000045: EC 0x25 (DABT_CUR) is an abort taken from the current EL (host), "
        "not a guest fault"
    )
    with pytest.raises(DecodeError, match=r"EC 0x21 \(IABT_CUR\) is an abort taken from the cur"):
        E.decode_guest_abort(0x86000007)
    with pytest.raises(DecodeError, match=r"esr=0xf2000800: EC 0x3c \(BRK64\) is not an abort"):
        E.decode_guest_abort(0xF2000800)
    with pytest.raises(DecodeError, match=r"EC 0x2 \(UNALLOCATED\) is not an abort"):
        E.decode_guest_abort(0x08000000)


def test_decode_guest_abort_accepts_lower_el() -> None:
    assert E.decode_guest_abort(0x93810046).ec == 0x24
    assert E.decode_guest_abort(0x82000007).ec == 0x20
    E.check_guest_abort(E.decode_esr(0x92000007))


# --------------------------------------------------------------------------------------------
# KVM predicates
# --------------------------------------------------------------------------------------------

# (esr, is_write_fault, is_exec_fault) - kvm_is_write_fault / kvm_vcpu_trap_is_exec_fault
WRITE_EXEC = [
    (0x93810046, True, False),  # WnR=1
    (0x93C08006, False, False),  # WnR=0
    (0x92000087, False, False),  # S1PTW translation: not a write even though walks may update
    (0x920000CF, True, False),  # S1PTW permission, WnR=1
    (0x9200008F, True, False),  # S1PTW permission, WnR=0: still a write (AF/DBM update)
    (0x920000C7, False, False),  # 0xC7: S1PTW=1 WnR=1 translation: S1PTW rule wins -> read
    (0x92000147, True, False),  # CM=1 WnR=1: KVM counts cache maintenance as a write
    (0x82000007, False, True),  # IABT translation
    (0x8200000F, False, True),  # IABT permission
    (0x82000087, False, False),  # IABT on s1 walk, translation: neither
    (0x8200008F, True, False),  # IABT on s1 walk, permission: a write (walker update)
    (0x82000047, False, True),  # IABT, RES0 bit 6 set: never a write
    (0x86000007, False, False),  # IABT_CUR: kvm_vcpu_trap_is_iabt() only matches IABT_LOW
    (0x5A000000, False, False),  # HVC64
]


@pytest.mark.parametrize(("esr", "write", "exec_"), WRITE_EXEC, ids=[hex(c[0]) for c in WRITE_EXEC])
def test_write_and_exec(esr: int, write: bool, exec_: bool) -> None:
    info = E.decode_esr(esr)
    assert E.is_write_fault(info) is write
    assert E.is_exec_fault(info) is exec_


# (fsc, translation, permission, access_flag, sea, address_size)
FSC_PREDICATES = [
    (0x00, False, False, False, False, True),
    (0x03, False, False, False, False, True),
    (0x29, False, False, False, False, True),
    (0x2C, False, False, False, False, False),  # level -2: not in esr_fsc_is_addr_sz_fault
    (0x25, False, False, False, False, False),  # GPF on walk L1 (the 6.15-6.18 ADDRSZ bug)
    (0x04, True, False, False, False, False),
    (0x07, True, False, False, False, False),
    (0x2B, True, False, False, False, False),
    (0x2A, False, False, False, False, False),  # level -2: not in esr_fsc_is_translation_fault
    (0x08, False, False, True, False, False),
    (0x0B, False, False, True, False, False),
    (0x0C, False, True, False, False, False),
    (0x0F, False, True, False, False, False),
    (0x10, False, False, False, True, False),
    (0x11, False, False, False, False, False),
    (0x12, False, False, False, False, False),
    (0x13, False, False, False, True, False),
    (0x17, False, False, False, True, False),
    (0x18, False, False, False, True, False),
    (0x19, False, False, False, False, False),
    (0x1A, False, False, False, False, False),
    (0x1B, False, False, False, True, False),
    (0x1F, False, False, False, True, False),
    (0x21, False, False, False, False, False),
    (0x35, False, False, False, False, False),
]


@pytest.mark.parametrize(("fsc", "tr", "perm", "af", "sea", "asz"), FSC_PREDICATES,
                         ids=[hex(c[0]) for c in FSC_PREDICATES])
def test_fsc_predicates(fsc: int, tr: bool, perm: bool, af: bool, sea: bool, asz: bool) -> None:
    info = E.decode_esr(0x92000000 | fsc)  # DABT_LOW, IL=1, ISV=0, read
    assert E.is_translation_fault(info) is tr
    assert E.is_permission_fault(info) is perm
    assert E.is_access_flag_fault(info) is af
    assert E.is_sea(info) is sea
    assert E.is_address_size_fault(info) is asz


def test_predicates_false_for_non_abort() -> None:
    info = E.decode_esr(0x5A000000)
    for pred in (E.is_translation_fault, E.is_permission_fault, E.is_access_flag_fault,
                 E.is_sea, E.is_write_fault, E.is_exec_fault, E.hpfar_trusted):
        assert pred(info) is False


# (esr, hpfar_trusted, fault_safe_to_translate)
HPFAR_TRUST = [
    (0x92000007, True, True),  # translation L3
    (0x9200002B, True, True),  # translation L-1
    (0x9200000B, True, True),  # access flag L3
    (0x92000003, True, True),  # address size L3
    (0x92000029, True, True),  # address size L-1 (0x29 per the Arm ARM)
    (0x9200004F, False, True),  # permission, no S1PTW: KVM re-walks with AT S1E1R
    (0x920000CF, True, True),  # permission with S1PTW
    (0x92000010, False, True),  # SEA with FnV=0: AT is allowed
    (0x92000410, False, False),  # SEA with FnV=1: FAR unknown
    (0x92000015, False, False),  # SEA on walk L1
    (0x9200001D, False, False),  # parity/ECC on walk L1
    (0x92000021, False, True),  # alignment
]


@pytest.mark.parametrize(("esr", "trusted", "safe"), HPFAR_TRUST, ids=[hex(c[0]) for c in HPFAR_TRUST])
def test_hpfar_trusted(esr: int, trusted: bool, safe: bool) -> None:
    info = E.decode_esr(esr)
    assert E.hpfar_trusted(info) is trusted
    assert E.fault_safe_to_translate(info) is safe


def test_hpfar_trusted_erratum_834220() -> None:
    assert E.hpfar_trusted(E.decode_esr(0x92000007), erratum_834220=True) is False
    assert E.hpfar_trusted(E.decode_esr(0x9200000B), erratum_834220=True) is True


# --------------------------------------------------------------------------------------------
# HPFAR_EL2 -> IPA -> gfn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hpfar", "ipa"),
    [
        (0x40010, 0x4001000),  # FIPA=0x4001 -> IPA 0x4001000 (the reference example)
        (0x90000, 0x9000000),  # FIPA=0x9000
        (0x0, 0x0),
        (0x8000000000040010, 0x4001000),  # NS bit 63 (KVM's "valid" flag) is not address
        # 52-bit IPA 0x000f_ffff_ffff_f000: IPA>>12 = 0xff_ffff_ffff -> <<4 = 0xfff_ffff_fff0
        (0x00000FFFFFFFFFF0, 0x000FFFFFFFFFF000),
        # IPA bit 51 alone: IPA>>12 = 1<<39 -> FIPA bit 43 = HPFAR bit 43
        (1 << 43, 1 << 51),
        # FIPA all ones (bits 47:4): IPA[55:12] all ones = 0x00ff_ffff_ffff_f000
        (0x0000FFFFFFFFFFF0, 0x00FFFFFFFFFFF000),
    ],
)
def test_hpfar_to_ipa(hpfar: int, ipa: int) -> None:
    assert E.hpfar_to_ipa(hpfar) == ipa


@pytest.mark.parametrize(
    ("hpfar", "message"),
    [
        (0x40011, "hpfar=0x40011: RES0 bits set (0x1)"),
        (1 << 48, "hpfar=0x1000000000000: RES0 bits set (0x1000000000000)"),
        (1 << 62, "hpfar=0x4000000000000000: RES0 bits set"),
        (-16, "hpfar=-0x10: not a 64-bit register value"),
        (1 << 64, "hpfar=0x10000000000000000: not a 64-bit register value"),
    ],
)
def test_hpfar_errors(hpfar: int, message: str) -> None:
    with pytest.raises(DecodeError) as exc:
        E.hpfar_to_ipa(hpfar)
    assert str(exc.value).startswith(message)


def test_fault_ipa_reference_example() -> None:
    # esr=0x93c08006 far=0x1008 hpfar=0x40010: IPA 0x4001000 | (0x1008 & 0xfff) = 0x4001008
    assert E.fault_ipa(0x40010, 0x1008) == 0x4001008
    assert E.gpa_to_gfn(E.hpfar_to_ipa(0x40010)) == 0x4001
    # FAR is a guest VA; only its low 12 bits matter
    assert E.fault_ipa(0x90000, 0xFFFF80008000A123) == 0x9000123
    with pytest.raises(DecodeError, match="far=-0x1"):
        E.fault_ipa(0x40010, -1)


@pytest.mark.parametrize(
    ("ipa", "page_shift", "gfn"),
    [
        (0x4001000, 12, 0x4001),
        (0x4001000, 14, 0x1000),  # 0x4001000 / 16K = 0x1000 rem 0x1000
        (0x4001000, 16, 0x400),  # 0x4001000 / 64K = 0x400 rem 0x1000
        (0x000FFFFFFFFFF000, 12, 0xFFFFFFFFFF),  # 52-bit IPA, 4K
        (0x000FFFFFFFFFF000, 14, 0x3FFFFFFFFF),
        (0x000FFFFFFFFFF000, 16, 0xFFFFFFFFF),  # 52-bit IPA, 64K (LPA)
        (0x00FFFFFFFFFFF000, 16, 0xFFFFFFFFFF),  # 56-bit IPA, 64K: bits 55:16 = 40 ones
    ],
)
def test_gpa_to_gfn(ipa: int, page_shift: int, gfn: int) -> None:
    assert E.gpa_to_gfn(ipa, page_shift) == gfn


def test_gpa_to_gfn_rejects_bad_granule() -> None:
    with pytest.raises(ValueError, match="page_shift=13"):
        E.gpa_to_gfn(0x1000, 13)
    assert E.PAGE_SHIFTS == {4096: 12, 16384: 14, 65536: 16}


# --------------------------------------------------------------------------------------------
# Sanitised syndromes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("esr", "sanitised"),
    [
        # 0x93810046 minus ISV (0x01000000), SAS (0x00800000), SRT=1 (0x00010000) = 0x92000046
        (0x93810046, 0x92000046),
        # 0x93dfc045: clear ISV|SAS|SRT|SF|AR -> 0x92000045
        (0x93DFC045, 0x92000045),
        # 0x92002047: VNCR (0x2000) cleared -> 0x92000047
        (0x92002047, 0x92000047),
        # 0x92001e10: SET=3 (0x1800), EA (0x200) cleared, FnV (0x400) kept -> 0x92000410
        (0x92001E10, 0x92000410),
        # all ones DABT_CUR: EC|IL 0x96000000 + FnV|CM|S1PTW|WnR|FSC 0x5FF; ISS2 keeps
        # TnD|TagAccess|GCS|AssuredOnly|Overlay|DirtyBit = 0x7E0 (HDBSSF, Xs dropped)
        (0x00FFFFFF97FFFFFF, 0x000007E0960005FF),
        # IABT 0x0000_0200_8200_04cf: keep EC|IL|FnV|S1PTW|FSC = 0x8200048f; bit 6 and ISS2 go
        (0x00000200820004CF, 0x8200048F),
    ],
)
def test_sanitised_esr(esr: int, sanitised: int) -> None:
    assert E.sanitised_esr(esr) == sanitised


def test_sanitised_esr_refuses_non_abort() -> None:
    with pytest.raises(DecodeError, match=r"EC 0x16 \(HVC64\) is not an abort"):
        E.sanitised_esr(0x5A000000)


@pytest.mark.parametrize(
    ("esr", "iss"),
    [
        (0x92000046, 0x46),  # WnR | FSC 0x06
        (0x93810046, 0x46),  # ISV/SAS/SRT dropped
        (0x92000147, 0x147),  # CM | WnR | FSC
        (0x00FFFFFF97FFFFFF, 0x17F),  # CM (0x100) | WnR (0x40) | FSC (0x3F)
    ],
)
def test_nisv_sanitised_iss(esr: int, iss: int) -> None:
    assert E.nisv_sanitised_iss(esr) == iss


# --------------------------------------------------------------------------------------------
# Tables and the JSON dict
# --------------------------------------------------------------------------------------------


def test_ec_table() -> None:
    assert E.EC_NAMES[0x15] == "SVC64" and E.EC_NAMES[0x3C] == "BRK64"
    assert E.EC_NAMES[0x24] == "DABT_LOW" and E.EC_NAMES[0x21] == "IABT_CUR"
    assert 0x02 not in E.EC_NAMES and E.ec_name(0x02) == "UNALLOCATED"
    assert set(E.EC_MEANINGS) == set(E.EC_NAMES)
    assert all(E.ec_meaning(ec) for ec in range(64))
    # Allocated: Linux esr.h's 45 classes + GPC (0x1E) + PROFILING (0x3D)
    assert len(E.EC_NAMES) == 47


def test_fsc_table_complete() -> None:
    assert len(E.FSC_TABLE) == 64
    assert {f.fault_kind for f in E.FSC_TABLE} == set(E.FAULT_KINDS)
    assert [f.code for f in E.FSC_TABLE] == list(range(64))
    reserved = {f.code for f in E.FSC_TABLE if f.fault_kind == "reserved"}
    assert reserved == {0x12, 0x19, 0x1A, 0x20, 0x22, 0x2D, 0x2E, 0x2F, 0x32, 0x33} | set(
        range(0x36, 0x40)
    )
    assert E.fsc_info(0x47) == E.FSC_TABLE[0x07]  # masked to 6 bits


def test_to_dict_keys_and_values() -> None:
    d = E.decode_esr(0x93810046).to_dict()
    assert tuple(d) == E.ESR_INFO_KEYS
    assert d["esr"] == 0x93810046 and d["ec_name"] == "DABT_LOW"
    assert d["ec_meaning"] == "Data Abort from a lower Exception level"
    assert d["fsc_name"] == "translation fault, level 2"
    json.dumps(d)


def test_info_is_frozen() -> None:
    info = E.decode_esr(0x93810046)
    with pytest.raises(AttributeError):
        info.wnr = False  # type: ignore[misc]
    assert info.access_size == 4
    assert E.decode_esr(0x92000046).access_size is None
