"""GET LBA STATUS (SERVICE ACTION IN(16) / 12h, SBC-3 5.4): the provisioning status of
consecutive LBA extents from STARTING LBA on.

Covered: refusal when not offered (INVALID FIELD IN CDB on the service action); the
parameter data layout (PARAMETER DATA LENGTH, 16-byte descriptors, the first one at
STARTING LBA, extents consecutive and within the medium, status values); a written
block is mapped, an UNMAPped range of whole unmap granules is deallocated with exactly
its extent, a fresh thin LUN is deallocated; STARTING LBA past the last LBA, at the last
LBA; allocation length truncation (with a larger buffer, and the residual); consistency
with READ: every block reported deallocated reads zeroes when LBPRZ is claimed.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import pytest

from tcmu_harness.blocks import area, assert_blocks_equal, page_blocks, pattern
from tcmu_harness.caps import Capabilities, discover
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, ServiceAction

pytestmark = pytest.mark.vm

_KIB64 = 64 << 10
_HEADER = 8
_DESCRIPTOR = 16
_ALLOC = 4096
_BUFFER = _ALLOC + 512  # larger than the allocation length: the residual must show
_MAPPED, _DEALLOCATED, _ANCHORED = 0, 1, 2
_THIN = 0b010  # PROVISIONING TYPE: thin provisioned


@dataclasses.dataclass(frozen=True)
class Extent:
    lba: int
    blocks: int
    status: int

    @property
    def end(self) -> int:
        return self.lba + self.blocks


# --- helpers ---------------------------------------------------------------------------------


def _require(caps: Capabilities) -> None:
    caps.require(Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS)


def _unmap(lun: Lun, extents: list[tuple[int, int]]) -> None:
    params = cdb.unmap_parameter_list(extents)
    lun.cdb(cdb.unmap(len(params)), data_out=params).expect_good()


def _granule(caps: Capabilities, lun: Lun) -> tuple[int, int]:
    """(granularity, alignment) of unmapping: OPTIMAL UNMAP GRANULARITY and UNMAP
    GRANULARITY ALIGNMENT (when UGAVALID) of the Block Limits VPD page; a 4 KiB page when
    no granularity is reported."""
    limits = caps.block_limits
    gran = (limits.optimal_unmap_granularity if limits else 0) or page_blocks(lun.block_size)
    align = limits.unmap_alignment % gran if limits and limits.ugavalid else 0
    return gran, align


def _aligned(lba: int, gran: int, align: int) -> int:
    """The first granule boundary at or after lba."""
    return -(-(lba - align) // gran) * gran + align


def _reads_zeroes(caps: Capabilities) -> bool:
    """LBPRZ: READ CAPACITY(16) LBPRZ=1, or the VPD page's LBPRZ field xx1b."""
    if caps.capacity is not None and caps.capacity.lbprz:
        return True
    prov = caps.provisioning
    return prov is not None and bool(prov.lbprz & 0b001)


def _statuses(caps: Capabilities) -> set[int]:
    prov = caps.provisioning
    return {_MAPPED, _DEALLOCATED} | ({_ANCHORED} if prov is not None and prov.anc_sup else set())


def _get(lun: Lun, lba: int, alloc: int = _ALLOC, buffer: int = _BUFFER) -> CdbResult:
    return lun.cdb(cdb.get_lba_status(lba, alloc), data_in_len=buffer)


def _parse(data: bytes) -> list[Extent]:
    """The descriptors of a complete (not truncated) response."""
    return [Extent(lba, blocks, status & 0x0F)
            for lba, blocks, status in (struct.unpack_from(">QIB", data, pos)
                                        for pos in range(_HEADER, len(data) - 15, _DESCRIPTOR))]


def _status(lun: Lun, lba: int) -> list[Extent]:
    result = _get(lun, lba).expect_good()
    _check_layout(result, lun, lba)
    return _parse(result.data)


