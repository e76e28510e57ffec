"""Broken handlers for the fuzz suite (suites/fuzz/test_fuzz_cdbs.py): the reference RAM
disk with one bug each that only unusual input reaches: a reserved opcode, a mutated
WRITE SAME or UNMAP, an unsupported command's sense.

The fuzz tests run a fixed number of examples from a fixed seed (--tcmu-fuzz-seed 0 by
default), so whether they reach each bug is deterministic; the faulty-handler matrix
(tests/test_faulty_catalog.py) runs them with the default example count.
"""

from __future__ import annotations

from typing import ClassVar

from tcmu.cdb import decode_block
from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status

_FUZZ = "suites/fuzz/test_fuzz_cdbs.py::"
_WRITE_SAME = (Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16)


def _reserved_or_vendor(opcode: int) -> bool:
    """Group 3 (60h-7Fh: reserved, and the variable-length 7Fh this handler lacks) and
    the vendor-specific groups 6 and 7 (C0h-FFh), SPC-4 4.2.5.1."""
    return 0x60 <= opcode <= 0x7F or opcode >= 0xC0


class RaisesOnReservedOpcode(RamDisk):
    """Breaks: a CDB with a reserved or vendor-specific opcode (60h-7Fh, C0h-FFh) makes
    handle() raise an uncaught exception (an IndexError from a command-table lookup),
    which the runtime answers with HARDWARE ERROR 44/00, instead of INVALID COMMAND
    OPERATION CODE (20/00)."""

    caught_by: ClassVar[tuple[str, ...]] = (_FUZZ + "test_random_cdbs_of_every_opcode",)

    def handle(self, cmd: Command) -> Result:
        if _reserved_or_vendor(cmd.opcode):
            return [super().handle(cmd)][cmd.opcode]  # IndexError: a table of one
        return super().handle(cmd)


class ShortSenseLengthOnUnsupportedOpcode(RamDisk):
    """Breaks: the fixed-format sense of an unsupported opcode (ILLEGAL REQUEST 20/00)
    has ADDITIONAL SENSE LENGTH 0, so the ASC/ASCQ it carries lie outside the sense data
    it declares (SPC-4 4.5.3: at least 10 for the bytes through ASCQ and the sense key
    specific field)."""

    caught_by: ClassVar[tuple[str, ...]] = (_FUZZ + "test_random_cdbs_of_every_opcode",)

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if result.status == Status.CHECK_CONDITION and _is_invalid_opcode(result.sense):
            sense = bytearray(SenseError.invalid_opcode().sense(False))
            sense[7] = 0
            return Result.check_condition(bytes(sense))
        return result


def _is_invalid_opcode(sense: bytes) -> bool:
    descriptor = sense[0] & 0x7F in (0x72, 0x73)
    key, asc = (sense[1], sense[2]) if descriptor else (sense[2], sense[12])
    return key & 0x0F == SenseKey.ILLEGAL_REQUEST and asc == Asc.INVALID_COMMAND_OPERATION_CODE >> 8


class WriteSameWritesPastItsRange(RamDisk):
    """Breaks: a WRITE SAME(10/16) that succeeds also writes its block to the LBA just
    past its range (an off-by-one in the block loop)."""

    caught_by: ClassVar[tuple[str, ...]] = (_FUZZ + "test_mutated_valid_cdbs",)

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode in _WRITE_SAME and result.status == Status.GOOD:
            io = decode_block(cmd.cdb)
            past = io.lba + io.blocks
            block = cmd.iov.read(0, self.block_size)
            if io.blocks and past < self.num_blocks and len(block) == self.block_size:
                self.write(past * self.block_size, ScatterBuffer([memoryview(bytearray(block))]))
        return result


class UnmapDeallocatesPastItsExtents(RamDisk):
    """Breaks: an UNMAP that succeeds also deallocates the block after each of its
    extents (the descriptor's NUMBER OF LOGICAL BLOCKS taken as an inclusive end)."""

    caught_by: ClassVar[tuple[str, ...]] = (_FUZZ + "test_mutated_valid_cdbs",)

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.UNMAP and result.status == Status.GOOD:
            params = cmd.iov.read()
            end = min(len(params), 8 + int.from_bytes(params[2:4], "big"))
            for pos in range(8, end - 15, 16):
                lba = int.from_bytes(params[pos : pos + 8], "big")
                past = lba + int.from_bytes(params[pos + 8 : pos + 12], "big")
                if past < self.num_blocks:
                    self.unmap(past * self.block_size, self.block_size)
        return result
