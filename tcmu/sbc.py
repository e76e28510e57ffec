"""The SBC data path of BlockHandler: READ CAPACITY, READ/WRITE(6/10/12/16), VERIFY,
WRITE AND VERIFY, SYNCHRONIZE CACHE, WRITE SAME, UNMAP and COMPARE AND WRITE, over the
storage methods (read, write, flush, unmap, write_zeroes).

Every storage call goes through `_run_storage` (which awaits an async storage method on
the handler's event loop) and `_storage_read` / `_storage_write` / `_flush` (or
medium_errors()), which turn OSError into MEDIUM ERROR sense. The rarer SBC commands
are in tcmu.sbc_extra.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from tcmu import cdb as cdbs
from tcmu.blockutil import (
    check_data_in,
    check_data_out,
    data_in,
    first_difference,
    medium_errors,
    scratch,
    slice_buffer,
)
from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, SenseKey

if TYPE_CHECKING:
    from tcmu.workers import Workers

_CHUNK = 1 << 20  # bytes per write() when WRITE SAME repeats a block
_GOOD = Result.good()  # immutable: shared by every WRITE

# READ CAPACITY(16): RETURNED LBA, BLOCK LENGTH, P_TYPE|PROT_EN, exponents,
# LBPME|LBPRZ|LOWEST ALIGNED LBA, reserved.
_READ_CAPACITY_10 = struct.Struct(">II")
_READ_CAPACITY_16 = struct.Struct(">QIBBH16x")
_LBPME = 0x8000
_LBPRZ = 0x4000

_UNMAP_HEADER = struct.Struct(">HH4x")  # UNMAP DATA LENGTH, BLOCK DESCRIPTOR DATA LENGTH
_UNMAP_DESCRIPTOR = struct.Struct(">QI4x")  # LBA, NUMBER OF LOGICAL BLOCKS


class SbcMixin:
    """The SBC data path; part of BlockHandler."""

    max_compare_and_write_blocks: ClassVar[int]
    max_unmap_descriptors: ClassVar[int]
    unmap_reads_zeroes: ClassVar[bool]
    block_size: int
    num_blocks: int
    physical_block_exponent: int
    supports_unmap: bool
    max_transfer_blocks: int
    max_write_same_blocks: int
    max_unmap_blocks: int
    write_cache_enabled: bool

    if TYPE_CHECKING:  # the storage methods, in tcmu.block

        def read(self, offset: int, buf: ScatterBuffer) -> None: ...
        def write(self, offset: int, buf: ScatterBuffer) -> None: ...
        def flush(self) -> None: ...
        def unmap(self, offset: int, length: int) -> None: ...
        def write_zeroes(self, offset: int, length: int) -> None: ...
        def _pool(self) -> Workers: ...  # tcmu.commands

    # --- capacity ------------------------------------------------------------------------------

    def _read_capacity_10(self, cmd: Command) -> Result:
        c = cdbs.decode_read_capacity(cmd.cdb)
        if c.lba and not c.pmi:
            raise SenseError.invalid_cdb(2)
        last = min(self.num_blocks - 1, 0xFFFFFFFF)  # 0xFFFFFFFF: "use READ CAPACITY(16)"
        return data_in(cmd, _READ_CAPACITY_10.pack(last, self.block_size), c.alloc_len)

    def _read_capacity_16(self, cmd: Command) -> Result:
        c = cdbs.decode_read_capacity(cmd.cdb)
        if c.lba and not c.pmi:
            raise SenseError.invalid_cdb(2)
        lbp = 0
        if self.supports_unmap:
            lbp = _LBPME | (_LBPRZ if self.unmap_reads_zeroes else 0)
        data = _READ_CAPACITY_16.pack(
            self.num_blocks - 1, self.block_size, 0, self.physical_block_exponent, lbp
        )
        return data_in(cmd, data, c.alloc_len)

    # --- checks and storage calls ----------------------------------------------------------------

    def _check_range(self, lba: int, blocks: int) -> None:
        if lba >= self.num_blocks or lba + blocks > self.num_blocks:
            raise SenseError.lba_out_of_range()

    def _check_transfer(self, io: cdbs.BlockCdb) -> None:
        """TRANSFER LENGTH within MAXIMUM TRANSFER LENGTH (24/00 on the field), then the
        range (21/00); the data buffer is checked after both."""
        if io.blocks > self.max_transfer_blocks:
            raise SenseError.invalid_cdb(io.length_byte)
        self._check_range(io.lba, io.blocks)

    def _transfer(self, cdb: bytes) -> cdbs.BlockCdb:
        """Decode a data-transferring CDB and check its length and range."""
        io = cdbs.decode_block(cdb)
        self._check_transfer(io)
        return io

    def _run_storage(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a storage method; an async one is awaited on the handler's event loop."""
        result = method(*args)
        if inspect.isawaitable(result):
            result = self._pool().run(result)
        return result

    # The two hot paths spell out medium_errors(): a generator context manager costs
    # more than the 4 KiB preadv it wraps.
    def _storage_read(self, offset: int, buf: ScatterBuffer) -> None:
        try:
            result = self.read(offset, buf)
            if result is not None and inspect.isawaitable(result):
                self._pool().run(result)
        except OSError as err:
            raise SenseError(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR) from err

    def _storage_write(self, offset: int, buf: ScatterBuffer, force_unit_access: bool) -> None:
        try:
            result = self.write(offset, buf)
            if result is not None and inspect.isawaitable(result):
                self._pool().run(result)
        except OSError as err:
            raise SenseError(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR) from err
        if force_unit_access or not self.write_cache_enabled:
            self._flush()

    def _flush(self) -> None:
        with medium_errors(Asc.WRITE_ERROR):
            self._run_storage(self.flush)

    def _medium_difference(self, offset: int, expected: bytes) -> int | None:
        actual, buf = scratch(len(expected))
        self._storage_read(offset, buf)
        return first_difference(expected, actual)

    # --- reads and writes ------------------------------------------------------------------------

    def _read(self, cmd: Command) -> Result:
        io = self._transfer(cmd.cdb)
        length = io.blocks * self.block_size
        check_data_in(cmd, length)
        # Zero copy: storage fills the command's own views; any excess is the residual.
        if length:
            self._storage_read(io.lba * self.block_size, slice_buffer(cmd.iov, 0, length))
        return Result.good(read_len=length)

    def _write(self, cmd: Command) -> Result:
        io = self._transfer(cmd.cdb)
        check_data_out(cmd, io.blocks * self.block_size)
        if io.blocks:
            self._storage_write(io.lba * self.block_size, cmd.iov, io.fua)
        return _GOOD

    def _write_and_verify(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        if io.bytchk > 1:
            raise SenseError.invalid_cdb(1, 2)  # BYTCHK 10b/11b: reserved here
        self._check_transfer(io)
        check_data_out(cmd, io.blocks * self.block_size)
        if not io.blocks:
            return Result.good()
        offset = io.lba * self.block_size
        self._storage_write(offset, cmd.iov, force_unit_access=True)
        if io.bytchk:
            diff = self._medium_difference(offset, cmd.iov.read())
            if diff is not None:
                raise SenseError.miscompare(diff)
        return Result.good()

    def _verify(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        if io.bytchk == 0b10:
            raise SenseError.invalid_cdb(1, 2)
        self._check_transfer(io)
        if io.bytchk == 0:
            return Result.good()  # medium verification: no data-out, nothing to compare
        length = io.blocks * self.block_size
        # BYTCHK 11b: one block of data-out, compared with every block.
        check_data_out(cmd, min(length, self.block_size) if io.bytchk == 0b11 else length)
        if not length:
            return Result.good()
        expected = cmd.iov.read()
        if io.bytchk == 0b11:
            expected *= io.blocks  # INFORMATION: the offset in this expanded comparison
        diff = self._medium_difference(io.lba * self.block_size, expected)
        if diff is not None:
            raise SenseError.miscompare(diff)
        return Result.good()

    def _synchronize_cache(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        self._check_range(io.lba, io.blocks)  # 0 blocks: from lba to the end
        self._flush()
        return Result.good()

    # --- WRITE SAME and UNMAP ---------------------------------------------------------------------

    def _write_same(self, cmd: Command) -> Result:
        io = cdbs.decode_block(cmd.cdb)
        if io.blocks == 0 or io.blocks > self.max_write_same_blocks:
            raise SenseError.invalid_cdb(io.length_byte)  # 0: we report WSNZ=1
        self._check_range(io.lba, io.blocks)
        check_data_out(cmd, 0 if io.ndob else self.block_size)  # NDOB: no data-out
        block = bytes(self.block_size) if io.ndob else cmd.iov.read()
        offset, length = io.lba * self.block_size, io.blocks * self.block_size
        zeroes = block.count(0) == len(block)
        # UNMAP=1 may deallocate only when reads will still return what was "written".
        with medium_errors(Asc.WRITE_ERROR):
            if zeroes and io.unmap and self.unmap_reads_zeroes:
                self._run_storage(self.unmap, offset, length)
            elif zeroes:
                self._run_storage(self.write_zeroes, offset, length)
            else:
                self._write_repeated(offset, length, block)
        if not self.write_cache_enabled:
            self._flush()
        return Result.good()

    def _write_repeated(self, offset: int, length: int, block: bytes) -> None:
        """write() `block` over [offset, offset+length), a chunk of copies at a time."""
        chunk = memoryview(block * max(1, _CHUNK // len(block)))
        end = offset + length
        while offset < end:
            part = chunk[: min(len(chunk), end - offset)]
            self._run_storage(self.write, offset, ScatterBuffer([part]))
            offset += len(part)

    def _unmap(self, cmd: Command) -> Result:
        c = cdbs.decode_unmap(cmd.cdb)
        if c.param_len == 0:
            return Result.good()  # no parameter list: nothing to do
        data = cmd.iov.read(0, c.param_len)
        if c.param_len < _UNMAP_HEADER.size or len(data) < _UNMAP_HEADER.size:
            raise SenseError.parameter_list_length()
        # UNMAP DATA LENGTH is redundant with the descriptor length; only the latter counts.
        _, descriptors_len = _UNMAP_HEADER.unpack_from(data)
        if _UNMAP_HEADER.size + descriptors_len > len(data):
            raise SenseError.parameter_list_length()
        count = descriptors_len // _UNMAP_DESCRIPTOR.size  # a partial descriptor is ignored
        if count > self.max_unmap_descriptors:
            raise SenseError.invalid_parameter(2)  # BLOCK DESCRIPTOR DATA LENGTH
        ranges: list[tuple[int, int]] = []
        total = 0
        for i in range(count):
            start = _UNMAP_HEADER.size + i * _UNMAP_DESCRIPTOR.size
            lba, blocks = _UNMAP_DESCRIPTOR.unpack_from(data, start)
            if not blocks:
                continue
            # The limit before the range, in the order the kernel's backstores check them.
            total += blocks
            if total > self.max_unmap_blocks:
                raise SenseError.invalid_parameter(start + 8)  # NUMBER OF LOGICAL BLOCKS
            self._check_range(lba, blocks)
            ranges.append((lba, blocks))
        with medium_errors(Asc.WRITE_ERROR):
            for lba, blocks in ranges:  # all checked first: a bad descriptor unmaps nothing
                self._run_storage(self.unmap, lba * self.block_size, blocks * self.block_size)
        return Result.good()

    # --- COMPARE AND WRITE -----------------------------------------------------------------------

    def _caw(self, cmd: Command) -> Result:
        """COMPARE AND WRITE: data-out is the verify blocks, then the write blocks."""
        io = cdbs.decode_block(cmd.cdb)
        if io.blocks > self.max_compare_and_write_blocks:
            raise SenseError.invalid_cdb(io.length_byte)
        self._check_range(io.lba, io.blocks)
        length = io.blocks * self.block_size
        check_data_out(cmd, 2 * length)
        if not length:
            return Result.good()
        offset = io.lba * self.block_size
        diff = self._medium_difference(offset, cmd.iov.read(0, length))
        if diff is not None:
            raise SenseError.miscompare(diff)
        self._storage_write(offset, slice_buffer(cmd.iov, length, length), io.fua)
        return Result.good()
