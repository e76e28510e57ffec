"""Broken handlers for the READ/WRITE and SYNCHRONIZE CACHE suites
(suites/sbc/test_read_write.py, test_synchronize_cache.py): the reference RAM disk with
one plausible bug each.

Each class wraps RamDisk.handle() (or one of its checks) and changes only the behaviour
its docstring names; `caught_by` lists the suite tests that must fail against it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tcmu import cdb as cdbs
from tcmu.blockutil import slice_buffer
from tcmu.handler import Command, DeviceInfo, Result, ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Opcode, Status

_RW = "suites/sbc/test_read_write.py::"
_SYNC = "suites/sbc/test_synchronize_cache.py::"

_READS = (Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16)
_WRITES = (Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16)
_LONG_READS = _READS[1:]
_LONG_WRITES = _WRITES[1:]
_SIXTEEN = (Opcode.READ_16, Opcode.WRITE_16)
_TWELVE = (Opcode.READ_12, Opcode.WRITE_12)
_SYNCHRONIZE_CACHE = (Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16)
_PROTECT = 0xE0  # byte 1: RDPROTECT / WRPROTECT
_FUA = 0x08
_IMMED = 0x02
_HALF_MIB = 512 << 10
_UNDO_LIMIT = 64 << 20  # bytes of overwritten data SyncDiscardsTheWriteCache remembers


# --- helpers ----------------------------------------------------------------------------------


def _fail(handler: RamDisk, error: SenseError) -> Result:
    return Result.check_condition(error.sense(handler.descriptor_sense))


def _with_cdb(cmd: Command, cdb: bytes | bytearray) -> Command:
    return dataclasses.replace(cmd, cdb=bytes(cdb))


def _buffer(data: bytes | bytearray) -> ScatterBuffer:
    return ScatterBuffer([memoryview(bytearray(data))])


def _read_blocks(handler: RamDisk, lba: int, blocks: int) -> bytes:
    data = bytearray(blocks * handler.block_size)
    if data:
        handler.read(lba * handler.block_size, ScatterBuffer([memoryview(data)]))
    return bytes(data)


def _write_blocks(handler: RamDisk, lba: int, data: bytes) -> None:
    if data:
        handler.write(lba * handler.block_size, _buffer(data))


def _in_range(handler: RamDisk, lba: int, blocks: int) -> bool:
    return lba < handler.num_blocks and lba + blocks <= handler.num_blocks


def _plain(handler: RamDisk, cmd: Command) -> cdbs.BlockCdb | None:
    """The decoded READ/WRITE when the reference would refuse it for nothing but what
    the fault is about: no flag bits, length within the limit; else None."""
    if cmd.opcode not in _READS + _WRITES or len(cmd.cdb) < 6:
        return None
    if cmd.opcode not in (Opcode.READ_6, Opcode.WRITE_6) and cmd.cdb[1]:
        return None
    io = cdbs.decode_block(cmd.cdb)
    if io.blocks > handler.max_transfer_blocks or handler.stopped:
        return None
    return io


# --- READ / WRITE: LBA and length decoding -----------------------------------------------------


class RwLba16Low32Bits(RamDisk):
    """Breaks: READ(16)/WRITE(16) keep only the low 32 bits of the LOGICAL BLOCK ADDRESS
    (the 16-byte CDB decoded into a 32-bit variable)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_sixteen_byte_lba_above_bit_31_is_out_of_range_and_touches_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _SIXTEEN and len(cmd.cdb) >= 16:
            cdb = bytearray(cmd.cdb)
            cdb[2:6] = bytes(4)
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RwSixByteLbaTwentyBits(RamDisk):
    """Breaks: READ(6)/WRITE(6) take the LBA from byte 1 bits 3-0 and bytes 2-3 (20
    bits, a mask one bit short), so LBA 2^20 + a addresses LBA a."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_six_byte_lba_bit_20_is_part_of_the_lba",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in (Opcode.READ_6, Opcode.WRITE_6) and len(cmd.cdb) >= 6:
            cdb = bytearray(cmd.cdb)
            cdb[1] &= 0x0F
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RwWrite6ZeroLengthIsZeroBlocks(RamDisk):
    """Breaks: WRITE(6) with TRANSFER LENGTH 0 writes nothing and returns GOOD (the
    10-byte rule applied to the 6-byte CDB, where 0 means 256 blocks)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_six_byte_transfer_length_zero_means_256_blocks",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.WRITE_6 and len(cmd.cdb) >= 6 and cmd.cdb[4] == 0:
            io = cdbs.decode_block(cmd.cdb)
            if _in_range(self, io.lba, 0) and not self.stopped:
                return Result.good()
        return super().handle(cmd)


