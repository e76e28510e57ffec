"""WRITE ATOMIC(16) (SBC-4 5.48; Block Limits VPD 6.6.4): a write that
completes wholly or not at all, within the atomic limits of the Block Limits page:
MAXIMUM ATOMIC TRANSFER LENGTH, ATOMIC ALIGNMENT (LBA a multiple of it; 0 = any),
ATOMIC TRANSFER LENGTH GRANULARITY (length a multiple of it; 0 = any), and for the
ATOMIC BOUNDARY field, MAXIMUM ATOMIC BOUNDARY SIZE (0 = no boundaries).

Covered: the claim and the page agree (claimed: a non-zero MAXIMUM ATOMIC TRANSFER
LENGTH, not above MAXIMUM TRANSFER LENGTH; not claimed: the atomic fields 0); writes
within the limits (one unit, several, exactly the maximum, at the end of the capacity,
DPO and FUA when DPOFUA=1) are GOOD, land at the LBA and nowhere else; TRANSFER LENGTH 0
(GOOD, nothing written); a length above the maximum, a misaligned LBA, a length that is
not a multiple of the granularity, an ATOMIC BOUNDARY above the maximum boundary size:
ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), nothing written; LBA range (21/00, nothing
written); WRPROTECT without protection information (24/00 byte 1 bit 7); a data-out of
the wrong length (0E/03, nothing written); refusal when the command is not claimed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import BlockLimits, Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult, expect_each
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_MAX_SG_IO = 1 << 20  # bytes SG_IO carries per command here
_B0_ATOMIC_PAGE_LENGTH = 0x3C  # a Block Limits page that has the atomic fields (bytes 44-63)
_LBA_BYTE = 2
_BOUNDARY_BYTE = 10
_LENGTH_BYTE = 12
_MAX_LENGTH = 0xFFFF  # TRANSFER LENGTH is two bytes
_AREA = 2048  # blocks each test owns on the shared LUN: test n uses [n*2048, n*2048+2048)


@dataclasses.dataclass(frozen=True)
class Atomic:
    """The device's atomic write limits, in logical blocks."""

    maximum: int
    alignment: int  # 1 when the page says 0 (any LBA)
    granularity: int  # 1 when the page says 0 (any length)
    max_boundary: int

    @property
    def unit(self) -> int:
        """The smallest length that keeps both alignment and granularity at any aligned
        LBA: a write of `unit` blocks ends on an aligned LBA."""
        return math.lcm(self.alignment, self.granularity)

    def aligned(self, lba: int) -> int:
        """The first aligned LBA at or after `lba`."""
        return -(-lba // self.alignment) * self.alignment

    def area(self, number: int) -> int:
        """An aligned LBA inside test `number`'s blocks, one block clear of the start."""
        return self.aligned(number * _AREA + 1)


def _atomic(caps: Capabilities) -> Atomic:
    """The limits, after checking the command is claimed and the page reports them."""
    caps.require(Opcode.WRITE_ATOMIC_16)
    caps.require_vpd(0xB0)
    limits = caps.block_limits
    assert limits is not None
    if limits.page_length < _B0_ATOMIC_PAGE_LENGTH or not limits.max_atomic_transfer:
        pytest.skip("the Block Limits page reports no MAXIMUM ATOMIC TRANSFER LENGTH, "
                    "although WRITE ATOMIC(16) is claimed")
    return Atomic(limits.max_atomic_transfer, limits.atomic_alignment or 1,
                  limits.atomic_granularity or 1, limits.max_atomic_boundary)


@pytest.fixture
def atomic(caps: Capabilities) -> Atomic:
    return _atomic(caps)


# --- helpers ---------------------------------------------------------------------------------


def _expect_invalid_field(result: CdbResult, allowed: tuple[FieldPointer | None, ...]) -> None:
    __tracebackhide__ = True
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    pointer = result.decoded.field_pointer if result.decoded else None
    assert pointer in allowed, (
        f"field pointer {pointer}, expected {' or '.join(map(str, allowed))}\n"
        f"{result.describe()}")


def _whole_byte(byte: int) -> tuple[FieldPointer, FieldPointer]:
    """A field of whole bytes: BPV may be clear, or the bit pointer names its top bit
    (SPC-4 4.5.2.4.2)."""
    return FieldPointer(True, byte, None), FieldPointer(True, byte, 7)


def _refused_and_unchanged(lun: Lun, raw: bytes, lba: int, blocks: int, seed: int,
                           check: Callable[[CdbResult], object], sent: int | None = None) -> None:
    """Lay a pattern over [lba-1, lba+blocks+1), send `raw` with `sent` blocks of new data
    (default `blocks`), run `check` on the answer, and see the span unchanged."""
    bs = lun.block_size
    span = blocks + 2
    before = pattern(lba - 1, span, bs, seed=seed)
    lun.write_blocks(lba - 1, before)
    data = pattern(lba, blocks if sent is None else sent, bs, seed=seed + 1)
    check(lun.cdb(raw, data_out=data or None))
    assert_blocks_equal(lun.read_blocks(lba - 1, span), before, bs, lba - 1,
                        what="medium after the refusal")


# --- claims ----------------------------------------------------------------------------------


def test_write_atomic_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00); nothing is
    written."""
    caps.require_absent(Opcode.WRITE_ATOMIC_16)
    _refused_and_unchanged(
        shared_lun, cdb.write_atomic_16(1, 1), 1, 1, seed=401,
        check=lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST,
                                       Asc.INVALID_COMMAND_OPERATION_CODE))


def test_write_atomic_not_claimed_has_no_atomic_limits_in_block_limits(
    caps: Capabilities
) -> None:
    """SBC-4 6.6.4: a device without WRITE ATOMIC reports MAXIMUM ATOMIC TRANSFER LENGTH,
    ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY as 0."""
    caps.require_absent(Opcode.WRITE_ATOMIC_16)
    caps.require_vpd(0xB0)
    limits = caps.block_limits
    assert limits is not None
    atomic = {"MAXIMUM ATOMIC TRANSFER LENGTH": limits.max_atomic_transfer,
              "ATOMIC ALIGNMENT": limits.atomic_alignment,
              "ATOMIC TRANSFER LENGTH GRANULARITY": limits.atomic_granularity}
    nonzero = {name: value for name, value in atomic.items() if value}
    assert not nonzero, f"WRITE ATOMIC(16) is not claimed, yet Block Limits reports {nonzero}"


def test_write_atomic_claimed_has_a_maximum_atomic_transfer_length_in_block_limits(
    caps: Capabilities
) -> None:
    """SBC-4 6.6.4, 5.48: a device serving WRITE ATOMIC(16) reports a Block Limits page
    long enough to hold the atomic fields (PAGE LENGTH >= 3Ch), a non-zero MAXIMUM
    ATOMIC TRANSFER LENGTH, not above MAXIMUM TRANSFER LENGTH (when that is reported)."""
    caps.require(Opcode.WRITE_ATOMIC_16)
    limits: BlockLimits | None = caps.block_limits
    assert limits is not None, "WRITE ATOMIC(16) is claimed but there is no Block Limits page"
    assert limits.page_length >= _B0_ATOMIC_PAGE_LENGTH, (
        f"Block Limits PAGE LENGTH {limits.page_length:#x}: no atomic fields")
    assert limits.max_atomic_transfer >= 1, (
        "WRITE ATOMIC(16) is claimed but MAXIMUM ATOMIC TRANSFER LENGTH is 0")
    if limits.max_transfer:
        assert limits.max_atomic_transfer <= limits.max_transfer, (
            f"MAXIMUM ATOMIC TRANSFER LENGTH {limits.max_atomic_transfer} > MAXIMUM TRANSFER "
            f"LENGTH {limits.max_transfer}")


# --- writes within the limits ----------------------------------------------------------------


def test_write_atomic_within_the_limits_stores_the_data(
    shared_lun: Lun, atomic: Atomic
) -> None:
    """SBC-4 5.48: WRITE ATOMIC(16) at aligned LBAs with lengths that are multiples of the
    granularity, up to exactly MAXIMUM ATOMIC TRANSFER LENGTH (rounded down to the
    granularity), is GOOD and stores the data there and nowhere else."""
    lun, bs = shared_lun, shared_lun.block_size
    unit = atomic.unit
    biggest = min(atomic.maximum, _MAX_SG_IO // bs, _MAX_LENGTH)
    biggest -= biggest % atomic.granularity
    lengths = sorted({unit, 2 * unit, biggest} - {0})
    lengths = [n for n in lengths if n <= atomic.maximum]
    for index, blocks in enumerate(lengths):
        lba = atomic.area(1 + index)
        if lba + blocks + 1 > lun.blocks:
            continue  # a LUN this small has no room for the longest case
        before = pattern(lba - 1, blocks + 2, bs, seed=411 + index)
        data = pattern(lba, blocks, bs, seed=421 + index)
        results = lun.cdbs([(cdb.write_16(lba - 1, blocks + 2), before, 0),
                            (cdb.write_atomic_16(lba, blocks), data, 0),
                            (cdb.read_16(lba - 1, blocks + 2), None, (blocks + 2) * bs)])
        results[0].expect_good()
        expect_each([(f"{blocks} blocks at LBA {lba}", results[1])], CdbResult.expect_good)
        assert_blocks_equal(results[2].expect_good().data, before[:bs] + data + before[-bs:],
                            bs, lba - 1, what=f"WRITE ATOMIC of {blocks} blocks and neighbours")


def test_write_atomic_at_the_end_of_the_capacity_stores_the_data(
    shared_lun: Lun, atomic: Atomic
) -> None:
    """SBC-4 5.48 / 4.4: a WRITE ATOMIC(16) whose range ends at the last LBA is inside
    the capacity: GOOD, and the data is there."""
    lun, bs = shared_lun, shared_lun.block_size
    blocks = atomic.unit
    lba = lun.blocks - blocks
    if lba % atomic.alignment:
        pytest.skip(f"no aligned range of {blocks} blocks ends at the last LBA")
    if blocks > atomic.maximum:
        pytest.skip(f"ATOMIC ALIGNMENT/GRANULARITY need {blocks} blocks, above the maximum")
    data = pattern(lba, blocks, bs, seed=431)
    write, back = lun.cdbs([(cdb.write_atomic_16(lba, blocks), data, 0),
                            (cdb.read_16(lba, blocks), None, blocks * bs)])
    write.expect_good()
    assert_blocks_equal(back.expect_good().data, data, bs, lba)


def test_write_atomic_with_dpo_and_fua_stores_the_data(
    shared_lun: Lun, caps: Capabilities, atomic: Atomic
) -> None:
    """SBC-4 5.48 / 6.4.1: with DPOFUA=1 in the mode parameter header the device supports
    DPO and FUA: WRITE ATOMIC(16) with FUA, and with DPO and FUA, stores the data."""
    if not caps.dpofua:
        pytest.skip("the device reports DPOFUA=0 (DPO and FUA not supported)")
    lun, bs = shared_lun, shared_lun.block_size
    blocks, lba = atomic.unit, atomic.area(4)
    data = pattern(lba, 2 * blocks, bs, seed=441)
    results = lun.cdbs([
        (cdb.write_atomic_16(lba, blocks, fua=True), data[: blocks * bs], 0),
        (cdb.write_atomic_16(lba + blocks, blocks, fua=True, dpo=True), data[blocks * bs :], 0),
        (cdb.read_16(lba, 2 * blocks), None, 2 * blocks * bs),
    ])  # fmt: skip
    expect_each(zip(["FUA=1", "DPO=1 FUA=1"], results[:2], strict=True), CdbResult.expect_good)
    assert_blocks_equal(results[2].expect_good().data, data, bs, lba)


def test_write_atomic_of_zero_blocks_is_good_and_writes_nothing(
    shared_lun: Lun, atomic: Atomic
) -> None:
    """SBC-4 5.48: TRANSFER LENGTH 0 -> no blocks are transferred, and this is not an
    error: GOOD, the medium unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = atomic.area(5)
    before = pattern(lba, 1, bs, seed=451)
    lun.write_blocks(lba, before)
    lun.cdb(cdb.write_atomic_16(lba, 0)).expect_good()
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after 0 blocks")


