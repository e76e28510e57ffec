"""Handlers for the kernel suite: the RAM disk plus vendor-specific commands (opcodes
0xC0-0xDF, SPC-4 group 6: 10-byte CDBs that no initiator sends on its own), each of
which makes the handler do one thing to the ring that the kernel must then handle:

- SLOW_OPCODE: answers GOOD only after `delay_s` seconds (in the ring thread, so the
  ring waits with it): a handler slower than attrib/cmd_time_out;
- SHORT_READ_OPCODE: data-in of SHORT_READ_BYTES bytes whatever the buffer, reported
  with READ_LEN: the initiator must see the rest as a residual;
- SENSE_OPCODE: CHECK CONDITION with ODD_SENSE, sense bytes no kernel would make up.
- SENSE_WITH_DATA_OPCODE: CHECK CONDITION with ODD_SENSE and, with READ_LEN, the
  SHORT_READ_BYTES of SHORT_READ_DATA as data-in (sense and data together);
- UNKNOWN_OP_OPCODE: handed back with TCMU_UFLAG_UNKNOWN_OP (Result.unknown_op);
- RECORD_OPCODE (data-out, every CDB bit settable) keeps what the ring entry carried:
  its CDB bytes, its iovecs' count and lengths and a SHA-256 of the data; RECORDED_OPCODE
  (data-in) hands that record back (RECORD_FORMAT), so a test can compare them with
  what the initiator sent;
- GrowOnlyDisk: refuses a RECONFIG that shrinks the device (ReconfigRefused: the runtime
  answers -EINVAL when the kernel waits for a reply), grows as the RAM disk does;
- HOLD_OPCODE: held in the ring (deferred) and completed later from another thread,
  in reverse arrival order, with data-in made from a tag in the CDB (HoldingDisk):
  commands in flight for as long as a test needs, completed out of order;
- KEEP_OPCODE (KeepBufDisk): data-in made from a tag, completed at once, with
  Result(keep_buf=True) when CDB byte 6 bit 0 is set: the kernel keeps its data-area
  blocks until action/free_kept_buf; KEPT_SUM_OPCODE answers the SHA-256 of a kept
  command's buffer as the handler still sees it; CAPS_OPCODE the mailbox flags
  (Handler.ring_caps); HELD_IDS_OPCODE the number and cmd_ids (u8, then u16 each)
  of the HOLD commands held now.

The kernel's own probe of the disk (INQUIRY, READ CAPACITY, partition scan) never
sends these, so the LUN sets up as a plain RAM disk.

    spec: "suites/kernel/kernel_handlers.py:SlowDisk delay_s=6"
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from typing import Any

from tcmu.block import BlockHandler, scsi_command
from tcmu.handler import Command, Reconfig, ReconfigRefused, Result, ScatterBuffer
from tcmu.handlers.filedisk import FileDisk
from tcmu.handlers.ramdisk import RamDisk
from tcmu.options import Option
from tcmu_harness.scsi.constants import Status

SLOW_OPCODE = 0xC1
SHORT_READ_OPCODE = 0xC2
SENSE_OPCODE = 0xC3
SENSE_WITH_DATA_OPCODE = 0xC5
UNKNOWN_OP_OPCODE = 0xC6
RECORD_OPCODE = 0xC7
RECORDED_OPCODE = 0xC8
# the last RECORD command: its 10 CDB bytes, iovec count, total length, SHA-256 of the data
RECORD_FORMAT = ">10sII32s"
_NO_FIELDS = "00 00 00 00 00 00 00 00 00"  # a 10-byte CDB with nothing settable

SHORT_READ_BYTES = 100
SHORT_READ_DATA = bytes((i * 7 + 3) & 0xFF for i in range(SHORT_READ_BYTES))

# Fixed sense, current error, VALID, key MEDIUM ERROR (3), INFORMATION 0x01020304,
# ADDITIONAL SENSE LENGTH 14 (4 bytes more than the minimum 10), COMMAND-SPECIFIC
# INFORMATION 0xA1B2C3D4, ASC/ASCQ 11/05 (L-EC UNCORRECTABLE ERROR), FRU code 0x5A,
# sense-key specific bytes clear, then 4 vendor bytes.
ODD_SENSE = bytes([0xF0, 0x00, 0x03, 0x01, 0x02, 0x03, 0x04, 14,
                   0xA1, 0xB2, 0xC3, 0xD4, 0x11, 0x05, 0x5A, 0x00, 0x00, 0x00,
                   0xDE, 0xAD, 0xBE, 0xEF])


class KernelProbeDisk(RamDisk):
    """The RAM disk plus SHORT_READ_OPCODE and SENSE_OPCODE."""

    @scsi_command(SHORT_READ_OPCODE, usage=_NO_FIELDS)
    def short_read(self, cmd: Command) -> Result:
        return Result.good(SHORT_READ_DATA, read_len=SHORT_READ_BYTES)

    @scsi_command(SENSE_OPCODE, usage=_NO_FIELDS)
    def odd_sense(self, cmd: Command) -> Result:
        return Result(Status.CHECK_CONDITION, ODD_SENSE)

    @scsi_command(UNKNOWN_OP_OPCODE, usage=_NO_FIELDS)
    def unknown_op(self, cmd: Command) -> Result:
        return Result(unknown_op=True)

    @scsi_command(RECORD_OPCODE, usage="ff ff ff ff ff ff ff ff 00")  # control byte: LIO's
    def record(self, cmd: Command) -> Result:
        self.recorded = struct.pack(RECORD_FORMAT, bytes(cmd.cdb), len(cmd.iov.views),
                                    len(cmd.iov), hashlib.sha256(cmd.iov.read()).digest())
        return Result.good()

    @scsi_command(RECORDED_OPCODE, usage=_NO_FIELDS)
    def recorded_entry(self, cmd: Command) -> Result:
        return Result.good(getattr(self, "recorded", b""))

    @scsi_command(SENSE_WITH_DATA_OPCODE, usage=_NO_FIELDS)
    def sense_with_data(self, cmd: Command) -> Result:
        return Result(Status.CHECK_CONDITION, ODD_SENSE, SHORT_READ_DATA,
                      read_len=SHORT_READ_BYTES)


class GrowOnlyDisk(KernelProbeDisk):
    """KernelProbeDisk that refuses to shrink."""

    def reconfig(self, change: Reconfig) -> None:
        if change.new.size < change.old.size:
            raise ReconfigRefused(f"{change.old.size} bytes never shrink "
                                  f"(asked for {change.new.size})")
        super().reconfig(change)


class SlowDisk(KernelProbeDisk):
    """KernelProbeDisk whose SLOW_OPCODE takes `delay_s` seconds to answer GOOD."""

    options = (Option("delay_s", float, 6.0, "how long SLOW_OPCODE takes", min=0),)
    delay_s: float

    @scsi_command(SLOW_OPCODE, usage=_NO_FIELDS)
    def slow(self, cmd: Command) -> Result:
        time.sleep(self.delay_s)  # the ring thread: nothing else is served meanwhile
        return Result.good()


HOLD_OPCODE = 0xC4  # CDB bytes 2-5: a tag the data-in pattern is made from


def hold_cdb(tag: int) -> bytes:
    """A HOLD_OPCODE CDB carrying `tag` (32 bits, big-endian in bytes 2-5)."""
    return bytes([HOLD_OPCODE, 0]) + tag.to_bytes(4, "big") + bytes(4)


def hold_pattern(tag: int, length: int) -> bytes:
    """The data-in a HoldingDisk answers a HOLD of `tag` with: the tag's 4 bytes and a
    running counter, so no two tags' buffers are alike anywhere."""
    unit = tag.to_bytes(4, "big")
    return b"".join(unit + i.to_bytes(4, "big") for i in range(0, length, 8))[:length]


