"""The access guest's machine code, page tables and GDT, hand-checked against the Intel SDM
(vol. 2 instruction encodings, vol. 3 4-level paging and segment descriptors). Runs everywhere."""

from __future__ import annotations

import struct

import pytest

from kvmcore.realkvm import guest as g


def test_write_of_four_bytes_is_hand_assembled() -> None:
    # MOV r64, imm64 = REX.W B8+rd (rdi 7 -> bf, rax 0 -> b8, rsi 6 -> be); MOV r/m32, r32 = 89 /r with
    # ModRM 07 (mod 00, reg eax, rm [rdi]); OUT imm8, AL = e6 ib. done = 0x8000 + 30 + 2.
    expected = bytes.fromhex(
        "48bf" "0000200000000000"
        "48b8" "8877665544332211"
        "48be" "2080000000000000"
        "8907"
        "e6e9"
        "ebdc"  # JMP rel8 = EB cb: back to 0x8000 from 0x8024 (-36)
    )
    assert g.guest_code("write", 0x200000, 4) == expected


@pytest.mark.parametrize("access,width,op", [
    ("read", 1, "8a07"), ("read", 2, "668b07"), ("read", 4, "8b07"), ("read", 8, "488b07"),
    ("write", 1, "8807"), ("write", 2, "668907"), ("write", 8, "488907"),
    ("fetch", 8, "ffe7"),  # JMP r/m64 = FF /4, ModRM e7 (mod 11, reg 100, rm rdi)
])
def test_access_instruction(access: str, width: int, op: str) -> None:
    code = g.guest_code(access, 0x1000_0000, width)
    assert code[30:-4] == bytes.fromhex(op)
    assert code[-4:-2] == b"\xe6\xe9"
    assert code[-2] == 0xEB and code[-1] - 256 == -len(code)  # jmp short back to the start
    done = struct.unpack("<Q", code[22:30])[0]
    assert done == g.CODE_GPA + len(code) - 4  # rsi points at the out


def test_fetch_target_jumps_back() -> None:
    assert g.FETCH_CODE == bytes.fromhex("b05a" "ffe6")  # mov al, 0x5a; jmp rsi (FF /4, ModRM e6)


@pytest.mark.parametrize("bad", [("read", 0x1000, 3), ("poke", 0x1000, 8), ("read", 1 << 32, 8)])
def test_bad_requests_are_refused_by_name(bad: tuple[str, int, int]) -> None:
    with pytest.raises(ValueError, match="access|width|gpa"):
        g.guest_code(*bad)


def test_page_tables_identity_map_4g_with_user_pages() -> None:
    pages = g.page_tables()
    pml4e = struct.unpack_from("<Q", pages[g.PML4_GPA])[0]
    assert pml4e == g.PDPT_GPA | 0x7  # P | RW | U/S
    pdpt = pages[g.PDPT_GPA]
    assert [struct.unpack_from("<Q", pdpt, 8 * i)[0] for i in range(4)] == [0x3007, 0x4007, 0x5007, 0x6007]
    # PD 1 (GPAs 1-2 GiB), entry 3 maps 1 GiB + 6 MiB: P|RW|U/S|A|D|PS = 0xe7
    assert struct.unpack_from("<Q", pages[g.PD_GPA + 0x1000], 8 * 3)[0] == (1 << 30) + (3 << 21) | 0xE7
    assert struct.unpack_from("<Q", pages[g.PD_GPA], 8)[0] == g.TEST_GPA | 0xE7


def test_gdt_user_code_and_data_are_dpl3() -> None:
    entries = struct.unpack("<7Q", g.gdt())
    code, data = entries[g.SEL_USER_CS >> 3], entries[g.SEL_USER_DS >> 3]
    access = (code >> 40) & 0xFF
    assert access >> 7 == 1 and (access >> 5) & 3 == 3 and access & 0x18 == 0x18  # P, DPL 3, code segment
    assert (code >> 53) & 1 == 1  # L: 64-bit
    assert ((data >> 40) & 0xFF) == 0xF2  # P, DPL 3, writable data
    assert (entries[g.SEL_KERNEL_CS >> 3] >> 45) & 3 == 0  # DPL 0


def test_host_kernel_version_parses() -> None:
    assert g.HostKvm("pvm", "", "6.18.44-fc-v669", 3).kernel == (6, 18)
    assert g.HostKvm("vmx", "", "7.3.0-rc2+", 0).kernel == (7, 3)
    assert g.HostKvm("vmx", "", "weird", 0).kernel == (0, 0)


@pytest.mark.parametrize("modules,flags,flavour,cpl", [
    (["kvm", "kvm_pvm"], "fpu sse2 hypervisor", "pvm", 3),  # this host: no vmx/svm flag, kvm_pvm loaded
    (["kvm", "kvm_intel"], "fpu vmx ept", "vmx", 0),
    (["kvm", "kvm_amd"], "fpu svm npt", "svm", 0),
    (["kvm"], "fpu svm npt", "svm", 0),  # no vendor module visible: the CPU flag decides
    (["kvm"], "fpu hypervisor", "unknown", 3),
])
def test_detect_host(tmp_path, modules: list[str], flags: str, flavour: str, cpl: int) -> None:
    for name in modules:
        (tmp_path / "module" / name).mkdir(parents=True)
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    host = g.detect_host(str(tmp_path / "module"), str(tmp_path / "cpuinfo"))
    assert (host.flavour, host.cpl) == (flavour, cpl)
    assert host.evidence
