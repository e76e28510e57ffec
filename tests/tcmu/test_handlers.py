"""RamDisk, FileDisk and the deliberately faulty handlers, driven through handle() and
through their storage methods, with no kernel."""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcmu import spec
from tcmu.block import BlockHandler
from tcmu.handler import Command, DeviceInfo, Result, ScatterBuffer
from tcmu.handlers import faulty, filedisk
from tcmu.handlers.filedisk import FileDisk
from tcmu.handlers.ramdisk import RamDisk
from tcmu_harness.scsi.constants import Status

BS = 512
BLOCKS = 256
PAGE = mmap.PAGESIZE


def make_device(config: str = "harness/", blocks: int = BLOCKS) -> DeviceInfo:
    return DeviceInfo(
        uio="uio0",
        name=f"tcm-user/1/disk/{config}",
        hba=1,
        dev_name="disk",
        config=config,
        size=blocks * BS,
        block_size=BS,
        write_cache=True,
    )


def scattered(size: int, piece: int = 333) -> ScatterBuffer:
    backing = memoryview(bytearray(size))
    return ScatterBuffer([backing[i : i + piece] for i in range(0, size, piece)])


def run(handler: BlockHandler, cdb: bytes, data_out: bytes = b"", buf_len: int = 0) -> Result:
    buf = scattered(max(buf_len, len(data_out)))
    buf.write(data_out)
    result = handler.handle(Command(1, cdb, buf))
    if result.data is not None:
        buf.write(result.data)
    return result


def read_blocks(handler: BlockHandler, lba: int, blocks: int) -> tuple[Result, bytes]:
    buf = scattered(blocks * BS)
    result = handler.handle(Command(1, rw10(0x28, lba, blocks), buf))
    return result, buf.read()


def rw10(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", op, flags, lba, 0, blocks, 0)


def pattern(length: int, seed: int = 1) -> bytes:
    return bytes((i * 13 + seed) & 0xFF for i in range(length))


GOOD = Result.good()
LBA_OUT_OF_RANGE = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0])
INVALID_FIELD = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0, 0, 0])
INVALID_OPCODE = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0])


# --- RamDisk --------------------------------------------------------------------------------


def test_ramdisk_round_trip_through_handle() -> None:
    disk = RamDisk(make_device())
    data = pattern(4 * BS)
    assert run(disk, rw10(0x2A, 9, 4), data) == GOOD
    result, got = read_blocks(disk, 9, 4)
    assert (result, got) == (Result.good(read_len=4 * BS), data)
    assert read_blocks(disk, 8, 1)[1] == bytes(BS)


def test_ramdisk_storage_methods_cross_view_edges() -> None:
    disk = RamDisk(make_device())
    src = scattered(1000, piece=7)
    src.write(pattern(1000))
    disk.write(100, src)
    dst = scattered(1200, piece=11)
    disk.read(0, dst)
    assert dst.read() == bytes(100) + pattern(1000) + bytes(100)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(10, 20), (PAGE - 5, 10), (1000, 3 * PAGE + 500), (PAGE, 2 * PAGE), (0, BLOCKS * BS)],
)
def test_ramdisk_unmap_zeroes_exactly_the_range(offset: int, length: int) -> None:
    disk = RamDisk(make_device())
    full = ScatterBuffer([memoryview(bytearray(b"\xff" * (BLOCKS * BS)))])
    disk.write(0, full)
    disk.unmap(offset, length)
    out = scattered(BLOCKS * BS)
    disk.read(0, out)
    expected = bytearray(b"\xff" * (BLOCKS * BS))
    expected[offset : offset + length] = bytes(length)
    assert out.read() == bytes(expected)


def test_ramdisk_advertises_unmap_with_zeroes() -> None:
    disk = RamDisk(make_device())
    assert disk.supports_unmap and disk.unmap_reads_zeroes
    result = run(disk, bytes([0x12, 0x01, 0xB2, 0, 8, 0]), buf_len=8)
    assert result.data == bytes([0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0])


