"""FORMAT UNIT (SBC-3 5.3), when the device offers it: formats the medium; without
protection information or defect management every block reads back as zeroes after a
format (a RAM or file disk has no other initialization to do).

Covered: FMTDATA=0 and FMTDATA=1 with an empty short or long parameter list header ->
GOOD and every block (first, last, scattered, a 1 MiB run) reads zeroes, the capacity
unchanged; FMTPINFO != 0 without protection support -> 24/00 on byte 1 bit 7; a
parameter list shorter than its header -> PARAMETER LIST LENGTH ERROR (1A/00); a defect
list or IP without FOV -> INVALID FIELD IN PARAMETER LIST (26/00) with the field
pointer; nothing formatted on any refusal; refusal when not claimed. Every format test
has its own LUN.
"""

from __future__ import annotations

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities, discover
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_MIB = 1 << 20
_FORMAT_TIMEOUT = 120.0
# Parameter list header byte 1 (SBC-3 5.3.2.2): FOV, DPRY, DCRT, STPF, IP, obsolete,
# IMMED, vendor specific.
_IP = 0x08
_PROTECT = 0x01  # standard INQUIRY byte 5 bit 0


def _claimed(lun: Lun) -> Capabilities:
    caps = discover(lun)
    caps.require(Opcode.FORMAT_UNIT)
    return caps


