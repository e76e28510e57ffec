"""BlockHandler: the data buffer against the length the CDB implies, and the finer rules of
WRITE SAME, UNMAP, VERIFY and COMPARE AND WRITE (helpers in blockkit.py)."""

from __future__ import annotations

import struct

import pytest
from blockkit import (
    BLOCKS,
    BS,
    ILLEGAL_REQUEST,
    MISCOMPARE,
    MemDisk,
    ThinDisk,
    assert_check,
    assert_good,
    assert_mismatch,
    caw,
    cdb_sks,
    make_device,
    param_sks,
    pattern,
    run,
    rw6,
    rw10,
    rw12,
    rw16,
    unmap_cdb,
    unmap_params,
)

from tcmu.handler import ScatterBuffer


@pytest.fixture
def disk() -> MemDisk:
    return MemDisk(make_device())


@pytest.fixture
def thin() -> ThinDisk:
    return ThinDisk(make_device())


def atomic(lba: int, blocks: int, boundary: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">BBQHHBB", 0x9C, flags, lba, boundary, blocks, 0, 0)


# Data-out commands for 2 blocks at LBA 4, with the data-out length each implies.
DATA_OUT_COMMANDS = [
    (rw6(0x0A, 4, 2), 2 * BS),
    (rw10(0x2A, 4, 2), 2 * BS),
    (rw12(0xAA, 4, 2), 2 * BS),
    (rw16(0x8A, 4, 2), 2 * BS),
    (rw10(0x2E, 4, 2), 2 * BS),  # WRITE AND VERIFY
    (rw12(0xAE, 4, 2, flags=0x02), 2 * BS),
    (rw16(0x8E, 4, 2), 2 * BS),
    (rw16(0x8B, 4, 2), 2 * BS),  # ORWRITE
    (atomic(4, 2), 2 * BS),  # WRITE ATOMIC
    (caw(4, 1), 2 * BS),  # COMPARE AND WRITE: verify block + write block
    (rw10(0x2F, 4, 2, flags=0x02), 2 * BS),  # VERIFY BYTCHK=1
    (rw16(0x8F, 4, 2, flags=0x06), BS),  # VERIFY BYTCHK=11b: one block
    (rw10(0x41, 4, 2), BS),  # WRITE SAME: exactly one block
    (rw16(0x93, 4, 2), BS),
    (rw16(0x93, 4, 2, flags=0x01), 0),  # WRITE SAME(16) NDOB: no data-out
]
IDS = [cdb[:2].hex() for cdb, _ in DATA_OUT_COMMANDS]


WRONG_LENGTHS = [
    pytest.param(cdb, length + delta, id=f"{cdb[:2].hex()}{delta:+d}")
    for cdb, length in DATA_OUT_COMMANDS
    for delta in (-BS, -1, 1, BS)
    if length + delta >= 0
]


@pytest.mark.parametrize(("cdb", "buf_len"), WRONG_LENGTHS)
def test_data_out_of_another_length_is_a_mismatch(thin: ThinDisk, cdb: bytes, buf_len: int) -> None:
    thin.mem[:] = b"\xa5" * len(thin.mem)
    assert_mismatch(run(thin, cdb, buf_len=buf_len))
    assert thin.mem == b"\xa5" * len(thin.mem) and thin.unmapped == []
    assert thin.flushes == 0


@pytest.mark.parametrize(("cdb", "length"), DATA_OUT_COMMANDS, ids=IDS)
def test_data_out_of_the_right_length_is_good(thin: ThinDisk, cdb: bytes, length: int) -> None:
    assert_good(run(thin, cdb, buf_len=length))  # zeroes compare equal to the fresh medium


@pytest.mark.parametrize(("cdb", "length"), DATA_OUT_COMMANDS, ids=IDS)
def test_range_is_checked_before_the_buffer(thin: ThinDisk, cdb: bytes, length: int) -> None:
    bad = bytearray(cdb)
    if cdb[0] == 0x0A:  # WRITE(6): 21-bit LBA in bytes 1-3
        bad[1:4] = (0x1FFFFF).to_bytes(3, "big")
    else:  # 16-byte CDBs (group 4): 8-byte LBA; the others 4 bytes; both from byte 2
        width = 8 if cdb[0] >> 5 == 4 else 4
        bad[2 : 2 + width] = BLOCKS.to_bytes(width, "big")
    assert_check(run(thin, bytes(bad), buf_len=length + 3), ILLEGAL_REQUEST, 0x21)


