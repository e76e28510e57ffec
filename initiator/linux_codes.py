"""Linux SCSI mid-layer codes that SG_IO reports next to the SCSI status.

Values from include/scsi/scsi_status.h (host byte) and the sg driver (driver byte); they
are Linux's, not T10's, which is why they live here rather than in scsi.constants.
"""

from __future__ import annotations

import enum


class HostStatus(enum.IntEnum):
    """sg_io_hdr.host_status: the HBA / transport's view (DID_*)."""

    DID_OK = 0x00
    DID_NO_CONNECT = 0x01
    DID_BUS_BUSY = 0x02
    DID_TIME_OUT = 0x03
    DID_BAD_TARGET = 0x04
    DID_ABORT = 0x05
    DID_PARITY = 0x06
    DID_ERROR = 0x07
    DID_RESET = 0x08
    DID_BAD_INTR = 0x09
    DID_PASSTHROUGH = 0x0A
    DID_SOFT_ERROR = 0x0B
    DID_IMM_RETRY = 0x0C
    DID_REQUEUE = 0x0D
    DID_TRANSPORT_DISRUPTED = 0x0E
    DID_TRANSPORT_FAILFAST = 0x0F
    DID_TARGET_FAILURE = 0x10
    DID_NEXUS_FAILURE = 0x11
    DID_ALLOC_FAILURE = 0x12
    DID_MEDIUM_ERROR = 0x13
    DID_TRANSPORT_MARGINAL = 0x14


class DriverStatus(enum.IntEnum):
    """sg_io_hdr.driver_status, low nibble (DRIVER_*); the high nibble held the
    obsolete SUGGEST_* flags."""

    DRIVER_OK = 0x00
    DRIVER_BUSY = 0x01
    DRIVER_SOFT = 0x02
    DRIVER_MEDIA = 0x03
    DRIVER_ERROR = 0x04
    DRIVER_INVALID = 0x05
    DRIVER_TIMEOUT = 0x06
    DRIVER_HARD = 0x07
    DRIVER_SENSE = 0x08


SG_INFO_CHECK = 0x1  # sg_io_hdr.info: something abnormal happened
SG_INFO_DIRECT_IO_MASK = 0x6


def host_status_name(value: int) -> str:
    try:
        return HostStatus(value).name
    except ValueError:
        return f"0x{value:02x}"


def driver_status_name(value: int) -> str:
    try:
        return DriverStatus(value & 0x0F).name + (f"|0x{value & 0xF0:02x}" if value & 0xF0 else "")
    except ValueError:
        return f"0x{value:02x}"
