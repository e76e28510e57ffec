"""REQUEST SENSE (SPC-4 6.39) with nothing pending: NO SENSE in the format the DESC bit asks
for (fixed, SPC-4 4.5.3, or descriptor, 4.5.2), whatever D_SENSE in the Control mode page
says; the allocation length rule (SPC-4 4.2.5.6); and the pending NOT READY condition of a
unit START STOP UNIT has stopped.
"""

from __future__ import annotations

import pytest

from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer, decode_sense
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import (
    DESCRIPTOR_SENSE_CURRENT,
    FIXED_SENSE_CURRENT,
    Asc,
    Opcode,
    SenseKey,
)

pytestmark = pytest.mark.vm

_ALLOC = 252  # the largest ALLOCATION LENGTH SPC-4 recommends for sense data
_CONTROL_PAGE = 0x0A
_D_SENSE = 0x04  # Control mode page byte 2 bit 2
_MODE_SELECT_10_HEADER = bytes(8)  # MODE DATA LENGTH reserved, no block descriptors


def _descriptor_supported(caps: Capabilities) -> bool:
    """Descriptor format sense is supported when D_SENSE (Control mode page) can be set."""
    changeable = caps.mode_changeable.get(_CONTROL_PAGE, b"")
    return len(changeable) > 2 and bool(changeable[2] & _D_SENSE)


def _expect_sense_data(result: CdbResult, descriptor: bool, key: int, asc: int) -> bytes:
    """GOOD, and parameter data that is complete sense data of the asked format (SPC-4
    4.5.2 / 4.5.3: 8 + ADDITIONAL SENSE LENGTH bytes, at least 18 for fixed) with this
    sense key and ASC/ASCQ; the rest of the buffer is residual."""
    __tracebackhide__ = True
    result.expect_good()
    data = result.data
    where = f"\n{result.describe()}"
    code = DESCRIPTOR_SENSE_CURRENT if descriptor else FIXED_SENSE_CURRENT
    assert len(data) >= 8, f"{len(data)} bytes of sense data{where}"
    assert data[0] & 0x7F == code, f"response code 0x{data[0] & 0x7F:02x}, expected " \
                                   f"0x{code:02x}{where}"  # fmt: skip
    assert len(data) == 8 + data[7], (
        f"ADDITIONAL SENSE LENGTH {data[7]} says {8 + data[7]} bytes, {len(data)} returned"
        f"{where}")
    if not descriptor:
        assert data[7] >= 10, f"fixed ADDITIONAL SENSE LENGTH {data[7]} < 10{where}"
    sense = decode_sense(data)
    assert not sense.problems, f"{'; '.join(sense.problems)}{where}"
    assert (sense.key, sense.asc_ascq) == (key, asc), f"sense {sense}{where}"
    assert result.resid == result.data_in_len - len(data)
    return data


def test_request_sense_fixed_format_reports_no_sense(shared_lun: Lun) -> None:
    """SPC-4 6.39, 4.5.3: with nothing pending, DESC=0 returns fixed format sense data
    (70h, ADDITIONAL SENSE LENGTH at least 10, 18 bytes or more) with NO SENSE, NO
    ADDITIONAL SENSE INFORMATION (00/00)."""
    result = shared_lun.cdb(cdb.request_sense(desc=False, alloc_len=_ALLOC), data_in_len=_ALLOC)
    _expect_sense_data(result, False, SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE)


