"""SYNCHRONIZE CACHE(10) and SYNCHRONIZE CACHE(16) (SBC-3 5.22, 5.23): make the cached
data of a range of LBAs (NUMBER OF LOGICAL BLOCKS 0: from the LBA to the last one)
durable; no data is transferred.

Covered: the whole medium (LBA 0, 0 blocks), ranges within the capacity (a few blocks,
the last LBA, 0 blocks from the last LBA, a range ending at the last LBA, the whole
capacity when the field can say it), with IMMED 0 and 1, are GOOD and leave the data
written before them readable; an LBA past the end, a range crossing the end, a 16-byte
LBA above bit 31 and a 16-byte range wrapping past 2^64 are LOGICAL BLOCK ADDRESS OUT OF
RANGE (21/00); refusal when the command is not claimed (20/00).
"""

from __future__ import annotations

import dataclasses

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

_DATA_LBA = 64  # the blocks the "data still reads back" checks write
_DATA_BLOCKS = 8


@dataclasses.dataclass(frozen=True)
class Sync:
    """One of the two CDB sizes, with what differs between them."""

    size: int
    opcode: int
    max_lba: int
    max_blocks: int

    def cdb(self, lba: int, blocks: int, immed: bool = False) -> bytes:
        build = cdb.synchronize_cache_10 if self.size == 10 else cdb.synchronize_cache_16
        return build(lba, blocks, immed)


SYNC10 = Sync(10, Opcode.SYNCHRONIZE_CACHE_10, 2**32 - 1, 0xFFFF)
SYNC16 = Sync(16, Opcode.SYNCHRONIZE_CACHE_16, 2**64 - 1, 2**32 - 1)


@pytest.fixture(params=[SYNC10, SYNC16], ids=["synchronize-cache-10", "synchronize-cache-16"])
def command(request: pytest.FixtureRequest) -> Sync:
    return request.param


@pytest.fixture
def sync(command: Sync, caps: Capabilities) -> Sync:
    """The command, skipping unless the device claims it."""
    caps.require(command.opcode)
    return command


def _expect_good(result: CdbResult, what: str) -> None:
    __tracebackhide__ = True
    try:
        result.expect_good()
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None
    assert not result.data, f"{what}: {len(result.data)} bytes of data-in"


def _sync_and_read_back(lun: Lun, sync: Sync, cases: list[tuple[str, bytes]],
                        seed: int) -> None:
    """Write a pattern, send each SYNCHRONIZE CACHE (each must be GOOD), read the
    pattern back unchanged."""
    bs = lun.block_size
    data = pattern(_DATA_LBA, _DATA_BLOCKS, bs, seed=seed)
    results = lun.cdbs([(cdb.write_16(_DATA_LBA, _DATA_BLOCKS), data, 0)]
                       + [(c, None, 0) for _, c in cases]
                       + [(cdb.read_16(_DATA_LBA, _DATA_BLOCKS), None, len(data))])
    results[0].expect_good()
    for (what, _), result in zip(cases, results[1:-1], strict=True):
        _expect_good(result, f"SYNCHRONIZE CACHE({sync.size}) of {what}")
    assert_blocks_equal(results[-1].expect_good().data, data, bs, _DATA_LBA,
                        what="data written before SYNCHRONIZE CACHE")


