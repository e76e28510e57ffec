"""Model-based check of the data path: random sequences of WRITE, READ, WRITE SAME,
UNMAP and COMPARE AND WRITE against an in-memory model of the medium (SBC-3 4.4 and the
command clauses: what each command stores, refuses and returns).

Each hypothesis example reads the small LUN once to seed the model, builds a sequence of
commands whose outcome the model predicts (status, sense, data), sends the whole
sequence in one batch and compares every answer, then reads the whole LUN back. Only
the commands the device claims are drawn. A failure names the step, the CDB and the
first differing LBA and byte.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities, discover
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

MODEL_BLOCKS = 256  # small enough to read back whole after every example
STEPS = st.integers(min_value=1, max_value=12)


@dataclasses.dataclass
class Step:
    """One command of a sequence and what the model expects of it."""

    what: str
    cdb: bytes
    data_out: bytes | None
    data_in_len: int
    check: Callable[[CdbResult], None]


class Medium:
    """The model: the bytes of every block, and what each command does to them."""

    def __init__(self, data: bytes, block_size: int, caps: Capabilities) -> None:
        self.data = bytearray(data)
        self.bs = block_size
        self.blocks = len(data) // block_size
        self.caps = caps

    def span(self, lba: int, blocks: int) -> slice:
        return slice(lba * self.bs, (lba + blocks) * self.bs)

    def in_range(self, lba: int, blocks: int) -> bool:
        return lba < self.blocks and lba + blocks <= self.blocks


def _expect_good_data(expected: bytes, bs: int, lba: int) -> Callable[[CdbResult], None]:
    def check(result: CdbResult) -> None:
        result.expect_good()
        assert_blocks_equal(result.data, expected, bs, lba, what="READ(16) data")

    return check


def _expect_good(result: CdbResult) -> None:
    result.expect_good()


def _expect_out_of_range(result: CdbResult) -> None:
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


def _expect_miscompare(offset: int) -> Callable[[CdbResult], None]:
    def check(result: CdbResult) -> None:
        result.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=offset)

    return check


@st.composite
def _extent(draw: st.DrawFn, blocks: int, max_len: int = 16) -> tuple[int, int]:
    """Mostly in range; sometimes touching or crossing the end (to be refused)."""
    length = draw(st.integers(min_value=1, max_value=max_len))
    lba = draw(st.one_of(st.integers(0, blocks - 1), st.integers(blocks - length, blocks + 2)))
    return max(lba, 0), length


def _write(draw: st.DrawFn, m: Medium) -> Step:
    lba, n = draw(_extent(m.blocks))
    data = pattern(lba, n, m.bs, seed=draw(st.integers(1, 2**32 - 1)))
    if not m.in_range(lba, n):
        return Step("WRITE(16) past the end", cdb.write_16(lba, n), data, 0, _expect_out_of_range)
    m.data[m.span(lba, n)] = data
    return Step(f"WRITE(16) LBA {lba} x{n}", cdb.write_16(lba, n), data, 0, _expect_good)


def _read(draw: st.DrawFn, m: Medium) -> Step:
    lba, n = draw(_extent(m.blocks))
    if not m.in_range(lba, n):
        return Step("READ(16) past the end", cdb.read_16(lba, n), None, n * m.bs,
                    _expect_out_of_range)  # fmt: skip
    expected = bytes(m.data[m.span(lba, n)])
    return Step(f"READ(16) LBA {lba} x{n}", cdb.read_16(lba, n), None, n * m.bs,
                _expect_good_data(expected, m.bs, lba))  # fmt: skip


def _write_same(draw: st.DrawFn, m: Medium) -> Step:
    limits = m.caps.block_limits
    top = min(32, limits.max_write_same if limits and limits.max_write_same else 32)
    lba, n = draw(_extent(m.blocks, max_len=top))
    zero = draw(st.booleans())
    block = bytes(m.bs) if zero else pattern(lba, 1, m.bs, seed=draw(st.integers(1, 999)))
    prov = m.caps.provisioning
    unmap = zero and prov is not None and prov.lbpws and m.caps.thin and draw(st.booleans())
    command = cdb.write_same_16(lba, n, unmap=unmap)
    if not m.in_range(lba, n):
        return Step("WRITE SAME(16) past the end", command, block, 0, _expect_out_of_range)
    m.data[m.span(lba, n)] = block * n
    return Step(f"WRITE SAME(16) LBA {lba} x{n} unmap={unmap}", command, block, 0, _expect_good)


def _unmap(draw: st.DrawFn, m: Medium) -> Step:
    extents = draw(st.lists(_extent(m.blocks), min_size=1, max_size=3))
    params = cdb.unmap_parameter_list(extents)
    command = cdb.unmap(len(params))
    if not all(m.in_range(lba, n) for lba, n in extents):
        return Step("UNMAP past the end", command, params, 0, _expect_out_of_range)
    for lba, n in extents:  # LBPRZ: deallocated blocks read zeroes
        m.data[m.span(lba, n)] = bytes(n * m.bs)
    return Step(f"UNMAP {extents}", command, params, 0, _expect_good)


def _compare_and_write(draw: st.DrawFn, m: Medium) -> Step:
    lba = draw(st.integers(0, m.blocks - 1))
    current = bytes(m.data[m.span(lba, 1)])
    new = pattern(lba, 1, m.bs, seed=draw(st.integers(1, 2**32 - 1)))
    command = cdb.compare_and_write(lba, 1)
    if draw(st.booleans()):
        m.data[m.span(lba, 1)] = new
        return Step(f"COMPARE AND WRITE LBA {lba} (match)", command, current + new, 0,
                    _expect_good)  # fmt: skip
    offset = draw(st.integers(0, m.bs - 1))
    wrong = bytearray(current)
    wrong[offset] ^= 0x5A
    return Step(f"COMPARE AND WRITE LBA {lba} (miscompare at {offset})", command,
                bytes(wrong) + new, 0, _expect_miscompare(offset))  # fmt: skip


def _generators(caps: Capabilities) -> list[Callable[[st.DrawFn, Medium], Step]]:
    gens: list[Callable[[st.DrawFn, Medium], Step]] = [_write, _read]
    lbprz = caps.capacity is not None and caps.capacity.lbprz
    if caps.claims(Opcode.WRITE_SAME_16):
        gens.append(_write_same)
    if caps.claims(Opcode.UNMAP) and lbprz:
        gens.append(_unmap)
    limits = caps.block_limits
    if caps.claims(Opcode.COMPARE_AND_WRITE) and limits and limits.max_compare_and_write >= 1:
        gens.append(_compare_and_write)
    return gens


@pytest.fixture
def model_lun(make_lun: Callable[..., Lun], lun_spec: Any) -> Lun:
    return make_lun(size=MODEL_BLOCKS * lun_spec.block_size)


def test_random_command_sequences_match_the_model(model_lun: Lun) -> None:
    """SBC-3 4.4, 5.x: every command stores and returns what the medium model predicts;
    refused commands (21/00, MISCOMPARE) change nothing."""
    lun = model_lun
    caps = discover(lun)
    gens = _generators(caps)
    whole = cdb.read_16(0, MODEL_BLOCKS)
    size = MODEL_BLOCKS * lun.block_size

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data(), count=STEPS)
    def sequence(data: st.DataObject, count: int) -> None:
        start = lun.cdb(whole, data_in_len=size).expect_good().data
        medium = Medium(start, lun.block_size, caps)
        steps = [data.draw(st.sampled_from(gens))(data.draw, medium) for _ in range(count)]
        results = lun.cdbs([(s.cdb, s.data_out, s.data_in_len) for s in steps])
        for number, (step, result) in enumerate(zip(steps, results, strict=True), 1):
            try:
                step.check(result)
            except AssertionError as exc:
                raise AssertionError(f"step {number} of {count}, {step.what}: {exc}") from None
        final = lun.cdb(whole, data_in_len=size).expect_good().data
        assert_blocks_equal(final, bytes(medium.data), lun.block_size, 0,
                            what="the whole LUN after the sequence")

    sequence()

