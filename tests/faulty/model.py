"""Broken handlers that only a sequence of commands exposes (suites/sbc/test_model.py)."""

from __future__ import annotations

from typing import ClassVar

from tcmu.cdb import decode_block
from tcmu.handler import Command, Result
from tcmu.handlers.ramdisk import RamDisk
from tcmu_harness.scsi.constants import Opcode, Status

_READS = {Opcode.READ_10, Opcode.READ_16}
_WRITES = {Opcode.WRITE_10, Opcode.WRITE_16}


class StaleReadCache(RamDisk):
    """Breaks: a read cache that WRITE invalidates but WRITE SAME, UNMAP and COMPARE AND
    WRITE do not, so a later READ returns the old data."""

    caught_by: ClassVar[tuple[str, ...]] = (
        "suites/sbc/test_model.py::test_random_command_sequences_match_the_model",
    )

    def __init__(self, *args: object, **options: str) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self._cache: dict[int, bytes] = {}

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _READS:
            io = decode_block(cmd.cdb)
            cached = [self._cache.get(lba) for lba in range(io.lba, io.lba + io.blocks)]
            if io.blocks and all(block is not None for block in cached):
                cmd.iov.write(b"".join(cached))  # type: ignore[arg-type]
                return Result.good(read_len=io.blocks * self.block_size)
        result = super().handle(cmd)
        if result.status != Status.GOOD:
            return result
        if cmd.opcode in _READS:
            io = decode_block(cmd.cdb)
            data = cmd.iov.read(0, io.blocks * self.block_size)
            for i in range(io.blocks):
                self._cache[io.lba + i] = data[i * self.block_size : (i + 1) * self.block_size]
        elif cmd.opcode in _WRITES:
            io = decode_block(cmd.cdb)
            for lba in range(io.lba, io.lba + io.blocks):
                self._cache.pop(lba, None)
        return result
