"""REPORT SUPPORTED OPERATION CODES (SPC-4 6.35): the all-commands list (with and without
command timeouts descriptors) parses and lists each command once with its real CDB
length; the one-command forms agree with it; the CDB USAGE DATA matches what the device
really accepts (reserved bits outside it are refused with a field pointer on them, claimed
flag bits are accepted); every listed command is served and every unlisted operation code
or service action is reported unsupported and refused; invalid REPORTING OPTIONS are
refused; the allocation length rule (SPC-4 4.2.5.6) holds.

Commands are probed with harmless CDBs (LBA 0, one block or nothing, the buffers they
need) on the module's shared LUN: a refused probe changes nothing, and an accepted one
writes zeroes to LBA 0 at most (FORMAT UNIT formats; no test here reads the medium).
"""

from __future__ import annotations

import dataclasses
import struct

import pytest

from tcmu_harness.caps import Capabilities, command_name
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, ServiceAction, Status

pytestmark = pytest.mark.vm

_ALLOC = 16384
_BUFFER = _ALLOC + 512  # larger than the allocation length, to see a device ignore it
_ONE_ALLOC = 512
_DESCRIPTOR = struct.Struct(">BxHxBH")  # OPCODE, SERVICE ACTION, CTDP|SERVACTV, CDB LENGTH
_TIMEOUTS_LENGTH = 0x0A  # COMMAND TIMEOUTS DESCRIPTOR LENGTH (SPC-4 6.35.4)
_SERVACTV, _CTDP = 0x01, 0x02
_ONE_CTDP = 0x80  # one-command parameter data byte 1
_SUPPORTED = {0b011, 0b101}  # SUPPORT: standard / vendor specific
_NOT_SUPPORTED = 0b001
_GROUP_CDB_LENGTH = {0: 6, 1: 10, 2: 10, 3: 12, 4: 16, 5: 12, 6: 10, 7: 10}  # as Linux sends
_STANDARD_GROUPS = {0, 1, 2, 4, 5}  # groups whose CDB length SPC-4 4.2.2 fixes
_VARIABLE_LENGTH = 0x7F
# Answered by the kernel (LIO) before the handler sees them: REPORT LUNS, persistent
# reservations and RESERVE/RELEASE.
_KERNEL_OPCODES = {Opcode.REPORT_LUNS, Opcode.PERSISTENT_RESERVE_IN,
                   Opcode.PERSISTENT_RESERVE_OUT, Opcode.RESERVE_6, Opcode.RELEASE_6,
                   Opcode.RESERVE_10, Opcode.RELEASE_10}  # fmt: skip
_SA_OPCODE_FIELD = 0x1F  # byte 1 bits 4-0: SERVICE ACTION of 0x9E/0xA3-style opcodes
_ACCEPTED = (Status.GOOD, Status.CONDITION_MET)

Key = tuple[int, int | None]  # (opcode, service action)


@dataclasses.dataclass(frozen=True)
class Listed:
    """One command descriptor of the all-commands parameter data (SPC-4 6.35.2)."""

    opcode: int
    sa: int | None
    cdb_len: int
    raw: bytes

    @property
    def key(self) -> Key:
        return (self.opcode, self.sa)

    @property
    def name(self) -> str:
        return command_name(self.opcode, self.sa)


@dataclasses.dataclass(frozen=True)
class OneCommand:
    """One-command parameter data (SPC-4 6.35.3)."""

    support: int
    ctdp: bool
    cdb_size: int
    usage: bytes
    timeouts: bytes
    length_ok: bool  # the transfer is exactly 4 + CDB SIZE (+ 12 with CTDP) bytes

    @classmethod
    def parse(cls, data: bytes) -> OneCommand:
        if len(data) < 4:
            return cls(0, False, 0, b"", b"", False)
        ctdp = bool(data[1] & _ONE_CTDP)
        size = int.from_bytes(data[2:4], "big")
        usage = data[4 : 4 + size]
        timeouts = data[4 + size : 4 + size + 12] if ctdp else b""
        return cls(data[1] & 0x07, ctdp, size, usage, timeouts,
                   len(data) == 4 + size + (12 if ctdp else 0))  # fmt: skip


