"""A handler for tests/e2e/test_durability.py, in a module of its own: the guest imports
it to serve a LUN, and a test module would bring pytest and the host harness along."""

from __future__ import annotations

from typing import Any

from tcmu.handler import DeviceInfo, ScatterBuffer
from tcmu.handlers.filedisk import FileDisk


class WriteBackCacheDisk(FileDisk):
    """A FileDisk that keeps written blocks in memory until a flush (SYNCHRONIZE CACHE,
    FUA): what a volatile write cache may do, and what loses data when its process is
    killed."""

    def __init__(self, device: DeviceInfo, **options: Any) -> None:
        super().__init__(device, **options)
        self._pending: dict[int, bytes] = {}  # block-aligned offset -> one block

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        data = buf.read()
        for pos in range(0, len(data), self.block_size):
            self._pending[offset + pos] = data[pos : pos + self.block_size]

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        super().read(offset, buf)
        for pos in range(0, len(buf), self.block_size):
            block = self._pending.get(offset + pos)
            if block is not None:
                buf.write(block, pos)

    def flush(self) -> None:
        for offset, block in sorted(self._pending.items()):
            super().write(offset, ScatterBuffer([memoryview(bytearray(block))]))
        self._pending.clear()
        super().flush()
