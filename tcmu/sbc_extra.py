"""The SBC commands beyond reads and writes that BlockHandler's command table binds to
itself: PRE-FETCH, GET LBA STATUS, ORWRITE, WRITE ATOMIC, READ DEFECT DATA and FORMAT UNIT.

Each is a function of (handler, command) returning a Result or raising SenseError. Served
one at a time they cannot interleave; on the worker pool, ORWRITE and WRITE ATOMIC hold
an exclusive claim on their LBA range (tcmu.workers), which keeps ORWRITE's
read-modify-write and WRITE ATOMIC atomic against every overlapping command.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from tcmu import cdb as cdbs
from tcmu.blockutil import check_data_out, data_in, medium_errors, scratch
from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, Status

if TYPE_CHECKING:
    from tcmu.block import BlockHandler

# --- PRE-FETCH ------------------------------------------------------------------------------


def pre_fetch(h: BlockHandler, cmd: Command) -> Result:
    """PRE-FETCH(10)/(16): PREFETCH LENGTH 0 means from the LBA to the last one. Every
    range that passes the checks fits in the "cache" (the back-end's page cache or memory),
    so the answer is CONDITION MET (SBC-3 5.10), with IMMED or without."""
    io = cdbs.decode_block(cmd.cdb)
    if io.blocks > h.max_transfer_blocks:  # MAXIMUM PREFETCH LENGTH
        raise SenseError.invalid_cdb(io.length_byte)
    h._check_range(io.lba, io.blocks)
    # The hint covers at most MAXIMUM PREFETCH LENGTH blocks, also for "to the end".
    blocks = min(io.blocks or h.num_blocks - io.lba, h.max_transfer_blocks)
    with medium_errors(Asc.UNRECOVERED_READ_ERROR):
        h._run_storage(h.prefetch, io.lba * h.block_size, blocks * h.block_size)
    return Result(Status.CONDITION_MET)


# --- GET LBA STATUS --------------------------------------------------------------------------

MAX_LBA_STATUS_DESCRIPTORS = 64
_LBA_STATUS_HEADER = struct.Struct(">I4x")  # PARAMETER DATA LENGTH, reserved
_LBA_STATUS_DESCRIPTOR = struct.Struct(">QIB3x")  # LBA, NUMBER OF BLOCKS, PROVISIONING STATUS
_MAPPED = 0x0
_DEALLOCATED = 0x1
_MAX_DESCRIPTOR_BLOCKS = 0xFFFFFFFF


def get_lba_status(h: BlockHandler, cmd: Command) -> Result:
    """GET LBA STATUS: descriptors of consecutive extents from STARTING LBA on, up to
    MAX_LBA_STATUS_DESCRIPTORS of them or the end of the medium."""
    c = cdbs.decode_get_lba_status(cmd.cdb)
    if c.lba >= h.num_blocks:
        raise SenseError.lba_out_of_range()
    bs = h.block_size
    with medium_errors(Asc.UNRECOVERED_READ_ERROR):
        extents = h._run_storage(
            h.mapped_extents, c.lba * bs, (h.num_blocks - c.lba) * bs, MAX_LBA_STATUS_DESCRIPTORS
        )
    descriptors: list[bytes] = []
    for offset, length, mapped in extents:
        lba, blocks = offset // bs, length // bs
        while blocks and len(descriptors) < MAX_LBA_STATUS_DESCRIPTORS:
            count = min(blocks, _MAX_DESCRIPTOR_BLOCKS)  # a 4-byte field: split longer ones
            status = _MAPPED if mapped else _DEALLOCATED
            descriptors.append(_LBA_STATUS_DESCRIPTOR.pack(lba, count, status))
            lba, blocks = lba + count, blocks - count
    body = b"".join(descriptors)
    header = _LBA_STATUS_HEADER.pack(_LBA_STATUS_HEADER.size - 4 + len(body))
    return data_in(cmd, header + body, c.alloc_len)


# --- ORWRITE and WRITE ATOMIC ------------------------------------------------------------------


def orwrite(h: BlockHandler, cmd: Command) -> Result:
    """ORWRITE(16): the medium becomes medium OR data-out (read, OR, one write)."""
    io = h._transfer(cmd.cdb)
    length = io.blocks * h.block_size
    check_data_out(cmd, length)
    if not length:
        return Result.good()
    offset = io.lba * h.block_size
    medium, buf = scratch(length)
    h._storage_read(offset, buf)
    merged = int.from_bytes(medium, "big") | int.from_bytes(cmd.iov.read(), "big")
    h._storage_write(offset, ScatterBuffer([memoryview(merged.to_bytes(length, "big"))]), io.fua)
    return Result.good()


def write_atomic(h: BlockHandler, cmd: Command) -> Result:
    """WRITE ATOMIC(16) (SBC-4): one storage write, so all or nothing; no atomic
    boundaries are supported (MAXIMUM ATOMIC BOUNDARY SIZE 0)."""
    io = cdbs.decode_block(cmd.cdb)
    if io.blocks > h.max_atomic_transfer_blocks:
        raise SenseError.invalid_cdb(io.length_byte)
    if io.boundary:
        raise SenseError.invalid_cdb(10)  # ATOMIC BOUNDARY
    h._check_range(io.lba, io.blocks)
    check_data_out(cmd, io.blocks * h.block_size)
    if io.blocks:
        h._storage_write(io.lba * h.block_size, cmd.iov, io.fua)
    return Result.good()


# --- READ DEFECT DATA ---------------------------------------------------------------------------

_DEFECT_HEADER_10 = struct.Struct(">xBH")  # PLISTV|GLISTV|FORMAT, DEFECT LIST LENGTH
_DEFECT_HEADER_12 = struct.Struct(">xBHI")  # ..., GENERATION CODE, DEFECT LIST LENGTH


def read_defect_data(h: BlockHandler, cmd: Command) -> Result:
    """READ DEFECT DATA(10)/(12): no defects. The requested lists are reported valid (and
    empty) in the requested format, so PLISTV|GLISTV|FORMAT echo REQ_PLIST|REQ_GLIST|FORMAT."""
    c = cdbs.decode_read_defect_data(cmd.cdb)
    twelve, ten = _DEFECT_HEADER_12.pack(c.flags, 0, 0), _DEFECT_HEADER_10.pack(c.flags, 0)
    return data_in(cmd, twelve if c.twelve else ten, c.alloc_len)


# --- FORMAT UNIT ---------------------------------------------------------------------------------

_FORMAT_IMMED = 0x02  # parameter list header byte 1


def format_unit(h: BlockHandler, cmd: Command) -> Result:
    """FORMAT UNIT without protection information or defect lists: every block is
    deallocated (or zeroed) and reads back as zeroes afterwards."""
    c = cdbs.decode_format_unit(cmd.cdb)
    if c.fmtpinfo:
        raise SenseError.invalid_cdb(1, 7)  # FMTPINFO: no protection information
    header_len = 0
    if c.fmtdata:  # a parameter list header, 4 bytes or (LONGLIST) 8
        header_len = 8 if c.longlist else 4
        header = cmd.iov.read(0, header_len)
        if len(header) < header_len:
            raise SenseError.parameter_list_length()
        _check_format_header(header)
    check_data_out(cmd, header_len)  # nothing may follow: no defect list, no pattern
    size = h.num_blocks * h.block_size
    with medium_errors(Asc.WRITE_ERROR):
        if h.supports_unmap and h.unmap_reads_zeroes:
            h._run_storage(h.unmap, 0, size)
        else:
            h._run_storage(h.write_zeroes, 0, size)
    h._flush()
    return Result.good()


def _check_format_header(header: bytes) -> None:
    """Only IMMED may be set (it is accepted; the format completes before status anyway).
    Anything else (protection fields, FOV and its options, IP, a defect list) is 26/00
    pointing at the first such byte and its highest set bit; DEFECT LIST LENGTH (bytes
    2-3, or 4-7 in the long header) is pointed at without a bit."""
    length_byte = len(header) - (2 if len(header) == 4 else 4)
    for index in range(length_byte):
        bad = header[index] & ~(_FORMAT_IMMED if index == 1 else 0) & 0xFF
        if bad:
            raise SenseError.invalid_parameter(index, bad.bit_length() - 1)
    if any(header[length_byte:]):
        raise SenseError.invalid_parameter(length_byte)
