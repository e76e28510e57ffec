"""Decode SCSI sense data (SPC-5 4.4): fixed (70h/71h) and descriptor (72h/73h) formats.

`decode_sense` never raises: a conformance harness must be able to print whatever a
target returned, so bad sense becomes a `Sense` with `valid=False` and the reasons in
`problems`. Decoding is lenient like sg3_utils (fields are read wherever the bytes are
present) while `problems` records every deviation from the spec's layout rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tcmu_harness.initiator.asc_names import asc_name
from tcmu_harness.scsi.constants import (
    DESCRIPTOR_SENSE_CURRENT,
    DESCRIPTOR_SENSE_DEFERRED,
    FIXED_SENSE_CURRENT,
    FIXED_SENSE_DEFERRED,
    SENSE_VALID,
    SenseKey,
)

# Descriptor types (SPC-5 4.4.2.1).
DESC_INFORMATION = 0x00
DESC_COMMAND_SPECIFIC = 0x01
DESC_SENSE_KEY_SPECIFIC = 0x02

_FIXED_MIN_ADDITIONAL = 10  # bytes 8..17: through the sense key specific field
_SKSV = 0x80


@dataclasses.dataclass(frozen=True, slots=True)
class FieldPointer:
    """Sense key specific data of ILLEGAL REQUEST: which field was rejected."""

    in_cdb: bool  # C/D bit: True = in the CDB, False = in the parameter list
    byte: int  # FIELD POINTER
    bit: int | None  # BIT POINTER, when BPV is set

    def __str__(self) -> str:
        where = "CDB" if self.in_cdb else "parameter list"
        bit = "" if self.bit is None else f" bit {self.bit}"
        return f"{where} byte {self.byte}{bit}"


@dataclasses.dataclass(frozen=True, slots=True)
class Sense:
    raw: bytes
    valid: bool
    problems: tuple[str, ...] = ()
    response_code: int = 0
    descriptor_format: bool = False
    deferred: bool = False
    key: SenseKey = SenseKey.NO_SENSE
    asc: int = 0
    ascq: int = 0
    information: int | None = None
    command_specific: int | None = None
    sense_key_specific: bytes | None = None  # the 3 SKS bytes, only when SKSV is set
    field_pointer: FieldPointer | None = None
    progress: int | None = None  # progress indication, 0..65535 (of 65536)
    descriptors: tuple[tuple[int, bytes], ...] = ()  # (type, whole descriptor)

    @property
    def asc_ascq(self) -> int:
        """ASC and ASCQ as one number, comparable with scsi.constants.Asc."""
        return (self.asc << 8) | self.ascq

    @property
    def asc_name(self) -> str | None:
        return asc_name(self.asc, self.ascq)

    def matches(self, key: int, asc: int | None = None, ascq: int | None = None) -> bool:
        return (
            self.valid
            and self.key == key
            and (asc is None or self.asc == asc)
            and (ascq is None or self.ascq == ascq)
        )

    def describe(self) -> str:
        """One line, e.g. "ILLEGAL REQUEST, asc/ascq 21/00 (LOGICAL BLOCK ADDRESS OUT OF
        RANGE)"; extras follow after semicolons."""
        if not self.valid:
            why = "; ".join(self.problems) or "undecodable"
            return f"invalid sense data ({why}): {self.raw.hex(' ') or 'empty'}"
        text = f"{key_name(self.key)}, asc/ascq {self.asc:02X}/{self.ascq:02X}"
        name = self.asc_name
        text += f" ({name})" if name else " (unknown to this table)"
        extras = []
        if self.information is not None:
            extras.append(f"information 0x{self.information:x}")
        if self.field_pointer is not None:
            extras.append(f"field pointer: {self.field_pointer}")
        if self.progress is not None:
            extras.append(f"progress {self.progress * 100 // 65536}%")
        if self.descriptor_format:
            extras.append("descriptor format")
        if self.deferred:
            extras.append("DEFERRED")
        extras.extend(f"spec deviation: {p}" for p in self.problems)
        return "; ".join([text, *extras])

    __str__ = describe


def key_name(key: int) -> str:
    return SenseKey(key & 0xF).name.replace("_", " ")


def decode_sense(raw: bytes | bytearray | memoryview) -> Sense:
    data = bytes(raw)
    if not data:
        return Sense(raw=data, valid=False, problems=("no sense data",))
    code = data[0] & 0x7F
    if code in (FIXED_SENSE_CURRENT, FIXED_SENSE_DEFERRED):
        return _decode_fixed(data, code)
    if code in (DESCRIPTOR_SENSE_CURRENT, DESCRIPTOR_SENSE_DEFERRED):
        return _decode_descriptor(data, code)
    return Sense(
        raw=data,
        valid=False,
        problems=(f"response code 0x{code:02x} is neither fixed nor descriptor format",),
        response_code=code,
    )


