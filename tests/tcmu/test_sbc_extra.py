"""PRE-FETCH, GET LBA STATUS, ORWRITE, WRITE ATOMIC, READ DEFECT DATA and FORMAT UNIT
(tcmu.sbc_extra) through BlockHandler.handle(), on the fake disks of blockkit.py and on
the reference back-ends."""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from blockkit import (
    BLOCKS,
    BS,
    ILLEGAL_REQUEST,
    MemDisk,
    ThinDisk,
    all_commands,
    assert_check,
    assert_good,
    assert_mismatch,
    cdb_sks,
    make_device,
    param_sks,
    pattern,
    rsoc,
    run,
    rw10,
    rw16,
)

from tcmu.block import BlockHandler
from tcmu.handler import ScatterBuffer
from tcmu.handlers import filedisk
from tcmu.handlers.filedisk import FdDisk, FileDisk
from tcmu.handlers.ramdisk import RamDisk
from tcmu_harness.scsi.constants import Status

PAGE = mmap.PAGESIZE


@pytest.fixture
def disk() -> MemDisk:
    return MemDisk(make_device())


@pytest.fixture
def thin() -> ThinDisk:
    return ThinDisk(make_device())


# --- the command table --------------------------------------------------------------------


def test_rsoc_lists_exactly_the_served_commands(disk: MemDisk, thin: ThinDisk) -> None:
    six = [0x00, 0x03, 0x04, 0x08, 0x0A, 0x12, 0x15, 0x1A, 0x1B, 0x1E]
    ten = [0x25, 0x28, 0x2A, 0x2E, 0x2F, 0x34, 0x35, 0x37, 0x41, 0x42, 0x55, 0x5A]
    sixteen = [0x88, 0x89, 0x8A, 0x8B, 0x8E, 0x8F, 0x90, 0x91, 0x93, 0x9C]
    twelve = [0xA8, 0xAA, 0xAE, 0xAF, 0xB7]
    expected = (
        [(op, None, 6) for op in six] + [(op, None, 10) for op in ten]
        + [(op, None, 16) for op in sixteen] + [(0x9E, 0x10, 16), (0x9E, 0x12, 16)]
        + [(0xA3, 0x0C, 12)] + [(op, None, 12) for op in twelve]
    )  # fmt: skip
    assert all_commands(thin) == expected
    without = [c for c in expected if c[0] != 0x42 and c[1] != 0x12]  # no UNMAP, no status
    assert all_commands(disk) == without
    assert all_commands(RamDisk(make_device())) == expected


# --- PRE-FETCH ----------------------------------------------------------------------------------


def test_pre_fetch_is_condition_met(thin: ThinDisk) -> None:
    for cdb in (rw10(0x34, 10, 8), rw16(0x90, 10, 8), rw10(0x34, 10, 8, flags=0x02)):
        result = run(thin, cdb, buf_len=0).result
        assert (result.status, result.sense, result.data) == (Status.CONDITION_MET, b"", None)
    assert thin.prefetched == [(10 * BS, 8 * BS)] * 3


def test_pre_fetch_length_0_is_to_the_end(thin: ThinDisk) -> None:
    assert run(thin, rw10(0x34, BLOCKS - 5, 0)).result.status == Status.CONDITION_MET
    assert run(thin, rw16(0x90, 0, 0)).result.status == Status.CONDITION_MET
    # The hint is capped at MAXIMUM PREFETCH LENGTH (128 blocks here).
    assert thin.prefetched == [((BLOCKS - 5) * BS, 5 * BS), (0, 128 * BS)]


