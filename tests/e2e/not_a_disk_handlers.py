"""Handlers whose LUN the sd driver does not bind, for tests/e2e/test_cli_paths.py: the
kernel still gives them an sg node, so a command that uses only $TCMU_SG must run."""

from __future__ import annotations

import dataclasses

from tcmu.handler import Command, Result
from tcmu.handlers.ramdisk import RamDisk
from tcmu_harness.scsi.constants import Opcode, Status


class QualifierOne(RamDisk):
    """The RAM disk, but standard INQUIRY says PERIPHERAL QUALIFIER 001b (the device
    server supports a direct-access device here, none is connected; SPC-4 6.6.2): the
    SCSI bus (scsi_bus_match) binds sd only to qualifier 0, while sg takes every device."""

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.INQUIRY and not cmd.cdb[1] & 1 and result.status == Status.GOOD:
            if result.data is not None:
                return dataclasses.replace(result, data=bytes([0x20]) + result.data[1:])
            cmd.iov.write(bytes([0x20]), 0)
        return result
