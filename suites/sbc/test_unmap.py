"""UNMAP (SBC-3 5.28, parameter list 5.28.2): deallocating the extents of a list of
block descriptors, all or nothing.

Covered: UNMAP is offered exactly when the Logical Block Provisioning VPD page says
LBPU=1 (else INVALID COMMAND OPERATION CODE); unmapped blocks read zeroes when LBPRZ is
claimed (several descriptors, ranges over 64 KiB); the blocks around each extent keep
their data, also for extents that are not whole pages; parameter list checks (length 0,
a header cut short, a descriptor data length beyond the list, a descriptor of 0 blocks);
a descriptor beyond the end, more descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
and more blocks than MAXIMUM UNMAP LBA COUNT are refused and unmap nothing; ANCHOR
without ANC_SUP; a discard through the Linux block device (sd turns it into UNMAP or
WRITE SAME per the same VPD claims).
"""

from __future__ import annotations

import pytest

from tcmu_harness.blocks import area, area_blocks, assert_blocks_equal, page_blocks, pattern
from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult, expect_field_pointer
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_KIB64 = 64 << 10
_HEADER = 8
_DESCRIPTOR = 16


# --- helpers ---------------------------------------------------------------------------------


def _unmap(lun: Lun, extents: list[tuple[int, int]], **kw: bool) -> CdbResult:
    params = cdb.unmap_parameter_list(extents)
    return lun.cdb(cdb.unmap(len(params), **kw), data_out=params)


def _reads_zeroes(caps: Capabilities) -> bool:
    """LBPRZ: READ CAPACITY(16) LBPRZ=1, or the VPD page's LBPRZ field xx1b."""
    if caps.capacity is not None and caps.capacity.lbprz:
        return True
    prov = caps.provisioning
    return prov is not None and bool(prov.lbprz & 0b001)


def _require_unmap(caps: Capabilities) -> None:
    caps.require(Opcode.UNMAP)


def _require_zeroes(caps: Capabilities) -> None:
    caps.require(Opcode.UNMAP)
    if not _reads_zeroes(caps):
        pytest.skip("the device does not claim LBPRZ: unmapped blocks may read anything")


def _expected(before: bytes, first: int, extents: list[tuple[int, int]], bs: int) -> bytes:
    """`before` (blocks from LBA `first`) with the extents zeroed."""
    out = bytearray(before)
    for lba, blocks in extents:
        out[(lba - first) * bs : (lba - first + blocks) * bs] = bytes(blocks * bs)
    return bytes(out)


