"""Block data for the suites: patterns that cannot be mistaken for one another, and
comparisons that say which LBA and which byte in it went wrong (not a bare index into
a megabyte of data).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcmu_harness.lun import Lun

_RECORD = struct.Struct(">IIQ")  # seed, LBA (low 32 bits), offset-dependent word
_GOLDEN = 0x9E3779B97F4A7C15
_SHOW = 16  # bytes shown around a difference
_LISTED = 8  # differing blocks listed by name


def pattern(lba: int, blocks: int, block_size: int, seed: int = 1) -> bytes:
    """`blocks` blocks starting at `lba`: every 16-byte record names the seed, the LBA and
    its own offset, so a block written to the wrong LBA, a shifted buffer or a block
    from another write all differ from what is expected."""
    out = bytearray()
    for block in range(lba, lba + blocks):
        out += b"".join(
            _RECORD.pack(seed & 0xFFFFFFFF, block & 0xFFFFFFFF,
                         (block * _GOLDEN + offset) & (2**64 - 1))
            for offset in range(0, block_size, _RECORD.size)
        )  # fmt: skip
    return bytes(out)


def differing_blocks(actual: bytes, expected: bytes, block_size: int,
                     first_lba: int = 0) -> list[tuple[int, int]]:
    """(LBA, offset of the first differing byte in that block) for every block that
    differs; a length difference counts from the shorter end."""
    found = []
    for start in range(0, max(len(actual), len(expected)), block_size):
        a = actual[start : start + block_size]
        e = expected[start : start + block_size]
        if a != e:
            offset = next((i for i, (x, y) in enumerate(zip(a, e, strict=False)) if x != y),
                          min(len(a), len(e)))
            found.append((first_lba + start // block_size, offset))
    return found


def describe_difference(actual: bytes, expected: bytes, block_size: int,
                        first_lba: int = 0) -> str:
    """"" when equal, else a readable account: the differing LBAs, and the bytes
    around the first difference."""
    diffs = differing_blocks(actual, expected, block_size, first_lba)
    if not diffs:
        return ""
    lba, offset = diffs[0]
    at = (lba - first_lba) * block_size + offset
    lines = []
    if len(actual) != len(expected):
        lines.append(f"length {len(actual)} bytes, expected {len(expected)}")
    listed = ", ".join(f"LBA {d[0]} (byte {d[1]})" for d in diffs[:_LISTED])
    more = f" and {len(diffs) - _LISTED} more" if len(diffs) > _LISTED else ""
    lines.append(f"{len(diffs)} block(s) differ: {listed}{more}")
    lines.append(f"first difference: LBA {lba}, byte {offset} of the block "
                 f"(byte {at} of the transfer)")
    lines.append(f"  got      {actual[at : at + _SHOW].hex(' ') or '(nothing)'}")
    lines.append(f"  expected {expected[at : at + _SHOW].hex(' ') or '(nothing)'}")
    return "\n".join(lines)


def assert_blocks_equal(actual: bytes, expected: bytes, block_size: int, first_lba: int = 0,
                        what: str = "data") -> None:
    __tracebackhide__ = True
    text = describe_difference(actual, expected, block_size, first_lba)
    if text:
        raise AssertionError(f"{what} read back differs from what was expected\n{text}")


AREAS = 32  # how many disjoint areas a module's shared LUN is cut into


def page_blocks(block_size: int) -> int:
    """Blocks per 4 KiB page (at least 1): the unit back-ends deallocate in."""
    return max(1, 4096 // block_size)


def area(lun: Lun, index: int) -> int:
    """First LBA (page aligned) of area `index` of the LUN: tests of one module write
    disjoint areas of their shared LUN, so they cannot disturb one another."""
    assert 0 <= index < AREAS
    page = page_blocks(lun.block_size)
    return lun.blocks * index // AREAS // page * page


def area_blocks(lun: Lun) -> int:
    """How many blocks each area holds (one page short, so areas never touch)."""
    return lun.blocks // AREAS - page_blocks(lun.block_size)
