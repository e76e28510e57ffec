"""Broken handlers for the COMPARE AND WRITE, PRE-FETCH, READ DEFECT DATA, FORMAT UNIT and
block-device suites (suites/sbc/test_compare_and_write.py, test_pre_fetch.py,
test_read_defect_data.py, test_format_unit.py, test_block_device.py): the reference RAM
disk with one plausible bug each.

Each class wraps RamDisk.handle() and changes only the behaviour its docstring names;
`caught_by` lists the suite tests that must fail against it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

from tcmu.cdb import decode_block
from tcmu.handler import EMPTY_BUFFER, Command, Result, ScatterBuffer
from tcmu.handlers import faulty
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status

_CAW = "suites/sbc/test_compare_and_write.py::"
_PF = "suites/sbc/test_pre_fetch.py::"
_RDD = "suites/sbc/test_read_defect_data.py::"
_FMT = "suites/sbc/test_format_unit.py::"
_SD = "suites/sbc/test_block_device.py::"

_PRE_FETCH = (Opcode.PRE_FETCH_10, Opcode.PRE_FETCH_16)
_READ_DEFECT_DATA = (Opcode.READ_DEFECT_DATA_10, Opcode.READ_DEFECT_DATA_12)
_WRITE_SAME = (Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16)
_MODE_SELECT = (Opcode.MODE_SELECT_6, Opcode.MODE_SELECT_10)
_SYNCHRONIZE_CACHE = (Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16)
_PAGE = 4096
_FMTDATA = 0x10  # FORMAT UNIT byte 1
_FMTPINFO = 0xC0
_LONGLIST = 0x20


# --- helpers ----------------------------------------------------------------------------------


def _fail(handler: RamDisk, error: SenseError) -> Result:
    return Result.check_condition(error.sense(handler.descriptor_sense))


def _key(result: Result) -> int | None:
    """Sense key of a CHECK CONDITION, fixed or descriptor sense; else None."""
    if result.status != Status.CHECK_CONDITION or len(result.sense) < 3:
        return None
    sense = result.sense
    return sense[1] & 0x0F if sense[0] & 0x7F in (0x72, 0x73) else sense[2] & 0x0F


def _information(result: Result) -> int | None:
    """INFORMATION of fixed (VALID set) or descriptor sense (information descriptor)."""
    sense = result.sense
    if sense[0] & 0x7F in (0x70, 0x71):
        return int.from_bytes(sense[3:7], "big") if sense[0] & 0x80 else None
    pos = 8
    while pos + 2 <= len(sense):
        if sense[pos] == 0x00 and pos + 12 <= len(sense):
            return int.from_bytes(sense[pos + 4 : pos + 12], "big")
        pos += 2 + sense[pos + 1]
    return None


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


def _with_cdb(cmd: Command, index: int, value: int) -> Command:
    cdb = bytearray(cmd.cdb)
    cdb[index] = value
    return dataclasses.replace(cmd, cdb=bytes(cdb))


def _first_difference(a: bytes, b: bytes) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


def _caw_with_prefix_compare(handler: RamDisk, cmd: Command, compared: int) -> Result | None:
    """COMPARE AND WRITE that compares only the first `compared` bytes of each command;
    None when the reference's answer is the same (let it answer)."""
    io = decode_block(cmd.cdb)
    length = io.blocks * handler.block_size
    if (not io.blocks or io.blocks > handler.max_compare_and_write_blocks
            or not _in_range(handler, io.lba, io.blocks) or len(cmd.iov) != 2 * length):
        return None
    data = cmd.iov.read()
    medium = _read_blocks(handler, io.lba, io.blocks)
    if data[:compared] != medium[:compared]:
        return None
    _write_blocks(handler, io.lba, data[length:])
    return Result.good()


# --- COMPARE AND WRITE ------------------------------------------------------------------------


def _caw_miscompare(handler: RamDisk, cmd: Command, result: Result,
                    rebuild: Callable[[int], SenseError]) -> Result:
    """A MISCOMPARE of COMPARE AND WRITE answered with rebuild(the right offset)."""
    if cmd.opcode != Opcode.COMPARE_AND_WRITE or _key(result) != SenseKey.MISCOMPARE:
        return result
    offset = _information(result)
    assert offset is not None
    return _fail(handler, rebuild(offset))


