"""TEST UNIT READY (SPC-4 6.47): GOOD with no data when the unit is ready, reached by the
handler (the kernel does not answer it), and NOT READY while START STOP UNIT has the
unit stopped.
"""

from __future__ import annotations

import pytest

from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status

pytestmark = pytest.mark.vm


def test_test_unit_ready_is_good_with_no_data_and_reaches_the_handler(shared_lun: Lun) -> None:
    """SPC-4 6.47: a ready logical unit answers TEST UNIT READY with GOOD and no sense; the
    kernel passes the command to the handler (the answer is the handler's)."""
    result = shared_lun.cdb(cdb.test_unit_ready()).expect_good()
    assert (result.data, result.sense) == (b"", b"")
    seen = [c for c in shared_lun.handler_commands() if c.opcode == Opcode.TEST_UNIT_READY]
    assert seen, "TEST UNIT READY never reached the handler"
    assert (seen[-1].status, seen[-1].sense) == (Status.GOOD, b"")


def test_test_unit_ready_transfers_nothing_into_a_data_in_buffer(shared_lun: Lun) -> None:
    """SPC-4 6.47: TEST UNIT READY has no parameter data: a data-in buffer offered with it
    stays unused (the whole buffer is the residual). Through TCMU a handler cannot report
    a zero-byte transfer (target_core_user ignores READ_LEN 0 and completes the whole
    buffer), so that answer is accepted too; a partial transfer is data the handler sent."""
    result = shared_lun.cdb(cdb.test_unit_ready(), data_in_len=64).expect_good()
    assert (len(result.data), result.resid) in ((0, 64), (64, 0)), (
        f"TEST UNIT READY transferred {len(result.data)} bytes: {result.data.hex(' ')}")


def test_test_unit_ready_while_stopped_is_not_ready_initializing_command_required(
    lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.25 / SPC-4 6.47: after START STOP UNIT with START=0 the unit is stopped and
    TEST UNIT READY answers NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND
    REQUIRED (02/04/02) until START=1, after which it is GOOD again."""
    caps.require(Opcode.START_STOP_UNIT)
    stop, stopped, start, started = lun.cdbs([
        (cdb.start_stop_unit(start=False), None, 0),
        (cdb.test_unit_ready(), None, 0),
        (cdb.start_stop_unit(start=True), None, 0),
        (cdb.test_unit_ready(), None, 0),
    ])  # fmt: skip
    stop.expect_good()
    stopped.expect_check(SenseKey.NOT_READY,
                         Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED)
    start.expect_good()
    started.expect_good()

