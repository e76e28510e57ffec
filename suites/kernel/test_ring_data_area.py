"""A command whose data can never fit the data area (drivers/target/target_core_user.c,
queue_cmd_ring): before it allocates data space the kernel compares the command's data
length, in whole data blocks (data_pages_per_blk pages each), with the data area's
max_blocks x block size, and refuses a larger one with TCM_INVALID_CDB_FIELD: CHECK
CONDITION, ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), logging "Request of size N is
too big for M data area". The command never reaches the ring.

Making such a command: max_data_area_mb is at least 1 (256 pages), and no path from the
guest carries more than 1 MiB in one command (measured on 6.1: SG_IO on the sg node
fails with EINVAL above 1 MiB; SG_IO on the sd node, whose queue says max_hw_sectors_kb
32767 and max_segments 256, already fails with EINVAL at 1 MiB, 128 KiB passes), so with
the default data_pages_per_blk=1 every command fits. The data area's usable size is
max_blocks x data_pages_per_blk pages, and max_blocks is the area's pages divided by
data_pages_per_blk rounded down: data_pages_per_blk=129 leaves one block of 129 pages
(516 KiB) of the 256, and a 520 KiB READ needs two.
Both are control= settings, accepted only before the device is enabled.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

PAGE = 4096  # x86_64
PAGES_PER_BLOCK = 129  # of max_data_area_mb=1's 256 pages: one data block fits
USABLE = PAGES_PER_BLOCK * PAGE  # 528384 bytes: max_blocks (1) x the data block size
FITS = USABLE // 512  # 1032 blocks of 512 bytes: exactly one data block
TOO_BIG = FITS + 8  # 520 KiB: two data blocks, 1056768 bytes, more than the area holds


def _reads_of(lun: Lun, blocks: int) -> list[int]:
    """cmd_ids of the READ(10)s of `blocks` blocks the handler completed."""
    return [c.cmd_id for c in lun.handler_commands()
            if c.opcode == Opcode.READ_10 and int.from_bytes(c.cdb[7:9], "big") == blocks]


def test_a_command_larger_than_the_data_area_is_invalid_field_in_cdb_and_never_queued(
    helper_lun: Callable[..., Lun], require_attribute: Callable[[str], None],
) -> None:
    """max_data_area_mb=1, data_pages_per_blk=129: the data area holds one 516 KiB
    block. A READ(10) of 1040 blocks (520 KiB, two data blocks) is answered by the kernel
    with CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), fixed sense
    without a field pointer, none of the medium's data, at once (not queued for qfull_time_out); the
    handler's command log never has it; the next command, a READ(10) of 1032 blocks
    (exactly the data area), is GOOD with the handler's data."""
    require_attribute("data_pages_per_blk")
    lun = helper_lun("KernelProbeDisk",
                     control={"max_data_area_mb": 1, "data_pages_per_blk": PAGES_PER_BLOCK})
    assert (lun.attribute("max_data_area_mb"), lun.attribute("data_pages_per_blk")) == (
        "1", str(PAGES_PER_BLOCK))
    pattern = bytes(range(256)) * (FITS * 512 // 256)
    lun.cdb(cdb.write_10(0, FITS), data_out=pattern).expect_good()

    refused = lun.cdb(cdb.read_10(0, TOO_BIG), data_in_len=TOO_BIG * 512)
    refused.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=None,
                         information=None, descriptor_format=False)
    # Measured on 6.1: LIO reports no residual for it, and the buffer is as the guest
    # zeroed it (nothing of the medium, which holds the pattern, was copied).
    assert (refused.resid, refused.data) == (0, bytes(TOO_BIG * 512)), refused.describe()
    assert refused.duration_s < 2.0, refused.describe()
    assert _reads_of(lun, TOO_BIG) == [], "the refused READ reached the handler"

    fits = lun.cdb(cdb.read_10(0, FITS), data_in_len=FITS * 512).expect_good()
    assert fits.data == pattern
    assert len(_reads_of(lun, FITS)) == 1
