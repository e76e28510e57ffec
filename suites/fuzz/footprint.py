"""Which logical blocks a CDB may change: the fuzz suite's bound on a command's writes.

SBC-4 defines, per command, the LBAs it may write: the range its CDB names (WRITE,
WRITE AND VERIFY, WRITE SAME, ORWRITE, COMPARE AND WRITE, WRITE ATOMIC, WRITE STREAM,
WRITE LONG, XDWRITE/XPWRITE ...), the ranges of its parameter list (UNMAP), or the whole
medium (FORMAT UNIT, SANITIZE, REASSIGN BLOCKS, WRITE SCATTERED, the third-party copy
commands, which the suite does not decode). Every other opcode, including reserved and
vendor-specific ones, may change no block: a handler that writes for it is wrong.

The bound is generous on purpose: a range is allowed whatever the command's outcome
(a refused command should write nothing, which the suite does not separately demand),
and whatever the other CDB fields say (a WRITE SAME with UNMAP, or NDOB, still stays in
its range).
"""

from __future__ import annotations

from dataclasses import dataclass

_TO_THE_END = 1 << 64  # a block count past any medium's end


@dataclass(frozen=True)
class Footprint:
    """The blocks a command may change: `ranges` of (first LBA, block count), clipped to
    the medium, or every block (`everything`)."""

    ranges: tuple[tuple[int, int], ...] = ()
    everything: bool = False

    def blocks(self, medium_blocks: int) -> set[int]:
        if self.everything:
            return set(range(medium_blocks))
        return {lba for first, count in self.ranges
                for lba in range(first, min(first + count, medium_blocks))}  # fmt: skip

    def runs(self, medium_blocks: int) -> list[tuple[int, int]]:
        """The blocks as sorted, merged (LBA, count) runs inside the medium."""
        lbas = sorted(self.blocks(medium_blocks))
        runs: list[tuple[int, int]] = []
        for lba in lbas:
            if runs and runs[-1][0] + runs[-1][1] == lba:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((lba, 1))
        return runs

    def __or__(self, other: Footprint) -> Footprint:
        return Footprint(self.ranges + other.ranges, self.everything or other.everything)

    def describe(self, medium_blocks: int) -> str:
        if self.everything:
            return "every block"
        runs = self.runs(medium_blocks)
        if not runs:
            return "no block"
        return ", ".join(f"LBA {lba}" if n == 1 else f"LBAs {lba}-{lba + n - 1}"
                         for lba, n in runs)  # fmt: skip


NOTHING = Footprint()
EVERYTHING = Footprint(everything=True)


def _be(cdb: bytes, start: int, size: int) -> int:
    return int.from_bytes(cdb[start : start + size].ljust(size, b"\0"), "big")


def _lba_len(cdb: bytes, lba: tuple[int, int], length: tuple[int, int],
             zero_means_rest: bool = False) -> Footprint:
    first, count = _be(cdb, *lba), _be(cdb, *length)
    if count == 0 and zero_means_rest:  # WRITE SAME: 0 blocks = through the last LBA
        count = _TO_THE_END
    return Footprint(((first, count),))