@pytest.mark.parametrize(
    "cdb",
    [rw10(0x2A, 4, 0), rw12(0xAA, 4, 0), rw16(0x8A, 4, 0), rw10(0x2E, 4, 0), rw16(0x8B, 4, 0),
     atomic(4, 0), caw(4, 0), rw10(0x2F, 4, 0, flags=0x02), rw16(0x8F, 4, 0, flags=0x06)],
)  # fmt: skip
def test_zero_blocks_is_good_without_data_and_a_mismatch_with(thin: ThinDisk, cdb: bytes) -> None:
    assert_good(run(thin, cdb, buf_len=0))
    assert_mismatch(run(thin, cdb, b"\x01" * BS))
    assert thin.mem == bytes(len(thin.mem)) and thin.flushes == 0


def test_zero_blocks_with_fua_flushes_nothing(disk: MemDisk) -> None:
    assert_good(run(disk, rw10(0x2A, 0, 0, flags=0x08), buf_len=0))
    assert disk.flushes == 0


@pytest.mark.parametrize(
    "cdb", [rw6(0x08, 4, 2), rw10(0x28, 4, 2), rw12(0xA8, 4, 2), rw16(0x88, 4, 2)]
)
def test_read_into_a_short_buffer_is_invalid_field(disk: MemDisk, cdb: bytes) -> None:
    disk.mem[4 * BS : 6 * BS] = pattern(2 * BS)
    for length in (0, 1, BS, 2 * BS - 1):
        out = run(disk, cdb, buf_len=length)
        assert_check(out, ILLEGAL_REQUEST, 0x24)  # no field pointer
        assert out.buf.read() == bytes(length)
    out = run(disk, cdb, buf_len=2 * BS + 100)
    assert_good(out)
    assert (out.result.read_len, out.data_in) == (2 * BS, pattern(2 * BS))


def test_read_of_zero_blocks_into_any_buffer_is_good(disk: MemDisk) -> None:
    for length in (0, BS):
        out = run(disk, rw10(0x28, 4, 0), buf_len=length)
        assert_good(out)
        assert out.result.read_len == 0


def test_read_range_is_checked_before_the_buffer(disk: MemDisk) -> None:
    assert_check(run(disk, rw10(0x28, BLOCKS - 1, 2), buf_len=1), ILLEGAL_REQUEST, 0x21)


def test_verify_without_bytchk_ignores_the_buffer(disk: MemDisk) -> None:
    assert_good(run(disk, rw10(0x2F, 0, 2), b"\x01" * 100))  # no data-out is defined
    assert_good(run(disk, rw16(0x8F, 0, 0), buf_len=0))


# --- WRITE SAME ---------------------------------------------------------------------------------


def test_write_same_writes_every_block_through_write(disk: MemDisk) -> None:
    """A plausible bug writes only the first block; each block must come from write()."""
    writes: list[tuple[int, int]] = []
    real_write = disk.write

    def counting(offset: int, buf: ScatterBuffer) -> None:
        writes.append((offset, len(buf)))
        real_write(offset, buf)

    disk.write = counting  # type: ignore[method-assign]
    block = pattern(BS, seed=11)
    assert_good(run(disk, rw16(0x93, 7, 9), block))
    assert disk.mem[7 * BS : 16 * BS] == block * 9
    assert sum(length for _, length in writes) == 9 * BS and writes[0][0] == 7 * BS


def test_write_same_ndob_with_unmap_deallocates(thin: ThinDisk) -> None:
    thin.mem[:] = b"\xff" * len(thin.mem)
    assert_good(run(thin, rw16(0x93, 4, 6, flags=0x09), buf_len=0))  # NDOB | UNMAP
    assert thin.unmapped == [(4 * BS, 6 * BS)]
    assert thin.mem[3 * BS : 11 * BS] == b"\xff" * BS + bytes(6 * BS) + b"\xff" * BS


def test_write_same_ndob_with_data_out_is_a_mismatch(thin: ThinDisk) -> None:
    assert_mismatch(run(thin, rw16(0x93, 4, 6, flags=0x09), bytes(BS)))
    assert thin.unmapped == []


def test_write_same_unmap_writes_when_unmapped_blocks_do_not_read_zeroes() -> None:
    class Fuzzy(ThinDisk):
        unmap_reads_zeroes = False  # LBPRZ=0: deallocating would not read back zeroes

    fuzzy = Fuzzy(make_device())
    fuzzy.mem[:] = b"\xff" * len(fuzzy.mem)
    assert_good(run(fuzzy, rw10(0x41, 2, 3, flags=0x08), bytes(BS)))
    assert fuzzy.unmapped == [] and fuzzy.mem[2 * BS : 5 * BS] == bytes(3 * BS)