def _check_layout(result: CdbResult, lun: Lun, lba: int,
                  statuses: set[int] | None = None) -> None:
    """SBC-3 5.4.2: header, whole descriptors, first at STARTING LBA, consecutive
    extents of at least one block inside the medium."""
    __tracebackhide__ = True
    data = result.data
    assert len(data) >= _HEADER + _DESCRIPTOR, (
        f"{len(data)} bytes: not even one LBA status descriptor\n{result.describe()}")
    length = struct.unpack_from(">I", data)[0]
    assert length + 4 <= _ALLOC or len(data) == _ALLOC, "the allocation length was not honoured"
    if length + 4 <= _ALLOC:
        assert len(data) == length + 4, (
            f"PARAMETER DATA LENGTH {length} but {len(data)} bytes returned (expected "
            f"PARAMETER DATA LENGTH + 4)\n{result.describe()}")
    assert (length - 4) % _DESCRIPTOR == 0, (
        f"PARAMETER DATA LENGTH {length}: not 4 + a multiple of 16-byte descriptors")
    assert result.resid == _BUFFER - len(data), (
        f"residual {result.resid}, expected {_BUFFER - len(data)}")
    extents = _parse(data[: (len(data) - _HEADER) // _DESCRIPTOR * _DESCRIPTOR + _HEADER])
    assert extents[0].lba == lba, f"first descriptor at LBA {extents[0].lba}, not {lba}"
    expected_next = lba
    for i, extent in enumerate(extents):
        assert extent.lba == expected_next, (
            f"descriptor {i} starts at LBA {extent.lba}, expected {expected_next}: {extents}")
        assert extent.blocks > 0, f"descriptor {i} has NUMBER OF LOGICAL BLOCKS 0: {extent}"
        assert extent.end <= lun.blocks, (
            f"descriptor {i} {extent} ends past the last LBA {lun.blocks - 1}")
        if statuses is not None:
            assert extent.status in statuses, (
                f"descriptor {i}: PROVISIONING STATUS {extent.status} not in {sorted(statuses)}")
        expected_next = extent.end


# --- claims -----------------------------------------------------------------------------------


def test_get_lba_status_unclaimed_is_invalid_field_in_cdb_on_the_service_action(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 4.2.2 / SBC-3 5.4: a device that does not offer GET LBA STATUS refuses the
    SERVICE ACTION IN(16) service action 12h as INVALID FIELD IN CDB on byte 1 (the
    SERVICE ACTION field, bits 4-0)."""
    caps.require_absent(Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS)
    result = _get(shared_lun, 0)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    got = result.decoded.field_pointer if result.decoded else None
    assert got in (FieldPointer(True, 1, 4), FieldPointer(True, 1, None)), (
        f"field pointer {got}, expected CDB byte 1 (bit 4)\n{result.describe()}")


# --- the parameter data -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["mixed-area", "near-the-end"])
def test_get_lba_status_returns_consecutive_extents_from_the_starting_lba(
    shared_lun: Lun, caps: Capabilities, where: str
) -> None:
    """SBC-3 5.4.2: PARAMETER DATA LENGTH = bytes returned - 4, then 16-byte descriptors;
    the first starts at STARTING LBA, each next one where the previous ended, none past
    the medium; PROVISIONING STATUS is 0 (mapped), 1 (deallocated) or, with ANC_SUP, 2."""
    _require(caps)
    lun, bs = shared_lun, shared_lun.block_size
    page = page_blocks(lun.block_size)
    if where == "mixed-area":
        start = area(lun, 0) + 1
        lun.write_blocks(start, pattern(start, page, bs, seed=1))
        lun.write_blocks(start + 3 * page, pattern(start + 3 * page, 1, bs, seed=2))
        if caps.claims(Opcode.UNMAP):
            _unmap(lun, [(start + 2 * page - 1, 2 * page)])
    else:
        start = lun.blocks - 3
        lun.write_blocks(lun.blocks - 2, pattern(lun.blocks - 2, 1, bs, seed=3))
    _check_layout(_get(lun, start).expect_good(), lun, start, _statuses(caps))


def test_get_lba_status_reports_a_written_block_mapped(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 4.7.2 / 5.4.2: a block that was written is mapped (PROVISIONING STATUS 0)."""
    _require(caps)
    lun, bs = shared_lun, shared_lun.block_size
    lba = area(lun, 1) + 1
    lun.write_blocks(lba, pattern(lba, 1, bs, seed=4))
    first = _status(lun, lba)[0]
    assert (first.lba, first.status) == (lba, _MAPPED), (
        f"GET LBA STATUS at the written LBA {lba}: {first}, expected mapped")


def test_get_lba_status_reports_an_unmapped_range_deallocated_with_exactly_its_extent(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 4.7.3, 5.4.2: after UNMAP of whole unmap granules (OPTIMAL UNMAP GRANULARITY,
    aligned), that range is one deallocated extent (status 1) of exactly its blocks,
    between the mapped granules written around it."""
    _require(caps)
    caps.require(Opcode.UNMAP)
    lun, bs = shared_lun, shared_lun.block_size
    gran, align = _granule(caps, lun)
    start = _aligned(area(lun, 2) + gran, gran, align)
    blocks = -(-(_KIB64 // bs + 1) // gran) * gran
    if start + blocks + gran > area(lun, 3):
        pytest.skip(f"an unmap granule of {gran} blocks does not fit the test area")
    written = pattern(start - gran, blocks + 2 * gran, bs, seed=5)
    lun.write_blocks(start - gran, written)
    _unmap(lun, [(start, blocks)])
    extents = _status(lun, start - gran)
    assert extents[:2] == [Extent(start - gran, gran, _MAPPED),
                           Extent(start, blocks, _DEALLOCATED)], (
        f"GET LBA STATUS from {start - gran}: {extents[:3]}, expected {gran} mapped, then "
        f"LBAs {start}..{start + blocks - 1} deallocated")
    assert len(extents) > 2 and (extents[2].lba, extents[2].status) == (start + blocks, _MAPPED), (
        f"the granule after the range is written (mapped): {extents[:3]}")


def test_get_lba_status_reports_a_fresh_thin_lun_deallocated(
    make_lun: Callable[..., Lun],
) -> None:
    """SBC-3 4.7.3.1: a thin provisioned logical unit (PROVISIONING TYPE 2) maps LBAs only
    when they are written; with LBPRZ, the never-written medium of a fresh LUN reads
    zeroes and is reported deallocated."""
    lun = make_lun()
    caps = discover(lun)
    _require(caps)
    prov = caps.provisioning
    if prov is None or prov.provisioning_type != _THIN or not _reads_zeroes(caps):
        pytest.skip("the device does not claim thin provisioning with LBPRZ")
    extents = _status(lun, 0)
    assert all(e.status == _DEALLOCATED for e in extents), (
        f"a fresh LUN reports mapped extents: {[e for e in extents if e.status != 1][:4]}")
    assert extents[-1].end == lun.blocks or len(extents) == (_ALLOC - _HEADER) // _DESCRIPTOR, (
        f"the deallocated extents stop at LBA {extents[-1].end}, not at the end")


def test_get_lba_status_at_the_last_lba_describes_one_block(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.4.1: STARTING LBA = the last LBA is valid; the one descriptor covers that
    block and no more (extents stay within the medium)."""
    _require(caps)
    lun = shared_lun
    last = lun.blocks - 1
    result = _get(lun, last).expect_good()
    _check_layout(result, lun, last, _statuses(caps))
    assert struct.unpack_from(">I", result.data)[0] == 4 + _DESCRIPTOR
    assert _parse(result.data)[0].blocks == 1


@pytest.mark.parametrize("where", ["first-lba-past-the-end", "lba-max"])
def test_get_lba_status_past_the_last_lba_is_lba_out_of_range(
    shared_lun: Lun, caps: Capabilities, where: str
) -> None:
    """SBC-3 5.4.1: STARTING LBA greater than the last LBA is LOGICAL BLOCK ADDRESS OUT OF
    RANGE."""
    _require(caps)
    lba = shared_lun.blocks if where == "first-lba-past-the-end" else 2**64 - 1
    result = _get(shared_lun, lba)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


@pytest.mark.parametrize("alloc", [8, 20, 24])
def test_get_lba_status_allocation_length_truncates_the_parameter_data(
    shared_lun: Lun, caps: Capabilities, alloc: int
) -> None:
    """SPC-4 4.2.5.6 / SBC-3 5.4.1: exactly ALLOCATION LENGTH bytes of the full parameter
    data are returned (PARAMETER DATA LENGTH unchanged, a descriptor cut in the middle
    at 20), into a larger buffer: the residual is the rest."""
    _require(caps)
    lun, bs = shared_lun, shared_lun.block_size
    page = page_blocks(lun.block_size)
    start = area(lun, 4)
    lun.write_blocks(start, pattern(start, page, bs, seed=6))  # mapped, then (likely) not
    buffer = 64
    results = lun.cdbs([
        (cdb.get_lba_status(start, _ALLOC), None, _ALLOC),
        (cdb.get_lba_status(start, alloc), None, buffer),
    ])  # fmt: skip
    full = results[0].expect_good().data
    assert len(full) >= _HEADER + _DESCRIPTOR
    truncated = results[1].expect_good()
    assert truncated.data == full[:alloc], (
        f"ALLOCATION LENGTH {alloc}: got {truncated.data.hex(' ')}, expected "
        f"{full[:alloc].hex(' ')}")
    assert truncated.resid == buffer - alloc, (
        f"residual {truncated.resid}, expected {buffer - alloc}")


def test_get_lba_status_allocation_length_0_returns_no_parameter_data(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 4.2.5.6: ALLOCATION LENGTH 0 transfers no data and is not an error. (TCMU on
    Linux cannot report a 0-byte data-in: the kernel then returns the whole buffer, so
    the handler must at least leave no bytes of earlier commands in it: zeroes.)"""
    _require(caps)
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, 4) + 1
    lun.write_blocks(start, pattern(start, 1, bs, seed=9))
    buffer = 64
    results = lun.cdbs([
        (cdb.get_lba_status(start, _ALLOC), None, buffer),  # leaves its data in the ring
        (cdb.get_lba_status(start, 0), None, buffer),
    ])  # fmt: skip
    results[0].expect_good()
    result = results[1].expect_good()
    if result.data:
        assert result.data == bytes(buffer), (
            f"ALLOCATION LENGTH 0 returned {len(result.data)} bytes that are not zeroes "
            f"(another command's data?): {result.data[:32].hex(' ')}")
    else:
        assert result.resid == buffer, f"residual {result.resid}, expected {buffer}"


# --- consistency with READ --------------------------------------------------------------------


def test_every_block_reported_deallocated_reads_zeroes(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 4.7.4.4 (LBPRZ) / 5.4.2: a block GET LBA STATUS reports deallocated reads
    zeroes, after writes, UNMAPs (whole pages and parts of pages) and a write into an
    unmapped page."""
    _require(caps)
    caps.require(Opcode.UNMAP)
    if not _reads_zeroes(caps):
        pytest.skip("the device does not claim LBPRZ")
    lun, bs = shared_lun, shared_lun.block_size
    page = page_blocks(lun.block_size)
    start = area(lun, 5)
    total = 16 * page
    lun.write_blocks(start, pattern(start, total, bs, seed=7))
    _unmap(lun, [(start + page, 3 * page), (start + 6 * page + 1, page),
                 (start + 10 * page, 4 * page)])
    lun.write_blocks(start + 11 * page + 1, pattern(start + 11 * page + 1, 1, bs, seed=8))
    data = lun.read_blocks(start, total)
    extents = _status(lun, start)
    gran, _ = _granule(caps, lun)
    checked = 0
    for extent in extents:
        if extent.lba >= start + total:
            break
        if extent.status != _DEALLOCATED:
            continue
        first, end = extent.lba, min(extent.end, start + total)
        assert_blocks_equal(data[(first - start) * bs : (end - start) * bs],
                            bytes((end - first) * bs), bs, first,
                            what=f"blocks reported deallocated ({extent})")
        checked += end - first
    if page % gran == 0:  # six whole pages were unmapped and not written again
        assert checked >= 6 * page, (
            f"only {checked} blocks reported deallocated after unmapping six whole pages "
            f"({6 * page} blocks): {extents[:8]}")
