"""initiator.sg3 end to end: the real sg3_utils binaries, run through the wrappers, against
the fakesg shim. Checks what the tools sent (the shim's log), exit codes and parsing."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil

import pytest
from initiator_fakesg import FakeSg

from tcmu_harness.initiator import cdb, sg3
from tcmu_harness.scsi.constants import PrOutAction, PrType

pytestmark = pytest.mark.skipif(shutil.which("sg_raw") is None, reason="sg3-utils not installed")

D = "/dev/null"
INQUIRY = (bytes([0, 0, 6, 0x12, 91, 0x08, 0, 0x02]) + b"LIO-ORG tcmu-harness    0.1 "
           + bytes(60))
SERIAL_PAGE = bytes([0, 0x80, 0, 8]) + b"SN012345"
VPD_PAGES = bytes([0, 0, 0, 3, 0x00, 0x80, 0x83])


def fixed_sense(key: int, asc: int, ascq: int = 0, info: int | None = None) -> str:
    raw = bytearray(18)
    raw[0] = 0x70 | (0x80 if info is not None else 0)
    raw[2], raw[7], raw[12], raw[13] = key, 10, asc, ascq
    if info is not None:
        raw[3:7] = info.to_bytes(4, "big")
    return raw.hex()


def test_sg_inq(fakesg: FakeSg) -> None:
    fakesg.rules(f"120100 00 - {VPD_PAGES.hex()}\n120180 00 - {SERIAL_PAGE.hex()}\n"
                 f"1200 00 - {INQUIRY.hex()}\n")
    r = sg3.sg_inq(D)
    assert r.ok and r.exit is sg3.Sg3Exit.OK
    assert (r.vendor, r.product, r.revision, r.serial) == ("LIO-ORG", "tcmu-harness", "0.1",
                                                          "SN012345")
    assert r.peripheral_type == 0 and r.flags["CmdQue"] == 1


def test_sg_inq_unit_attention(fakesg: FakeSg) -> None:
    fakesg.rules(f"12 02 {fixed_sense(6, 0x29)} -\n")
    r = sg3.sg_inq(D)
    assert r.exit_code == sg3.Sg3Exit.UNIT_ATTENTION and r.vendor is None
    assert "Unit attention" in r.stderr
    assert "exit 6" in r.describe()


def test_sg_vpd(fakesg: FakeSg) -> None:
    fakesg.rules(f"120100 00 - {VPD_PAGES.hex()}\n120180 00 - {SERIAL_PAGE.hex()}\n")
    assert sg3.sg_vpd(D, 0x80).data == SERIAL_PAGE
    assert sg3.sg_vpd(D, "sn").data == SERIAL_PAGE
    assert sg3.sg_vpd(D).data == VPD_PAGES


def test_sg_readcap(fakesg: FakeSg) -> None:
    rc16 = (99).to_bytes(8, "big") + (4096).to_bytes(4, "big") + bytes([0, 0, 0x80]) + bytes(17)
    fakesg.rules(f"25 00 - {(99).to_bytes(4, 'big').hex()}00001000\n9e10 00 - {rc16.hex()}\n")
    r10 = sg3.sg_readcap(D)
    assert (r10.last_lba, r10.blocks, r10.block_size, r10.lbpme) == (99, 100, 4096, None)
    r16 = sg3.sg_readcap(D, long=True)
    assert (r16.last_lba, r16.blocks, r16.block_size, r16.lbpme) == (99, 100, 4096, 1)
    assert [c.cdb[:2] for c in fakesg.log()] == [bytes([0x25, 0]), bytes([0x9E, 0x10])]


def test_sg_readcap_lba_out_of_range(fakesg: FakeSg) -> None:
    fakesg.rules(f"25 02 {fixed_sense(5, 0x21)} -\n")
    r = sg3.sg_readcap(D)
    assert r.exit_code == sg3.Sg3Exit.LBA_OUT_OF_RANGE and r.blocks is None


def test_sg_modes(fakesg: FakeSg) -> None:
    control = bytes([0x0A, 0x0A, 0x04]) + bytes(9)  # D_SENSE=1
    ms10 = (len(control) + 6).to_bytes(2, "big") + bytes([0, 0x10, 0, 0, 0, 0]) + control
    fakesg.rules(f"12 00 - {INQUIRY.hex()}\n5a 00 - {ms10.hex()}\n")
    r = sg3.sg_modes(D, 0x0A, dbd=True, pc=1)
    assert r.ok and r.dpofua == 1 and r.pages == (control,) and r.page(0x0A) == control
    sent = fakesg.log()[-1].cdb
    assert sent[:4] == bytes([0x5A, 0x08, 0x4A, 0x00])  # DBD; PC=1, page 0Ah; subpage 0


def test_sg_turs(fakesg: FakeSg) -> None:
    fakesg.rules("00 00 - -\n")
    assert sg3.sg_turs(D).ready
    fakesg.rules(f"00 02 {fixed_sense(2, 0x04, 0x00)} -\n")
    r = sg3.sg_turs(D)
    assert not r.ready and r.exit_code == sg3.Sg3Exit.NOT_READY and r.errors == 1


def test_sg_luns(fakesg: FakeSg) -> None:
    luns = (16).to_bytes(4, "big") + bytes(4) + bytes(8) + bytes([0, 3]) + bytes(6)
    fakesg.rules(f"a0 00 - {luns.hex()}\n")
    r = sg3.sg_luns(D, select=2)
    assert r.luns == (0, 3)
    assert fakesg.log()[0].cdb[2] == 2  # SELECT REPORT


def test_sg_raw_data_in(fakesg: FakeSg) -> None:
    fakesg.rules(f"12 00 - {INQUIRY.hex()}\n")
    r = sg3.sg_raw(D, cdb.inquiry(alloc_len=200), data_in_len=200)
    assert r.ok and r.status == 0 and r.data == INQUIRY and r.data_len == len(INQUIRY)


def test_sg_raw_data_out(fakesg: FakeSg) -> None:
    fakesg.rules("2a 00 - -\n")
    payload = bytes(range(256)) * 2
    r = sg3.sg_raw(D, cdb.write_10(3, 1), data_out=payload, cmd_timeout=7)
    assert r.ok and r.data == b""
    [call] = fakesg.log()
    assert call.cdb == cdb.write_10(3, 1) and call.data_out == payload
    assert call.timeout_ms == 7000


def test_sg_raw_check_condition(fakesg: FakeSg) -> None:
    sense = fixed_sense(5, 0x24, 0)
    fakesg.rules(f"28 02 {sense} -\n")
    r = sg3.sg_raw(D, cdb.read_10(0, 1), data_in_len=512)
    assert r.exit_code == sg3.Sg3Exit.ILLEGAL_REQUEST
    assert r.status == 2 and r.sense == bytes.fromhex(sense) and r.data == b""


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        (f"02 {fixed_sense(5, 0x20)} -", sg3.Sg3Exit.INVALID_OP),
        (f"02 {fixed_sense(5, 0x21)} -", sg3.Sg3Exit.LBA_OUT_OF_RANGE),
        (f"02 {fixed_sense(6, 0x29)} -", sg3.Sg3Exit.UNIT_ATTENTION),
        (f"02 {fixed_sense(0xE, 0x1D, info=3)} -", sg3.Sg3Exit.MISCOMPARE),
        ("18 - -", sg3.Sg3Exit.RESERVATION_CONFLICT),
        ("08 - -", sg3.Sg3Exit.OTHER),  # BUSY: sg_raw has no category of its own for it
    ],
)
def test_sg_raw_exit_codes(fakesg: FakeSg, rule: str, code: int) -> None:
    fakesg.rules(f"00 {rule}\n")
    assert sg3.sg_raw(D, cdb.test_unit_ready()).exit_code == code


def test_sg_persist(fakesg: FakeSg) -> None:
    keys = (3).to_bytes(4, "big") + (8).to_bytes(4, "big") + (0xABC).to_bytes(8, "big")
    resv = ((3).to_bytes(4, "big") + (16).to_bytes(4, "big") + (0xABC).to_bytes(8, "big")
            + bytes([0, 0, 0, 0, 0, 0x05, 0, 0]))
    fakesg.rules(f"5e00 00 - {keys.hex()}\n5e01 00 - {resv.hex()}\n5f 00 - -\n")
    assert sg3.sg_persist_read_keys(D).keys == (0xABC,)
    r = sg3.sg_persist_read_reservation(D)
    assert r.held and r.key == 0xABC and r.pr_type == PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY
    out = sg3.sg_persist_out(D, PrOutAction.RESERVE, key=0xABC,
                             pr_type=PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, aptpl=True)
    assert out.ok
    call = fakesg.log()[-1]
    assert call.cdb == cdb.persistent_reserve_out(PrOutAction.RESERVE, pr_type=5)
    assert call.data_out == cdb.pr_out_parameters(0xABC, aptpl=True)


def test_sg_persist_out_register_and_conflict(fakesg: FakeSg) -> None:
    fakesg.rules("5f00 00 - -\n5f 18 - -\n")
    assert sg3.sg_persist_out(D, PrOutAction.REGISTER, sa_key=0x1122334455667788).ok
    assert fakesg.log()[-1].data_out == cdb.pr_out_parameters(0, 0x1122334455667788)
    r = sg3.sg_persist_out(D, PrOutAction.RESERVE, key=1, pr_type=PrType.EXCLUSIVE_ACCESS)
    assert r.exit_code == sg3.Sg3Exit.RESERVATION_CONFLICT
    with pytest.raises(ValueError, match="REGISTER_AND_MOVE"):
        sg3.sg_persist_out(D, PrOutAction.REGISTER_AND_MOVE)


def test_sg_write_same(fakesg: FakeSg) -> None:
    fakesg.rules("- 00 - -\n")
    block = b"\xa5" * 4096
    assert sg3.sg_write_same(D, 16, 8, data=block).ok
    [call] = fakesg.log()
    assert call.cdb == cdb.write_same_10(16, 8) and call.data_out == block
    assert sg3.sg_write_same(D, 16, 8, ndob=True, cdb_size=16).ok
    assert fakesg.log()[-1].cdb == cdb.write_same_16(16, 8, ndob=True)
    assert fakesg.log()[-1].data_out == b""


def test_sg_unmap(fakesg: FakeSg) -> None:
    fakesg.rules("42 00 - -\n12 00 - -\n")
    r = sg3.sg_unmap(D, [(0, 8), (100, 16)])
    assert r.ok
    assert "commence" not in r.stdout  # no 15 s confirmation countdown
    call = fakesg.log()[-1]
    assert call.cdb[0] == 0x42
    assert call.data_out == cdb.unmap_parameter_list([(0, 8), (100, 16)])


def test_sg_compare_and_write(fakesg: FakeSg) -> None:
    fakesg.rules(f"89 02 {fixed_sense(0xE, 0x1D, info=17)} -\n")
    compare, write = bytes(512), b"\x01" * 512
    r = sg3.sg_compare_and_write(D, 9, compare, write, fua=True)
    assert r.exit_code == sg3.Sg3Exit.MISCOMPARE and r.miscompare_offset == 17
    [call] = fakesg.log()
    assert call.cdb == cdb.compare_and_write(9, 1, fua=True)
    assert call.data_out == compare + write


def test_sg_sync_and_verify(fakesg: FakeSg) -> None:
    fakesg.rules(f"2f 02 {fixed_sense(0xE, 0x1D)} -\n- 00 - -\n")
    assert sg3.sg_sync(D, 4, 8, sixteen=True, immed=True).ok
    assert fakesg.log()[-1].cdb == cdb.synchronize_cache_16(4, 8, immed=True)
    assert sg3.sg_verify(D, 5, 2, sixteen=True).ok
    assert fakesg.log()[-1].cdb == cdb.verify_16(5, 2)
    r = sg3.sg_verify(D, 0, 1, data=bytes(512))
    assert r.exit_code == sg3.Sg3Exit.MISCOMPARE
    assert fakesg.log()[-1].cdb == cdb.verify_10(0, 1, bytchk=1)
    assert fakesg.log()[-1].data_out == bytes(512)


def test_run_tool_reports_failures_without_raising() -> None:
    r = sg3.run_tool("sg_readcap")  # no DEVICE
    assert r.exit_code == sg3.Sg3Exit.SYNTAX_ERROR and not r.ok
    missing = sg3.sg_readcap("/nonexistent/sg9")
    assert missing.exit_code == sg3.Sg3Exit.OS_BASE + 2  # 50 + ENOENT
    assert missing.exit == 52  # no member for it: stays an int


def test_run_tool_timeout_raises() -> None:
    with pytest.raises(TimeoutError, match="sg_turs"):
        sg3.run_tool("sg_turs", "--delay=3000", "--number=2", D, timeout=0.5)


def test_results_are_json_able(fakesg: FakeSg) -> None:
    """initiator.guest sends wrapper results to the host as JSON (bytes as base64)."""
    control = bytes([0x0A, 0x0A]) + bytes(10)
    ms10 = (len(control) + 6).to_bytes(2, "big") + bytes(6) + control
    luns = (8).to_bytes(4, "big") + bytes(12)
    fakesg.rules(f"1200 00 - {INQUIRY.hex()}\n5a 00 - {ms10.hex()}\na0 00 - {luns.hex()}\n"
                 "- 00 - -\n")

    def encode(o: object) -> object:
        if isinstance(o, bytes):
            return base64.b64encode(o).decode()
        raise TypeError(type(o))

    for r in (sg3.sg_inq(D), sg3.sg_modes(D, 0x0A), sg3.sg_luns(D), sg3.sg_readcap(D),
              sg3.sg_raw(D, cdb.inquiry(), data_in_len=96), sg3.sg_persist_read_keys(D)):
        json.dumps(dataclasses.asdict(r), default=encode)