def test_write_same_length_limit_comes_before_the_range(disk: MemDisk) -> None:
    out = run(disk, rw10(0x41, BLOCKS - 1, BLOCKS + 1), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(7))
    assert_good(run(disk, rw10(0x41, 0, BLOCKS), b"\x03" * BS))  # the whole LUN is fine
    assert disk.mem == b"\x03" * len(disk.mem)


# --- UNMAP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", range(1, 8))
def test_unmap_parameter_list_shorter_than_the_header(thin: ThinDisk, length: int) -> None:
    assert_check(run(thin, unmap_cdb(length), bytes(length)), ILLEGAL_REQUEST, 0x1A)
    assert_check(run(thin, unmap_cdb(length), buf_len=0), ILLEGAL_REQUEST, 0x1A)


def test_unmap_buffer_shorter_than_the_header(thin: ThinDisk) -> None:
    assert_check(run(thin, unmap_cdb(24), bytes(6)), ILLEGAL_REQUEST, 0x1A)


def test_unmap_lba_count_limit_is_the_lun(thin: ThinDisk) -> None:
    params = unmap_params((0, BLOCKS // 2), (BLOCKS // 2, BLOCKS // 2))
    assert_good(run(thin, unmap_cdb(len(params)), params))  # the whole LUN in two
    params = unmap_params((0, BLOCKS), (0, 1))  # BLOCKS + 1 in total
    out = run(thin, unmap_cdb(len(params)), params)
    assert_check(out, ILLEGAL_REQUEST, 0x26, sks=param_sks(8 + 16 + 8))
    # The limit is checked before each descriptor's range.
    params = unmap_params((BLOCKS - 1, BLOCKS + 1))
    out = run(thin, unmap_cdb(len(params)), params)
    assert_check(out, ILLEGAL_REQUEST, 0x26, sks=param_sks(16))
    params = unmap_params((BLOCKS, 1))
    assert_check(run(thin, unmap_cdb(len(params)), params), ILLEGAL_REQUEST, 0x21)
    assert len(thin.unmapped) == 2


def test_unmap_descriptor_count_limit(thin: ThinDisk) -> None:
    params = unmap_params(*[(i, 1) for i in range(65)])
    out = run(thin, unmap_cdb(len(params)), params)
    assert_check(out, ILLEGAL_REQUEST, 0x26, sks=param_sks(2))
    params = unmap_params(*[(i, 1) for i in range(64)])
    assert_good(run(thin, unmap_cdb(len(params)), params))
    assert len(thin.unmapped) == 64


# --- VERIFY / WRITE AND VERIFY / COMPARE AND WRITE ---------------------------------------------


def test_bytchk_2_is_refused_before_the_range(disk: MemDisk) -> None:
    out = run(disk, rw10(0x2F, BLOCKS, 1, flags=0x04), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 2))
    out = run(disk, rw16(0x8E, BLOCKS, 1, flags=0x04), bytes(BS))  # WRITE AND VERIFY
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 2))


def test_verify_miscompare_information_is_the_data_out_offset(disk: MemDisk) -> None:
    disk.mem[10 * BS : 13 * BS] = pattern(3 * BS)
    expected = bytearray(pattern(3 * BS))
    expected[2 * BS + 17] ^= 0x40
    out = run(disk, rw12(0xAF, 10, 3, flags=0x02), bytes(expected))
    assert_check(out, MISCOMPARE, 0x1D, info=2 * BS + 17)


def test_verify_bytchk_3_information_is_in_the_expanded_comparison(disk: MemDisk) -> None:
    disk.mem[: 4 * BS] = b"\x11" * (4 * BS)
    disk.mem[3 * BS + 5] = 0x12
    out = run(disk, rw10(0x2F, 0, 4, flags=0x06), b"\x11" * BS)
    assert_check(out, MISCOMPARE, 0x1D, info=3 * BS + 5)


def test_verify_protection_is_refused(disk: MemDisk) -> None:
    out = run(disk, rw10(0x2F, 0, 1, flags=0x22), bytes(BS))  # VRPROTECT=001b
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 7))


def test_compare_and_write_limit_before_range_and_buffer(disk: MemDisk) -> None:
    out = run(disk, caw(BLOCKS, 2), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(13))
    assert_check(run(disk, caw(BLOCKS, 1), bytes(BS)), ILLEGAL_REQUEST, 0x21)
