"""TMR notifications on the ring (attrib/tmr_notification=1, kernel >= 5.9;
drivers/target/target_core_user.c: tcmu_tmr_notify queues a TCMU_OP_TMR entry naming
the cmd_ids of the affected commands still in the ring). The runtime logs each one in
the command log ({"tmr": type, "cmd_ids": [...]}); the commands themselves must still be
completed by the handler, and LIO waits for that before it answers the TMR.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.linux_codes import HostStatus
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import SenseKey, Status
from tcmu_harness.suites.kernel.kernel_handlers import hold_cdb, hold_pattern
from tcmu_harness.suites.kernel.ring_io import after, concurrently, held, sg_io, tmr_records

pytestmark = pytest.mark.vm

ABORT_TASK = 1  # enum tcm_tmreq_table / TCMU_TMR_ABORT_TASK
LUN_RESET = 5  # TCMU_TMR_LUN_RESET
HOLD_S = 4.0  # well past the SG_IO timeout, which the block layer rounds up to a second


def _tmr_lun(helper_lun: Callable[..., Lun], require_attribute: Callable[[str], None]) -> Lun:
    require_attribute("tmr_notification")
    lun = helper_lun("HoldingDisk", hold_s=HOLD_S, attributes={"tmr_notification": 1})
    assert lun.attribute("tmr_notification") == "1"
    return lun


def _cmd_id_of(lun: Lun, tag: int) -> int:
    ids = [c.cmd_id for t, c in held(lun) if t == tag]
    assert len(ids) == 1, f"HOLD tag {tag} completed {len(ids)} times"
    return ids[0]


def test_sg_io_timeout_sends_abort_task_naming_the_command(
    helper_lun: Callable[..., Lun], require_attribute: Callable[[str], None],
) -> None:
    """A HOLD that outlives its SG_IO timeout (1 s) is aborted by SCSI error handling
    (tcm_loop_abort_task -> ABORT TASK): the ring carries TMR ABORT_TASK with exactly
    that command's cmd_id, before the command's completion; LIO answers the abort only
    once the handler completes the command (after HOLD_S), and the initiator sees
    DID_TIME_OUT with no SCSI status (measured on 6.1 and 6.12: 5.1 s for a 5 s hold
    and a 2 s timeout; a hold only 1 s past the timeout was sometimes answered before
    the abort was sent, GOOD and no TMR)."""
    lun = _tmr_lun(helper_lun, require_attribute)
    result = concurrently(lun, [{"cdb": hold_cdb(1), "data_in_len": 4096, "timeout": 1}])[0]
    assert (result.host_status, result.status) == (HostStatus.DID_TIME_OUT, Status.GOOD), (
        result.describe())
    assert HOLD_S - 0.5 <= result.duration_s < HOLD_S + 5, result.describe()
    cmd_id = _cmd_id_of(lun, 1)
    assert tmr_records(lun) == [(ABORT_TASK, [cmd_id])]
    log = lun.vm.read_file(lun.info["command_log"]).decode()
    assert log.index('"tmr": 1') < log.index('"cdb": "c4000000000100000000"'), (
        "the TMR should precede the aborted command's completion")


def test_lun_reset_names_the_command_in_flight_which_still_completes(
    helper_lun: Callable[..., Lun], require_attribute: Callable[[str], None],
) -> None:
    """sg_reset -d (LUN RESET through tcm_loop) with one HOLD in the ring: the ring
    carries TMR LUN_RESET naming that command's cmd_id; the reset waits for the handler,
    which completes the command GOOD with its data (LIO lets a command already in the
    backend finish); the next command on the LUN gets UNIT ATTENTION, BUS DEVICE RESET
    FUNCTION OCCURRED (29/03)."""
    lun = _tmr_lun(helper_lun, require_attribute)
    reset = after(1.5, lambda: lun.vm.run(["sg_reset", "-d", lun.sg], timeout=60))
    result = concurrently(lun, [{"cdb": hold_cdb(2), "data_in_len": 4096, "timeout": 30}])[0]
    outcome = reset.result(timeout=90)
    assert outcome.exit_code == 0, outcome
    assert result.expect_good().data == hold_pattern(2, 4096)
    assert tmr_records(lun) == [(LUN_RESET, [_cmd_id_of(lun, 2)])]
    time.sleep(0.2)
    sg_io(lun, cdb.test_unit_ready()).expect_check(SenseKey.UNIT_ATTENTION, 0x29, 0x03)
