"""``Arm64Fault``, kvmcore's arm64 fault type, and the register names and granules the plugin
declares: what loading the plugin needs (its ``ArchInfo``). Decoding is
:mod:`kvmcore_arm64.fault`, which re-exports these names; this module imports no decoder, so
that ``kvmcore plugins`` does not load :mod:`kvmcore_arm64.esr`.

:class:`Arm64Fault` is a dataclass whose ``__init__`` is written out and whose ``__repr__`` and
``__eq__`` are the core's shared ``kvmcore.fields_repr``/``fields_eq`` (CPython 3.11 compiles the
methods ``@dataclass`` generates from source at every import); ``tests/test_types.py`` holds
them to what ``make_dataclass`` generates.
"""

from __future__ import annotations

from dataclasses import dataclass

import kvmcore
import kvmcore_arm64  # its EsrInfo imports the ESR decoder on first use (typing.get_type_hints)

#: The registers ``decode_fault`` accepts (``ArchInfo.registers``).
REGISTERS = ("esr", "far", "hpfar")
REQUIRED = ("esr", "hpfar")
#: kvmcore's modelling inputs that are not registers.
MODEL_KEYS = ("private", "data")
#: Stage-2 granule setting -> PAGE_SHIFT.
GRANULE_SHIFTS = {"4K": 12, "16K": 14, "64K": 16}


@dataclass(slots=True, init=False, repr=False, eq=False)  # __init__ written out, the rest shared: see kvmcore.fields_repr
class Arm64Fault:
    """One arm64 stage-2 abort (EC IABT_LOW or DABT_LOW) as kvmcore handles it.

    Common fields (asserted by the core): ``gfn`` (``ipa >> PAGE_SHIFT``; the granule decides
    PAGE_SHIFT), ``exec`` (``kvm_vcpu_trap_is_exec_fault()``), ``write``
    (``kvm_is_write_fault()``), ``is_private`` (the raw key ``private``; always False
    upstream), ``slot`` (filled by the core).

    Syndrome: ``esr`` (full ESR_EL2, ISS2 included), ``ec``, ``fsc``, ``fault_kind``
    (the decoder's names: ``translation``, ``access_flag``, ``permission``,
    ``sync_external_abort``...), ``fault_level`` (lookup level, None if level-less),
    ``s1ptw``, ``is_iabt`` (EC IABT_LOW, ``kvm_vcpu_trap_is_iabt()``), ``isv``, ``wnr``,
    ``cm``, ``access_size`` (``1 << SAS``), ``srt`` (None without ISV, and for IABTs, like
    ``isv``/``wnr``/``cm``), ``info`` (the whole :class:`~kvmcore_arm64.esr.EsrInfo`).

    Addresses: ``hpfar``, ``far`` (None if not given), ``ipa`` (page-aligned to 4K, from HPFAR:
    ``kvm_vcpu_get_fault_ipa()``), ``gpa`` (``ipa | FAR[11:0]``, the address
    ``io_mem_abort()`` gets), ``hpfar_trusted`` (``__hpfar_valid()``: whether the CPU wrote
    HPFAR for this abort or KVM had to re-walk stage 1; informative, the given HPFAR is used
    either way). ``data``: the raw key ``data`` (0 if not given).
    """

    gfn: int
    exec: bool
    write: bool
    is_private: bool
    esr: int
    ec: int
    fsc: int
    fault_kind: str
    fault_level: int | None
    s1ptw: bool
    is_iabt: bool
    isv: bool | None
    wnr: bool | None
    cm: bool | None
    access_size: int | None
    srt: int | None
    ipa: int
    gpa: int
    far: int | None
    hpfar: int
    hpfar_trusted: bool
    data: int
    info: kvmcore_arm64.EsrInfo
    slot: kvmcore.Memslot | None = None

    def __init__(
        self,
        gfn: int,
        exec: bool,
        write: bool,
        is_private: bool,
        esr: int,
        ec: int,
        fsc: int,
        fault_kind: str,
        fault_level: int | None,
        s1ptw: bool,
        is_iabt: bool,
        isv: bool | None,
        wnr: bool | None,
        cm: bool | None,
        access_size: int | None,
        srt: int | None,
        ipa: int,
        gpa: int,
        far: int | None,
        hpfar: int,
        hpfar_trusted: bool,
        data: int,
        info: kvmcore_arm64.EsrInfo,
        slot: kvmcore.Memslot | None = None,
    ) -> None:
        self.gfn = gfn
        self.exec = exec
        self.write = write
        self.is_private = is_private
        self.esr = esr
        self.ec = ec
        self.fsc = fsc
        self.fault_kind = fault_kind
        self.fault_level = fault_level
        self.s1ptw = s1ptw
        self.is_iabt = is_iabt
        self.isv = isv
        self.wnr = wnr
        self.cm = cm
        self.access_size = access_size
        self.srt = srt
        self.ipa = ipa
        self.gpa = gpa
        self.far = far
        self.hpfar = hpfar
        self.hpfar_trusted = hpfar_trusted
        self.data = data
        self.info = info
        self.slot = slot

    __repr__ = kvmcore.fields_repr
    __eq__ = kvmcore.fields_eq

    @property
    def page_walk(self) -> bool:
        """ESR_EL2.ISS[7] S1PTW: the stage-2 fault happened on the guest's stage-1 table walk
        (Arm ARM, ISS encoding for a Data/Instruction Abort), not on the final access."""
        return self.s1ptw
