"""Sense data builders (SPC-4 4.5) and the exception handler code raises to produce them.

Two formats: fixed (response code 0x70, 18 bytes) and descriptor (0x72, header plus an
information descriptor and a sense-key-specific descriptor when there is something to
put in them). Which one an initiator gets depends on D_SENSE in the control mode page,
so code raises `SenseError` and the dispatcher picks the format.
"""

from __future__ import annotations

import dataclasses
import struct

from tcmu_harness.scsi.constants import (
    DESCRIPTOR_SENSE_CURRENT,
    FIXED_SENSE_CURRENT,
    SENSE_VALID,
    Asc,
    SenseKey,
)

# Fixed format: response code, obsolete, key, INFORMATION, additional length,
# COMMAND-SPECIFIC INFORMATION, ASC, ASCQ, FRU code, SENSE KEY SPECIFIC (3 bytes).
_FIXED = struct.Struct(">BBBIBIBBB3s")
_FIXED_ADDITIONAL_LENGTH = _FIXED.size - 8  # = 10

# Descriptor format header: response code, key, ASC, ASCQ, 3 reserved, additional length.
_DESC_HEADER = struct.Struct(">BBBB3xB")
# Information descriptor (type 0x00): type, additional length 0x0A, VALID, reserved,
# INFORMATION (8 bytes).
_DESC_INFORMATION = struct.Struct(">BBBxQ")
_DESC_TYPE_INFORMATION = 0x00
# Sense key specific descriptor (type 0x02): type, additional length 0x06, 2 reserved,
# the 3 sense-key-specific bytes, reserved.
_DESC_SKS = struct.Struct(">BB2x3sx")
_DESC_TYPE_SKS = 0x02

# Sense-key-specific byte 0 for ILLEGAL REQUEST: SKSV, C/D, BPV, bit pointer.
_SKSV = 0x80
_SKS_CD = 0x40
_SKS_BPV = 0x08
_SKS_FIELD = struct.Struct(">BH")


@dataclasses.dataclass(frozen=True, slots=True)
class FieldPointer:
    """Which byte (and bit) of the CDB or parameter list was wrong (ILLEGAL REQUEST)."""

    byte: int
    bit: int | None = None  # most significant bit of the offending field
    in_cdb: bool = True  # C/D: True = CDB, False = parameter list / data-out

    def to_bytes(self) -> bytes:
        first = _SKSV | (_SKS_CD if self.in_cdb else 0)
        if self.bit is not None:
            first |= _SKS_BPV | (self.bit & 0x7)
        return _SKS_FIELD.pack(first, self.byte & 0xFFFF)


def fixed(
    key: int,
    asc: int,
    *,
    information: int | None = None,
    field: FieldPointer | None = None,
) -> bytes:
    """Fixed-format sense (18 bytes). `asc` is (ASC << 8) | ASCQ, as in `Asc`.

    VALID is set only when INFORMATION is given and fits the 4-byte field; a larger
    value can only be reported in descriptor format.
    """
    code = FIXED_SENSE_CURRENT
    info = 0
    if information is not None and 0 <= information <= 0xFFFFFFFF:
        code |= SENSE_VALID
        info = information
    sks = field.to_bytes() if field is not None else bytes(3)
    return _FIXED.pack(
        code, 0, key & 0xF, info, _FIXED_ADDITIONAL_LENGTH, 0, asc >> 8, asc & 0xFF, 0, sks
    )


def descriptor(
    key: int,
    asc: int,
    *,
    information: int | None = None,
    field: FieldPointer | None = None,
) -> bytes:
    """Descriptor-format sense: 8-byte header plus the descriptors that carry data."""
    body = b""
    if information is not None:
        body += _DESC_INFORMATION.pack(
            _DESC_TYPE_INFORMATION, _DESC_INFORMATION.size - 2, SENSE_VALID, information
        )
    if field is not None:
        body += _DESC_SKS.pack(_DESC_TYPE_SKS, _DESC_SKS.size - 2, field.to_bytes())
    header = _DESC_HEADER.pack(DESCRIPTOR_SENSE_CURRENT, key & 0xF, asc >> 8, asc & 0xFF, len(body))
    return header + body


class SenseError(Exception):
    """Raised by handler code to end a command with CHECK CONDITION and this sense."""

    def __init__(
        self,
        key: int,
        asc: int,
        *,
        information: int | None = None,
        field: FieldPointer | None = None,
    ) -> None:
        self.key = key
        self.asc = asc
        self.information = information
        self.field = field
        super().__init__(f"sense key {key:#x}, ASC/ASCQ {asc >> 8:02x}/{asc & 0xFF:02x}")

    def sense(self, descriptor_format: bool = False) -> bytes:
        build = descriptor if descriptor_format else fixed
        return build(self.key, self.asc, information=self.information, field=self.field)

    # The errors the SPC/SBC code raises most, by name.
    @classmethod
    def invalid_cdb(cls, byte: int | None = None, bit: int | None = None) -> SenseError:
        field = None if byte is None else FieldPointer(byte, bit, in_cdb=True)
        return cls(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=field)

    @classmethod
    def invalid_parameter(cls, byte: int, bit: int | None = None) -> SenseError:
        return cls(
            SenseKey.ILLEGAL_REQUEST,
            Asc.INVALID_FIELD_IN_PARAMETER_LIST,
            field=FieldPointer(byte, bit, in_cdb=False),
        )

    @classmethod
    def parameter_list_length(cls) -> SenseError:
        return cls(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)

    @classmethod
    def invalid_opcode(cls) -> SenseError:
        return cls(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)

    @classmethod
    def lba_out_of_range(cls) -> SenseError:
        return cls(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)

    @classmethod
    def data_length_mismatch(cls) -> SenseError:
        """The data-out buffer is not the length the CDB implies: INVALID FIELD IN COMMAND
        INFORMATION UNIT (0E/03), no field pointer."""
        return cls(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)

    @classmethod
    def stopped(cls) -> SenseError:
        """NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (02/04/02): the
        unit was stopped by START STOP UNIT and needs a START to serve the medium again."""
        return cls(SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED)

    @classmethod
    def miscompare(cls, offset: int) -> SenseError:
        """MISCOMPARE 1D/00; INFORMATION = offset of the first differing data-out byte."""
        return cls(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=offset)


# CHECK CONDITION, HARDWARE ERROR, INTERNAL TARGET FAILURE (44/00), fixed format: the
# answer to a command whose handler failed with anything but a SenseError.
INTERNAL_FAILURE_SENSE = fixed(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
