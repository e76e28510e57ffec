"""Unit attentions around a TCMU backstore seen through two I_T nexuses (make_lun(paths=2):
path A and path B): which ones LIO raises itself (target_core_ua.c, answered before the
ring, never in the handler's command log), which nexus gets them, and that each is
reported once, the next command then reaching the handler and succeeding. Measured on
6.1.192 and 6.12.117 (the reservation ones are in test_reservations*.py).

- LOGICAL UNIT RESET from A (sg_reset -d: SG_SCSI_RESET -> tcm_loop -> TMR_LUN_RESET):
  29/03 BUS DEVICE RESET FUNCTION OCCURRED on every nexus to the device, A and B;
- a LUN mapped beside A's LUN 0 (the same tcm_loop target): 3F/0E REPORTED LUNS DATA
  HAS CHANGED on A's LUN 0 only (target_core_device.c target_luns_data_has_changed);
- a capacity change (attrib/dev_size, a netlink RECONFIG_DEVICE to the handler): LIO
  raises nothing; 2A/09 CAPACITY DATA HAS CHANGED comes from the handler (the reference
  runtime), on the first command after the change, whichever nexus sends it: TCMU tells
  a handler nothing about I_T nexuses, so the other nexus never hears of it.
- concurrent LUN RESETs from both nexuses (the hang fixed in 6.4 / 6.1.28) complete,
  and leave one 29/03 per nexus.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun, LunManager
from tcmu_harness.scsi.constants import Opcode, SenseKey, Status
from tcmu_harness.suites.kernel.nexus import pending_unit_attentions

pytestmark = pytest.mark.vm

UA_RESET = (0x29, 0x03)  # BUS DEVICE RESET FUNCTION OCCURRED
UA_LUNS_CHANGED = (0x3F, 0x0E)  # REPORTED LUNS DATA HAS CHANGED
UA_CAPACITY_CHANGED = (0x2A, 0x09)  # CAPACITY DATA HAS CHANGED


@pytest.fixture
def paths(helper_lun: Callable[..., Lun], lun_manager: LunManager) -> tuple[Lun, Lun]:
    """Path A and path B: one fresh LUN seen through two I_T nexuses, served by the
    RAM disk of kernel_handlers.py whatever --tcmu-handler says (the kernel is under test)."""
    a = helper_lun("KernelProbeDisk")
    return a, lun_manager.add_path(a)


def sense_key(sense: bytes) -> int | None:
    """The sense key of fixed (0x70/0x71) or descriptor (0x72/0x73) sense data."""
    if len(sense) < 3:
        return None
    return (sense[1] if sense[0] & 0x7F in (0x72, 0x73) else sense[2]) & 0x0F


def lun_reset(*luns: Lun) -> None:
    """LOGICAL UNIT RESET through each path's sg node at once (sg_reset -d per path, in
    parallel), bounded by 60 s; all must succeed."""
    resets = " ".join(f"sg_reset -d {lun.sg} &" for lun in luns)
    result = luns[0].vm.run(["sh", "-c", f"{resets} fail=0; for j in $(jobs -p); do "
                             "wait $j || fail=1; done; exit $fail"], timeout=60)
    assert result.exit_code == 0, f"sg_reset failed or hung: {result.text}"


def test_lun_reset_gives_every_nexus_a_unit_attention_once(paths: tuple[Lun, Lun]) -> None:
    """sg_reset -d on A: A's next TUR and B's are CHECK CONDITION, UNIT ATTENTION 29/03,
    answered by LIO (the handler sees only the two GOOD TURs after them)."""
    a, b = paths
    since = len(a.handler_commands())
    lun_reset(a)
    assert pending_unit_attentions(a, b) == [UA_RESET, UA_RESET]
    assert [c.opcode for c in a.handler_commands()[since:]] == [Opcode.TEST_UNIT_READY] * 2


def test_concurrent_lun_resets_on_two_nexuses_complete(paths: tuple[Lun, Lun]) -> None:
    """Three rounds of LUN RESET from A and B at the same time (the race of two
    core_tmr_lun_reset calls fixed in 6.4 and 6.1.28): every sg_reset returns within
    60 s, each nexus then has one 29/03 and I/O works (the per-test kernel log gate
    fails the test on a hung-task report or warning)."""
    a, b = paths
    for _ in range(3):
        lun_reset(a, b)
    assert pending_unit_attentions(a, b) == [UA_RESET, UA_RESET]
    a.write_blocks(4, bytes([0x5A]) * a.block_size)
    assert b.read_blocks(4, 1) == bytes([0x5A]) * a.block_size


def test_mapping_another_lun_tells_the_target_s_other_luns(
    paths: tuple[Lun, Lun], lun_manager: LunManager
) -> None:
    """Mapping the backstore as LUN 1 of A's target: A's LUN 0 gets UNIT ATTENTION 3F/0E
    REPORTED LUNS DATA HAS CHANGED (its initiator's LUN inventory changed), B (another
    target) none; the handler answered no command with a unit attention."""
    a, b = paths
    since = len(a.handler_commands())
    lun_manager.vm.call("tcmu_harness.lio.lun:map_again", name=a.name, lun_index=1)
    assert pending_unit_attentions(a, b) == [UA_LUNS_CHANGED, None]
    # The handler's log also has the kernel's probe of the new LUN 1 (the same
    # backstore; 6.12's sd asks for a mode page the RAM disk refuses, 24/00); none of
    # its answers is a unit attention: 3F/0E was LIO's.
    log = a.handler_commands()[since:]
    assert [c for c in log if sense_key(c.sense) == SenseKey.UNIT_ATTENTION] == []
    assert [c.opcode for c in log].count(Opcode.TEST_UNIT_READY) >= 2


def test_capacity_change_is_the_handler_s_unit_attention_for_one_nexus(
    paths: tuple[Lun, Lun]
) -> None:
    """attrib/dev_size doubled: LIO raises no unit attention; the reference handler
    answers the first command after the RECONFIG (B's TUR) with CHECK CONDITION, UNIT
    ATTENTION 2A/09, which is in its command log; A's TUR is GOOD (the handler cannot
    tell nexuses apart) and READ CAPACITY(10) reports the new size."""
    a, b = paths
    new_size = 2 * a.size
    since = len(a.handler_commands())
    a.vm.write_file(f"{a.backstore_dir}/attrib/dev_size", f"{new_size}\n".encode())
    # The RECONFIG reaches the handler asynchronously (no netlink reply is awaited):
    # wait for its log line, so B's TUR comes after it.
    deadline = time.monotonic() + 20
    while "device reconfigured" not in a.handler_output():
        assert time.monotonic() < deadline, "the handler never logged the RECONFIG"
        time.sleep(0.1)
    assert pending_unit_attentions(b, a) == [UA_CAPACITY_CHANGED, None]
    log = a.handler_commands()[since:]
    assert (log[0].opcode, log[0].status, log[0].sense[2] & 0x0F, log[0].sense[12:14]) == (
        Opcode.TEST_UNIT_READY, Status.CHECK_CONDITION, SenseKey.UNIT_ATTENTION, b"\x2a\x09")
    data = a.cdb(cdb.read_capacity_10(), data_in_len=8).expect_good().data
    assert int.from_bytes(data[:4], "big") == new_size // a.block_size - 1
