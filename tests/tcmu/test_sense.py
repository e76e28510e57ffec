"""Sense data builders: exact bytes of fixed and descriptor format (SPC-4 4.5)."""

from __future__ import annotations

from tcmu import sense
from tcmu.sense import FieldPointer, SenseError
from tcmu_harness.scsi.constants import Asc, SenseKey


def test_fixed_without_information_or_field() -> None:
    assert sense.fixed(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE) == bytes(
        [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0]
    )


def test_fixed_with_information_sets_valid() -> None:
    data = sense.fixed(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=0x01020304)
    assert data == bytes([0xF0, 0, 0x0E, 1, 2, 3, 4, 10, 0, 0, 0, 0, 0x1D, 0x00, 0, 0, 0, 0])


def test_fixed_information_zero_is_still_valid() -> None:
    data = sense.fixed(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=0)
    assert data[0] == 0xF0
    assert data[3:7] == bytes(4)


def test_fixed_information_too_large_clears_valid() -> None:
    data = sense.fixed(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=1 << 32)
    assert data[0] == 0x70
    assert data[3:7] == bytes(4)


def test_fixed_field_pointer_in_cdb_with_bit() -> None:
    data = sense.fixed(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(1, bit=5)
    )
    # SKSV | C/D | BPV | bit 5, field pointer 0x0001
    assert data[12:18] == bytes([0x24, 0x00, 0, 0xCD, 0x00, 0x01])


def test_fixed_field_pointer_in_parameter_list_without_bit() -> None:
    data = sense.fixed(
        SenseKey.ILLEGAL_REQUEST,
        Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field=FieldPointer(0x0123, in_cdb=False),
    )
    assert data[12:18] == bytes([0x26, 0x00, 0, 0x80, 0x01, 0x23])


def test_fixed_keeps_ascq() -> None:
    data = sense.fixed(SenseKey.UNIT_ATTENTION, Asc.MODE_PARAMETERS_CHANGED)
    assert (data[2], data[12], data[13]) == (0x06, 0x2A, 0x01)


def test_descriptor_header_only() -> None:
    assert sense.descriptor(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE) == (
        bytes([0x72, 0x05, 0x20, 0x00, 0, 0, 0, 0])
    )


def test_descriptor_with_information() -> None:
    data = sense.descriptor(
        SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=0x1122334455667788
    )
    header = bytes([0x72, 0x0E, 0x1D, 0x00, 0, 0, 0, 12])
    information = bytes([0x00, 0x0A, 0x80, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88])
    assert data == header + information


def test_descriptor_with_field_pointer() -> None:
    data = sense.descriptor(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(2)
    )
    assert data == bytes([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xC0, 0, 2, 0])


def test_descriptor_with_both_descriptors_in_order() -> None:
    data = sense.descriptor(
        SenseKey.ILLEGAL_REQUEST,
        Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        information=7,
        field=FieldPointer(9, bit=0, in_cdb=False),
    )
    assert data[7] == 20
    assert data[8:20] == bytes([0x00, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 7])
    assert data[20:28] == bytes([0x02, 0x06, 0, 0, 0x88, 0, 9, 0])


def test_sense_error_picks_format() -> None:
    err = SenseError.invalid_cdb(4, bit=1)
    assert err.sense() == sense.fixed(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(4, 1)
    )
    assert err.sense(descriptor_format=True) == bytes(
        [0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xC9, 0, 4, 0]
    )


def test_sense_error_named_constructors() -> None:
    assert SenseError.lba_out_of_range().sense()[2:14:10] == bytes([0x05, 0x21])
    assert SenseError.invalid_opcode().sense()[12:14] == bytes([0x20, 0x00])
    assert SenseError.parameter_list_length().sense()[12:14] == bytes([0x1A, 0x00])
    param = SenseError.invalid_parameter(3, bit=7).sense()
    assert param[12:18] == bytes([0x26, 0x00, 0, 0x8F, 0, 3])
    mis = SenseError.miscompare(513).sense()
    assert mis[:8] == bytes([0xF0, 0, 0x0E, 0, 0, 0x02, 0x01, 10])
    assert mis[12:14] == bytes([0x1D, 0x00])


def test_sense_error_message_names_key_and_asc() -> None:
    assert str(SenseError.lba_out_of_range()) == "sense key 0x5, ASC/ASCQ 21/00"
