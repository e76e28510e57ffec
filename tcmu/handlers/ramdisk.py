"""RamDisk: a BlockHandler over memory (a memfd). Supports UNMAP (reads back zeroes) and
GET LBA STATUS.

Spec: "tcmu.handlers.ramdisk:RamDisk" (options: those of BlockHandler).
"""

from __future__ import annotations

import os
from typing import Any

from tcmu.handler import DeviceInfo, Reconfig, ReconfigRefused
from tcmu.handlers.filedisk import FdDisk


class RamDisk(FdDisk):
    """device.size bytes of a memfd (tmpfs memory), read and written with preadv/pwritev.

    Memory is taken only by what is written: the file starts as one hole, reads of a
    hole do not allocate (unlike faults on a shared mapping), and UNMAP punches the pages
    out again. So a multi-TiB LUN costs nothing until written, and SEEK_DATA/SEEK_HOLE
    tell GET LBA STATUS exactly which blocks are deallocated.
    """

    def __init__(self, device: DeviceInfo, **options: Any) -> None:
        super().__init__(device, **options)
        fd = os.memfd_create(type(self).__name__, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, device.size)
        except OSError as err:
            os.close(fd)
            raise OSError(
                err.errno,
                f"{type(self).__name__}: cannot make {device.size} bytes of memory "
                f"({err.strerror}); use a smaller dev_size or a FileDisk",
            ) from err
        self._fd = fd

    def flush(self) -> None:
        """Nothing to make durable."""

    def reconfig(self, change: Reconfig) -> None:
        """A new dev_size resizes the memfd (shrinking drops the blocks past the end)."""
        if change.size_changed:
            try:
                os.ftruncate(self._fd, change.new.size)
            except OSError as err:
                raise ReconfigRefused(f"cannot resize to {change.new.size} bytes: "
                                      f"{err.strerror}") from err

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
