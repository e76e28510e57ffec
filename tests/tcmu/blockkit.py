"""Shared by the BlockHandler unit tests: fake storage (MemDisk, ThinDisk), Commands whose
ScatterBuffer is several views of one bytearray cut at odd sizes (so every transfer
crosses view edges), CDB builders, and expected sense written out byte by byte (not built
with tcmu.sense).
"""

from __future__ import annotations

import dataclasses
import itertools
import struct

from tcmu.block import BlockHandler
from tcmu.handler import Command, DeviceInfo, Result, ScatterBuffer
from tcmu_harness.scsi.constants import Status

BS = 512
BLOCKS = 300  # more than 256, so READ(6) with length 0 (= 256 blocks) fits

NOT_READY = 0x02
ILLEGAL_REQUEST = 0x05
MISCOMPARE = 0x0E
MEDIUM_ERROR = 0x03


def make_device(
    blocks: int = BLOCKS,
    block_size: int = BS,
    write_cache: bool = True,
    name: str = "disk0",
    max_sectors: int = 128,  # the kernel's hw_max_sectors default
    data_area_bytes: int = 1 << 30,
) -> DeviceInfo:
    return DeviceInfo(
        uio="uio0",
        name=f"tcm-user/1/{name}/harness/x",
        hba=1,
        dev_name=name,
        config="harness/x",
        size=blocks * block_size,
        block_size=block_size,
        write_cache=write_cache,
        max_sectors=max_sectors,
        data_area_bytes=data_area_bytes,
    )


class MemDisk(BlockHandler):
    """Storage in a bytearray; counts flushes. No unmap(): the capability is off."""

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self.mem = bytearray(device.size)
        self.flushes = 0
        self.fail_with: OSError | None = None

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        if self.fail_with:
            raise self.fail_with
        buf.write(self.mem[offset : offset + len(buf)])

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        if self.fail_with:
            raise self.fail_with
        self.mem[offset : offset + len(buf)] = buf.read()

    def flush(self) -> None:
        self.flushes += 1


