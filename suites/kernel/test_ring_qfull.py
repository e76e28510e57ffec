"""A full data area (drivers/target/target_core_user.c: queue_cmd_ring ->
add_to_qfull_queue, tcmu_check_expired_queue_cmd) as the initiator sees it through
tcm_loop and the Linux SCSI midlayer.

The data area is made full with max_data_area_mb=1 (its minimum) and two HOLD commands
of 512 KiB that the handler keeps for a while, sent through a second I_T nexus: the
midlayer retries TASK SET FULL (ADD_TO_MLQUEUE) only once the device has nothing else in
flight, so the command under test goes through the first nexus, which has nothing else
in flight, and the midlayer's retries end when its SG_IO time ((retries + 1) x timeout)
is spent (measured on 6.1 under TCG).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu_harness.initiator.linux_codes import HostStatus
from tcmu_harness.lun import Lun, LunManager
from tcmu_harness.scsi.constants import Status
from tcmu_harness.suites.kernel.kernel_handlers import hold_cdb, hold_pattern
from tcmu_harness.suites.kernel.ring_io import concurrently, held

pytestmark = pytest.mark.vm

HALF_DATA_AREA = 512 << 10  # two of them fill max_data_area_mb=1
PROBE_TAG = 3


def _full_data_area_and_probe(
    helper_lun: Callable[..., Lun], lun_manager: LunManager, *, qfull_time_out: int,
    hold_s: float, probe_timeout: float,
) -> tuple[Lun, list]:
    """Holders (tags 1, 2) on path 2 fill the data area; the probe (PROBE_TAG, 4 KiB) is
    sent on path 1 1 s later. Returns the LUN and the three results."""
    lun = helper_lun("HoldingDisk", hold_s=hold_s, attributes={"qfull_time_out": qfull_time_out},
                     control={"max_data_area_mb": 1})
    assert lun.attribute("qfull_time_out") == str(qfull_time_out)
    other = lun_manager.add_path(lun)
    results = concurrently(lun, [
        {"cdb": hold_cdb(1), "data_in_len": HALF_DATA_AREA, "timeout": 60, "device": other.sg},
        {"cdb": hold_cdb(2), "data_in_len": HALF_DATA_AREA, "timeout": 60, "device": other.sg,
         "delay": 0.3},
        {"cdb": hold_cdb(PROBE_TAG), "data_in_len": 4096, "timeout": probe_timeout, "delay": 1.0},
    ])
    for tag, result in zip((1, 2), results, strict=False):
        result.expect_good()
        assert result.data == hold_pattern(tag, HALF_DATA_AREA), f"holder {tag}: wrong data"
    return lun, results


def test_qfull_time_out_0_answers_task_set_full_without_queueing(
    helper_lun: Callable[..., Lun], lun_manager: LunManager,
    require_attribute: Callable[[str], None],
) -> None:
    """attrib/qfull_time_out=0: add_to_qfull_queue refuses at once (-ETIMEDOUT ->
    TCM_OUT_OF_RESOURCES -> SAM status TASK SET FULL 0x28, no sense data). The midlayer
    retries it until the SG_IO timeout (3 s) is spent and then returns TASK SET FULL
    (measured on 6.1: 4.02 s for a 4 s timeout); the command never reaches the handler,
    which still holds the data area (6 s)."""
    require_attribute("qfull_time_out")
    lun, results = _full_data_area_and_probe(helper_lun, lun_manager, qfull_time_out=0,
                                             hold_s=6, probe_timeout=3)
    probe = results[2]
    assert (probe.status, probe.sense, probe.host_status) == (Status.TASK_SET_FULL, b"", 0), (
        probe.describe())
    assert 2.5 <= probe.duration_s < 4.8, probe.describe()
    assert PROBE_TAG not in [tag for tag, _ in held(lun)], "the refused command reached the handler"


def test_a_queued_command_enters_the_ring_when_space_frees(
    helper_lun: Callable[..., Lun], lun_manager: LunManager,
    require_attribute: Callable[[str], None],
) -> None:
    """attrib/qfull_time_out=10: a command that finds the data area full waits in the
    kernel's qfull queue; when the handler completes the holders (after 2 s),
    tcmu_irqcontrol -> run_qfull_queue puts it on the ring and the handler answers it:
    GOOD with its own data, well before qfull_time_out, after both holders in the
    handler's log."""
    require_attribute("qfull_time_out")
    lun, results = _full_data_area_and_probe(helper_lun, lun_manager, qfull_time_out=10,
                                             hold_s=2, probe_timeout=30)
    probe = results[2].expect_good()
    assert probe.data == hold_pattern(PROBE_TAG, 4096)
    assert probe.duration_s < 7.0, probe.describe()
    order = [tag for tag, _ in held(lun)]
    assert sorted(order[:2]) == [1, 2] and order[2:] == [PROBE_TAG], (
        f"HOLD tags in completion order: {order}")


def test_a_command_queued_past_its_sg_io_timeout_is_aborted_out_of_the_queue(
    helper_lun: Callable[..., Lun], lun_manager: LunManager,
    require_attribute: Callable[[str], None],
) -> None:
    """attrib/qfull_time_out=10 and an SG_IO timeout of 2 s: the command waits in the
    kernel's qfull queue (not refused, so no TASK SET FULL as with qfull_time_out=0) until
    SCSI error handling aborts it; tcmu_tmr_notify takes it off the queue and completes
    it at once, so the initiator gets DID_TIME_OUT well before the holders finish (6 s)
    and the command never reaches the handler (measured on 6.1: 3.11 s for qfull_time_out
    3)."""
    require_attribute("qfull_time_out")
    lun, results = _full_data_area_and_probe(helper_lun, lun_manager, qfull_time_out=10,
                                             hold_s=6, probe_timeout=2)
    probe = results[2]
    assert (probe.host_status, probe.status) == (HostStatus.DID_TIME_OUT, Status.GOOD), (
        probe.describe())
    assert probe.duration_s < 4.5, probe.describe()
    assert PROBE_TAG not in [tag for tag, _ in held(lun)], "the aborted command reached the handler"
