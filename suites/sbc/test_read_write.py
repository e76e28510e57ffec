"""READ and WRITE (6), (10), (12) and (16) (SBC-3 5.15-5.18, 5.25-5.28): the data path.

Covered, per CDB size where the field exists: a pattern written reads back equal (the
first LBA, the last LBA, several blocks, a range ending at the last LBA; neighbours
untouched); TRANSFER LENGTH 0 transfers nothing and is GOOD, except in the 6-byte CDBs
where it means 256 blocks; LBA range: an LBA past the end, LBA 2^n-1, a range crossing
the end (21/00, nothing written), a 16-byte range wrapping past 2^64, a 16-byte LBA with
a bit above bit 31 (not the LBA of its low 32 bits); the 21-bit LBA of the 6-byte CDBs;
DPO and FUA accepted with DPOFUA=1 (refused without); RDPROTECT/WRPROTECT without
protection information (24/00 on byte 1 bit 7); a data-out buffer shorter or longer than
the transfer (0E/03, nothing written); a data-in buffer smaller (24/00) or larger (GOOD,
the residual is the excess) than the transfer; TRANSFER LENGTH above MAXIMUM TRANSFER
LENGTH (Block Limits VPD), also with only the upper bytes of the field set (24/00); a
transfer of the maximum length (1 MiB, many data pages); data written with each CDB size
read back with each other; refusal of an unclaimed opcode (20/00).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_SMALL_AREA = 64 << 10  # bytes of a small area: small area n starts at (n + 1) * 64 KiB
_SMALL_AREAS = 120
_BIG_AREA = 2 << 20  # bytes of a big area (1 MiB transfers): big area k starts at 8 MiB + k * 2 MiB
_BIG_BASE = 8 << 20
_MAX_SG_IO = 1 << 20  # bytes SG_IO carries per command here
_LBA6_LIMIT = 1 << 21  # READ(6)/WRITE(6): a 21-bit LBA


@dataclasses.dataclass(frozen=True)
class ReadWrite:
    """READ and WRITE of one CDB size, with what differs between the sizes."""

    size: int
    read_opcode: int
    write_opcode: int
    length_byte: int  # TRANSFER LENGTH, most significant byte
    max_lba: int
    max_blocks: int  # the largest TRANSFER LENGTH the CDB can ask for
    index: int  # 0..3: which of a test's four areas this size uses

    def read(self, lba: int, blocks: int, **flags: bool | int) -> bytes:
        build = {6: cdb.read_6, 10: cdb.read_10, 12: cdb.read_12, 16: cdb.read_16}[self.size]
        return build(lba, blocks, **flags)  # type: ignore[operator]

    def write(self, lba: int, blocks: int, **flags: bool | int) -> bytes:
        build = {6: cdb.write_6, 10: cdb.write_10, 12: cdb.write_12, 16: cdb.write_16}[self.size]
        return build(lba, blocks, **flags)  # type: ignore[operator]

    def reaches(self, lba: int, blocks: int = 1) -> bool:
        """Whether the CDB can address [lba, lba+blocks)."""
        return lba + blocks - 1 <= self.max_lba and blocks <= self.max_blocks


RW6 = ReadWrite(6, Opcode.READ_6, Opcode.WRITE_6, 4, _LBA6_LIMIT - 1, 256, 0)
RW10 = ReadWrite(10, Opcode.READ_10, Opcode.WRITE_10, 7, 2**32 - 1, 0xFFFF, 1)
RW12 = ReadWrite(12, Opcode.READ_12, Opcode.WRITE_12, 6, 2**32 - 1, 2**32 - 1, 2)
RW16 = ReadWrite(16, Opcode.READ_16, Opcode.WRITE_16, 10, 2**64 - 1, 2**32 - 1, 3)
_ALL = [RW6, RW10, RW12, RW16]
_LONG = [RW10, RW12, RW16]  # the sizes with DPO, FUA and the protection field


def _claimed(caps: Capabilities, command: ReadWrite) -> ReadWrite:
    caps.require(command.read_opcode)
    caps.require(command.write_opcode)
    return command


def _ids(prefix: str, sizes: list[ReadWrite]) -> list[str]:
    return [f"{prefix}-{rw.size}" for rw in sizes]


# Every fixture needs READ and WRITE of its size (one lays data down or reads it back for
# the other); the id names the command under test.
@pytest.fixture(params=_ALL, ids=_ids("read-write", _ALL))
def rw(request: pytest.FixtureRequest, caps: Capabilities) -> ReadWrite:
    return _claimed(caps, request.param)


@pytest.fixture(params=_ALL, ids=_ids("read", _ALL))
def reader(request: pytest.FixtureRequest, caps: Capabilities) -> ReadWrite:
    return _claimed(caps, request.param)


@pytest.fixture(params=_ALL, ids=_ids("write", _ALL))
def writer(request: pytest.FixtureRequest, caps: Capabilities) -> ReadWrite:
    return _claimed(caps, request.param)


@pytest.fixture(params=_LONG, ids=_ids("read-write", _LONG))
def rw_long(request: pytest.FixtureRequest, caps: Capabilities) -> ReadWrite:
    return _claimed(caps, request.param)


@pytest.fixture(params=_LONG, ids=_ids("read", _LONG))
def reader_long(request: pytest.FixtureRequest, caps: Capabilities) -> ReadWrite:
    return _claimed(caps, request.param)


@pytest.fixture(params=_LONG, ids=_ids("write", _LONG))
def writer_long(request: pytest.FixtureRequest, caps: Capabilities) -> ReadWrite:
    return _claimed(caps, request.param)


@pytest.fixture
def rw16(caps: Capabilities) -> ReadWrite:
    return _claimed(caps, RW16)


# --- helpers -----------------------------------------------------------------------------------


def _small_area(lun: Lun, base: int, rw: ReadWrite) -> int:
    """First LBA of a test's own small area (64 KiB), one per test and CDB size; every
    area is within the 21-bit reach of READ(6)/WRITE(6)."""
    number = 4 * base + rw.index
    assert number < _SMALL_AREAS
    return (number + 1) * (_SMALL_AREA // lun.block_size)


def _big_area(lun: Lun, number: int) -> int:
    """First LBA of a big area (room for 1 MiB and a neighbour on each side)."""
    start = (_BIG_BASE + number * _BIG_AREA) // lun.block_size + 1
    if start + _BIG_AREA // lun.block_size > lun.blocks:
        pytest.skip(f"the LUN ({lun.size} bytes) is too small for the 1 MiB test areas")
    return start


def _max_transfer(caps: Capabilities) -> int:
    """MAXIMUM TRANSFER LENGTH in blocks, 0 when unreported (no limit stated)."""
    limits = caps.block_limits
    return limits.max_transfer if limits is not None else 0


def _largest(caps: Capabilities, lun: Lun, rw: ReadWrite) -> int:
    """The most blocks one command may carry: MAXIMUM TRANSFER LENGTH, what SG_IO carries,
    what the CDB can say."""
    blocks = min(_MAX_SG_IO // lun.block_size, rw.max_blocks)
    maximum = _max_transfer(caps)
    return min(blocks, maximum) if maximum else blocks


def _expect_blocks(result: CdbResult, expected: bytes, lun: Lun, lba: int, what: str) -> None:
    __tracebackhide__ = True
    assert_blocks_equal(result.expect_good().data, expected, lun.block_size, lba, what=what)


def _expect_out_of_range(result: CdbResult, what: str) -> None:
    __tracebackhide__ = True
    try:
        result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def _expect_field(result: CdbResult, asc: int, allowed: tuple[FieldPointer, ...],
                  what: str) -> None:
    """CHECK CONDITION, ILLEGAL REQUEST with this ASC and one of these field pointers."""
    __tracebackhide__ = True
    try:
        result.expect_check(SenseKey.ILLEGAL_REQUEST, asc)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None
    pointer = result.decoded.field_pointer if result.decoded else None
    assert pointer in allowed, (
        f"{what}: field pointer {pointer}, expected {' or '.join(map(str, allowed))}\n"
        f"{result.describe()}")


def _whole_field(byte: int) -> tuple[FieldPointer, FieldPointer]:
    """A field of whole bytes: BPV clear, or the bit pointer on its first bit (SPC-4
    4.5.2.4.2)."""
    return FieldPointer(True, byte, None), FieldPointer(True, byte, 7)


def _round_trip(lun: Lun, rw: ReadWrite, lba: int, blocks: int, seed: int) -> None:
    """With `rw`: lay a pattern over [lba-1, lba+blocks+1) (clipped to the LUN), write
    another over [lba, lba+blocks), read the span back: the new blocks, the old neighbours."""
    bs = lun.block_size
    first = max(lba - 1, 0)
    end = min(lba + blocks + 1, lun.blocks)
    before = pattern(first, end - first, bs, seed=seed)
    new = pattern(lba, blocks, bs, seed=seed + 1)
    start = (lba - first) * bs
    expected = before[:start] + new + before[start + len(new):]
    lay, write, read = lun.cdbs([
        (rw.write(first, end - first), before, 0),
        (rw.write(lba, blocks), new, 0),
        (rw.read(first, end - first), None, len(before)),
    ])  # fmt: skip
    lay.expect_good()
    write.expect_good()
    _expect_blocks(read, expected, lun, first,
                   f"READ({rw.size}) after WRITE({rw.size}) of {blocks} block(s) at LBA {lba}")


# --- claims ------------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [c for rw in _ALL for c in (rw.read_opcode, rw.write_opcode)],
                         ids=[f"{op}-{rw.size}" for rw in _ALL for op in ("read", "write")])
def test_read_write_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities, opcode: int
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00)."""
    caps.require_absent(opcode)
    rw = next(rw for rw in _ALL if opcode in (rw.read_opcode, rw.write_opcode))
    bs = shared_lun.block_size
    if opcode == rw.read_opcode:
        result = shared_lun.cdb(rw.read(1, 1), data_in_len=bs)
    else:
        result = shared_lun.cdb(rw.write(1, 1), data_out=pattern(1, 1, bs, seed=99))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