def _parse_all(data: bytes, rctd: bool) -> tuple[list[Listed], list[str]]:
    problems = []
    if len(data) < 4:
        return [], [f"{len(data)} bytes: no COMMAND DATA LENGTH"]
    length = int.from_bytes(data[:4], "big")
    if len(data) != min(_ALLOC, 4 + length):
        problems.append(f"COMMAND DATA LENGTH {length} but {len(data)} bytes returned")
    size = _DESCRIPTOR.size + (12 if rctd else 0)
    if length % size:
        problems.append(f"COMMAND DATA LENGTH {length} is not a multiple of {size}-byte "
                        "descriptors")  # fmt: skip
    listed, pos = [], 4
    while pos + _DESCRIPTOR.size <= min(len(data), 4 + length):
        opcode, sa, flags, cdb_len = _DESCRIPTOR.unpack_from(data, pos)
        raw = data[pos : pos + size]
        where = f"descriptor at byte {pos} (opcode 0x{opcode:02x})"
        if bool(flags & _CTDP) != rctd:
            problems.append(f"{where}: CTDP {int(bool(flags & _CTDP))} with RCTD {int(rctd)}")
        if not flags & _SERVACTV and sa:
            problems.append(f"{where}: SERVICE ACTION 0x{sa:x} without SERVACTV")
        if data[pos + 1] or data[pos + 4]:
            problems.append(f"{where}: reserved bytes 1/4 are not zero")
        if rctd:
            timeouts = raw[_DESCRIPTOR.size :]
            if len(timeouts) < 2 or int.from_bytes(timeouts[:2], "big") != _TIMEOUTS_LENGTH:
                problems.append(f"{where}: command timeouts DESCRIPTOR LENGTH "
                                f"{timeouts[:2].hex()} is not 000a")  # fmt: skip
        listed.append(Listed(opcode, sa if flags & _SERVACTV else None, cdb_len, raw))
        pos += size
    return listed, problems


@dataclasses.dataclass(frozen=True)
class Report:
    plain: CdbResult  # REPORTING OPTIONS 0, RCTD=0
    timed: CdbResult  # REPORTING OPTIONS 0, RCTD=1
    commands: list[Listed]
    problems: list[str]

    @property
    def keys(self) -> list[Key]:
        return [c.key for c in self.commands]

    def by_key(self) -> dict[Key, Listed]:
        return {c.key: c for c in self.commands}


@pytest.fixture(scope="module")
def report(shared_lun: Lun, caps: Capabilities) -> Report:
    caps.require(Opcode.MAINTENANCE_IN, ServiceAction.REPORT_SUPPORTED_OPERATION_CODES)
    plain, timed = shared_lun.cdbs([
        (cdb.report_supported_opcodes(alloc_len=_ALLOC), None, _BUFFER),
        (cdb.report_supported_opcodes(rctd=True, alloc_len=_ALLOC), None, _BUFFER),
    ])  # fmt: skip
    plain.expect_good()
    commands, problems = _parse_all(plain.data, rctd=False)
    return Report(plain, timed, commands, problems)


@pytest.fixture(scope="module")
def one_command(shared_lun: Lun, report: Report) -> dict[Key, tuple[CdbResult, CdbResult]]:
    """Per listed command: REPORTING OPTIONS 1 (2 with a service action), RCTD=0; and
    REPORTING OPTIONS 3 with RCTD=1."""
    commands = []
    for c in report.commands:
        options = 1 if c.sa is None else 2
        for opts, rctd in ((options, False), (3, True)):
            commands.append((cdb.report_supported_opcodes(
                reporting_options=opts, opcode=c.opcode, service_action=c.sa or 0, rctd=rctd,
                alloc_len=_ONE_ALLOC), None, _ONE_ALLOC + 64))  # fmt: skip
    results = shared_lun.cdbs(commands)
    return {c.key: (results[2 * i], results[2 * i + 1]) for i, c in enumerate(report.commands)}


def _usages(one_command: dict[Key, tuple[CdbResult, CdbResult]]) -> dict[Key, bytes]:
    out = {}
    for key, (result, _) in one_command.items():
        parsed = OneCommand.parse(result.data) if result.good else None
        if parsed and parsed.support in _SUPPORTED and parsed.usage:
            out[key] = parsed.usage
    return out


