"""COMPARE AND WRITE (SBC-3 5.2): the data-out is NUMBER OF LOGICAL BLOCKS blocks of
verify data followed by as many blocks of write data; the write happens only if the
verify data equals the medium, atomically.

Covered: a match stores the write data and nothing else (neighbours untouched, the last
LBA reachable); a miscompare is MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1D/00)
with INFORMATION (VALID) = offset of the first differing byte of the verify data
(offsets 0, 1, 200, the last byte of a block, a byte of block 1 when two blocks are
allowed, bytes past 512 of a 4096-byte block) and writes nothing, in fixed or (D_SENSE=1)
descriptor format; NUMBER OF LOGICAL BLOCKS 0 (GOOD, nothing done); the MAXIMUM COMPARE
AND WRITE LENGTH of the Block Limits VPD page; LBA range; data-out that is not 2 x blocks
x block size (0E/03, nothing written); WRPROTECT without protection information; DPO and
FUA; refusal when the command is not claimed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities, discover
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_AREA = 512  # blocks of the shared LUN each test owns: area n is [n*512, n*512+512)
_MAX_SG_IO = 1 << 20  # bytes SG_IO carries per command here
_LENGTH_BYTE = 13  # NUMBER OF LOGICAL BLOCKS
_PAGE_CONTROL = 0x0A
_D_SENSE = 0x04  # Control mode page byte 2


# --- helpers ---------------------------------------------------------------------------------


def _area(number: int) -> int:
    """First LBA of a test's own area; block 0 of the area stays a neighbour."""
    return number * _AREA + 1


def _max_blocks(caps: Capabilities) -> int:
    """MAXIMUM COMPARE AND WRITE LENGTH, after checking the command is claimed and the
    Block Limits page reports a usable limit (0 = the command is not supported)."""
    caps.require(Opcode.COMPARE_AND_WRITE)
    caps.require_vpd(0xB0)
    limits = caps.block_limits
    assert limits is not None
    if not limits.max_compare_and_write:
        pytest.skip("MAXIMUM COMPARE AND WRITE LENGTH is 0 (not supported), although claimed")
    return limits.max_compare_and_write


def _require_blocks(caps: Capabilities, blocks: int) -> None:
    maximum = _max_blocks(caps)
    if blocks > maximum:
        pytest.skip(f"MAXIMUM COMPARE AND WRITE LENGTH is {maximum}: {blocks} blocks not allowed")


def _whole_byte(byte: int, in_cdb: bool = True) -> tuple[FieldPointer, FieldPointer]:
    """A field of whole bytes: BPV may be clear, or the bit pointer names its top bit
    (SPC-4 4.5.2.4.2)."""
    return FieldPointer(in_cdb, byte, None), FieldPointer(in_cdb, byte, 7)


def _expect_invalid_field(result: CdbResult, asc: int,
                          allowed: tuple[FieldPointer, ...]) -> None:
    __tracebackhide__ = True
    result.expect_check(SenseKey.ILLEGAL_REQUEST, asc)
    pointer = result.decoded.field_pointer if result.decoded else None
    assert pointer in allowed, (
        f"field pointer {pointer}, expected {' or '.join(map(str, allowed))}\n"
        f"{result.describe()}")


def _around(lun: Lun, lba: int, blocks: int, seed: int) -> tuple[bytes, Callable[[], bytes]]:
    """Lay down a pattern over [lba-1, lba+blocks+1) (the target blocks and a neighbour on
    each side); returns it and a function reading the same span back."""
    bs = lun.block_size
    span = blocks + 2
    before = pattern(lba - 1, span, bs, seed=seed)
    lun.cdb(cdb.write_16(lba - 1, span), data_out=before).expect_good()

    def read_back() -> bytes:
        return lun.cdb(cdb.read_16(lba - 1, span), data_in_len=span * bs).expect_good().data

    return before, read_back


def _old(before: bytes, bs: int, blocks: int) -> bytes:
    """The target blocks within a span laid down by _around."""
    return before[bs : bs + blocks * bs]


def _replaced(before: bytes, bs: int, data: bytes) -> bytes:
    return before[:bs] + data + before[bs + len(data) :]


