"""Broken handlers for the VERIFY, WRITE AND VERIFY, ORWRITE and WRITE ATOMIC suites
(suites/sbc/test_verify.py, test_write_and_verify.py, test_orwrite.py,
test_write_atomic.py): the reference RAM disk with one plausible bug each.

Each class changes only the behaviour its docstring names; `caught_by` lists the suite
tests that must fail against it.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import ClassVar

from tcmu import cdb as cdbs
from tcmu.blockutil import check_data_out
from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status

_VF = "suites/sbc/test_verify.py::"
_WAV = "suites/sbc/test_write_and_verify.py::"
_ORW = "suites/sbc/test_orwrite.py::"
_WA = "suites/sbc/test_write_atomic.py::"

_VERIFY = (Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16)
_WAV_OPS = (Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16)
_BYTCHK_MASK = 0x06  # CDB byte 1, bits 2-1
_PROTECT_MASK = 0xE0  # CDB byte 1, bits 7-5
_B0_ATOMIC = struct.Struct(">III")  # MAX ATOMIC TRANSFER, ATOMIC ALIGNMENT, GRANULARITY
_B0_ATOMIC_AT = 44


# --- helpers ----------------------------------------------------------------------------------


def _fail(handler: RamDisk, error: SenseError) -> Result:
    return Result.check_condition(error.sense(handler.descriptor_sense))


def _sense(result: Result) -> tuple[int, int, int | None] | None:
    """(sense key, ASC/ASCQ, INFORMATION or None) of a CHECK CONDITION, fixed or
    descriptor format; None for any other status."""
    sense = result.sense
    if result.status != Status.CHECK_CONDITION or len(sense) < 8:
        return None
    if sense[0] & 0x7F in (0x72, 0x73):
        info = None
        pos = 8
        while pos + 2 <= len(sense):
            if sense[pos] == 0x00 and pos + 12 <= len(sense):
                info = int.from_bytes(sense[pos + 4 : pos + 12], "big")
            pos += 2 + sense[pos + 1]
        return sense[1] & 0x0F, (sense[2] << 8) | sense[3], info
    info = int.from_bytes(sense[3:7], "big") if sense[0] & 0x80 else None
    return sense[2] & 0x0F, (sense[12] << 8) | sense[13], info


def _miscompare_offset(result: Result) -> int | None:
    fields = _sense(result)
    if fields is None or fields[0] != SenseKey.MISCOMPARE:
        return None
    return fields[2]


def _read_blocks(handler: RamDisk, lba: int, blocks: int) -> bytes:
    data = bytearray(blocks * handler.block_size)
    if data:
        handler.read(lba * handler.block_size, ScatterBuffer([memoryview(data)]))
    return bytes(data)


def _write_blocks(handler: RamDisk, lba: int, data: bytes) -> None:
    if data:
        handler.write(lba * handler.block_size, ScatterBuffer([memoryview(bytearray(data))]))


def _in_range(handler: RamDisk, lba: int, blocks: int) -> bool:
    return lba < handler.num_blocks and lba + blocks <= handler.num_blocks


def _with_byte1(cmd: Command, value: int) -> Command:
    cdb = bytearray(cmd.cdb)
    cdb[1] = value
    return dataclasses.replace(cmd, cdb=bytes(cdb))


def _verify_miscompare(handler: RamDisk, cmd: Command, result: Result,
                       rebuild: Callable[[int], int]) -> Result:
    """A VERIFY MISCOMPARE answered with INFORMATION rebuild(the right offset)."""
    offset = _miscompare_offset(result) if cmd.opcode in _VERIFY else None
    if offset is None:
        return result
    return _fail(handler, SenseError.miscompare(rebuild(offset)))


# --- VERIFY -----------------------------------------------------------------------------------


class VerifyInformationPlusOne(RamDisk):
    """Breaks: a VERIFY miscompare reports INFORMATION one past the first differing byte
    (a 1-based offset)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_bytchk_1_miscompare_reports_the_first_differing_byte_and_writes_"
        "nothing",
    )

    def handle(self, cmd: Command) -> Result:
        return _verify_miscompare(self, cmd, super().handle(cmd), lambda offset: offset + 1)