def _expect_invalid_field(result: CdbResult, byte: int, bit: int | None) -> None:
    """ILLEGAL REQUEST, INVALID FIELD IN CDB with the field pointer on `byte` and `bit`;
    for a multi-bit field (`bit` its leftmost bit, or None for a whole byte) the bit
    pointer may also be absent (BPV=0, SPC-4 4.5.2.4.2)."""
    __tracebackhide__ = True
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    allowed = {FieldPointer(True, byte, bit), FieldPointer(True, byte, None)}
    if bit is None:
        allowed.add(FieldPointer(True, byte, 7))
    pointer = result.decoded.field_pointer if result.decoded else None
    assert pointer in allowed, (
        f"field pointer {pointer}, expected {' or '.join(map(str, allowed))}\n"
        f"{result.describe()}"
    )


def _probe_list(report: Report) -> list[Listed]:
    """Listed commands the handler itself answers (not the kernel), fixed-length ones."""
    return [c for c in report.commands
            if c.opcode not in _KERNEL_OPCODES and c.opcode != _VARIABLE_LENGTH]  # fmt: skip


def _harmless(c: Listed, block_size: int) -> tuple[bytes, bytes | None, int]:
    """A CDB for the command that a device serving it accepts and that changes nothing
    but LBA 0 (zeroes): LBA 0, one block (COMPARE AND WRITE: none), small allocation
    lengths, the buffers the CDB implies."""
    op, length = c.opcode, c.cdb_len or _GROUP_CDB_LENGTH[c.opcode >> 5]
    one = bytes(block_size)

    def at(offset: int, value: int, size: int) -> None:
        if offset + size <= len(b) - 1:
            b[offset : offset + size] = value.to_bytes(size, "big")

    b = bytearray(length)
    b[0] = op
    if c.sa is not None:
        b[1] = c.sa & _SA_OPCODE_FIELD
    length_field = {1: (7, 2), 2: (7, 2), 5: (6, 4), 4: (10, 4)}.get(op >> 5)
    reads = {Opcode.READ_10, Opcode.READ_12, Opcode.READ_16}
    writes = {Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16, Opcode.WRITE_AND_VERIFY_10,
              Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16, Opcode.ORWRITE_16,
              Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16}  # fmt: skip
    one_block = {Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16,
                 Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16,
                 Opcode.PRE_FETCH_10, Opcode.PRE_FETCH_16}  # fmt: skip
    data_out: bytes | None = None
    data_in = 0
    if op == Opcode.READ_6:
        b[4], data_in = 1, block_size
    elif op == Opcode.WRITE_6:
        b[4], data_out = 1, one
    elif op in reads and length_field:
        at(length_field[0], 1, length_field[1])
        data_in = block_size
    elif op in writes and length_field:
        at(length_field[0], 1, length_field[1])
        data_out = one
    elif op in one_block and length_field:
        at(length_field[0], 1, length_field[1])
    elif op == Opcode.WRITE_ATOMIC_16:
        at(12, 1, 2)
        data_out = one
    elif op == Opcode.INQUIRY:
        at(3, 36, 2)
        data_in = 36
    elif op == Opcode.REQUEST_SENSE:
        b[4], data_in = 18, 18
    elif op == Opcode.MODE_SENSE_6:
        b[2], b[4], data_in = 0x3F, 252, 252
    elif op == Opcode.MODE_SENSE_10:
        b[2] = 0x3F
        at(7, 512, 2)
        data_in = 512
    elif op in (Opcode.MODE_SELECT_6, Opcode.MODE_SELECT_10):
        b[1] = 0x10  # PF=1, PARAMETER LIST LENGTH 0: nothing to change
    elif op == Opcode.START_STOP_UNIT:
        b[4] = 0x01  # START
    elif op == Opcode.READ_CAPACITY_10:
        data_in = 8
    elif op == Opcode.READ_DEFECT_DATA_10:
        at(7, 4, 2)
        data_in = 4
    elif op == Opcode.READ_DEFECT_DATA_12:
        at(6, 8, 4)
        data_in = 8
    elif op == Opcode.SERVICE_ACTION_IN_16:
        size = 32 if c.sa == ServiceAction.READ_CAPACITY_16 else 24
        at(10, size, 4)
        data_in = size
    elif op == Opcode.MAINTENANCE_IN:
        at(6, 16, 4)
        data_in = 16
    # TEST UNIT READY, PREVENT ALLOW MEDIUM REMOVAL, UNMAP (list length 0), COMPARE AND
    # WRITE (0 blocks), FORMAT UNIT (FMTDATA=0) and anything unknown: all zeroes.
    return bytes(b), data_out, data_in


