"""WRITE SAME(10) and WRITE SAME(16): one block of data-out (or none, NDOB) repeated over
a range of LBAs (SBC-3 5.44, 5.45; NDOB from SBC-3 r35 on, SBC-4).

Covered: every block of the range gets the block (ranges over 64 KiB and over the
handler's 1 MiB write chunk), neighbours untouched; NUMBER OF LOGICAL BLOCKS 0 with
WSNZ=1, the MAXIMUM WRITE SAME LENGTH limit (Block Limits VPD), LBA range checks,
data-out that is not exactly one block, nothing written on any refusal; the UNMAP bit
(LBPWS / LBPWS10 of the Logical Block Provisioning VPD page): deallocation of zero
blocks (checked with GET LBA STATUS when claimed), data written when the block is not
zeroes, refused when not claimed; ANCHOR without ANC_SUP; NDOB; WRPROTECT without
protection information; refusal of an unclaimed opcode.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator

import pytest

from tcmu_harness.blocks import area, area_blocks, assert_blocks_equal, page_blocks, pattern
from tcmu_harness.caps import Capabilities, discover
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import expect_field_pointer
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun, LunManager, LunSpec
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, ServiceAction

pytestmark = pytest.mark.vm

_KIB64 = 64 << 10
_MIB = 1 << 20
_LIMIT_LUN_BLOCK_SIZE = 4096  # WRITE SAME(10) can only exceed a limit below 65536 blocks
_LIMIT_LUN_SIZE = 128 << 20


@dataclasses.dataclass(frozen=True)
class WriteSame:
    """One of the two CDB sizes, with what differs between them."""

    size: int
    opcode: int
    length_byte: int  # NUMBER OF LOGICAL BLOCKS, most significant byte
    max_lba: int

    def cdb(self, lba: int, blocks: int, **kw: bool | int) -> bytes:
        build = cdb.write_same_10 if self.size == 10 else cdb.write_same_16
        return build(lba, blocks, **kw)  # type: ignore[arg-type]

    def lbpws_claimed(self, caps: Capabilities) -> bool:
        prov = caps.provisioning
        if prov is None:
            return False
        return prov.lbpws10 if self.size == 10 else prov.lbpws

    @property
    def lbpws_name(self) -> str:
        return "LBPWS10" if self.size == 10 else "LBPWS"


WS10 = WriteSame(10, Opcode.WRITE_SAME_10, 7, 0xFFFFFFFF)
WS16 = WriteSame(16, Opcode.WRITE_SAME_16, 10, 2**64 - 1)


@pytest.fixture(params=[WS10, WS16], ids=["ws10", "ws16"])
def ws(request: pytest.FixtureRequest, caps: Capabilities) -> WriteSame:
    command: WriteSame = request.param
    caps.require(command.opcode)
    return command


@pytest.fixture
def ws16(caps: Capabilities) -> WriteSame:
    caps.require(Opcode.WRITE_SAME_16)
    return WS16


# --- helpers ---------------------------------------------------------------------------------


def _ws_area(ws: WriteSame, base: int) -> int:
    """Area index of a test parametrized over both CDB sizes."""
    return base + (0 if ws.size == 10 else 1)


def _unmap_geometry(caps: Capabilities, lun: Lun) -> tuple[int, int]:
    """(granularity, alignment) of unmapping: OPTIMAL UNMAP GRANULARITY and UNMAP
    GRANULARITY ALIGNMENT (when UGAVALID) of the Block Limits VPD page; a 4 KiB page when
    no granularity is reported."""
    limits = caps.block_limits
    gran = limits.optimal_unmap_granularity if limits else 0
    gran = gran or page_blocks(lun.block_size)
    align = limits.unmap_alignment % gran if limits and limits.ugavalid else 0
    return gran, align


def _aligned_range(caps: Capabilities, lun: Lun, area: int, min_blocks: int) -> tuple[int, int]:
    """A range of whole unmap granules of at least min_blocks, starting after the
    area's first block (so the block before it is in the area too)."""
    gran, align = _unmap_geometry(caps, lun)
    start = -(-(area + 1 - align) // gran) * gran + align
    blocks = -(-min_blocks // gran) * gran
    assert start + blocks + 1 <= area + area_blocks(lun), "the area is too small for the range"
    return start, blocks


def _lba_status(lun: Lun, lba: int) -> list[tuple[int, int, int]]:
    """GET LBA STATUS descriptors: (LBA, NUMBER OF LOGICAL BLOCKS, PROVISIONING STATUS)."""
    data = lun.cdb(cdb.get_lba_status(lba, 4096), data_in_len=4096).expect_good().data
    assert len(data) >= 8, f"GET LBA STATUS returned {len(data)} bytes, less than its header"
    end = min(len(data), 4 + struct.unpack_from(">I", data)[0])
    out = []
    for pos in range(8, end - 15, 16):
        start, count, status = struct.unpack_from(">QIB", data, pos)
        out.append((start, count, status & 0x0F))
    return out


def _gls_claimed(caps: Capabilities) -> bool:
    return bool(caps.claims(Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS))


def _usage(lun: Lun, opcode: int) -> bytes:
    """CDB USAGE DATA of one command (REPORT SUPPORTED OPERATION CODES, options 1)."""
    result = lun.cdb(cdb.report_supported_opcodes(1, opcode, alloc_len=64), data_in_len=64)
    if not result.good or len(result.data) < 4 or result.data[1] & 0x07 != 0x03:
        pytest.skip(f"REPORT SUPPORTED OPERATION CODES does not describe opcode 0x{opcode:02X}")
    size = struct.unpack_from(">H", result.data, 2)[0]
    return result.data[4 : 4 + size]


def _block(lun: Lun, seed: int) -> bytes:
    """A non-zero data block unlike any pattern() block the test writes around it."""
    return pattern(0xABCDE, 1, lun.block_size, seed=seed)


# --- every block of the range -----------------------------------------------------------------


def test_write_same_writes_the_block_to_every_block_of_the_range(
    shared_lun: Lun, ws: WriteSame
) -> None:
    """SBC-3 5.44/5.45: the single data-out block is written to each LBA of the range (a
    range over 64 KiB, read back whole); the blocks just before and after keep their data."""
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, _ws_area(ws, 0)) + 1
    blocks = _KIB64 // bs + 3
    before = pattern(start - 1, blocks + 2, bs, seed=10 + ws.size)
    block = _block(lun, seed=ws.size)
    lun.write_blocks(start - 1, before)
    lun.cdb(ws.cdb(start, blocks), data_out=block).expect_good()
    expected = before[:bs] + block * blocks + before[-bs:]
    assert_blocks_equal(lun.read_blocks(start - 1, blocks + 2), expected, bs, start - 1)


def test_write_same_of_a_large_range_writes_first_middle_and_last_blocks(
    shared_lun: Lun, ws: WriteSame, caps: Capabilities
) -> None:
    """SBC-3 5.44/5.45: a range of about 2 MiB (over MAXIMUM TRANSFER LENGTH, so the
    device repeats the block itself in pieces) has the block at its first, middle, last
    and 1 MiB boundary LBAs, and not one block more."""
    lun, bs = shared_lun, shared_lun.block_size
    first = area(lun, _ws_area(ws, 2))
    blocks = area_blocks(lun) - 2
    limits = caps.block_limits
    if limits and limits.max_write_same:
        blocks = min(blocks, limits.max_write_same)
    if ws.size == 10:
        blocks = min(blocks, 0xFFFF)
    start = first + 1
    mib = _MIB // bs
    offsets = sorted({0, 1, blocks // 2, blocks - 2, blocks - 1,
                      *(k * mib + d for k in range(1, 1 + blocks // mib) for d in (-1, 0)
                        if 0 <= k * mib + d < blocks)})  # fmt: skip
    edges = pattern(first, 1, bs, seed=20) + pattern(start + blocks, 1, bs, seed=21)
    lun.write_blocks(first, edges[:bs])
    lun.write_blocks(start + blocks, edges[bs:])
    block = _block(lun, seed=22 + ws.size)
    lun.cdb(ws.cdb(start, blocks), data_out=block).expect_good()
    lbas = [first] + [start + o for o in offsets] + [start + blocks]
    reads = lun.cdbs([(cdb.read_16(lba, 1), None, bs) for lba in lbas])
    got = b"".join(r.expect_good().data for r in reads)
    expected = edges[:bs] + block * len(offsets) + edges[bs:]
    for i, lba in enumerate(lbas):
        assert_blocks_equal(got[i * bs : (i + 1) * bs], expected[i * bs : (i + 1) * bs], bs,
                            lba, what=f"LBA {lba} ({blocks}-block WRITE SAME at {start})")


# --- refusals ---------------------------------------------------------------------------------


def test_write_same_of_zero_blocks_is_invalid_field_in_cdb_when_wsnz(
    shared_lun: Lun, ws: WriteSame, caps: Capabilities
) -> None:
    """SBC-3 5.44 / 6.5.3: with WSNZ=1 in the Block Limits VPD page, NUMBER OF LOGICAL
    BLOCKS 0 is INVALID FIELD IN CDB (field pointer on NUMBER OF LOGICAL BLOCKS) and
    nothing is written (not "to the end of the medium")."""
    limits = caps.block_limits
    if limits is None or not limits.wsnz:
        pytest.skip("the device does not report WSNZ=1 (0 blocks then means to the end)")
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, _ws_area(ws, 4))
    before = pattern(start, 2, bs, seed=30 + ws.size)
    lun.write_blocks(start, before)
    result = lun.cdb(ws.cdb(start, 0), data_out=_block(lun, 31))
    expect_field_pointer(result, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                  FieldPointer(True, ws.length_byte, 7))
    assert_blocks_equal(lun.read_blocks(start, 2), before, bs, start, what="after the refusal")


@pytest.mark.parametrize("where", ["first-lba-past-the-end", "spanning-the-end", "lba-max"])
def test_write_same_beyond_the_last_lba_is_lba_out_of_range(
    shared_lun: Lun, ws: WriteSame, where: str
) -> None:
    """SBC-3 5.44/5.45 (4.5 LBA range): a range that does not end within the medium is
    LOGICAL BLOCK ADDRESS OUT OF RANGE, and nothing is written (not even the blocks of
    the range that exist)."""
    lun, bs = shared_lun, shared_lun.block_size
    last = lun.blocks - 1
    lba, blocks = {"first-lba-past-the-end": (lun.blocks, 1), "spanning-the-end": (last, 2),
                   "lba-max": (ws.max_lba, 1)}[where]  # fmt: skip
    before = pattern(last, 1, bs, seed=40 + ws.size)
    results = lun.cdbs([
        (cdb.write_16(last, 1), before, 0),
        (ws.cdb(lba, blocks), _block(lun, 41), 0),
        (cdb.read_16(last, 1), None, bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    assert_blocks_equal(results[2].expect_good().data, before, bs, last,
                        what="the last block after the refused WRITE SAME")


@pytest.mark.parametrize("length", ["none", "half-block", "block-plus-one", "two-blocks"])
def test_write_same_with_data_out_not_one_block_is_invalid_field_in_information_unit(
    shared_lun: Lun, ws: WriteSame, length: str
) -> None:
    """SBC-3 5.44/5.45: data-out is exactly one logical block (NDOB=0); another length is
    INVALID FIELD IN COMMAND INFORMATION UNIT (as LIO's own backstores answer) and
    nothing is written."""
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, _ws_area(ws, 6))
    size = {"none": 0, "half-block": bs // 2, "block-plus-one": bs + 1, "two-blocks": 2 * bs}
    data_out = pattern(7, 2, bs, seed=50)[: size[length]] or None
    before = pattern(start, 4, bs, seed=51 + ws.size)
    results = lun.cdbs([
        (cdb.write_16(start, 4), before, 0),
        (ws.cdb(start, 4), data_out, 0),
        (cdb.read_16(start, 4), None, 4 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
    assert_blocks_equal(results[2].expect_good().data, before, bs, start, what="after the refusal")


@pytest.mark.parametrize("wrprotect", [0b001, 0b100])
def test_write_same_with_wrprotect_is_invalid_field_in_cdb_without_protection(
    shared_lun: Lun, ws: WriteSame, caps: Capabilities, wrprotect: int
) -> None:
    """SBC-3 5.44/5.45, 4.22 (protection information): WRPROTECT other than 0 on a
    logical unit formatted without protection information is INVALID FIELD IN CDB on
    byte 1 (bit 7: the field's first bit); nothing is written."""
    if caps.capacity is None or caps.capacity.prot_en:
        pytest.skip("READ CAPACITY(16) does not say PROT_EN=0")
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, _ws_area(ws, 8)) + wrprotect
    before = pattern(start, 2, bs, seed=60 + ws.size)
    lun.write_blocks(start, before)
    result = lun.cdb(ws.cdb(start, 2, wrprotect=wrprotect), data_out=_block(lun, 61))
    expect_field_pointer(result, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                  FieldPointer(True, 1, 7))
    assert_blocks_equal(lun.read_blocks(start, 2), before, bs, start, what="after the refusal")


def test_write_same_with_anchor_is_invalid_field_in_cdb_without_anc_sup(
    shared_lun: Lun, ws: WriteSame, caps: Capabilities
) -> None:
    """SBC-3 5.44/5.45, 6.5.4: ANCHOR=1 when the Logical Block Provisioning VPD page says
    ANC_SUP=0 (or is absent) is INVALID FIELD IN CDB on byte 1 bit 4; nothing is written."""
    prov = caps.provisioning
    if prov is not None and prov.anc_sup:
        pytest.skip("the device claims ANC_SUP=1 (anchoring is supported)")
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, _ws_area(ws, 10))
    before = pattern(start, 2, bs, seed=70 + ws.size)
    lun.write_blocks(start, before)
    # With UNMAP=1 where it is claimed, so that only ANCHOR is unsupported.
    command = ws.cdb(start, 2, anchor=True, unmap=ws.lbpws_claimed(caps))
    result = lun.cdb(command, data_out=bytes(bs))
    expect_field_pointer(result, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                  FieldPointer(True, 1, 4))
    assert_blocks_equal(lun.read_blocks(start, 2), before, bs, start, what="after the refusal")


def test_write_same_unclaimed_is_invalid_command_operation_code(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 4.2.2 / SBC-3 5.44: a device that does not list WRITE SAME(10) in REPORT
    SUPPORTED OPERATION CODES refuses it as INVALID COMMAND OPERATION CODE."""
    caps.require_absent(Opcode.WRITE_SAME_10)
    result = shared_lun.cdb(cdb.write_same_10(0, 1), data_out=bytes(shared_lun.block_size))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


# --- MAXIMUM WRITE SAME LENGTH --------------------------------------------------------------


@pytest.fixture(scope="module")
def limit_lun(lun_manager: LunManager, lun_spec: LunSpec) -> Iterator[tuple[Lun, Capabilities]]:
    """A LUN with more blocks than a WRITE SAME may cover (4 KiB blocks, so that WRITE
    SAME(10) can express a length over the limit), and what it claims."""
    lun = lun_manager.create(dataclasses.replace(
        lun_spec, block_size=_LIMIT_LUN_BLOCK_SIZE, size=_LIMIT_LUN_SIZE))  # fmt: skip
    try:
        yield lun, discover(lun)
    finally:
        errors = lun_manager.delete(lun)["errors"]
        assert not errors, f"LUN teardown was not clean: {errors}"


def _max_write_same(ws: WriteSame, lun: Lun, caps: Capabilities, extra: int) -> int:
    caps.require(ws.opcode)
    limits = caps.block_limits
    if limits is None or not limits.max_write_same:
        pytest.skip("the device reports no MAXIMUM WRITE SAME LENGTH")
    top = limits.max_write_same
    if top + extra > lun.blocks:
        pytest.skip(f"MAXIMUM WRITE SAME LENGTH {top} + {extra} exceeds the {lun.blocks} "
                    "blocks of the LUN: the range check would answer first")
    if ws.size == 10 and top + extra > 0xFFFF:
        pytest.skip(f"WRITE SAME(10) cannot express {top + extra} blocks")
    return top


@pytest.mark.parametrize("command", [WS10, WS16], ids=["ws10", "ws16"])
def test_write_same_over_maximum_write_same_length_is_invalid_field_in_cdb(
    limit_lun: tuple[Lun, Capabilities], command: WriteSame
) -> None:
    """SBC-3 5.44/5.45, 6.5.3: NUMBER OF LOGICAL BLOCKS over MAXIMUM WRITE SAME LENGTH is
    INVALID FIELD IN CDB (field pointer on NUMBER OF LOGICAL BLOCKS); nothing is written."""
    lun, caps = limit_lun
    top = _max_write_same(command, lun, caps, extra=1)
    bs = lun.block_size
    before = pattern(0, 1, bs, seed=80) + pattern(top, 1, bs, seed=81)
    results = lun.cdbs([
        (cdb.write_16(0, 1), before[:bs], 0),
        (cdb.write_16(top, 1), before[bs:], 0),
        (command.cdb(0, top + 1), _block(lun, 82), 0),
        (cdb.read_16(0, 1), None, bs),
        (cdb.read_16(top, 1), None, bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_good()
    expect_field_pointer(results[2], SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                  FieldPointer(True, command.length_byte, 7))
    after = results[3].expect_good().data + results[4].expect_good().data
    assert_blocks_equal(after, before, bs, what="LBA 0 and LBA MAXIMUM WRITE SAME LENGTH")


@pytest.mark.parametrize("command", [WS10, WS16], ids=["ws10", "ws16"])
def test_write_same_of_maximum_write_same_length_is_good(
    limit_lun: tuple[Lun, Capabilities], command: WriteSame
) -> None:
    """SBC-3 6.5.3: MAXIMUM WRITE SAME LENGTH is the largest length accepted: exactly
    that many blocks are written, the next block keeps its data."""
    lun, caps = limit_lun
    top = _max_write_same(command, lun, caps, extra=1)
    bs = lun.block_size
    after_range = pattern(top, 1, bs, seed=90 + command.size)
    block = _block(lun, 91 + command.size)
    results = lun.cdbs([
        (cdb.write_16(top, 1), after_range, 0),
        (command.cdb(0, top), block, 0),
        (cdb.read_16(0, 1), None, bs),
        (cdb.read_16(top - 1, 1), None, bs),
        (cdb.read_16(top, 1), None, bs),
    ], timeout=120)  # fmt: skip
    results[0].expect_good()
    results[1].expect_good()
    got = b"".join(r.expect_good().data for r in results[2:])
    assert_blocks_equal(got, block + block + after_range, bs,
                        what=f"LBAs 0, {top - 1} and {top}")


# --- UNMAP bit --------------------------------------------------------------------------------


def test_write_same_unmap_with_a_zero_block_leaves_the_range_reading_zeroes(
    shared_lun: Lun, ws: WriteSame, caps: Capabilities
) -> None:
    """SBC-3 5.44/5.45, 4.7.3.3: UNMAP=1 (LBPWS/LBPWS10 claimed) with an all-zero block:
    every block of the range reads zeroes, the neighbours keep their data; with GET LBA
    STATUS claimed, the whole-granule range is reported deallocated, exactly."""
    if not ws.lbpws_claimed(caps):
        pytest.skip(f"{ws.lbpws_name} is not claimed in the Logical Block Provisioning VPD page")
    lun, bs = shared_lun, shared_lun.block_size
    start, blocks = _aligned_range(caps, lun, area(lun, _ws_area(ws, 12)), _KIB64 // bs + 1)
    before = pattern(start - 1, blocks + 2, bs, seed=100 + ws.size)
    lun.write_blocks(start - 1, before)
    lun.cdb(ws.cdb(start, blocks, unmap=True), data_out=bytes(bs)).expect_good()
    expected = before[:bs] + bytes(blocks * bs) + before[-bs:]
    assert_blocks_equal(lun.read_blocks(start - 1, blocks + 2), expected, bs, start - 1)
    if _gls_claimed(caps):
        status = _lba_status(lun, start - 1)
        assert status[:2] == [(start - 1, 1, 0), (start, blocks, 1)], (
            f"GET LBA STATUS from LBA {start - 1}: {status[:3]}, expected the written block "
            f"mapped, then LBAs {start}..{start + blocks - 1} deallocated")
        assert len(status) > 2 and status[2][0] == start + blocks and status[2][2] == 0, (
            f"the block after the range is written (mapped): {status[:3]}")


def test_write_same_unmap_with_a_non_zero_block_writes_the_data(
    shared_lun: Lun, ws: WriteSame, caps: Capabilities
) -> None:
    """SBC-3 5.44/5.45, 4.7.3.3: UNMAP=1 with a block that is not all zeroes writes that
    block to every LBA (deallocating would lose it); GET LBA STATUS reports it mapped."""
    if not ws.lbpws_claimed(caps):
        pytest.skip(f"{ws.lbpws_name} is not claimed in the Logical Block Provisioning VPD page")
    lun, bs = shared_lun, shared_lun.block_size
    start, blocks = _aligned_range(caps, lun, area(lun, _ws_area(ws, 14)), _KIB64 // bs + 1)
    before = pattern(start - 1, blocks + 2, bs, seed=110 + ws.size)
    lun.write_blocks(start - 1, before)
    block = _block(lun, seed=111 + ws.size)
    lun.cdb(ws.cdb(start, blocks, unmap=True), data_out=block).expect_good()
    expected = before[:bs] + block * blocks + before[-bs:]
    assert_blocks_equal(lun.read_blocks(start - 1, blocks + 2), expected, bs, start - 1)
    if _gls_claimed(caps):
        first = _lba_status(lun, start)[0]
        assert first[0] == start and first[1] >= blocks and first[2] == 0, (
            f"GET LBA STATUS at {start}: {first}, expected mapped for at least {blocks} blocks")


def test_write_same_unmap_bit_is_invalid_field_in_cdb_when_not_claimed(
    shared_lun: Lun, ws: WriteSame, caps: Capabilities
) -> None:
    """SBC-3 5.44/5.45, 6.5.4: UNMAP=1 when LBPWS (16) / LBPWS10 (10) is not claimed is
    INVALID FIELD IN CDB on byte 1 bit 3; nothing is written or unmapped."""
    if ws.lbpws_claimed(caps):
        pytest.skip(f"{ws.lbpws_name} is claimed: the UNMAP bit is supported")
    lun, bs = shared_lun, shared_lun.block_size
    start = area(lun, _ws_area(ws, 16))
    before = pattern(start, 2, bs, seed=120 + ws.size)
    lun.write_blocks(start, before)
    result = lun.cdb(ws.cdb(start, 2, unmap=True), data_out=bytes(bs))
    expect_field_pointer(result, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                  FieldPointer(True, 1, 3))
    assert_blocks_equal(lun.read_blocks(start, 2), before, bs, start, what="after the refusal")


# --- NDOB (WRITE SAME(16) only) ---------------------------------------------------------------


@pytest.mark.parametrize("unmap", [False, True], ids=["unmap-0", "unmap-1"])
def test_write_same_16_ndob_writes_zeroes_without_a_data_out(
    shared_lun: Lun, ws16: WriteSame, caps: Capabilities, unmap: bool
) -> None:
    """SBC-3 5.45 (NDOB, since r35): NDOB=1 takes no data-out and writes zeroes to every
    block of the range (LBPRZ 000b/xx1b), with or without UNMAP; neighbours untouched."""
    lun, bs = shared_lun, shared_lun.block_size
    if not _usage(lun, Opcode.WRITE_SAME_16)[1] & 0x01:
        pytest.skip("WRITE SAME(16) CDB usage data does not offer NDOB")
    if unmap and not ws16.lbpws_claimed(caps):
        pytest.skip("LBPWS is not claimed")
    prov = caps.provisioning
    if prov is not None and prov.lbprz & 0b011 == 0b010:
        pytest.skip("LBPRZ 010b: NDOB writes the provisioning initialization pattern")
    start, blocks = _aligned_range(caps, lun, area(lun, 18 + unmap), _KIB64 // bs + 1)
    before = pattern(start - 1, blocks + 2, bs, seed=130 + unmap)
    lun.write_blocks(start - 1, before)
    lun.cdb(ws16.cdb(start, blocks, ndob=True, unmap=unmap)).expect_good()
    expected = before[:bs] + bytes(blocks * bs) + before[-bs:]
    assert_blocks_equal(lun.read_blocks(start - 1, blocks + 2), expected, bs, start - 1)


def test_write_same_16_ndob_with_a_data_out_is_invalid_field_in_information_unit(
    shared_lun: Lun, ws16: WriteSame
) -> None:
    """SBC-3 5.45 (NDOB): with NDOB=1 no data-out is transferred; a data-out buffer is not what
    the CDB implies: INVALID FIELD IN COMMAND INFORMATION UNIT, nothing written."""
    lun, bs = shared_lun, shared_lun.block_size
    if not _usage(lun, Opcode.WRITE_SAME_16)[1] & 0x01:
        pytest.skip("WRITE SAME(16) CDB usage data does not offer NDOB")
    start = area(lun, 20)
    before = pattern(start, 4, bs, seed=140)
    results = lun.cdbs([
        (cdb.write_16(start, 4), before, 0),
        (ws16.cdb(start, 4, ndob=True), _block(lun, 141), 0),
        (cdb.read_16(start, 4), None, 4 * bs),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
    assert_blocks_equal(results[2].expect_good().data, before, bs, start, what="after the refusal")


def test_write_same_16_ndob_is_invalid_field_in_cdb_when_not_offered(
    shared_lun: Lun, ws16: WriteSame
) -> None:
    """SPC-4 6.35.3 (CDB USAGE DATA) / SBC-3 5.45: NDOB=1 on a device whose usage data
    does not offer it is INVALID FIELD IN CDB on byte 1 bit 0; nothing is written."""
    lun, bs = shared_lun, shared_lun.block_size
    if _usage(lun, Opcode.WRITE_SAME_16)[1] & 0x01:
        pytest.skip("WRITE SAME(16) CDB usage data offers NDOB")
    start = area(lun, 21)
    before = pattern(start, 2, bs, seed=150)
    lun.write_blocks(start, before)
    result = lun.cdb(ws16.cdb(start, 2, ndob=True))
    expect_field_pointer(result, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                  FieldPointer(True, 1, 0))
    assert_blocks_equal(lun.read_blocks(start, 2), before, bs, start, what="after the refusal")
