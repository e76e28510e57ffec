"""ORWRITE(16) (SBC-3 5.8): the device reads the blocks, ORs them byte by byte with the
data-out and writes the result back, as one operation. The 16-byte CDB has ORPROTECT,
DPO and FUA in byte 1 (no BMOP: that is ORWRITE(32)'s).

Covered: the medium becomes old OR new, per byte, checked against a model (several
blocks of patterns, all-zero data-out = no change, all-ones data-out, a zeroed medium,
the same ORWRITE twice = once), neighbours untouched; the last LBA; DPO and FUA (when
DPOFUA=1); TRANSFER LENGTH 0 (GOOD, nothing changed); LBA range (21/00, nothing
changed); ORPROTECT without protection information (24/00 byte 1 bit 7); a data-out of
the wrong length (0E/03, nothing changed); TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH
(24/00 on the field); refusal when the command is not claimed.
"""

from __future__ import annotations

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult, expect_each
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_AREA = 128  # blocks each test owns on the shared LUN: test n uses [n*128, n*128+128)
_MAX_SG_IO = 1 << 20  # bytes SG_IO carries per command here
_LENGTH_BYTE = 10  # TRANSFER LENGTH, most significant byte
_PROTECT_FIELD = FieldPointer(True, 1, 7)  # ORPROTECT, bits 7-5


@pytest.fixture
def orw(caps: Capabilities) -> None:
    """Skip unless the device claims ORWRITE(16)."""
    caps.require(Opcode.ORWRITE_16)


# --- helpers ---------------------------------------------------------------------------------


def _area(number: int) -> int:
    """First LBA of a test's own blocks; block 0 of an area stays a neighbour."""
    return number * _AREA + 1


def _or(old: bytes, new: bytes) -> bytes:
    """The model: the medium after ORWRITE."""
    return bytes(a | b for a, b in zip(old, new, strict=True))


# --- claims ----------------------------------------------------------------------------------


