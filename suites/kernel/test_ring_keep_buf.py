"""KEEP_BUF (drivers/target/target_core_user.c, 5.17+: TCMU_MAILBOX_FLAG_CAP_KEEP_BUF,
TCMU_UFLAG_KEEP_BUF, action/free_kept_buf): a handler that completes a command with
KEEP_BUF has the SCSI command completed (tcmu_handle_completion gathers its data-in as
usual) while the command and its data-area blocks stay allocated
(TCMU_CMD_BIT_KEEP_BUF) until the cmd_id is written to the backstore's
action/free_kept_buf, which frees them and runs the qfull queue.

The data area is max_data_area_mb=1 (its minimum): two kept commands of 512 KiB fill it,
so a next command waits in the kernel's qfull queue (attrib/qfull_time_out=10) although
nothing is in flight. The LUN's handler is suites/kernel/kernel_handlers.py:KeepBufDisk.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest

from tcmu.layout import Cap
from tcmu_harness.lun import HandlerCommand, Lun
from tcmu_harness.suites.kernel.kernel_handlers import (
    CAPS_OPCODE,
    HELD_IDS_OPCODE,
    KEEP_OPCODE,
    hold_cdb,
    hold_pattern,
    keep_cdb,
    kept_sum_cdb,
)
from tcmu_harness.suites.kernel.ring_io import has_action, in_background, sg_io
from tcmu_harness.vm.client import AgentError

pytestmark = pytest.mark.vm

HALF_DATA_AREA = 512 << 10  # two of them fill max_data_area_mb=1
PROBE_TAG = 3
WAIT_S = 2.0  # how long the test lets the probe wait before freeing a buffer
EINVAL = "OSError: [Errno 22] Invalid argument"


def _vendor(cdb_opcode: int) -> bytes:
    return bytes([cdb_opcode]) + bytes(9)


@pytest.fixture
def keep_lun(helper_lun: Callable[..., Lun], require_attribute: Callable[[str], None]) -> Lun:
    """A KeepBufDisk LUN with a 1 MiB data area and qfull_time_out=10; skips when the
    mailbox does not offer CAP_KEEP_BUF."""
    require_attribute("qfull_time_out")
    lun = helper_lun("KeepBufDisk", hold_s=4, attributes={"qfull_time_out": 10},
                     control={"max_data_area_mb": 1})
    caps = Cap(int.from_bytes(sg_io(lun, _vendor(CAPS_OPCODE), data_in_len=2).expect_good().data,
                              "big"))
    if Cap.KEEP_BUF not in caps:
        pytest.skip(f"this kernel ({lun.vm.kernel_version}) does not offer KEEP_BUF "
                    f"(mailbox flags {int(caps):#x})")
    assert has_action(lun, "free_kept_buf"), "CAP_KEEP_BUF without action/free_kept_buf"
    return lun


def free_kept_buf(lun: Lun, value: int | str) -> str | None:
    """Write `value` to action/free_kept_buf; None, or the error the guest's write got."""
    try:
        lun.vm.write_file(f"{lun.backstore_dir}/action/free_kept_buf", f"{value}\n".encode())
    except AgentError as e:
        return f"{e.exc_type}: {e.message}"
    return None


def keep_commands(lun: Lun) -> dict[int, HandlerCommand]:
    """The KEEP_OPCODE commands the handler completed, by tag (CDB bytes 2-5)."""
    return {int.from_bytes(c.cdb[2:6], "big"): c for c in lun.handler_commands()
            if c.opcode == KEEP_OPCODE}


def _keep_two_halves(lun: Lun) -> dict[int, int]:
    """Tags 1 and 2: 512 KiB each, completed with KEEP_BUF; returns their cmd_ids."""
    for tag in (1, 2):
        result = sg_io(lun, keep_cdb(tag, keep=True), data_in_len=HALF_DATA_AREA).expect_good()
        assert result.data == hold_pattern(tag, HALF_DATA_AREA), f"kept {tag}: wrong data-in"
    ids = {tag: c.cmd_id for tag, c in keep_commands(lun).items()}
    assert sorted(ids) == [1, 2] and ids[1] != ids[2], (
        f"cmd_ids by tag {ids}: a kept command's cmd_id should stay taken")
    return ids