_NACA = 0x04  # CONTROL byte


def _probe_bits(c: Listed, usage: bytes) -> list[tuple[int, int]]:
    """(byte, bit) of CDB bits the usage data clears, to set one at a time: every such bit
    of byte 1 (flags live there), the highest and lowest of every later byte, and NACA
    (CONTROL bit 2, SAM-5 5.2) when the usage data says ACA is not supported."""
    bits = []
    last = min(len(usage), c.cdb_len) - 1
    for i in range(1, last + 1):
        clear = ~usage[i] & 0xFF
        if i == 1 and c.sa is not None:
            clear &= ~_SA_OPCODE_FIELD  # the SERVICE ACTION field, not reserved bits
        candidates = [bit for bit in range(7, -1, -1) if clear >> bit & 1]
        if i > 1:
            chosen = {candidates[0], candidates[-1]} if candidates else set()
            if i == last and clear & _NACA:
                chosen.add(2)
            candidates = sorted(chosen, reverse=True)
        bits += [(i, bit) for bit in candidates]
    return bits


# --- the all-commands list -------------------------------------------------------------


def test_all_commands_list_has_consistent_lengths_and_descriptors(report: Report) -> None:
    """SPC-4 6.35.2: REPORTING OPTIONS 000b returns COMMAND DATA LENGTH and 8-byte command
    descriptors (CTDP=0 without RCTD; SERVICE ACTION 0 when SERVACTV=0) filling exactly
    that length; the rest of a larger buffer is residual."""
    assert not report.problems, "\n".join(report.problems)
    assert report.plain.resid == _BUFFER - len(report.plain.data)
    assert report.commands, "the list is empty"


def test_all_commands_list_with_rctd_adds_command_timeouts_descriptors(report: Report) -> None:
    """SPC-4 6.35.2, 6.35.4: with RCTD=1 every descriptor has CTDP=1 and is followed by a
    command timeouts descriptor (DESCRIPTOR LENGTH 0Ah): 20 bytes each, listing the same
    commands in the same order as without RCTD."""
    report.timed.expect_good()
    commands, problems = _parse_all(report.timed.data, rctd=True)
    assert not problems, "\n".join(problems)
    assert [(c.key, c.cdb_len) for c in commands] == [(c.key, c.cdb_len)
                                                     for c in report.commands]  # fmt: skip
    assert report.timed.resid == _BUFFER - len(report.timed.data)


def test_all_commands_list_names_each_command_once_in_a_stable_order(
    shared_lun: Lun, report: Report
) -> None:
    """SPC-4 6.35.2: each supported command (operation code, and service action where the
    operation code has them) is described once, an operation code either always or never
    with SERVACTV, and the list reads the same every time."""
    keys = report.keys
    repeated = sorted({command_name(*k) for k in keys if keys.count(k) > 1})
    assert not repeated, f"listed more than once: {repeated}"
    with_sa = {op for op, sa in keys if sa is not None}
    mixed = sorted(f"0x{op:02x}" for op, sa in keys if sa is None and op in with_sa)
    assert not mixed, f"operation codes listed both with and without SERVACTV: {mixed}"
    again = shared_lun.cdb(cdb.report_supported_opcodes(alloc_len=_ALLOC), data_in_len=_BUFFER)
    assert again.expect_good().data == report.plain.data


def test_listed_cdb_lengths_match_the_operation_code_group(report: Report) -> None:
    """SPC-4 4.2.2 (and 6.35.2 CDB LENGTH): group 0 operation codes have 6-byte CDBs,
    groups 1 and 2 10-byte, group 4 16-byte and group 5 12-byte CDBs."""
    wrong = [f"{c.name} (0x{c.opcode:02x}): CDB LENGTH {c.cdb_len}, its group has "
             f"{_GROUP_CDB_LENGTH[c.opcode >> 5]}-byte CDBs"
             for c in report.commands
             if c.opcode >> 5 in _STANDARD_GROUPS
             and c.cdb_len != _GROUP_CDB_LENGTH[c.opcode >> 5]]  # fmt: skip
    assert not wrong, "\n".join(wrong)