def test_orwrite_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00); the medium
    is unchanged."""
    caps.require_absent(Opcode.ORWRITE_16)
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(0)
    before = pattern(lba, 1, bs, seed=301)
    lun.write_blocks(lba, before)
    result = lun.cdb(cdb.orwrite_16(lba, 1), data_out=b"\xff" * bs)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after the refusal")


# --- the OR ----------------------------------------------------------------------------------


def test_orwrite_stores_the_bitwise_or_of_the_medium_and_the_data_out(
    shared_lun: Lun, orw: None
) -> None:
    """SBC-3 5.8: each byte of the blocks becomes (medium byte) OR (data-out byte), and
    only those blocks change. Checked against a model: 4 blocks of one pattern ORed with
    another (where OR differs from a plain write, from AND and from XOR), all-zero
    data-out (no change), all-ones data-out (all ones), a zeroed medium (the data-out),
    and the same ORWRITE sent twice (the same as once)."""
    lun, bs = shared_lun, shared_lun.block_size
    cases: list[tuple[str, int, bytes, bytes, int]] = []  # what, lba, medium, data-out, times
    lba = _area(1)
    for what, blocks, medium, data, times in [
        ("4 blocks of patterns", 4, pattern(lba, 4, bs, seed=311),
         pattern(lba, 4, bs, seed=312), 1),
        ("all-zero data-out", 1, pattern(lba, 1, bs, seed=313), bytes(bs), 1),
        ("all-ones data-out", 1, pattern(lba, 1, bs, seed=314), b"\xff" * bs, 1),
        ("a zeroed medium", 1, bytes(bs), pattern(lba, 1, bs, seed=315), 1),
        ("the same ORWRITE twice", 2, pattern(lba, 2, bs, seed=316),
         pattern(lba, 2, bs, seed=317), 2),
    ]:  # fmt: skip
        cases.append((what, lba, medium, data, times))
        lba += blocks + 1  # one neighbour block between cases
    span_start, span = _area(1) - 1, lba - _area(1) + 1
    before = bytearray(pattern(span_start, span, bs, seed=310))
    expected = bytearray(before)
    for _, at, medium, data, _ in cases:
        start = (at - span_start) * bs
        before[start : start + len(medium)] = medium
        expected[start : start + len(medium)] = _or(medium, data)
    old, new = cases[0][2], cases[0][3]  # the patterns tell OR from the alternatives
    pairs = list(zip(old, new, strict=True))
    assert _or(old, new) not in (new, bytes(a & b for a, b in pairs),
                                 bytes(a ^ b for a, b in pairs))
    commands = [(cdb.write_16(span_start, span), bytes(before), 0)]
    labels = []
    for what, at, _, data, times in cases:
        commands += [(cdb.orwrite_16(at, len(data) // bs), data, 0)] * times
        labels += [what] * times
    results = lun.cdbs(commands)
    results[0].expect_good()
    expect_each(zip(labels, results[1:], strict=True), CdbResult.expect_good)
    assert_blocks_equal(lun.read_blocks(span_start, span), bytes(expected), bs, span_start,
                        what="medium after ORWRITE (model: old OR data-out)")


def test_orwrite_at_the_last_lba_stores_the_or(shared_lun: Lun, orw: None) -> None:
    """SBC-3 5.8 / 4.4: the last LBA is inside the capacity: ORWRITE of it is GOOD and
    leaves old OR new there."""
    lun, bs = shared_lun, shared_lun.block_size
    last = lun.blocks - 1
    old, new = pattern(last, 1, bs, seed=321), pattern(last, 1, bs, seed=322)
    results = lun.cdbs([(cdb.write_16(last, 1), old, 0), (cdb.orwrite_16(last, 1), new, 0),
                        (cdb.read_16(last, 1), None, bs)])
    results[0].expect_good()
    results[1].expect_good()
    assert_blocks_equal(results[2].expect_good().data, _or(old, new), bs, last)


def test_orwrite_with_dpo_and_fua_stores_the_or(
    shared_lun: Lun, caps: Capabilities, orw: None
) -> None:
    """SBC-3 5.8 / 6.4.1: with DPOFUA=1 in the mode parameter header the device supports
    DPO and FUA: ORWRITE with FUA, and with DPO and FUA, behaves as without them."""
    if not caps.dpofua:
        pytest.skip("the device reports DPOFUA=0 (DPO and FUA not supported)")
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(2)
    old = pattern(lba, 2, bs, seed=331)
    new = pattern(lba, 2, bs, seed=332)
    results = lun.cdbs([(cdb.write_16(lba, 2), old, 0),
                        (cdb.orwrite_16(lba, 1, fua=True), new[:bs], 0),
                        (cdb.orwrite_16(lba + 1, 1, fua=True, dpo=True), new[bs:], 0),
                        (cdb.read_16(lba, 2), None, 2 * bs)])
    results[0].expect_good()
    expect_each(zip(["FUA=1", "DPO=1 FUA=1"], results[1:3], strict=True), CdbResult.expect_good)
    assert_blocks_equal(results[3].expect_good().data, _or(old, new), bs, lba)


def test_orwrite_of_zero_blocks_is_good_and_changes_nothing(shared_lun: Lun, orw: None) -> None:
    """SBC-3 5.8: TRANSFER LENGTH 0 -> no blocks are transferred, and this is not an
    error: GOOD, the medium unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(3)
    before = pattern(lba, 1, bs, seed=341)
    lun.write_blocks(lba, before)
    lun.cdb(cdb.orwrite_16(lba, 0)).expect_good()
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after 0 blocks")


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["first-lba-past-the-end", "spanning-the-end", "lba-max", "zero-blocks-past-the-end"])
def test_orwrite_beyond_the_last_lba_is_lba_out_of_range_and_changes_nothing(
    shared_lun: Lun, orw: None, where: str
) -> None:
    """SBC-3 5.8 / 4.4: an LBA past the last one, or a range crossing it -> ILLEGAL
    REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00); the last block is unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    n = lun.blocks
    lba, blocks = {"first-lba-past-the-end": (n, 1), "spanning-the-end": (n - 1, 2),
                   "lba-max": (2**64 - 1, 1), "zero-blocks-past-the-end": (n, 0)}[where]
    tail = pattern(n - 1, 1, bs, seed=351)
    lun.write_blocks(n - 1, tail)
    result = lun.cdb(cdb.orwrite_16(lba, blocks), data_out=b"\xff" * (blocks * bs) or None)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    assert_blocks_equal(lun.read_blocks(n - 1, 1), tail, bs, n - 1,
                        what="last LBA after the refusal")


def test_orwrite_with_orprotect_is_invalid_field_in_cdb_and_changes_nothing(
    shared_lun: Lun, caps: Capabilities, orw: None
) -> None:
    """SBC-3 5.8, 4.18: ORPROTECT other than 000b on a device without protection
    information -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer byte 1
    bit 7 (the field's first bit); the medium is unchanged."""
    if caps.capacity is not None and caps.capacity.prot_en:
        pytest.skip("the device has protection information enabled (PROT_EN=1)")
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(4)
    before = pattern(lba, 1, bs, seed=361)
    lun.write_blocks(lba, before)
    results = lun.cdbs([(cdb.orwrite_16(lba, 1, orprotect=v), b"\xff" * bs, 0)
                        for v in range(1, 8)])
    expect_each(zip([f"ORPROTECT {v:03b}b" for v in range(1, 8)], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                   field=_PROTECT_FIELD))
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after the refusals")


@pytest.mark.parametrize("size", ["no-data-out", "one-byte-short", "one-block-extra"])
def test_orwrite_with_the_wrong_data_out_length_is_refused_and_changes_nothing(
    shared_lun: Lun, orw: None, size: str
) -> None:
    """SBC-3 5.8 / SAM-5 (as LIO answers on Linux 6.1): a data-out buffer other than
    TRANSFER LENGTH blocks -> ILLEGAL REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT
    (0E/03); the medium is unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(5)
    before = pattern(lba, 3, bs, seed=371)
    lun.write_blocks(lba, before)
    ones = b"\xff" * (2 * bs)
    out = {"no-data-out": None, "one-byte-short": ones[:-1],
           "one-block-extra": ones + b"\xff" * bs}[size]
    result = lun.cdb(cdb.orwrite_16(lba, 2), data_out=out)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
    assert_blocks_equal(lun.read_blocks(lba, 3), before, bs, lba, what="medium after the refusal")


def test_orwrite_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, orw: None
) -> None:
    """SBC-4 6.6.4: TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH (Block Limits VPD) ->
    ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer on TRANSFER LENGTH (byte
    10), and nothing changes. The data-out is as much of the transfer as SG_IO carries: the
    CDB is refused before its data is looked at."""
    limits = caps.block_limits
    if limits is None or not limits.max_transfer:
        pytest.skip("no Block Limits page, or MAXIMUM TRANSFER LENGTH 0 (no limit stated)")
    lun, bs = shared_lun, shared_lun.block_size
    blocks = limits.max_transfer + 1
    lba = _area(6)
    if lba + blocks > lun.blocks:
        pytest.skip(f"MAXIMUM TRANSFER LENGTH {limits.max_transfer}: no longer transfer fits")
    sent = min(blocks, _MAX_SG_IO // bs)
    before = pattern(lba, sent, bs, seed=381)
    lun.write_blocks(lba, before)
    result = lun.cdb(cdb.orwrite_16(lba, blocks), data_out=b"\xff" * (sent * bs))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    pointer = result.decoded.field_pointer if result.decoded else None
    allowed = (FieldPointer(True, _LENGTH_BYTE, None), FieldPointer(True, _LENGTH_BYTE, 7))
    assert pointer in allowed, (
        f"field pointer {pointer}, expected byte {_LENGTH_BYTE}\n{result.describe()}")
    assert_blocks_equal(lun.read_blocks(lba, sent), before, bs, lba,
                        what="medium after the refusal")
