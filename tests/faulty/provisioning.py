"""Broken handlers for the WRITE SAME, UNMAP and GET LBA STATUS suites
(suites/sbc/test_write_same.py, test_unmap.py, test_get_lba_status.py): the reference
RAM disk with one plausible provisioning bug each.

Each class wraps RamDisk.handle() (or one storage method) and changes only the behaviour
its docstring names; `caught_by` lists the suite tests that must fail against it.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
from typing import ClassVar

from tcmu.cdb import decode_block
from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, Opcode, ServiceAction, Status

_WS = "suites/sbc/test_write_same.py::"
_UNMAP = "suites/sbc/test_unmap.py::"
_GLS = "suites/sbc/test_get_lba_status.py::"

_WRITE_SAME = (Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16)
_UNMAP_HEADER = struct.Struct(">HH4x")
_UNMAP_DESCRIPTOR = struct.Struct(">QI4x")
_LBA_STATUS = struct.Struct(">QIB3x")
_PAGE = 4096


# --- helpers ---------------------------------------------------------------------------------


def _asc(result: Result) -> int | None:
    """(ASC << 8) | ASCQ of a CHECK CONDITION, fixed or descriptor sense; else None."""
    if result.status != Status.CHECK_CONDITION or len(result.sense) < 4:
        return None
    sense = result.sense
    if sense[0] & 0x7F in (0x72, 0x73):
        return sense[2] << 8 | sense[3]
    return sense[12] << 8 | sense[13] if len(sense) >= 14 else None


def _fail(handler: RamDisk, error: SenseError) -> Result:
    return Result.check_condition(error.sense(handler.descriptor_sense))


def _result_data(cmd: Command, result: Result) -> bytes:
    if result.data is not None:
        return bytes(result.data)
    return cmd.iov.read(0, len(cmd.iov) if result.read_len is None else result.read_len)


def _data_in(cmd: Command, data: bytes) -> Result:
    return Result.good(data, read_len=min(len(data), len(cmd.iov)))


def _buffer(data: bytes | bytearray) -> ScatterBuffer:
    return ScatterBuffer([memoryview(bytearray(data))])


def _read_blocks(handler: RamDisk, lba: int, blocks: int) -> bytes:
    data = bytearray(blocks * handler.block_size)
    handler.read(lba * handler.block_size, ScatterBuffer([memoryview(data)]))
    return bytes(data)


def _write_blocks(handler: RamDisk, lba: int, data: bytes) -> None:
    if data:
        handler.write(lba * handler.block_size, _buffer(data))


def _in_range(handler: RamDisk, lba: int, blocks: int) -> bool:
    return lba < handler.num_blocks and lba + blocks <= handler.num_blocks


def _with_cdb_byte(cmd: Command, index: int, value: int) -> Command:
    cdb = bytearray(cmd.cdb)
    cdb[index] = value
    return dataclasses.replace(cmd, cdb=bytes(cdb))


def _unmap_descriptors(params: bytes) -> list[tuple[int, int]]:
    """The whole descriptors of an UNMAP parameter list (as many as are there)."""
    if len(params) < _UNMAP_HEADER.size:
        return []
    _, length = _UNMAP_HEADER.unpack_from(params)
    end = min(len(params), _UNMAP_HEADER.size + length)
    return [_UNMAP_DESCRIPTOR.unpack_from(params, pos)
            for pos in range(_UNMAP_HEADER.size, end - _UNMAP_DESCRIPTOR.size + 1,
                             _UNMAP_DESCRIPTOR.size)]  # fmt: skip


def _unmap_params(cmd: Command) -> bytes:
    return cmd.iov.read(0, struct.unpack_from(">H", cmd.cdb, 7)[0])


def _unmap_in_range(handler: RamDisk, extents: list[tuple[int, int]]) -> None:
    for lba, blocks in extents:
        if blocks and _in_range(handler, lba, blocks):
            handler.unmap(lba * handler.block_size, blocks * handler.block_size)


def _is_vpd(cmd: Command, page: int) -> bool:
    return cmd.opcode == Opcode.INQUIRY and bool(cmd.cdb[1] & 1) and cmd.cdb[2] == page


def _is_rsoc_all(cmd: Command) -> bool:
    return (cmd.opcode == Opcode.MAINTENANCE_IN
            and cmd.cdb[1] & 0x1F == ServiceAction.REPORT_SUPPORTED_OPERATION_CODES
            and cmd.cdb[2] & 0x07 == 0)  # fmt: skip


def _is_gls(cmd: Command) -> bool:
    return (cmd.opcode == Opcode.SERVICE_ACTION_IN_16
            and cmd.cdb[1] & 0x1F == ServiceAction.GET_LBA_STATUS)  # fmt: skip


def _patch_b2(cmd: Command, result: Result, clear: int) -> Result:
    """Clear bits of byte 5 (LBPU LBPWS LBPWS10 ...) of the Logical Block Provisioning page."""
    data = bytearray(_result_data(cmd, result))
    if result.status == Status.GOOD and len(data) > 5:
        data[5] &= ~clear & 0xFF
        return _data_in(cmd, bytes(data))
    return result


def _drop_from_rsoc(cmd: Command, result: Result, opcode: int, sa: int | None) -> Result:
    """REPORT SUPPORTED OPERATION CODES (all commands) without one command."""
    if result.status != Status.GOOD:
        return result
    data = _result_data(cmd, result)
    kept = bytearray()
    pos = 4
    while pos + 8 <= len(data):
        op, service, flags = data[pos], struct.unpack_from(">H", data, pos + 2)[0], data[pos + 5]
        size = 8 + (12 if flags & 0x02 else 0)
        if not (op == opcode and (sa is None or (flags & 0x01 and service == sa))):
            kept += data[pos : pos + size]
        pos += size
    return _data_in(cmd, struct.pack(">I", len(kept)) + bytes(kept))


class _LbaStatusFault(RamDisk):
    """GET LBA STATUS computed in full by the reference, then altered by tamper()."""

    truncate: ClassVar[bool] = True

    def tamper(self, cmd: Command, data: bytes) -> bytes:
        raise NotImplementedError

    def handle(self, cmd: Command) -> Result:
        if not _is_gls(cmd) or len(cmd.cdb) < 16:
            return super().handle(cmd)
        alloc = struct.unpack_from(">I", cmd.cdb, 10)[0]
        whole = bytearray(cmd.cdb)
        whole[10:14] = b"\xff\xff\xff\xff"
        result = super().handle(dataclasses.replace(cmd, cdb=bytes(whole)))
        if result.status != Status.GOOD:
            return result
        data = self.tamper(cmd, _result_data(cmd, result))
        return _data_in(cmd, data[:alloc] if self.truncate else data)


def _lba_status_descriptors(data: bytes) -> list[tuple[int, int, int]]:
    return [_LBA_STATUS.unpack_from(data, pos) for pos in range(8, len(data) - 15, 16)]


def _lba_status_data(descriptors: list[tuple[int, int, int]]) -> bytes:
    body = b"".join(_LBA_STATUS.pack(*d) for d in descriptors)
    return struct.pack(">I4x", 4 + len(body)) + body


# --- WRITE SAME ----------------------------------------------------------------------------------


class WriteSameFirstBlockOnly(RamDisk):
    """Breaks: WRITE SAME stores its block only at the first LBA of the range (the rest
    of the range keeps its old data)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_writes_the_block_to_every_block_of_the_range",
        _WS + "test_write_same_of_a_large_range_writes_first_middle_and_last_blocks",
        _WS + "test_write_same_of_maximum_write_same_length_is_good",
        _WS + "test_write_same_unmap_with_a_zero_block_leaves_the_range_reading_zeroes",
        _WS + "test_write_same_unmap_with_a_non_zero_block_writes_the_data",
        _WS + "test_write_same_16_ndob_writes_zeroes_without_a_data_out",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode not in _WRITE_SAME:
            return super().handle(cmd)
        io = decode_block(cmd.cdb)
        if io.blocks < 2 or not _in_range(self, io.lba, io.blocks):
            return super().handle(cmd)
        rest = _read_blocks(self, io.lba + 1, io.blocks - 1)
        result = super().handle(cmd)
        if result.status == Status.GOOD:
            _write_blocks(self, io.lba + 1, rest)
        return result


