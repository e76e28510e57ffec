"""READ DEFECT DATA(10) and READ DEFECT DATA(12) (SBC-3 5.17, 5.18): the defect list
header (and descriptors, if the device has defects) of the primary (PLIST) and grown
(GLIST) defect lists.

Covered: the header layout (reserved byte 0, PLISTV / GLISTV / DEFECT LIST FORMAT echoing
REQ_PLIST / REQ_GLIST / the requested format for every combination and the defined
formats; no descriptors when neither list is requested), DEFECT LIST LENGTH consistent
with the bytes returned (whole 8-byte descriptors), the residual; ALLOCATION LENGTH
truncation (0, part of the header, the header) with a larger data-in buffer; refusal
when the command is not claimed.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_BUFFER = 512  # data-in buffer, larger than any allocation length the truncation tests use
_FULL_ALLOC = 4096  # "everything": the header and any descriptors of a small list
# DEFECT LIST FORMAT (SBC-3 6.2.1): short block, long block, bytes from index, physical
# sector; each descriptor is 8 bytes.
_FORMATS = (0b000, 0b011, 0b100, 0b101)
_DESCRIPTOR = 8
_PLISTV = 0x10
_GLISTV = 0x08


@dataclasses.dataclass(frozen=True)
class ReadDefectData:
    """One of the two CDB sizes, with what differs between them."""

    size: int
    opcode: int
    header: int  # bytes of the defect list header
    length_offset: int  # DEFECT LIST LENGTH: its first byte
    length_size: int
    truncations: tuple[int, ...]  # allocation lengths the truncation test uses

    def cdb(self, plist: bool, glist: bool, fmt: int, alloc_len: int) -> bytes:
        build = cdb.read_defect_data_10 if self.size == 10 else cdb.read_defect_data_12
        return build(plist, glist, fmt, alloc_len)

    def list_length(self, data: bytes) -> int:
        return int.from_bytes(data[self.length_offset : self.length_offset + self.length_size],
                              "big")


RDD10 = ReadDefectData(10, Opcode.READ_DEFECT_DATA_10, 4, 2, 2, (0, 2, 4))
RDD12 = ReadDefectData(12, Opcode.READ_DEFECT_DATA_12, 8, 4, 4, (0, 4, 8))


@pytest.fixture(params=[RDD10, RDD12], ids=["read-defect-data-10", "read-defect-data-12"])
def command(request: pytest.FixtureRequest) -> ReadDefectData:
    return request.param


@pytest.fixture
def rdd(command: ReadDefectData, caps: Capabilities) -> ReadDefectData:
    """The command, skipping unless the device claims it."""
    caps.require(command.opcode)
    return command


def _check_header(rdd: ReadDefectData, result: CdbResult, plist: bool, glist: bool,
                  fmt: int) -> None:
    __tracebackhide__ = True
    what = f"REQ_PLIST={int(plist)} REQ_GLIST={int(glist)} format {fmt:03b}b"
    result.expect_good()
    data = result.data
    assert len(data) >= rdd.header, f"{what}: {len(data)} bytes, less than the header"
    assert data[0] == 0, f"{what}: reserved byte 0 is 0x{data[0]:02x}"
    flags = (_PLISTV if plist else 0) | (_GLISTV if glist else 0) | fmt
    assert data[1] == flags, (
        f"{what}: byte 1 is 0x{data[1]:02x}, expected PLISTV={int(plist)} GLISTV={int(glist)} "
        f"DEFECT LIST FORMAT {fmt:03b}b (0x{flags:02x})")
    length = rdd.list_length(data)
    assert len(data) == rdd.header + length, (
        f"{what}: DEFECT LIST LENGTH {length} but {len(data)} bytes returned "
        f"(header {rdd.header})")
    assert length % _DESCRIPTOR == 0, f"{what}: DEFECT LIST LENGTH {length} is not whole " \
        f"{_DESCRIPTOR}-byte descriptors"
    if not plist and not glist:
        assert length == 0, f"{what}: descriptors returned though no list was requested"
    assert result.resid == _FULL_ALLOC - len(data), (
        f"{what}: residual {result.resid}, expected {_FULL_ALLOC - len(data)}")


def test_read_defect_data_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities, command: ReadDefectData
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00)."""
    caps.require_absent(command.opcode)
    result = shared_lun.cdb(command.cdb(True, True, 0, 64), data_in_len=64)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


def test_read_defect_data_header_echoes_the_requested_lists_and_format(
    shared_lun: Lun, rdd: ReadDefectData
) -> None:
    """SBC-3 5.17/5.18: byte 0 reserved; PLISTV and GLISTV say which lists are returned
    (those REQ_PLIST / REQ_GLIST ask for), DEFECT LIST FORMAT the format of the
    descriptors (the requested one); DEFECT LIST LENGTH counts the descriptor bytes that
    follow the header; with neither list requested only the header is returned."""
    combos = list(itertools.product((False, True), (False, True), _FORMATS))
    results = shared_lun.cdbs([(rdd.cdb(p, g, f, _FULL_ALLOC), None, _FULL_ALLOC)
                               for p, g, f in combos])
    for (plist, glist, fmt), result in zip(combos, results, strict=True):
        _check_header(rdd, result, plist, glist, fmt)


@pytest.mark.parametrize("part", [0, 1, 2], ids=["alloc-0", "alloc-part-header",
                                                 "alloc-header"])
def test_read_defect_data_allocation_length_truncates(
    shared_lun: Lun, rdd: ReadDefectData, part: int
) -> None:
    """SPC-4 4.2.5.6 / SBC-3 5.17/5.18: ALLOCATION LENGTH caps the data-in: exactly the
    first ALLOCATION LENGTH bytes of the full answer, the rest of a larger buffer left
    as residual; ALLOCATION LENGTH 0 transfers nothing (and is not an error)."""
    alloc = rdd.truncations[part]
    full, cut = shared_lun.cdbs([
        (rdd.cdb(True, True, 0, _FULL_ALLOC), None, _FULL_ALLOC),
        (rdd.cdb(True, True, 0, alloc), None, _BUFFER),
    ])  # fmt: skip
    full.expect_good()
    cut.expect_good()
    if alloc == 0 and cut.data:
        # TCMU on Linux cannot report a 0-byte data-in (target_core_user ignores READ_LEN
        # 0 and returns the whole buffer): then it must at least carry nothing of another
        # command's data.
        assert cut.data == bytes(_BUFFER), (
            f"ALLOCATION LENGTH 0 returned {len(cut.data)} bytes that are not zeroes "
            f"(another command's data?): {cut.data[:32].hex(' ')}")
        return
    expected = full.data[:alloc]
    assert cut.data == expected, (
        f"ALLOCATION LENGTH {alloc}: got {cut.data.hex(' ') or 'nothing'}, expected "
        f"{expected.hex(' ') or 'nothing'}")
    assert cut.resid == _BUFFER - len(expected), (
        f"ALLOCATION LENGTH {alloc}: residual {cut.resid}, expected {_BUFFER - len(expected)}")
