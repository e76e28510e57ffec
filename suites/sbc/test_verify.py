"""VERIFY(10), VERIFY(12) and VERIFY(16) (SBC-3 5.33-5.35; BYTCHK as the SBC-4 VERIFY
BYTCHK field table defines it): check the medium, and with BYTCHK compare it with the
data-out; nothing is ever written.

Covered: BYTCHK 00b (medium verification only, no data-out: GOOD, the data unchanged, with
DPO when DPOFUA=1); BYTCHK 01b with matching data (GOOD, unchanged) and with a mismatch
(MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION 1D/00, INFORMATION = offset of the first
differing byte from the start of the data-out buffer, at several offsets and blocks; the
data-out is not written); BYTCHK 11b (one block of data-out compared with every block:
match, and a mismatch in the first or the last block); BYTCHK 10b reserved (24/00, field
pointer byte 1 bit 2); VERIFICATION LENGTH 0 (GOOD, nothing transferred); LBA range
(21/00); VRPROTECT without protection information (24/00 byte 1 bit 7); a data-out of the
wrong length (0E/03); VERIFICATION LENGTH above MAXIMUM TRANSFER LENGTH (24/00 on the
field); refusal when the command is not claimed.
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
_BYTCHK_FIELD = FieldPointer(True, 1, 2)  # BYTCHK, bits 2-1: the pointer names bit 2
_PROTECT_FIELD = FieldPointer(True, 1, 7)  # VRPROTECT, bits 7-5


@dataclasses.dataclass(frozen=True)
class Verify:
    """One of the three CDB sizes, with what differs between them."""

    size: int
    opcode: int
    length_byte: int  # VERIFICATION LENGTH, most significant byte
    max_lba: int
    max_length: int

    def cdb(self, lba: int, blocks: int, bytchk: int = 0, dpo: bool = False,
            vrprotect: int = 0) -> bytes:
        build = {10: cdb.verify_10, 12: cdb.verify_12, 16: cdb.verify_16}[self.size]
        return build(lba, blocks, bytchk, dpo, vrprotect=vrprotect)

    def area(self, number: int) -> int:
        """First LBA of test `number`'s blocks for this CDB size (block 0 of an area is
        always a neighbour)."""
        return number * _AREA + 1 + {10: 0, 12: 1, 16: 2}[self.size] * _PER_SIZE


VF10 = Verify(10, Opcode.VERIFY_10, 7, 0xFFFFFFFF, 0xFFFF)
VF12 = Verify(12, Opcode.VERIFY_12, 6, 0xFFFFFFFF, 0xFFFFFFFF)
VF16 = Verify(16, Opcode.VERIFY_16, 10, 2**64 - 1, 0xFFFFFFFF)


@pytest.fixture(params=[VF10, VF12, VF16], ids=["verify-10", "verify-12", "verify-16"])
def command(request: pytest.FixtureRequest) -> Verify:
    return request.param


@pytest.fixture
def vf(command: Verify, caps: Capabilities) -> Verify:
    """The command, skipping unless the device claims it."""
    caps.require(command.opcode)
    return command


# --- helpers ---------------------------------------------------------------------------------


def _lay(lun: Lun, spans: list[tuple[int, bytes]]) -> None:
    """Write each (lba, data) in one round trip."""
    results = lun.cdbs([(cdb.write_16(lba, len(data) // lun.block_size), data, 0)
                        for lba, data in spans])
    for result in results:
        result.expect_good()


def _whole_byte(byte: int) -> tuple[FieldPointer, FieldPointer]:
    """A field of whole bytes: BPV may be clear, or the bit pointer names its top bit
    (SPC-4 4.5.2.4.2)."""
    return FieldPointer(True, byte, None), FieldPointer(True, byte, 7)


def _expect_invalid_field(result: CdbResult, allowed: tuple[FieldPointer, ...]) -> None:
    __tracebackhide__ = True
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    pointer = result.decoded.field_pointer if result.decoded else None
    assert pointer in allowed, (
        f"field pointer {pointer}, expected {' or '.join(map(str, allowed))}\n"
        f"{result.describe()}")


def _flip(data: bytes, *offsets: int) -> bytes:
    out = bytearray(data)
    for offset in offsets:
        out[offset] ^= 0x5A
    return bytes(out)


# --- claims ----------------------------------------------------------------------------------


def test_verify_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities, command: Verify
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00)."""
    caps.require_absent(command.opcode)
    result = shared_lun.cdb(command.cdb(command.area(0), 1))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


# --- BYTCHK 00b ------------------------------------------------------------------------------