class WriteSameOneBlockTooMany(RamDisk):
    """Breaks: WRITE SAME also writes the block after the range (an off-by-one end)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_writes_the_block_to_every_block_of_the_range",
        _WS + "test_write_same_of_a_large_range_writes_first_middle_and_last_blocks",
        _WS + "test_write_same_of_maximum_write_same_length_is_good",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode in _WRITE_SAME and result.status == Status.GOOD:
            io = decode_block(cmd.cdb)
            end = io.lba + io.blocks
            if end < self.num_blocks:
                block = bytes(self.block_size) if io.ndob else cmd.iov.read(0, self.block_size)
                _write_blocks(self, end, block)
        return result


class WriteSameAcceptsZeroBlocks(RamDisk):
    """Breaks: NUMBER OF LOGICAL BLOCKS 0 is GOOD (nothing written) although the Block
    Limits page says WSNZ=1."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_of_zero_blocks_is_invalid_field_in_cdb_when_wsnz",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _WRITE_SAME and decode_block(cmd.cdb).blocks == 0:
            return Result.good()
        return super().handle(cmd)


class WriteSameIgnoresMaximumLength(RamDisk):
    """Breaks: a WRITE SAME longer than MAXIMUM WRITE SAME LENGTH is carried out."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_over_maximum_write_same_length_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _WRITE_SAME:
            io = decode_block(cmd.cdb)
            if (io.blocks > self.max_write_same_blocks and _in_range(self, io.lba, io.blocks)
                    and len(cmd.iov) == self.block_size and not io.protect):
                _write_blocks(self, io.lba, cmd.iov.read() * io.blocks)
                return Result.good()
        return super().handle(cmd)


class WriteSameLimitOffByOne(RamDisk):
    """Breaks: a WRITE SAME of exactly MAXIMUM WRITE SAME LENGTH blocks is refused
    (">=" for ">")."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_of_maximum_write_same_length_is_good",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _WRITE_SAME:
            io = decode_block(cmd.cdb)
            if io.blocks == self.max_write_same_blocks:
                return _fail(self, SenseError.invalid_cdb(io.length_byte))
        return super().handle(cmd)


