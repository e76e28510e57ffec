"""No data lost: the file-backed handler (tcmu.handlers.filedisk:FileDisk) keeps every
write it acknowledged across kill -9 and restart of its process (Lun.kill_handler,
Lun.restart_handler), with the write cache on (MODE SELECT WCE=1) and writes that are plain, FUA
(SBC-4 5.40: on the medium before GOOD) or followed by SYNCHRONIZE CACHE (SBC-4 5.24).

A write log records every acknowledged write (LBA, blocks, SHA-256 of the data and
whether a FUA or a later SYNCHRONIZE CACHE made it durable). After the last restart the
whole LUN is read back and every block compared with the log's last write to it (or
zeroes), and so is the backing file itself.

WriteBackCacheDisk (tests/e2e/durability_handlers.py) shows the check can fail: it
keeps writes in memory until a flush, which SCSI allows with WCE=1 but FileDisk promises
not to do, so a kill loses writes that no FUA or SYNCHRONIZE CACHE covered, and only
those.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun

pytestmark = pytest.mark.vm

BLOCKS = 512  # 256 KiB of 512-byte blocks: small enough to read back whole
BS = 512
ROUNDS = 2  # batches of writes, each followed by kill -9 and restart
WRITES_PER_ROUND = 12
_CACHING_PAGE = 0x08
_WCE = 0x04


@dataclass
class LoggedWrite:
    lba: int
    blocks: int
    digest: str  # SHA-256 of each block's data (all blocks of a write are alike or not)
    data: bytes
    durable: bool  # FUA, or a SYNCHRONIZE CACHE acknowledged after it


class WriteLog:
    def __init__(self) -> None:
        self.writes: list[LoggedWrite] = []
        self._since_kill = 0  # index of the first write the running handler received

    def killed(self) -> None:
        """A SYNCHRONIZE CACHE after a restart cannot save what the kill lost."""
        self._since_kill = len(self.writes)

    def record(self, lba: int, data: bytes, fua: bool) -> None:
        self.writes.append(LoggedWrite(lba, len(data) // BS,
                                       hashlib.sha256(data).hexdigest(), data, fua))

    def synchronized(self) -> None:
        for write in self.writes[self._since_kill :]:
            write.durable = True

    def expected(self) -> tuple[bytes, dict[int, LoggedWrite]]:
        """The medium the log implies, and the write that last touched each block."""
        medium = bytearray(BLOCKS * BS)
        last: dict[int, LoggedWrite] = {}
        for write in self.writes:
            medium[write.lba * BS : (write.lba + write.blocks) * BS] = write.data
            for lba in range(write.lba, write.lba + write.blocks):
                last[lba] = write
        return bytes(medium), last


def _round(lun: Lun, log: WriteLog, rnd: random.Random) -> None:
    """WRITE(10), WRITE(16) with FUA, WRITE SAME(16) and SYNCHRONIZE CACHE(10), in one
    batch; each must be GOOD before the log records it."""
    commands: list[tuple[bytes, bytes | None, int]] = []
    effects: list[Callable[[], None]] = []
    for _ in range(WRITES_PER_ROUND):
        kind = rnd.choice(("write", "write", "fua", "same", "sync"))
        blocks = rnd.randint(1, 16)
        lba = rnd.randrange(BLOCKS - blocks)
        if kind == "sync":
            commands.append((cdb.synchronize_cache_10(), None, 0))
            effects.append(log.synchronized)
        elif kind == "same":
            block = rnd.randbytes(BS)
            commands.append((cdb.write_same_16(lba, blocks), block, 0))
            effects.append(lambda lba=lba, data=block * blocks: log.record(lba, data, False))
        else:
            data = rnd.randbytes(blocks * BS)
            fua = kind == "fua"
            make = cdb.write_16 if fua else cdb.write_10
            commands.append((make(lba, blocks, fua=fua), data, 0))
            effects.append(lambda lba=lba, data=data, fua=fua: log.record(lba, data, fua))
    for (command, _, _), result, effect in zip(commands, lun.cdbs(commands), effects,
                                               strict=True):
        assert result.good, f"{command.hex(' ')} was not acknowledged:\n{result.describe()}"
        effect()


def _lost_writes(actual: bytes, log: WriteLog) -> list[str]:
    expected, last = log.expected()
    lost = []
    for lba in range(BLOCKS):
        span = slice(lba * BS, (lba + 1) * BS)
        if actual[span] != expected[span]:
            write = last.get(lba)
            what = ("never written, not zeroes" if write is None else
                    f"last written by the write of {write.blocks} block(s) at LBA {write.lba} "
                    f"(sha256 {write.digest[:12]}, {'durable' if write.durable else 'cached'})")
            lost.append(f"LBA {lba}: {what}")
    return lost


def _caching_page(lun: Lun) -> bytes:
    data = lun.cdb(cdb.mode_sense_10(_CACHING_PAGE, dbd=True), data_in_len=64).expect_good().data
    return data[8 : 8 + 2 + data[9]]


def _enable_write_cache(lun: Lun) -> None:
    """MODE SELECT WCE=1 in the caching page (a new handler starts with the kernel's
    emulate_write_cache, 0, which cannot be changed on a live TCMU device), so that only
    FUA and SYNCHRONIZE CACHE demand durability."""
    page = bytearray(_caching_page(lun))
    page[0] &= 0x3F  # PS is reserved in MODE SELECT
    page[2] |= _WCE
    params = bytes(8) + bytes(page)
    lun.cdb(cdb.mode_select_10(len(params)), data_out=params).expect_good()
    assert _caching_page(lun)[2] & _WCE, "WCE did not stick: every write would be flushed"


def _write_kill_restart(lun: Lun, seed: int) -> WriteLog:
    assert lun.sd.startswith("/dev/sd")  # the kernel's probe is over: nothing in flight
    rnd = random.Random(seed)
    log = WriteLog()
    for _ in range(ROUNDS):
        _enable_write_cache(lun)
        _round(lun, log, rnd)
        assert lun.kill_handler(9) == -9
        log.killed()
        lun.restart_handler()
    return log


def _lun(make_lun: Callable[..., Lun], handler: str, path: str) -> Lun:
    return make_lun(size=BLOCKS * BS, block_size=BS, handler=handler,
                    handler_options={"path": path})


def test_every_acknowledged_write_survives_kill_and_restart_of_filedisk(
    make_lun: Callable[..., Lun],
) -> None:
    path = "/run/tcmu-harness/durability.img"
    lun = _lun(make_lun, "tcmu.handlers.filedisk:FileDisk", path)
    log = _write_kill_restart(lun, seed=10)
    assert len(log.writes) >= ROUNDS * WRITES_PER_ROUND // 2
    lost = _lost_writes(lun.read_blocks(0, BLOCKS), log)
    assert not lost, f"{len(lost)} block(s) lost across kill -9/restart:\n" + "\n".join(lost[:20])
    backing = lun.vm.read_file(path)[: BLOCKS * BS].ljust(BLOCKS * BS, b"\0")
    lost = _lost_writes(backing, log)
    assert not lost, f"the backing file {path} lacks {len(lost)} block(s):\n" + "\n".join(lost[:20])


def test_the_write_log_catches_a_handler_that_loses_cached_writes(
    make_lun: Callable[..., Lun],
) -> None:
    """The same scenario against WriteBackCacheDisk: blocks are lost, and only blocks
    whose last write was neither FUA nor synchronized (its flush for a FUA write saves
    older cached writes too, so not all of those need be lost)."""
    lun = _lun(make_lun, f"{Path(__file__).resolve().parent}/durability_handlers.py:"
               "WriteBackCacheDisk",
               "/run/tcmu-harness/durability-wb.img")
    log = _write_kill_restart(lun, seed=10)
    lost = _lost_writes(lun.read_blocks(0, BLOCKS), log)
    _, last = log.expected()
    cached = {lba for lba, write in last.items() if not write.durable}
    lost_lbas = {int(line.split()[1].rstrip(":")) for line in lost}
    assert lost_lbas, "WriteBackCacheDisk lost nothing: the write log cannot catch a loss"
    assert lost_lbas <= cached, f"durable writes lost: {sorted(lost_lbas - cached)[:20]}"