class VerifyInformationInBlocks(RamDisk):
    """Breaks: a VERIFY miscompare reports INFORMATION as the index of the differing
    block, not the byte offset."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_bytchk_1_miscompare_reports_the_first_differing_byte_and_writes_"
        "nothing",
    )

    def handle(self, cmd: Command) -> Result:
        return _verify_miscompare(self, cmd, super().handle(cmd),
                                  lambda offset: offset // self.block_size)


class VerifyByteCheck3FirstBlockOnly(RamDisk):
    """Breaks: VERIFY with BYTCHK 11b compares the data-out block with the first block of
    the range only."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_bytchk_3_miscompare_in_any_block_is_reported_and_writes_nothing",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode not in _VERIFY or _miscompare_offset(result) is None:
            return result
        io = cdbs.decode_block(cmd.cdb)
        if io.bytchk == 0b11 and _read_blocks(self, io.lba, 1) == cmd.iov.read():
            return Result.good()
        return result


class VerifyStoresDataOut(RamDisk):
    """Breaks: VERIFY with BYTCHK 1 reports a miscompare correctly, then writes the
    data-out over the medium (a "repair" VERIFY must never do)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_bytchk_1_miscompare_reports_the_first_differing_byte_and_writes_"
        "nothing",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode in _VERIFY and _miscompare_offset(result) is not None:
            io = cdbs.decode_block(cmd.cdb)
            if io.bytchk == 0b01:
                _write_blocks(self, io.lba, cmd.iov.read())
        return result


class VerifyByteCheck2Accepted(RamDisk):
    """Breaks: VERIFY takes the reserved BYTCHK 10b for 01b (only bit 1 is tested)
    instead of refusing it with 24/00."""

    caught_by: ClassVar[tuple[str, ...]] = (_VF + "test_verify_bytchk_2_is_invalid_field_in_cdb",)

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _VERIFY and cmd.cdb[1] & _BYTCHK_MASK == 0b100:
            cmd = _with_byte1(cmd, cmd.cdb[1] & ~_BYTCHK_MASK | 0b010)
        return super().handle(cmd)


class VerifyIgnoresVrprotect(RamDisk):
    """Breaks: VERIFY ignores VRPROTECT (no protection information, so nothing to check)
    instead of refusing a non-zero value with 24/00."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_with_vrprotect_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _VERIFY:
            cmd = _with_byte1(cmd, cmd.cdb[1] & ~_PROTECT_MASK & 0xFF)
        return super().handle(cmd)


class VerifyComparesWhatWasSent(RamDisk):
    """Breaks: VERIFY with BYTCHK 1 compares as much data-out as arrived (a short buffer
    compares its prefix, extra bytes are ignored) instead of refusing the wrong length
    with 0E/03."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_with_the_wrong_data_out_length_is_refused",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        fields = _sense(result)
        wrong_length = (SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
        if cmd.opcode not in _VERIFY or fields is None or fields[:2] != wrong_length:
            return result
        io = cdbs.decode_block(cmd.cdb)
        wanted = io.blocks * self.block_size if io.bytchk == 0b01 else self.block_size
        sent = cmd.iov.read()[:wanted]
        medium = _read_blocks(self, io.lba, io.blocks)
        if io.bytchk == 0b11:
            medium = medium[: self.block_size]
        if medium[: len(sent)] == sent:
            return Result.good()
        return result


class VerifyMediumCheckSkipsRange(RamDisk):
    """Breaks: VERIFY with BYTCHK 0 (nothing to compare) returns GOOD at once, without
    checking the LBA range."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_beyond_the_last_lba_is_lba_out_of_range",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        fields = _sense(result)
        if (cmd.opcode in _VERIFY and not cmd.cdb[1] & _BYTCHK_MASK and fields is not None
                and fields[1] == Asc.LBA_OUT_OF_RANGE):
            return Result.good()
        return result