# opcode -> ((LBA offset, size), (length offset, size), a 0 length means "to the end")
_RANGED: dict[int, tuple[tuple[int, int], tuple[int, int], bool]] = {
    0x2A: ((2, 4), (7, 2), False),  # WRITE(10)
    0x2E: ((2, 4), (7, 2), False),  # WRITE AND VERIFY(10)
    0x41: ((2, 4), (7, 2), True),  # WRITE SAME(10)
    0x50: ((2, 4), (7, 2), False),  # XDWRITE(10) (obsolete)
    0x51: ((2, 4), (7, 2), False),  # XPWRITE(10) (obsolete)
    0x53: ((2, 4), (7, 2), False),  # XDWRITEREAD(10) (obsolete)
    0xAA: ((2, 4), (6, 4), False),  # WRITE(12)
    0xAE: ((2, 4), (6, 4), False),  # WRITE AND VERIFY(12)
    0x8A: ((2, 8), (10, 4), False),  # WRITE(16)
    0x8B: ((2, 8), (10, 4), False),  # ORWRITE(16)
    0x8E: ((2, 8), (10, 4), False),  # WRITE AND VERIFY(16)
    0x93: ((2, 8), (10, 4), True),  # WRITE SAME(16)
    0x9A: ((2, 8), (12, 2), False),  # WRITE STREAM(16)
    0x9C: ((2, 8), (12, 2), False),  # WRITE ATOMIC(16)
    0x89: ((2, 8), (13, 1), False),  # COMPARE AND WRITE
}
# Variable-length (7Fh) service actions that write: SA -> zero length means "to the end"
_RANGED_32 = {0x0004: False, 0x0006: False, 0x0007: False,  # XDWRITE, XPWRITE, XDWRITEREAD
              0x000B: False, 0x000C: False, 0x000D: True,  # WRITE, WRITE AND VERIFY, SAME
              0x000E: False, 0x0010: False}  # ORWRITE(32), WRITE STREAM(32)
# Opcodes that may change any block (or whose parameter lists the suite does not decode)
_WHOLE_MEDIUM = {0x04, 0x07, 0x48, 0x83}  # FORMAT UNIT, REASSIGN BLOCKS, SANITIZE, 3PC
_WRITE_LONG_16 = 0x11  # SERVICE ACTION OUT(16) 9Fh
_WRITE_SCATTERED_16 = 0x12


def footprint(cdb: bytes, data_out: bytes | None, blocks_per_physical: int = 1) -> Footprint:
    """The blocks `cdb` (with parameter data `data_out`) may change."""
    if not cdb:
        return NOTHING
    op = cdb[0]
    if op in _WHOLE_MEDIUM:
        return EVERYTHING
    if op == 0x0A:  # WRITE(6): 21-bit LBA, 0 blocks means 256
        return Footprint(((_be(cdb, 1, 3) & 0x1FFFFF, cdb[4] if len(cdb) > 4 and cdb[4]
                           else 256),))  # fmt: skip
    if op in _RANGED:
        return _lba_len(cdb, *_RANGED[op])
    if op == 0x3F:  # WRITE LONG(10): one block, or (PBLOCK) its physical block
        return _write_long(_be(cdb, 2, 4), bool(cdb[1] & 0x20) if len(cdb) > 1 else False,
                           blocks_per_physical)  # fmt: skip
    if op == 0x9F and len(cdb) > 1:
        action = cdb[1] & 0x1F
        if action == _WRITE_LONG_16:
            return _write_long(_be(cdb, 2, 8), bool(cdb[1] & 0x20), blocks_per_physical)
        if action == _WRITE_SCATTERED_16:
            return EVERYTHING
        return NOTHING
    if op == 0x7F and len(cdb) >= 32:
        action = _be(cdb, 8, 2)
        if action == 0x0011:  # WRITE SCATTERED(32)
            return EVERYTHING
        if action in _RANGED_32:
            return _lba_len(cdb, (12, 8), (28, 4), _RANGED_32[action])
        return NOTHING
    if op == 0x42:  # UNMAP: the parameter list's block descriptors
        return _unmap(cdb, data_out or b"")
    return NOTHING


def _write_long(lba: int, pblock: bool, per_physical: int) -> Footprint:
    if not pblock:
        return Footprint(((lba, 1),))
    return Footprint(((lba - lba % per_physical, per_physical),))


def _unmap(cdb: bytes, data: bytes) -> Footprint:
    """Every whole 16-byte descriptor after the 8-byte header, in the data sent and
    within PARAMETER LIST LENGTH (bytes 7-8), whatever the header's lengths claim: a
    handler that honours them touches a subset."""
    usable = data[: _be(cdb, 7, 2)]
    ranges = []
    for pos in range(8, len(usable) - 15, 16):
        ranges.append((_be(usable, pos, 8), _be(usable, pos + 8, 4)))
    return Footprint(tuple(ranges))
