"""Deliberately broken handlers: each gets one SCSI behaviour wrong, so a suite that
passes against RamDisk must fail against it. Specs: "tcmu.handlers.faulty:<Class>".
"""

from __future__ import annotations

import dataclasses

from tcmu.block import BlockHandler
from tcmu.cdb import decode_block
from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Opcode, SenseKey, Status

_READS = {Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16}


def _sense_key(handler: BlockHandler, result: Result) -> int | None:
    if result.status != Status.CHECK_CONDITION:
        return None
    return result.sense[1 if handler.descriptor_sense else 2] & 0x0F


class WrongSenseOnOutOfRange(RamDisk):
    """Breaks: an LBA beyond capacity gets INVALID FIELD IN CDB (24/00), not 21/00."""

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if result.sense == SenseError.lba_out_of_range().sense(self.descriptor_sense):
            return Result.check_condition(SenseError.invalid_cdb().sense(self.descriptor_sense))
        return result


class CorruptRead(RamDisk):
    """Breaks: READ data-in has its first byte inverted (the medium itself is intact)."""

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode in _READS and result.status == Status.GOOD and result.read_len:
            cmd.iov.write(bytes([cmd.iov.read(0, 1)[0] ^ 0xFF]))
        return result


class ClaimsEverything(RamDisk):
    """Breaks: an unsupported opcode gets GOOD instead of INVALID COMMAND OPERATION CODE."""

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if result.sense == SenseError.invalid_opcode().sense(self.descriptor_sense):
            return Result.good()
        return result


class IgnoresDSense(RamDisk):
    """Breaks: sense stays in fixed format after MODE SELECT sets D_SENSE (which MODE
    SENSE then reports as set)."""

    @property
    def descriptor_sense(self) -> bool:
        return False


class WritesOnMiscompare(RamDisk):
    """Breaks: COMPARE AND WRITE reports MISCOMPARE but stores the write data anyway
    (the lost update the command exists to prevent)."""

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.COMPARE_AND_WRITE and _sense_key(self, result) == (
            SenseKey.MISCOMPARE
        ):
            io = decode_block(cmd.cdb)
            length = io.blocks * self.block_size
            data = memoryview(bytearray(cmd.iov.read(length, length)))
            self.write(io.lba * self.block_size, ScatterBuffer([data]))
        return result


def _patch(cmd: Command, result: Result, offset: int, data: bytes) -> Result:
    """Overwrite data-in bytes, whether the result carries them or the iovecs do."""
    if result.data is not None:
        patched = result.data[:offset] + data + result.data[offset + len(data) :]
        return dataclasses.replace(result, data=patched)
    cmd.iov.write(data, offset)
    return result


def _data_in(cmd: Command, result: Result, length: int) -> bytes:
    return result.data[:length] if result.data is not None else cmd.iov.read(0, length)


class CapacityOffByOne(RamDisk):
    """Breaks: READ CAPACITY reports the number of blocks as the last LBA (one block
    too many), the classic off-by-one; reads of that phantom block fail 21/00."""

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        is_rc16 = cmd.opcode == Opcode.SERVICE_ACTION_IN_16 and cmd.cdb[1] & 0x1F == 0x10
        if result.status == Status.GOOD and (cmd.opcode == Opcode.READ_CAPACITY_10 or is_rc16):
            size = 4 if cmd.opcode == Opcode.READ_CAPACITY_10 else 8
            last = int.from_bytes(_data_in(cmd, result, size), "big")
            return _patch(cmd, result, 0, (last + 1).to_bytes(size, "big"))
        return result


class NotADisk(RamDisk):
    """Breaks: standard INQUIRY says peripheral device type 5 (CD/DVD), not 0."""

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.INQUIRY and not cmd.cdb[1] & 1 and result.status == Status.GOOD:
            return _patch(cmd, result, 0, bytes([0x05]))
        return result


class NeverReady(RamDisk):
    """Breaks: TEST UNIT READY answers NOT READY, LOGICAL UNIT NOT READY (04/00)."""

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.TEST_UNIT_READY:
            return Result.check_condition(
                SenseError(SenseKey.NOT_READY, 0x0400).sense(self.descriptor_sense))
        return super().handle(cmd)