class WriteSameUnmapDeallocatesData(RamDisk):
    """Breaks: UNMAP=1 deallocates the range even when the data-out block is not all
    zeroes (the data is lost: the range reads zeroes)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_unmap_with_a_non_zero_block_writes_the_data",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode in _WRITE_SAME and result.status == Status.GOOD:
            io = decode_block(cmd.cdb)
            if io.unmap:
                self.unmap(io.lba * self.block_size, io.blocks * self.block_size)
        return result


class WriteSameIgnoresNdob(RamDisk):
    """Breaks: NDOB=1 is ignored: the block is taken from the data-out buffer (padded
    with stale bytes when there is none) instead of zeroes."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_16_ndob_writes_zeroes_without_a_data_out",
        _WS + "test_write_same_16_ndob_with_a_data_out_is_invalid_field_in_information_unit",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.WRITE_SAME_16 and cmd.cdb[1] & 0x01:
            io = decode_block(cmd.cdb)
            if io.blocks and _in_range(self, io.lba, io.blocks):
                block = cmd.iov.read(0, self.block_size).ljust(self.block_size, b"\xa5")
                _write_blocks(self, io.lba, block * io.blocks)
                return Result.good()
        return super().handle(cmd)


class WriteSameRefusesNdob(RamDisk):
    """Breaks: NDOB=1 is refused (INVALID FIELD IN CDB) although the CDB usage data of
    WRITE SAME(16) offers it."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_16_ndob_writes_zeroes_without_a_data_out",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.WRITE_SAME_16 and cmd.cdb[1] & 0x01:
            return _fail(self, SenseError.invalid_cdb(1, 0))
        return super().handle(cmd)


class WriteSameAcceptsAnchor(RamDisk):
    """Breaks: ANCHOR=1 is ignored (the command runs) although ANC_SUP=0."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_with_anchor_is_invalid_field_in_cdb_without_anc_sup",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _WRITE_SAME:
            cmd = _with_cdb_byte(cmd, 1, cmd.cdb[1] & ~0x10)
        return super().handle(cmd)


