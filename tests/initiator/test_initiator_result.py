"""CdbResult: the dict round trip, describe() and the expect_* assertions."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tcmu_harness.initiator.result import CdbResult, opcode_name
from tcmu_harness.scsi.constants import Asc, SenseKey, Status

LBA_SENSE = bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 21 00 00 00 00 00")


def check(sense: bytes = LBA_SENSE, **kw: Any) -> CdbResult:
    fields: dict[str, Any] = {
        "cdb": bytes.fromhex("28 00 00 00 10 00 00 00 01 00"),
        "status": Status.CHECK_CONDITION,
        "sense": sense,
        "resid": 512,
        "data_in_len": 512,
        "device": "/dev/sg1",
        "duration_s": 0.0012,
        "info": 1,
    }
    return CdbResult(**(fields | kw))


def good(**kw: Any) -> CdbResult:
    fields: dict[str, Any] = {"cdb": bytes(6), "status": Status.GOOD}
    return CdbResult(**(fields | kw))


def test_dict_round_trip_keeps_bytes() -> None:
    r = check(data=b"\x01\x02", resid=510, host_status=0, driver_status=8)
    d = r.to_dict()
    assert isinstance(d["cdb"], bytes) and isinstance(d["sense"], bytes)
    assert isinstance(d["data"], bytes)
    assert CdbResult.from_dict(d) == r


def test_dict_survives_a_json_codec_that_handles_bytes() -> None:
    # The agent protocol's way: bytes as {"$b": base64}; everything else plain JSON.
    def default(o: object) -> object:
        if isinstance(o, bytes):
            return {"$b": base64.b64encode(o).decode()}
        raise TypeError(type(o))

    def hook(o: dict[str, Any]) -> object:
        return base64.b64decode(o["$b"]) if set(o) == {"$b"} else o

    r = check(data=bytes(range(7)))
    wire = json.dumps(r.to_dict(), default=default)
    assert CdbResult.from_dict(json.loads(wire, object_hook=hook)) == r


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="bogus"):
        CdbResult.from_dict(good().to_dict() | {"bogus": 1})


def test_decoded() -> None:
    assert good().decoded is None
    decoded = check().decoded
    assert decoded is not None and decoded.asc == 0x21


def test_describe() -> None:
    text = check().describe()
    lines = text.splitlines()
    assert lines[0] == "CDB: 28 00 00 00 10 00 00 00 01 00 (READ(10)) on /dev/sg1"
    assert lines[1] == "status: CHECK CONDITION (0x02)"
    assert lines[2] == ("sense: ILLEGAL REQUEST, asc/ascq 21/00 "
                        "(LOGICAL BLOCK ADDRESS OUT OF RANGE)")
    assert lines[3] == "sense bytes: " + LBA_SENSE.hex(" ")
    assert lines[4] == "data-in: 0 of 512 bytes, resid 512"
    assert lines[5] == ("host status: DID_OK, driver status: DRIVER_OK, info 0x1, "
                        "1.200 ms")


def test_describe_data_preview_and_transport_errors() -> None:
    r = good(data=bytes(range(40)), data_in_len=64, resid=24, host_status=3,
             driver_status=0x06)
    text = r.describe()
    assert "data-in: 40 of 64 bytes, resid 24: 00 01 02" in text
    assert text.count(" ...") == 1  # preview cut at 32 bytes
    assert "host status: DID_TIME_OUT, driver status: DRIVER_TIMEOUT" in text
    assert r.timed_out and not r.good
    assert "data-out: 4096 bytes, resid 0" in good(data_out_len=4096).describe()
    assert "none returned with CHECK CONDITION" in check(sense=b"").describe()
    assert "UNKNOWN STATUS 0x7e" in good(status=0x7E).describe()


def test_opcode_names() -> None:
    assert opcode_name(bytes.fromhex("9e 10")) == "READ CAPACITY(16)"
    assert opcode_name(bytes.fromhex("9e 0c")) == "SERVICE ACTION IN(16)"
    assert opcode_name(bytes.fromhex("a3 0c")) == "REPORT SUPPORTED OPERATION CODES"
    assert opcode_name(bytes.fromhex("5f 01")) == "PERSISTENT RESERVE OUT"
    assert opcode_name(b"\xff") == "opcode 0xff"
    assert opcode_name(b"") == "empty CDB"


def test_expect_good() -> None:
    r = good()
    assert r.expect_good() is r
    with pytest.raises(AssertionError) as info:
        check().expect_good()
    assert "expected GOOD status" in str(info.value)
    assert "LOGICAL BLOCK ADDRESS OUT OF RANGE" in str(info.value)
    with pytest.raises(AssertionError, match="DID_TIME_OUT"):
        good(host_status=3).expect_good()
    good(driver_status=8).expect_good()  # DRIVER_SENSE alone is not a failure


def test_expect_check() -> None:
    r = check()
    assert r.expect_check(SenseKey.ILLEGAL_REQUEST, 0x21, 0x00) is r
    r.expect_check(SenseKey.ILLEGAL_REQUEST)
    r.expect_check(SenseKey.ILLEGAL_REQUEST, 0x21)
    r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    with pytest.raises(AssertionError) as info:
        r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    assert str(info.value).startswith("expected CHECK CONDITION, ILLEGAL REQUEST, asc 24/00\n")
    with pytest.raises(AssertionError, match="asc 21/01"):
        r.expect_check(SenseKey.ILLEGAL_REQUEST, 0x21, 0x01)
    with pytest.raises(AssertionError, match="expected CHECK CONDITION, NOT READY"):
        r.expect_check(SenseKey.NOT_READY)
    with pytest.raises(AssertionError, match="status: GOOD"):
        good().expect_check(SenseKey.ILLEGAL_REQUEST)
    with pytest.raises(AssertionError):
        check(sense=b"\x70\x00").expect_check(SenseKey.NO_SENSE)  # invalid sense never matches
    with pytest.raises(ValueError, match="ascq"):
        r.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE, 0)


def test_expect_status() -> None:
    r = good(status=Status.RESERVATION_CONFLICT)
    assert r.expect_status(Status.RESERVATION_CONFLICT) is r
    with pytest.raises(AssertionError, match="expected status BUSY"):
        r.expect_status(Status.BUSY)


def _check(sense: bytes) -> CdbResult:
    return CdbResult(cdb=b"\x28" + bytes(9), status=Status.CHECK_CONDITION, sense=sense)


def test_expect_check_fails_on_a_sense_layout_deviation() -> None:
    bad = bytearray(18)
    bad[0], bad[2], bad[7], bad[12] = 0x70, SenseKey.ILLEGAL_REQUEST, 6, 0x24
    with pytest.raises(AssertionError, match="sense layout: additional sense length 6 < 10"):
        _check(bytes(bad)).expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)


def test_expect_check_information_field_pointer_and_format() -> None:
    from tcmu import sense as build
    from tcmu_harness.initiator.sense import FieldPointer

    miscompare = _check(build.fixed(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY,
                                    information=17))
    miscompare.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=17,
                            field=None, descriptor_format=False)
    with pytest.raises(AssertionError, match="INFORMATION 0x11, expected 0x10"):
        miscompare.expect_check(SenseKey.MISCOMPARE, information=16)
    with pytest.raises(AssertionError, match="descriptor format expected"):
        miscompare.expect_check(SenseKey.MISCOMPARE, descriptor_format=True)
    pointer = _check(build.descriptor(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                      field=build.FieldPointer(1, 7)))
    pointer.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, information=None,
                         field=FieldPointer(in_cdb=True, byte=1, bit=7), descriptor_format=True)
    with pytest.raises(AssertionError, match="field pointer CDB byte 1 bit 7, expected None"):
        pointer.expect_check(SenseKey.ILLEGAL_REQUEST, field=None)