def _outside(data: bytes, first: int, extents: list[tuple[int, int]], bs: int,
             expected: bytes) -> None:
    """Every block outside the extents equals `expected` (extents' contents unchecked)."""
    __tracebackhide__ = True
    inside = {lba for start, n in extents for lba in range(start, start + n)}
    for i in range(len(expected) // bs):
        if first + i not in inside:
            assert_blocks_equal(data[i * bs : (i + 1) * bs], expected[i * bs : (i + 1) * bs],
                                bs, first + i, what="a block outside the unmapped extents")


# --- claims ----------------------------------------------------------------------------------


def test_unmap_is_offered_exactly_when_lbpu_is_set(caps: Capabilities) -> None:
    """SBC-3 6.5.4: LBPU=1 in the Logical Block Provisioning VPD page says the device
    supports UNMAP; REPORT SUPPORTED OPERATION CODES must agree (SPC-4 6.35)."""
    claimed = caps.claims(Opcode.UNMAP)
    if claimed is None:
        pytest.skip("REPORT SUPPORTED OPERATION CODES is not supported")
    prov = caps.provisioning
    lbpu = prov is not None and prov.lbpu
    assert claimed == lbpu, (f"REPORT SUPPORTED OPERATION CODES {'lists' if claimed else 'omits'}"
                             f" UNMAP but the VPD page 0xB2 says LBPU={int(lbpu)}")


def test_unmap_unclaimed_is_invalid_command_operation_code(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 4.2.2 / SBC-3 5.28: a device that does not offer UNMAP refuses it as INVALID
    COMMAND OPERATION CODE (and the data stays)."""
    caps.require_absent(Opcode.UNMAP)
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, 0)
    before = pattern(start, 2, bs, seed=1)
    lun.write_blocks(start, before)
    _unmap(lun, [(start, 2)]).expect_check(SenseKey.ILLEGAL_REQUEST,
                                           Asc.INVALID_COMMAND_OPERATION_CODE)
    assert_blocks_equal(lun.read_blocks(start, 2), before, bs, start, what="after the refusal")


# --- what is unmapped, and what is not -------------------------------------------------------


def test_unmapped_blocks_read_zeroes_when_lbprz(shared_lun: Lun, caps: Capabilities) -> None:
    """SBC-3 4.7.4.4 / 5.16.2 (LBPRZ): after UNMAP every block of a range over 64 KiB (not
    page aligned at either end) reads zeroes; the blocks before and after keep their data."""
    _require_zeroes(caps)
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 1)
    extent = (first + 3, _KIB64 // bs + 5)
    total = extent[1] + 6
    before = pattern(first, total, bs, seed=2)
    lun.write_blocks(first, before)
    _unmap(lun, [extent]).expect_good()
    assert_blocks_equal(lun.read_blocks(first, total), _expected(before, first, [extent], bs), bs,
                        first)


def test_unmap_with_several_descriptors_unmaps_every_extent(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.28.2: each block descriptor's extent is unmapped (reads zeroes, LBPRZ), in
    any order; the blocks between the extents keep their data."""
    _require_zeroes(caps)
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 2)
    page = page_blocks(lun.block_size)
    extents = [(first + 4 * page + 1, 3), (first + 1, page + 2), (first + 8 * page, 2 * page)]
    total = 11 * page
    before = pattern(first, total, bs, seed=3)
    lun.write_blocks(first, before)
    _unmap(lun, extents).expect_good()
    assert_blocks_equal(lun.read_blocks(first, total), _expected(before, first, extents, bs), bs,
                        first)


@pytest.mark.parametrize("where", ["3-blocks-at-lba-5", "across-a-page-boundary",
                                   "one-whole-page", "one-block"])
def test_unmap_keeps_the_data_of_the_blocks_around_the_extent(
    shared_lun: Lun, caps: Capabilities, where: str
) -> None:
    """SBC-3 5.28.2: only the LBAs of the descriptor are unmapped: with 512-byte blocks an
    extent inside a 4 KiB page (3 blocks at LBA 5) or across a page boundary must not
    take the rest of the page with it. The extent reads zeroes when LBPRZ."""
    _require_unmap(caps)
    lun, bs = shared_lun, shared_lun.block_size
    page = page_blocks(lun.block_size)
    index = ["3-blocks-at-lba-5", "across-a-page-boundary", "one-whole-page",
             "one-block"].index(where)  # fmt: skip
    first = area(lun, 3 + index)
    offset, blocks = {"3-blocks-at-lba-5": (5, 3), "across-a-page-boundary": (2 * page - 1, 2),
                      "one-whole-page": (page, page), "one-block": (page + 1, 1)}[where]
    extent = (first + offset, blocks)
    total = 4 * page + 8
    before = pattern(first, total, bs, seed=4 + index)
    lun.write_blocks(first, before)
    _unmap(lun, [extent]).expect_good()
    after = lun.read_blocks(first, total)
    if _reads_zeroes(caps):
        assert_blocks_equal(after, _expected(before, first, [extent], bs), bs, first)
    else:
        _outside(after, first, [extent], bs, before)


# --- the parameter list -----------------------------------------------------------------------


def test_unmap_with_parameter_list_length_0_is_good_and_unmaps_nothing(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.28.1: PARAMETER LIST LENGTH 0 means no parameter data; not an error."""
    _require_unmap(caps)
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 8)
    before = pattern(first, 2, bs, seed=10)
    results = lun.cdbs([
        (cdb.write_16(first, 2), before, 0),
        (cdb.unmap(0), None, 0),
        (cdb.read_16(first, 2), None, 2 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_good()
    assert_blocks_equal(results[2].expect_good().data, before, bs, first)


@pytest.mark.parametrize("length", [1, 4, 7])
def test_unmap_with_a_parameter_list_shorter_than_its_header_is_parameter_list_length_error(
    shared_lun: Lun, caps: Capabilities, length: int
) -> None:
    """SBC-3 5.28.1: PARAMETER LIST LENGTH 1 to 7 (the 8-byte header cut short) is
    PARAMETER LIST LENGTH ERROR."""
    _require_unmap(caps)
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 9) + length
    params = cdb.unmap_parameter_list([(first, 1)])[:length]
    before = pattern(first, 1, bs, seed=11)
    results = lun.cdbs([
        (cdb.write_16(first, 1), before, 0),
        (cdb.unmap(length), params, 0),
        (cdb.read_16(first, 1), None, bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    assert_blocks_equal(results[2].expect_good().data, before, bs, first)


def test_unmap_with_block_descriptor_data_length_beyond_the_list_is_parameter_list_length_error(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.28.2: a BLOCK DESCRIPTOR DATA LENGTH (two descriptors) larger than the
    parameter list holds (one) is PARAMETER LIST LENGTH ERROR; the descriptor that is
    there is not applied."""
    _require_unmap(caps)
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 10)
    whole = cdb.unmap_parameter_list([(first, 2), (first + 4, 2)])
    params = whole[: _HEADER + _DESCRIPTOR]  # header still announces 32 descriptor bytes
    before = pattern(first, 6, bs, seed=12)
    results = lun.cdbs([
        (cdb.write_16(first, 6), before, 0),
        (cdb.unmap(len(params)), params, 0),
        (cdb.read_16(first, 6), None, 6 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    assert_blocks_equal(results[2].expect_good().data, before, bs, first, what="after the refusal")


def test_unmap_descriptor_of_zero_blocks_is_not_an_error(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.28.2: NUMBER OF LOGICAL BLOCKS 0 in a descriptor unmaps nothing for it and
    is not an error; the other descriptors are applied."""
    _require_unmap(caps)
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 11)
    extents = [(first + 1, 0), (first + 4, 2)]
    before = pattern(first, 8, bs, seed=13)
    lun.write_blocks(first, before)
    _unmap(lun, extents).expect_good()
    after = lun.read_blocks(first, 8)
    if _reads_zeroes(caps):
        assert_blocks_equal(after, _expected(before, first, [(first + 4, 2)], bs), bs, first)
    else:
        _outside(after, first, [(first + 4, 2)], bs, before)


@pytest.mark.parametrize("where", ["first-lba-past-the-end", "spanning-the-end", "lba-max"])
def test_unmap_descriptor_beyond_the_last_lba_is_lba_out_of_range_and_unmaps_nothing(
    shared_lun: Lun, caps: Capabilities, where: str
) -> None:
    """SBC-3 5.28.2: a descriptor whose extent does not end within the medium is LOGICAL
    BLOCK ADDRESS OUT OF RANGE; no descriptor of the command is applied, not even the
    valid ones before it (nor the part of the bad one that exists)."""
    _require_unmap(caps)
    lun, bs = shared_lun, shared_lun.block_size
    index = ["first-lba-past-the-end", "spanning-the-end", "lba-max"].index(where)
    first = area(lun, 12 + index)
    last = lun.blocks - 1
    bad = {"first-lba-past-the-end": (lun.blocks, 1), "spanning-the-end": (last, 2),
           "lba-max": (2**64 - 1, 1)}[where]  # fmt: skip
    params = cdb.unmap_parameter_list([(first, 4), bad])
    before = pattern(first, 4, bs, seed=14 + index)
    end_before = pattern(last, 1, bs, seed=20 + index)
    results = lun.cdbs([
        (cdb.write_16(first, 4), before, 0),
        (cdb.write_16(last, 1), end_before, 0),
        (cdb.unmap(len(params)), params, 0),
        (cdb.read_16(first, 4), None, 4 * bs),
        (cdb.read_16(last, 1), None, bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_good()
    results[2].expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    assert_blocks_equal(results[3].expect_good().data, before, bs, first,
                        what="the valid descriptor's extent after the refusal")
    assert_blocks_equal(results[4].expect_good().data, end_before, bs, last,
                        what="the last block after the refusal")


def test_unmap_with_more_descriptors_than_the_maximum_is_invalid_field_in_parameter_list(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.28.2, 6.5.3: more block descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR
    COUNT is INVALID FIELD IN PARAMETER LIST (field pointer on BLOCK DESCRIPTOR DATA
    LENGTH, byte 2 of the list); nothing is unmapped."""
    _require_unmap(caps)
    limits = caps.block_limits
    if limits is None or not 0 < limits.max_unmap_descriptors < 0xFFFFFFFF:
        pytest.skip("the device reports no MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT")
    count = limits.max_unmap_descriptors + 1
    lun, bs = shared_lun, shared_lun.block_size
    if _HEADER + count * _DESCRIPTOR > 0xFFFF or 2 * count > area_blocks(lun):
        pytest.skip(f"{count} descriptors do not fit a parameter list or the test area")
    first = area(lun, 15)
    extents = [(first + 2 * i, 1) for i in range(count)]
    before = pattern(first, 2 * count, bs, seed=30)
    lun.write_blocks(first, before)
    result = _unmap(lun, extents)
    expect_field_pointer(result, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
                  FieldPointer(False, 2, 7))
    assert_blocks_equal(lun.read_blocks(first, 2 * count), before, bs, first,
                        what="after the refusal")


def test_unmap_of_more_blocks_than_maximum_unmap_lba_count_is_invalid_field_in_parameter_list(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.28.2, 6.5.3: descriptors adding up to more blocks than MAXIMUM UNMAP LBA
    COUNT (each one within it, overlapping extents are allowed) is INVALID FIELD IN
    PARAMETER LIST; nothing is unmapped."""
    _require_unmap(caps)
    limits = caps.block_limits
    if limits is None or not 0 < limits.max_unmap_lba_count < 0xFFFFFFFF:
        pytest.skip("the device reports no MAXIMUM UNMAP LBA COUNT")
    top = limits.max_unmap_lba_count
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 16)
    span = min(top, lun.blocks - first)
    extents = [(first, 1)] + [(first, span)] * (-(-top // span))
    if len(extents) > max(limits.max_unmap_descriptors, 2):
        pytest.skip(f"{len(extents)} descriptors are needed to exceed {top} blocks")
    before = pattern(first, 4, bs, seed=31)
    lun.write_blocks(first, before)
    result = _unmap(lun, extents)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST)
    assert_blocks_equal(lun.read_blocks(first, 4), before, bs, first, what="after the refusal")


def test_unmap_with_anchor_is_invalid_field_in_cdb_without_anc_sup(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.28.1, 6.5.4: ANCHOR=1 when ANC_SUP=0 is INVALID FIELD IN CDB (byte 1 bit 0);
    nothing is unmapped."""
    _require_unmap(caps)
    prov = caps.provisioning
    if prov is not None and prov.anc_sup:
        pytest.skip("the device claims ANC_SUP=1 (anchoring is supported)")
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, 17)
    before = pattern(first, 2, bs, seed=32)
    lun.write_blocks(first, before)
    result = _unmap(lun, [(first, 2)], anchor=True)
    expect_field_pointer(result, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                  FieldPointer(True, 1, 0))
    assert_blocks_equal(lun.read_blocks(first, 2), before, bs, first, what="after the refusal")


# --- through the Linux block device ------------------------------------------------------------


def test_blkdiscard_on_the_block_device_leaves_the_range_reading_zeroes(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 4.7.3, 6.5.4: the sd driver turns a discard into UNMAP (LBPU) or WRITE SAME
    with UNMAP=1 (LBPWS/LBPWS10) as the VPD page says; the range then reads zeroes
    (LBPRZ) and the blocks around it keep their data."""
    prov = caps.provisioning
    if prov is None or not (prov.lbpu or prov.lbpws or prov.lbpws10):
        pytest.skip("the device claims neither UNMAP nor WRITE SAME with UNMAP")
    if not _reads_zeroes(caps):
        pytest.skip("the device does not claim LBPRZ: discarded blocks may read anything")
    lun, bs = shared_lun, shared_lun.block_size
    limits = caps.block_limits
    gran = (limits.optimal_unmap_granularity if limits else 0) or page_blocks(lun.block_size)
    first = area(lun, 18)
    start = -(-(first + 1) // gran) * gran
    blocks = -(-(256 << 10) // bs // gran) * gran
    before = pattern(start - 1, blocks + 2, bs, seed=40)
    lun.write_blocks(start - 1, before)
    seen = len(lun.handler_commands())
    run = lun.vm.run(["blkdiscard", "-o", str(start * bs), "-l", str(blocks * bs), lun.sd])
    assert run.exit_code == 0, f"blkdiscard failed: {run.text}"
    discards = [c for c in lun.handler_commands()[seen:]
                if c.opcode == Opcode.UNMAP
                or (c.opcode in (Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16) and c.cdb[1] & 0x08)]
    assert discards, "no UNMAP or WRITE SAME with UNMAP=1 reached the handler"
    assert all(c.status == 0 for c in discards), f"a discard command failed: {discards}"
    expected = before[:bs] + bytes(blocks * bs) + before[-bs:]
    assert_blocks_equal(lun.read_blocks(start - 1, blocks + 2), expected, bs, start - 1,
                        what="after blkdiscard")

