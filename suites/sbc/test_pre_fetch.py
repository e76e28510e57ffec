"""PRE-FETCH(10) and PRE-FETCH(16) (SBC-3 5.10, 5.11): a hint to bring a range of LBAs
into the cache; it transfers no data and changes none.

Covered: a range within the capacity (a few blocks, the last LBA, PREFETCH LENGTH 0 =
to the last LBA, exactly MAXIMUM PREFETCH LENGTH) completes with CONDITION MET or GOOD
(the two statuses SBC-3 allows) and no sense, with IMMED 0 or 1, and the data reads back
unchanged; LBA range (21/00); PREFETCH LENGTH above MAXIMUM PREFETCH LENGTH (Block Limits
VPD, when not 0) -> 24/00 on the length field; refusal when the command is not claimed.
"""

from __future__ import annotations

import dataclasses

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status

pytestmark = pytest.mark.vm

_DATA_LBA = 1000  # the blocks the "data unchanged" checks write and read
_DATA_BLOCKS = 16


@dataclasses.dataclass(frozen=True)
class PreFetch:
    """One of the two CDB sizes, with what differs between them."""

    size: int
    opcode: int
    length_byte: int  # PREFETCH LENGTH, most significant byte
    max_lba: int
    max_length: int

    def cdb(self, lba: int, blocks: int, immed: bool = False) -> bytes:
        build = cdb.pre_fetch_10 if self.size == 10 else cdb.pre_fetch_16
        return build(lba, blocks, immed)


PF10 = PreFetch(10, Opcode.PRE_FETCH_10, 7, 0xFFFFFFFF, 0xFFFF)
PF16 = PreFetch(16, Opcode.PRE_FETCH_16, 10, 2**64 - 1, 0xFFFFFFFF)


@pytest.fixture(params=[PF10, PF16], ids=["pre-fetch-10", "pre-fetch-16"])
def command(request: pytest.FixtureRequest) -> PreFetch:
    return request.param


@pytest.fixture
def pf(command: PreFetch, caps: Capabilities) -> PreFetch:
    """The command, skipping unless the device claims it."""
    caps.require(command.opcode)
    return command


def _expect_prefetched(result: CdbResult, what: str) -> None:
    """SBC-3 5.10: CONDITION MET (the range fits the cache) or GOOD (it does not); no
    sense data either way."""
    __tracebackhide__ = True
    if result.status not in (Status.CONDITION_MET, Status.GOOD) or not result.transport_ok:
        raise AssertionError(f"{what}: expected CONDITION MET or GOOD\n{result.describe()}")
    assert not result.sense, f"{what}: sense data with status 0x{result.status:02x}: " \
        f"{result.sense.hex(' ')}"


def _max_prefetch(caps: Capabilities) -> int:
    """MAXIMUM PREFETCH LENGTH, 0 when unreported (no limit stated)."""
    limits = caps.block_limits
    return limits.max_prefetch if limits is not None else 0


def _prefetch_and_read_back(lun: Lun, cases: list[tuple[str, bytes]]) -> None:
    """Write a pattern, send each PRE-FETCH, read the pattern back unchanged."""
    bs = lun.block_size
    data = pattern(_DATA_LBA, _DATA_BLOCKS, bs, seed=5)
    results = lun.cdbs([(cdb.write_16(_DATA_LBA, _DATA_BLOCKS), data, 0)]
                       + [(c, None, 0) for _, c in cases]
                       + [(cdb.read_16(_DATA_LBA, _DATA_BLOCKS), None, len(data))])
    results[0].expect_good()
    for (what, _), result in zip(cases, results[1:-1], strict=True):
        _expect_prefetched(result, what)
    assert_blocks_equal(results[-1].expect_good().data, data, bs, _DATA_LBA,
                        what="data after PRE-FETCH")


def test_pre_fetch_is_invalid_command_operation_code_when_not_claimed(
    shared_lun: Lun, caps: Capabilities, command: PreFetch
) -> None:
    """SPC-4 6.35 / SAM-5 5.3: a command the device does not list in REPORT SUPPORTED
    OPERATION CODES is refused with INVALID COMMAND OPERATION CODE (20/00)."""
    caps.require_absent(command.opcode)
    result = shared_lun.cdb(command.cdb(0, 1))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