class CawInformationPlusOne(RamDisk):
    """Breaks: a COMPARE AND WRITE miscompare reports INFORMATION one past the first
    differing byte (a 1-based offset)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_miscompare_reports_the_first_differing_byte_and_writes_"
        "nothing",
        _CAW + "test_compare_and_write_compares_every_byte_of_a_4096_byte_block",
        _CAW + "test_compare_and_write_miscompare_is_in_descriptor_format_when_d_sense_is_set",
    )

    def handle(self, cmd: Command) -> Result:
        return _caw_miscompare(self, cmd, super().handle(cmd),
                               lambda offset: SenseError.miscompare(offset + 1))


class CawInformationCountsFromWriteHalf(RamDisk):
    """Breaks: a COMPARE AND WRITE miscompare reports the offset counted from the start
    of the write half of the data-out (verify length + offset)."""

    caught_by: ClassVar[tuple[str, ...]] = CawInformationPlusOne.caught_by

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode != Opcode.COMPARE_AND_WRITE:
            return result
        verify = decode_block(cmd.cdb).blocks * self.block_size
        return _caw_miscompare(self, cmd, result,
                               lambda offset: SenseError.miscompare(verify + offset))


class CawInformationNotValid(RamDisk):
    """Breaks: a COMPARE AND WRITE miscompare leaves INFORMATION unset (VALID=0, no
    information descriptor)."""

    caught_by: ClassVar[tuple[str, ...]] = CawInformationPlusOne.caught_by

    def handle(self, cmd: Command) -> Result:
        return _caw_miscompare(
            self, cmd, super().handle(cmd),
            lambda _: SenseError(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY))


class CawMiscompareFixedFormat(RamDisk):
    """Breaks: the MISCOMPARE of COMPARE AND WRITE is always fixed-format sense, even
    with D_SENSE=1 (every other sense follows D_SENSE)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_miscompare_is_in_descriptor_format_when_d_sense_is_set",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode != Opcode.COMPARE_AND_WRITE or _key(result) != SenseKey.MISCOMPARE:
            return result
        return Result.check_condition(SenseError.miscompare(_information(result) or 0).sense())


class CawWritesOnMiscompare(faulty.WritesOnMiscompare):
    """Breaks: COMPARE AND WRITE reports MISCOMPARE but stores the write data anyway
    (tcmu.handlers.faulty.WritesOnMiscompare)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_miscompare_reports_the_first_differing_byte_and_writes_"
        "nothing",
        _CAW + "test_compare_and_write_compares_every_byte_of_a_4096_byte_block",
        _CAW + "test_compare_and_write_miscompare_is_in_descriptor_format_when_d_sense_is_set",
    )


class CawComparesFirstByteOnly(RamDisk):
    """Breaks: COMPARE AND WRITE compares only the first byte of the verify data, so data
    differing later is written as a match."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_miscompare_reports_the_first_differing_byte_and_writes_"
        "nothing",
        _CAW + "test_compare_and_write_compares_every_byte_of_a_4096_byte_block",
        _CAW + "test_compare_and_write_miscompare_is_in_descriptor_format_when_d_sense_is_set",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.COMPARE_AND_WRITE:
            result = _caw_with_prefix_compare(self, cmd, 1)
            if result is not None:
                return result
        return super().handle(cmd)


class CawComparesFirst512Bytes(RamDisk):
    """Breaks: COMPARE AND WRITE compares only the first 512 bytes (a hard-coded sector
    size), so a difference further into a 4096-byte block is written as a match."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_compares_every_byte_of_a_4096_byte_block",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.COMPARE_AND_WRITE:
            result = _caw_with_prefix_compare(self, cmd, 512)
            if result is not None:
                return result
        return super().handle(cmd)


class CawIgnoresMaximumLength(RamDisk):
    """Breaks: COMPARE AND WRITE serves any NUMBER OF LOGICAL BLOCKS, beyond the MAXIMUM
    COMPARE AND WRITE LENGTH the Block Limits page reports."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_longer_than_the_maximum_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode != Opcode.COMPARE_AND_WRITE:
            return super().handle(cmd)
        io = decode_block(cmd.cdb)
        length = io.blocks * self.block_size
        if (io.blocks <= self.max_compare_and_write_blocks or len(cmd.iov) != 2 * length
                or not _in_range(self, io.lba, io.blocks)):
            return super().handle(cmd)
        data = cmd.iov.read()
        diff = _first_difference(data[:length], _read_blocks(self, io.lba, io.blocks))
        if diff is not None:
            return _fail(self, SenseError.miscompare(diff))
        _write_blocks(self, io.lba, data[length:])
        return Result.good()


