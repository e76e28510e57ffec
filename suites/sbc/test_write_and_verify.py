"""WRITE AND VERIFY(10), (12) and (16) (SBC-3 5.36-5.38): write the data-out, then verify
the blocks written (BYTCHK 0: a medium verification; BYTCHK 1: a byte-by-byte comparison
of the medium with the data-out).

Covered: the data is written to the LBAs the CDB names and nowhere else, with BYTCHK 0
and 1 (after which the comparison of what was just written succeeds: GOOD), one block and
several, the last LBA, DPO (when DPOFUA=1); TRANSFER LENGTH 0 (GOOD, nothing written);
LBA range (21/00, nothing written); WRPROTECT without protection information (24/00 byte
1 bit 7); BYTCHK 10b reserved (24/00 byte 1 bit 2); a data-out of the wrong length (0E/03,
nothing written); TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH (24/00 on the field,
nothing written); refusal when the command is not claimed.
"""

from __future__ import annotations

import dataclasses

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
_PER_SIZE = 40  # within an area, each CDB size has its own 40 blocks
_MAX_SG_IO = 1 << 20  # bytes SG_IO carries per command here
_BYTCHK_FIELD = FieldPointer(True, 1, 2)  # BYTCHK, bits 2-1: the pointer names bit 2
_PROTECT_FIELD = FieldPointer(True, 1, 7)  # WRPROTECT, bits 7-5


@dataclasses.dataclass(frozen=True)
class WriteAndVerify:
    """One of the three CDB sizes, with what differs between them."""

    size: int
    opcode: int
    length_byte: int  # TRANSFER LENGTH, most significant byte
    max_lba: int
    max_length: int

    def cdb(self, lba: int, blocks: int, bytchk: int = 0, dpo: bool = False,
            wrprotect: int = 0) -> bytes:
        build = {10: cdb.write_and_verify_10, 12: cdb.write_and_verify_12,
                 16: cdb.write_and_verify_16}[self.size]
        return build(lba, blocks, bytchk, dpo, wrprotect=wrprotect)

    def area(self, number: int) -> int:
        """First LBA of test `number`'s blocks for this CDB size (block 0 of an area is
        always a neighbour)."""
        return number * _AREA + 1 + {10: 0, 12: 1, 16: 2}[self.size] * _PER_SIZE


WAV10 = WriteAndVerify(10, Opcode.WRITE_AND_VERIFY_10, 7, 0xFFFFFFFF, 0xFFFF)
WAV12 = WriteAndVerify(12, Opcode.WRITE_AND_VERIFY_12, 6, 0xFFFFFFFF, 0xFFFFFFFF)
WAV16 = WriteAndVerify(16, Opcode.WRITE_AND_VERIFY_16, 10, 2**64 - 1, 0xFFFFFFFF)


@pytest.fixture(params=[WAV10, WAV12, WAV16],
                ids=["write-and-verify-10", "write-and-verify-12", "write-and-verify-16"])
def command(request: pytest.FixtureRequest) -> WriteAndVerify:
    return request.param


@pytest.fixture
def wav(command: WriteAndVerify, caps: Capabilities) -> WriteAndVerify:
    """The command, skipping unless the device claims it."""
    caps.require(command.opcode)
    return command


# --- helpers ---------------------------------------------------------------------------------


def _whole_byte(byte: int) -> tuple[FieldPointer, FieldPointer]:
    """A field of whole bytes: BPV may be clear, or the bit pointer names its top bit
    (SPC-4 4.5.2.4.2)."""
    return FieldPointer(True, byte, None), FieldPointer(True, byte, 7)


# --- claims ----------------------------------------------------------------------------------


