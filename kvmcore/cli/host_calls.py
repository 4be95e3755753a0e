"""``kvmcore check-host``, part (a): memslot and guest_memfd calls on the running kernel and on
the model, compared call by call (0 or the errno).

A *sequence* of calls runs on a fresh real VM and a fresh model VM. Arguments that name
resources are symbolic (:class:`Ref`): ``pool+0x1000`` is a page of one host mapping that both
sides are given by address (the model checks addresses, it never touches them), ``gmem#1`` the
second guest_memfd both sides created in this sequence, ``foreign-gmem`` a guest_memfd of another
VM, ``not-gmem`` an open fd that is not a guest_memfd (``/dev/kvm``), ``bad-fd`` a number that is
no open fd. When the two sides disagree on a call, both are rebuilt from scratch by replaying
the calls they agreed on (the disagreeing call left out), so they are in the same state again,
and the sequence goes on. Each class of disagreement keeps the shortest reproducer found by
dropping earlier calls one at a time while the disagreement stays.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvmcore import abi
from kvmcore.errors import KvmError, strerror
from kvmcore.realkvm.hostmem import PAGE_SIZE, HostMapping
from kvmcore.realkvm.kvm import VM as RealVM
from kvmcore.realkvm.kvm import System

POOL_PAGES = 64
U64 = (1 << 64) - 1
#: x86-64 with 4-level paging: TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE (asm/page_64_types.h)
USER_TOP = 1 << 47
BAD_FD = 0x7FFF_FF00
MODEL_FOREIGN_FD, MODEL_NOT_GMEM_FD = 0x7FFF_FE00, 0x7FFF_FE01


@dataclass(slots=True, frozen=True)
class Ref:
    """A symbolic argument: ``kind`` is ``pool`` (``index`` = byte offset), ``gmem`` (``index`` =
    which guest_memfd of this sequence), ``foreign-gmem``, ``not-gmem`` or ``bad-fd``."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        if self.kind == "pool":
            return f"pool+{self.index:#x}"
        if self.kind == "gmem":
            return f"gmem#{self.index}"
        return self.kind


@dataclass(slots=True, frozen=True)
class Call:
    """One call: ``op`` is ``set_user_memory_region2``, ``create_guest_memfd`` or
    ``set_memory_attributes``; ``args`` its keyword arguments (ints or :class:`Ref`)."""

    op: str
    args: tuple[tuple[str, Any], ...]

    def text(self) -> str:
        parts = []
        for name, value in self.args:
            parts.append(f"{name}={value:#x}" if isinstance(value, int) and name != "slot" else f"{name}={value}")
        return f"{self.op}({', '.join(parts)})"


def region(slot: int, gpa: int, size: int, uaddr: Any, flags: int = 0, gmem: Any = 0, offset: int = 0) -> Call:
    return Call("set_user_memory_region2", (
        ("slot", slot), ("flags", flags), ("guest_phys_addr", gpa), ("memory_size", size),
        ("userspace_addr", uaddr), ("guest_memfd", gmem), ("guest_memfd_offset", offset),
    ))


def gmem_create(size: int, flags: int = 0) -> Call:
    return Call("create_guest_memfd", (("size", size), ("flags", flags)))


def attributes(address: int, size: int, attrs: int, flags: int = 0) -> Call:
    return Call("set_memory_attributes", (("address", address), ("size", size), ("attributes", attrs), ("flags", flags)))


# --- the fixed edge cases ----------------------------------------------------------------------------
P = Ref("pool")
MB = 1 << 20
G0 = Ref("gmem", 0)
FLAG_BITS = (abi.KVM_MEM_LOG_DIRTY_PAGES, abi.KVM_MEM_READONLY, abi.KVM_MEM_GUEST_MEMFD, abi.KVM_MEM_USERFAULT)
GMEM_FLAGS = abi.GUEST_MEMFD_FLAG_MMAP | abi.GUEST_MEMFD_FLAG_INIT_SHARED