# --- the limits ------------------------------------------------------------------------------


def test_write_atomic_longer_than_the_maximum_atomic_transfer_length_is_invalid_field_in_cdb(
    shared_lun: Lun, atomic: Atomic
) -> None:
    """SBC-4 5.48: TRANSFER LENGTH above MAXIMUM ATOMIC TRANSFER LENGTH (ATOMIC BOUNDARY
    0) -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer on TRANSFER LENGTH
    (byte 12); nothing is written. The length is the next multiple of the granularity;
    the data-out is as much of it as SG_IO carries."""
    lun, bs = shared_lun, shared_lun.block_size
    blocks = atomic.maximum + atomic.granularity - atomic.maximum % atomic.granularity
    lba = atomic.area(6)
    if blocks > _MAX_LENGTH or lba + blocks + 1 > lun.blocks:
        pytest.skip(f"MAXIMUM ATOMIC TRANSFER LENGTH {atomic.maximum}: no longer length fits")
    sent = min(blocks, _MAX_SG_IO // bs)
    _refused_and_unchanged(
        lun, cdb.write_atomic_16(lba, blocks), lba, sent, seed=461, sent=sent,
        check=lambda r: _expect_invalid_field(r, _whole_byte(_LENGTH_BYTE)))


def test_write_atomic_at_a_misaligned_lba_is_invalid_field_in_cdb(
    shared_lun: Lun, atomic: Atomic
) -> None:
    """SBC-4 5.48, 6.6.4: with ATOMIC ALIGNMENT above 1, an LBA that is not a multiple of
    it -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), the field pointer (if any) on the
    LBA (byte 2); nothing is written. Length one unit, within every other limit."""
    if atomic.alignment <= 1:
        pytest.skip(f"ATOMIC ALIGNMENT {atomic.alignment}: every LBA is aligned")
    lun = shared_lun
    blocks = atomic.unit
    if blocks > atomic.maximum:
        pytest.skip(f"ATOMIC ALIGNMENT/GRANULARITY need {blocks} blocks, above the maximum")
    for number, skew in enumerate((1, atomic.alignment - 1)):
        lba = atomic.area(7) + number * 2 * atomic.unit + skew
        _refused_and_unchanged(
            lun, cdb.write_atomic_16(lba, blocks), lba, blocks, seed=471 + 2 * number,
            check=lambda r: _expect_invalid_field(r, (None, *_whole_byte(_LBA_BYTE))))


def test_write_atomic_length_not_a_multiple_of_the_granularity_is_invalid_field_in_cdb(
    shared_lun: Lun, atomic: Atomic
) -> None:
    """SBC-4 5.48, 6.6.4: with ATOMIC TRANSFER LENGTH GRANULARITY above 1, a TRANSFER
    LENGTH that is not a multiple of it -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00),
    the field pointer (if any) on TRANSFER LENGTH (byte 12); nothing is written. The LBA
    is aligned and the length within the maximum."""
    if atomic.granularity <= 1:
        pytest.skip(f"ATOMIC TRANSFER LENGTH GRANULARITY {atomic.granularity}: any length")
    lun = shared_lun
    for number, blocks in enumerate((1, atomic.granularity + 1)):
        if blocks > atomic.maximum:
            continue
        lba = atomic.area(8) + number * 2 * atomic.unit
        _refused_and_unchanged(
            lun, cdb.write_atomic_16(lba, blocks), lba, blocks, seed=481 + 2 * number,
            check=lambda r: _expect_invalid_field(r, (None, *_whole_byte(_LENGTH_BYTE))))


def test_write_atomic_boundary_above_the_maximum_atomic_boundary_size_is_invalid_field_in_cdb(
    shared_lun: Lun, atomic: Atomic
) -> None:
    """SBC-4 5.48: ATOMIC BOUNDARY above MAXIMUM ATOMIC BOUNDARY SIZE (0: no boundaries
    are supported, so any non-zero value) -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00),
    field pointer on ATOMIC BOUNDARY (byte 10); nothing is written."""
    if atomic.max_boundary >= _MAX_LENGTH:
        pytest.skip(f"MAXIMUM ATOMIC BOUNDARY SIZE {atomic.max_boundary}: no larger boundary")
    lun = shared_lun
    blocks = atomic.unit
    if blocks > atomic.maximum:
        pytest.skip(f"ATOMIC ALIGNMENT/GRANULARITY need {blocks} blocks, above the maximum")
    boundary = atomic.max_boundary + 1
    lba = atomic.area(9)
    _refused_and_unchanged(
        lun, cdb.write_atomic_16(lba, blocks, atomic_boundary=boundary), lba, blocks, seed=491,
        check=lambda r: _expect_invalid_field(r, _whole_byte(_BOUNDARY_BYTE)))


# --- other errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["first-lba-past-the-end", "spanning-the-end", "lba-max", "zero-blocks-past-the-end"])
def test_write_atomic_beyond_the_last_lba_is_lba_out_of_range_and_writes_nothing(
    shared_lun: Lun, atomic: Atomic, where: str
) -> None:
    """SBC-4 5.48 / 4.4: an (aligned) LBA past the last one, or a range crossing the end
    -> ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00); the blocks at the end
    of the capacity keep their data."""
    lun, bs = shared_lun, shared_lun.block_size
    n, unit = lun.blocks, atomic.unit
    past = atomic.aligned(n)
    spanning = (n - unit) // atomic.alignment * atomic.alignment
    lba, blocks = {"first-lba-past-the-end": (past, unit),
                   "spanning-the-end": (spanning, 2 * unit),
                   "lba-max": ((2**64 - 1) // atomic.alignment * atomic.alignment, unit),
                   "zero-blocks-past-the-end": (past, 0)}[where]
    if blocks > atomic.maximum:
        pytest.skip(f"{blocks} blocks are above MAXIMUM ATOMIC TRANSFER LENGTH {atomic.maximum}")
    tail_lba = spanning
    tail = pattern(tail_lba, n - tail_lba, bs, seed=501)
    lun.write_blocks(tail_lba, tail)
    result = lun.cdb(cdb.write_atomic_16(lba, blocks),
                     data_out=pattern(lba, blocks, bs, seed=502) or None)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    assert_blocks_equal(lun.read_blocks(tail_lba, n - tail_lba), tail, bs, tail_lba,
                        what="the end of the capacity after the refusal")


def test_write_atomic_with_wrprotect_is_invalid_field_in_cdb_and_writes_nothing(
    shared_lun: Lun, caps: Capabilities, atomic: Atomic
) -> None:
    """SBC-4 5.48 (WRPROTECT, per the protection information model): a value other than
    000b on a device without protection information -> ILLEGAL REQUEST, INVALID FIELD IN
    CDB (24/00), field pointer byte 1 bit 7 (the field's first bit); nothing is written."""
    if caps.capacity is not None and caps.capacity.prot_en:
        pytest.skip("the device has protection information enabled (PROT_EN=1)")
    lun, bs = shared_lun, shared_lun.block_size
    blocks, lba = atomic.unit, atomic.area(10)
    before = pattern(lba, blocks, bs, seed=511)
    lun.write_blocks(lba, before)
    data = pattern(lba, blocks, bs, seed=512)
    results = lun.cdbs([(cdb.write_atomic_16(lba, blocks, wrprotect=v), data, 0)
                        for v in range(1, 8)])
    expect_each(zip([f"WRPROTECT {v:03b}b" for v in range(1, 8)], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                   field=FieldPointer(True, 1, 7)))
    assert_blocks_equal(lun.read_blocks(lba, blocks), before, bs, lba,
                        what="medium after the refusals")


@pytest.mark.parametrize("size", ["no-data-out", "one-byte-short", "one-block-extra"])
def test_write_atomic_with_the_wrong_data_out_length_is_refused_and_writes_nothing(
    shared_lun: Lun, atomic: Atomic, size: str
) -> None:
    """SBC-4 5.48 / SAM-5 (as LIO answers on Linux 6.1): a data-out buffer other than
    TRANSFER LENGTH blocks -> ILLEGAL REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT
    (0E/03); nothing is written (all or nothing)."""
    lun, bs = shared_lun, shared_lun.block_size
    blocks, lba = atomic.unit, atomic.area(11)
    before = pattern(lba, blocks + 1, bs, seed=521)
    lun.write_blocks(lba, before)
    data = pattern(lba, blocks, bs, seed=522)
    out = {"no-data-out": None, "one-byte-short": data[:-1],
           "one-block-extra": data + pattern(lba + blocks, 1, bs, seed=523)}[size]
    result = lun.cdb(cdb.write_atomic_16(lba, blocks), data_out=out)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
    assert_blocks_equal(lun.read_blocks(lba, blocks + 1), before, bs, lba,
                        what="medium after the refusal")