def test_pre_fetch_within_the_capacity_is_condition_met_or_good_and_changes_no_data(
    shared_lun: Lun, caps: Capabilities, pf: PreFetch
) -> None:
    """SBC-3 5.10/5.11: PRE-FETCH of LBAs within the capacity completes with CONDITION
    MET or GOOD and no sense: a few blocks, the last LBA, PREFETCH LENGTH 0 (to the last
    LBA) from the last LBA, exactly MAXIMUM PREFETCH LENGTH; the medium is unchanged."""
    lun = shared_lun
    last = lun.blocks - 1
    cases = [
        ("the written blocks", pf.cdb(_DATA_LBA, _DATA_BLOCKS)),
        ("the last LBA", pf.cdb(last, 1)),
        ("PREFETCH LENGTH 0 from the last LBA", pf.cdb(last, 0)),
        ("the first LBA", pf.cdb(0, 1)),
    ]
    maximum = _max_prefetch(caps)
    if 0 < maximum <= min(lun.blocks, pf.max_length):
        cases.append((f"exactly MAXIMUM PREFETCH LENGTH ({maximum})", pf.cdb(0, maximum)))
    _prefetch_and_read_back(lun, cases)


def test_pre_fetch_with_immed_is_condition_met_or_good_and_changes_no_data(
    shared_lun: Lun, pf: PreFetch
) -> None:
    """SBC-3 5.10/5.11: IMMED=1 asks for status once the CDB is validated; it is still
    CONDITION MET or GOOD, and the data is unchanged."""
    _prefetch_and_read_back(shared_lun, [
        ("IMMED=1", pf.cdb(_DATA_LBA, _DATA_BLOCKS, immed=True)),
        ("IMMED=1, the last LBA", pf.cdb(shared_lun.blocks - 1, 1, immed=True)),
    ])  # fmt: skip


@pytest.mark.parametrize(
    "where", ["first-lba-past-the-end", "spanning-the-end", "lba-max",
              "zero-blocks-past-the-end"])
def test_pre_fetch_beyond_the_last_lba_is_lba_out_of_range(
    shared_lun: Lun, pf: PreFetch, where: str
) -> None:
    """SBC-3 5.10/5.11: LOGICAL BLOCK ADDRESS plus PREFETCH LENGTH past the capacity (or
    an LBA past the last one) -> ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE
    (21/00)."""
    n = shared_lun.blocks
    lba, blocks = {"first-lba-past-the-end": (n, 1), "spanning-the-end": (n - 1, 2),
                   "lba-max": (pf.max_lba, 1), "zero-blocks-past-the-end": (n, 0)}[where]
    result = shared_lun.cdb(pf.cdb(lba, blocks))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


def test_pre_fetch_longer_than_the_maximum_prefetch_length_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, pf: PreFetch
) -> None:
    """SBC-3 6.5.3: PREFETCH LENGTH above MAXIMUM PREFETCH LENGTH (Block Limits VPD) ->
    ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), field pointer on PREFETCH LENGTH."""
    caps.require_vpd(0xB0)
    maximum = _max_prefetch(caps)
    if not maximum:
        pytest.skip("MAXIMUM PREFETCH LENGTH is 0: no limit is reported")
    blocks = maximum + 1
    if blocks > min(shared_lun.blocks, pf.max_length):
        pytest.skip(f"MAXIMUM PREFETCH LENGTH {maximum}: a longer range does not fit the "
                    f"capacity or the {pf.size}-byte CDB")
    result = shared_lun.cdb(pf.cdb(0, blocks))
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    pointer = result.decoded.field_pointer if result.decoded else None
    allowed = (FieldPointer(True, pf.length_byte, None), FieldPointer(True, pf.length_byte, 7))
    assert pointer in allowed, f"field pointer {pointer}, expected CDB byte {pf.length_byte}"