class WriteSameAcceptsWrprotect(RamDisk):
    """Breaks: WRPROTECT is ignored on a logical unit without protection information."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_with_wrprotect_is_invalid_field_in_cdb_without_protection",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _WRITE_SAME:
            cmd = _with_cdb_byte(cmd, 1, cmd.cdb[1] & 0x1F)
        return super().handle(cmd)


class WriteSameTakesAnyDataOutLength(RamDisk):
    """Breaks: a data-out that is not one block is used anyway: cut to its first block,
    or padded with zeroes."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_with_data_out_not_one_block_is_invalid_field_in_information_unit",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _WRITE_SAME and not cmd.cdb[1] & 0x01 and len(cmd.iov) != self.block_size:
            block = cmd.iov.read(0, self.block_size).ljust(self.block_size, b"\0")
            cmd = dataclasses.replace(cmd, iov=_buffer(block))
        return super().handle(cmd)


class WriteSameWritesUpToTheEnd(RamDisk):
    """Breaks: a range that runs past the last LBA is written up to the end before the
    command fails with LBA OUT OF RANGE."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_beyond_the_last_lba_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode in _WRITE_SAME and _asc(result) == Asc.LBA_OUT_OF_RANGE:
            io = decode_block(cmd.cdb)
            if io.lba < self.num_blocks and len(cmd.iov) == self.block_size:
                _write_blocks(self, io.lba, cmd.iov.read() * (self.num_blocks - io.lba))
        return result


class WriteSameUnmapBitWithoutLbpws(RamDisk):
    """Breaks: the Logical Block Provisioning page claims neither LBPWS nor LBPWS10, yet
    WRITE SAME accepts UNMAP=1."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_unmap_bit_is_invalid_field_in_cdb_when_not_claimed",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        return _patch_b2(cmd, result, 0x60) if _is_vpd(cmd, 0xB2) else result