# --- the one-command forms -------------------------------------------------------------


def test_one_command_forms_agree_with_the_list(
    report: Report, one_command: dict[Key, tuple[CdbResult, CdbResult]]
) -> None:
    """SPC-4 6.35.3: for every listed command, REPORTING OPTIONS 001b (010b with a
    service action) and 011b report SUPPORT 011b (or 101b), CDB SIZE equal to the list's
    CDB LENGTH, CDB USAGE DATA of that size starting with the operation code, the same in
    both forms, and (with RCTD=1) CTDP=1 and a command timeouts descriptor of length 0Ah;
    exactly that many bytes are transferred."""
    problems = []
    for c in report.commands:
        plain_result, timed_result = one_command[c.key]
        for form, result, rctd in (("options 1/2", plain_result, False),
                                    ("options 3 RCTD=1", timed_result, True)):  # fmt: skip
            where = f"{c.name} ({form})"
            if not result.good:
                problems.append(f"{where}: refused\n{result.describe()}")
                continue
            one = OneCommand.parse(result.data)
            if one.support not in _SUPPORTED:
                problems.append(f"{where}: SUPPORT {one.support:03b}")
            elif one.cdb_size != c.cdb_len:
                problems.append(f"{where}: CDB SIZE {one.cdb_size}, listed {c.cdb_len}")
            elif not one.length_ok:
                problems.append(f"{where}: {len(result.data)} bytes for CDB SIZE "
                                f"{one.cdb_size}{' + timeouts' if rctd else ''}")  # fmt: skip
            elif not one.usage or one.usage[0] != c.opcode:
                problems.append(f"{where}: usage data starts {one.usage[:1].hex()}")
            elif one.ctdp != rctd:
                problems.append(f"{where}: CTDP {int(one.ctdp)} with RCTD {int(rctd)}")
            elif rctd and int.from_bytes(one.timeouts[:2], "big") != _TIMEOUTS_LENGTH:
                problems.append(f"{where}: timeouts DESCRIPTOR LENGTH {one.timeouts[:2].hex()}")
        if plain_result.good and timed_result.good:
            a, b = OneCommand.parse(plain_result.data), OneCommand.parse(timed_result.data)
            if a.usage != b.usage:
                problems.append(f"{c.name}: usage data differs between the forms: "
                                f"{a.usage.hex()} / {b.usage.hex()}")  # fmt: skip
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", ["options-1-for-a-service-action-opcode",
                                  "options-2-for-an-opcode-without-service-actions"])
def test_one_command_form_for_the_wrong_kind_of_opcode_is_invalid_field(
    shared_lun: Lun, report: Report, case: str
) -> None:
    """SPC-4 6.35.1: REPORTING OPTIONS 001b for an operation code that has service
    actions, or 010b for one that has none, is ILLEGAL REQUEST, INVALID FIELD IN CDB with
    the field pointer on REQUESTED OPERATION CODE (byte 3)."""
    with_sa = [c for c in report.commands if c.sa is not None]
    without = [c for c in report.commands if c.sa is None]
    pool, options = (with_sa, 1) if case.startswith("options-1") else (without, 2)
    if not pool:
        pytest.skip("the device lists no such operation code")
    c = pool[0]
    result = shared_lun.cdb(cdb.report_supported_opcodes(
        reporting_options=options, opcode=c.opcode, service_action=c.sa or 0,
        alloc_len=_ONE_ALLOC), data_in_len=_ONE_ALLOC)  # fmt: skip
    _expect_invalid_field(result, 3, None)


@pytest.mark.parametrize("options", [4, 5, 6, 7])
def test_reserved_reporting_options_are_invalid_field_in_cdb(
    shared_lun: Lun, report: Report, options: int
) -> None:
    """SPC-4 6.35.1: REPORTING OPTIONS 100b-111b are reserved: ILLEGAL REQUEST, INVALID
    FIELD IN CDB, field pointer byte 2 (bit 2, the field's leftmost bit)."""
    result = shared_lun.cdb(cdb.report_supported_opcodes(
        reporting_options=options, opcode=Opcode.INQUIRY, alloc_len=_ONE_ALLOC),
        data_in_len=_ONE_ALLOC)  # fmt: skip
    _expect_invalid_field(result, 2, 2)


