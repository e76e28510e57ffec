"""BlockHandler: transfer limits from the device, the physical_block_exponent option, the
read-write error recovery mode page, START STOP UNIT's stopped state, and the sense
format of every kind of CHECK CONDITION (helpers in blockkit.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from blockkit import (
    BLOCKS,
    BS,
    ILLEGAL_REQUEST,
    MEDIUM_ERROR,
    NOT_READY,
    MemDisk,
    ThinDisk,
    all_commands,
    assert_check,
    assert_good,
    assert_not_ready,
    caw,
    cdb_sks,
    descriptor_sense,
    evpd,
    make_device,
    mode_select_6,
    param_sks,
    read_capacity_16,
    rsoc,
    run,
    rw6,
    rw10,
    rw12,
    rw16,
    set_d_sense,
    unmap_cdb,
    unmap_params,
)

from tcmu import spec
from tcmu.block import BlockHandler
from tcmu.handlers import faulty
from tcmu.handlers.filedisk import FileDisk
from tcmu.handlers.ramdisk import RamDisk
from tcmu_harness.scsi.constants import Status


@pytest.fixture
def disk() -> MemDisk:
    return MemDisk(make_device())


@pytest.fixture
def thin() -> ThinDisk:
    return ThinDisk(make_device())


def block_limits(handler: BlockHandler) -> tuple[int, ...]:
    """(OPTIMAL GRANULARITY, MAX TRANSFER, OPTIMAL TRANSFER, MAX PREFETCH)"""
    return struct.unpack_from(">HIII", evpd(handler, 0xB0), 6)


# --- transfer limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_sectors", "data_area", "block_size", "expected"),
    [(128, 1 << 30, 512, 128),  # hw_max_sectors, the kernel's default
     (32768, 1 << 30, 512, 16384),  # the class limit: 8 MiB
     (8192, 2 << 20, 512, 4096),  # the ring's data area: 2 MiB
     (1024, 1 << 30, 4096, 1024),
     (4096, 1 << 30, 4096, 2048)],
)  # fmt: skip
def test_max_transfer_is_the_smallest_limit(
    max_sectors: int, data_area: int, block_size: int, expected: int
) -> None:
    device = make_device(
        blocks=4096, block_size=block_size, max_sectors=max_sectors, data_area_bytes=data_area
    )
    handler = MemDisk(device)
    assert handler.max_transfer_blocks == expected
    assert block_limits(handler) == (1, expected, expected, expected)


def test_transfer_over_the_device_limit_points_at_the_length(disk: MemDisk) -> None:
    assert_good(run(disk, rw10(0x28, 0, 128)))
    for cdb, byte in [(rw6(0x08, 0, 129), 4), (rw10(0x28, 0, 129), 7), (rw12(0xA8, 0, 129), 6),
                      (rw16(0x88, 0, 129), 10), (rw10(0x2A, 0, 129), 7), (rw10(0x2F, 0, 129), 7),
                      (rw16(0x8E, 0, 129), 10), (rw16(0x8B, 0, 129), 10)]:  # fmt: skip
        assert_check(run(disk, cdb, bytes(129 * BS)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(byte))
    assert disk.mem == bytes(len(disk.mem))


def test_read6_of_256_blocks_needs_hw_max_sectors_of_256(disk: MemDisk) -> None:
    out = run(disk, rw6(0x08, 0, 0), buf_len=256 * BS)  # 0 means 256 > 128
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(4))


def test_limits_that_depend_on_the_block_size() -> None:
    thin = ThinDisk(make_device(blocks=64, block_size=4096, max_sectors=1024))
    data = evpd(thin, 0xB0)
    # MAX UNMAP LBA COUNT = the LUN, descriptors, OPTIMAL UNMAP GRANULARITY 1, UGAVALID 0
    assert struct.unpack_from(">IIII", data, 20) == (64, 64, 1, 0)
    assert struct.unpack_from(">Q", data, 36) == (64,)  # MAXIMUM WRITE SAME LENGTH
    assert struct.unpack_from(">IIIII", data, 44) == (16, 1, 1, 0, 0)  # 64 KiB atomic


def test_atomic_limit_never_exceeds_the_transfer_limit() -> None:
    handler = MemDisk(make_device(max_sectors=16))
    assert struct.unpack_from(">I", evpd(handler, 0xB0), 44) == (16,)


# --- physical_block_exponent -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["3", 3, " 3"])
def test_physical_block_exponent(value: str | int) -> None:
    handler = MemDisk(make_device(), physical_block_exponent=value)  # type: ignore[arg-type]
    data = run(handler, read_capacity_16()).data_in
    assert data[12:16] == bytes([0, 3, 0, 0])  # byte 13 low nibble; LOWEST ALIGNED LBA 0
    assert block_limits(handler)[0] == 8  # OPTIMAL TRANSFER LENGTH GRANULARITY = 2**3


def test_physical_block_exponent_defaults_to_0(disk: MemDisk) -> None:
    assert run(disk, read_capacity_16()).data_in[13] == 0
    assert block_limits(disk)[0] == 1
    assert MemDisk(make_device(), physical_block_exponent="15").physical_block_exponent == 15


@pytest.mark.parametrize("value", ["16", "-1", "x", "2.0", ""])
def test_bad_physical_block_exponent_is_one_clear_sentence(value: str) -> None:
    with pytest.raises(ValueError, match=r"^physical_block_exponent must be an integer from 0 "
                                         r"to 15, not '.*'$"):  # fmt: skip
        MemDisk(make_device(), physical_block_exponent=value)


def test_reference_handlers_forward_the_option(tmp_path: Path) -> None:
    device = make_device()
    specs = [
        "tcmu.handlers.ramdisk:RamDisk physical_block_exponent=3",
        "tcmu.handlers.faulty:CorruptRead physical_block_exponent=3",
        f"tcmu.handlers.filedisk:FileDisk path={tmp_path / 'd.img'} physical_block_exponent=3",
    ]
    for text in specs:
        handler = spec.load(text).instantiate(device)
        assert isinstance(handler, RamDisk | faulty.CorruptRead | FileDisk)
        assert handler.physical_block_exponent == 3
    with pytest.raises(spec.HandlerSpecError, match="size"):  # others are still rejected
        spec.load("tcmu.handlers.ramdisk:RamDisk size=1").instantiate(device)


# --- read-write error recovery mode page ---------------------------------------------------

RW_ERROR_RECOVERY = bytes([0x01, 0x0A, 0x80]) + bytes(9)


def test_mode_sense_read_write_error_recovery_page(disk: MemDisk) -> None:
    out = run(disk, bytes([0x1A, 0x08, 0x01, 0, 255, 0]))
    assert out.data_in == bytes([3 + 12, 0, 0x10, 0]) + RW_ERROR_RECOVERY
    changeable = run(disk, bytes([0x1A, 0x08, 0x41, 0, 255, 0])).data_in
    assert changeable[4:] == bytes([0x01, 0x0A]) + bytes(10)  # nothing changeable
    assert run(disk, bytes([0x1A, 0x08, 0x81, 0, 255, 0])).data_in[4:] == RW_ERROR_RECOVERY
    ten = run(disk, bytes([0x5A, 0x08, 0x01, 0, 0, 0, 0, 0, 255, 0])).data_in
    assert ten == bytes([0, 6 + 12, 0, 0x10, 0, 0, 0, 0]) + RW_ERROR_RECOVERY


def test_mode_select_accepts_the_page_unchanged(disk: MemDisk) -> None:
    assert_good(mode_select_6(disk, bytes(4) + RW_ERROR_RECOVERY))
    cleared = bytes([0x01, 0x0A, 0x00]) + bytes(9)  # AWRE 1 -> 0: not changeable
    out = mode_select_6(disk, bytes(4) + cleared)
    assert_check(out, ILLEGAL_REQUEST, 0x26, sks=param_sks(4 + 2, 7))
    assert run(disk, bytes([0x1A, 0x08, 0x01, 0, 255, 0])).data_in[4:] == RW_ERROR_RECOVERY


# --- START STOP UNIT -------------------------------------------------------------------------

START = bytes([0x1B, 0, 0, 0, 0x01, 0])
STOP = bytes([0x1B, 0, 0, 0, 0x00, 0])

MEDIUM_COMMANDS = [
    bytes(6),  # TEST UNIT READY
    rw6(0x08, 0, 1), rw10(0x28, 0, 1), rw12(0xA8, 0, 1), rw16(0x88, 0, 1),
    rw6(0x0A, 0, 1), rw10(0x2A, 0, 1), rw12(0xAA, 0, 1), rw16(0x8A, 0, 1),
    rw10(0x2F, 0, 1), rw12(0xAF, 0, 1), rw16(0x8F, 0, 1),
    rw10(0x2E, 0, 1), rw12(0xAE, 0, 1), rw16(0x8E, 0, 1),
    rw10(0x41, 0, 1), rw16(0x93, 0, 1), unmap_cdb(24), caw(0, 1),
    rw16(0x8B, 0, 1), struct.pack(">BBQHHBB", 0x9C, 0, 0, 0, 1, 0, 0),  # ORWRITE, WRITE ATOMIC
    rw10(0x34, 0, 1), rw16(0x90, 0, 1),  # PRE-FETCH
    rw10(0x35, 0, 0), rw16(0x91, 0, 0),  # SYNCHRONIZE CACHE
    bytes([0x9E, 0x12]) + bytes(8) + (24).to_bytes(4, "big") + bytes(2),  # GET LBA STATUS
    bytes([0x04, 0, 0, 0, 0, 0]),  # FORMAT UNIT
]  # fmt: skip


def test_stopped_unit_refuses_every_medium_command(thin: ThinDisk) -> None:
    thin.mem[:BS] = b"\x42" * BS
    assert_good(run(thin, STOP))
    assert thin.stopped
    for cdb in MEDIUM_COMMANDS:
        out = run(thin, cdb, bytes(BS))
        assert_not_ready(out)
    assert thin.mem[:BS] == b"\x42" * BS and thin.unmapped == []  # nothing reached storage
    assert_good(run(thin, START))
    assert not thin.stopped
    assert_good(run(thin, bytes(6)))
    assert_good(run(thin, rw10(0x28, 0, 1)))


def test_medium_commands_are_exactly_those_listed(thin: ThinDisk) -> None:
    """Every served command not in MEDIUM_COMMANDS still works while stopped."""
    medium = {(cdb[0], cdb[1] & 0x1F if cdb[0] == 0x9E else None) for cdb in MEDIUM_COMMANDS}
    served = {(op, sa) for op, sa, _ in all_commands(thin)}
    assert medium <= served
    assert_good(run(thin, STOP))
    assert {(op, sa) for op, sa, _ in all_commands(thin)} == served  # RSOC still served
    for op, sa in sorted(served - medium, key=lambda c: (c[0], c[1] or 0)):
        cdb = bytearray(16)
        cdb[0], cdb[1] = op, sa or 0
        out = run(thin, bytes(cdb), buf_len=0)
        assert out.result.sense[2:3] != bytes([NOT_READY]), hex(op)


def test_commands_that_work_while_stopped(disk: MemDisk) -> None:
    assert_good(run(disk, STOP))
    assert run(disk, bytes([0x12, 0, 0, 0, 36, 0])).data_in[:1] == b"\x00"  # INQUIRY
    assert evpd(disk, 0xB0)[:2] == bytes([0, 0xB0])
    data = run(disk, bytes([0x25]) + bytes(9)).data_in  # READ CAPACITY(10)
    assert data == struct.pack(">II", BLOCKS - 1, BS)
    assert run(disk, read_capacity_16()).data_in[:8] == (BLOCKS - 1).to_bytes(8, "big")
    assert_good(run(disk, bytes([0x1A, 0x08, 0x3F, 0, 255, 0])))  # MODE SENSE
    assert_good(mode_select_6(disk, bytes(4) + bytes([0x0A, 0x0A, 0x00, 0x10]) + bytes(8)))
    assert_good(run(disk, bytes([0x1E, 0, 0, 0, 0, 0])))  # PREVENT ALLOW MEDIUM REMOVAL
    assert_good(run(disk, rsoc(1, 0x28)))
    assert_good(run(disk, bytes([0x37, 0, 0x18, 0, 0, 0, 0, 0, 4, 0])))  # READ DEFECT DATA


def test_request_sense_reports_the_stopped_state(disk: MemDisk) -> None:
    assert_good(run(disk, STOP))
    out = run(disk, bytes([0x03, 0, 0, 0, 252, 0]))
    assert_good(out)
    assert out.data_in == bytes([0x70, 0, 0x02, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x04, 0x02]) + bytes(4)
    out = run(disk, bytes([0x03, 1, 0, 0, 252, 0]))
    assert out.data_in == bytes([0x72, 0x02, 0x04, 0x02, 0, 0, 0, 0])
    assert_good(run(disk, START))
    assert run(disk, bytes([0x03, 0, 0, 0, 252, 0])).data_in[2] == 0x00  # NO SENSE again


def test_stop_flushes_unless_no_flush(disk: MemDisk) -> None:
    assert_good(run(disk, bytes([0x1B, 1, 0, 0, 0x00, 0])))  # IMMED accepted
    assert (disk.flushes, disk.stopped) == (1, True)
    assert_good(run(disk, bytes([0x1B, 0, 0, 0, 0x04, 0])))  # NO_FLUSH: stays stopped
    assert (disk.flushes, disk.stopped) == (1, True)
    assert_good(run(disk, START))
    assert (disk.flushes, disk.stopped) == (1, False)


def test_stop_whose_flush_fails_does_not_stop(disk: MemDisk) -> None:
    def failing_flush() -> None:
        raise OSError(5, "EIO")

    disk.flush = failing_flush  # type: ignore[method-assign]
    assert_check(run(disk, STOP), MEDIUM_ERROR, 0x0C)
    assert not disk.stopped


def test_loej_and_power_conditions_are_refused(disk: MemDisk) -> None:
    assert_check(run(disk, bytes([0x1B, 0, 0, 0, 0x02, 0])), ILLEGAL_REQUEST, 0x24,
                 sks=cdb_sks(4, 1))  # fmt: skip
    assert_check(run(disk, bytes([0x1B, 0, 0, 0, 0x03, 0])), ILLEGAL_REQUEST, 0x24,
                 sks=cdb_sks(4, 1))  # fmt: skip
    for condition in (0x10, 0x20, 0x30, 0xA0, 0xB0):  # ACTIVE, IDLE, STANDBY, ..., FORCE STANDBY
        out = run(disk, bytes([0x1B, 0, 0, 0, condition | 0x02, 0]))
        assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(4, 7))
    assert (disk.flushes, disk.stopped) == (0, False)


def test_reserved_bits_win_over_not_ready(disk: MemDisk) -> None:
    assert_good(run(disk, STOP))
    out = run(disk, rw10(0x28, 0, 1, flags=0x20))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 7))
    assert_check(run(disk, bytes([0xC0]) + bytes(5)), ILLEGAL_REQUEST, 0x20)


def test_not_ready_in_descriptor_format(disk: MemDisk) -> None:
    set_d_sense(disk)
    assert_good(run(disk, STOP))
    assert run(disk, bytes(6)).result.sense == bytes([0x72, 0x02, 0x04, 0x02, 0, 0, 0, 0])


# --- sense format of every kind of CHECK CONDITION -----------------------------------------


ERROR_CASES = [
    # cdb, data-out, key, asc, ascq, information, sense-key-specific
    (rw10(0x28, BLOCKS, 1), b"", ILLEGAL_REQUEST, 0x21, 0, None, b""),
    (rw10(0x28, 0, 1, flags=0x20), b"", ILLEGAL_REQUEST, 0x24, 0, None, cdb_sks(1, 7)),
    (rw10(0x2A, 0, 1), bytes(10), ILLEGAL_REQUEST, 0x0E, 0x03, None, b""),
    (rw10(0x2F, 0, 1, flags=0x02), b"\x01" + bytes(BS - 1), 0x0E, 0x1D, 0, 0, b""),
    (caw(0, 1), bytes(3) + b"\x01" + bytes(2 * BS - 4), 0x0E, 0x1D, 0, 3, b""),
    (unmap_cdb(4), bytes(4), ILLEGAL_REQUEST, 0x1A, 0, None, b""),
    (unmap_cdb(56), unmap_params((0, 1), (1, 1), (2, 1)), ILLEGAL_REQUEST, 0x26, 0, None,
     param_sks(2)),
    (bytes([0xC0]) + bytes(5), b"", ILLEGAL_REQUEST, 0x20, 0, None, b""),
]  # fmt: skip


class Limited(ThinDisk):
    max_unmap_descriptors = 2


@pytest.mark.parametrize("d_sense", [False, True])
def test_every_error_in_both_formats(d_sense: bool) -> None:
    for cdb, data_out, key, asc, ascq, info, sks in ERROR_CASES:
        handler = Limited(make_device())
        if d_sense:
            set_d_sense(handler)
        out = run(handler, cdb, data_out)
        assert out.result.status == Status.CHECK_CONDITION
        sense = out.result.sense
        if d_sense:
            assert sense == descriptor_sense(key, asc, ascq, info=info, sks=sks), cdb.hex()
        else:
            assert len(sense) == 18 and sense[7] == 10
            assert_check(out, key, asc, ascq, info=info, sks=sks)


def test_not_ready_and_medium_error_in_both_formats(disk: MemDisk) -> None:
    disk.fail_with = OSError(5, "EIO")
    assert_check(run(disk, rw10(0x28, 0, 1)), MEDIUM_ERROR, 0x11)
    set_d_sense(disk)
    assert run(disk, rw10(0x28, 0, 1)).result.sense == descriptor_sense(MEDIUM_ERROR, 0x11)
    disk.fail_with = None
    assert_good(run(disk, STOP))
    assert run(disk, bytes(6)).result.sense == descriptor_sense(NOT_READY, 0x04, 0x02)
