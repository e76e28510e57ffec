"""Handlers that crash or hang, for tests/e2e/test_handler_crash.py. Each is the RAM disk
until its trigger. Triggers other than SetupReadAborts skip the first MiB, where the
kernel's partition scan reads while the LUN is set up, so they fire on a test's command.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from tcmu.handler import DeviceInfo, ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk

TRIGGER_OFFSET = 1 << 20  # bytes: the partition scan reads well below this
EXIT_STATUS = 3


class HangsOnRead(RamDisk):
    """read() beyond the first MiB never returns."""

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        if offset >= TRIGGER_OFFSET:
            while True:
                time.sleep(3600)
        super().read(offset, buf)


class HangsOnEveryRead(RamDisk):
    """Every read() never returns: the LUN hangs on the kernel's first READ at set-up."""

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        while True:
            time.sleep(3600)


class SegfaultsOnRead(RamDisk):
    """read() beyond the first MiB kills the process with SIGSEGV."""

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        if offset >= TRIGGER_OFFSET:
            os.kill(os.getpid(), signal.SIGSEGV)
        super().read(offset, buf)


class ExitsOnWrite(RamDisk):
    """The first write() exits the process with status EXIT_STATUS."""

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        sys.exit(EXIT_STATUS)


class FailsInInit(RamDisk):
    """Cannot start: its constructor raises."""

    def __init__(self, device: DeviceInfo, **options: Any) -> None:
        super().__init__(device, **options)
        raise RuntimeError("FailsInInit refuses to start (deliberately)")


class SetupReadAborts(RamDisk):
    """The first read() of all (the kernel's partition scan at set-up) aborts (SIGABRT)."""

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        os.abort()
