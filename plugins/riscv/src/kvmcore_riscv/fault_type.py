"""``RiscvFault``, kvmcore's RISC-V fault type, and the register names ``decode_fault`` takes:
what loading the plugin needs (its ``ArchInfo``). Decoding is :mod:`kvmcore_riscv.fault`,
which re-exports these names; this module imports no decoder, so that ``kvmcore plugins``
does not load the trap and htinst decoders.

:class:`RiscvFault` is a dataclass whose ``__init__`` is written out and whose ``__repr__``
and ``__eq__`` are the core's shared ``kvmcore.fields_repr``/``fields_eq`` (CPython 3.11 compiles
the methods ``@dataclass`` generates from source at every import, and ``kvmcore plugins`` loads
every arch); ``tests/test_types.py`` holds them to what ``make_dataclass`` generates.
"""

from __future__ import annotations

from dataclasses import dataclass

import kvmcore

#: The trap CSRs ``decode_fault`` accepts (``ArchInfo.registers``).
REGISTERS = ("scause", "htval", "stval", "htinst", "sepc")
REQUIRED = ("scause", "htval", "stval")
#: kvmcore's modelling inputs that are not registers.
MODEL_KEYS = ("private", "data", "insn")


@dataclass(slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore.fields_repr
class RiscvFault:
    """One RISC-V guest-page fault as kvmcore handles it.

    ``fault_kind`` is ``"guest_page_fault_fetch"`` (scause 20), ``"guest_page_fault_load"``
    (21) or ``"guest_page_fault_store"`` (23, store/AMO). ``write`` is
    ``scause == EXC_STORE_GUEST_PAGE_FAULT`` (the ``is_write`` ``gstage_page_fault()`` passes
    on); ``exec`` is ``scause == EXC_INST_GUEST_PAGE_FAULT``. ``gpa``/``kernel_gpa`` are as in
    :class:`kvmcore_riscv.trap.GuestPageFault`: they differ only in bits 1:0 for an implicit
    VS-stage page-table access, and KVM's MMIO emulation uses ``kernel_gpa``.
    """

    gfn: int
    exec: bool
    write: bool
    is_private: bool
    scause: int
    scause_name: str
    access: str
    fault_kind: str
    gpa: int
    kernel_gpa: int
    gva: int
    htval: int
    stval: int
    htinst: int
    htinst_kind: str
    insn_length: int | None
    access_size: int | None
    rd: int | None
    rs2: int | None
    sign_extend: bool | None
    addr_offset: int | None
    sepc: int | None
    insn: int | None
    data: int | None

    def __init__(
        self,
        gfn: int,
        exec: bool,
        write: bool,
        is_private: bool,
        scause: int,
        scause_name: str,
        access: str,
        fault_kind: str,
        gpa: int,
        kernel_gpa: int,
        gva: int,
        htval: int,
        stval: int,
        htinst: int,
        htinst_kind: str,
        insn_length: int | None,
        access_size: int | None,
        rd: int | None,
        rs2: int | None,
        sign_extend: bool | None,
        addr_offset: int | None,
        sepc: int | None,
        insn: int | None,
        data: int | None,
        slot: kvmcore.Memslot | None = None,
    ) -> None:
        self.gfn = gfn
        self.exec = exec
        self.write = write
        self.is_private = is_private
        self.scause = scause
        self.scause_name = scause_name
        self.access = access
        self.fault_kind = fault_kind
        self.gpa = gpa
        self.kernel_gpa = kernel_gpa
        self.gva = gva
        self.htval = htval
        self.stval = stval
        self.htinst = htinst
        self.htinst_kind = htinst_kind
        self.insn_length = insn_length
        self.access_size = access_size
        self.rd = rd
        self.rs2 = rs2
        self.sign_extend = sign_extend
        self.addr_offset = addr_offset
        self.sepc = sepc
        self.insn = insn
        self.data = data
        self.slot = slot

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq

    @property
    def page_walk(self) -> bool | None:
        """Whether the fault was an implicit access of the guest's VS-stage page-table walk.

        htinst holds a pseudoinstruction for an implicit access (privileged spec, "Transformed
        Instruction or Pseudoinstruction for mtinst or htinst"), a transformed instruction for an
        explicit one; zero (or a custom/invalid value) says nothing: None.
        """
        if self.htinst_kind == "pseudo":
            return True
        if self.htinst_kind == "transformed":
            return False
        return None
    slot: kvmcore.Memslot | None = None
