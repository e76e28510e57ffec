"""Extension points: a RAM disk that adds a command, a VPD page and a mode page.

- SEND DIAGNOSTIC (default self-test, `sg_senddiag -t`): reads a block back through
  the storage; REPORT SUPPORTED OPERATION CODES lists the command.
- VPD page 0xC0 (vendor specific): the firmware build, in ASCII; VPD 0x00 lists it.
- Mode page 0x21 (vendor specific), byte 2 bit 0 VERIFY_WRITES: when set (MODE SELECT),
  every write is read back and compared; MODE SENSE reports the page.

    tcmu-harness handler-info examples/vendor_disk.py:VendorDisk
"""

import errno

from tcmu.block import ModePage, scsi_command, vpd_page
from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Opcode, SenseKey

BUILD = "vendor-disk 1.0 (tcmu-harness example)"
_VERIFY_WRITES = 0x01
_SELF_TEST_FAILED = 0x3E03  # LOGICAL UNIT FAILED SELF-TEST


class VendorDisk(RamDisk):
    """RamDisk plus SEND DIAGNOSTIC, VPD page 0xC0 and mode page 0x21."""

    # Parameter bytes after the page header: VERIFY_WRITES (changeable), reserved.
    verify_page = ModePage(0x21, default=bytes(2), changeable=bytes([_VERIFY_WRITES, 0]))

    @scsi_command(Opcode.SEND_DIAGNOSTIC, usage="04 00 00 00 00")  # SELFTEST bit only
    def send_diagnostic(self, cmd: Command) -> Result:
        if not cmd.cdb[1] & 0x04:
            raise SenseError.invalid_cdb(1, 2)  # only the default self-test is offered
        block = ScatterBuffer([memoryview(bytearray(self.block_size))])
        try:
            self.read(0, block)
        except OSError as err:
            raise SenseError(SenseKey.HARDWARE_ERROR, _SELF_TEST_FAILED) from err
        return Result.good()

    @vpd_page(0xC0)
    def firmware_page(self) -> bytes:
        return BUILD.encode("ascii")

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        super().write(offset, buf)
        if self.verify_page[0] & _VERIFY_WRITES:
            back = ScatterBuffer([memoryview(bytearray(len(buf)))])
            self.read(offset, back)
            if back.read() != buf.read():
                raise OSError(errno.EIO, f"verify after write failed at {offset}")
