"""Handlers for the kernel suite: the RAM disk plus vendor-specific commands (opcodes
0xC0-0xDF, SPC-4 group 6: 10-byte CDBs that no initiator sends on its own), each of
which makes the handler do one thing to the ring that the kernel must then handle:

- SLOW_OPCODE: answers GOOD only after `delay_s` seconds (in the ring thread, so the
  ring waits with it): a handler slower than attrib/cmd_time_out;
- SHORT_READ_OPCODE: data-in of SHORT_READ_BYTES bytes whatever the buffer, reported
  with READ_LEN: the initiator must see the rest as a residual;
- SENSE_OPCODE: CHECK CONDITION with ODD_SENSE, sense bytes no kernel would make up.

The kernel's own probe of the disk (INQUIRY, READ CAPACITY, partition scan) never
sends these, so the LUN sets up as a plain RAM disk.

    spec: "suites/kernel/kernel_handlers.py:SlowDisk delay_s=6"
"""

from __future__ import annotations

import time

from scsi.constants import Status
from tcmu.block import scsi_command
from tcmu.handler import Command, Result
from tcmu.handlers.ramdisk import RamDisk
from tcmu.options import Option

SLOW_OPCODE = 0xC1
SHORT_READ_OPCODE = 0xC2
SENSE_OPCODE = 0xC3
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


class SlowDisk(KernelProbeDisk):
    """KernelProbeDisk whose SLOW_OPCODE takes `delay_s` seconds to answer GOOD."""

    options = (Option("delay_s", float, 6.0, "how long SLOW_OPCODE takes", min=0),)
    delay_s: float

    @scsi_command(SLOW_OPCODE, usage=_NO_FIELDS)
    def slow(self, cmd: Command) -> Result:
        time.sleep(self.delay_s)  # the ring thread: nothing else is served meanwhile
        return Result.good()