def test_request_sense_descriptor_format_reports_no_sense(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.39, 4.5.2: with nothing pending, DESC=1 returns descriptor format sense
    data (72h, 8 bytes plus its descriptors) with NO SENSE 00/00; a device without
    descriptor format sense (D_SENSE not changeable) may instead refuse DESC=1 with
    ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer byte 1 bit 0."""
    result = shared_lun.cdb(cdb.request_sense(desc=True, alloc_len=_ALLOC), data_in_len=_ALLOC)
    if not _descriptor_supported(caps) and not result.good:
        result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                            field=FieldPointer(True, 1, 0))
        return
    _expect_sense_data(result, True, SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE)


@pytest.mark.parametrize(
    ("desc", "alloc_len"),
    [(False, 0), (False, 4), (False, 13), (False, 17), (True, 4), (True, 7)],
    ids=["fixed-0", "fixed-4", "fixed-13", "fixed-17", "descriptor-4", "descriptor-7"],
)
def test_request_sense_allocation_length_limits_the_transfer(
    shared_lun: Lun, caps: Capabilities, desc: bool, alloc_len: int
) -> None:
    """SPC-4 6.39, 4.2.5.6: the sense data is cut to ALLOCATION LENGTH in a larger buffer
    (exactly its first bytes; the rest is residual); 0 transfers nothing and is not an
    error."""
    if desc and not _descriptor_supported(caps):
        pytest.skip("the device does not offer descriptor format sense (D_SENSE not changeable)")
    full, cut = shared_lun.cdbs([
        (cdb.request_sense(desc=desc, alloc_len=_ALLOC), None, _ALLOC),
        (cdb.request_sense(desc=desc, alloc_len=alloc_len), None, _ALLOC),
    ])  # fmt: skip
    expected = full.expect_good().data[:alloc_len]
    cut.expect_good()
    if not expected and cut.resid == 0 and len(cut.data) == _ALLOC:
        return  # TCMU cannot report a zero-byte transfer: the kernel returns the buffer
    assert len(cut.data) == len(expected), (
        f"{len(cut.data)} bytes for ALLOCATION LENGTH {alloc_len}, expected {len(expected)}")
    assert cut.data == expected
    assert cut.resid == _ALLOC - len(expected)


def test_request_sense_desc_bit_chooses_the_format_after_d_sense_is_set(
    lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.39, 7.5.8 (Control mode page): D_SENSE=1 makes the sense returned with
    CHECK CONDITION descriptor format, but REQUEST SENSE still returns the format its own
    DESC bit asks for: fixed for DESC=0, descriptor for DESC=1."""
    caps.require(Opcode.MODE_SELECT_10)
    if not _descriptor_supported(caps) or _CONTROL_PAGE not in caps.mode_current:
        pytest.skip("D_SENSE in the Control mode page is not changeable")
    page = bytearray(caps.mode_current[_CONTROL_PAGE])
    page[0] &= 0x3F  # PS is reserved in MODE SELECT
    page[2] |= _D_SENSE
    parameters = _MODE_SELECT_10_HEADER + bytes(page)
    lun.cdb(cdb.mode_select_10(len(parameters)), data_out=parameters).expect_good()
    refused, fixed, descriptor = lun.cdbs([
        (cdb.inquiry(evpd=False, page=0x80, alloc_len=96), None, 96),
        (cdb.request_sense(desc=False, alloc_len=_ALLOC), None, _ALLOC),
        (cdb.request_sense(desc=True, alloc_len=_ALLOC), None, _ALLOC),
    ])  # fmt: skip
    # The setting took: CHECK CONDITION sense is now in descriptor format.
    refused.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                         descriptor_format=True)
    _expect_sense_data(fixed, False, SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE)
    _expect_sense_data(descriptor, True, SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE)


def test_request_sense_reports_not_ready_while_the_unit_is_stopped(
    lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.39, SBC-3 5.25: REQUEST SENSE is served while START STOP UNIT has the unit
    stopped and returns (GOOD, in its parameter data) the condition medium access would
    get: NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (02/04/02);
    after START=1 it is NO SENSE again."""
    caps.require(Opcode.START_STOP_UNIT)
    formats = [False, True] if _descriptor_supported(caps) else [False]
    commands = [(cdb.start_stop_unit(start=False), None, 0)]
    commands += [(cdb.request_sense(desc=d, alloc_len=_ALLOC), None, _ALLOC) for d in formats]
    commands += [(cdb.start_stop_unit(start=True), None, 0)]
    commands += [(cdb.request_sense(desc=d, alloc_len=_ALLOC), None, _ALLOC) for d in formats]
    results = lun.cdbs(commands)
    n = len(formats)
    results[0].expect_good()
    for desc, result in zip(formats, results[1 : 1 + n], strict=True):
        _expect_sense_data(result, desc, SenseKey.NOT_READY,
                           Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED)
    results[1 + n].expect_good()
    for desc, result in zip(formats, results[2 + n :], strict=True):
        _expect_sense_data(result, desc, SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE)