class RwZeroLengthIs256Everywhere(RamDisk):
    """Breaks: TRANSFER LENGTH 0 means 256 blocks in the 10-, 12- and 16-byte CDBs too
    (the 6-byte rule applied to every size), so a 0-block READ or WRITE fails on its
    empty buffer."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_transfer_length_zero_transfers_nothing_and_is_good",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _LONG_READS + _LONG_WRITES and len(cmd.cdb) >= 10:
            io = cdbs.decode_block(cmd.cdb)
            if io.blocks == 0:
                cdb = bytearray(cmd.cdb)
                width = {7: 2, 6: 4, 10: 4}[io.length_byte]
                cdb[io.length_byte : io.length_byte + width] = (256).to_bytes(width, "big")
                cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RwLength12LowBytesOnly(RamDisk):
    """Breaks: READ(12)/WRITE(12) take TRANSFER LENGTH from bytes 8-9 only (the 10-byte
    field width), ignoring its upper two bytes."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_read_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb",
        _RW + "test_write_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _TWELVE and len(cmd.cdb) >= 12:
            cdb = bytearray(cmd.cdb)
            cdb[6:8] = bytes(2)
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RwLba16OneBased(RamDisk):
    """Breaks: READ(16)/WRITE(16) address LBA + 1 (modulo the capacity): a one-off in
    the 16-byte path only, invisible while the same size writes and reads."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_data_written_with_one_cdb_size_reads_back_with_every_other",
        _RW + "test_six_byte_cdbs_reach_the_highest_21_bit_lba_in_the_capacity",
    )

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self._shift = False

    def handle(self, cmd: Command) -> Result:
        self._shift = cmd.opcode in _SIXTEEN
        try:
            return super().handle(cmd)
        finally:
            self._shift = False

    def _shifted(self, offset: int, buf: ScatterBuffer) -> list[tuple[int, ScatterBuffer]]:
        """(offset, part) pairs of buf moved one block on, wrapping at the capacity."""
        if not self._shift:
            return [(offset, buf)]
        size = self.num_blocks * self.block_size
        offset = (offset + self.block_size) % size
        head = min(len(buf), size - offset)
        parts = [(offset, slice_buffer(buf, 0, head))]
        if head < len(buf):
            parts.append((0, slice_buffer(buf, head, len(buf) - head)))
        return parts

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        for where, part in self._shifted(offset, buf):
            super().read(where, part)

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        for where, part in self._shifted(offset, buf):
            super().write(where, part)


# --- READ / WRITE: range checks -----------------------------------------------------------------


class RwPartialWritePastTheEnd(RamDisk):
    """Breaks: WRITE whose range crosses the last LBA writes the blocks within the
    capacity before reporting LOGICAL BLOCK ADDRESS OUT OF RANGE."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_write_crossing_the_end_is_lba_out_of_range_and_writes_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        io = _plain(self, cmd) if cmd.opcode in _WRITES else None
        if (io is not None and io.lba < self.num_blocks and not _in_range(self, io.lba, io.blocks)
                and len(cmd.iov) == io.blocks * self.block_size):
            fits = self.num_blocks - io.lba
            _write_blocks(self, io.lba, cmd.iov.read(0, fits * self.block_size))
        return result


class RwReadPastTheEndZeroFills(RamDisk):
    """Breaks: READ whose range crosses the last LBA returns the blocks within the
    capacity and zeroes for the rest, with GOOD (a short pread taken as a hole)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_read_crossing_the_end_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        io = _plain(self, cmd) if cmd.opcode in _READS else None
        length = io.blocks * self.block_size if io else 0
        if (io is not None and io.lba < self.num_blocks
                and not _in_range(self, io.lba, io.blocks) and len(cmd.iov) >= length):
            fits = self.num_blocks - io.lba
            cmd.iov.write(_read_blocks(self, io.lba, fits).ljust(length, b"\0"))
            return Result.good(read_len=length)
        return super().handle(cmd)


class RwRangeWrapsPast2To64(RamDisk):
    """Breaks: READ(16)/WRITE(16) check the range as (LBA + TRANSFER LENGTH) mod 2^64 <=
    capacity (64-bit overflow), so a range wrapping past 2^64 is served: the blocks past
    2^64 land at LBA 0 on, those below read as zeroes and are not written."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_sixteen_byte_range_wrapping_past_2_64_is_lba_out_of_range",
        _RW + "test_read_beyond_the_last_lba_is_lba_out_of_range",
        _RW + "test_write_beyond_the_last_lba_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        io = _plain(self, cmd) if cmd.opcode in _SIXTEEN else None
        if io is None or io.lba + io.blocks < 2**64:
            return super().handle(cmd)
        wrapped = (io.lba + io.blocks) % 2**64  # blocks at LBA 0 .. wrapped-1
        length = io.blocks * self.block_size
        below = (io.blocks - wrapped) * self.block_size
        if wrapped > self.num_blocks:
            return super().handle(cmd)
        if cmd.opcode == Opcode.READ_16:
            if len(cmd.iov) < length:
                return super().handle(cmd)
            cmd.iov.write(bytes(below) + _read_blocks(self, 0, wrapped))
            return Result.good(read_len=length)
        if len(cmd.iov) != length:
            return super().handle(cmd)
        _write_blocks(self, 0, cmd.iov.read(below))
        return Result.good()


