"""Smoke suite: the handful of commands any TCMU block handler must get right.

Each test sends real CDBs through SG_IO on the LUN's /dev/sg node in the guest (some
also through sg3_utils) and checks status, sense key, ASC/ASCQ and data exactly. It
runs against whatever handler --tcmu-handler names; the default is the reference RAM disk.
"""

from __future__ import annotations

import struct

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, PeripheralType, SenseKey, Status

pytestmark = pytest.mark.vm

VENDOR_UNIQUE_OPCODE = 0xE7  # vendor-specific range: no SBC device has to implement it


def _pattern(blocks: int, block_size: int, seed: int) -> bytes:
    """Distinct bytes per block and offset, so a misplaced block cannot pass."""
    return b"".join(
        struct.pack(">IIQ", seed, lba, lba * 0x9E3779B97F4A7C15 & (2**64 - 1)) * (block_size // 16)
        for lba in range(blocks)
    )


def test_test_unit_ready_is_good_and_reaches_the_handler(lun: Lun) -> None:
    result = lun.cdb(cdb.test_unit_ready()).expect_good()
    assert result.data == b""
    seen = [c for c in lun.handler_commands() if c.opcode == Opcode.TEST_UNIT_READY]
    assert seen, "TEST UNIT READY never reached the handler"
    assert seen[-1].status == Status.GOOD


def test_standard_inquiry_describes_a_direct_access_device(lun: Lun) -> None:
    data = lun.cdb(cdb.inquiry(alloc_len=96), data_in_len=96).expect_good().data
    assert data[0] == (0 << 5) | PeripheralType.DIRECT_ACCESS  # qualifier 0, SBC device
    assert data[3] & 0x0F == 2  # RESPONSE DATA FORMAT: 2 is the only valid value
    additional_length = data[4]
    assert additional_length >= 31  # standard data is at least 36 bytes
    assert len(data) == min(96, additional_length + 5)
    for field, (start, end) in {"vendor": (8, 16), "product": (16, 32),
                                "revision": (32, 36)}.items():
        text = data[start:end]
        assert all(0x20 <= b < 0x7F for b in text), f"{field} {text!r} is not printable ASCII"


def test_inquiry_allocation_length_truncates(lun: Lun) -> None:
    result = lun.cdb(cdb.inquiry(alloc_len=5), data_in_len=5).expect_good()
    assert len(result.data) == 5
    assert result.data[0] == PeripheralType.DIRECT_ACCESS


def test_sg_inq_agrees_with_sg_io(lun: Lun) -> None:
    raw = lun.cdb(cdb.inquiry(alloc_len=36), data_in_len=36).expect_good().data
    tool = lun.sg3.sg_inq()
    assert tool.exit_code == 0, tool.stderr
    assert tool.peripheral_type == PeripheralType.DIRECT_ACCESS
    assert tool.vendor == raw[8:16].decode().strip()
    assert tool.product == raw[16:32].decode().strip()


def test_read_capacity_10_reports_size_and_block_length(lun: Lun) -> None:
    data = lun.cdb(cdb.read_capacity_10(), data_in_len=8).expect_good().data
    assert struct.unpack(">II", data) == (lun.blocks - 1, lun.block_size)


def test_read_capacity_16_reports_size_and_block_length(lun: Lun) -> None:
    data = lun.cdb(cdb.read_capacity_16(alloc_len=32), data_in_len=32).expect_good().data
    assert len(data) == 32
    assert struct.unpack_from(">QI", data) == (lun.blocks - 1, lun.block_size)


def test_sg_readcap_agrees(lun: Lun) -> None:
    tool = lun.sg3.sg_readcap()
    assert tool.exit_code == 0, tool.stderr
    assert (tool.last_lba, tool.blocks, tool.block_size) == (
        lun.blocks - 1, lun.blocks, lun.block_size,
    )


@pytest.mark.parametrize("lba", [0, 100, "last-8"])
def test_write_10_then_read_10_returns_the_data(lun: Lun, lba: int | str) -> None:
    start = lun.blocks - 8 if lba == "last-8" else int(lba)
    data = _pattern(8, lun.block_size, seed=start + 1)
    lun.cdb(cdb.write_10(start, 8), data_out=data).expect_good()
    back = lun.cdb(cdb.read_10(start, 8), data_in_len=len(data)).expect_good()
    assert back.resid == 0
    assert back.data == data


def test_every_block_of_a_batch_reads_back_what_was_written(lun: Lun) -> None:
    size = lun.block_size
    lbas = [0, 1, 63, 64, 4095, lun.blocks // 2, lun.blocks - 1]
    writes = [(cdb.write_10(lba, 1), _pattern(1, size, seed=lba), 0) for lba in lbas]
    for result in lun.cdbs(writes):
        result.expect_good()
    reads = lun.cdbs([(cdb.read_10(lba, 1), None, size) for lba in lbas])
    assert [r.expect_good().data for r in reads] == [_pattern(1, size, seed=lba) for lba in lbas]


def test_write_does_not_touch_neighbouring_blocks(lun: Lun) -> None:
    size = lun.block_size
    before = lun.cdb(cdb.read_10(9, 3), data_in_len=3 * size).expect_good().data
    lun.cdb(cdb.write_10(10, 1), data_out=b"\xa5" * size).expect_good()
    after = lun.cdb(cdb.read_10(9, 3), data_in_len=3 * size).expect_good().data
    assert after == before[:size] + b"\xa5" * size + before[2 * size :]


@pytest.mark.parametrize(
    ("lba", "blocks"), [("end", 1), ("end-1", 2), ("max", 1)],
    ids=["first-lba-past-the-end", "spanning-the-end", "lba-0xffffffff"],
)
def test_read_beyond_the_last_lba_is_lba_out_of_range(lun: Lun, lba: str, blocks: int) -> None:
    start = {"end": lun.blocks, "end-1": lun.blocks - 1, "max": 0xFFFFFFFF}[lba]
    result = lun.cdb(cdb.read_10(start, blocks), data_in_len=blocks * lun.block_size)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


def test_write_beyond_the_last_lba_is_lba_out_of_range(lun: Lun) -> None:
    result = lun.cdb(cdb.write_10(lun.blocks, 1), data_out=b"\0" * lun.block_size)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


def test_unsupported_opcode_is_invalid_command_operation_code(lun: Lun) -> None:
    result = lun.cdb(bytes([VENDOR_UNIQUE_OPCODE]) + bytes(9))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


def test_sg_raw_reports_unsupported_opcode_with_its_exit_code(lun: Lun) -> None:
    tool = lun.sg3.sg_raw(cdb=bytes([VENDOR_UNIQUE_OPCODE]) + bytes(9))
    assert tool.exit_code == 9, f"sg_raw exit {tool.exit_code} (9 = invalid opcode): {tool.stderr}"
    assert tool.status == Status.CHECK_CONDITION


def test_report_luns_is_answered_by_the_kernel_not_the_handler(lun: Lun) -> None:
    data = lun.cdb(cdb.report_luns(alloc_len=64), data_in_len=64).expect_good().data
    assert struct.unpack_from(">I", data)[0] == 8  # LUN LIST LENGTH: exactly one LUN
    assert data[8:16] == bytes(8)  # LUN 0
    assert Opcode.REPORT_LUNS not in {c.opcode for c in lun.handler_commands()}
