"""TCMU ring semantics seen from the initiator (drivers/target/target_core_user.c): the
status, sense and data length a handler writes into the ring entry, and what the kernel
answers for a handler slower than attrib/cmd_time_out.

The helper handlers are in kernel_handlers.py (vendor-specific 10-byte opcodes).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status
from tcmu_harness.suites.kernel.kernel_handlers import (
    ODD_SENSE,
    RECORD_FORMAT,
    RECORD_OPCODE,
    RECORDED_OPCODE,
    SENSE_OPCODE,
    SENSE_WITH_DATA_OPCODE,
    SHORT_READ_BYTES,
    SHORT_READ_DATA,
    SHORT_READ_OPCODE,
    SLOW_OPCODE,
    UNKNOWN_OP_OPCODE,
)

pytestmark = pytest.mark.vm

VENDOR_UNIQUE_OPCODE = 0xE7  # no handler under test implements it
CMD_TIME_OUT = 3  # s, attrib/cmd_time_out of the slow LUN
SLOW_DELAY = 6.0  # s the slow handler takes: twice cmd_time_out


def _cdb10(opcode: int) -> bytes:
    return bytes([opcode]) + bytes(9)


def _assert_sense_is(result: CdbResult, sense: bytes) -> None:
    """The initiator's sense is the handler's bytes, no more and no fewer (measured on
    6.1: SG_IO's sb_len_wr is the handler's own length, 18 or 22 here, not the 96 of
    TCMU_SENSE_BUFFERSIZE)."""
    __tracebackhide__ = True
    assert result.transport_ok, result.describe()
    assert result.sense == sense, (
        f"initiator sense {result.sense.hex(' ')}\nhandler sense   {sense.hex(' ')}")


def test_handler_sense_for_an_unsupported_opcode_reaches_the_initiator_unchanged(
    lun: Lun,
) -> None:
    """tcmu_handle_completion copies the entry's rsp.sense_buffer (96 bytes) into the
    se_cmd and completes with the entry's scsi_status: an opcode the handler refuses is
    CHECK CONDITION with exactly the sense in the handler's log (ILLEGAL REQUEST,
    INVALID COMMAND OPERATION CODE 20/00 from the reference handlers)."""
    result = lun.cdb(_cdb10(VENDOR_UNIQUE_OPCODE))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
    entry = [c for c in lun.handler_commands() if c.opcode == VENDOR_UNIQUE_OPCODE][-1]
    assert entry.status == Status.CHECK_CONDITION
    _assert_sense_is(result, entry.sense)


def test_handler_sense_bytes_pass_through_the_kernel_unchanged(
    helper_lun: Callable[..., Lun],
) -> None:
    """The kernel neither rebuilds nor trims a handler's sense (tcmu_handle_completion ->
    transport_copy_sense_to_cmd): 22 bytes of fixed sense with VALID, INFORMATION,
    COMMAND-SPECIFIC INFORMATION, MEDIUM ERROR 11/05, a FRU code and four vendor bytes
    reach the initiator byte for byte."""
    lun = helper_lun("KernelProbeDisk")
    result = lun.cdb(_cdb10(SENSE_OPCODE))
    assert result.status == Status.CHECK_CONDITION, result.describe()
    _assert_sense_is(result, ODD_SENSE)
    result.expect_check(SenseKey.MEDIUM_ERROR, 0x11, 0x05, information=0x01020304)


def test_the_handler_gets_the_initiators_cdb_and_data_out_byte_for_byte(
    helper_lun: Callable[..., Lun],
) -> None:
    """The 2014 design's first claim: the kernel hands userspace "raw SCSI CDBs and
    iovs". A vendor-specific CDB with bits set in every byte the initiator may set (not
    the control byte: its NACA and LINK bits are LIO's) and 300 KiB of data-out reach the
    handler as sent: the same 10 bytes in the ring entry's CDB, iovecs whose lengths add
    up to the transfer, the same data (SHA-256); the command log shows that CDB."""
    lun = helper_lun("KernelProbeDisk")
    sent = bytes([RECORD_OPCODE, 0xA5, 0x5A, 0x01, 0x80, 0x7F, 0xFF, 0x3C, 0xC3, 0x00])
    data = bytes((i * 31 + (i >> 12)) & 0xFF for i in range(300 << 10))
    result = lun.cdb(sent, data_out=data)
    assert result.status == Status.GOOD, result.describe()
    size = struct.calcsize(RECORD_FORMAT)
    record = lun.cdb(_cdb10(RECORDED_OPCODE), data_in_len=size)
    assert (record.status, len(record.data)) == (Status.GOOD, size), record.describe()
    cdb_seen, iovecs, length, digest = struct.unpack(RECORD_FORMAT, record.data)
    assert cdb_seen == sent, f"handler's CDB {cdb_seen.hex(' ')}\nsent CDB      {sent.hex(' ')}"
    assert (length, digest) == (len(data), hashlib.sha256(data).digest()), (
        f"the handler got {length} bytes of data-out in {iovecs} iovecs, not the "
        f"{len(data)} sent" if length != len(data) else "the data-out differs from what was sent")
    assert iovecs >= 1
    assert sent in [command.cdb for command in lun.handler_commands()]


def test_read_len_shortens_the_data_in_and_the_initiator_sees_a_residual(
    helper_lun: Callable[..., Lun],
) -> None:
    """TCMU_UFLAG_READ_LEN (mailbox CAP_READ_LEN, kernel >= 4.21): the handler answers
    100 bytes of a 512-byte data-in buffer with rsp.read_len=100; tcmu_handle_completion
    calls target_complete_cmd_with_length, so the initiator gets GOOD, the 100 bytes and
    a residual of 412."""
    lun = helper_lun("KernelProbeDisk")
    result = lun.cdb(_cdb10(SHORT_READ_OPCODE), data_in_len=512).expect_good()
    assert result.resid == 512 - SHORT_READ_BYTES, result.describe()
    assert result.data == SHORT_READ_DATA


def test_unknown_op_from_the_handler_is_not_ready_logical_unit_communication_failure(
    helper_lun: Callable[..., Lun],
) -> None:
    """A response with TCMU_UFLAG_UNKNOWN_OP (the runtime sends it for
    Result(unknown_op=True)): tcmu_handle_completion ignores the entry's status and sense
    and completes the command with CHECK CONDITION and no sense of its own, which LIO
    reports as NOT READY, LOGICAL UNIT COMMUNICATION FAILURE (08/00); the next command
    is served as usual."""
    lun = helper_lun("KernelProbeDisk")
    result = lun.cdb(_cdb10(UNKNOWN_OP_OPCODE))
    result.expect_check(SenseKey.NOT_READY, Asc.LOGICAL_UNIT_COMMUNICATION_FAILURE)
    lun.cdb(cdb.test_unit_ready()).expect_good()


def test_check_condition_with_read_len_delivers_both_the_data_and_the_sense(
    helper_lun: Callable[..., Lun],
) -> None:
    """A handler answering CHECK CONDITION with READ_LEN (rsp.read_len=100 of a 512-byte
    buffer): tcmu_handle_completion copies the sense and, read_len being valid, marks
    the command SCF_TREAT_READ_AS_NORMAL and gathers the data; tcm_loop then hands the
    initiator the status, the sense bytes unchanged, the 100 bytes and a residual of
    412 (tcm_loop's READ with data and sense, fixed in 5.8)."""
    lun = helper_lun("KernelProbeDisk")
    result = lun.cdb(_cdb10(SENSE_WITH_DATA_OPCODE), data_in_len=512)
    assert result.status == Status.CHECK_CONDITION, result.describe()
    _assert_sense_is(result, ODD_SENSE)
    assert (result.data, result.resid) == (SHORT_READ_DATA, 512 - SHORT_READ_BYTES), (
        result.describe())


def test_a_handler_slower_than_cmd_time_out_gets_not_ready_and_the_ring_keeps_working(
    helper_lun: Callable[..., Lun], require_attribute: Callable[[str], None],
) -> None:
    """attrib/cmd_time_out (tcmu_cmd_timedout -> tcmu_check_expired_ring_cmd): a command
    the handler holds past it is completed by the kernel with CHECK CONDITION, NOT
    READY, LOGICAL UNIT COMMUNICATION FAILURE (08/00) after cmd_time_out s, not when the
    handler answers (measured on 6.1 under TCG: 3.40 s for cmd_time_out 3, the handler
    answering at 6 s); the handler's late completion of the expired command is dropped
    (the use-after-free fixed in 4.6/5.3 lived here), and the next command is answered
    by the handler.

    The slow command is sent straight to SG_IO (initiator.guest.sg_io), around the
    harness's watchdog (lio.watchdog): with cmd_time_out 3 s its hang threshold is
    max(3 - 3, 0.6 * 3) = 1.8 s, and it would kill the handler before the kernel times
    the command out. cmd_time_out cannot change while the LUN is exported (EINVAL), so
    it is set at creation."""
    require_attribute("cmd_time_out")
    lun = helper_lun("SlowDisk", delay_s=SLOW_DELAY,
                     attributes={"cmd_time_out": CMD_TIME_OUT})
    assert lun.attribute("cmd_time_out") == str(CMD_TIME_OUT)
    start = time.monotonic()
    result = CdbResult.from_dict(lun.vm.call(
        "tcmu_harness.initiator.guest:sg_io", device=lun.sg, cdb=_cdb10(SLOW_OPCODE), timeout=60,
        call_timeout=90))
    elapsed = time.monotonic() - start
    result.expect_check(SenseKey.NOT_READY, Asc.LOGICAL_UNIT_COMMUNICATION_FAILURE)
    assert CMD_TIME_OUT - 0.5 <= result.duration_s < SLOW_DELAY - 0.5, (
        f"answered after {result.duration_s:.2f} s (host: {elapsed:.2f} s); cmd_time_out "
        f"{CMD_TIME_OUT} s, the handler answers after {SLOW_DELAY} s")
    deadline = time.monotonic() + SLOW_DELAY + 20
    while not [c for c in lun.handler_commands() if c.opcode == SLOW_OPCODE]:
        assert time.monotonic() < deadline, "the slow handler never completed its command"
        time.sleep(0.5)
    lun.cdb(cdb.test_unit_ready()).expect_good()
    last = lun.handler_commands()[-1]
    assert (last.opcode, last.status) == (Opcode.TEST_UNIT_READY, Status.GOOD)