def test_kept_buffers_hold_the_data_area_until_free_kept_buf(keep_lun: Lun) -> None:
    """Two commands completed GOOD with KEEP_BUF (the initiator got their data) keep the
    1 MiB data area full: a 4 KiB command then waits in the qfull queue and never reaches
    the handler, for as long as the test waits (2 s of qfull_time_out 10). Writing the
    first one's cmd_id to action/free_kept_buf frees 512 KiB and the waiting command
    runs at once: GOOD with its own data. The second buffer is still the handler's,
    untouched (its SHA-256 as the handler reads it), until it is freed too."""
    lun = keep_lun
    ids = _keep_two_halves(lun)
    probe = in_background(lambda: sg_io(lun, keep_cdb(PROBE_TAG, keep=False),
                                        data_in_len=4096, timeout=30))
    time.sleep(WAIT_S)
    assert not probe.done(), f"the probe did not wait for data-area space: {probe.result()}"
    assert PROBE_TAG not in keep_commands(lun), "the waiting command reached the handler"

    freed_at = time.monotonic()
    assert free_kept_buf(lun, ids[1]) is None
    result = probe.result(timeout=60).expect_good()
    after_free = time.monotonic() - freed_at
    assert result.data == hold_pattern(PROBE_TAG, 4096)
    assert WAIT_S <= result.duration_s < 10, result.describe()  # waited; no TASK SET FULL
    assert after_free < 2.0, f"the probe finished {after_free:.2f} s after free_kept_buf"
    assert PROBE_TAG in keep_commands(lun)

    held = sg_io(lun, kept_sum_cdb(2), data_in_len=32).expect_good()
    assert held.data == hashlib.sha256(hold_pattern(2, HALF_DATA_AREA)).digest()
    assert free_kept_buf(lun, ids[2]) is None
    again = sg_io(lun, keep_cdb(4, keep=False), data_in_len=HALF_DATA_AREA * 2, timeout=10)
    assert again.expect_good().data == hold_pattern(4, HALF_DATA_AREA * 2)  # all 1 MiB free


def test_free_kept_buf_refuses_a_cmd_id_that_is_not_kept(keep_lun: Lun) -> None:
    """action/free_kept_buf answers EINVAL, and logs why, for a cmd_id the kernel does not
    hold ("not found": already freed, completed without KEEP_BUF, never used) and for a
    command still in flight ("was not completed with KEEP_BUF"), which then completes
    normally; a value that is not a u16 fails kstrtou16 (EINVAL, ERANGE), unlogged.
    A freed cmd_id goes to the next command at once (the lowest free id), so a stale
    free_kept_buf write lands on whichever command holds that id now."""
    lun = keep_lun
    mark = lun.vm.kernel_log_mark()
    ids = _keep_two_halves(lun)
    assert free_kept_buf(lun, ids[1]) is None
    freed_again = free_kept_buf(lun, ids[1])
    plain = sg_io(lun, keep_cdb(5, keep=False), data_in_len=4096).expect_good()
    assert plain.data == hold_pattern(5, 4096)
    plain_id = keep_commands(lun)[5].cmd_id
    assert plain_id == ids[1], f"freed cmd_id {ids[1]} not reused: {plain_id}"
    never_used = 4242

    held = in_background(lambda: sg_io(lun, hold_cdb(9), data_in_len=4096, timeout=30))
    deadline = time.monotonic() + 10
    held_ids: list[int] = []
    while not held_ids and time.monotonic() < deadline:
        raw = sg_io(lun, _vendor(HELD_IDS_OPCODE), data_in_len=64).expect_good().data
        held_ids = [int.from_bytes(raw[i:i + 2], "big") for i in range(1, 1 + 2 * raw[0], 2)]
    assert len(held_ids) == 1, f"HOLD 9 not held within 10 s: {held_ids}"
    (held_id,) = held_ids

    answers = {
        "freed again": freed_again,
        "never used": free_kept_buf(lun, never_used),
        "in flight": free_kept_buf(lun, held_id),
        "not a number": free_kept_buf(lun, "x"),
        "beyond u16": free_kept_buf(lun, 65536),
    }
    assert answers == {
        "freed again": EINVAL,
        "never used": EINVAL,
        "in flight": EINVAL,
        "not a number": EINVAL,
        "beyond u16": "OSError: [Errno 34] Numerical result out of range",
    }
    result = held.result(timeout=60).expect_good()  # the HOLD is still served normally
    assert result.data == hold_pattern(9, 4096)
    # plain_id was completed without KEEP_BUF (and then the HOLD's): nothing holds it now
    assert free_kept_buf(lun, plain_id) == EINVAL
    assert free_kept_buf(lun, ids[2]) is None  # a kept one is still freed after all that

    log = [r.text for r in lun.vm.kernel_log(since=mark).records if "free_kept_buf" in r.text]
    assert log == [
        f"free_kept_buf: cmd_id {ids[1]} not found",
        f"free_kept_buf: cmd_id {never_used} not found",
        f"free_kept_buf: cmd_id {held_id} was not completed with KEEP_BUF",
        f"free_kept_buf: cmd_id {plain_id} not found",
    ], log