class VerifyMediumCheckUnlimited(RamDisk):
    """Breaks: VERIFY with BYTCHK 0 (no data moves) does not apply MAXIMUM TRANSFER
    LENGTH: any length within the capacity is GOOD."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VF + "test_verify_longer_than_the_maximum_transfer_length_is_invalid_field_in_cdb",
    )

    def _verify(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        if io.bytchk == 0 and io.blocks > self.max_transfer_blocks:
            self._check_range(io.lba, io.blocks)
            return Result.good()
        return super()._verify(cmd)


# --- WRITE AND VERIFY -----------------------------------------------------------------------


class WavMediumCheckWithoutWrite(RamDisk):
    """Breaks: WRITE AND VERIFY with BYTCHK 0 only verifies the medium (as VERIFY does):
    the data-out is never written, yet the answer is GOOD."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WAV + "test_write_and_verify_stores_the_data_at_the_lba",
    )

    def _write_and_verify(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        if io.bytchk == 0:
            self._check_transfer(io)
            check_data_out(cmd, io.blocks * self.block_size)
            return Result.good()
        return super()._write_and_verify(cmd)


class WavSixteenWrongLba(RamDisk):
    """Breaks: WRITE AND VERIFY(16) takes its LBA from bytes 2-5 (the 10-byte layout), so
    every LBA below 2**32 is written at LBA 0."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WAV + "test_write_and_verify_stores_the_data_at_the_lba",
    )

    def _write_and_verify(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.WRITE_AND_VERIFY_16:
            cdb = bytearray(cmd.cdb)
            cdb[2:10] = int.from_bytes(cmd.cdb[2:6], "big").to_bytes(8, "big")
            cmd = dataclasses.replace(cmd, cdb=bytes(cdb))
        return super()._write_and_verify(cmd)


class WavComparesBeforeWriting(RamDisk):
    """Breaks: WRITE AND VERIFY with BYTCHK 1 compares the data-out with the medium
    before writing it (a VERIFY then a WRITE), so new data always miscompares."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WAV + "test_write_and_verify_stores_the_data_at_the_lba",
    )

    def _write_and_verify(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        if io.bytchk == 1 and io.blocks:
            self._check_transfer(io)
            check_data_out(cmd, io.blocks * self.block_size)
            diff = self._medium_difference(io.lba * self.block_size, cmd.iov.read())
            if diff is not None:
                raise SenseError.miscompare(diff)
        return super()._write_and_verify(cmd)


class WavWritesWhatFitsBeforeTheEnd(RamDisk):
    """Breaks: WRITE AND VERIFY of a range crossing the end of the capacity writes the
    blocks that fit before reporting LOGICAL BLOCK ADDRESS OUT OF RANGE."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WAV + "test_write_and_verify_beyond_the_last_lba_is_lba_out_of_range_and_writes_nothing",
    )

    def _write_and_verify(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        fits = self.num_blocks - io.lba
        if 0 < fits < io.blocks and len(cmd.iov) == io.blocks * self.block_size:
            _write_blocks(self, io.lba, cmd.iov.read(0, fits * self.block_size))
        return super()._write_and_verify(cmd)


# --- ORWRITE ----------------------------------------------------------------------------------


class _OrwriteCombines:
    """Mixin (before RamDisk): ORWRITE that stores combine(old, new) in place of old OR
    new. Not a Handler itself, so the catalog does not list it."""

    @staticmethod
    def combine(old: int, new: int) -> int:
        raise NotImplementedError

    def handle(self, cmd: Command) -> Result:
        disk: RamDisk = self  # type: ignore[assignment]  # mixed into a RamDisk
        if cmd.opcode != Opcode.ORWRITE_16:
            return super().handle(cmd)  # type: ignore[misc]
        io = cdbs.decode_block(cmd.cdb)
        fits = _in_range(disk, io.lba, io.blocks) and io.blocks <= disk.max_transfer_blocks
        old = _read_blocks(disk, io.lba, io.blocks) if fits else b""
        result: Result = super().handle(cmd)  # type: ignore[misc]
        if result.status == Status.GOOD and old:
            _write_blocks(disk, io.lba, bytes(map(self.combine, old, cmd.iov.read())))
        return result


class OrwritePlainWrite(_OrwriteCombines, RamDisk):
    """Breaks: ORWRITE(16) stores the data-out as a plain WRITE would (no OR)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _ORW + "test_orwrite_stores_the_bitwise_or_of_the_medium_and_the_data_out",
        _ORW + "test_orwrite_at_the_last_lba_stores_the_or",
    )

    @staticmethod
    def combine(old: int, new: int) -> int:
        return new