# --- data round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first-lba", "last-lba", "several-blocks",
                                   "ending-at-the-last-lba"])
def test_written_data_reads_back_equal(shared_lun: Lun, rw: ReadWrite, where: str) -> None:
    """SBC-3 5.15-5.18, 5.25-5.28: WRITE stores its data-out at LOGICAL BLOCK ADDRESS
    and READ of the same range returns it (GOOD); the blocks next to the range keep their
    data. The first and the last LBA are within the capacity (SBC-3 4.4)."""
    lun = shared_lun
    n = lun.blocks
    lba, blocks = {"first-lba": (0, 1), "last-lba": (n - 1, 1),
                   "several-blocks": (_small_area(lun, 0, rw) + 1, 8),
                   "ending-at-the-last-lba": (n - 8, 8)}[where]  # fmt: skip
    if not rw.reaches(max(lba - 1, 0), blocks + 2):
        pytest.skip(f"LBA {lba} is beyond the reach of the {rw.size}-byte CDB")
    _round_trip(lun, rw, lba, blocks, seed=100 + 10 * rw.size)


def test_transfer_length_zero_transfers_nothing_and_is_good(
    shared_lun: Lun, rw_long: ReadWrite
) -> None:
    """SBC-3 5.16-5.18, 5.26-5.28: TRANSFER LENGTH 0 means no logical block is
    transferred and is not an error: READ and WRITE with no data buffer are GOOD (also at
    the last LBA), and the medium is unchanged."""
    lun, rw, bs = shared_lun, rw_long, shared_lun.block_size
    lba, last = _small_area(lun, 1, rw), lun.blocks - 1
    before = pattern(lba, 2, bs, seed=200 + rw.size)
    last_before = pattern(last, 1, bs, seed=201 + rw.size)
    results = lun.cdbs([
        (rw.write(lba, 2), before, 0),
        (rw.write(last, 1), last_before, 0),
        (rw.write(lba, 0), None, 0),
        (rw.read(lba, 0), None, 0),
        (rw.write(last, 0), None, 0),
        (rw.read(last, 0), None, 0),
        (rw.read(lba, 2), None, 2 * bs),
        (rw.read(last, 1), None, bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_good()
    for what, result in zip([f"WRITE({rw.size}) of 0 blocks", f"READ({rw.size}) of 0 blocks",
                             f"WRITE({rw.size}) of 0 blocks at the last LBA",
                             f"READ({rw.size}) of 0 blocks at the last LBA"],
                            results[2:6], strict=True):
        try:
            result.expect_good()
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        assert not result.data, f"{what}: {len(result.data)} bytes of data-in"
    _expect_blocks(results[6], before, lun, lba, "the blocks after the 0-block commands")
    _expect_blocks(results[7], last_before, lun, last, "the last block after the 0-block commands")


def test_six_byte_transfer_length_zero_means_256_blocks(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.15, 5.25: in READ(6) and WRITE(6) a TRANSFER LENGTH of 0 means 256
    logical blocks: WRITE(6) stores 256 blocks (not one more), READ(6) returns them."""
    rw = _claimed(caps, RW6)
    lun, bs = shared_lun, shared_lun.block_size
    if _largest(caps, lun, rw) < 256:
        pytest.skip(f"256 blocks of {bs} bytes exceed MAXIMUM TRANSFER LENGTH or what SG_IO "
                    f"carries")
    lba = _big_area(lun, 0)
    if not rw.reaches(lba + 256):
        pytest.skip(f"LBA {lba + 256} is beyond the reach of the 6-byte CDB")
    data = pattern(lba, 256, bs, seed=300)
    after = pattern(lba + 256, 1, bs, seed=301)
    write_cdb, read_cdb = rw.write(lba, 256), rw.read(lba, 256)
    assert write_cdb[4] == 0 and read_cdb[4] == 0
    lay, write, read, neighbour = lun.cdbs([
        (rw.write(lba + 256, 1), after, 0),
        (write_cdb, data, 0),
        (read_cdb, None, len(data)),
        (rw.read(lba + 256, 1), None, bs),
    ])  # fmt: skip
    lay.expect_good()
    write.expect_good()
    assert read.resid == 0, f"READ(6) of 256 blocks: residual {read.resid}\n{read.describe()}"
    _expect_blocks(read, data, lun, lba, "READ(6) of 256 blocks after WRITE(6) of 256 blocks")
    _expect_blocks(neighbour, after, lun, lba + 256, "the block after the 256 written")


# --- LBA range ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first-lba-past-the-end", "lba-max"])
def test_read_beyond_the_last_lba_is_lba_out_of_range(
    shared_lun: Lun, reader: ReadWrite, where: str
) -> None:
    """SBC-3 5.15-5.18, 4.4: READ of an LBA past the last one (the capacity, or the
    largest LBA the CDB can hold) -> ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE
    (21/00)."""
    lun = shared_lun
    lba = lun.blocks if where == "first-lba-past-the-end" else reader.max_lba
    if lba > reader.max_lba:
        pytest.skip(f"the capacity is beyond the reach of the {reader.size}-byte CDB")
    result = lun.cdb(reader.read(lba, 1), data_in_len=lun.block_size)
    _expect_out_of_range(result, f"READ({reader.size}) of LBA {lba}")


@pytest.mark.parametrize("where", ["first-lba-past-the-end", "lba-max"])
def test_write_beyond_the_last_lba_is_lba_out_of_range(
    shared_lun: Lun, writer: ReadWrite, where: str
) -> None:
    """SBC-3 5.25-5.28, 4.4: WRITE of an LBA past the last one -> ILLEGAL REQUEST,
    LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00)."""
    lun = shared_lun
    lba = lun.blocks if where == "first-lba-past-the-end" else writer.max_lba
    if lba > writer.max_lba:
        pytest.skip(f"the capacity is beyond the reach of the {writer.size}-byte CDB")
    result = lun.cdb(writer.write(lba, 1), data_out=pattern(lba, 1, lun.block_size, seed=400))
    _expect_out_of_range(result, f"WRITE({writer.size}) of LBA {lba}")


def test_read_crossing_the_end_is_lba_out_of_range(shared_lun: Lun, reader: ReadWrite) -> None:
    """SBC-3 5.15-5.18, 4.4: READ whose LBA is valid but whose range ends past the last
    LBA (the last LBA and one more; 8 blocks from 4 before the end) -> 21/00."""
    lun, bs, n = shared_lun, shared_lun.block_size, shared_lun.blocks
    if not reader.reaches(n - 4, 4):
        pytest.skip(f"the capacity is beyond the reach of the {reader.size}-byte CDB")
    results = lun.cdbs([(reader.read(lba, blocks), None, blocks * bs)
                        for lba, blocks in ((n - 1, 2), (n - 4, 8))])
    for (lba, blocks), result in zip(((n - 1, 2), (n - 4, 8)), results, strict=True):
        _expect_out_of_range(result, f"READ({reader.size}) of {blocks} blocks at LBA {lba}")


def test_write_crossing_the_end_is_lba_out_of_range_and_writes_nothing(
    shared_lun: Lun, writer: ReadWrite
) -> None:
    """SBC-3 5.25-5.28, 4.4: WRITE whose range ends past the last LBA (the last LBA and
    one more; 8 blocks from 4 before the end) -> 21/00, and no block is written, not even
    those within the capacity."""
    lun, bs, n = shared_lun, shared_lun.block_size, shared_lun.blocks
    if not writer.reaches(n - 4, 4):
        pytest.skip(f"the capacity is beyond the reach of the {writer.size}-byte CDB")
    before = pattern(n - 4, 4, bs, seed=500 + writer.size)
    cases = ((n - 1, 2), (n - 4, 8))
    results = lun.cdbs(
        [(writer.write(n - 4, 4), before, 0)]
        + [(writer.write(lba, blocks), pattern(lba, blocks, bs, seed=501), 0)
           for lba, blocks in cases]
        + [(writer.read(n - 4, 4), None, 4 * bs)])  # fmt: skip
    results[0].expect_good()
    for (lba, blocks), result in zip(cases, results[1:-1], strict=True):
        _expect_out_of_range(result, f"WRITE({writer.size}) of {blocks} blocks at LBA {lba}")
    _expect_blocks(results[-1], before, lun, n - 4, "the last 4 blocks after the refusals")


@pytest.mark.parametrize("case", ["lba-max-2-blocks", "lba-max-minus-1-4-blocks"])
def test_sixteen_byte_range_wrapping_past_2_64_is_lba_out_of_range(
    shared_lun: Lun, rw16: ReadWrite, case: str
) -> None:
    """SBC-3 5.18, 5.28, 4.4: in the 16-byte CDBs LOGICAL BLOCK ADDRESS plus TRANSFER
    LENGTH may exceed 2^64; such a range is past the capacity -> 21/00 for READ(16) and
    WRITE(16), and the LBAs the sum wraps to (0, 1, ...) are not written."""
    lun, bs = shared_lun, shared_lun.block_size
    lba, blocks = {"lba-max-2-blocks": (2**64 - 1, 2),
                   "lba-max-minus-1-4-blocks": (2**64 - 2, 4)}[case]
    before = pattern(0, 4, bs, seed=600 + blocks)
    results = lun.cdbs([
        (cdb.write_16(0, 4), before, 0),
        (cdb.read_16(lba, blocks), None, blocks * bs),
        (cdb.write_16(lba, blocks), pattern(0, blocks, bs, seed=601), 0),
        (cdb.read_16(0, 4), None, 4 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    _expect_out_of_range(results[1], f"READ(16) of {blocks} blocks at LBA {lba:#x}")
    _expect_out_of_range(results[2], f"WRITE(16) of {blocks} blocks at LBA {lba:#x}")
    _expect_blocks(results[3], before, lun, 0, "LBAs 0-3 after the wrapping WRITE(16)")


@pytest.mark.parametrize("high", [32, 40, 63], ids=["bit-32", "bit-40", "bit-63"])
def test_sixteen_byte_lba_above_bit_31_is_out_of_range_and_touches_nothing(
    shared_lun: Lun, rw16: ReadWrite, high: int
) -> None:
    """SBC-3 5.18, 5.28: the 16-byte CDBs carry a 64-bit LBA; an LBA with a bit above
    bit 31 set is past the capacity of this LUN -> 21/00 for READ(16) and WRITE(16), and
    the LBA of its low 32 bits is neither read nor written (a handler keeping only the
    low 32 bits would serve that one)."""
    lun, bs = shared_lun, shared_lun.block_size
    low = _small_area(lun, 3, rw16)
    lba = (1 << high) + low
    before = pattern(low, 2, bs, seed=700 + high)
    results = lun.cdbs([
        (cdb.write_16(low, 2), before, 0),
        (cdb.read_16(lba, 2), None, 2 * bs),
        (cdb.write_16(lba, 2), pattern(low, 2, bs, seed=701 + high), 0),
        (cdb.read_16(low, 2), None, 2 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    _expect_out_of_range(results[1], f"READ(16) of LBA {lba:#x}")
    _expect_out_of_range(results[2], f"WRITE(16) of LBA {lba:#x}")
    _expect_blocks(results[3], before, lun, low, f"LBA {low} (the low 32 bits of {lba:#x})")


def test_six_byte_lba_bit_20_is_part_of_the_lba(shared_lun: Lun, caps: Capabilities) -> None:
    """SBC-3 5.15, 5.25: the LBA of READ(6)/WRITE(6) has 21 bits (byte 1 bits 4-0, bytes
    2-3): LBA 2^20 + a is past the capacity of this LUN -> 21/00 for both, and LBA a (the
    same without bit 20) is neither read nor written."""
    rw = _claimed(caps, RW6)
    lun, bs = shared_lun, shared_lun.block_size
    low = _small_area(lun, 13, rw)
    lba = (1 << 20) + low
    if lba < lun.blocks:
        pytest.skip(f"LBA {lba} is within the capacity ({lun.blocks} blocks)")
    before = pattern(low, 2, bs, seed=800)
    results = lun.cdbs([
        (rw.write(low, 2), before, 0),
        (rw.read(lba, 2), None, 2 * bs),
        (rw.write(lba, 2), pattern(low, 2, bs, seed=801), 0),
        (rw.read(low, 2), None, 2 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    _expect_out_of_range(results[1], f"READ(6) of LBA {lba:#x}")
    _expect_out_of_range(results[2], f"WRITE(6) of LBA {lba:#x}")
    _expect_blocks(results[3], before, lun, low, f"LBA {low} (LBA {lba:#x} without bit 20)")


def test_six_byte_cdbs_reach_the_highest_21_bit_lba_in_the_capacity(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.15, 5.25: READ(6)/WRITE(6) address every LBA below 2^21: the highest one
    within the capacity (the last LBA of a LUN of at most 2^21 blocks) is written and
    read back, through the 6-byte and the 16-byte CDBs."""
    rw = _claimed(caps, RW6)
    caps.require(Opcode.READ_16)
    caps.require(Opcode.WRITE_16)
    lun, bs = shared_lun, shared_lun.block_size
    lba = min(lun.blocks, _LBA6_LIMIT) - 1
    first, second = pattern(lba, 1, bs, seed=900), pattern(lba, 1, bs, seed=901)
    results = lun.cdbs([
        (cdb.write_16(lba, 1), first, 0),
        (rw.read(lba, 1), None, bs),
        (rw.write(lba, 1), second, 0),
        (cdb.read_16(lba, 1), None, bs),
    ])  # fmt: skip
    results[0].expect_good()
    _expect_blocks(results[1], first, lun, lba, f"READ(6) of LBA {lba} after WRITE(16)")
    results[2].expect_good()
    _expect_blocks(results[3], second, lun, lba, f"READ(16) of LBA {lba} after WRITE(6)")


# --- CDB flags ----------------------------------------------------------------------------------


def test_dpo_and_fua_are_honoured_when_dpofua_is_claimed(
    shared_lun: Lun, caps: Capabilities, rw_long: ReadWrite
) -> None:
    """SBC-3 5.16-5.18, 5.26-5.28, 6.4.1: with DPOFUA=1 in the mode parameter header the
    device supports DPO and FUA: READ and WRITE with FUA, DPO or both are GOOD and move
    the same data as without them."""
    if not caps.dpofua:
        pytest.skip("the device reports DPOFUA=0 (DPO and FUA not supported)")
    lun, rw, bs = shared_lun, rw_long, shared_lun.block_size
    lba = _small_area(lun, 4, rw)
    flag_sets = [{"fua": True}, {"dpo": True}, {"fua": True, "dpo": True}]
    commands: list[tuple[bytes, bytes | None, int]] = []
    written = []
    for number, flags in enumerate(flag_sets):
        data = pattern(lba, 2, bs, seed=1000 + 10 * rw.size + number)
        written.append(data)
        commands += [(rw.write(lba, 2, **flags), data, 0), (rw.read(lba, 2, **flags), None, 2 * bs)]
    results = lun.cdbs(commands)
    for number, flags in enumerate(flag_sets):
        names = "+".join(name.upper() for name in flags)
        write, read = results[2 * number : 2 * number + 2]
        try:
            write.expect_good()
        except AssertionError as exc:
            raise AssertionError(f"WRITE({rw.size}) with {names}: {exc}") from None
        _expect_blocks(read, written[number], lun, lba,
                       f"READ({rw.size}) with {names} after WRITE({rw.size}) with {names}")


def test_dpo_and_fua_are_invalid_field_in_cdb_without_dpofua(
    shared_lun: Lun, caps: Capabilities, rw_long: ReadWrite
) -> None:
    """SBC-3 6.4.1: DPOFUA=0 in the mode parameter header says DPO and FUA are not
    supported: READ or WRITE with either set -> ILLEGAL REQUEST, INVALID FIELD IN CDB
    (24/00) on byte 1 (bit 4 DPO, bit 3 FUA)."""
    if caps.dpofua:
        pytest.skip("the device reports DPOFUA=1 (DPO and FUA supported)")
    lun, rw, bs = shared_lun, rw_long, shared_lun.block_size
    lba = _small_area(lun, 4, rw)
    cases = [(name, bit, command) for name, bit in (("dpo", 4), ("fua", 3))
             for command in (rw.read(lba, 1, **{name: True}), rw.write(lba, 1, **{name: True}))]
    results = lun.cdbs([(command, None if command[0] == rw.read_opcode else bytes(bs),
                         bs if command[0] == rw.read_opcode else 0)
                        for _, _, command in cases])
    for (name, bit, command), result in zip(cases, results, strict=True):
        what = f"{'READ' if command[0] == rw.read_opcode else 'WRITE'}({rw.size}) with {name}"
        _expect_field(result, Asc.INVALID_FIELD_IN_CDB,
                      (FieldPointer(True, 1, bit), FieldPointer(True, 1, None)), what)


def _require_no_protection(caps: Capabilities) -> None:
    if caps.capacity is None or caps.capacity.prot_en:
        pytest.skip("READ CAPACITY(16) does not say PROT_EN=0 (no protection information)")


def test_read_with_rdprotect_is_invalid_field_in_cdb_without_protection(
    shared_lun: Lun, caps: Capabilities, reader_long: ReadWrite
) -> None:
    """SBC-3 5.16-5.18, 4.22: RDPROTECT other than 000b on a logical unit formatted
    without protection information -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field
    pointer byte 1 bit 7 (the first bit of the 3-bit field, SPC-4 4.5.2.4.2)."""
    _require_no_protection(caps)
    lun, rw, bs = shared_lun, reader_long, shared_lun.block_size
    results = lun.cdbs([(rw.read(1, 1, rdprotect=value), None, bs) for value in range(1, 8)])
    for value, result in zip(range(1, 8), results, strict=True):
        try:
            result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                field=FieldPointer(True, 1, 7))
        except AssertionError as exc:
            raise AssertionError(f"READ({rw.size}) with RDPROTECT {value:03b}b: {exc}") from None


def test_write_with_wrprotect_is_invalid_field_in_cdb_and_writes_nothing(
    shared_lun: Lun, caps: Capabilities, writer_long: ReadWrite
) -> None:
    """SBC-3 5.26-5.28, 4.22: WRPROTECT other than 000b on a logical unit formatted
    without protection information -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field
    pointer byte 1 bit 7 (SPC-4 4.5.2.4.2); nothing is written."""
    _require_no_protection(caps)
    lun, rw, bs = shared_lun, writer_long, shared_lun.block_size
    lba = _small_area(lun, 5, rw)
    before = pattern(lba, 1, bs, seed=1100 + rw.size)
    results = lun.cdbs(
        [(rw.write(lba, 1), before, 0)]
        + [(rw.write(lba, 1, wrprotect=value), pattern(lba, 1, bs, seed=1101 + value), 0)
           for value in range(1, 8)]
        + [(rw.read(lba, 1), None, bs)])  # fmt: skip
    results[0].expect_good()
    for value, result in zip(range(1, 8), results[1:-1], strict=True):
        try:
            result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                field=FieldPointer(True, 1, 7))
        except AssertionError as exc:
            raise AssertionError(f"WRITE({rw.size}) with WRPROTECT {value:03b}b: {exc}") from None
    _expect_blocks(results[-1], before, lun, lba, "the block after the refused writes")


# --- data buffer lengths -----------------------------------------------------------------------


_DATA_OUT_CASES: dict[str, Callable[[bytes, int], bytes | None]] = {
    "no-data-out": lambda data, bs: None,
    "one-byte-short": lambda data, bs: data[:-1],
    "one-block-short": lambda data, bs: data[:-bs],
    "one-byte-extra": lambda data, bs: data + b"\x5a",
    "one-block-extra": lambda data, bs: data + data[:bs],
}


@pytest.mark.parametrize("case", list(_DATA_OUT_CASES))
def test_write_with_the_wrong_data_out_length_is_refused_and_writes_nothing(
    shared_lun: Lun, writer: ReadWrite, case: str
) -> None:
    """SBC-3 5.25-5.28 / SAM-5 5.4.3 (as LIO's own backstores answer on Linux 6.1): a
    data-out buffer shorter or longer than TRANSFER LENGTH x block size -> ILLEGAL
    REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT (0E/03), and no block is written."""
    lun, rw, bs = shared_lun, writer, shared_lun.block_size
    lba = _small_area(lun, 6, rw)
    seed = 1200 + 10 * rw.size + list(_DATA_OUT_CASES).index(case)
    before = pattern(lba, 3, bs, seed=seed)
    data_out = _DATA_OUT_CASES[case](pattern(lba, 2, bs, seed=seed + 100), bs)
    lay, write, read = lun.cdbs([
        (rw.write(lba, 3), before, 0),
        (rw.write(lba, 2), data_out, 0),
        (rw.read(lba, 3), None, 3 * bs),
    ])  # fmt: skip
    lay.expect_good()
    what = f"WRITE({rw.size}) of 2 blocks with {len(data_out or b'')} bytes of data-out"
    try:
        write.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None
    _expect_blocks(read, before, lun, lba, f"the blocks after {what}")


@pytest.mark.parametrize("case", ["no-buffer", "one-byte-short", "one-block-short"])
def test_read_into_a_smaller_buffer_is_invalid_field_in_cdb(
    shared_lun: Lun, reader: ReadWrite, case: str
) -> None:
    """SBC-3 5.15-5.18 (as the reference handler and LIO's own backstores answer on
    Linux 6.1): a data-in buffer smaller than TRANSFER LENGTH x block size -> ILLEGAL
    REQUEST, INVALID FIELD IN CDB (24/00), not a GOOD short read."""
    lun, rw, bs = shared_lun, reader, shared_lun.block_size
    lba = _small_area(lun, 7, rw)
    length = {"no-buffer": 0, "one-byte-short": 2 * bs - 1, "one-block-short": bs}[case]
    result = lun.cdb(rw.read(lba, 2), data_in_len=length)
    try:
        result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    except AssertionError as exc:
        raise AssertionError(f"READ({rw.size}) of 2 blocks into {length} bytes: {exc}") from None


def test_read_into_a_larger_buffer_is_good_with_the_excess_as_residual(
    shared_lun: Lun, reader: ReadWrite
) -> None:
    """SBC-3 5.15-5.18 / SAM-5 5.4.3: a data-in buffer larger than the transfer is not an
    error: GOOD, the blocks read fill the start of the buffer and the residual is the
    excess (one byte, one block, three blocks and 7 bytes)."""
    lun, rw, bs = shared_lun, reader, shared_lun.block_size
    lba = _small_area(lun, 8, rw)
    data = pattern(lba, 2, bs, seed=1300 + rw.size)
    extras = [1, bs, 3 * bs + 7]
    results = lun.cdbs([(rw.write(lba, 2), data, 0)]
                       + [(rw.read(lba, 2), None, 2 * bs + extra) for extra in extras])
    results[0].expect_good()
    for extra, result in zip(extras, results[1:], strict=True):
        what = f"READ({rw.size}) of 2 blocks into {2 * bs + extra} bytes"
        try:
            result.expect_good()
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        assert result.resid == extra, (
            f"{what}: residual {result.resid}, expected {extra}\n{result.describe()}")
        _expect_blocks(result, data, lun, lba, what)


# --- transfer length limits ---------------------------------------------------------------------


def _over_the_maximum(caps: Capabilities, rw: ReadWrite) -> list[int]:
    """TRANSFER LENGTHs above MAXIMUM TRANSFER LENGTH that the CDB can hold: the maximum
    plus one, and values with only an upper byte of the field (and bit 0) set."""
    caps.require_vpd(0xB0)
    maximum = _max_transfer(caps)
    if not maximum:
        pytest.skip("MAXIMUM TRANSFER LENGTH is 0: no limit is reported")
    lengths = sorted({maximum + 1, 2**8 + 1, 2**16 + 1, 2**24 + 1, 2**31 + 1})
    lengths = [n for n in lengths if maximum < n <= rw.max_blocks]
    if not lengths:
        pytest.skip(f"MAXIMUM TRANSFER LENGTH {maximum}: no longer transfer fits the "
                    f"{rw.size}-byte CDB")
    return lengths


def test_read_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, reader: ReadWrite
) -> None:
    """SBC-3 6.5.3 (Block Limits VPD): TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH ->
    ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00) on the TRANSFER LENGTH field. The
    data-in buffer is one block (the whole length would exceed what SG_IO carries): the
    length is checked before the buffer, as LIO's backstores do."""
    lun, rw, bs = shared_lun, reader, shared_lun.block_size
    lengths = _over_the_maximum(caps, rw)
    lba = _small_area(lun, 9, rw)
    results = lun.cdbs([(rw.read(lba, blocks), None, bs) for blocks in lengths])
    for blocks, result in zip(lengths, results, strict=True):
        _expect_field(result, Asc.INVALID_FIELD_IN_CDB, _whole_field(rw.length_byte),
                      f"READ({rw.size}) with TRANSFER LENGTH {blocks:#x}")