def test_ramdisk_write_same_unmap_and_unmap_command() -> None:
    disk = RamDisk(make_device())
    assert run(disk, rw10(0x2A, 0, 16), b"\x99" * (16 * BS)) == GOOD
    ws16 = struct.pack(">BBQIBB", 0x93, 0x08, 0, 8, 0, 0)
    assert run(disk, ws16, bytes(BS)) == GOOD
    params = struct.pack(">HH4xQI4x", 22, 16, 12, 2)
    assert run(disk, struct.pack(">BB4xBHB", 0x42, 0, 0, len(params), 0), params) == GOOD
    got = read_blocks(disk, 0, 16)[1]
    assert got == bytes(8 * BS) + b"\x99" * (4 * BS) + bytes(2 * BS) + b"\x99" * (2 * BS)


def test_ramdisk_beyond_2_tib_is_sparse() -> None:
    blocks = (1 << 32) + 1  # READ CAPACITY(10) must saturate
    disk = RamDisk(make_device(blocks=blocks))
    assert run(disk, bytes([0x25]) + bytes(9), buf_len=8).data == bytes.fromhex("ffffffff00000200")
    last = struct.pack(">BBQIBB", 0x8A, 0, blocks - 1, 1, 0, 0)
    assert run(disk, last, pattern(BS)) == GOOD
    buf = scattered(BS)
    disk.handle(Command(1, struct.pack(">BBQIBB", 0x88, 0, blocks - 1, 1, 0, 0), buf))
    assert buf.read() == pattern(BS)
    disk.close()


