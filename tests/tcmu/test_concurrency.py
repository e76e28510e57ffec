"""BlockHandler serving commands concurrently (a worker pool per handler, or async
storage methods), through the real runner against the fake kernel: a slow command does
not hold up fast ones, completions come out of order, and overlapping commands keep
their order (COMPARE AND WRITE stays atomic against a write it overlaps)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable

import pytest
from blockkit import MemDisk, caw, make_device, pattern, rw10
from test_runner import Rig

from tcmu import spec
from tcmu.describe import describe
from tcmu.handler import Command, DeviceInfo, Reconfig, Result, ScatterBuffer
from tcmu.options import OptionError, options_of
from tcmu.sense import INTERNAL_FAILURE_SENSE, SenseError
from tcmu.workers import RangeClaims
from tcmu_harness.scsi.constants import Asc, SenseKey

BS = 512
TUR = bytes(6)
READ_10, WRITE_10 = 0x28, 0x2A


class GatedDisk(MemDisk):
    """MemDisk on a worker pool whose storage calls touching LBA 0 wait for `gate`."""

    workers = 4

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def _hold(self, offset: int) -> None:
        if offset == 0 and not self.gate.is_set():
            self.entered.set()
            assert self.gate.wait(10), "the gate was never opened"

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        self._hold(offset)
        super().read(offset, buf)

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        self._hold(offset)
        super().write(offset, buf)


def test_a_slow_read_does_not_block_fast_commands(rig_factory: Callable[..., Rig]) -> None:
    disk = GatedDisk(make_device())
    disk.mem[:BS] = pattern(BS)
    rig = rig_factory(disk)
    try:
        slow = rig.k.queue_cmd(rw10(READ_10, 0, 1), data_in=BS)
        assert disk.entered.wait(5)
        fast = [rig.k.queue_cmd(TUR), rig.k.queue_cmd(rw10(READ_10, 8, 1), data_in=BS)]
        done = rig.wait(2, timeout=3)
        assert sorted(c.cmd_id for c in done) == sorted(fast)
        assert all(c.status == 0 for c in done)
    finally:
        disk.gate.set()
    (last,) = rig.wait(1)
    assert (last.cmd_id, last.status, last.data_in) == (slow, 0, pattern(BS))


def test_compare_and_write_waits_for_the_write_it_overlaps(
    rig_factory: Callable[..., Rig],
) -> None:
    disk = GatedDisk(make_device())
    rig = rig_factory(disk)
    old, new = pattern(BS, 1), pattern(BS, 2)
    try:
        write = rig.k.queue_cmd(rw10(WRITE_10, 0, 1), data_out=old)
        assert disk.entered.wait(5)
        cas = rig.k.queue_cmd(caw(0, 1), data_out=old + new)  # expects the write's data
        read = rig.k.queue_cmd(rw10(READ_10, 0, 1), data_in=BS)  # after both, in order
        elsewhere = rig.k.queue_cmd(rw10(READ_10, 100, 1), data_in=BS)
        (first,) = rig.wait(1, timeout=3)
        assert first.cmd_id == elsewhere  # nothing overlapping may pass the held write
        assert rig.quiet(0.3)
    finally:
        disk.gate.set()
    rest = {c.cmd_id: c for c in rig.wait(3)}
    assert rest[write].status == 0
    assert rest[cas].status == 0, rest[cas].sense[:18].hex()  # compared with `old`: equal
    assert rest[read].data_in == new
    assert bytes(disk.mem[:BS]) == new


class AsyncDisk(MemDisk):
    """async storage methods: reads of LBA 0 take a while; the rest are immediate."""

    async def read(self, offset: int, buf: ScatterBuffer) -> None:  # type: ignore[override]
        if offset == 0:
            await asyncio.sleep(1.0)
        buf.write(self.mem[offset : offset + len(buf)])

    async def write(self, offset: int, buf: ScatterBuffer) -> None:  # type: ignore[override]
        self.mem[offset : offset + len(buf)] = buf.read()


def test_async_storage_serves_commands_concurrently(rig_factory: Callable[..., Rig]) -> None:
    disk = AsyncDisk(make_device())
    disk.mem[:BS] = pattern(BS, 3)
    rig = rig_factory(disk)
    slow = rig.k.queue_cmd(rw10(READ_10, 0, 1), data_in=BS)
    write = rig.k.queue_cmd(rw10(WRITE_10, 9, 1), data_out=pattern(BS, 4))
    read = rig.k.queue_cmd(rw10(READ_10, 9, 1), data_in=BS)
    order = [c for c in rig.wait(3, timeout=5)]
    assert [c.cmd_id for c in order] == [write, read, slow]
    assert order[1].data_in == pattern(BS, 4) and order[2].data_in == pattern(BS, 3)


def test_unit_state_commands_wait_for_storage_in_flight(rig_factory: Callable[..., Rig]) -> None:
    disk = GatedDisk(make_device())
    rig = rig_factory(disk)
    try:
        write = rig.k.queue_cmd(rw10(WRITE_10, 0, 1), data_out=pattern(BS))
        assert disk.entered.wait(5)
        stop = rig.k.queue_cmd(bytes([0x1B, 0, 0, 0, 0, 0]))  # START STOP UNIT, START=0
        inquiry = rig.k.queue_cmd(bytes([0x12, 0, 0, 0, 36, 0]), data_in=36)
        (first,) = rig.wait(1, timeout=3)
        assert first.cmd_id == inquiry  # answered at once, in the ring thread
        assert rig.quiet(0.3) and not disk.stopped  # STOP waits for the write
    finally:
        disk.gate.set()
    assert [c.cmd_id for c in rig.wait(2)] == [write, stop]
    assert disk.stopped
    read = rig.k.queue_cmd(rw10(READ_10, 8, 1), data_in=BS)
    (done,) = rig.wait(1)
    assert done.cmd_id == read and done.sense[2] == 0x02  # NOT READY: stopped


class Failing(MemDisk):
    workers = 2

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        if offset == 0:
            raise RuntimeError("storage bug")
        raise SenseError(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR)


def test_errors_on_the_pool_become_sense(rig_factory: Callable[..., Rig],
                                         caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(Failing(make_device()))
    with caplog.at_level(logging.ERROR, logger="tcmu.commands"):
        bug = rig.k.queue_cmd(rw10(READ_10, 0, 1), data_in=BS)
        medium = rig.k.queue_cmd(rw10(READ_10, 5, 1), data_in=BS)
        done = {c.cmd_id: c for c in rig.wait(2)}
    assert done[bug].sense[:18] == INTERNAL_FAILURE_SENSE
    assert (done[medium].sense[2], done[medium].sense[12]) == (0x03, 0x11)
    assert "storage bug" in caplog.text


def test_reconfig_waits_for_commands_in_flight(rig_factory: Callable[..., Rig]) -> None:
    disk = GatedDisk(make_device(blocks=300))
    rig = rig_factory(disk)
    rig.k.queue_cmd(rw10(READ_10, 0, 1), data_in=BS)
    assert disk.entered.wait(5)
    change = Reconfig(disk.device, dataclasses.replace(disk.device, size=600 * BS))
    applied = threading.Thread(target=disk.apply_reconfig, args=(change,))
    applied.start()
    applied.join(0.3)
    assert applied.is_alive() and disk.num_blocks == 300  # the read still runs
    disk.gate.set()
    applied.join(5)
    assert disk.num_blocks == 600
    rig.wait(1)


def test_workers_is_an_option_and_zero_serves_in_the_ring_thread() -> None:
    assert spec.load("tcmu.handlers.ramdisk:RamDisk workers=4").instantiate(
        make_device()).workers == 4  # fmt: skip
    disk = MemDisk(make_device())
    assert disk.workers == 0
    result = disk.handle(Command(1, rw10(READ_10, 0, 1), ScatterBuffer([memoryview(
        bytearray(BS))])))  # fmt: skip
    assert result is not None and result.status == 0  # answered at once


def test_async_storage_needs_a_worker() -> None:
    assert options_of(AsyncDisk)["workers"].default == 16
    with pytest.raises(OptionError, match=r"^workers must be an integer >= 1, not '0'$"):
        AsyncDisk(make_device(), workers=0)
    assert "storage methods: read (async), write (async), flush" in describe(AsyncDisk)


def test_quiesce_waits_for_the_pool() -> None:
    disk = GatedDisk(make_device())
    done: list[Result] = []
    cmd = Command(1, rw10(READ_10, 0, 1), ScatterBuffer([memoryview(bytearray(BS))]),
                  _completer=lambda c, r: done.append(r))
    assert disk.handle(cmd) is None
    assert disk.entered.wait(5)
    threading.Timer(0.3, disk.gate.set).start()
    disk.quiesce()
    assert [r.status for r in done] == [0]


# --- range claims --------------------------------------------------------------------------------


def test_claims_readers_share_writers_wait_for_overlaps_only() -> None:
    claims = RangeClaims()
    r1 = claims.claim([(0, 8)], exclusive=False)
    r2 = claims.claim([(4, 12)], exclusive=False)
    w1 = claims.claim([(6, 7)], exclusive=True)
    w2 = claims.claim([(100, 101)], exclusive=True)
    r3 = claims.claim([(6, 6 + 1)], exclusive=False)
    everything = claims.claim(None, exclusive=True)
    assert r2.before == [] and w2.before == []
    assert w1.before == [r1, r2] and r3.before == [w1]
    assert everything.before == [r1, r2, w1, w2, r3]
    for claim in (r1, r2, w1, w2, r3, everything):
        claims.release(claim)
    assert len(claims) == 0