def test_write_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, writer: ReadWrite
) -> None:
    """SBC-3 6.5.3 (Block Limits VPD): WRITE with TRANSFER LENGTH above MAXIMUM TRANSFER
    LENGTH -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00) on the TRANSFER LENGTH field,
    and nothing is written. The data-out is one block (see the READ test)."""
    lun, rw, bs = shared_lun, writer, shared_lun.block_size
    lengths = _over_the_maximum(caps, rw)
    lba = _small_area(lun, 9, rw)
    before = pattern(lba, 2, bs, seed=1400 + rw.size)
    results = lun.cdbs(
        [(rw.write(lba, 2), before, 0)]
        + [(rw.write(lba, blocks), pattern(lba, 1, bs, seed=1401), 0) for blocks in lengths]
        + [(rw.read(lba, 2), None, 2 * bs)])  # fmt: skip
    results[0].expect_good()
    for blocks, result in zip(lengths, results[1:-1], strict=True):
        _expect_field(result, Asc.INVALID_FIELD_IN_CDB, _whole_field(rw.length_byte),
                      f"WRITE({rw.size}) with TRANSFER LENGTH {blocks:#x}")
    _expect_blocks(results[-1], before, lun, lba, "the blocks after the refused writes")


def test_largest_transfer_round_trips(
    shared_lun: Lun, caps: Capabilities, rw_long: ReadWrite
) -> None:
    """SBC-3 5.16-5.18, 5.26-5.28, 6.5.3: a transfer of the largest length allowed here
    (MAXIMUM TRANSFER LENGTH, at most the 1 MiB SG_IO carries: many data pages and
    iovecs) is written and read back whole; the blocks around it are untouched."""
    lun, rw, bs = shared_lun, rw_long, shared_lun.block_size
    blocks = _largest(caps, lun, rw)
    lba = _big_area(lun, rw.index)
    data = pattern(lba, blocks, bs, seed=1500 + rw.size)
    around = pattern(lba - 1, 1, bs, seed=1501) + pattern(lba + blocks, 1, bs, seed=1502)
    results = lun.cdbs([
        (rw.write(lba - 1, 1), around[:bs], 0),
        (rw.write(lba + blocks, 1), around[bs:], 0),
        (rw.write(lba, blocks), data, 0),
        (rw.read(lba, blocks), None, len(data)),
        (rw.read(lba - 1, 1), None, bs),
        (rw.read(lba + blocks, 1), None, bs),
    ])  # fmt: skip
    for result in results[:3]:
        result.expect_good()
    _expect_blocks(results[3], data, lun, lba,
                   f"READ({rw.size}) of {blocks} blocks ({len(data)} bytes)")
    _expect_blocks(results[4], around[:bs], lun, lba - 1, "the block before the transfer")
    _expect_blocks(results[5], around[bs:], lun, lba + blocks, "the block after the transfer")


