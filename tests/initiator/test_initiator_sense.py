"""Sense decoding: fixed and descriptor formats, INFORMATION validity, sense key specific
data, and garbage that must never raise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tcmu_harness.initiator.asc_names import asc_name
from tcmu_harness.initiator.sense import FieldPointer, decode_sense
from tcmu_harness.scsi.constants import Asc, SenseKey


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def fixed(key: int, asc: int, ascq: int, *, code: int = 0x70, info: int | None = None,
          sks: str = "00 00 00", additional: int = 10) -> bytes:
    raw = bytearray(18)
    raw[0] = code | (0x80 if info is not None else 0)
    raw[2] = key
    if info is not None:
        raw[3:7] = info.to_bytes(4, "big")
    raw[7] = additional
    raw[12], raw[13] = asc, ascq
    raw[15:18] = h(sks)
    return bytes(raw)


# --- fixed format ---------------------------------------------------------------------


def test_fixed_lba_out_of_range() -> None:
    s = decode_sense(fixed(5, 0x21, 0x00))
    assert s.valid and not s.problems
    assert (s.key, s.asc, s.ascq) == (SenseKey.ILLEGAL_REQUEST, 0x21, 0x00)
    assert s.asc_ascq == Asc.LBA_OUT_OF_RANGE
    assert s.response_code == 0x70
    assert not s.deferred and not s.descriptor_format
    assert s.information is None and s.field_pointer is None
    assert s.describe() == "ILLEGAL REQUEST, asc/ascq 21/00 (LOGICAL BLOCK ADDRESS OUT OF RANGE)"
    assert str(s) == s.describe()


def test_fixed_information_only_when_valid_bit_set() -> None:
    with_valid = decode_sense(fixed(0xE, 0x1D, 0, info=5))
    assert with_valid.information == 5
    assert with_valid.key == SenseKey.MISCOMPARE
    assert "information 0x5" in with_valid.describe()
    raw = bytearray(fixed(0xE, 0x1D, 0, info=5))
    raw[0] &= 0x7F  # same INFORMATION bytes, VALID clear
    assert decode_sense(raw).information is None


def test_fixed_deferred() -> None:
    s = decode_sense(fixed(3, 0x0C, 0, code=0x71))
    assert s.deferred and s.response_code == 0x71
    assert "DEFERRED" in s.describe()


def test_fixed_field_pointer_in_cdb_with_bit() -> None:
    s = decode_sense(fixed(5, 0x24, 0, sks="cf 00 02"))  # SKSV, C/D=1, BPV, bit 7, byte 2
    assert s.field_pointer == FieldPointer(in_cdb=True, byte=2, bit=7)
    assert s.sense_key_specific == h("cf 00 02")
    assert s.describe().endswith("; field pointer: CDB byte 2 bit 7")


def test_fixed_field_pointer_in_parameter_list_without_bit() -> None:
    s = decode_sense(fixed(5, 0x26, 0, sks="80 01 08"))
    assert s.field_pointer == FieldPointer(in_cdb=False, byte=0x108, bit=None)
    assert str(s.field_pointer) == "parameter list byte 264"


def test_fixed_sks_ignored_without_sksv() -> None:
    s = decode_sense(fixed(5, 0x24, 0, sks="4f 00 02"))
    assert s.field_pointer is None and s.sense_key_specific is None


def test_fixed_not_ready_progress() -> None:
    s = decode_sense(fixed(2, 0x04, 0x04, sks="80 80 00"))
    assert s.progress == 0x8000 and s.field_pointer is None
    assert "progress 50%" in s.describe()


def test_fixed_short_additional_length_is_flagged_but_decoded() -> None:
    s = decode_sense(fixed(6, 0x29, 0, additional=6))
    assert s.valid and s.asc == 0x29
    assert s.problems == ("additional sense length 6 < 10",)


def test_fixed_truncated_before_asc_is_invalid() -> None:
    s = decode_sense(fixed(5, 0x21, 0)[:13])
    assert not s.valid
    assert s.key == SenseKey.ILLEGAL_REQUEST  # what was there is still decoded
    assert "truncated" in s.describe()


# --- descriptor format ----------------------------------------------------------------

INFO_DESC = "00 0a 80 00 00 00 00 00 00 00 10 00"  # VALID, INFORMATION 0x1000
SKS_DESC = "02 06 00 00 cf 00 02 00"  # field pointer CDB byte 2 bit 7


def test_descriptor_with_information_and_field_pointer() -> None:
    s = decode_sense(h("72 05 21 00 00 00 00 14" + INFO_DESC + SKS_DESC))
    assert s.valid and not s.problems
    assert s.descriptor_format and not s.deferred
    assert (s.key, s.asc, s.ascq) == (SenseKey.ILLEGAL_REQUEST, 0x21, 0)
    assert s.information == 0x1000
    assert s.field_pointer == FieldPointer(in_cdb=True, byte=2, bit=7)
    assert [t for t, _ in s.descriptors] == [0x00, 0x02]
    assert s.describe() == (
        "ILLEGAL REQUEST, asc/ascq 21/00 (LOGICAL BLOCK ADDRESS OUT OF RANGE); "
        "information 0x1000; field pointer: CDB byte 2 bit 7; descriptor format"
    )


def test_descriptor_deferred_header_only() -> None:
    s = decode_sense(h("73 06 29 00 00 00 00 00"))
    assert s.valid and s.deferred and s.descriptor_format
    assert s.key == SenseKey.UNIT_ATTENTION and s.descriptors == ()


def test_descriptor_information_without_valid_bit() -> None:
    s = decode_sense(h("72 0e 1d 00 00 00 00 0c" + "00 0a 00 00 00 00 00 00 00 00 00 05"))
    assert s.valid and s.information is None
    assert s.problems == ("information descriptor without VALID bit",)


def test_descriptor_additional_length_past_the_buffer() -> None:
    s = decode_sense(h("72 05 24 00 00 00 00 14" + INFO_DESC))  # says 20, has 12
    assert s.valid and s.information == 0x1000
    assert any("runs past" in p for p in s.problems)


def test_descriptor_truncated_descriptor() -> None:
    s = decode_sense(h("72 05 24 00 00 00 00 06" + "02 06 00 00 cf 00"))
    assert s.valid and s.field_pointer is None
    assert any("truncated" in p for p in s.problems)


def test_descriptor_header_only_four_bytes() -> None:
    s = decode_sense(h("72 02 04 00"))
    assert s.valid and s.asc_ascq == Asc.LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE
    assert s.problems == ("truncated header (4 of 8 bytes)",)


# --- garbage --------------------------------------------------------------------------


def test_empty_and_unknown_response_codes() -> None:
    assert not decode_sense(b"").valid
    assert decode_sense(b"").describe() == "invalid sense data (no sense data): empty"
    s = decode_sense(h("12 00 05"))
    assert not s.valid and "0x12" in s.describe()
    assert not decode_sense(b"\x70").valid
    assert not decode_sense(h("72 05")).valid


def test_obsolete_key_c_decodes() -> None:
    assert decode_sense(fixed(0xC, 0, 0)).key == SenseKey.OBSOLETE_C


@given(st.binary(max_size=300))
def test_never_raises(raw: bytes) -> None:
    s = decode_sense(raw)
    assert isinstance(s.describe(), str)
    assert s.raw == raw


@given(st.sampled_from([0x70, 0x71, 0x72, 0x73, 0xF0, 0xF2]), st.binary(max_size=120))
def test_never_raises_with_a_valid_response_code(code: int, rest: bytes) -> None:
    s = decode_sense(bytes([code]) + rest)
    assert isinstance(s.describe(), str)


# --- matching and names ---------------------------------------------------------------


def test_matches() -> None:
    s = decode_sense(fixed(5, 0x24, 0))
    assert s.matches(SenseKey.ILLEGAL_REQUEST)
    assert s.matches(SenseKey.ILLEGAL_REQUEST, 0x24)
    assert s.matches(SenseKey.ILLEGAL_REQUEST, 0x24, 0)
    assert not s.matches(SenseKey.ILLEGAL_REQUEST, 0x24, 1)
    assert not s.matches(SenseKey.NOT_READY)
    assert not decode_sense(b"").matches(SenseKey.NO_SENSE)


def test_asc_names() -> None:
    assert asc_name(0x24, 0x00) == "INVALID FIELD IN CDB"
    assert asc_name(0x29, 0x07) == "I_T NEXUS LOSS OCCURRED"
    assert asc_name(0x40, 0x85) == "DIAGNOSTIC FAILURE ON COMPONENT 85h"
    assert asc_name(0x40, 0x05) is None  # 40/00-7F are not the component range
    assert asc_name(0x7F, 0x7F) is None
    assert "unknown to this table" in decode_sense(fixed(5, 0x7F, 0x7F)).describe()
