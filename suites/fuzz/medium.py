"""A small LUN filled with a known pattern, and the check that commands changed no block
outside the ones they may change (suites/fuzz/footprint.py).

After each example the blocks the commands may have changed are written back with the
pattern, and the guest computes a SHA-1 of the whole LUN (sg_dd on the sg node, so no
page cache, piped to sha1sum): one agent round trip and a few hundred bytes, instead of
the LUN's data crossing to the host. Only when the digest differs is the LUN read to the
host, to name the blocks that changed.
"""

from __future__ import annotations

import hashlib

from tcmu_harness.blocks import differing_blocks, pattern
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import SenseKey, Status
from tcmu_harness.suites.fuzz.footprint import Footprint

SEED = 0xF022  # the pattern's seed: no other suite writes it
_READY_TRIES = 6  # commands spent clearing unit attentions and restarting a stopped unit


class PatternedMedium:
    def __init__(self, lun: Lun) -> None:
        self.lun = lun
        self.blocks = lun.blocks
        self.bs = lun.block_size
        self.data = pattern(0, self.blocks, self.bs, seed=SEED)
        self.digest = hashlib.sha1(self.data).hexdigest()
        capacity = lun.cdb(cdb.read_capacity_16())  # LOGICAL BLOCKS PER PHYSICAL BLOCK
        exponent = capacity.data[13] & 0x0F if capacity.good and len(capacity.data) > 13 else 0
        self.blocks_per_physical = 1 << exponent  # (WRITE LONG with PBLOCK writes them)

    def current(self, lba: int, blocks: int) -> bytes:
        """What the medium holds at the start of an example."""
        return self.data[lba * self.bs : (lba + blocks) * self.bs]

    def fill(self) -> None:
        self.lun.write_blocks(0, self.data)

    def make_ready(self) -> None:
        """Clear unit attentions (MODE SELECT raises them) and restart a stopped unit
        (START STOP UNIT with START=0), so the check's own commands are GOOD."""
        for _ in range(_READY_TRIES):
            result = self.lun.cdb(cdb.test_unit_ready())
            if result.good:
                return
            key = result.decoded.key if result.decoded else None
            if result.status == Status.CHECK_CONDITION and key == SenseKey.NOT_READY:
                self.lun.cdb(cdb.start_stop_unit(start=True))
            elif not (result.status == Status.CHECK_CONDITION
                      and key == SenseKey.UNIT_ATTENTION):
                break
        raise AssertionError("the LUN does not become ready after the fuzzed commands "
                             f"(TEST UNIT READY, START STOP UNIT START=1):\n{result.describe()}")

    def restore(self, changed: Footprint) -> None:
        """Write the pattern back over the blocks the commands may have changed."""
        runs = changed.runs(self.blocks)
        if runs:
            writes = [(cdb.write_16(lba, n), self.current(lba, n), 0) for lba, n in runs]
            for result in self.lun.cdbs(writes):
                _expect_good(result, "restoring the pattern")

    def guest_digest(self) -> str:
        script = (f"sg_dd if={self.lun.sg} of=- bs={self.bs} count={self.blocks} "
                  "2>/dev/null | sha1sum")
        run = self.lun.vm.run(["bash", "-o", "pipefail", "-c", script], timeout=60)
        assert run.exit_code == 0, ("reading the LUN back with sg_dd failed: "
                                  + run.stderr.decode(errors="replace"))
        return run.stdout.decode().split()[0]

    def changed_outside(self, allowed: Footprint) -> str | None:
        """None when the LUN holds the pattern again after restore(allowed); else which
        blocks differ (and the pattern is written back over the whole LUN)."""
        self.make_ready()
        self.restore(allowed)
        if self.guest_digest() == self.digest:
            return None
        actual = self.lun.read_blocks(0, self.blocks)
        diffs = differing_blocks(actual, self.data, self.bs)
        self.fill()
        listed = ", ".join(f"LBA {lba} (from byte {offset})" for lba, offset in diffs[:8])
        more = f" and {len(diffs) - 8} more" if len(diffs) > 8 else ""
        return (f"{len(diffs)} block(s) outside what the commands may change "
                f"({allowed.describe(self.blocks)}) changed: {listed}{more}")


def _expect_good(result: CdbResult, what: str) -> None:
    if not result.good:
        raise AssertionError(f"{what}: expected GOOD\n{result.describe()}")