@pytest.mark.parametrize(
    ("options", "alloc_len"),
    [(0, 0), (0, 4), (0, 13), (0, 100), (3, 2), (3, 6)],
    ids=["all-0", "all-4", "all-13", "all-100", "one-2", "one-6"],
)
def test_allocation_length_limits_the_transfer(
    shared_lun: Lun, report: Report, options: int, alloc_len: int
) -> None:
    """SPC-4 6.35.1, 4.2.5.6: the parameter data is cut to ALLOCATION LENGTH in a larger
    buffer (exactly its first bytes; the rest is residual); 0 transfers nothing."""
    c = next((c for c in report.commands if c.sa is None), report.commands[0])
    full, cut = shared_lun.cdbs([
        (cdb.report_supported_opcodes(reporting_options=options, opcode=c.opcode,
                                      service_action=c.sa or 0, alloc_len=alloc), None, _BUFFER)
        for alloc in (_ALLOC, alloc_len)
    ])  # fmt: skip
    expected = full.expect_good().data[:alloc_len]
    cut.expect_good()
    if not expected and cut.resid == 0 and len(cut.data) == _BUFFER:
        return  # TCMU cannot report a zero-byte transfer: the kernel returns the buffer
    assert len(cut.data) == len(expected), (
        f"{len(cut.data)} bytes for ALLOCATION LENGTH {alloc_len}, expected {len(expected)}")
    assert cut.data == expected
    assert cut.resid == _BUFFER - len(expected)


# --- what the list says against what the device does ----------------------------------------


def test_every_listed_command_is_served(shared_lun: Lun, report: Report) -> None:
    """SPC-4 6.35.2: a listed command is supported: a harmless CDB of it is never refused
    with INVALID COMMAND OPERATION CODE (20/00) (it may fail for other reasons)."""
    commands = _probe_list(report)
    results = shared_lun.cdbs([_harmless(c, shared_lun.block_size) for c in commands])
    refused = [f"{c.name} (0x{c.opcode:02x}{'' if c.sa is None else f'/{c.sa:02x}'})"
               for c, r in zip(commands, results, strict=True)
               if r.decoded and r.status == Status.CHECK_CONDITION
               and r.decoded.matches(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00)]  # fmt: skip
    assert not refused, f"listed but refused with 20/00: {refused}"


def test_reserved_bits_outside_the_usage_data_are_invalid_field_in_cdb(
    shared_lun: Lun, report: Report, one_command: dict[Key, tuple[CdbResult, CdbResult]]
) -> None:
    """SPC-4 6.35.3 (CDB USAGE DATA: a 0 bit is ignored or reserved) with SPC-4 4.2.5 and
    SAM-5 5.2: for every listed command whose harmless CDB is accepted, setting a bit the
    usage data clears (all of byte 1, the highest and lowest of each later byte, CONTROL
    included) is ILLEGAL REQUEST, INVALID FIELD IN CDB with the field pointer on that byte
    and bit: the usage data is what the device really checks."""
    usages = _usages(one_command)
    commands = [c for c in _probe_list(report) if c.key in usages]
    bases = [_harmless(c, shared_lun.block_size) for c in commands]
    accepted = [(c, base) for c, base, r in
                zip(commands, bases, shared_lun.cdbs(bases), strict=True)
                if r.status in _ACCEPTED and r.transport_ok]  # fmt: skip
    assert accepted, "no listed command accepted its harmless CDB"
    probes: list[tuple[str, int, int, tuple[bytes, bytes | None, int]]] = []
    for c, (base, out, n) in accepted:
        for byte, bit in _probe_bits(c, usages[c.key]):
            mutated = bytearray(base)
            mutated[byte] |= 1 << bit
            # SPC-4 4.5.2.4.2: a multi-bit field is pointed at by its most significant bit,
            # so any bit of byte 1's xxPROTECT field (bits 7-5) is reported as bit 7.
            pointed = 7 if byte == 1 and bit >= 5 and c.key[0] in _PROTECT_FIELD_OPCODES else bit
            probes.append((c.name, byte, pointed, (bytes(mutated), out, n)))
    results = shared_lun.cdbs([p[3] for p in probes])
    wrong = []
    for (name, byte, bit, _), result in zip(probes, results, strict=True):
        pointer = result.decoded.field_pointer if result.decoded else None
        if not (result.status == Status.CHECK_CONDITION and result.decoded is not None
                and result.decoded.matches(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)
                and not result.decoded.problems
                and pointer == FieldPointer(True, byte, bit)):  # fmt: skip
            got = (f"sense {result.decoded}" if result.decoded is not None
                   else f"status 0x{result.status:02x}")  # fmt: skip
            wrong.append(f"{name} byte {byte} bit {bit} ({result.cdb.hex(' ')}): {got}")
    skipped = sorted({c.name for c in commands} - {c.name for c, _ in accepted})
    assert not wrong, (f"{len(wrong)} of {len(probes)} bits outside the usage data not "
                       f"refused at their field:\n" + "\n".join(wrong[:15])
                       + (f"\n(not probed, harmless CDB refused: {skipped})" if skipped else ""))