def _regions(lun: Lun) -> list[tuple[int, int]]:
    """(LBA, blocks) written before a format: the first and last blocks, scattered
    blocks, and a run of 1 MiB (more than one command's worth at 64 KiB)."""
    n = lun.blocks
    run = max(1, _MIB // lun.block_size)
    return [(0, 1), (1, 7), (n // 3, 1), (n // 2, run), (n - 8, 7), (n - 1, 1)]


def _fill(lun: Lun, seed: int) -> list[bytes]:
    """Write a pattern over every region (one batch); returns the data per region."""
    bs = lun.block_size
    data = [pattern(lba, blocks, bs, seed=seed) for lba, blocks in _regions(lun)]
    results = lun.cdbs([(cdb.write_16(lba, blocks), d, 0)
                        for (lba, blocks), d in zip(_regions(lun), data, strict=True)])
    for result in results:
        result.expect_good()
    return data


def _read_regions(lun: Lun) -> list[bytes]:
    bs = lun.block_size
    results = lun.cdbs([(cdb.read_16(lba, blocks), None, blocks * bs)
                        for lba, blocks in _regions(lun)])
    return [r.expect_good().data for r in results]


def _expect_zeroes(lun: Lun, what: str) -> None:
    __tracebackhide__ = True
    for (lba, blocks), data in zip(_regions(lun), _read_regions(lun), strict=True):
        assert_blocks_equal(data, bytes(blocks * lun.block_size), lun.block_size, lba,
                            what=f"{what}: LBA {lba} x{blocks}")


def _expect_unchanged(lun: Lun, before: list[bytes], what: str) -> None:
    __tracebackhide__ = True
    for (lba, _), data, old in zip(_regions(lun), _read_regions(lun), before, strict=True):
        assert_blocks_equal(data, old, lun.block_size, lba, what=f"{what}: LBA {lba}")


def _format(lun: Lun, command: bytes, data_out: bytes | None = None) -> CdbResult:
    return lun.cdb(command, data_out=data_out, timeout=_FORMAT_TIMEOUT)


def _capacity(lun: Lun) -> bytes:
    return lun.cdb(cdb.read_capacity_16(alloc_len=12), data_in_len=12).expect_good().data


def test_format_unit_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00); nothing is
    formatted."""
    caps.require_absent(Opcode.FORMAT_UNIT)
    bs = shared_lun.block_size
    data = pattern(7, 1, bs, seed=9)
    write, fmt, read = shared_lun.cdbs([
        (cdb.write_16(7, 1), data, 0),
        (cdb.format_unit(), None, 0),
        (cdb.read_16(7, 1), None, bs),
    ])  # fmt: skip
    write.expect_good()
    fmt.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
    assert_blocks_equal(read.expect_good().data, data, bs, 7)


def test_format_unit_without_parameter_data_makes_every_block_read_zeroes(lun: Lun) -> None:
    """SBC-3 5.3.1: FMTDATA=0: the device formats with its defaults and no parameter
    list -> GOOD; afterwards every block written before reads zeroes (the first, the
    last, scattered ones, a 1 MiB run) and the capacity is unchanged."""
    _claimed(lun)
    capacity = _capacity(lun)
    _fill(lun, seed=1)
    _format(lun, cdb.format_unit()).expect_good()
    _expect_zeroes(lun, "after FORMAT UNIT")
    assert _capacity(lun) == capacity, "READ CAPACITY(16) changed with a format to the " \
        "same block size"


@pytest.mark.parametrize("longlist", [False, True], ids=["short-header", "long-header"])
def test_format_unit_with_an_empty_parameter_list_header_formats_the_medium(
    lun: Lun, longlist: bool
) -> None:
    """SBC-3 5.3.2.2: FMTDATA=1 with a parameter list header of zeroes (FOV=0, no defect
    list; 4 bytes, or 8 with LONGLIST=1) -> GOOD, and every block reads zeroes."""
    _claimed(lun)
    _fill(lun, seed=2)
    header = bytes(8 if longlist else 4)
    _format(lun, cdb.format_unit(fmtdata=True, longlist=longlist), header).expect_good()
    _expect_zeroes(lun, "after FORMAT UNIT with an empty header")


def test_format_unit_with_fmtpinfo_is_invalid_field_in_cdb_and_formats_nothing(
    lun: Lun
) -> None:
    """SBC-3 5.3.1, 4.18: FMTPINFO other than 00b on a device without protection
    information support -> ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer
    byte 1 bit 7 (the field's first bit); the medium is not formatted."""
    caps = _claimed(lun)
    if len(caps.inquiry) > 5 and caps.inquiry[5] & _PROTECT:
        pytest.skip("standard INQUIRY PROTECT=1: the device supports protection information")
    before = _fill(lun, seed=3)
    for fmtpinfo in (1, 2, 3):
        result = _format(lun, cdb.format_unit(fmtpinfo=fmtpinfo))
        try:
            result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                field=FieldPointer(True, 1, 7))
        except AssertionError as exc:
            raise AssertionError(f"FMTPINFO {fmtpinfo:02b}b: {exc}") from None
    _expect_unchanged(lun, before, "after FORMAT UNIT with FMTPINFO refused")


def test_format_unit_with_a_short_parameter_list_is_parameter_list_length_error(
    lun: Lun
) -> None:
    """SBC-3 5.3.2.1 / SPC-4 4.5.6: FMTDATA=1 with fewer data-out bytes than the parameter
    list header (4 bytes; 8 with LONGLIST=1) -> ILLEGAL REQUEST, PARAMETER LIST LENGTH
    ERROR (1A/00); the medium is not formatted."""
    _claimed(lun)
    before = _fill(lun, seed=4)
    cases = [("no data-out", False, b""), ("2 of 4 header bytes", False, bytes(2)),
             ("4 of 8 long header bytes", True, bytes(4))]
    for what, longlist, data_out in cases:
        result = _format(lun, cdb.format_unit(fmtdata=True, longlist=longlist), data_out or None)
        try:
            result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    _expect_unchanged(lun, before, "after FORMAT UNIT refused for a short parameter list")


def test_format_unit_with_unsupported_parameter_data_is_invalid_field_in_parameter_list(
    lun: Lun
) -> None:
    """SBC-3 5.3.2.2: a defect list (DEFECT LIST LENGTH != 0) the device cannot use, or
    IP set while FOV=0, -> ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (26/00) with
    the field pointer (C/D=0) on DEFECT LIST LENGTH / the IP bit; nothing is formatted."""
    _claimed(lun)
    before = _fill(lun, seed=5)
    descriptor = (1000).to_bytes(4, "big") + bytes(4)  # one short block format descriptor
    short_list = bytes([0, 0]) + len(descriptor).to_bytes(2, "big") + descriptor
    long_list = bytes(4) + len(descriptor).to_bytes(4, "big") + descriptor
    cases = [
        ("short header with a defect list", False, short_list,
         (FieldPointer(False, 2, None), FieldPointer(False, 2, 7))),
        ("long header with a defect list", True, long_list,
         (FieldPointer(False, 4, None), FieldPointer(False, 4, 7))),
        ("IP=1 with FOV=0", False, bytes([0, _IP, 0, 0]), (FieldPointer(False, 1, 3),)),
    ]
    for what, longlist, data_out, allowed in cases:
        result = _format(lun, cdb.format_unit(fmtdata=True, longlist=longlist), data_out)
        try:
            result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST)
            pointer = result.decoded.field_pointer if result.decoded else None
            assert pointer in allowed, (
                f"field pointer {pointer}, expected {' or '.join(map(str, allowed))}\n"
                f"{result.describe()}")
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    _expect_unchanged(lun, before, "after FORMAT UNIT refused for its parameter data")