# --- READ / WRITE: buffers ------------------------------------------------------------------------


class RwReadReportsTheWholeBuffer(RamDisk):
    """Breaks: READ completes without a residual: the whole data-in buffer is reported
    transferred, however much of it the blocks filled."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_read_into_a_larger_buffer_is_good_with_the_excess_as_residual",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode in _READS and result.status == Status.GOOD:
            return Result.good()
        return result


class RwShortReadIsGood(RamDisk):
    """Breaks: READ into a buffer smaller than the transfer fills what fits and returns
    GOOD (the allocation-length rule of SPC commands applied to READ)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_read_into_a_smaller_buffer_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        io = _plain(self, cmd) if cmd.opcode in _READS else None
        if (io is not None and _in_range(self, io.lba, io.blocks)
                and len(cmd.iov) < io.blocks * self.block_size):
            cmd.iov.write(_read_blocks(self, io.lba, io.blocks))
            return Result.good()
        return super().handle(cmd)


class RwWriteTakesAnyDataOutLength(RamDisk):
    """Breaks: WRITE with a data-out buffer shorter or longer than the transfer stores
    what it got (zero padded, the excess dropped) and returns GOOD."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_write_with_the_wrong_data_out_length_is_refused_and_writes_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        io = _plain(self, cmd) if cmd.opcode in _WRITES else None
        length = io.blocks * self.block_size if io else 0
        if io is not None and _in_range(self, io.lba, io.blocks) and len(cmd.iov) != length:
            _write_blocks(self, io.lba, cmd.iov.read(0, length).ljust(length, b"\0"))
            return Result.good()
        return super().handle(cmd)


class RwTruncatesAt512KiB(RamDisk):
    """Breaks: WRITE of more than 512 KiB stores only its first 512 KiB and returns GOOD
    (a fixed bounce buffer)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_largest_transfer_round_trips",
    )

    def handle(self, cmd: Command) -> Result:
        io = _plain(self, cmd) if cmd.opcode in _WRITES else None
        length = io.blocks * self.block_size if io else 0
        if (io is not None and length > _HALF_MIB and len(cmd.iov) == length
                and _in_range(self, io.lba, io.blocks)):
            _write_blocks(self, io.lba, cmd.iov.read(0, _HALF_MIB))
            return Result.good()
        return super().handle(cmd)


class RwIgnoresMaximumTransferLength(RamDisk):
    """Breaks: TRANSFER LENGTH is not checked against the MAXIMUM TRANSFER LENGTH the
    Block Limits page reports (only the range and the buffer are checked)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_read_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb",
        _RW + "test_write_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb",
    )

    def _check_transfer(self, io: cdbs.BlockCdb) -> None:
        self._check_range(io.lba, io.blocks)


# --- READ / WRITE: byte 1 flags ---------------------------------------------------------------


class RwRefusesFuaOnWrites(RamDisk):
    """Breaks: WRITE with FUA=1 is refused (24/00, byte 1 bit 3) although MODE SENSE
    reports DPOFUA=1."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_dpo_and_fua_are_honoured_when_dpofua_is_claimed",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _LONG_WRITES and len(cmd.cdb) > 1 and cmd.cdb[1] & _FUA:
            return _fail(self, SenseError.invalid_cdb(1, 3))
        return super().handle(cmd)


class RwIgnoresWrprotect(RamDisk):
    """Breaks: WRITE ignores WRPROTECT: without protection information a non-zero value
    is served as 0 (the data is written)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_write_with_wrprotect_is_invalid_field_in_cdb_and_writes_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _LONG_WRITES and len(cmd.cdb) > 1:
            cdb = bytearray(cmd.cdb)
            cdb[1] &= ~_PROTECT & 0xFF
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RwProtectPointsAtHighestSetBit(RamDisk):
    """Breaks: a non-zero RDPROTECT/WRPROTECT is refused with the bit pointer on its
    highest set bit (bit 5 for 001b) instead of the field's first bit, bit 7."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RW + "test_read_with_rdprotect_is_invalid_field_in_cdb_without_protection",
        _RW + "test_write_with_wrprotect_is_invalid_field_in_cdb_and_writes_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        if (cmd.opcode in _LONG_READS + _LONG_WRITES and len(cmd.cdb) > 1
                and cmd.cdb[1] & _PROTECT):
            return _fail(self, SenseError.invalid_cdb(1, (cmd.cdb[1] & _PROTECT).bit_length() - 1))
        return super().handle(cmd)