# Commands whose CDB byte 1 bits 7-5 are one RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT field
# (SBC-3 5.x, SBC-4 5.48).
_PROTECT_FIELD_OPCODES = frozenset({
    Opcode.READ_10, Opcode.READ_12, Opcode.READ_16, Opcode.WRITE_10, Opcode.WRITE_12,
    Opcode.WRITE_16, Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16,
    Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16,
    Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16, Opcode.COMPARE_AND_WRITE, Opcode.ORWRITE_16,
    Opcode.WRITE_ATOMIC_16,
})  # fmt: skip

# (opcode, byte, bit, needs DPOFUA): one-bit flags a harmless CDB may carry, when the usage
# data claims them (SBC-3: DPO/FUA exist when MODE SENSE reports DPOFUA=1).
_FLAGS = [
    *((op, 1, bit, True) for op in (Opcode.READ_10, Opcode.READ_12, Opcode.READ_16,
                                     Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16,
                                     Opcode.ORWRITE_16, Opcode.WRITE_ATOMIC_16,
                                     Opcode.COMPARE_AND_WRITE) for bit in (4, 3)),
    *((op, 1, 4, True) for op in (Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16,
                                   Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12,
                                   Opcode.WRITE_AND_VERIFY_16)),
    *((op, 1, 1, False) for op in (Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16,
                                    Opcode.PRE_FETCH_10, Opcode.PRE_FETCH_16)),
    (Opcode.START_STOP_UNIT, 1, 0, False),  # IMMED
    (Opcode.MODE_SENSE_6, 1, 3, False),  # DBD
    (Opcode.MODE_SENSE_10, 1, 3, False),  # DBD
    (Opcode.MODE_SENSE_10, 1, 4, False),  # LLBAA
    (Opcode.INQUIRY, 1, 0, False),  # EVPD with PAGE CODE 0: the Supported VPD Pages page
]  # fmt: skip