def test_pre_fetch_errors(thin: ThinDisk) -> None:
    assert_check(run(thin, rw10(0x34, BLOCKS, 0)), ILLEGAL_REQUEST, 0x21)
    assert_check(run(thin, rw16(0x90, BLOCKS - 1, 2)), ILLEGAL_REQUEST, 0x21)
    out = run(thin, rw10(0x34, 0, 129))  # > MAXIMUM PREFETCH LENGTH
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(7))
    assert_check(run(thin, rw16(0x90, 0, 129)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(10))
    assert_check(run(thin, rw10(0x34, 0, 1, flags=0x01)), ILLEGAL_REQUEST, 0x24,
                 sks=cdb_sks(1, 0))  # fmt: skip
    assert thin.prefetched == []


def test_pre_fetch_without_a_storage_hint(disk: MemDisk) -> None:
    assert run(disk, rw10(0x34, 0, 1)).result.status == Status.CONDITION_MET


# --- GET LBA STATUS -------------------------------------------------------------------------


def get_lba_status(lba: int, alloc: int = 4096) -> bytes:
    return bytes([0x9E, 0x12]) + struct.pack(">QI", lba, alloc) + bytes(2)


def descriptors(data: bytes) -> list[tuple[int, int, int]]:
    assert int.from_bytes(data[:4], "big") == len(data) - 4 and data[4:8] == bytes(4)
    out = []
    for pos in range(8, len(data), 16):
        lba, blocks, status = struct.unpack_from(">QIB", data, pos)
        assert data[pos + 12] >> 4 == 0 and data[pos + 13 : pos + 16] == bytes(3)
        out.append((lba, blocks, status))
    return out


def lba_status(handler: BlockHandler, lba: int = 0) -> list[tuple[int, int, int]]:
    out = run(handler, get_lba_status(lba))
    assert_good(out)
    return descriptors(out.data_in)


def test_get_lba_status_of_a_fresh_disk(thin: ThinDisk) -> None:
    assert lba_status(thin) == [(0, BLOCKS, 1)]
    assert lba_status(thin, BLOCKS - 1) == [(BLOCKS - 1, 1, 1)]


def test_get_lba_status_extents_start_at_the_starting_lba(thin: ThinDisk) -> None:
    assert_good(run(thin, rw10(0x2A, 10, 5), pattern(5 * BS)))
    assert_good(run(thin, rw10(0x2A, 20, 1), pattern(BS)))
    assert lba_status(thin) == [(0, 10, 1), (10, 5, 0), (15, 5, 1), (20, 1, 0), (21, 279, 1)]
    assert lba_status(thin, 12) == [(12, 3, 0), (15, 5, 1), (20, 1, 0), (21, 279, 1)]
    unmap = struct.pack(">BB4xBHB", 0x42, 0, 0, 24, 0)
    params = struct.pack(">HH4xQI4x", 22, 16, 11, 2)
    assert_good(run(thin, unmap, params))
    assert lba_status(thin, 10)[:3] == [(10, 1, 0), (11, 2, 1), (13, 2, 0)]


def test_get_lba_status_allocation_length(thin: ThinDisk) -> None:
    full = run(thin, get_lba_status(0)).data_in
    assert len(full) == 24
    for alloc in (0, 4, 8, 20, 24):
        out = run(thin, get_lba_status(0, alloc))
        assert_good(out)
        assert (out.data_in, out.result.read_len) == (full[:alloc], alloc)


def test_get_lba_status_at_most_64_descriptors(thin: ThinDisk) -> None:
    for lba in range(0, 200, 2):
        assert_good(run(thin, rw10(0x2A, lba, 1), bytes(BS)))
    got = lba_status(thin, 1)
    assert len(got) == 64
    assert got[:3] == [(1, 1, 1), (2, 1, 0), (3, 1, 1)] and got[-1] == (64, 1, 0)


def test_get_lba_status_splits_extents_longer_than_the_field() -> None:
    class Huge(BlockHandler):
        def read(self, offset: int, buf: ScatterBuffer) -> None:
            raise AssertionError("not read")

        def write(self, offset: int, buf: ScatterBuffer) -> None:
            raise AssertionError("not written")

        def mapped_extents(
            self, offset: int, length: int, limit: int
        ) -> list[tuple[int, int, bool]]:
            return [(offset, length, False)]

    huge = Huge(make_device(blocks=(1 << 33) + 5))
    assert lba_status(huge, 3) == [(3, 0xFFFFFFFF, 1), (3 + 0xFFFFFFFF, 0xFFFFFFFF, 1),
                                   (3 + 2 * 0xFFFFFFFF, 4, 1)]  # fmt: skip


def test_get_lba_status_errors(thin: ThinDisk) -> None:
    assert_check(run(thin, get_lba_status(BLOCKS)), ILLEGAL_REQUEST, 0x21)
    assert_check(run(thin, get_lba_status((1 << 64) - 1)), ILLEGAL_REQUEST, 0x21)
    cdb = bytearray(get_lba_status(0))
    cdb[14] = 0x01  # SBC-4 REPORT TYPE: not supported
    assert_check(run(thin, bytes(cdb)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(14, 0))


def test_get_lba_status_only_when_storage_can_tell(disk: MemDisk, thin: ThinDisk) -> None:
    assert_check(run(disk, get_lba_status(0)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 4))
    assert (0x9E, 0x12, 16) not in all_commands(disk)
    assert (0x9E, 0x12, 16) in all_commands(thin)
    one = run(thin, rsoc(2, 0x9E, 0x12)).data_in
    assert one == bytes([0, 0x03, 0, 16, 0x9E, 0x1F]) + b"\xff" * 12 + bytes(2)


# --- GET LBA STATUS and FORMAT UNIT on the reference back-ends ------------------------------


@pytest.fixture(params=["ramdisk", "filedisk"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FdDisk]:
    device = make_device(blocks=1024)
    handler: FdDisk
    if request.param == "ramdisk":
        handler = RamDisk(device)
    else:
        handler = FileDisk(device, path=str(tmp_path / "disk.img"))
        handler.open()
        if handler.mapped_extents(0, 1024 * BS, 64) != [(0, 1024 * BS, False)]:
            handler.close()
            pytest.skip("this file system does not report holes")
    yield handler
    handler.close()


def test_backend_lba_status_follows_writes_and_unmaps(backend: FdDisk) -> None:
    per_page = PAGE // BS
    assert lba_status(backend) == [(0, 1024, 1)]
    assert_good(run(backend, rw10(0x2A, 2 * per_page, per_page), pattern(PAGE)))
    assert lba_status(backend) == [(0, 2 * per_page, 1), (2 * per_page, per_page, 0),
                                   (3 * per_page, 1024 - 3 * per_page, 1)]  # fmt: skip
    # Unmapping part of a page zeroes it but leaves the page mapped: still reported mapped.
    params = struct.pack(">HH4xQI4x", 22, 16, 2 * per_page, 1)
    assert_good(run(backend, struct.pack(">BB4xBHB", 0x42, 0, 0, 24, 0), params))
    assert lba_status(backend)[1] == (2 * per_page, per_page, 0)
    params = struct.pack(">HH4xQI4x", 22, 16, 2 * per_page, per_page)
    assert_good(run(backend, struct.pack(">BB4xBHB", 0x42, 0, 0, 24, 0), params))
    assert lba_status(backend) == [(0, 1024, 1)]


def test_backend_format_unit_deallocates_everything(backend: FdDisk) -> None:
    assert_good(run(backend, rw10(0x2A, 0, 64), b"\x5c" * (64 * BS)))
    assert_good(run(backend, rw16(0x8A, 1000, 24), b"\x5c" * (24 * BS)))
    assert_good(run(backend, bytes([0x04, 0, 0, 0, 0, 0]), buf_len=0))
    assert lba_status(backend) == [(0, 1024, 1)]
    out = run(backend, rw10(0x28, 0, 128), buf_len=128 * BS)
    assert out.data_in == bytes(128 * BS)


def test_filedisk_pre_fetch_advises_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    advice: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, o, n, a: advice.append((o, n, a)))
    disk = FileDisk(make_device(), path=str(tmp_path / "disk.img"))
    disk.open()
    assert run(disk, rw16(0x90, 8, 4)).result.status == Status.CONDITION_MET
    disk.close()
    assert advice == [(8 * BS, 4 * BS, os.POSIX_FADV_WILLNEED)]


def test_fd_extents_ignores_holes_smaller_than_a_block(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(fd, 16 * PAGE)
        if filedisk.fd_extents(fd, 0, 16 * PAGE, BS, 64) != [(0, 16 * PAGE, False)]:
            pytest.skip("this file system does not report holes")
        os.pwrite(fd, b"x", 3 * PAGE)
        os.pwrite(fd, b"x", 5 * PAGE)
        # Blocks of 2 pages: the hole of page 4 covers no whole block, page 6-7 do.
        bs = 2 * PAGE
        assert filedisk.fd_extents(fd, 0, 16 * PAGE, bs, 64) == [
            (0, 2 * PAGE, False), (2 * PAGE, 4 * PAGE, True), (6 * PAGE, 10 * PAGE, False)
        ]  # fmt: skip
        assert filedisk.fd_extents(fd, 0, 16 * PAGE, bs, 2) == [
            (0, 2 * PAGE, False), (2 * PAGE, 4 * PAGE, True)
        ]  # fmt: skip
        os.ftruncate(fd, 7 * PAGE)  # beyond the end of the file reads as zeroes: a hole
        assert filedisk.fd_extents(fd, 6 * PAGE, 10 * PAGE, PAGE, 64) == [
            (6 * PAGE, 10 * PAGE, False)
        ]
    finally:
        os.close(fd)


def test_file_system_without_seek_hole_reports_all_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FileDisk(make_device(), path=str(tmp_path / "disk.img"))
    disk.open()

    def no_seek_data(fd: int, pos: int, whence: int) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "lseek", no_seek_data)
    assert lba_status(disk, 5) == [(5, BLOCKS - 5, 0)]
    disk.close()
    monkeypatch.undo()
    out = run(disk, get_lba_status(0))  # a closed descriptor: a real storage error
    assert_check(out, 0x03, 0x11)


# --- ORWRITE ----------------------------------------------------------------------------------


def test_orwrite_ors_the_data_into_every_block(disk: MemDisk) -> None:
    disk.mem[4 * BS : 7 * BS] = b"\x0f\x30" * (3 * BS // 2)
    assert_good(run(disk, rw16(0x8B, 4, 3), b"\xf0\x01" * (3 * BS // 2)))
    assert disk.mem[4 * BS : 7 * BS] == b"\xff\x31" * (3 * BS // 2)
    assert disk.mem[3 * BS : 4 * BS] == bytes(BS) and disk.mem[7 * BS : 8 * BS] == bytes(BS)
    assert disk.flushes == 0


def test_orwrite_fua_and_write_through_flush(disk: MemDisk) -> None:
    assert_good(run(disk, rw16(0x8B, 0, 1, flags=0x08), bytes(BS)))
    assert disk.flushes == 1
    assert_good(run(disk, rw16(0x8B, 0, 1, flags=0x10), bytes(BS)))  # DPO accepted
    assert disk.flushes == 1


def test_orwrite_errors(disk: MemDisk) -> None:
    assert_check(run(disk, rw16(0x8B, BLOCKS, 1), bytes(BS)), ILLEGAL_REQUEST, 0x21)
    assert_check(run(disk, rw16(0x8B, 0, 129), bytes(129 * BS)), ILLEGAL_REQUEST, 0x24,
                 sks=cdb_sks(10))  # fmt: skip
    out = run(disk, rw16(0x8B, 0, 1, flags=0x20), bytes(BS))  # ORPROTECT: no protection
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 7))
    assert_mismatch(run(disk, rw16(0x8B, 0, 1), b"\xff" * (BS + 1)))
    assert disk.mem == bytes(len(disk.mem))


# --- WRITE ATOMIC -------------------------------------------------------------------------------


def atomic(lba: int, blocks: int, boundary: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">BBQHHBB", 0x9C, flags, lba, boundary, blocks, 0, 0)


class CountingDisk(MemDisk):
    def __init__(self, device: object) -> None:
        super().__init__(make_device(max_sectors=1024))
        self.writes: list[tuple[int, int]] = []

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        self.writes.append((offset, len(buf)))
        super().write(offset, buf)


def test_write_atomic_is_one_storage_write() -> None:
    disk = CountingDisk(None)
    data = pattern(128 * BS)
    assert_good(run(disk, atomic(3, 128), data))
    assert disk.writes == [(3 * BS, 128 * BS)] and disk.mem[3 * BS : 131 * BS] == data
    assert_good(run(disk, atomic(0, 1, flags=0x18), bytes(BS)))  # DPO, FUA
    assert disk.flushes == 1
    assert_good(run(disk, atomic(0, 0), buf_len=0))
    assert len(disk.writes) == 2


def test_write_atomic_errors() -> None:
    disk = CountingDisk(None)  # max transfer 1024 blocks, max atomic 128
    out = run(disk, atomic(0, 129), bytes(129 * BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(12))
    out = run(disk, atomic(0, 1, boundary=1), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(10))
    assert_check(run(disk, atomic(BLOCKS - 1, 2), bytes(2 * BS)), ILLEGAL_REQUEST, 0x21)
    assert_mismatch(run(disk, atomic(0, 2), bytes(BS)))
    out = run(disk, atomic(0, 1, flags=0x20), bytes(BS))  # WRPROTECT
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 7))
    assert disk.writes == []


def test_write_atomic_limit_is_64_kib_or_the_transfer_limit(disk: MemDisk) -> None:
    assert disk.max_atomic_transfer_blocks == 128
    assert MemDisk(make_device(max_sectors=8)).max_atomic_transfer_blocks == 8
    assert MemDisk(make_device(blocks=64, block_size=4096)).max_atomic_transfer_blocks == 16


# --- READ DEFECT DATA -------------------------------------------------------------------------


def read_defect_10(flags: int, alloc: int = 255) -> bytes:
    return struct.pack(">BxB4xHB", 0x37, flags, alloc, 0)


def read_defect_12(flags: int, alloc: int = 255, index: int = 0) -> bytes:
    return struct.pack(">BBIIxB", 0xB7, flags, index, alloc, 0)


@pytest.mark.parametrize("flags", [0x00, 0x10, 0x08, 0x18, 0x1D, 0x03, 0x04])
def test_read_defect_data_is_empty_in_the_requested_form(disk: MemDisk, flags: int) -> None:
    out = run(disk, read_defect_10(flags))
    assert_good(out)
    assert out.data_in == bytes([0, flags, 0, 0])
    out = run(disk, read_defect_12(flags, index=7))
    assert_good(out)
    assert out.data_in == bytes([0, flags]) + bytes(6)


def test_read_defect_data_allocation_length(disk: MemDisk) -> None:
    out = run(disk, read_defect_10(0x18, alloc=2))
    assert (out.data_in, out.result.read_len) == (bytes([0, 0x18]), 2)
    out = run(disk, read_defect_12(0x18, alloc=0))
    assert_good(out)
    assert (out.data_in, out.result.read_len) == (b"", 0)


def test_read_defect_data_reserved_bits(disk: MemDisk) -> None:
    cdb = bytearray(read_defect_10(0x18))
    cdb[1] = 0x01
    assert_check(run(disk, bytes(cdb)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 0))
    assert_check(run(disk, read_defect_10(0x20)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(2, 5))
    assert_check(run(disk, read_defect_12(0x80)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 7))


# --- FORMAT UNIT --------------------------------------------------------------------------------


def format_unit(flags: int = 0) -> bytes:
    return bytes([0x04, flags, 0, 0, 0, 0])


def test_format_unit_deallocates_every_block(thin: ThinDisk) -> None:
    thin.mem[:] = b"\xee" * len(thin.mem)
    assert_good(run(thin, format_unit(), buf_len=0))
    assert thin.unmapped == [(0, BLOCKS * BS)] and thin.mem == bytes(BLOCKS * BS)
    assert thin.flushes == 1


def test_format_unit_without_unmap_writes_zeroes(disk: MemDisk) -> None:
    disk.mem[:] = b"\xee" * len(disk.mem)
    assert_good(run(disk, format_unit(), buf_len=0))
    assert disk.mem == bytes(BLOCKS * BS) and disk.flushes == 1


@pytest.mark.parametrize(
    ("flags", "header"),
    [(0x10, bytes(4)), (0x10, bytes([0, 0x02, 0, 0])),  # IMMED
     (0x30, bytes(8)), (0x30, bytes([0, 0x02]) + bytes(6)),  # LONGLIST
     (0x18, bytes(4)), (0x13, bytes(4))],  # CMPLST, DEFECT LIST FORMAT: no list anyway
)  # fmt: skip
def test_format_unit_with_an_empty_parameter_list(
    thin: ThinDisk, flags: int, header: bytes
) -> None:
    thin.mem[:] = b"\xee" * len(thin.mem)
    assert_good(run(thin, format_unit(flags), header))
    assert thin.mem == bytes(BLOCKS * BS)


@pytest.mark.parametrize("fmtpinfo", [0x40, 0x80, 0xC0])
def test_format_unit_protection_information_is_refused(thin: ThinDisk, fmtpinfo: int) -> None:
    out = run(thin, format_unit(fmtpinfo), buf_len=0)
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 7))
    assert thin.unmapped == []


@pytest.mark.parametrize(
    ("flags", "header", "sks"),
    [(0x10, bytes([0, 0, 0, 8]) + bytes(8), param_sks(2)),  # a defect list
     (0x30, bytes([0, 0, 0, 0, 0, 0, 0, 8]) + bytes(8), param_sks(4)),
     (0x10, bytes([0, 0x08, 0, 0]), param_sks(1, 3)),  # IP: initialization pattern
     (0x10, bytes([0, 0x80, 0, 0]), param_sks(1, 7)),  # FOV
     (0x10, bytes([0, 0x01, 0, 0]), param_sks(1, 0)),
     (0x10, bytes([0x01, 0, 0, 0]), param_sks(0, 0)),  # PROTECTION FIELDS USAGE
     (0x30, bytes([0, 0, 0, 0x10, 0, 0, 0, 0]), param_sks(3, 4))],  # P_I_INFORMATION
)  # fmt: skip
def test_format_unit_parameter_list_errors(
    thin: ThinDisk, flags: int, header: bytes, sks: bytes
) -> None:
    assert_check(run(thin, format_unit(flags), header), ILLEGAL_REQUEST, 0x26, sks=sks)
    assert thin.unmapped == []


def test_format_unit_parameter_list_length(thin: ThinDisk) -> None:
    assert_check(run(thin, format_unit(0x10), bytes(3)), ILLEGAL_REQUEST, 0x1A)
    assert_check(run(thin, format_unit(0x10), buf_len=0), ILLEGAL_REQUEST, 0x1A)
    assert_check(run(thin, format_unit(0x30), bytes(4)), ILLEGAL_REQUEST, 0x1A)
    assert_mismatch(run(thin, format_unit(0x10), bytes(5)))  # more than the header says
    assert_mismatch(run(thin, format_unit(0x00), bytes(4)))  # FMTDATA=0: no data-out
    assert thin.unmapped == []