def edge_cases() -> list[tuple[str, list[Call]]]:
    """The fixed list: each flag alone and combined, unknown bits, alignment, size 0, overlaps,
    moves, flag changes, slot ids at and past the limit, address-space bits, sizes near 2^63 and
    2^64, user addresses at the user/kernel boundary, guest_memfd offsets and sizes, foreign and
    non-guest_memfd fds."""
    cases: list[tuple[str, list[Call]]] = []
    add = cases.append
    for flags in range(16):  # every combination of the four flag bits (bit 3: KVM_MEM_USERFAULT, v3 only)
        if flags & abi.KVM_MEM_GUEST_MEMFD:
            add((f"flags {flags:#x} with a guest_memfd", [gmem_create(MB), region(0, 0, MB, P, flags, G0)]))
        else:
            add((f"flags {flags:#x}", [region(0, 0, MB, P, flags)]))
    for bit in (4, 5, 8, 16, 31):
        add((f"unknown flag bit {bit}", [region(0, 0, MB, P, 1 << bit)]))
    add(("gpa not page aligned", [region(0, 0x800, MB, P)]))
    add(("size not page aligned", [region(0, 0, MB + 0x800, P)]))
    add(("uaddr not page aligned", [region(0, 0, MB, Ref("pool", 0x10))]))
    add(("size 0 creates nothing", [region(0, 0, 0, P)]))
    add(("delete", [region(0, 0, MB, P), region(0, 0, 0, P)]))
    add(("delete twice", [region(0, 0, MB, P), region(0, 0, 0, P), region(0, 0, 0, P)]))
    add(("overlap", [region(0, 0, MB, P), region(1, MB // 2, MB, P)]))
    add(("adjacent", [region(0, 0, MB, P), region(1, MB, MB, P)]))
    add(("same slot again, nothing changed", [region(0, 0, MB, P), region(0, 0, MB, P)]))
    add(("move", [region(0, 0, MB, P), region(0, 2 * MB, MB, P)]))
    add(("move onto another slot", [region(0, 0, MB, P), region(1, 2 * MB, MB, P), region(0, 2 * MB, MB, P)]))
    add(("resize", [region(0, 0, MB, P), region(0, 0, 2 * MB, P)]))
    add(("new uaddr", [region(0, 0, MB, P), region(0, 0, MB, Ref("pool", PAGE_SIZE))]))
    for old, new in ((0, 1), (1, 0), (0, 2), (2, 0), (0, 8), (8, 0), (1, 3)):
        add((f"flags {old:#x} -> {new:#x}", [region(0, 0, MB, P, old), region(0, 0, MB, P, new)]))
    add(("guest_memfd slot: flags 0 -> move", [gmem_create(MB), region(0, 0, MB, P, 4, G0), region(0, MB, MB, P, 4, G0)]))
    add(("guest_memfd slot: same again", [gmem_create(MB), region(0, 0, MB, P, 4, G0), region(0, 0, MB, P, 4, G0)]))
    add(("guest_memfd slot: drop the flag", [gmem_create(MB), region(0, 0, MB, P, 4, G0), region(0, 0, MB, P, 0)]))
    for slot in (32763, 32764, 32765, 32767, 32768, 0xFFFF, 0x1_0000, 0x1_0001, 0x2_0000, 0xFFFF_FFFF):
        add((f"slot {slot:#x}", [region(slot, 0, MB, P)]))
    for size in (1 << 63, (1 << 64) - PAGE_SIZE, (1 << 31) << 12, ((1 << 31) - 1) << 12):
        add((f"memory_size {size:#x}", [region(0, 0, size, P)]))
    for gpa in ((1 << 63), (1 << 64) - PAGE_SIZE, (1 << 64) - 2 * PAGE_SIZE, (1 << 52), 1 << 48):
        add((f"guest_phys_addr {gpa:#x}", [region(0, gpa, PAGE_SIZE, P)]))
    for uaddr in (0, USER_TOP - 2 * PAGE_SIZE, USER_TOP - PAGE_SIZE, USER_TOP, (1 << 63) - PAGE_SIZE, 1 << 63, U64 - PAGE_SIZE + 1):
        add((f"userspace_addr {uaddr:#x} size 0x1000", [region(0, 0, PAGE_SIZE, uaddr)]))
    for size, flags in ((MB, 0), (PAGE_SIZE, 0), (0, 0), (0x800, 0), (1 << 63, 0), (U64 - PAGE_SIZE + 1, 0),
                        (MB, 1), (MB, 2), (MB, 3), (MB, 4), (MB, 1 << 63)):
        add((f"create_guest_memfd size {size:#x} flags {flags:#x}", [gmem_create(size, flags)]))
    for offset in (0, PAGE_SIZE, 0x800, MB - PAGE_SIZE, MB, 2 * MB, 1 << 63, U64 - PAGE_SIZE + 1):
        add((f"guest_memfd_offset {offset:#x}", [gmem_create(MB), region(0, 0, PAGE_SIZE, P, 4, G0, offset)]))
    add(("guest_memfd range bound twice", [gmem_create(MB), region(0, 0, MB, P, 4, G0), region(1, MB, MB, P, 4, G0)]))
    add(("guest_memfd halves", [gmem_create(MB), region(0, 0, MB // 2, P, 4, G0), region(1, MB, MB // 2, P, 4, G0, MB // 2)]))
    add(("guest_memfd rebound after delete", [gmem_create(MB), region(0, 0, MB, P, 4, G0), region(0, 0, 0, P, 4, G0), region(1, MB, MB, P, 4, G0)]))
    for ref in (Ref("foreign-gmem"), Ref("not-gmem"), Ref("bad-fd")):
        add((f"guest_memfd {ref}", [region(0, 0, PAGE_SIZE, P, 4, ref)]))
    add(("guest_memfd without the flag is ignored", [region(0, 0, PAGE_SIZE, P, 0, Ref("bad-fd"), 0x800)]))
    add(("set_memory_attributes private", [region(0, 0, MB, P), attributes(0, MB, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)]))
    add(("set_memory_attributes shared", [attributes(0, MB, 0)]))
    return cases


# --- the random generator ----------------------------------------------------------------------------
def _pick(rng: random.Random, choices: Sequence[Any]) -> Any:
    return choices[rng.randrange(len(choices))]


def random_call(rng: random.Random, ngmem: int) -> Call:
    """One call, mostly well-formed (so that slots exist and later calls can move, resize or
    delete them), with unusual values mixed in."""
    r = rng.random()
    if r < 0.15:
        size = _pick(rng, [MB, PAGE_SIZE, 2 * MB, 0, 0x800, 1 << 63, U64 - PAGE_SIZE + 1])
        flags = _pick(rng, [0, 0, GMEM_FLAGS, abi.GUEST_MEMFD_FLAG_MMAP, abi.GUEST_MEMFD_FLAG_INIT_SHARED, 1 << rng.randrange(2, 64)])
        return gmem_create(size, flags)
    if r < 0.18:
        return attributes(rng.randrange(4) * MB, MB, rng.choice((0, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)))
    slot = _pick(rng, [rng.randrange(4)] * 8 + [32763, 32764, 0x1_0000 | rng.randrange(4), rng.randrange(1 << 32)])
    flags = _pick(rng, [0] * 6 + [abi.KVM_MEM_LOG_DIRTY_PAGES, abi.KVM_MEM_READONLY, abi.KVM_MEM_GUEST_MEMFD,
                                  abi.KVM_MEM_READONLY | abi.KVM_MEM_LOG_DIRTY_PAGES, abi.KVM_MEM_USERFAULT,
                                  rng.randrange(16), 1 << rng.randrange(4, 32)])
    gpa = _pick(rng, [rng.randrange(8) * MB // 2] * 8 + [0x800, 1 << 63, U64 - PAGE_SIZE + 1, 1 << 52])
    size = _pick(rng, [MB, MB, MB // 2, PAGE_SIZE, 2 * MB, 0, 0x800, 1 << 63, U64 - PAGE_SIZE + 1, (1 << 31) << 12])
    uaddr = _pick(rng, [Ref("pool", 0)] * 6 + [Ref("pool", rng.randrange(POOL_PAGES) * PAGE_SIZE), Ref("pool", 0x10), 0,
                                               USER_TOP - PAGE_SIZE * rng.randrange(1, 3), USER_TOP, 1 << 63])
    gmem: Any = 0
    if flags & abi.KVM_MEM_GUEST_MEMFD or rng.random() < 0.05:
        gmem = _pick(rng, [Ref("gmem", rng.randrange(ngmem)) if ngmem else Ref("bad-fd")] * 6
                     + [Ref("foreign-gmem"), Ref("not-gmem"), Ref("bad-fd")])
    offset = _pick(rng, [0] * 6 + [MB // 2, 0x800, 1 << 63, U64 - PAGE_SIZE + 1])
    return region(slot, gpa, size, uaddr, flags, gmem, offset)


#: what an argument is replaced with when a reproducer is reduced (:func:`plain`): values the
#: random generator never uses, so the replacement overlaps nothing
PLAIN: dict[str, Any] = {"slot": 9, "guest_phys_addr": 0x4000_0000, "memory_size": PAGE_SIZE,
                         "userspace_addr": Ref("pool", 0), "guest_memfd_offset": 0}


def unusual(call: Call) -> dict[str, str]:
    """The arguments of a ``set_user_memory_region2`` call that are out of the ordinary, each with
    a short tag: a disagreement's class is the op, both results and the tags that matter."""
    if call.op != "set_user_memory_region2":
        return {}
    args = dict(call.args)
    tags: dict[str, str] = {}
    slot = args["slot"]
    if slot >> 16:
        tags["slot"] = "slot:address-space"
    elif slot >= 32763:
        tags["slot"] = f"slot:{slot}"
    gpa, size = args["guest_phys_addr"], args["memory_size"]
    if gpa % PAGE_SIZE:
        tags["guest_phys_addr"] = "gpa:unaligned"
    elif gpa >= 1 << 40:
        tags["guest_phys_addr"] = "gpa:huge"
    if size % PAGE_SIZE:
        tags["memory_size"] = "size:unaligned"
    elif size == 0:
        tags["memory_size"] = "size:0"
    elif size >= 1 << 40:
        tags["memory_size"] = "size:huge"
    uaddr = args["userspace_addr"]
    if isinstance(uaddr, Ref):
        if uaddr.index % PAGE_SIZE:
            tags["userspace_addr"] = "uaddr:unaligned"
    elif uaddr == 0:
        tags["userspace_addr"] = "uaddr:0"
    elif uaddr >= USER_TOP - 2 * PAGE_SIZE:
        tags["userspace_addr"] = "uaddr:near-or-past-2^47"
    flags = args["flags"]
    if flags & ~(abi.KVM_MEM_LOG_DIRTY_PAGES | abi.KVM_MEM_READONLY | abi.KVM_MEM_GUEST_MEMFD):
        tags["flags"] = "flags:unknown-or-userfault"
    gmem = args["guest_memfd"]
    if isinstance(gmem, Ref) and gmem.kind != "gmem":
        tags["guest_memfd"] = f"gmem:{gmem.kind}"
    offset = args["guest_memfd_offset"]
    if offset % PAGE_SIZE:
        tags["guest_memfd_offset"] = "offset:unaligned"
    elif offset >= 1 << 40:
        tags["guest_memfd_offset"] = "offset:huge"
    return tags


def plain(call: Call, name: str) -> Call:
    """``call`` with argument ``name`` made ordinary (flags lose their unknown bits, a foreign or
    bad fd becomes gmem#0, the rest take :data:`PLAIN`)."""
    args = dict(call.args)
    if name == "flags":
        args[name] &= abi.KVM_MEM_LOG_DIRTY_PAGES | abi.KVM_MEM_READONLY | abi.KVM_MEM_GUEST_MEMFD
    elif name == "guest_memfd":
        args[name] = Ref("gmem", 0)
    else:
        args[name] = PLAIN[name]
    return Call(call.op, tuple(args.items()))


def random_sequences(seed: int, count: int) -> Iterator[list[Call]]:
    """Sequences of 1-8 calls, ``count`` calls in all, reproducible from ``seed``."""
    rng = random.Random(seed)
    left = count
    while left > 0:
        n = min(left, rng.randint(1, 8))
        calls: list[Call] = []
        ngmem = 0
        for _ in range(n):
            call = random_call(rng, ngmem)
            if call.op == "create_guest_memfd":
                ngmem += 1
            calls.append(call)
        left -= n
        yield calls


# --- running one side ------------------------------------------------------------------------------
class _Side:
    """One side of the comparison: runs calls, resolves refs, returns 0 or the errno."""

    def __init__(self) -> None:
        self.gmems: list[Any] = []

    def close(self) -> None:
        """Release what the side holds (the model side holds nothing outside Python)."""

    def apply(self, call: Call) -> int:
        try:
            getattr(self, call.op)(**dict(call.args))
        except KvmError as exc:
            return exc.errno
        return 0


class RealSide(_Side):
    """A fresh VM on ``/dev/kvm``; refs resolve to real fds and addresses."""

    def __init__(self, system: System, env: Env) -> None:
        super().__init__()
        self.env = env
        self.vm: RealVM = system.create_vm()

    def close(self) -> None:
        self.vm.close()

    def fd(self, ref: Any) -> int:
        if not isinstance(ref, Ref):
            return int(ref)
        if ref.kind == "gmem":
            return self.gmems[ref.index].fd if ref.index < len(self.gmems) else BAD_FD
        return {"foreign-gmem": self.env.foreign_fd, "not-gmem": self.env.system.fd, "bad-fd": BAD_FD}[ref.kind]

    def set_user_memory_region2(self, slot: int, flags: int, guest_phys_addr: int, memory_size: int, userspace_addr: Any,
                                guest_memfd: Any, guest_memfd_offset: int) -> None:
        self.vm.set_user_memory_region(slot, guest_phys_addr, memory_size, self.env.addr(userspace_addr), flags,
                                       self.fd(guest_memfd), guest_memfd_offset)

    def create_guest_memfd(self, size: int, flags: int) -> None:
        self.gmems.append(self.vm.create_guest_memfd(size, flags))

    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int) -> None:
        self.vm.set_memory_attributes(address, size, attributes, flags)


class ModelSide(_Side):
    """A fresh model VM (``make_vm()``); refs resolve to the model's own guest_memfd numbers."""

    def __init__(self, make_vm: Callable[[], Any], env: Env) -> None:
        super().__init__()
        self.env = env
        self.vm = make_vm()

    def fd(self, ref: Any) -> int:
        if not isinstance(ref, Ref):
            return int(ref)
        if ref.kind == "gmem":
            return self.gmems[ref.index] if ref.index < len(self.gmems) else BAD_FD
        return {"foreign-gmem": self.env.model_foreign_fd, "not-gmem": self.env.model_not_gmem_fd, "bad-fd": BAD_FD}[ref.kind]

    def set_user_memory_region2(self, slot: int, flags: int, guest_phys_addr: int, memory_size: int, userspace_addr: Any,
                                guest_memfd: Any, guest_memfd_offset: int) -> None:
        self.vm.set_user_memory_region(slot, guest_phys_addr, memory_size, self.env.addr(userspace_addr), flags,
                                       guest_memfd=self.fd(guest_memfd) if flags & abi.KVM_MEM_GUEST_MEMFD else None,
                                       guest_memfd_offset=guest_memfd_offset)

    def create_guest_memfd(self, size: int, flags: int) -> None:
        self.gmems.append(self.vm.create_guest_memfd(size, flags))

    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int) -> None:
        self.vm.set_memory_attributes(address, size, attributes, flags)


class Env:
    """What a whole run shares: ``/dev/kvm``, the address pool, a guest_memfd of another VM (real
    and model), and an fd that is no guest_memfd (real: ``/dev/kvm``; model: another model VM's
    fd where the model numbers its files process-wide)."""

    def __init__(self, system: System, make_vm: Callable[[], Any]) -> None:
        self.system = system
        self.pool = HostMapping(POOL_PAGES * PAGE_SIZE)
        self.other_vm: RealVM | None = None
        try:
            self.other_vm = system.create_vm()
            self.foreign_fd = self.other_vm.create_guest_memfd(MB).fd
        except BaseException:
            self.close()
            raise
        # A model that numbers each VM's files from 3 cannot be shown another VM's file: give it
        # numbers it does not know. One that numbers files process-wide (two VMs' guest_memfds get
        # different numbers) gets the real thing: another model VM's guest_memfd and the VM's own fd.
        self.other_model_vm = make_vm()  # kept alive: its files stay open while the run lasts
        first, second = self.other_model_vm.create_guest_memfd(MB), make_vm().create_guest_memfd(MB)
        self.model_foreign_fd = first if first != second else MODEL_FOREIGN_FD
        vm_fd = getattr(self.other_model_vm, "fd", None)
        self.model_not_gmem_fd = vm_fd if isinstance(vm_fd, int) and first != second else MODEL_NOT_GMEM_FD

    def addr(self, value: Any) -> int:
        if isinstance(value, Ref):
            return self.pool.addr + value.index
        return int(value)

    def close(self) -> None:
        if self.other_vm is not None:
            self.other_vm.close()
            self.other_vm = None
        self.pool.close()


# --- comparing -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Disagreement:
    """One class: the op, each side's result, the tags; how often; the shortest reproducer."""

    op: str
    real: int
    model: int
    tags: tuple[str, ...]
    count: int = 0
    reproducer: list[Call] = field(default_factory=list)
    expected: str | None = None

    @property
    def key(self) -> tuple[str, int, int, tuple[str, ...]]:
        return (self.op, self.real, self.model, self.tags)

    def title(self) -> str:
        tags = f" [{', '.join(self.tags)}]" if self.tags else ""
        return f"{self.op}: real {strerror(self.real)}, model {strerror(self.model)}{tags}"

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "real": strerror(self.real), "model": strerror(self.model), "tags": list(self.tags),
                "count": self.count, "reproducer": [c.text() for c in self.reproducer], "expected": self.expected}


@dataclass(slots=True)
class CallReport:
    calls: int = 0
    agreed: int = 0
    classes: dict[tuple[str, int, int, tuple[str, ...]], Disagreement] = field(default_factory=dict)
    edge_calls: int = 0
    edge_agreed: int = 0

    @property
    def rate(self) -> float:
        return self.agreed / self.calls if self.calls else 1.0


class Comparer:
    """Runs sequences on both sides and collects the disagreements."""

    def __init__(self, system: System, make_vm: Callable[[], Any]) -> None:
        self.system = system
        self.make_vm = make_vm
        self.env = Env(system, make_vm)
        self.report = CallReport()

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Comparer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fresh(self, agreed: list[Call]) -> tuple[RealSide, ModelSide]:
        real, model = RealSide(self.system, self.env), ModelSide(self.make_vm, self.env)
        try:
            for call in agreed:
                a, b = real.apply(call), model.apply(call)
                if a != b:  # cannot happen for calls that agreed before, unless a side is not deterministic
                    raise RuntimeError(f"replay of {call.text()} gave real {strerror(a)}, model {strerror(b)}")
        except BaseException:
            real.close()
            raise
        return real, model

    def run(self, calls: list[Call]) -> list[tuple[Call, int, int]]:
        """Run one sequence; returns (call, real, model) for each call."""
        results = []
        agreed: list[Call] = []
        real, model = self._fresh([])
        try:
            for call in calls:
                a, b = real.apply(call), model.apply(call)
                results.append((call, a, b))
                if a == b:
                    agreed.append(call)
                    continue
                self._record(call, a, b, agreed)
                real.close()
                real, model = self._fresh(agreed)  # back to the same state, without the call
        finally:
            real.close()
        return results

    def _record(self, call: Call, a: int, b: int, prefix: list[Call]) -> None:
        """Reduce the disagreement (earlier calls dropped, unusual arguments made plain while it
        stays), then count it in the class of its op, both results and the tags that remain."""
        kept = list(prefix)
        for i in range(len(kept) - 1, -1, -1):
            trial = kept[:i] + kept[i + 1:]
            if self._reproduces(trial, call, a, b):
                kept = trial
        for name in list(unusual(call)):
            trial_call = plain(call, name)
            if self._reproduces(kept, trial_call, a, b):
                call = trial_call
        tags = tuple(sorted(unusual(call).values()))
        key = (call.op, a, b, tags)
        cls = self.report.classes.get(key)
        if cls is None:
            cls = self.report.classes[key] = Disagreement(call.op, a, b, tags, reproducer=[*kept, call])
        elif len(kept) + 1 < len(cls.reproducer):
            cls.reproducer = [*kept, call]
        cls.count += 1

    def _reproduces(self, prefix: list[Call], call: Call, a: int, b: int) -> bool:
        real, model = RealSide(self.system, self.env), ModelSide(self.make_vm, self.env)
        try:
            for c in prefix:
                if real.apply(c) != model.apply(c):
                    return False
            return (real.apply(call), model.apply(call)) == (a, b)
        finally:
            real.close()

    def count(self, results: list[tuple[Call, int, int]], edge: bool = False) -> None:
        for _call, a, b in results:
            self.report.calls += 1
            self.report.agreed += a == b
            if edge:
                self.report.edge_calls += 1
                self.report.edge_agreed += a == b
