"""Broken handlers for MODE SENSE/SELECT, READ CAPACITY and START STOP UNIT
(suites/spc/test_mode_sense_select.py, suites/sbc/test_read_capacity.py,
suites/spc/test_start_stop_unit.py): each gets one thing wrong the way a real handler
plausibly would, and `caught_by` names the suite tests that must fail against it.
Load one as --tcmu-handler tests/faulty/mode_capacity.py:<Class>.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import ClassVar

from tcmu.block import BlockHandler
from tcmu.handler import Command, Result
from tcmu.handlers.ramdisk import RamDisk
from tcmu_harness.scsi.constants import Opcode, Status

_MODE = "suites/spc/test_mode_sense_select.py::"
_RC = "suites/sbc/test_read_capacity.py::"
_SSU = "suites/spc/test_start_stop_unit.py::"

_DBD = 0x08  # MODE SENSE byte 1
_PC_CHANGEABLE = 1
_PC_DEFAULT = 2


def _with_cdb(cmd: Command, cdb: bytearray) -> Command:
    """The same command with another CDB (what a handler that misreads a field sees)."""
    return dataclasses.replace(cmd, cdb=bytes(cdb))


def _pc(cmd: Command) -> int:
    return cmd.cdb[2] >> 6


def _set_pc(cdb: bytearray, pc: int) -> None:
    cdb[2] = (cdb[2] & 0x3F) | pc << 6


def _rewrite_data(result: Result, change: Callable[[bytearray], None]) -> Result:
    """The result with its data-in bytes changed (the runtime copies `data` to the iovecs)."""
    if result.status != Status.GOOD or result.data is None:
        return result
    data = bytearray(result.data)
    change(data)
    return dataclasses.replace(result, data=bytes(data))


# --- MODE SENSE ------------------------------------------------------------------------------


class ModeSenseIgnoresDbd(RamDisk):
    """Breaks: MODE SENSE returns the block descriptor even with DBD=1 (the flag is never
    read)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_mode_sense_dbd_returns_no_block_descriptor",
    )

    def _mode_sense(self, cmd: Command) -> Result:
        cdb = bytearray(cmd.cdb)
        cdb[1] &= ~_DBD & 0xFF
        return super()._mode_sense(_with_cdb(cmd, cdb))


class ModeSenseIgnoresAllocationLength(RamDisk):
    """Breaks: MODE SENSE returns the whole answer whatever ALLOCATION LENGTH says (it fits
    the buffer, so nothing stops it)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_mode_sense_allocation_length_truncates_the_answer",
    )

    def _mode_sense(self, cmd: Command) -> Result:
        cdb = bytearray(cmd.cdb)
        if cmd.opcode == Opcode.MODE_SENSE_6:
            cdb[4] = 0xFF
        else:
            cdb[7:9] = b"\xff\xff"
        return super()._mode_sense(_with_cdb(cmd, cdb))


class ModeDataLengthCountsItself(RamDisk):
    """Breaks: MODE DATA LENGTH counts the length field itself (one too many in MODE
    SENSE(6), two in MODE SENSE(10))."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_mode_data_length_counts_every_byte_after_itself",
    )

    def _mode_sense(self, cmd: Command) -> Result:
        def grow(data: bytearray) -> None:
            if cmd.opcode == Opcode.MODE_SENSE_6 and data:
                data[0] = (data[0] + 1) & 0xFF
            elif len(data) >= 2:
                data[0:2] = struct.pack(">H", (struct.unpack_from(">H", data)[0] + 2) & 0xFFFF)

        return _rewrite_data(super()._mode_sense(cmd), grow)


class ChangeableValuesAreCurrentValues(RamDisk):
    """Breaks: PC=01b (changeable values) returns the current values instead of the mask
    of changeable bits."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_changeable_values_mark_only_bits_mode_select_can_change",
    )

    def _mode_sense(self, cmd: Command) -> Result:
        if _pc(cmd) == _PC_CHANGEABLE:
            cdb = bytearray(cmd.cdb)
            _set_pc(cdb, 0)
            cmd = _with_cdb(cmd, cdb)
        return super()._mode_sense(cmd)


class DefaultValuesFollowModeSelect(RamDisk):
    """Breaks: PC=10b (default values) returns the current values, so MODE SELECT seems to
    change the defaults."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_default_values_do_not_follow_mode_select",
    )

    def _mode_sense(self, cmd: Command) -> Result:
        if _pc(cmd) == _PC_DEFAULT:
            cdb = bytearray(cmd.cdb)
            _set_pc(cdb, 0)
            cmd = _with_cdb(cmd, cdb)
        return super()._mode_sense(cmd)


