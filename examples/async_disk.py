"""Async storage: a disk behind a slow store (a network object store, say), written
with `async def`. The base awaits read() and write() on the handler's event loop and
serves commands concurrently (the `workers` option: up to 16 in flight by default), so
one slow command does not hold up the others, and completions come out of order.
Commands on the same blocks still keep their order (a READ after a WRITE sees it).

    pytest suites --tcmu-handler "examples/async_disk.py:AsyncDisk latency_ms=5"
"""

import asyncio

from tcmu.block import BlockHandler
from tcmu.handler import DeviceInfo, ScatterBuffer
from tcmu.options import Option


class AsyncDisk(BlockHandler):
    """Blocks in a dict behind a store that answers after `latency_ms`."""

    options = (Option("latency_ms", float, 20.0, "how long the store takes to answer",
                      min=0),)
    latency_ms: float

    def __init__(self, device: DeviceInfo, **options: object) -> None:
        super().__init__(device, **options)
        self.blocks: dict[int, bytes] = {}

    async def read(self, offset: int, buf: ScatterBuffer) -> None:
        await asyncio.sleep(self.latency_ms / 1000)  # the round trip to the store
        first, count = offset // self.block_size, len(buf) // self.block_size
        zero = bytes(self.block_size)
        buf.write(b"".join(self.blocks.get(lba, zero) for lba in range(first, first + count)))

    async def write(self, offset: int, buf: ScatterBuffer) -> None:
        await asyncio.sleep(self.latency_ms / 1000)
        data, bs = buf.read(), self.block_size
        for i in range(0, len(data), bs):
            self.blocks[(offset + i) // bs] = data[i : i + bs]
