"""The backstore's action/ files (drivers/target/target_core_user.c: tcmu_block_dev_store,
tcmu_reset_ring_store -> tcmu_reset_ring) as the initiator sees them through tcm_loop and
the Linux SCSI midlayer, which retries BUSY (ADD_TO_MLQUEUE) until the SG_IO time is
spent and passes CHECK CONDITION of a passthrough command straight back.

reset_ring is written while the handler is stopped (Lun.kill_handler), as a recovering
daemon does: a handler still mapping the ring would find its position reset under it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status
from tcmu_harness.suites.kernel.kernel_handlers import hold_cdb, hold_pattern
from tcmu_harness.suites.kernel.ring_io import (
    action,
    after,
    concurrently,
    has_action,
    held,
    in_background,
    sg_io,
)

pytestmark = pytest.mark.vm

BLOCK_SIZE = 512


def _require_action(lun: Lun, name: str) -> None:
    if not has_action(lun, name):
        pytest.skip(f"this kernel ({lun.vm.kernel_version}) has no action/{name} on user "
                    "backstores")


def _turs(lun: Lun) -> int:
    return sum(c.opcode == Opcode.TEST_UNIT_READY for c in lun.handler_commands())


def test_block_dev_holds_new_commands_back_with_busy_until_unblocked(
    helper_lun: Callable[..., Lun],
) -> None:
    """action/block_dev=1 sets TCMU_DEV_BIT_BLOCKED: queue_cmd_ring refuses new commands
    with TCM_LUN_BUSY, SAM status BUSY (0x08), no sense. The midlayer retries BUSY, so
    the initiator sees BUSY only when its SG_IO time (2 s) is spent (measured on 6.1:
    3.01 s for 3 s) and the handler never sees the command; a TEST UNIT READY sent while
    blocked completes GOOD, through the handler, once block_dev=0 is written (1.5 s
    later)."""
    lun = helper_lun("HoldingDisk")
    _require_action(lun, "block_dev")
    before = _turs(lun)
    action(lun, "block_dev", 1)
    try:
        blocked = sg_io(lun, cdb.test_unit_ready(), timeout=2)
    finally:
        unblock = after(1.5, lambda: action(lun, "block_dev", 0))
        try:
            resumed = sg_io(lun, cdb.test_unit_ready(), timeout=15)
        finally:
            unblock.result()
    assert (blocked.status, blocked.sense, blocked.host_status) == (Status.BUSY, b"", 0), (
        blocked.describe())
    assert 1.5 <= blocked.duration_s < 4.0, blocked.describe()
    resumed.expect_good()
    assert 1.0 <= resumed.duration_s < 6.0, resumed.describe()
    assert _turs(lun) == before + 1, "the handler should have seen only the resumed TUR"


def test_reset_ring_2_fails_the_command_in_flight_and_the_ring_serves_again(
    helper_lun: Callable[..., Lun],
) -> None:
    """action/reset_ring=2 completes every command still in the ring with CHECK
    CONDITION (tcmu_reset_ring: "hard failure"), which the initiator sees at once as
    NOT READY, LOGICAL UNIT COMMUNICATION FAILURE (08/00); the ring is reset
    (cmd_head = cmd_tail = 0, the broken flag cleared, 5.7), and a handler started on it
    serves TEST UNIT READY and a new HOLD."""
    lun = helper_lun("HoldingDisk", hold_s=60, batch=2)
    _require_action(lun, "reset_ring")
    pending = in_background(lambda: concurrently(
        lun, [{"cdb": hold_cdb(1), "data_in_len": 4096, "timeout": 60}])[0])
    time.sleep(1.5)  # the HOLD is in the ring by then
    lun.kill_handler()
    assert not pending.done(), "the held command completed without its handler"
    action(lun, "reset_ring", 2)
    failed = pending.result(timeout=30)
    failed.expect_check(SenseKey.NOT_READY, Asc.LOGICAL_UNIT_COMMUNICATION_FAILURE)
    lun.restart_handler()
    sg_io(lun, cdb.test_unit_ready(), timeout=10).expect_good()
    again = concurrently(lun, [{"cdb": hold_cdb(2), "data_in_len": 4096, "timeout": 30},
                               {"cdb": hold_cdb(3), "data_in_len": 4096, "timeout": 30,
                                "delay": 0.2}])
    for tag, result in zip((2, 3), again, strict=True):
        assert result.expect_good().data == hold_pattern(tag, 4096)
    assert 1 not in [tag for tag, _ in held(lun)], "nobody should have completed tag 1"


def test_reset_ring_1_makes_the_initiator_retry_and_a_restarted_handler_answers(
    helper_lun: Callable[..., Lun],
) -> None:
    """Handler death and restart on a live device: the handler (a FileDisk) is killed
    (SIGKILL) with a HOLD in flight; action/reset_ring=1 completes it with BUSY
    (tcmu_reset_ring: "retryable"), which the midlayer retries, so the command goes
    back into the ring and waits, unanswered, while no handler runs. A restarted handler
    (block_dev=1, reset_ring=1, map, resume at cmd_tail, block_dev=0) gets the retried
    command and answers it: the initiator sees GOOD with the data of the new handler,
    and the data written before the kill reads back unchanged."""
    lun = helper_lun("HoldingFileDisk", hold_s=60, batch=2)
    _require_action(lun, "reset_ring")
    written = bytes(range(256)) * (8 * BLOCK_SIZE // 256)
    lun.write_blocks(100, written)
    pending = in_background(lambda: concurrently(
        lun, [{"cdb": hold_cdb(1), "data_in_len": 4096, "timeout": 60}])[0])
    time.sleep(1.5)
    lun.kill_handler()  # SIGKILL
    action(lun, "reset_ring", 1)
    time.sleep(2.0)  # BUSY, retried, back in the ring by then
    assert not pending.done(), "a BUSY from reset_ring=1 reached the initiator"
    lun.restart_handler()
    other = concurrently(lun, [{"cdb": hold_cdb(2), "data_in_len": 4096, "timeout": 30,
                                "delay": 0.5}])[0]
    retried = pending.result(timeout=60)
    assert retried.expect_good().data == hold_pattern(1, 4096)
    assert other.expect_good().data == hold_pattern(2, 4096)
    assert [tag for tag, _ in held(lun)].count(1) == 1, "tag 1 was not answered exactly once"
    assert lun.read_blocks(100, 8) == written