def _miscompare_case(lun: Lun, lba: int, blocks: int, offset: int) -> tuple[CdbResult, bytes,
                                                                              bytes]:
    """Verify data that differs from the medium first at `offset` (and again at the last
    byte, so "the first" matters); returns the result, the span before, the span after."""
    bs = lun.block_size
    before, read_back = _around(lun, lba, blocks, seed=lba)
    verify = bytearray(_old(before, bs, blocks))
    verify[offset] ^= 0x5A
    verify[-1] ^= 0xA5
    write = pattern(lba, blocks, bs, seed=lba + 7)
    result = lun.cdb(cdb.compare_and_write(lba, blocks), data_out=bytes(verify) + write)
    return result, before, read_back()


def _set_d_sense(lun: Lun) -> None:
    """MODE SELECT(10) of the current Control page with D_SENSE set."""
    sensed = lun.cdb(cdb.mode_sense_10(_PAGE_CONTROL, dbd=True, alloc_len=255),
                     data_in_len=255).expect_good().data
    start = 8 + int.from_bytes(sensed[6:8], "big")
    page = bytearray(sensed[start : start + 2 + sensed[start + 1]])
    page[0] &= 0x3F  # PS is reserved in MODE SELECT
    page[2] |= _D_SENSE
    header = bytes(8)  # MODE DATA LENGTH reserved, no block descriptors
    lun.cdb(cdb.mode_select_10(len(header) + len(page)),
            data_out=header + bytes(page)).expect_good()


# --- claims ------------------------------------------------------------------------------------


def test_compare_and_write_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00)."""
    caps.require_absent(Opcode.COMPARE_AND_WRITE)
    bs = shared_lun.block_size
    result = shared_lun.cdb(cdb.compare_and_write(_area(0), 1), data_out=bytes(2 * bs))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


def test_compare_and_write_claimed_has_a_maximum_length_in_block_limits(
    caps: Capabilities
) -> None:
    """SBC-3 6.5.3: a device serving COMPARE AND WRITE reports a non-zero MAXIMUM COMPARE
    AND WRITE LENGTH in the Block Limits VPD page (0 means not supported)."""
    caps.require(Opcode.COMPARE_AND_WRITE)
    limits = caps.block_limits
    assert limits is not None, "COMPARE AND WRITE is claimed but there is no Block Limits page"
    assert limits.max_compare_and_write >= 1, (
        "COMPARE AND WRITE is claimed but MAXIMUM COMPARE AND WRITE LENGTH is 0")


# --- match ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [1, 2], ids=["one-block", "two-blocks"])
def test_compare_and_write_with_matching_data_stores_the_write_data(
    shared_lun: Lun, caps: Capabilities, blocks: int
) -> None:
    """SBC-3 5.2: verify data equal to the medium -> the write data is stored at the LBA
    (and nowhere else), GOOD."""
    _require_blocks(caps, blocks)
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(1 + blocks)
    before, read_back = _around(lun, lba, blocks, seed=11)
    write = pattern(lba, blocks, bs, seed=12)
    lun.cdb(cdb.compare_and_write(lba, blocks),
            data_out=_old(before, bs, blocks) + write).expect_good()
    assert_blocks_equal(read_back(), _replaced(before, bs, write), bs, lba - 1,
                        what="COMPARE AND WRITE target and its neighbours")


def test_compare_and_write_at_the_last_lba_is_good(shared_lun: Lun, caps: Capabilities) -> None:
    """SBC-3 5.2 / 4.4: the last LBA is inside the capacity: a matching COMPARE AND WRITE
    of it succeeds and stores the data."""
    _max_blocks(caps)
    lun, bs = shared_lun, shared_lun.block_size
    last = lun.blocks - 1
    old = pattern(last, 1, bs, seed=21)
    new = pattern(last, 1, bs, seed=22)
    write, caw, read = lun.cdbs([
        (cdb.write_16(last, 1), old, 0),
        (cdb.compare_and_write(last, 1), old + new, 0),
        (cdb.read_16(last, 1), None, bs),
    ])  # fmt: skip
    write.expect_good()
    caw.expect_good()
    assert_blocks_equal(read.expect_good().data, new, bs, last)


def test_compare_and_write_with_fua_and_dpo_is_good_and_stores_the_data(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.2 / 6.4.1: with DPOFUA=1 in the mode parameter header the device supports
    DPO and FUA: COMPARE AND WRITE with both set behaves as without them."""
    _max_blocks(caps)
    if not caps.dpofua:
        pytest.skip("the device reports DPOFUA=0 (DPO and FUA not supported)")
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(4)
    before, read_back = _around(lun, lba, 1, seed=31)
    write = pattern(lba, 1, bs, seed=32)
    lun.cdb(cdb.compare_and_write(lba, 1, fua=True, dpo=True),
            data_out=_old(before, bs, 1) + write).expect_good()
    assert_blocks_equal(read_back(), _replaced(before, bs, write), bs, lba - 1)