class _Holding(BlockHandler):
    """Holds HOLD_OPCODE commands in the ring (handle() returns None) and completes them
    GOOD, with hold_pattern(tag) as data-in, from a thread of its own in the reverse of
    their arrival order: once `batch` are held, or `hold_s` seconds after the first of
    them arrived, whichever comes first. Everything else is answered as the disk does,
    so the kernel's own probe and ordinary I/O still work."""

    options = (
        Option("hold_s", float, 8.0, "longest a HOLD command is held", min=0),
        Option("batch", int, 0, "release once this many are held (0: on hold_s only)", min=0),
    )

    hold_s: float
    batch: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: list[Command] = []
        self._first = 0.0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._release_loop, name="hold", daemon=True)
        self._thread.start()

    @scsi_command(HOLD_OPCODE, usage="00 FF FF FF FF 00 00 00 00")
    def hold(self, cmd: Command) -> Result | None:
        with self._cond:
            if not self._held:
                self._first = time.monotonic()
            self._held.append(cmd)
            self._cond.notify()
        return None

    def _due(self) -> bool:
        if self._stop or (self.batch and len(self._held) >= self.batch):
            return True
        return bool(self._held) and time.monotonic() - self._first >= self.hold_s

    def _release_loop(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    self._cond.wait(0.05)
                held, self._held = self._held, []
                stop = self._stop
            for cmd in reversed(held):
                tag = int.from_bytes(cmd.cdb[2:6], "big")
                cmd.complete(Result.good(hold_pattern(tag, len(cmd.iov))))
            if stop:
                return

    def quiesce(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(5)
        super().quiesce()


class HoldingDisk(_Holding, KernelProbeDisk):
    """KernelProbeDisk (a RAM disk) with HOLD_OPCODE."""


class HoldingFileDisk(_Holding, FileDisk):
    """FileDisk (the backstore's dev_config path) with HOLD_OPCODE: its data outlives
    the handler process, for restart tests."""


KEEP_OPCODE = 0xC9  # CDB bytes 2-5: tag; byte 6 bit 0: complete with keep_buf
KEPT_SUM_OPCODE = 0xCA  # CDB bytes 2-5: the tag of a kept command
CAPS_OPCODE = 0xCB
HELD_IDS_OPCODE = 0xCC


def keep_cdb(tag: int, *, keep: bool) -> bytes:
    return bytes([KEEP_OPCODE, 0]) + tag.to_bytes(4, "big") + bytes([int(keep), 0, 0, 0])


def kept_sum_cdb(tag: int) -> bytes:
    return bytes([KEPT_SUM_OPCODE, 0]) + tag.to_bytes(4, "big") + bytes(4)


class KeepBufDisk(HoldingDisk):
    """HoldingDisk plus KEEP_OPCODE, KEPT_SUM_OPCODE, CAPS_OPCODE and HELD_IDS_OPCODE.

    The buffers of kept commands stay referenced here (by tag) until the device goes:
    the handler reads one (KEPT_SUM) only while the test has not freed it, since a
    freed block may be reused by another command or unmapped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[int, ScatterBuffer] = {}

    @scsi_command(KEEP_OPCODE, usage="00 FF FF FF FF 01 00 00 00")
    def keep(self, cmd: Command) -> Result:
        tag = int.from_bytes(cmd.cdb[2:6], "big")
        keep = bool(cmd.cdb[6] & 1)
        if keep:
            self._kept[tag] = cmd.iov
        return Result.good(hold_pattern(tag, len(cmd.iov)), keep_buf=keep)

    @scsi_command(KEPT_SUM_OPCODE, usage="00 FF FF FF FF 00 00 00 00")
    def kept_sum(self, cmd: Command) -> Result:
        buf = self._kept.get(int.from_bytes(cmd.cdb[2:6], "big"))
        return Result.good(hashlib.sha256(buf.read()).digest() if buf is not None else b"")

    @scsi_command(CAPS_OPCODE, usage=_NO_FIELDS)
    def caps(self, cmd: Command) -> Result:
        return Result.good(int(self.ring_caps).to_bytes(2, "big"))

    @scsi_command(HELD_IDS_OPCODE, usage=_NO_FIELDS)
    def held_ids(self, cmd: Command) -> Result:
        with self._cond:
            ids = [c.cmd_id for c in self._held]
        # a count first: an empty answer would read as the whole (zeroed) buffer
        return Result.good(bytes([len(ids)]) + b"".join(i.to_bytes(2, "big") for i in ids))