class CawRefusesZeroBlocks(RamDisk):
    """Breaks: COMPARE AND WRITE with NUMBER OF LOGICAL BLOCKS 0 is refused with INVALID
    FIELD IN CDB instead of completing GOOD."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_of_zero_blocks_is_good_and_writes_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.COMPARE_AND_WRITE and len(cmd.cdb) > 13 and not cmd.cdb[13]:
            return _fail(self, SenseError.invalid_cdb(13))
        return super().handle(cmd)


class CawStoresVerifyData(RamDisk):
    """Breaks: a matching COMPARE AND WRITE stores the verify half of the data-out (the
    first NUMBER OF LOGICAL BLOCKS blocks) instead of the write half."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_with_matching_data_stores_the_write_data",
        _CAW + "test_compare_and_write_at_the_last_lba_is_good",
        _CAW + "test_compare_and_write_with_fua_and_dpo_is_good_and_stores_the_data",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.COMPARE_AND_WRITE and result.status == Status.GOOD:
            io = decode_block(cmd.cdb)
            _write_blocks(self, io.lba, cmd.iov.read(0, io.blocks * self.block_size))
        return result


class CawTakesAnyDataOutLength(RamDisk):
    """Breaks: COMPARE AND WRITE does not check the data-out length: it compares what is
    there and writes what follows the verify half (padded with zeroes), GOOD."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_with_the_wrong_data_out_length_is_refused_and_writes_"
        "nothing",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode != Opcode.COMPARE_AND_WRITE:
            return super().handle(cmd)
        io = decode_block(cmd.cdb)
        length = io.blocks * self.block_size
        if (not io.blocks or len(cmd.iov) == 2 * length
                or io.blocks > self.max_compare_and_write_blocks
                or not _in_range(self, io.lba, io.blocks)):
            return super().handle(cmd)
        data = cmd.iov.read().ljust(2 * length, b"\0")[: 2 * length]
        diff = _first_difference(data[:length], _read_blocks(self, io.lba, io.blocks))
        if diff is not None:
            return _fail(self, SenseError.miscompare(diff))
        _write_blocks(self, io.lba, data[length:])
        return Result.good()


class CawAcceptsWrprotect(RamDisk):
    """Breaks: COMPARE AND WRITE ignores WRPROTECT (no protection information, yet a
    non-zero value is served as 0)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_with_wrprotect_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.COMPARE_AND_WRITE and len(cmd.cdb) > 1:
            cmd = _with_cdb(cmd, 1, cmd.cdb[1] & 0x1F)
        return super().handle(cmd)


class CawAcceptsLbaPastTheEnd(RamDisk):
    """Breaks: COMPARE AND WRITE checks `lba > number of blocks` instead of `>=`: the
    first LBA past the end completes GOOD (doing nothing)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _CAW + "test_compare_and_write_beyond_the_last_lba_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.COMPARE_AND_WRITE:
            io = decode_block(cmd.cdb)
            if io.lba == self.num_blocks and io.blocks:
                return Result.good()
        return super().handle(cmd)


# --- PRE-FETCH --------------------------------------------------------------------------------


class PreFetchNoRangeCheck(RamDisk):
    """Breaks: PRE-FETCH never checks the LBA range: ranges past the last LBA complete
    with CONDITION MET."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _PF + "test_pre_fetch_beyond_the_last_lba_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _PRE_FETCH:
            io = decode_block(cmd.cdb)
            if not _in_range(self, io.lba, io.blocks):
                return Result(Status.CONDITION_MET)
        return super().handle(cmd)


