"""RamDisk: a BlockHandler over anonymous memory. Supports UNMAP (reads back zeroes).

Spec: "tcmu.handlers.ramdisk:RamDisk" (no options).
"""

from __future__ import annotations

import mmap
import platform

from tcmu.block import BlockHandler
from tcmu.handler import DeviceInfo, ScatterBuffer

# Python 3.11's mmap lacks MAP_NORESERVE; 0x4000 is its value on x86 and arm. Without it
# the kernel's overcommit check refuses a multi-TiB map (READ CAPACITY(10) saturation
# needs more than 2^32 blocks) although untouched pages are never allocated.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if platform.system() == "Linux" else 0)


class RamDisk(BlockHandler):
    """device.size bytes of private anonymous memory: untouched pages cost nothing and
    unmapped pages are returned to the kernel (MADV_DONTNEED reads back as zeroes)."""

    unmap_reads_zeroes = True

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        try:
            self._mem = mmap.mmap(-1, device.size, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
        except OSError as err:
            raise OSError(
                err.errno,
                f"{type(self).__name__}: cannot map {device.size} bytes of memory ({err.strerror});"
                " use a smaller dev_size or a FileDisk",
            ) from err
        self._view = memoryview(self._mem)

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        for view in buf.views:
            view[:] = self._view[offset : offset + len(view)]
            offset += len(view)

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        for view in buf.views:
            self._view[offset : offset + len(view)] = view
            offset += len(view)

    def flush(self) -> None:
        """Nothing to make durable."""

    def unmap(self, offset: int, length: int) -> None:
        end = offset + length
        first_page = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        last_page = end // mmap.PAGESIZE * mmap.PAGESIZE
        if first_page >= last_page:
            self._view[offset:end] = bytes(length)
            return
        self._view[offset:first_page] = bytes(first_page - offset)
        self._mem.madvise(mmap.MADV_DONTNEED, first_page, last_page - first_page)
        self._view[last_page:end] = bytes(end - last_page)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.unmap(offset, length)

    def close(self) -> None:
        self._view.release()
        self._mem.close()