class WriteSameServedUnclaimed(RamDisk):
    """Breaks: WRITE SAME(10) is served although REPORT SUPPORTED OPERATION CODES does
    not list it (it should be INVALID COMMAND OPERATION CODE)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WS + "test_write_same_unclaimed_is_invalid_command_operation_code",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if _is_rsoc_all(cmd):
            return _drop_from_rsoc(cmd, result, Opcode.WRITE_SAME_10, None)
        return result


# --- UNMAP -------------------------------------------------------------------------------------


class UnmapRoundsToPages(RamDisk):
    """Breaks: unmapping rounds the range outward to whole 4 KiB pages, wiping the
    neighbouring blocks that share a page with the range."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmapped_blocks_read_zeroes_when_lbprz",
        _UNMAP + "test_unmap_with_several_descriptors_unmaps_every_extent",
        _UNMAP + "test_unmap_keeps_the_data_of_the_blocks_around_the_extent",
        _UNMAP + "test_unmap_descriptor_of_zero_blocks_is_not_an_error",
    )

    def unmap(self, offset: int, length: int) -> None:
        start = offset // _PAGE * _PAGE
        end = min(-(-(offset + length) // _PAGE) * _PAGE, self.num_blocks * self.block_size)
        super().unmap(start, end - start)


class UnmapDoesNotZero(RamDisk):
    """Breaks: unmapping leaves the old data in place although LBPRZ=1 promises that
    unmapped blocks read zeroes."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmapped_blocks_read_zeroes_when_lbprz",
        _UNMAP + "test_unmap_with_several_descriptors_unmaps_every_extent",
        _UNMAP + "test_unmap_keeps_the_data_of_the_blocks_around_the_extent",
        _UNMAP + "test_unmap_descriptor_of_zero_blocks_is_not_an_error",
        _UNMAP + "test_blkdiscard_on_the_block_device_leaves_the_range_reading_zeroes",
        _WS + "test_write_same_unmap_with_a_zero_block_leaves_the_range_reading_zeroes",
    )

    def unmap(self, offset: int, length: int) -> None:
        pass


class UnmapAppliesDescriptorsBeforeABadOne(RamDisk):
    """Breaks: the descriptors before one that is out of range are applied before the
    command fails with LBA OUT OF RANGE."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_descriptor_beyond_the_last_lba_is_lba_out_of_range_and_unmaps_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.UNMAP and _asc(result) == Asc.LBA_OUT_OF_RANGE:
            good = []
            for lba, blocks in _unmap_descriptors(_unmap_params(cmd)):
                if blocks and not _in_range(self, lba, blocks):
                    break
                good.append((lba, blocks))
            _unmap_in_range(self, good)
        return result


class UnmapIgnoresMaximumDescriptorCount(RamDisk):
    """Breaks: more block descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT are
    accepted and applied."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_with_more_descriptors_than_the_maximum"
        "_is_invalid_field_in_parameter_list",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.UNMAP and _asc(result) == Asc.INVALID_FIELD_IN_PARAMETER_LIST:
            extents = _unmap_descriptors(_unmap_params(cmd))
            if len(extents) > self.max_unmap_descriptors:
                _unmap_in_range(self, extents)
                return Result.good()
        return result


class UnmapIgnoresMaximumLbaCount(RamDisk):
    """Breaks: descriptors adding up to more than MAXIMUM UNMAP LBA COUNT blocks are
    accepted (only each descriptor is checked against it)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_of_more_blocks_than_maximum_unmap_lba_count"
        "_is_invalid_field_in_parameter_list",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.UNMAP and _asc(result) == Asc.INVALID_FIELD_IN_PARAMETER_LIST:
            extents = _unmap_descriptors(_unmap_params(cmd))
            if (len(extents) <= self.max_unmap_descriptors
                    and all(n <= self.max_unmap_blocks for _, n in extents)
                    and all(_in_range(self, lba, n) for lba, n in extents if n)):
                _unmap_in_range(self, extents)
                return Result.good()
        return result


class UnmapAcceptsShortParameterList(RamDisk):
    """Breaks: a PARAMETER LIST LENGTH of 1 to 7 (no whole header) is GOOD, not
    PARAMETER LIST LENGTH ERROR."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_with_a_parameter_list_shorter_than_its_header"
        "_is_parameter_list_length_error",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.UNMAP and 0 < struct.unpack_from(">H", cmd.cdb, 7)[0] < 8:
            return Result.good()
        return super().handle(cmd)


class UnmapTrustsDescriptorDataLength(RamDisk):
    """Breaks: a BLOCK DESCRIPTOR DATA LENGTH beyond the parameter list is not an error:
    the descriptors that are there are applied."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_with_block_descriptor_data_length_beyond_the_list"
        "_is_parameter_list_length_error",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        params = _unmap_params(cmd) if cmd.opcode == Opcode.UNMAP else b""
        if len(params) >= 8 and _asc(result) == Asc.PARAMETER_LIST_LENGTH_ERROR:
            _unmap_in_range(self, _unmap_descriptors(params))
            return Result.good()
        return result


class UnmapRefusesEmptyParameterList(RamDisk):
    """Breaks: PARAMETER LIST LENGTH 0 is PARAMETER LIST LENGTH ERROR instead of GOOD."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_with_parameter_list_length_0_is_good_and_unmaps_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.UNMAP and struct.unpack_from(">H", cmd.cdb, 7)[0] == 0:
            return _fail(self, SenseError.parameter_list_length())
        return super().handle(cmd)


class UnmapZeroBlocksMeansToTheEnd(RamDisk):
    """Breaks: a descriptor with NUMBER OF LOGICAL BLOCKS 0 unmaps from its LBA to the
    end of the medium (WRITE SAME's old meaning of 0)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_descriptor_of_zero_blocks_is_not_an_error",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.UNMAP and result.status == Status.GOOD:
            for lba, blocks in _unmap_descriptors(_unmap_params(cmd)):
                if blocks == 0 and lba < self.num_blocks:
                    _unmap_in_range(self, [(lba, self.num_blocks - lba)])
        return result


class UnmapAcceptsAnchor(RamDisk):
    """Breaks: UNMAP with ANCHOR=1 deallocates as if ANCHOR were 0, although ANC_SUP=0."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_with_anchor_is_invalid_field_in_cdb_without_anc_sup",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.UNMAP:
            cmd = _with_cdb_byte(cmd, 1, cmd.cdb[1] & ~0x01)
        return super().handle(cmd)


class UnmapWithoutLbpu(RamDisk):
    """Breaks: UNMAP is served and listed by REPORT SUPPORTED OPERATION CODES, but the
    Logical Block Provisioning page says LBPU=0."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_is_offered_exactly_when_lbpu_is_set",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        return _patch_b2(cmd, result, 0x80) if _is_vpd(cmd, 0xB2) else result


class UnmapServedUnclaimed(RamDisk):
    """Breaks: neither REPORT SUPPORTED OPERATION CODES nor LBPU offer UNMAP, yet UNMAP
    is carried out (it should be INVALID COMMAND OPERATION CODE)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _UNMAP + "test_unmap_unclaimed_is_invalid_command_operation_code",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if _is_vpd(cmd, 0xB2):
            return _patch_b2(cmd, result, 0x80)
        if _is_rsoc_all(cmd):
            return _drop_from_rsoc(cmd, result, Opcode.UNMAP, None)
        return result


# --- GET LBA STATUS ------------------------------------------------------------------------------


class LbaStatusFromThePageStart(_LbaStatusFault):
    """Breaks: the first descriptor starts at the 4 KiB page holding STARTING LBA, not at
    STARTING LBA itself."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_returns_consecutive_extents_from_the_starting_lba",
        _GLS + "test_get_lba_status_reports_a_written_block_mapped",
        _GLS + "test_get_lba_status_at_the_last_lba_describes_one_block",
    )

    def tamper(self, cmd: Command, data: bytes) -> bytes:
        descriptors = _lba_status_descriptors(data)
        if descriptors:
            lba, blocks, status = descriptors[0]
            start = lba // max(1, _PAGE // self.block_size) * max(1, _PAGE // self.block_size)
            descriptors[0] = (start, blocks + lba - start, status)
        return _lba_status_data(descriptors)


class LbaStatusAllMapped(_LbaStatusFault):
    """Breaks: every extent is reported mapped, also after UNMAP and on a fresh LUN."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_reports_an_unmapped_range_deallocated_with_exactly_its_extent",
        _GLS + "test_get_lba_status_reports_a_fresh_thin_lun_deallocated",
        _GLS + "test_every_block_reported_deallocated_reads_zeroes",
        _WS + "test_write_same_unmap_with_a_zero_block_leaves_the_range_reading_zeroes",
    )

    def tamper(self, cmd: Command, data: bytes) -> bytes:
        descriptors = _lba_status_descriptors(data)
        merged: list[tuple[int, int, int]] = []
        for lba, blocks, _ in descriptors:
            if merged:
                merged[-1] = (merged[-1][0], merged[-1][1] + blocks, 0)
            else:
                merged.append((lba, blocks, 0))
        return _lba_status_data(merged)


class LbaStatusIgnoresAllocationLength(_LbaStatusFault):
    """Breaks: the whole parameter data is returned, whatever the ALLOCATION LENGTH."""

    truncate = False
    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_allocation_length_truncates_the_parameter_data",
    )

    def tamper(self, cmd: Command, data: bytes) -> bytes:
        return data


class LbaStatusWrongParameterDataLength(_LbaStatusFault):
    """Breaks: PARAMETER DATA LENGTH counts the whole parameter data (not minus the 4
    bytes of the field itself)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_returns_consecutive_extents_from_the_starting_lba",
        _GLS + "test_get_lba_status_reports_a_written_block_mapped",
        _GLS + "test_get_lba_status_at_the_last_lba_describes_one_block",
    )

    def tamper(self, cmd: Command, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data[4:]


class LbaStatusPastTheEnd(_LbaStatusFault):
    """Breaks: the extent that reaches the last LBA is reported 8 blocks longer (past
    the end of the medium)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_returns_consecutive_extents_from_the_starting_lba",
        _GLS + "test_get_lba_status_at_the_last_lba_describes_one_block",
    )

    def tamper(self, cmd: Command, data: bytes) -> bytes:
        descriptors = _lba_status_descriptors(data)
        if descriptors and sum(descriptors[-1][:2]) == self.num_blocks:
            lba, blocks, status = descriptors[-1]
            descriptors[-1] = (lba, blocks + 8, status)
        return _lba_status_data(descriptors)


class LbaStatusRefusesTheLastLba(RamDisk):
    """Breaks: STARTING LBA = the last LBA is refused with LBA OUT OF RANGE (">=" on the
    number of the last LBA)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_at_the_last_lba_describes_one_block",
    )

    def handle(self, cmd: Command) -> Result:
        if _is_gls(cmd) and struct.unpack_from(">Q", cmd.cdb, 2)[0] == self.num_blocks - 1:
            return _fail(self, SenseError.lba_out_of_range())
        return super().handle(cmd)


class LbaStatusAcceptsLbaPastTheEnd(RamDisk):
    """Breaks: a STARTING LBA past the last LBA gets GOOD with one deallocated extent."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_past_the_last_lba_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        if _is_gls(cmd):
            lba, alloc = struct.unpack_from(">QI", cmd.cdb, 2)
            if lba >= self.num_blocks:
                return _data_in(cmd, _lba_status_data([(lba, 1, 1)])[:alloc])
        return super().handle(cmd)


class LbaStatusStaleAfterWrite(_LbaStatusFault):
    """Breaks: a range once unmapped stays reported deallocated after new data is
    written into it."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_every_block_reported_deallocated_reads_zeroes",
    )

    def __init__(self, *args: object, **options: str) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self._unmapped: list[tuple[int, int]] = []  # [start, end) block ranges

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.UNMAP and result.status == Status.GOOD:
            self._unmapped += [(lba, lba + n) for lba, n in _unmap_descriptors(_unmap_params(cmd))
                               if n]  # fmt: skip
        return result

    def tamper(self, cmd: Command, data: bytes) -> bytes:
        out: list[tuple[int, int, int]] = []
        for lba, blocks, status in _lba_status_descriptors(data):
            end = lba + blocks
            cuts = sorted({lba, end} | {p for s, e in self._unmapped for p in (s, e)
                                        if lba < p < end})  # fmt: skip
            for a, b in itertools.pairwise(cuts):
                stale = any(s <= a and b <= e for s, e in self._unmapped)
                piece = (a, b - a, 1 if stale else status)
                if out and out[-1][2] == piece[2] and sum(out[-1][:2]) == a:
                    out[-1] = (out[-1][0], out[-1][1] + piece[1], piece[2])
                else:
                    out.append(piece)
        return _lba_status_data(out)


class LbaStatusServedUnclaimed(RamDisk):
    """Breaks: GET LBA STATUS answers although REPORT SUPPORTED OPERATION CODES does not
    list it (it should be INVALID FIELD IN CDB on the service action)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _GLS + "test_get_lba_status_unclaimed_is_invalid_field_in_cdb_on_the_service_action",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if _is_rsoc_all(cmd):
            return _drop_from_rsoc(cmd, result, Opcode.SERVICE_ACTION_IN_16,
                                   ServiceAction.GET_LBA_STATUS)
        return result