def test_verify_bytchk_0_is_good_without_data_out_and_changes_nothing(
    shared_lun: Lun, caps: Capabilities, vf: Verify
) -> None:
    """SBC-3 5.33-5.35 (BYTCHK 0): a medium verification of readable blocks, with no
    data-out buffer, completes with GOOD: several blocks, the first and the last LBA, DPO
    when the device reports DPOFUA=1; the data reads back unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    lba, last = vf.area(1), lun.blocks - 1
    data = pattern(lba, 8, bs, seed=101)
    tail = pattern(last, 1, bs, seed=102)
    _lay(lun, [(lba, data), (last, tail)])
    cases = [("8 blocks", vf.cdb(lba, 8)), ("the first LBA", vf.cdb(0, 1)),
             ("the last LBA", vf.cdb(last, 1))]
    if caps.dpofua:
        cases.append(("DPO=1", vf.cdb(lba, 8, dpo=True)))
    results = lun.cdbs([(c, None, 0) for _, c in cases])
    expect_each(zip([w for w, _ in cases], results, strict=True), CdbResult.expect_good)
    assert_blocks_equal(lun.read_blocks(lba, 8), data, bs, lba, what="data after VERIFY")
    assert_blocks_equal(lun.read_blocks(last, 1), tail, bs, last, what="last LBA after VERIFY")


# --- BYTCHK 01b ------------------------------------------------------------------------------


def test_verify_bytchk_1_with_matching_data_is_good_and_changes_nothing(
    shared_lun: Lun, vf: Verify
) -> None:
    """SBC-3 5.33 / SBC-4 BYTCHK table (01b): data-out equal to the medium -> GOOD, for one
    block, several blocks and the last LBA; nothing is written."""
    lun, bs = shared_lun, shared_lun.block_size
    lba, last = vf.area(2), lun.blocks - 1
    data = pattern(lba, 8, bs, seed=111)
    tail = pattern(last, 1, bs, seed=112)
    _lay(lun, [(lba, data), (last, tail)])
    cases = [("1 block", vf.cdb(lba, 1, bytchk=1), data[:bs]),
             ("8 blocks", vf.cdb(lba, 8, bytchk=1), data),
             ("blocks 3-5", vf.cdb(lba + 3, 3, bytchk=1), data[3 * bs : 6 * bs]),
             ("the last LBA", vf.cdb(last, 1, bytchk=1), tail)]
    results = lun.cdbs([(c, out, 0) for _, c, out in cases])
    expect_each(zip([w for w, _, _ in cases], results, strict=True), CdbResult.expect_good)
    assert_blocks_equal(lun.read_blocks(lba, 8), data, bs, lba, what="data after VERIFY")


def test_verify_bytchk_1_miscompare_reports_the_first_differing_byte_and_writes_nothing(
    shared_lun: Lun, vf: Verify
) -> None:
    """SBC-3 5.33 / SBC-4 BYTCHK table (01b): data-out unlike the medium -> MISCOMPARE,
    MISCOMPARE DURING VERIFY OPERATION (1D/00), INFORMATION (VALID) = offset of the first
    differing byte from the start of the data-out buffer (here offsets 0, 1, 200, the
    last byte of block 0, byte 7 of block 2 and the last byte of block 3); the data-out is
    not written: the medium is unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    blocks = 4
    offsets = [0, 1, 200, bs - 1, 2 * bs + 7, 4 * bs - 1]
    base = vf.area(3)
    lbas = [base + 5 * i for i in range(len(offsets))]  # 4 blocks each, one apart
    medium = [pattern(lba, blocks, bs, seed=120 + i) for i, lba in enumerate(lbas)]
    _lay(lun, list(zip(lbas, medium, strict=True)))
    # A second difference at the last byte: only "the first" is reported.
    outs = [_flip(m, o, len(m) - 1) if o != len(m) - 1 else _flip(m, o)
            for m, o in zip(medium, offsets, strict=True)]
    results = lun.cdbs([(vf.cdb(lba, blocks, bytchk=1), out, 0)
                        for lba, out in zip(lbas, outs, strict=True)])
    for offset, result in zip(offsets, results, strict=True):
        try:
            result.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY,
                                information=offset)
        except AssertionError as exc:
            raise AssertionError(f"first difference at data-out byte {offset}: {exc}") from None
    back = lun.cdbs([(cdb.read_16(lba, blocks), None, blocks * bs) for lba in lbas])
    for lba, data, result in zip(lbas, medium, back, strict=True):
        assert_blocks_equal(result.expect_good().data, data, bs, lba,
                            what="medium after a VERIFY miscompare")