class PreFetchIgnoresMaximumLength(RamDisk):
    """Breaks: PRE-FETCH accepts a PREFETCH LENGTH above the MAXIMUM PREFETCH LENGTH its
    Block Limits page reports."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _PF + "test_pre_fetch_longer_than_the_maximum_prefetch_length_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _PRE_FETCH:
            io = decode_block(cmd.cdb)
            if io.blocks > self.max_transfer_blocks and _in_range(self, io.lba, io.blocks):
                return Result(Status.CONDITION_MET)
        return super().handle(cmd)


class PreFetchRefusesImmed(RamDisk):
    """Breaks: PRE-FETCH with IMMED=1 is refused with INVALID FIELD IN CDB (byte 1 bit 1)
    although the command is claimed with IMMED in its CDB usage data."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _PF + "test_pre_fetch_with_immed_is_condition_met_or_good_and_changes_no_data",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _PRE_FETCH and len(cmd.cdb) > 1 and cmd.cdb[1] & 0x02:
            return _fail(self, SenseError.invalid_cdb(1, 1))
        return super().handle(cmd)


class PreFetchRefusesTheLastLba(RamDisk):
    """Breaks: PRE-FETCH range check off by one: a range ending at the last LBA (or
    PREFETCH LENGTH 0, to the end) gets LBA OUT OF RANGE."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _PF + "test_pre_fetch_within_the_capacity_is_condition_met_or_good_and_changes_no_data",
        _PF + "test_pre_fetch_with_immed_is_condition_met_or_good_and_changes_no_data",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _PRE_FETCH:
            io = decode_block(cmd.cdb)
            end = io.lba + (io.blocks or self.num_blocks - io.lba)
            if io.lba < self.num_blocks and end >= self.num_blocks:
                return _fail(self, SenseError.lba_out_of_range())
        return super().handle(cmd)


# --- READ DEFECT DATA -------------------------------------------------------------------------


def _defect_header(cmd: Command, list_length: int = 0, flags: int | None = None) -> bytes:
    """A defect list header answering the CDB (no descriptors)."""
    ten = cmd.opcode == Opcode.READ_DEFECT_DATA_10
    requested = (cmd.cdb[2] if ten else cmd.cdb[1]) & 0x1F
    flags = requested if flags is None else flags
    if ten:
        return bytes([0, flags]) + list_length.to_bytes(2, "big")
    return bytes([0, flags, 0, 0]) + list_length.to_bytes(4, "big")


def _defect_alloc(cmd: Command) -> int:
    ten = cmd.opcode == Opcode.READ_DEFECT_DATA_10
    return int.from_bytes(cmd.cdb[7:9] if ten else cmd.cdb[6:10], "big")


def _defect_data(cmd: Command, result: Result, header: Callable[[], bytes]) -> Result:
    """READ DEFECT DATA answered with header() where the reference answers GOOD."""
    if cmd.opcode not in _READ_DEFECT_DATA or result.status != Status.GOOD:
        return result
    data = header()
    return Result.good(data, read_len=min(len(data), len(cmd.iov)))


class DefectDataIgnoresAllocationLength(RamDisk):
    """Breaks: READ DEFECT DATA returns its whole header whatever the ALLOCATION LENGTH
    (the buffer's size is the only limit)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RDD + "test_read_defect_data_allocation_length_truncates",
    )

    def handle(self, cmd: Command) -> Result:
        return _defect_data(cmd, super().handle(cmd), lambda: _defect_header(cmd))


class DefectDataAlwaysBothLists(RamDisk):
    """Breaks: READ DEFECT DATA always sets PLISTV and GLISTV, whichever lists were
    requested."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RDD + "test_read_defect_data_header_echoes_the_requested_lists_and_format",
    )

    def handle(self, cmd: Command) -> Result:
        def header() -> bytes:
            requested = cmd.cdb[2] if cmd.opcode == Opcode.READ_DEFECT_DATA_10 else cmd.cdb[1]
            return _defect_header(cmd, flags=requested & 0x07 | 0x18)[: _defect_alloc(cmd)]

        return _defect_data(cmd, super().handle(cmd), header)


class DefectDataLengthWithoutDescriptors(RamDisk):
    """Breaks: READ DEFECT DATA reports DEFECT LIST LENGTH 8 (one descriptor) but returns
    only the header."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RDD + "test_read_defect_data_header_echoes_the_requested_lists_and_format",
    )

    def handle(self, cmd: Command) -> Result:
        return _defect_data(cmd, super().handle(cmd),
                            lambda: _defect_header(cmd, list_length=8)[: _defect_alloc(cmd)])


# --- FORMAT UNIT ------------------------------------------------------------------------------