class OrwriteAnd(_OrwriteCombines, RamDisk):
    """Breaks: ORWRITE(16) ANDs the data-out into the medium instead of ORing it."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _ORW + "test_orwrite_stores_the_bitwise_or_of_the_medium_and_the_data_out",
        _ORW + "test_orwrite_at_the_last_lba_stores_the_or",
    )

    @staticmethod
    def combine(old: int, new: int) -> int:
        return old & new


class OrwriteXor(_OrwriteCombines, RamDisk):
    """Breaks: ORWRITE(16) XORs the data-out into the medium (a toggle, not a set)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _ORW + "test_orwrite_stores_the_bitwise_or_of_the_medium_and_the_data_out",
    )

    @staticmethod
    def combine(old: int, new: int) -> int:
        return old ^ new


# --- WRITE ATOMIC -----------------------------------------------------------------------------


class _AtomicPage:
    """Mixin (before RamDisk): Block Limits with other ATOMIC ALIGNMENT / GRANULARITY
    values, not enforced. Not a Handler itself, so the catalog does not list it."""

    alignment: ClassVar[int] = 1
    granularity: ClassVar[int] = 1

    def _vpd_block_limits(self) -> bytes:
        page = bytearray(super()._vpd_block_limits())  # type: ignore[misc]
        maximum = _B0_ATOMIC.unpack_from(page, _B0_ATOMIC_AT)[0]
        _B0_ATOMIC.pack_into(page, _B0_ATOMIC_AT, maximum, self.alignment, self.granularity)
        return bytes(page)


class AtomicIgnoresMaximum(RamDisk):
    """Breaks: WRITE ATOMIC(16) accepts lengths above MAXIMUM ATOMIC TRANSFER LENGTH (up to
    MAXIMUM TRANSFER LENGTH) and writes them."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WA + "test_write_atomic_longer_than_the_maximum_atomic_transfer_length_is_invalid_"
        "field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.WRITE_ATOMIC_16:
            io = cdbs.decode_block(cmd.cdb)
            if self.max_atomic_transfer_blocks < io.blocks <= self.max_transfer_blocks:
                try:
                    self._check_range(io.lba, io.blocks)
                    check_data_out(cmd, io.blocks * self.block_size)
                except SenseError as err:
                    return _fail(self, err)
                _write_blocks(self, io.lba, cmd.iov.read())
                return Result.good()
        return super().handle(cmd)


class AtomicZeroMaximum(RamDisk):
    """Breaks: WRITE ATOMIC(16) is listed in REPORT SUPPORTED OPERATION CODES while the
    Block Limits page says MAXIMUM ATOMIC TRANSFER LENGTH 0 (not supported)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WA + "test_write_atomic_claimed_has_a_maximum_atomic_transfer_length_in_block_limits",
    )
    max_atomic_transfer_bytes: ClassVar[int] = 0


class AtomicUnenforcedAlignment(_AtomicPage, RamDisk):
    """Breaks: Block Limits reports ATOMIC ALIGNMENT 8, but WRITE ATOMIC(16) at any LBA is
    accepted and written."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WA + "test_write_atomic_at_a_misaligned_lba_is_invalid_field_in_cdb",
    )
    alignment: ClassVar[int] = 8


class AtomicUnenforcedGranularity(_AtomicPage, RamDisk):
    """Breaks: Block Limits reports ATOMIC TRANSFER LENGTH GRANULARITY 4, but WRITE
    ATOMIC(16) of any length is accepted and written."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WA + "test_write_atomic_length_not_a_multiple_of_the_granularity_is_invalid_field_"
        "in_cdb",
    )
    granularity: ClassVar[int] = 4


class AtomicBoundaryIgnored(RamDisk):
    """Breaks: WRITE ATOMIC(16) ignores the ATOMIC BOUNDARY field although MAXIMUM ATOMIC
    BOUNDARY SIZE is 0 (no boundaries), and writes."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _WA + "test_write_atomic_boundary_above_the_maximum_atomic_boundary_size_is_invalid_"
        "field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.WRITE_ATOMIC_16:
            cdb = bytearray(cmd.cdb)
            cdb[10:12] = b"\0\0"
            cmd = dataclasses.replace(cmd, cdb=bytes(cdb))
        return super().handle(cmd)
