"""FileDisk: a BlockHandler over a (sparse) file, zero-copy through preadv/pwritev.

Spec: "tcmu.handlers.filedisk:FileDisk path=/var/tmp/disk.img" (the declared option
`path`); without it the file is dev_config after the subtype ("<subtype>/<path>").
A missing or short file is created or extended (sparsely) to the device size.

FdDisk, the storage over any file descriptor, is shared with RamDisk (a memfd): UNMAP
punches holes, GET LBA STATUS reads the holes back with SEEK_DATA/SEEK_HOLE.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar

from tcmu.block import BlockHandler
from tcmu.handler import DeviceInfo, Reconfig, ReconfigRefused, ScatterBuffer
from tcmu.options import Option

_IOV_MAX = os.sysconf("SC_IOV_MAX")
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc fallocate(2) (os.posix_fallocate cannot punch holes), or None."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


def _advance(views: list[memoryview], done: int) -> list[memoryview]:
    """The views still to transfer after `done` bytes went through."""
    index = 0
    while index < len(views) and done >= len(views[index]):
        done -= len(views[index])
        index += 1
    rest = views[index:]
    if rest and done:
        rest[0] = rest[0][done:]
    return rest


def _seek(fd: int, pos: int, whence: int) -> int | None:
    """lseek SEEK_DATA/SEEK_HOLE; None when there is no data (or no file) at or after pos."""
    try:
        return os.lseek(fd, pos, whence)
    except OSError as err:
        if err.errno == errno.ENXIO:
            return None
        raise


def _hole_run(fd: int, pos: int, end: int, block_size: int) -> tuple[int, int]:
    """The first run of whole blocks lying in a hole at or after pos (block aligned), as
    (start, stop); (end, end) when there is none before end. Past the end of the file
    counts as a hole: FdDisk reads it as zeroes."""
    while pos < end:
        hole = _seek(fd, pos, os.SEEK_HOLE)
        if hole is None:  # pos is at or past the end of the file
            hole = pos
        start = -(-hole // block_size) * block_size
        if start >= end:
            break
        data = _seek(fd, hole, os.SEEK_DATA)
        stop = end if data is None else min(data // block_size * block_size, end)
        if stop > start:
            return start, stop
        assert data is not None  # a hole to the end of the file always holds a block
        pos = data
    return end, end


def fd_extents(
    fd: int, offset: int, length: int, block_size: int, limit: int
) -> list[tuple[int, int, bool]]:
    """(offset, length, mapped) extents of whole blocks from offset on, alternating; a
    block is unmapped only if it lies entirely in a hole (so it reads back as zeroes)."""
    end = offset + length
    extents: list[tuple[int, int, bool]] = []
    pos = offset
    while pos < end and len(extents) < limit:
        start, stop = _hole_run(fd, pos, end, block_size)
        if start > pos:
            extents.append((pos, start - pos, True))
            pos = start
        else:
            extents.append((pos, stop - pos, False))
            pos = stop
    return extents


class FdDisk(BlockHandler):
    """Storage over the file descriptor self._fd (set by the subclass)."""

    unmap_reads_zeroes = True  # punched holes and the zero-writing fallback read as zeroes

    def __init__(self, device: DeviceInfo, **options: Any) -> None:
        super().__init__(device, **options)
        self._fd = -1
        self._can_punch = True
        self._label = type(self).__name__  # names the storage in error messages

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        views = [v for v in buf.views if len(v)]
        while views:
            done = os.preadv(self._fd, views[:_IOV_MAX], offset)
            if done == 0:  # past the end of a file someone shrank: reads as zeroes
                for view in views:
                    view[:] = bytes(len(view))
                return
            offset += done
            views = _advance(views, done)

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        views = [v for v in buf.views if len(v)]
        while views:
            done = os.pwritev(self._fd, views[:_IOV_MAX], offset)
            if done == 0:
                raise OSError(errno.EIO, f"{self._label}: pwritev stored nothing at {offset}")
            offset += done
            views = _advance(views, done)

    def flush(self) -> None:
        os.fsync(self._fd)

    def unmap(self, offset: int, length: int) -> None:
        fallocate = _fallocate() if self._can_punch else None
        if fallocate is not None:
            mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
            if fallocate(self._fd, mode, offset, length) == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(err, f"{self._label}: fallocate punch hole: {os.strerror(err)}")
        self._can_punch = False  # the file system cannot punch: write zeroes from now on
        self.write_zeroes(offset, length)

    def mapped_extents(self, offset: int, length: int, limit: int) -> list[tuple[int, int, bool]]:
        try:
            return fd_extents(self._fd, offset, length, self.block_size, limit)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            return [(offset, length, True)]  # no SEEK_HOLE here: "mapped" is always true


class FileDisk(FdDisk):
    """A (sparse) file; FUA writes and SYNCHRONIZE CACHE reach stable storage (fsync)."""

    # Several blocks per COMPARE AND WRITE (RamDisk keeps LIO's 1), so that the suites
    # exercise multi-block compares and miscompare offsets past the first block.
    max_compare_and_write_blocks: ClassVar[int] = 16
    options = (
        Option("path", str, None, "the backing file, created or extended (sparsely) to the "
               "device size; default: dev_config after the subtype"),
    )
    path: str

    def __init__(self, device: DeviceInfo, **options: Any) -> None:
        super().__init__(device, **options)
        self.path = self.path or device.cfgstring
        if not self.path:
            raise ValueError(
                f"{type(self).__name__} needs a backing file: give path=FILE or "
                f"dev_config '<subtype>/FILE' (got {device.config!r})"
            )
        self._label = self.path

    def open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size < self.device.size:
                os.ftruncate(fd, self.device.size)  # sparse: no blocks allocated
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def reconfig(self, change: Reconfig) -> None:
        """A larger dev_size extends a shorter file (sparsely); the file is never cut
        (it may hold data someone wants back). The backing file cannot change while
        served: a dev_config naming another file is refused."""
        follows_config = self.path == change.old.cfgstring  # no path= option given
        if follows_config and change.new.cfgstring != self.path:
            raise ReconfigRefused(f"{self.path} is being served; delete and recreate the "
                                  f"backstore to serve {change.new.cfgstring}")
        if change.size_changed and self._fd >= 0:
            try:
                if os.fstat(self._fd).st_size < change.new.size:
                    os.ftruncate(self._fd, change.new.size)
            except OSError as err:
                raise ReconfigRefused(f"cannot extend {self.path} to {change.new.size} "
                                      f"bytes: {err.strerror}") from err

    def prefetch(self, offset: int, length: int) -> None:
        os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_WILLNEED)