def test_write_and_verify_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities, command: WriteAndVerify
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00); the data is
    not written."""
    caps.require_absent(command.opcode)
    lun, bs = shared_lun, shared_lun.block_size
    lba = command.area(0)
    before = pattern(lba, 1, bs, seed=201)
    lun.write_blocks(lba, before)
    result = lun.cdb(command.cdb(lba, 1), data_out=pattern(lba, 1, bs, seed=202))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after the refusal")


# --- data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bytchk", [0, 1], ids=["bytchk-0", "bytchk-1"])
def test_write_and_verify_stores_the_data_at_the_lba(
    shared_lun: Lun, wav: WriteAndVerify, bytchk: int
) -> None:
    """SBC-3 5.36-5.38: the data-out is written to TRANSFER LENGTH blocks from the LBA,
    and nowhere else (the neighbours on both sides keep their data), then verified; with
    BYTCHK 1 the comparison of the blocks just written succeeds: GOOD. One block and
    five blocks."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = wav.area(1) + 10 * bytchk
    before = pattern(lba - 1, 8, bs, seed=211)
    one = pattern(lba, 1, bs, seed=212)
    five = pattern(lba + 1, 5, bs, seed=213)
    results = lun.cdbs([
        (cdb.write_16(lba - 1, 8), before, 0),
        (wav.cdb(lba, 1, bytchk=bytchk), one, 0),
        (wav.cdb(lba + 1, 5, bytchk=bytchk), five, 0),
        (cdb.read_16(lba - 1, 8), None, 8 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    expect_each(zip(["1 block", "5 blocks"], results[1:3], strict=True), CdbResult.expect_good)
    expected = before[:bs] + one + five + before[7 * bs :]
    assert_blocks_equal(results[3].expect_good().data, expected, bs, lba - 1,
                        what="WRITE AND VERIFY target and its neighbours")


def test_write_and_verify_at_the_last_lba_stores_the_data(
    shared_lun: Lun, caps: Capabilities, wav: WriteAndVerify
) -> None:
    """SBC-3 5.36-5.38 / 4.4: the last LBA is inside the capacity: WRITE AND VERIFY of it
    (BYTCHK 0 and 1, and DPO=1 when the device reports DPOFUA=1) is GOOD and stores the
    data."""
    lun, bs = shared_lun, shared_lun.block_size
    last = lun.blocks - 1
    cases = [("BYTCHK 0", wav.cdb(last, 1)), ("BYTCHK 1", wav.cdb(last, 1, bytchk=1))]
    if caps.dpofua:
        cases.append(("DPO=1", wav.cdb(last, 1, bytchk=1, dpo=True)))
    for seed, (what, raw) in enumerate(cases, start=221):
        data = pattern(last, 1, bs, seed=seed)
        write, back = lun.cdbs([(raw, data, 0), (cdb.read_16(last, 1), None, bs)])
        expect_each([(what, write)], CdbResult.expect_good)
        assert_blocks_equal(back.expect_good().data, data, bs, last, what=what)


def test_write_and_verify_of_zero_blocks_is_good_and_writes_nothing(
    shared_lun: Lun, wav: WriteAndVerify
) -> None:
    """SBC-3 5.36-5.38: TRANSFER LENGTH 0 -> no blocks are transferred, and this is not an
    error: GOOD with BYTCHK 0 and 1, and the medium is unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = wav.area(2)
    before = pattern(lba, 1, bs, seed=231)
    lun.write_blocks(lba, before)
    results = lun.cdbs([(wav.cdb(lba, 0, bytchk=b), None, 0) for b in (0, 1)])
    expect_each(zip(["BYTCHK 0", "BYTCHK 1"], results, strict=True), CdbResult.expect_good)
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after 0 blocks")


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["first-lba-past-the-end", "spanning-the-end", "lba-max", "zero-blocks-past-the-end"])
def test_write_and_verify_beyond_the_last_lba_is_lba_out_of_range_and_writes_nothing(
    shared_lun: Lun, wav: WriteAndVerify, where: str
) -> None:
    """SBC-3 5.36-5.38 / 4.4: an LBA past the last one, or a range crossing it ->
    ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00), with BYTCHK 0 and 1;
    nothing is written (the last block keeps its data)."""
    lun, bs = shared_lun, shared_lun.block_size
    n = lun.blocks
    lba, blocks = {"first-lba-past-the-end": (n, 1), "spanning-the-end": (n - 1, 2),
                   "lba-max": (wav.max_lba, 1), "zero-blocks-past-the-end": (n, 0)}[where]
    tail = pattern(n - 1, 1, bs, seed=241)
    lun.write_blocks(n - 1, tail)
    data = pattern(lba, blocks, bs, seed=242) or None
    results = lun.cdbs([(wav.cdb(lba, blocks, bytchk=b), data, 0) for b in (0, 1)])
    expect_each(zip(["BYTCHK 0", "BYTCHK 1"], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE))
    assert_blocks_equal(lun.read_blocks(n - 1, 1), tail, bs, n - 1,
                        what="last LBA after the refusal")


def test_write_and_verify_with_wrprotect_is_invalid_field_in_cdb_and_writes_nothing(
    shared_lun: Lun, caps: Capabilities, wav: WriteAndVerify
) -> None:
    """SBC-3 5.36, 4.18: WRPROTECT other than 000b on a device without protection
    information -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer byte 1
    bit 7 (the field's first bit); nothing is written."""
    if caps.capacity is not None and caps.capacity.prot_en:
        pytest.skip("the device has protection information enabled (PROT_EN=1)")
    lun, bs = shared_lun, shared_lun.block_size
    lba = wav.area(3)
    before = pattern(lba, 1, bs, seed=251)
    lun.write_blocks(lba, before)
    data = pattern(lba, 1, bs, seed=252)
    cases = [(f"WRPROTECT {v:03b}b, BYTCHK {b}", wav.cdb(lba, 1, bytchk=b, wrprotect=v))
             for v in range(1, 8) for b in (0, 1)]
    results = lun.cdbs([(c, data, 0) for _, c in cases])
    expect_each(zip([w for w, _ in cases], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                   field=_PROTECT_FIELD))
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after the refusals")


def test_write_and_verify_with_bytchk_2_is_invalid_field_in_cdb_and_writes_nothing(
    shared_lun: Lun, wav: WriteAndVerify
) -> None:
    """SBC-3 5.36 / SBC-4 WRITE AND VERIFY BYTCHK field: 10b is reserved -> ILLEGAL
    REQUEST, INVALID FIELD IN CDB (24/00), field pointer byte 1 bit 2 (the field's first
    bit); nothing is written."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = wav.area(4)
    before = pattern(lba, 1, bs, seed=261)
    lun.write_blocks(lba, before)
    result = lun.cdb(wav.cdb(lba, 1, bytchk=2), data_out=pattern(lba, 1, bs, seed=262))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=_BYTCHK_FIELD)
    assert_blocks_equal(lun.read_blocks(lba, 1), before, bs, lba, what="medium after the refusal")


@pytest.mark.parametrize("size", ["no-data-out", "one-byte-short", "one-block-extra"])
def test_write_and_verify_with_the_wrong_data_out_length_is_refused_and_writes_nothing(
    shared_lun: Lun, wav: WriteAndVerify, size: str
) -> None:
    """SBC-3 5.36 / SAM-5 (as LIO answers on Linux 6.1): a data-out buffer other than
    TRANSFER LENGTH blocks -> ILLEGAL REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT
    (0E/03), with BYTCHK 0 and 1; nothing is written."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = wav.area(5)
    before = pattern(lba, 3, bs, seed=271)
    lun.write_blocks(lba, before)
    data = pattern(lba, 2, bs, seed=272)
    out = {"no-data-out": None, "one-byte-short": data[:-1],
           "one-block-extra": data + pattern(lba + 2, 1, bs, seed=273)}[size]
    results = lun.cdbs([(wav.cdb(lba, 2, bytchk=b), out, 0) for b in (0, 1)])
    expect_each(zip(["BYTCHK 0", "BYTCHK 1"], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST,
                                   Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT))
    assert_blocks_equal(lun.read_blocks(lba, 3), before, bs, lba, what="medium after the refusal")


def test_write_and_verify_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, wav: WriteAndVerify
) -> None:
    """SBC-4 6.6.4: TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH (Block Limits VPD) ->
    ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer on TRANSFER LENGTH, and
    nothing is written. The data-out is as much of the transfer as SG_IO carries: the CDB
    is refused before its data is looked at."""
    limits = caps.block_limits
    if limits is None or not limits.max_transfer:
        pytest.skip("no Block Limits page, or MAXIMUM TRANSFER LENGTH 0 (no limit stated)")
    lun, bs = shared_lun, shared_lun.block_size
    blocks = limits.max_transfer + 1
    lba = wav.area(6)
    if blocks > wav.max_length or lba + blocks > lun.blocks:
        pytest.skip(f"MAXIMUM TRANSFER LENGTH {limits.max_transfer}: no longer transfer fits "
                    f"WRITE AND VERIFY({wav.size}) and the LUN")
    sent = min(blocks, _MAX_SG_IO // bs)
    before = pattern(lba, sent, bs, seed=281)
    lun.write_blocks(lba, before)
    data = pattern(lba, sent, bs, seed=282)
    result = lun.cdb(wav.cdb(lba, blocks), data_out=data)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    pointer = result.decoded.field_pointer if result.decoded else None
    assert pointer in _whole_byte(wav.length_byte), (
        f"field pointer {pointer}, expected byte {wav.length_byte}\n{result.describe()}")
    assert_blocks_equal(lun.read_blocks(lba, sent), before, bs, lba,
                        what="medium after the refusal")