def test_ramdisk_reads_of_holes_take_no_memory() -> None:
    disk = RamDisk(make_device(blocks=(1 << 32) + 8))  # 2 TiB + 4 KiB
    assert run(disk, rw10(0x2A, 100, 1), pattern(BS)) == GOOD
    read_blocks(disk, 0, 128)  # a hole read through preadv allocates nothing
    assert os.fstat(disk._fd).st_blocks * 512 <= 2 * PAGE
    assert disk.mapped_extents(0, 1 << 20, 64) == [
        (0, 100 * BS // PAGE * PAGE, False),
        (100 * BS // PAGE * PAGE, PAGE, True),
        (100 * BS // PAGE * PAGE + PAGE, (1 << 20) - 100 * BS // PAGE * PAGE - PAGE, False),
    ]
    disk.close()


def test_ramdisk_that_cannot_be_made_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "ftruncate", no_space)
    with pytest.raises(OSError, match="use a smaller dev_size or a FileDisk"):
        RamDisk(make_device())


def test_ramdisk_takes_no_options() -> None:
    with pytest.raises(TypeError, match="size"):
        RamDisk(make_device(), size="1")


def test_ramdisk_close_releases_memory() -> None:
    disk = RamDisk(make_device())
    disk.close()
    disk.close()  # twice is harmless
    with pytest.raises(OSError):  # the memfd is gone
        disk.read(0, scattered(BS))


# --- FileDisk -----------------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return tmp_path / "disk.img"


@pytest.fixture
def file_disk(image: Path) -> Iterator[FileDisk]:
    disk = FileDisk(make_device(), path=str(image))
    disk.open()
    yield disk
    disk.close()


def test_filedisk_creates_a_sparse_file(file_disk: FileDisk, image: Path) -> None:
    stat = image.stat()
    assert stat.st_size == BLOCKS * BS
    assert stat.st_blocks * 512 < BLOCKS * BS  # not allocated


def test_filedisk_path_from_dev_config(image: Path) -> None:
    disk = FileDisk(make_device(config=f"file/{image}"))
    assert disk.path == str(image)
    disk.open()
    disk.close()
    assert image.stat().st_size == BLOCKS * BS


def test_filedisk_needs_a_path() -> None:
    with pytest.raises(ValueError, match="path=FILE"):
        FileDisk(make_device(config="file"))


def test_filedisk_rejects_unknown_options(image: Path) -> None:
    with pytest.raises(TypeError, match="size"):
        FileDisk(make_device(), path=str(image), size="1")


def test_filedisk_extends_short_files_and_keeps_long_ones(tmp_path: Path) -> None:
    short, long = tmp_path / "short", tmp_path / "long"
    short.write_bytes(b"keep")
    long.write_bytes(b"x" * (BLOCKS * BS + 100))
    for path in (short, long):
        disk = FileDisk(make_device(), path=str(path))
        disk.open()
        disk.close()
    assert short.stat().st_size == BLOCKS * BS and short.read_bytes()[:4] == b"keep"
    assert long.stat().st_size == BLOCKS * BS + 100


def test_filedisk_round_trip(file_disk: FileDisk, image: Path) -> None:
    data = pattern(5 * BS)
    assert run(file_disk, rw10(0x2A, 3, 5), data) == GOOD
    assert image.read_bytes()[3 * BS : 8 * BS] == data
    result, got = read_blocks(file_disk, 3, 5)
    assert (result, got) == (Result.good(read_len=5 * BS), data)


def test_filedisk_more_views_than_iov_max(file_disk: FileDisk) -> None:
    count = 2 * os.sysconf("SC_IOV_MAX") + 3
    src = scattered(count * 2, piece=2)
    assert len(src.views) == count
    src.write(pattern(count * 2))
    file_disk.write(BS, src)
    dst = scattered(count * 2, piece=2)
    file_disk.read(BS, dst)
    assert dst.read() == pattern(count * 2)


def test_filedisk_reads_zeroes_past_a_shrunk_file(file_disk: FileDisk, image: Path) -> None:
    assert run(file_disk, rw10(0x2A, 0, 2), b"\x31" * (2 * BS)) == GOOD
    os.truncate(image, BS + 10)
    assert read_blocks(file_disk, 0, 2)[1] == b"\x31" * (BS + 10) + bytes(BS - 10)


def test_filedisk_synchronize_cache_fsyncs(
    file_disk: FileDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    assert run(file_disk, rw10(0x35, 0, 0)) == GOOD
    assert synced == [file_disk._fd]


def test_filedisk_unmap_punches_a_hole(file_disk: FileDisk, image: Path) -> None:
    assert run(file_disk, rw10(0x2A, 0, 64), b"\x77" * (64 * BS)) == GOOD
    os.fsync(file_disk._fd)
    allocated = image.stat().st_blocks
    file_disk.unmap(8 * BS, 32 * BS)
    assert image.read_bytes()[: 64 * BS] == b"\x77" * (8 * BS) + bytes(32 * BS) + b"\x77" * (
        24 * BS
    )
    if file_disk._can_punch:  # the file system punched a hole: fewer blocks allocated
        assert image.stat().st_blocks < allocated


def test_filedisk_unmap_falls_back_to_writing_zeroes(
    file_disk: FileDisk, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, mode: int, offset: int, length: int) -> int:
        filedisk.ctypes.set_errno(errno.EOPNOTSUPP)
        return -1

    monkeypatch.setattr(filedisk, "_fallocate", lambda: unsupported)
    assert run(file_disk, rw10(0x2A, 0, 4), b"\x55" * (4 * BS)) == GOOD
    file_disk.unmap(BS, 2 * BS)
    assert image.read_bytes()[: 4 * BS] == b"\x55" * BS + bytes(2 * BS) + b"\x55" * BS
    assert not file_disk._can_punch


def test_filedisk_punch_error_is_raised(
    file_disk: FileDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int, mode: int, offset: int, length: int) -> int:
        filedisk.ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(filedisk, "_fallocate", lambda: failing)
    with pytest.raises(OSError, match="punch hole"):
        file_disk.unmap(0, BS)


def test_filedisk_io_error_is_medium_error(image: Path) -> None:
    disk = FileDisk(make_device(), path=str(image))
    disk.open()
    disk.close()  # the descriptor is gone: preadv fails with EBADF
    result = run(disk, rw10(0x28, 0, 1), buf_len=BS)
    assert result.status == Status.CHECK_CONDITION
    assert (result.sense[2], result.sense[12], result.sense[13]) == (0x03, 0x11, 0x00)


def test_advance_over_views() -> None:
    views = [memoryview(bytearray(n)) for n in (3, 4, 5)]
    assert [len(v) for v in filedisk._advance(views, 0)] == [3, 4, 5]
    assert [len(v) for v in filedisk._advance(views, 3)] == [4, 5]
    assert [len(v) for v in filedisk._advance(views, 5)] == [2, 5]
    assert filedisk._advance(views, 12) == []


@pytest.mark.parametrize(
    ("text", "cls"),
    [("tcmu.handlers.ramdisk:RamDisk", RamDisk),
     ("tcmu.handlers.faulty:CorruptRead", faulty.CorruptRead)],
)  # fmt: skip
def test_handler_specs_load(text: str, cls: type[BlockHandler]) -> None:
    assert isinstance(spec.load(text).instantiate(make_device()), cls)


def test_filedisk_spec_with_path(image: Path) -> None:
    handler = spec.load(f"tcmu.handlers.filedisk:FileDisk path={image}").instantiate(make_device())
    assert isinstance(handler, FileDisk) and handler.path == str(image)


# --- faulty handlers: each must differ from RamDisk where it says it does --------------------


def both(cls: type[RamDisk], action: Callable[[RamDisk], object]) -> tuple[object, object]:
    return action(RamDisk(make_device())), action(cls(make_device()))


def test_wrong_sense_on_out_of_range() -> None:
    good, bad = both(faulty.WrongSenseOnOutOfRange, lambda d: run(d, rw10(0x28, BLOCKS, 1)))
    assert good == Result.check_condition(LBA_OUT_OF_RANGE)
    assert bad == Result.check_condition(INVALID_FIELD)


def test_corrupt_read() -> None:
    def write_then_read(disk: RamDisk) -> tuple[Result, bytes, Result]:
        run(disk, rw10(0x2A, 0, 2), pattern(2 * BS))
        result, data = read_blocks(disk, 0, 2)
        verify = run(disk, rw10(0x2F, 0, 2, flags=0x02), pattern(2 * BS))
        return result, data, verify

    good, bad = both(faulty.CorruptRead, write_then_read)
    assert good == (Result.good(read_len=2 * BS), pattern(2 * BS), GOOD)
    flipped = bytes([pattern(1)[0] ^ 0xFF]) + pattern(2 * BS)[1:]
    assert bad == (Result.good(read_len=2 * BS), flipped, GOOD)  # the medium is intact


def test_claims_everything() -> None:
    good, bad = both(faulty.ClaimsEverything, lambda d: run(d, bytes([0xC0, 0, 0, 0, 0, 0])))
    assert good == Result.check_condition(INVALID_OPCODE)
    assert bad == GOOD


def test_ignores_d_sense() -> None:
    control = bytes([0x0A, 0x0A, 0x04, 0x10]) + bytes(8)

    def d_sense_then_error(disk: RamDisk) -> tuple[int, bytes]:
        assert run(disk, bytes([0x15, 0x10, 0, 0, 16, 0]), bytes(4) + control) == GOOD
        mode = run(disk, bytes([0x1A, 0x08, 0x0A, 0, 255, 0]), buf_len=255)
        assert mode.data is not None
        return mode.data[6], run(disk, rw10(0x28, BLOCKS, 1)).sense

    good, bad = both(faulty.IgnoresDSense, d_sense_then_error)
    assert good == (0x04, bytes([0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0]))
    assert bad == (0x04, LBA_OUT_OF_RANGE)


def test_writes_on_miscompare() -> None:
    def miscompare(disk: RamDisk) -> tuple[Result, bytes]:
        caw = struct.pack(">BBQ3xBBB", 0x89, 0, 3, 1, 0, 0)
        result = run(disk, caw, b"\x01" * BS + b"\x02" * BS)
        return result, read_blocks(disk, 3, 1)[1]

    good, bad = both(faulty.WritesOnMiscompare, miscompare)
    sense = bytes([0xF0, 0, 0x0E, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x1D, 0x00, 0, 0, 0, 0])
    assert good == (Result.check_condition(sense), bytes(BS))
    assert bad == (Result.check_condition(sense), b"\x02" * BS)


@pytest.mark.parametrize(
    "cls",
    [faulty.WrongSenseOnOutOfRange, faulty.ClaimsEverything, faulty.IgnoresDSense,
     faulty.WritesOnMiscompare],
)  # fmt: skip
def test_faulty_handlers_are_otherwise_correct(cls: type[RamDisk]) -> None:
    disk = cls(make_device())
    assert run(disk, rw10(0x2A, 1, 2), pattern(2 * BS)) == GOOD
    assert read_blocks(disk, 1, 2) == (Result.good(read_len=2 * BS), pattern(2 * BS))