def test_flag_bits_the_usage_data_claims_are_accepted(
    shared_lun: Lun, report: Report, caps: Capabilities,
    one_command: dict[Key, tuple[CdbResult, CdbResult]],
) -> None:
    """SPC-4 6.35.3, SBC-3 5.x (DPO, FUA, IMMED, DBD, LLBAA, EVPD): a one-bit flag the
    usage data claims is one the device evaluates, and where any value of it is valid the
    harmless CDB carrying it is accepted like the CDB without it."""
    usages = _usages(one_command)
    listed = {c.opcode: c for c in _probe_list(report) if c.sa is None and c.key in usages}
    probes = []
    for op, byte, bit, needs_dpofua in _FLAGS:
        c = listed.get(op)
        usage = usages.get((op, None), b"")
        if c is None or len(usage) <= byte or not usage[byte] >> bit & 1:
            continue
        if needs_dpofua and not caps.dpofua:
            continue
        base, out, n = _harmless(c, shared_lun.block_size)
        flagged = bytearray(base)
        flagged[byte] |= 1 << bit
        probes.append((f"{c.name} byte {byte} bit {bit}", (base, out, n),
                       (bytes(flagged), out, n)))
    if not probes:
        pytest.skip("the usage data claims none of the flags this test knows")
    results = shared_lun.cdbs([cmd for _, base, flagged in probes for cmd in (base, flagged)])
    wrong = []
    for i, (name, _, _) in enumerate(probes):
        base, flagged = results[2 * i], results[2 * i + 1]
        if base.status in _ACCEPTED and flagged.status not in _ACCEPTED:
            wrong.append(f"{name}: accepted without the flag, refused with it:\n"
                         f"{flagged.describe()}")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_unlisted_operation_codes_are_unsupported_and_refused(
    shared_lun: Lun, report: Report
) -> None:
    """SPC-4 6.35.3 and 4.2.5.1: every operation code the list does not name (vendor
    specific C0h-FFh and standard ones alike; the kernel's own and variable-length ones
    aside) reports SUPPORT 001b in the one-command form (REPORTING OPTIONS 011b) and is
    refused with ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (20/00) when sent."""
    listed = {c.opcode for c in report.commands}
    unlisted = [op for op in range(256) if op not in listed and op not in _KERNEL_OPCODES
                and op != _VARIABLE_LENGTH]  # fmt: skip
    asks = [(cdb.report_supported_opcodes(reporting_options=3, opcode=op,
                                          alloc_len=_ONE_ALLOC), None, _ONE_ALLOC)
            for op in unlisted]  # fmt: skip
    sends = [(bytes([op]) + bytes(_GROUP_CDB_LENGTH[op >> 5] - 1), None, 0) for op in unlisted]
    results = shared_lun.cdbs(asks + sends)
    wrong = []
    for op, ask, sent in zip(unlisted, results, results[len(unlisted) :], strict=False):
        if not ask.good or OneCommand.parse(ask.data).support != _NOT_SUPPORTED:
            wrong.append(f"0x{op:02x}: one-command form answers "
                         + (f"SUPPORT {OneCommand.parse(ask.data).support:03b}" if ask.good
                            else str(ask.decoded)))  # fmt: skip
        if not (sent.status == Status.CHECK_CONDITION and sent.decoded is not None
                and sent.decoded.matches(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00)
                and not sent.decoded.problems):  # fmt: skip
            wrong.append(f"0x{op:02x}: sent, answers "
                         + (str(sent.decoded) if sent.decoded else f"status {sent.status:#x}"))
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong[:15])


def test_unlisted_service_actions_are_unsupported_and_refused(
    shared_lun: Lun, report: Report
) -> None:
    """SPC-4 6.35.3 and 4.2.5.2: for an operation code with service actions, every service
    action the list does not name reports SUPPORT 001b (REPORTING OPTIONS 010b) and is
    refused with ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer on SERVICE ACTION
    (byte 1, bit 4 when a bit is given)."""
    listed = set(report.keys)
    opcodes = sorted({op for op, sa in listed if sa is not None} - _KERNEL_OPCODES
                     - {_VARIABLE_LENGTH})  # fmt: skip
    if not opcodes:
        pytest.skip("the device lists no operation code with service actions")
    pairs = [(op, sa) for op in opcodes for sa in range(32) if (op, sa) not in listed]
    asks = [(cdb.report_supported_opcodes(reporting_options=2, opcode=op, service_action=sa,
                                          alloc_len=_ONE_ALLOC), None, _ONE_ALLOC)
            for op, sa in pairs]  # fmt: skip
    sends = [(bytes([op, sa]) + bytes(_GROUP_CDB_LENGTH[op >> 5] - 2), None, 0)
             for op, sa in pairs]  # fmt: skip
    results = shared_lun.cdbs(asks + sends)
    wrong = []
    for (op, sa), ask, sent in zip(pairs, results, results[len(pairs) :], strict=False):
        name = f"0x{op:02x}/{sa:02x}"
        if not ask.good or OneCommand.parse(ask.data).support != _NOT_SUPPORTED:
            wrong.append(f"{name}: one-command form answers "
                         + (f"SUPPORT {OneCommand.parse(ask.data).support:03b}" if ask.good
                            else str(ask.decoded)))  # fmt: skip
        try:
            _expect_invalid_field(sent, 1, 4)
        except AssertionError as exc:
            wrong.append(f"{name}: sent: {str(exc).splitlines()[0]}, "
                         f"{sent.decoded or f'status {sent.status:#x}'}")  # fmt: skip
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong[:15])