# --- BYTCHK 11b ------------------------------------------------------------------------------


def test_verify_bytchk_3_with_one_matching_block_is_good(shared_lun: Lun, vf: Verify) -> None:
    """SBC-4 BYTCHK table (11b): one logical block of data-out is compared with
    each block of the range: blocks that all equal it -> GOOD (1 block and 6 blocks);
    nothing is written."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = vf.area(4)
    block = pattern(lba, 1, bs, seed=131)
    _lay(lun, [(lba, block * 6)])
    results = lun.cdbs([(vf.cdb(lba, 1, bytchk=3), block, 0),
                        (vf.cdb(lba, 6, bytchk=3), block, 0)])
    expect_each(zip(["1 block", "6 blocks"], results, strict=True), CdbResult.expect_good)
    assert_blocks_equal(lun.read_blocks(lba, 6), block * 6, bs, lba, what="data after VERIFY")


@pytest.mark.parametrize("which", ["first-block", "last-block"])
def test_verify_bytchk_3_miscompare_in_any_block_is_reported_and_writes_nothing(
    shared_lun: Lun, vf: Verify, which: str
) -> None:
    """SBC-4 BYTCHK table (11b): a block of the range unlike the one block of data-out ->
    MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1D/00); every block is compared, the
    last one too. INFORMATION (VALID) is the offset of the first differing byte: the
    standard counts it from the start of the data-out buffer, which for 11b may be read
    as the byte within the single data-out block or as the offset in the range compared;
    either is accepted. Nothing is written."""
    lun, bs = shared_lun, shared_lun.block_size
    blocks, byte = 6, 37
    index = 0 if which == "first-block" else blocks - 1
    lba = vf.area(5) + (0 if which == "first-block" else 8)
    block = pattern(lba, 1, bs, seed=141)
    medium = bytearray(block * blocks)
    medium[index * bs + byte] ^= 0xC3
    _lay(lun, [(lba, bytes(medium))])
    result = lun.cdb(vf.cdb(lba, blocks, bytchk=3), data_out=block)
    result.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY)
    info = result.decoded.information if result.decoded else None
    assert info in (byte, index * bs + byte), (
        f"INFORMATION {info}, expected {byte} (in the data-out block) or "
        f"{index * bs + byte} (in the range)\n{result.describe()}")
    assert_blocks_equal(lun.read_blocks(lba, blocks), bytes(medium), bs, lba,
                        what="medium after a VERIFY miscompare")


# --- CDB fields ------------------------------------------------------------------------------


def test_verify_bytchk_2_is_invalid_field_in_cdb(shared_lun: Lun, vf: Verify) -> None:
    """SBC-4 BYTCHK table: 10b is reserved -> ILLEGAL REQUEST, INVALID FIELD IN
    CDB (24/00), field pointer byte 1 bit 2 (the field's first bit)."""
    lun = shared_lun
    lba = vf.area(6)
    results = lun.cdbs([(vf.cdb(lba, 1, bytchk=2), None, 0),
                        (vf.cdb(lba, 1, bytchk=2), bytes(lun.block_size), 0)])
    expect_each(zip(["no data-out", "one block of data-out"], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                   field=_BYTCHK_FIELD))


def test_verify_with_vrprotect_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, vf: Verify
) -> None:
    """SBC-3 5.33, 4.18: VRPROTECT other than 000b on a device without protection
    information -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer byte 1
    bit 7 (the field's first bit), with BYTCHK 0 and with matching BYTCHK 1 data."""
    if caps.capacity is not None and caps.capacity.prot_en:
        pytest.skip("the device has protection information enabled (PROT_EN=1)")
    lun, bs = shared_lun, shared_lun.block_size
    lba = vf.area(7)
    data = pattern(lba, 1, bs, seed=151)
    _lay(lun, [(lba, data)])
    cases = [(f"VRPROTECT {v:03b}b, BYTCHK {b}", vf.cdb(lba, 1, bytchk=b, vrprotect=v),
              data if b else None) for v in range(1, 8) for b in (0, 1)]
    results = lun.cdbs([(c, out, 0) for _, c, out in cases])
    expect_each(zip([w for w, _, _ in cases], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                   field=_PROTECT_FIELD))


