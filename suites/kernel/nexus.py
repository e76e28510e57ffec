"""What each I_T nexus to a LUN has pending, for the kernel suite's multi-path tests."""

from __future__ import annotations

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import SenseKey, Status


def pending_unit_attentions(*luns: Lun) -> list[tuple[int, int] | None]:
    """Each nexus's pending unit attention (ASC, ASCQ) or None, read with TEST UNIT READY;
    after a unit attention a second TUR must be GOOD (reported once, SAM-5 5.14)."""
    found: list[tuple[int, int] | None] = []
    for lun in luns:
        first = lun.cdb(cdb.test_unit_ready())
        if first.status == Status.GOOD:
            found.append(None)
            continue
        first.expect_check(SenseKey.UNIT_ATTENTION)
        found.append((first.sense[12], first.sense[13]))
        lun.cdb(cdb.test_unit_ready()).expect_good()
    return found