def _format_plain(cmd: Command) -> Command:
    """The same FORMAT UNIT with FMTDATA=0 and no data-out."""
    return dataclasses.replace(_with_cdb(cmd, 1, cmd.cdb[1] & ~(_FMTDATA | _LONGLIST) & 0xFF),
                               iov=EMPTY_BUFFER)


class FormatUnitLeavesOldData(RamDisk):
    """Breaks: FORMAT UNIT completes GOOD but leaves every block as it was."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _FMT + "test_format_unit_without_parameter_data_makes_every_block_read_zeroes",
        _FMT + "test_format_unit_with_an_empty_parameter_list_header_formats_the_medium",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode != Opcode.FORMAT_UNIT:
            return super().handle(cmd)
        saved = _read_blocks(self, 0, self.num_blocks)
        result = super().handle(cmd)
        if result.status == Status.GOOD:
            _write_blocks(self, 0, saved)
        return result


class FormatUnitSparesTheLastBlock(RamDisk):
    """Breaks: FORMAT UNIT zeroes every block but the last (an off-by-one in its range)."""

    caught_by: ClassVar[tuple[str, ...]] = FormatUnitLeavesOldData.caught_by

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode != Opcode.FORMAT_UNIT:
            return super().handle(cmd)
        last = _read_blocks(self, self.num_blocks - 1, 1)
        result = super().handle(cmd)
        if result.status == Status.GOOD:
            _write_blocks(self, self.num_blocks - 1, last)
        return result


class FormatUnitIgnoresFmtpinfo(RamDisk):
    """Breaks: FORMAT UNIT ignores FMTPINFO (no protection information support) and
    formats as if it were 00b."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _FMT + "test_format_unit_with_fmtpinfo_is_invalid_field_in_cdb_and_formats_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.FORMAT_UNIT and len(cmd.cdb) > 1:
            cmd = _with_cdb(cmd, 1, cmd.cdb[1] & ~_FMTPINFO & 0xFF)
        return super().handle(cmd)


class FormatUnitAcceptsShortParameterList(RamDisk):
    """Breaks: FORMAT UNIT with FMTDATA=1 and less data-out than the parameter list
    header formats with the defaults instead of PARAMETER LIST LENGTH ERROR."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _FMT + "test_format_unit_with_a_short_parameter_list_is_parameter_list_length_error",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.FORMAT_UNIT and len(cmd.cdb) > 1 and cmd.cdb[1] & _FMTDATA:
            header = 8 if cmd.cdb[1] & _LONGLIST else 4
            if len(cmd.iov) < header:
                return super().handle(_format_plain(cmd))
        return super().handle(cmd)


class FormatUnitIgnoresDefectList(RamDisk):
    """Breaks: FORMAT UNIT with a defect list (DEFECT LIST LENGTH != 0) formats and
    ignores the list instead of INVALID FIELD IN PARAMETER LIST."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _FMT + "test_format_unit_with_unsupported_parameter_data_is_invalid_field_in_parameter_"
        "list",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.FORMAT_UNIT and len(cmd.cdb) > 1 and cmd.cdb[1] & _FMTDATA:
            long = bool(cmd.cdb[1] & _LONGLIST)
            header = cmd.iov.read(0, 8 if long else 4)
            length = header[4:8] if long else header[2:4]
            if any(length):
                return super().handle(_format_plain(cmd))
        return super().handle(cmd)


# --- the block device -------------------------------------------------------------------------


class SdWriteCorruptsSecondPage(RamDisk):
    """Breaks: WRITE(10) of more than 4 KiB stores bytes 4096-4111 of its data as zeroes
    (a mishandled second data page; sd writes with WRITE(10))."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_data_written_through_the_block_device_reads_back_through_sg_io",
        _SD + "test_a_multi_megabyte_write_through_the_block_device_reads_back_intact",
        _SD + "test_4096_byte_blocks_carry_data_both_ways_through_the_block_device",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.WRITE_10 and len(cmd.iov) > _PAGE:
            cmd.iov.write(bytes(16), _PAGE)
        return super().handle(cmd)


class SdReadCorruptsSecondPage(RamDisk):
    """Breaks: READ(10) of more than 4 KiB returns bytes 4096-4111 as zeroes (the medium
    is intact; sd reads with READ(10))."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_data_written_through_sg_io_reads_back_through_the_block_device",
        _SD + "test_4096_byte_blocks_carry_data_both_ways_through_the_block_device",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if (cmd.opcode == Opcode.READ_10 and result.status == Status.GOOD
                and len(cmd.iov) > _PAGE):
            cmd.iov.write(bytes(16), _PAGE)
        return result