def test_synchronize_cache_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities, command: Sync
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00)."""
    caps.require_absent(command.opcode)
    result = shared_lun.cdb(command.cdb(0, 0))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


def test_synchronize_cache_of_the_whole_medium_is_good(shared_lun: Lun, sync: Sync) -> None:
    """SBC-3 5.22/5.23: LOGICAL BLOCK ADDRESS 0 and NUMBER OF LOGICAL BLOCKS 0 (every
    LBA to the last one) -> GOOD, no data; what was written before still reads back."""
    _sync_and_read_back(shared_lun, sync, [("the whole medium (LBA 0, 0 blocks)",
                                            sync.cdb(0, 0))], seed=10 + sync.size)


def test_synchronize_cache_of_a_range_within_the_capacity_is_good(
    shared_lun: Lun, sync: Sync
) -> None:
    """SBC-3 5.22/5.23: a range within the capacity -> GOOD: the written blocks, the last
    LBA, 0 blocks from the last LBA (just the last one), 8 blocks ending at the last LBA,
    and the whole capacity as a count when the field can hold it."""
    lun = shared_lun
    n = lun.blocks
    cases = [
        ("the written blocks", sync.cdb(_DATA_LBA, _DATA_BLOCKS)),
        ("the last LBA", sync.cdb(n - 1, 1)),
        ("0 blocks from the last LBA", sync.cdb(n - 1, 0)),
        ("8 blocks ending at the last LBA", sync.cdb(n - 8, 8)),
        ("0 blocks from the written blocks", sync.cdb(_DATA_LBA, 0)),
    ]
    if n <= sync.max_blocks:
        cases.append((f"all {n} blocks from LBA 0", sync.cdb(0, n)))
    _sync_and_read_back(lun, sync, cases, seed=20 + sync.size)


def test_synchronize_cache_with_immed_is_good(shared_lun: Lun, sync: Sync) -> None:
    """SBC-3 5.22/5.23: IMMED=1 asks for status once the CDB is validated; the command
    is still GOOD, and the data written before still reads back."""
    n = shared_lun.blocks
    _sync_and_read_back(shared_lun, sync, [
        ("the whole medium with IMMED=1", sync.cdb(0, 0, immed=True)),
        ("the written blocks with IMMED=1", sync.cdb(_DATA_LBA, _DATA_BLOCKS, immed=True)),
        ("the last LBA with IMMED=1", sync.cdb(n - 1, 1, immed=True)),
    ], seed=30 + sync.size)  # fmt: skip


@pytest.mark.parametrize("where", ["first-lba-past-the-end", "zero-blocks-past-the-end",
                                   "lba-max", "lba-above-bit-31"])
def test_synchronize_cache_of_an_lba_past_the_end_is_lba_out_of_range(
    shared_lun: Lun, sync: Sync, where: str
) -> None:
    """SBC-3 5.22/5.23: LOGICAL BLOCK ADDRESS past the last LBA (the capacity, with 1 or
    0 blocks; the largest LBA the CDB holds; for SYNCHRONIZE CACHE(16) an LBA with bit 32
    set whose low 32 bits are a valid LBA) -> ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT
    OF RANGE (21/00)."""
    n = shared_lun.blocks
    if where == "lba-above-bit-31" and sync.size == 10:
        pytest.skip("the LBA of SYNCHRONIZE CACHE(10) has 32 bits")
    lba, blocks = {"first-lba-past-the-end": (n, 1), "zero-blocks-past-the-end": (n, 0),
                   "lba-max": (sync.max_lba, 1),
                   "lba-above-bit-31": ((1 << 32) + _DATA_LBA, 1)}[where]
    result = shared_lun.cdb(sync.cdb(lba, blocks))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


@pytest.mark.parametrize("where", ["last-lba-and-one-more", "eight-blocks-over-the-end",
                                   "capacity-plus-one-from-lba-0", "wrapping-past-2**64"])
def test_synchronize_cache_of_a_range_crossing_the_end_is_lba_out_of_range(
    shared_lun: Lun, sync: Sync, where: str
) -> None:
    """SBC-3 5.22/5.23: a valid LOGICAL BLOCK ADDRESS whose range of NUMBER OF LOGICAL
    BLOCKS ends past the last LBA (for SYNCHRONIZE CACHE(16) also a sum past 2^64) ->
    ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00)."""
    n = shared_lun.blocks
    lba, blocks = {"last-lba-and-one-more": (n - 1, 2), "eight-blocks-over-the-end": (n - 4, 8),
                   "capacity-plus-one-from-lba-0": (0, n + 1),
                   "wrapping-past-2**64": (2**64 - 1, 2)}[where]
    if lba > sync.max_lba or blocks > sync.max_blocks:
        pytest.skip(f"LBA {lba} and {blocks} blocks do not fit SYNCHRONIZE CACHE({sync.size})")
    result = shared_lun.cdb(sync.cdb(lba, blocks))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