# --- CDB sizes together -------------------------------------------------------------------------


def test_data_written_with_one_cdb_size_reads_back_with_every_other(
    shared_lun: Lun, caps: Capabilities, writer: ReadWrite
) -> None:
    """SBC-3 5.15-5.18, 5.25-5.28: every CDB size addresses the same logical blocks:
    blocks written with one size read back equal with each claimed READ size, whole and
    from an offset into the range."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = _small_area(lun, 11, writer)
    data = pattern(lba, 4, bs, seed=1600 + writer.size)
    readers = [rw for rw in _ALL if caps.claims(rw.read_opcode)]
    commands: list[tuple[bytes, bytes | None, int]] = [(writer.write(lba, 4), data, 0)]
    for rw in readers:
        commands += [(rw.read(lba, 4), None, 4 * bs), (rw.read(lba + 1, 2), None, 2 * bs)]
    results = lun.cdbs(commands)
    results[0].expect_good()
    for number, rw in enumerate(readers):
        whole, part = results[1 + 2 * number : 3 + 2 * number]
        what = f"READ({rw.size}) after WRITE({writer.size})"
        _expect_blocks(whole, data, lun, lba, f"{what} of LBAs {lba}-{lba + 3}")
        _expect_blocks(part, data[bs : 3 * bs], lun, lba + 1,
                       f"{what}, LBAs {lba + 1}-{lba + 2}")