class SdWrite10AssumesSectors(RamDisk):
    """Breaks: WRITE(10) turns its LBA into a byte offset with 512-byte sectors whatever
    the block size, so on a 4096-byte-block LUN the data lands at the wrong place."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_4096_byte_blocks_carry_data_both_ways_through_the_block_device",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode != Opcode.WRITE_10 or self.block_size == 512:
            return super().handle(cmd)
        io = decode_block(cmd.cdb)
        if (not io.blocks or len(cmd.iov) != io.blocks * self.block_size
                or not _in_range(self, io.lba, io.blocks)):
            return super().handle(cmd)
        self.write(io.lba * 512, cmd.iov)
        return Result.good()


class SdDiscardIgnored(RamDisk):
    """Breaks: UNMAP completes GOOD but deallocates nothing, although LBPRZ=1 promises
    that unmapped blocks read zeroes."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_blkdiscard_deallocates_and_the_range_reads_zeroes",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.UNMAP:
            return Result.good()
        return super().handle(cmd)


class SdBlkzerooutZeroesOneBlock(RamDisk):
    """Breaks: WRITE SAME of a zero block without UNMAP (the zeroing path) zeroes only the
    first block of the range."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_blkzeroout_makes_the_range_read_zeroes",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode not in _WRITE_SAME or len(cmd.cdb) < 2 or cmd.cdb[1] & 0x09:
            return super().handle(cmd)
        io = decode_block(cmd.cdb)
        block = cmd.iov.read()
        if (io.blocks < 2 or not _in_range(self, io.lba, io.blocks)
                or block != bytes(self.block_size)):
            return super().handle(cmd)
        _write_blocks(self, io.lba, block)
        return Result.good()


class SdWriteSameUnmapIgnored(RamDisk):
    """Breaks: WRITE SAME with UNMAP=1 completes GOOD without writing or deallocating
    anything."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_punching_a_hole_through_write_same_with_unmap_makes_the_range_read_zeroes",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _WRITE_SAME and len(cmd.cdb) > 1 and cmd.cdb[1] & 0x08:
            io = decode_block(cmd.cdb)
            if io.blocks and _in_range(self, io.lba, io.blocks):
                return Result.good()
        return super().handle(cmd)


class SdModeSelectIgnored(RamDisk):
    """Breaks: MODE SELECT completes GOOD but changes no mode page (WCE stays 0)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_cache_type_write_back_and_write_through_reach_the_handler_as_mode_select",
        _SD + "test_fsync_sends_synchronize_cache_once_the_write_cache_is_on",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _MODE_SELECT:
            return Result.good()
        return super().handle(cmd)


class SdModeSense6HidesWce(RamDisk):
    """Breaks: MODE SENSE(6) reports the Caching page with WCE=0 whatever MODE SELECT set
    (MODE SENSE(10) is right), so sd, which reads it with MODE SENSE(6), keeps write
    through."""

    caught_by: ClassVar[tuple[str, ...]] = SdModeSelectIgnored.caught_by

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode != Opcode.MODE_SENSE_6 or result.status != Status.GOOD:
            return result
        data = bytearray(result.data if result.data is not None
                         else cmd.iov.read(0, result.read_len))
        pos = 4 + (data[3] if len(data) > 3 else 0)
        while pos + 2 < len(data):
            if data[pos] & 0x3F == 0x08 and pos + 2 < len(data):
                data[pos + 2] &= ~0x04 & 0xFF
            pos += 2 + data[pos + 1]
        return Result.good(bytes(data), read_len=min(len(data), len(cmd.iov)))


class SdSyncCacheRefused(RamDisk):
    """Breaks: SYNCHRONIZE CACHE is refused with INVALID COMMAND OPERATION CODE although
    the Caching page lets WCE be set (a write-back cache that cannot be flushed)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SD + "test_fsync_sends_synchronize_cache_once_the_write_cache_is_on",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _SYNCHRONIZE_CACHE:
            return _fail(self, SenseError.invalid_opcode())
        return super().handle(cmd)