# --- SYNCHRONIZE CACHE -------------------------------------------------------------------------


class SyncZeroCountSkipsRangeCheck(RamDisk):
    """Breaks: SYNCHRONIZE CACHE with NUMBER OF LOGICAL BLOCKS 0 ("to the last LBA")
    skips the range check: an LBA past the end is GOOD."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SYNC + "test_synchronize_cache_of_an_lba_past_the_end_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        if (cmd.opcode in _SYNCHRONIZE_CACHE and len(cmd.cdb) >= 10
                and not cmd.cdb[1] & ~_IMMED and cdbs.decode_block(cmd.cdb).blocks == 0):
            self.flush()
            return Result.good()
        return super().handle(cmd)


class SyncChecksLbaOnly(RamDisk):
    """Breaks: SYNCHRONIZE CACHE checks only that the LBA is within the capacity, not
    where LBA + NUMBER OF LOGICAL BLOCKS ends."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SYNC + "test_synchronize_cache_of_a_range_crossing_the_end_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        if (cmd.opcode in _SYNCHRONIZE_CACHE and len(cmd.cdb) >= 10
                and not cmd.cdb[1] & ~_IMMED and cdbs.decode_block(cmd.cdb).lba < self.num_blocks):
            self.flush()
            return Result.good()
        return super().handle(cmd)


class SyncRangeEndOffByOne(RamDisk):
    """Breaks: SYNCHRONIZE CACHE refuses (21/00) a range that ends exactly at the last
    LBA (LBA + NUMBER OF LOGICAL BLOCKS >= capacity taken as past the end)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SYNC + "test_synchronize_cache_of_a_range_within_the_capacity_is_good",
        _SYNC + "test_synchronize_cache_with_immed_is_good",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _SYNCHRONIZE_CACHE and len(cmd.cdb) >= 10:
            io = cdbs.decode_block(cmd.cdb)
            if io.blocks and io.lba + io.blocks >= self.num_blocks:
                return _fail(self, SenseError.lba_out_of_range())
        return super().handle(cmd)


class SyncRefusesImmed(RamDisk):
    """Breaks: SYNCHRONIZE CACHE with IMMED=1 is refused with INVALID FIELD IN CDB (byte
    1 bit 1), though the usage data claims the bit."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SYNC + "test_synchronize_cache_with_immed_is_good",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _SYNCHRONIZE_CACHE and len(cmd.cdb) > 1 and cmd.cdb[1] & _IMMED:
            return _fail(self, SenseError.invalid_cdb(1, 1))
        return super().handle(cmd)


class SyncLba16Low32Bits(RamDisk):
    """Breaks: SYNCHRONIZE CACHE(16) keeps only the low 32 bits of the LOGICAL BLOCK
    ADDRESS (the 10-byte decoder reused)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SYNC + "test_synchronize_cache_of_an_lba_past_the_end_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.SYNCHRONIZE_CACHE_16 and len(cmd.cdb) >= 16:
            cdb = bytearray(cmd.cdb)
            cdb[2:6] = bytes(4)
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class SyncDiscardsTheWriteCache(RamDisk):
    """Breaks: SYNCHRONIZE CACHE drops the write-back cache instead of writing it: the
    blocks written since the previous one read back as they were before those writes."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SYNC + "test_synchronize_cache_of_the_whole_medium_is_good",
        _SYNC + "test_synchronize_cache_of_a_range_within_the_capacity_is_good",
        _SYNC + "test_synchronize_cache_with_immed_is_good",
    )

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self._undo: list[tuple[int, bytes]] = []  # (LBA, data before the write), oldest first
        self._undo_bytes = 0

    def handle(self, cmd: Command) -> Result:
        io = _plain(self, cmd) if cmd.opcode in _WRITES else None
        old = b""
        if io is not None and _in_range(self, io.lba, io.blocks):
            old = _read_blocks(self, io.lba, io.blocks)
        result = super().handle(cmd)
        if io is not None and old and result.status == Status.GOOD:
            self._undo.append((io.lba, old))
            self._undo_bytes += len(old)
            while self._undo_bytes > _UNDO_LIMIT:  # the oldest were written back long ago
                self._undo_bytes -= len(self._undo.pop(0)[1])
        if cmd.opcode in _SYNCHRONIZE_CACHE and result.status == Status.GOOD:
            for lba, data in reversed(self._undo):
                _write_blocks(self, lba, data)
            self._undo.clear()
            self._undo_bytes = 0
        return result