# --- miscompare --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["byte-0", "byte-1", "byte-200", "last-byte-of-block-0",
                                   "byte-7-of-block-1"])
def test_compare_and_write_miscompare_reports_the_first_differing_byte_and_writes_nothing(
    shared_lun: Lun, caps: Capabilities, where: str
) -> None:
    """SBC-3 5.2: verify data unlike the medium -> MISCOMPARE, MISCOMPARE DURING VERIFY
    OPERATION (1D/00), INFORMATION (VALID) = offset of the first differing byte of the
    verify data; no block is written."""
    bs = shared_lun.block_size
    offset, blocks = {
        "byte-0": (0, 1), "byte-1": (1, 1), "byte-200": (200, 1),
        "last-byte-of-block-0": (bs - 1, 1), "byte-7-of-block-1": (bs + 7, 2),
    }[where]  # fmt: skip
    _require_blocks(caps, blocks)
    lba = _area(5 + ["byte-0", "byte-1", "byte-200", "last-byte-of-block-0",
                     "byte-7-of-block-1"].index(where))
    result, before, after = _miscompare_case(shared_lun, lba, blocks, offset)
    result.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=offset)
    assert_blocks_equal(after, before, bs, lba - 1, what="medium after a miscompare")


def test_compare_and_write_compares_every_byte_of_a_4096_byte_block(
    make_lun: Callable[..., Lun]
) -> None:
    """SBC-3 5.2: the whole block is compared, whatever its size: differences past byte
    511 of a 4096-byte block are miscompares at their own offset, and nothing is written."""
    lun = make_lun(block_size=4096, size=16 << 20)
    _max_blocks(discover(lun))
    for number, offset in enumerate((512, 2049, 4095)):
        lba = 1 + 4 * number
        result, before, after = _miscompare_case(lun, lba, 1, offset)
        result.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY,
                            information=offset)
        assert_blocks_equal(after, before, 4096, lba - 1, what="medium after a miscompare")


def test_compare_and_write_miscompare_is_in_descriptor_format_when_d_sense_is_set(
    lun: Lun
) -> None:
    """SPC-4 4.5.1, 7.5.8 / SBC-3 5.2: with D_SENSE=1 the MISCOMPARE sense is descriptor
    format (72h) and the offset is in an information descriptor (type 00h, VALID)."""
    caps = discover(lun)
    _max_blocks(caps)
    changeable = caps.mode_changeable.get(_PAGE_CONTROL, b"")
    if len(changeable) < 3 or not changeable[2] & _D_SENSE:
        pytest.skip("D_SENSE (Control mode page byte 2) is not changeable")
    _set_d_sense(lun)
    offset = 300
    result, before, after = _miscompare_case(lun, _area(1), 1, offset)
    result.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=offset,
                        descriptor_format=True)
    assert result.decoded is not None
    assert [t for t, _ in result.decoded.descriptors].count(0x00) == 1, (
        f"one information descriptor expected: {result.sense.hex(' ')}")
    assert_blocks_equal(after, before, lun.block_size, _area(1) - 1)


# --- NUMBER OF LOGICAL BLOCKS ------------------------------------------------------------------


