"""Out-of-order completion (mailbox CAP_OOOC, drivers/target/target_core_user.c:
tcmu_handle_completions looks each response up by the cmd_id in the entry header, not by
its slot): many commands in flight, completed by the handler in the reverse of their
arrival order from a thread of its own, each reach their own initiator with their own
status and data.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu_harness.lun import Lun
from tcmu_harness.suites.kernel.kernel_handlers import hold_cdb, hold_pattern
from tcmu_harness.suites.kernel.ring_io import concurrently, held

pytestmark = pytest.mark.vm

COUNT = 8


def test_commands_completed_in_reverse_order_each_get_their_own_data(
    helper_lun: Callable[..., Lun],
) -> None:
    """Eight HOLDs in flight at once (tags 100-107, 4-32 KiB, sent 50 ms apart) are
    completed together in reverse arrival order (HoldingDisk batch=8): each initiator
    gets GOOD, no residual and exactly hold_pattern(its tag, its length), so the kernel
    matched every response to its command by cmd_id even though each was written into
    another command's slot."""
    lun = helper_lun("HoldingDisk", hold_s=20, batch=COUNT)
    tags = [100 + i for i in range(COUNT)]
    sizes = [4096 * (i + 1) for i in range(COUNT)]
    results = concurrently(lun, [
        {"cdb": hold_cdb(tag), "data_in_len": size, "timeout": 30, "delay": 0.05 * i}
        for i, (tag, size) in enumerate(zip(tags, sizes, strict=True))
    ])
    for tag, size, result in zip(tags, sizes, results, strict=True):
        result.expect_good()
        assert result.resid == 0, result.describe()
        assert result.data == hold_pattern(tag, size), f"tag {tag}: another command's data"
    completions = held(lun)
    arrival = sorted(completions, key=lambda tc: tc[1].cmd_id)  # cmd_ids rise with arrival
    assert [tag for tag, _ in completions] == [tag for tag, _ in reversed(arrival)], (
        f"completion order {[(t, c.cmd_id) for t, c in completions]} is not the reverse "
        "of the arrival order")
    assert sorted(tag for tag, _ in completions) == tags
