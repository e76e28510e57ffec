"""Handlers for tests/e2e/test_handler_api.py: a RAM disk whose reads of the first
8 blocks take 3 s (a slow back-end region), on a worker pool or not."""

from __future__ import annotations

import time

from tcmu.handler import ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk

SLOW_BLOCKS = 8
SLOW_SECONDS = 3.0


class SlowStartRamDisk(RamDisk):
    """Reads of LBA 0-7 sleep SLOW_SECONDS first; everything else is RamDisk."""

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        if offset < SLOW_BLOCKS * self.block_size:
            time.sleep(SLOW_SECONDS)
        super().read(offset, buf)


class PooledSlowStartRamDisk(SlowStartRamDisk):
    """The same storage, served by a worker pool of four."""

    workers = 4