class ThinDisk(MemDisk):
    """MemDisk with unmap(): records the ranges and zeroes them. Keeps a map of which
    blocks are mapped (written since the last unmap) for GET LBA STATUS."""

    unmap_reads_zeroes = True

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self.unmapped: list[tuple[int, int]] = []
        self.mapped = bytearray(device.size // device.block_size)  # 1: mapped
        self.prefetched: list[tuple[int, int]] = []

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        super().write(offset, buf)
        bs = self.block_size
        first, last = offset // bs, (offset + len(buf) - 1) // bs
        self.mapped[first : last + 1] = b"\x01" * (last + 1 - first)

    def unmap(self, offset: int, length: int) -> None:
        self.unmapped.append((offset, length))
        self.mem[offset : offset + length] = bytes(length)
        first, stop = offset // self.block_size, (offset + length) // self.block_size
        self.mapped[first:stop] = bytes(stop - first)

    def prefetch(self, offset: int, length: int) -> None:
        self.prefetched.append((offset, length))

    def mapped_extents(self, offset: int, length: int, limit: int) -> list[tuple[int, int, bool]]:
        bs = self.block_size
        extents: list[tuple[int, int, bool]] = []
        lba, end = offset // bs, (offset + length) // bs
        while lba < end and len(extents) < limit:
            state = self.mapped[lba]
            stop = lba
            while stop < end and self.mapped[stop] == state:
                stop += 1
            extents.append((lba * bs, (stop - lba) * bs, bool(state)))
            lba = stop
        return extents


def scattered(size: int) -> ScatterBuffer:
    """A ScatterBuffer of `size` bytes in views of 1, 7, 509, 600, 1000, ... bytes."""
    backing = memoryview(bytearray(size))
    views = []
    pos = 0
    for piece in itertools.cycle((1, 7, 509, 600, 1000)):
        if pos >= size:
            break
        views.append(backing[pos : pos + piece])
        pos += piece
    return ScatterBuffer(views)


@dataclasses.dataclass
class Outcome:
    result: Result
    data_in: bytes  # what the initiator receives (after the runtime's copy and residual)
    buf: ScatterBuffer


def run(handler: BlockHandler, cdb: bytes, data_out: bytes = b"", buf_len: int = -1) -> Outcome:
    if buf_len < 0:
        buf_len = len(data_out) if data_out else 1 << 18
    buf = scattered(buf_len)
    buf.write(data_out)
    result = handler.handle(Command(1, bytes(cdb), buf))
    stored = len(buf)
    if result.data is not None:  # the runtime's part: copy data-in into the buffer
        stored = buf.write(result.data)
    valid = stored if result.read_len is None else min(result.read_len, stored)
    return Outcome(result, buf.read(0, valid), buf)


def fixed_sense(
    key: int, asc: int, ascq: int = 0, *, info: int | None = None, sks: bytes = bytes(3)
) -> bytes:
    out = bytearray(18)
    out[0] = 0xF0 if info is not None else 0x70
    out[2] = key
    out[3:7] = (info or 0).to_bytes(4, "big")
    out[7] = 10
    out[12], out[13] = asc, ascq
    out[15:18] = sks
    return bytes(out)


def assert_check(
    out: Outcome, key: int, asc: int, ascq: int = 0, *, info: int | None = None, sks: bytes = b""
) -> None:
    assert out.result.status == Status.CHECK_CONDITION
    assert out.result.sense == fixed_sense(key, asc, ascq, info=info, sks=sks or bytes(3))


def assert_good(out: Outcome) -> None:
    assert (out.result.status, out.result.sense) == (Status.GOOD, b"")


def assert_mismatch(out: Outcome) -> None:
    """Data buffer length differs from the CDB's: 0E/03, no field pointer."""
    assert_check(out, ILLEGAL_REQUEST, 0x0E, 0x03)


def assert_not_ready(out: Outcome) -> None:
    """NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (02/04/02)."""
    assert_check(out, NOT_READY, 0x04, 0x02)


def descriptor_sense(
    key: int, asc: int, ascq: int = 0, *, info: int | None = None, sks: bytes = b""
) -> bytes:
    """Descriptor format: header, then the information and sense-key-specific descriptors."""
    body = b""
    if info is not None:
        body += bytes([0x00, 0x0A, 0x80, 0x00]) + info.to_bytes(8, "big")
    if sks:
        body += bytes([0x02, 0x06, 0, 0]) + sks + bytes(1)
    return bytes([0x72, key, asc, ascq, 0, 0, 0, len(body)]) + body


def cdb_sks(byte: int, bit: int | None = None) -> bytes:
    """Sense-key-specific bytes for a field pointer into the CDB."""
    return bytes([0xC0 | (0x08 | bit if bit is not None else 0)]) + byte.to_bytes(2, "big")


def param_sks(byte: int, bit: int | None = None) -> bytes:
    """... into the parameter list (C/D = 0)."""
    return bytes([0x80 | (0x08 | bit if bit is not None else 0)]) + byte.to_bytes(2, "big")


def rw6(op: int, lba: int, blocks: int) -> bytes:
    return struct.pack(">IBB", (op << 24) | lba, blocks, 0)


def rw10(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", op, flags, lba, 0, blocks, 0)


def rw12(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, flags, lba, blocks, 0, 0)


def rw16(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba, blocks, 0, 0)


def caw(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, blocks, 0, 0)


def pattern(length: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(length))


def set_d_sense(handler: BlockHandler) -> None:
    page = bytes([0x0A, 0x0A, 0x04, 0x10]) + bytes(8)
    assert_good(run(handler, bytes([0x15, 0x10, 0, 0, 16, 0]), bytes(4) + page))


def evpd(handler: BlockHandler, page: int) -> bytes:
    out = run(handler, bytes([0x12, 0x01, page, 0x01, 0x00, 0]))
    assert_good(out)
    return out.data_in


def read_capacity_16(alloc: int = 32) -> bytes:
    return bytes([0x9E, 0x10]) + bytes(8) + alloc.to_bytes(4, "big") + bytes(2)


def mode_select_6(handler: BlockHandler, params: bytes, flags: int = 0x10) -> Outcome:
    return run(handler, bytes([0x15, flags, 0, 0, len(params), 0]), params)


def unmap_params(*ranges: tuple[int, int], descriptors_len: int | None = None) -> bytes:
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in ranges)
    bd_len = len(body) if descriptors_len is None else descriptors_len
    return struct.pack(">HH4x", bd_len + 6, bd_len) + body


def unmap_cdb(length: int, flags: int = 0) -> bytes:
    return struct.pack(">BB4xBHB", 0x42, flags, 0, length, 0)


def rsoc(options: int, opcode: int = 0, sa: int = 0, rctd: bool = False) -> bytes:
    flags = options | (0x80 if rctd else 0)
    return struct.pack(">BBBBHIxB", 0xA3, 0x0C, flags, opcode, sa, 8192, 0)


def all_commands(handler: BlockHandler, rctd: bool = False) -> list[tuple[int, int | None, int]]:
    data = run(handler, rsoc(0, rctd=rctd)).data_in
    step = 20 if rctd else 8
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    commands = []
    for pos in range(4, len(data), step):
        op, sa, flags, cdb_len = struct.unpack_from(">BxHxBH", data, pos)
        assert flags & 0x02 == (0x02 if rctd else 0)
        commands.append((op, sa if flags & 0x01 else None, cdb_len))
    return commands