def _sks_fields(key: SenseKey, sks: bytes) -> dict[str, Any]:
    """Interpret the 3 sense key specific bytes (SPC-5 4.4.2.4); SKSV already checked."""
    if key == SenseKey.ILLEGAL_REQUEST:
        bpv = bool(sks[0] & 0x08)
        pointer = FieldPointer(
            in_cdb=bool(sks[0] & 0x40),
            byte=int.from_bytes(sks[1:3], "big"),
            bit=(sks[0] & 0x07) if bpv else None,
        )
        return {"field_pointer": pointer}
    if key in (SenseKey.NO_SENSE, SenseKey.NOT_READY):
        return {"progress": int.from_bytes(sks[1:3], "big")}
    return {}


def _decode_fixed(data: bytes, code: int) -> Sense:
    problems: list[str] = []
    n = len(data)
    fields: dict[str, Any] = {"response_code": code, "deferred": code == FIXED_SENSE_DEFERRED}
    if n < 3:
        problems.append("truncated before the sense key")
        return Sense(raw=data, valid=False, problems=tuple(problems), **fields)
    fields["key"] = key = SenseKey(data[2] & 0x0F)
    if n >= 8 and data[7] < _FIXED_MIN_ADDITIONAL:
        problems.append(f"additional sense length {data[7]} < {_FIXED_MIN_ADDITIONAL}")
    if n >= 7 and data[0] & SENSE_VALID:
        fields["information"] = int.from_bytes(data[3:7], "big")
    if n >= 12:
        fields["command_specific"] = int.from_bytes(data[8:12], "big")
    if n >= 18 and data[15] & _SKSV:
        fields["sense_key_specific"] = data[15:18]
        fields.update(_sks_fields(key, data[15:18]))
    if n < 14:
        problems.append(f"truncated at {n} bytes, before ASC/ASCQ (bytes 12-13)")
        return Sense(raw=data, valid=False, problems=tuple(problems), **fields)
    return Sense(raw=data, valid=True, problems=tuple(problems), asc=data[12], ascq=data[13],
                 **fields)


def _decode_descriptor(data: bytes, code: int) -> Sense:
    problems: list[str] = []
    n = len(data)
    fields: dict[str, Any] = {
        "response_code": code,
        "deferred": code == DESCRIPTOR_SENSE_DEFERRED,
        "descriptor_format": True,
    }
    if n < 4:
        problems.append("truncated before ASC/ASCQ")
        return Sense(raw=data, valid=False, problems=tuple(problems), **fields)
    key = SenseKey(data[1] & 0x0F)
    fields.update(key=key, asc=data[2], ascq=data[3])
    if n < 8:
        problems.append(f"truncated header ({n} of 8 bytes)")
        return Sense(raw=data, valid=True, problems=tuple(problems), **fields)
    end = 8 + data[7]
    if end > n:
        problems.append(f"additional sense length {data[7]} runs past the {n} bytes received")
        end = n
    descriptors: list[tuple[int, bytes]] = []
    pos = 8
    while pos < end:
        if pos + 2 > end:
            problems.append(f"stray byte at offset {pos} after the last descriptor")
            break
        dtype, dlen = data[pos], data[pos + 1]
        if pos + 2 + dlen > end:
            problems.append(f"descriptor type 0x{dtype:02x} at offset {pos} is truncated")
            break
        desc = data[pos : pos + 2 + dlen]
        descriptors.append((dtype, desc))
        _decode_one_descriptor(dtype, desc, key, fields, problems)
        pos += 2 + dlen
    fields["descriptors"] = tuple(descriptors)
    return Sense(raw=data, valid=True, problems=tuple(dict.fromkeys(problems)), **fields)


def _decode_one_descriptor(
    dtype: int, desc: bytes, key: SenseKey, fields: dict[str, Any], problems: list[str]
) -> None:
    if dtype == DESC_INFORMATION:
        if len(desc) < 12:
            problems.append(f"information descriptor has {len(desc)} of 12 bytes")
        elif not desc[2] & 0x80:
            problems.append("information descriptor without VALID bit")
        else:
            fields["information"] = int.from_bytes(desc[4:12], "big")
    elif dtype == DESC_COMMAND_SPECIFIC:
        if len(desc) < 12:
            problems.append(f"command-specific descriptor has {len(desc)} of 12 bytes")
        else:
            fields["command_specific"] = int.from_bytes(desc[4:12], "big")
    elif dtype == DESC_SENSE_KEY_SPECIFIC:
        if len(desc) < 8:
            problems.append(f"sense key specific descriptor has {len(desc)} of 8 bytes")
        elif desc[4] & _SKSV:
            fields["sense_key_specific"] = desc[4:7]
            fields.update(_sks_fields(key, desc[4:7]))