def test_compare_and_write_of_zero_blocks_is_good_and_writes_nothing(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.2: NUMBER OF LOGICAL BLOCKS 0: nothing is read, compared or written, and
    this is not an error (GOOD)."""
    _max_blocks(caps)
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(11)
    before, read_back = _around(lun, lba, 1, seed=41)
    lun.cdb(cdb.compare_and_write(lba, 0)).expect_good()
    assert_blocks_equal(read_back(), before, bs, lba - 1)


def test_compare_and_write_longer_than_the_maximum_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.2: NUMBER OF LOGICAL BLOCKS above MAXIMUM COMPARE AND WRITE LENGTH (Block
    Limits VPD) -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00) on byte 13; nothing is
    written, though the verify data matches."""
    maximum = _max_blocks(caps)
    lun, bs = shared_lun, shared_lun.block_size
    if maximum >= 255:
        pytest.skip(f"MAXIMUM COMPARE AND WRITE LENGTH {maximum}: no 1-byte length exceeds it")
    if 2 * (maximum + 1) * bs > _MAX_SG_IO:
        pytest.skip(f"{maximum + 1} blocks of verify and write data exceed what SG_IO carries")
    blocks = maximum + 1
    lba = _area(12)
    before, read_back = _around(lun, lba, blocks, seed=51)
    write = pattern(lba, blocks, bs, seed=52)
    result = lun.cdb(cdb.compare_and_write(lba, blocks),
                     data_out=_old(before, bs, blocks) + write)
    _expect_invalid_field(result, Asc.INVALID_FIELD_IN_CDB, _whole_byte(_LENGTH_BYTE))
    assert_blocks_equal(read_back(), before, bs, lba - 1, what="medium after the refusal")


@pytest.mark.parametrize(
    ("where", "blocks"),
    [("first-lba-past-the-end", 1), ("lba-2**64-1", 1), ("zero-blocks-past-the-end", 0),
     ("spanning-the-end", 2)],
    ids=["first-lba-past-the-end", "lba-max", "zero-blocks-past-the-end", "spanning-the-end"],
)
def test_compare_and_write_beyond_the_last_lba_is_lba_out_of_range(
    shared_lun: Lun, caps: Capabilities, where: str, blocks: int
) -> None:
    """SBC-3 5.2 / 4.4: an LBA past the last one, or a range crossing it -> ILLEGAL
    REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00)."""
    _require_blocks(caps, max(blocks, 1))
    lun, bs = shared_lun, shared_lun.block_size
    lba = {"first-lba-past-the-end": lun.blocks, "lba-2**64-1": 2**64 - 1,
           "zero-blocks-past-the-end": lun.blocks, "spanning-the-end": lun.blocks - 1}[where]
    result = lun.cdb(cdb.compare_and_write(lba, blocks), data_out=bytes(2 * blocks * bs) or None)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


# --- data-out and CDB fields ---------------------------------------------------------------------


@pytest.mark.parametrize("size", ["verify-half-only", "one-byte-short", "one-block-extra"])
def test_compare_and_write_with_the_wrong_data_out_length_is_refused_and_writes_nothing(
    shared_lun: Lun, caps: Capabilities, size: str
) -> None:
    """SBC-3 5.2 / SAM-5 (as LIO answers on Linux 6.1): data-out other than 2 x NUMBER OF
    LOGICAL BLOCKS x block size -> ILLEGAL REQUEST, INVALID FIELD IN COMMAND INFORMATION
    UNIT (0E/03), and nothing is written, though the verify data matches."""
    _max_blocks(caps)
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(13 + ["verify-half-only", "one-byte-short", "one-block-extra"].index(size))
    before, read_back = _around(lun, lba, 1, seed=61)
    full = _old(before, bs, 1) + pattern(lba, 1, bs, seed=62)
    data_out = {"verify-half-only": full[:bs], "one-byte-short": full[:-1],
                "one-block-extra": full + pattern(lba + 1, 1, bs, seed=63)}[size]
    result = lun.cdb(cdb.compare_and_write(lba, 1), data_out=data_out)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
    assert_blocks_equal(read_back(), before, bs, lba - 1, what="medium after the refusal")


def test_compare_and_write_with_wrprotect_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.2, 4.18: WRPROTECT other than 000b on a device without protection
    information -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer byte 1
    bit 7 (the field's first bit); nothing is written."""
    _max_blocks(caps)
    if caps.capacity is not None and caps.capacity.prot_en:
        pytest.skip("the device has protection information enabled (PROT_EN=1)")
    lun, bs = shared_lun, shared_lun.block_size
    lba = _area(16)
    before, read_back = _around(lun, lba, 1, seed=71)
    data_out = _old(before, bs, 1) + pattern(lba, 1, bs, seed=72)
    results = lun.cdbs([(cdb.compare_and_write(lba, 1, wrprotect=value), data_out, 0)
                        for value in range(1, 8)])
    for value, result in zip(range(1, 8), results, strict=True):
        try:
            result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                field=FieldPointer(True, 1, 7))
        except AssertionError as exc:
            raise AssertionError(f"WRPROTECT {value:03b}b: {exc}") from None
    assert_blocks_equal(read_back(), before, bs, lba - 1, what="medium after the refusals")