class AllPagesOmitsControlPage(RamDisk):
    """Breaks: page 3Fh (all pages) leaves out the Control mode page (0Ah), which is still
    served when asked for alone."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_mode_sense_one_page_returns_the_page_of_all_pages",
    )

    def _mode_sense(self, cmd: Command) -> Result:
        if cmd.cdb[2] & 0x3F != 0x3F:
            return super()._mode_sense(cmd)
        control = self._mode_current.pop(0x0A)
        try:
            return super()._mode_sense(cmd)
        finally:
            self._mode_current[0x0A] = control


class ShortBlockDescriptorWraps(RamDisk):
    """Breaks: the short block descriptor's 24-bit NUMBER OF LOGICAL BLOCKS keeps the low
    bits of a larger count instead of saturating at FFFFFFh."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_short_block_descriptor_saturates_the_block_count_at_ffffffh",
    )

    def _block_descriptor(self, long_lba: bool) -> bytes:
        data = bytearray(super()._block_descriptor(long_lba))
        if not long_lba:
            data[1:4] = (self.num_blocks & 0xFFFFFF).to_bytes(3, "big")
        return bytes(data)


# --- MODE SELECT -----------------------------------------------------------------------------


class ModeSelectAppliesPagesBeforeABadOne(RamDisk):
    """Breaks: MODE SELECT applies each page as it parses it, so the pages before an
    invalid one stay changed although the command fails."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_mode_select_applies_no_page_when_a_later_page_is_invalid",
    )

    def _parse_mode_pages(self, data: bytes, pos: int) -> dict[int, bytes]:
        updates: dict[int, bytes] = {}
        while pos + 2 <= len(data):
            end = pos + 2 + data[pos + 1]
            page = super()._parse_mode_pages(data[:end], pos)  # this page alone
            for code, new in page.items():
                self._mode_current[code][2:] = new[2:]
            updates.update(page)
            pos = end
        return updates


class ModeSelectChangesAnyBit(RamDisk):
    """Breaks: MODE SELECT stores any bit it is given, not only those the changeable values
    mark (no check against the mask)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _MODE + "test_mode_select_of_a_non_changeable_bit_is_refused_and_changes_nothing",
    )

    def _mode_select(self, cmd: Command) -> Result:
        masks = self._mode_changeable
        self._mode_changeable = {code: b"\xff" * len(page) for code, page in masks.items()}
        try:
            return super()._mode_select(cmd)
        finally:
            self._mode_changeable = masks


# --- READ CAPACITY -------------------------------------------------------------------------


class ReadCapacity16ReportsBlockCount(RamDisk):
    """Breaks: READ CAPACITY(16) returns the number of blocks where the last LBA belongs
    (READ CAPACITY(10) is right)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RC + "test_read_capacity_16_reports_the_last_lba_and_block_length",
    )

    def _read_capacity_16(self, cmd: Command) -> Result:
        def bump(data: bytearray) -> None:
            if len(data) >= 8:
                data[0:8] = struct.pack(">Q", struct.unpack_from(">Q", data)[0] + 1)

        return _rewrite_data(super()._read_capacity_16(cmd), bump)


class ReadCapacity10Truncates(RamDisk):
    """Breaks: READ CAPACITY(10) returns the low 32 bits of a last LBA beyond 2^32 instead
    of FFFFFFFFh."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RC + "test_read_capacity_10_saturates_at_ffffffffh_beyond_2_32_blocks",
    )

    def _read_capacity_10(self, cmd: Command) -> Result:
        def low_bits(data: bytearray) -> None:
            if len(data) >= 4:
                data[0:4] = ((self.num_blocks - 1) & 0xFFFFFFFF).to_bytes(4, "big")

        return _rewrite_data(super()._read_capacity_10(cmd), low_bits)


