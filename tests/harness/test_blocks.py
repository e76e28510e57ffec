"""harness.blocks: patterns that differ per block and seed, and differences named by LBA."""

from __future__ import annotations

import pytest

from tcmu_harness.blocks import assert_blocks_equal, describe_difference, differing_blocks, pattern


def test_pattern_differs_per_block_offset_and_seed() -> None:
    data = pattern(10, 2, 512, seed=7)
    assert len(data) == 1024
    assert data[:512] != data[512:]
    assert pattern(10, 1, 512, seed=7) == data[:512]
    assert pattern(11, 1, 512, seed=7) == data[512:]
    assert pattern(10, 1, 512, seed=8) != data[:512]
    records = {data[i : i + 16] for i in range(0, 512, 16)}
    assert len(records) == 32  # no two records of a block alike: a shifted buffer shows


def test_differences_are_named_by_lba_and_offset() -> None:
    expected = pattern(100, 4, 512)
    actual = bytearray(expected)
    actual[2 * 512 + 37] ^= 1
    actual[3 * 512] ^= 1
    assert differing_blocks(bytes(actual), expected, 512, 100) == [(102, 37), (103, 0)]
    text = describe_difference(bytes(actual), expected, 512, 100)
    assert "2 block(s) differ: LBA 102 (byte 37), LBA 103 (byte 0)" in text
    assert "first difference: LBA 102, byte 37 of the block (byte 1061 of the transfer)" in text
    with pytest.raises(AssertionError, match="LBA 102, byte 37"):
        assert_blocks_equal(bytes(actual), expected, 512, 100)
    assert_blocks_equal(expected, expected, 512, 100)


def test_a_short_answer_is_a_difference() -> None:
    expected = pattern(0, 2, 512)
    assert differing_blocks(expected[:700], expected, 512) == [(1, 188)]
    assert "length 700 bytes, expected 1024" in describe_difference(expected[:700], expected, 512)