def test_verify_of_zero_blocks_is_good_and_transfers_nothing(shared_lun: Lun, vf: Verify) -> None:
    """SBC-3 5.33-5.35: VERIFICATION LENGTH 0 -> no blocks are verified and this is not an
    error: GOOD with BYTCHK 00b, 01b and 11b and no data-out, at a block in the middle and
    at the last LBA."""
    lun = shared_lun
    last = lun.blocks - 1
    cases = [(f"BYTCHK {b}, LBA {lba}", vf.cdb(lba, 0, bytchk=b))
             for b in (0, 1, 3) for lba in (vf.area(8), last)]
    results = lun.cdbs([(c, None, 0) for _, c in cases])
    expect_each(zip([w for w, _ in cases], results, strict=True), CdbResult.expect_good)


@pytest.mark.parametrize(
    "where", ["first-lba-past-the-end", "spanning-the-end", "lba-max", "zero-blocks-past-the-end"])
def test_verify_beyond_the_last_lba_is_lba_out_of_range(
    shared_lun: Lun, vf: Verify, where: str
) -> None:
    """SBC-3 5.33-5.35 / 4.4: an LBA past the last one, or a range crossing it ->
    ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00), with BYTCHK 0 (no
    data-out), BYTCHK 1 (a full data-out) and BYTCHK 11b (one block)."""
    lun, bs = shared_lun, shared_lun.block_size
    n = lun.blocks
    lba, blocks = {"first-lba-past-the-end": (n, 1), "spanning-the-end": (n - 1, 2),
                   "lba-max": (vf.max_lba, 1), "zero-blocks-past-the-end": (n, 0)}[where]
    if lba > vf.max_lba:
        pytest.skip(f"LBA {lba} does not fit VERIFY({vf.size})")
    cases = [("BYTCHK 0", vf.cdb(lba, blocks), None),
             ("BYTCHK 1", vf.cdb(lba, blocks, bytchk=1), bytes(blocks * bs) or None),
             ("BYTCHK 3", vf.cdb(lba, blocks, bytchk=3), bytes(bs) if blocks else None)]
    results = lun.cdbs([(c, out, 0) for _, c, out in cases])
    expect_each(zip([w for w, _, _ in cases], results, strict=True),
          lambda r: r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE))


@pytest.mark.parametrize("size", ["no-data-out", "one-byte-short", "one-block-extra",
                                  "bytchk-3-with-two-blocks"])
def test_verify_with_the_wrong_data_out_length_is_refused(
    shared_lun: Lun, vf: Verify, size: str
) -> None:
    """SBC-3 5.33 / SAM-5 (as LIO answers on Linux 6.1): a data-out buffer other than
    VERIFICATION LENGTH blocks (BYTCHK 01b) or one block (BYTCHK 11b) -> ILLEGAL REQUEST,
    INVALID FIELD IN COMMAND INFORMATION UNIT (0E/03), though the data matches; the medium
    is unchanged."""
    lun, bs = shared_lun, shared_lun.block_size
    lba = vf.area(9)
    data = pattern(lba, 2, bs, seed=161)
    _lay(lun, [(lba, data)])
    raw, out = {
        "no-data-out": (vf.cdb(lba, 2, bytchk=1), None),
        "one-byte-short": (vf.cdb(lba, 2, bytchk=1), data[:-1]),
        "one-block-extra": (vf.cdb(lba, 2, bytchk=1), data + pattern(lba + 2, 1, bs)),
        "bytchk-3-with-two-blocks": (vf.cdb(lba, 1, bytchk=3), data[:bs] * 2),
    }[size]
    result = lun.cdb(raw, data_out=out)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
    assert_blocks_equal(lun.read_blocks(lba, 2), data, bs, lba, what="medium after the refusal")


def test_verify_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, vf: Verify
) -> None:
    """SBC-4 6.6.4: VERIFICATION LENGTH above MAXIMUM TRANSFER LENGTH (Block Limits VPD)
    -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer on VERIFICATION LENGTH;
    with BYTCHK 00b (no data-out) and 11b (one block of data-out)."""
    limits = caps.block_limits
    if limits is None or not limits.max_transfer:
        pytest.skip("no Block Limits page, or MAXIMUM TRANSFER LENGTH 0 (no limit stated)")
    lun = shared_lun
    blocks = limits.max_transfer + 1
    if blocks > min(vf.max_length, lun.blocks):
        pytest.skip(f"MAXIMUM TRANSFER LENGTH {limits.max_transfer}: no longer verification "
                    f"fits VERIFY({vf.size}) and the LUN")
    results = lun.cdbs([(vf.cdb(0, blocks), None, 0),
                        (vf.cdb(0, blocks, bytchk=3), bytes(lun.block_size), 0)])
    expect_each(zip(["BYTCHK 0", "BYTCHK 3"], results, strict=True),
          lambda r: _expect_invalid_field(r, _whole_byte(vf.length_byte)))