class ReadCapacity16IgnoresAllocationLength(RamDisk):
    """Breaks: READ CAPACITY(16) returns all 32 bytes whatever ALLOCATION LENGTH says."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RC + "test_read_capacity_16_allocation_length_truncates",
    )

    def _read_capacity_16(self, cmd: Command) -> Result:
        cdb = bytearray(cmd.cdb)
        cdb[10:14] = (32).to_bytes(4, "big")
        return super()._read_capacity_16(_with_cdb(cmd, cdb))


class LbprzOnlyInTheVpdPage(RamDisk):
    """Breaks: READ CAPACITY(16) leaves LBPRZ 0 although the Logical Block Provisioning
    VPD page says unmapped blocks read zeroes (LBPRZ 001b)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RC + "test_lbprz_agrees_with_the_logical_block_provisioning_vpd_page",
    )

    def _read_capacity_16(self, cmd: Command) -> Result:
        def clear_lbprz(data: bytearray) -> None:
            if len(data) > 14:
                data[14] &= ~0x40 & 0xFF

        return _rewrite_data(super()._read_capacity_16(cmd), clear_lbprz)


class LbpmeWithoutUnmap(RamDisk):
    """Breaks: READ CAPACITY(16) sets LBPME for a device that offers neither UNMAP nor
    WRITE SAME with the UNMAP bit (a handler that copied a thin-provisioned template)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RC + "test_lbpme_is_set_iff_the_device_offers_a_way_to_unmap",
    )

    # BlockHandler's unmap() (not implemented): no UNMAP, no WRITE SAME UNMAP bit.
    unmap = BlockHandler.unmap

    def _read_capacity_16(self, cmd: Command) -> Result:
        def set_lbpme(data: bytearray) -> None:
            if len(data) > 14:
                data[14] |= 0x80

        return _rewrite_data(super()._read_capacity_16(cmd), set_lbpme)


class PhysicalBlockExponentIgnored(RamDisk):
    """Breaks: READ CAPACITY(16) always reports LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
    0, whatever physical_block_exponent the device was given."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RC + "test_logical_blocks_per_physical_block_exponent_3",
    )

    def _read_capacity_16(self, cmd: Command) -> Result:
        def clear(data: bytearray) -> None:
            if len(data) > 13:
                data[13] &= 0xF0

        return _rewrite_data(super()._read_capacity_16(cmd), clear)


# --- START STOP UNIT -----------------------------------------------------------------------


class StopDoesNotStop(RamDisk):
    """Breaks: START STOP UNIT with START=0 answers GOOD but the unit stays ready."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SSU + "test_stopped_unit_answers_test_unit_ready_and_medium_access_not_ready",
    )

    def _start_stop(self, cmd: Command) -> Result:
        result = super()._start_stop(cmd)
        self._stopped = False
        return result


class StoppedUnitRefusesEverything(RamDisk):
    """Breaks: a stopped unit answers NOT READY to every command, INQUIRY, READ CAPACITY
    and MODE SENSE included (they do not need the medium)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SSU + "test_stopped_unit_still_serves_inquiry_read_capacity_and_mode_sense",
    )

    def handle(self, cmd: Command) -> Result:
        if self._stopped and cmd.opcode in (Opcode.INQUIRY, Opcode.READ_CAPACITY_10,
                                            Opcode.MODE_SENSE_6, Opcode.MODE_SENSE_10):
            cdb = bytearray(cmd.cdb)
            cdb[0] = Opcode.TEST_UNIT_READY  # answered as a medium access would be
            return super().handle(_with_cdb(cmd, cdb[:6]))
        return super().handle(cmd)


class StartStopAcceptsLoej(RamDisk):
    """Breaks: START STOP UNIT with LOEJ=1 on a fixed medium answers GOOD instead of
    INVALID FIELD IN CDB."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _SSU + "test_start_stop_unit_loej_on_a_fixed_medium_is_invalid_field_in_cdb",
    )

    def _start_stop(self, cmd: Command) -> Result:
        cdb = bytearray(cmd.cdb)
        cdb[4] &= ~0x02 & 0xFF
        return super()._start_stop(_with_cdb(cmd, cdb))
