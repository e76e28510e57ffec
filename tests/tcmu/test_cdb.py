"""CDB decoders: fields, flags per opcode, and short CDBs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu import cdb
from tcmu.cdb import BlockCdb
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey


def test_read6_lba_is_21_bits_and_zero_length_means_256() -> None:
    assert cdb.decode_block(bytes([0x08, 0xFF, 0x12, 0x34, 0x00, 0x00])) == BlockCdb(
        Opcode.READ_6, 0x1F1234, 256, length_byte=4
    )


def test_write6_length() -> None:
    assert cdb.decode_block(bytes([0x0A, 0x00, 0x00, 0x05, 0x07, 0x00])) == BlockCdb(
        Opcode.WRITE_6, 5, 7, length_byte=4
    )


def test_read10_flags() -> None:
    got = cdb.decode_block(bytes([0x28, 0x18, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x09, 0x00]))
    assert got == BlockCdb(Opcode.READ_10, 0x01020304, 9, length_byte=7, dpo=True, fua=True)


def test_write10_protect_field() -> None:
    got = cdb.decode_block(bytes([0x2A, 0xA0, 0, 0, 0, 1, 0, 0, 1, 0]))
    assert (got.protect, got.dpo, got.fua) == (5, False, False)


def test_read12_and_write12() -> None:
    raw = bytes([0xA8, 0x08, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    assert cdb.decode_block(raw) == BlockCdb(Opcode.READ_12, 256, 65536, length_byte=6, fua=True)
    raw = bytes([0xAA, 0x00, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0])
    assert cdb.decode_block(raw) == BlockCdb(Opcode.WRITE_12, 2, 3, length_byte=6)


def test_read16_64bit_lba() -> None:
    raw = bytes([0x88, 0x10]) + (0x0102030405060708).to_bytes(8, "big") + bytes([0, 0, 1, 0, 0, 0])
    assert cdb.decode_block(raw) == BlockCdb(
        Opcode.READ_16, 0x0102030405060708, 256, length_byte=10, dpo=True
    )


@pytest.mark.parametrize(("flags", "bytchk"), [(0x00, 0), (0x02, 1), (0x04, 2), (0x06, 3)])
def test_verify_bytchk(flags: int, bytchk: int) -> None:
    got = cdb.decode_block(bytes([0x2F, flags | 0x10, 0, 0, 0, 4, 0, 0, 2, 0]))
    assert got == BlockCdb(Opcode.VERIFY_10, 4, 2, length_byte=7, dpo=True, bytchk=bytchk)


def test_write_and_verify16_bytchk() -> None:
    raw = bytes([0x8E, 0x02]) + bytes(7) + b"\x01" + bytes([0, 0, 0, 1, 0, 0])
    got = cdb.decode_block(raw)
    assert (got.opcode, got.lba, got.blocks, got.bytchk) == (0x8E, 1, 1, 1)


def test_synchronize_cache_immed_and_fields() -> None:
    got = cdb.decode_block(bytes([0x35, 0x02, 0, 0, 0, 8, 0, 0, 0, 0]))
    assert got == BlockCdb(Opcode.SYNCHRONIZE_CACHE_10, 8, 0, length_byte=7, immed=True)
    raw = bytes([0x91, 0x00]) + (9).to_bytes(8, "big") + (3).to_bytes(4, "big") + bytes(2)
    assert cdb.decode_block(raw) == BlockCdb(Opcode.SYNCHRONIZE_CACHE_16, 9, 3, length_byte=10)


def test_write_same10_unmap_anchor_and_no_ndob() -> None:
    got = cdb.decode_block(bytes([0x41, 0x19, 0, 0, 0, 1, 0, 0, 4, 0]))
    assert got == BlockCdb(Opcode.WRITE_SAME_10, 1, 4, length_byte=7, anchor=True, unmap=True)


def test_write_same16_ndob() -> None:
    raw = bytes([0x93, 0x09]) + (5).to_bytes(8, "big") + (6).to_bytes(4, "big") + bytes(2)
    assert cdb.decode_block(raw) == BlockCdb(
        Opcode.WRITE_SAME_16, 5, 6, length_byte=10, unmap=True, ndob=True
    )


def test_compare_and_write_blocks_at_byte_13() -> None:
    raw = bytes([0x89, 0x08]) + (7).to_bytes(8, "big") + bytes([0xAA, 0xBB, 0xCC, 2, 0, 0])
    assert cdb.decode_block(raw) == BlockCdb(
        Opcode.COMPARE_AND_WRITE, 7, 2, length_byte=13, fua=True
    )


def test_pre_fetch_immed() -> None:
    got = cdb.decode_block(bytes([0x34, 0x02, 0, 0, 0, 8, 0, 0, 3, 0]))
    assert got == BlockCdb(Opcode.PRE_FETCH_10, 8, 3, length_byte=7, immed=True)
    raw = bytes([0x90, 0x00]) + (9).to_bytes(8, "big") + (0).to_bytes(4, "big") + bytes(2)
    assert cdb.decode_block(raw) == BlockCdb(Opcode.PRE_FETCH_16, 9, 0, length_byte=10)


def test_orwrite_flags() -> None:
    raw = bytes([0x8B, 0x38]) + (5).to_bytes(8, "big") + (2).to_bytes(4, "big") + bytes(2)
    assert cdb.decode_block(raw) == BlockCdb(
        Opcode.ORWRITE_16, 5, 2, length_byte=10, protect=1, dpo=True, fua=True
    )


def test_write_atomic_boundary_and_length_at_byte_12() -> None:
    raw = bytes([0x9C, 0x08]) + (7).to_bytes(8, "big") + bytes([0x01, 0x02, 0, 9, 0, 0])
    assert cdb.decode_block(raw) == BlockCdb(
        Opcode.WRITE_ATOMIC_16, 7, 9, length_byte=12, fua=True, boundary=0x0102
    )


def test_get_lba_status() -> None:
    raw = bytes([0x9E, 0x12]) + (3).to_bytes(8, "big") + (24).to_bytes(4, "big") + bytes(2)
    assert cdb.decode_get_lba_status(raw) == cdb.GetLbaStatusCdb(3, 24)


def test_read_defect_data_10_and_12() -> None:
    raw10 = bytes([0x37, 0, 0x1D, 0, 0, 0, 0, 0x01, 0x02, 0])
    assert cdb.decode_read_defect_data(raw10) == cdb.ReadDefectDataCdb(False, 0x1D, 0x0102)
    raw12 = bytes([0xB7, 0x0B, 0, 0, 0, 5, 0, 0, 0x01, 0x02, 0, 0])
    assert cdb.decode_read_defect_data(raw12) == cdb.ReadDefectDataCdb(True, 0x0B, 0x0102)


def test_format_unit() -> None:
    assert cdb.decode_format_unit(bytes([0x04, 0xBB, 0, 0, 0, 0])) == cdb.FormatUnitCdb(
        fmtpinfo=2, longlist=True, fmtdata=True, cmplst=True, defect_list_format=3
    )


@pytest.mark.parametrize(
    "raw",
    [b"", bytes([0x08, 0, 0]), bytes([0x28] + [0] * 8), bytes([0x88] + [0] * 10),
     bytes([0xA8] + [0] * 8), bytes([0x89] + [0] * 14), bytes([0x9C] + [0] * 14),
     bytes([0x34] + [0] * 8)],
)  # fmt: skip
def test_short_cdb_is_invalid_field_in_cdb(raw: bytes) -> None:
    with pytest.raises(SenseError) as err:
        cdb.decode_block(raw)
    assert (err.value.key, err.value.asc, err.value.field) == (
        SenseKey.ILLEGAL_REQUEST,
        Asc.INVALID_FIELD_IN_CDB,
        None,
    )


def test_not_a_block_command_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="0x12"):
        cdb.decode_block(bytes([0x12, 0, 0, 0, 0, 0]))


def test_inquiry() -> None:
    assert cdb.decode_inquiry(bytes([0x12, 0x01, 0x83, 0x01, 0x02, 0])) == cdb.InquiryCdb(
        True, 0x83, 0x0102
    )


def test_request_sense() -> None:
    assert cdb.decode_request_sense(bytes([0x03, 1, 0, 0, 252, 0])) == cdb.RequestSenseCdb(
        True, 252
    )


def test_mode_sense_6_and_10() -> None:
    assert cdb.decode_mode_sense(bytes([0x1A, 0x08, 0x7F, 0xFF, 200, 0])) == cdb.ModeSenseCdb(
        ten=False, dbd=True, llbaa=False, pc=1, page=0x3F, subpage=0xFF, alloc_len=200
    )
    raw = bytes([0x5A, 0x10, 0x88, 0x00, 0, 0, 0, 0x01, 0x00, 0])
    assert cdb.decode_mode_sense(raw) == cdb.ModeSenseCdb(
        ten=True, dbd=False, llbaa=True, pc=2, page=0x08, subpage=0, alloc_len=256
    )


def test_mode_select_6_and_10() -> None:
    assert cdb.decode_mode_select(bytes([0x15, 0x11, 0, 0, 24, 0])) == cdb.ModeSelectCdb(
        False, True, True, 24
    )
    assert cdb.decode_mode_select(bytes([0x55, 0x10, 0, 0, 0, 0, 0, 1, 2, 0])) == cdb.ModeSelectCdb(
        True, True, False, 0x0102
    )


def test_read_capacity_10_and_16() -> None:
    assert cdb.decode_read_capacity(bytes([0x25, 0, 0, 0, 0, 5, 0, 0, 1, 0])) == (
        cdb.ReadCapacityCdb(5, True, 8)
    )
    raw = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)
    assert cdb.decode_read_capacity(raw) == cdb.ReadCapacityCdb(0, False, 32)


def test_rsoc() -> None:
    raw = bytes([0xA3, 0x0C, 0x82, 0x9E, 0x00, 0x10, 0, 0, 0x10, 0x00, 0, 0])
    assert cdb.decode_rsoc(raw) == cdb.RsocCdb(True, 2, 0x9E, 0x10, 4096)


def test_unmap() -> None:
    assert cdb.decode_unmap(bytes([0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0])) == cdb.UnmapCdb(True, 24)


def test_start_stop() -> None:
    assert cdb.decode_start_stop(bytes([0x1B, 1, 0, 0, 0x35, 0])) == cdb.StartStopCdb(
        immed=True, power_condition=3, no_flush=True, loej=False, start=True
    )


@pytest.mark.parametrize(
    "decode",
    [cdb.decode_inquiry, cdb.decode_request_sense, cdb.decode_mode_sense,
     cdb.decode_mode_select, cdb.decode_read_capacity, cdb.decode_rsoc, cdb.decode_unmap,
     cdb.decode_start_stop, cdb.decode_get_lba_status, cdb.decode_read_defect_data,
     cdb.decode_format_unit],
)  # fmt: skip
def test_spc_decoders_reject_short_cdbs(decode: Callable[[bytes], object]) -> None:
    with pytest.raises(SenseError) as err:
        decode(bytes([0x00, 0, 0]))
    assert err.value.asc == Asc.INVALID_FIELD_IN_CDB
