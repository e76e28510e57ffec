"""BlockHandler: the SPC/SBC command set of a direct-access device over a few storage
methods a storage author implements:

    read(offset, buf)           fill buf (a ScatterBuffer) with the bytes at offset
    write(offset, buf)          store buf at offset
    flush()                     optional: make written data durable (default: nothing)
    unmap(offset, length)       optional: deallocate (UNMAP, WRITE SAME with UNMAP)
    write_zeroes(offset, length)  optional: faster zeroing (default: write() zeroes)
    prefetch(offset, length)    optional: a hint that the range will be read (PRE-FETCH)
    mapped_extents(offset, length, limit)  optional: which blocks are mapped
                                (GET LBA STATUS is served only when this is implemented)

Offsets and lengths are in bytes, always whole logical blocks. Storage errors should be
raised as OSError (reported as MEDIUM ERROR) or as SenseError. read() and write() are
abstract: a class lacking either cannot be instantiated (and its spec fails to load).

Reconfiguration (the kernel changed dev_size or the write cache setting): the base
keeps the block count and the caching page right and raises a unit attention
(CAPACITY DATA HAS CHANGED, MODE PARAMETERS CHANGED) for the next command; a subclass
adapts its storage in the optional reconfig(change) hook, which may refuse.

BlockHandler is composed of one mixin per job, each in its own module:
    tcmu.commands   the command table and dispatch (tcmu.workers: on a worker pool)
    tcmu.rsoc       REPORT SUPPORTED OPERATION CODES, from the command table
    tcmu.inquiry    INQUIRY and the VPD pages
    tcmu.modepages  MODE SENSE / MODE SELECT
    tcmu.sbc        the SBC data path (READ CAPACITY, reads, writes, WRITE SAME, UNMAP ...)
    tcmu.sbc_extra  PRE-FETCH, GET LBA STATUS, ORWRITE, WRITE ATOMIC, READ DEFECT DATA,
                    FORMAT UNIT
This module keeps the storage interface, the limits and the unit's state (START STOP
UNIT, REQUEST SENSE, unit attentions, reconfiguration). The kernel answers REPORT LUNS
and persistent reservations itself.

Extension points, importable from here: @scsi_command (another opcode; REPORT SUPPORTED
OPERATION CODES lists it), @vpd_page (another VPD page; VPD 0x00 lists it) and
ModePage (another mode page; MODE SENSE reports it, MODE SELECT changes it).
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar

from tcmu import cdb as cdbs
from tcmu import sense
from tcmu.blockutil import data_in
from tcmu.commands import Access, CommandSpec, DispatchMixin, scsi_command
from tcmu.handler import (
    Command,
    DeviceInfo,
    Handler,
    Reconfig,
    ReconfigRefused,
    Result,
    ScatterBuffer,
)
from tcmu.inquiry import InquiryMixin, vpd_page
from tcmu.modepages import PAGE_CACHING, WCE, ModePage, ModePagesMixin
from tcmu.options import Option, options_of
from tcmu.rsoc import RsocMixin
from tcmu.sbc import SbcMixin
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, SenseKey

__all__ = ["Access", "BlockHandler", "ModePage", "scsi_command", "vpd_page"]

_CommandSpec = CommandSpec  # the name tests/faulty handlers use
STORAGE_METHODS = ("read", "write", "flush", "unmap", "write_zeroes", "prefetch",
                   "mapped_extents")


def async_storage_methods(cls: type) -> list[str]:
    """The storage methods `cls` implements as coroutine functions (async def)."""
    return [name for name in STORAGE_METHODS
            if inspect.iscoroutinefunction(getattr(cls, name, None))]


class BlockHandler(DispatchMixin, RsocMixin, InquiryMixin, ModePagesMixin, SbcMixin, Handler):
    """SPC-4/SBC-3 direct-access device; subclasses implement the storage methods."""

    vendor: ClassVar[str] = "TCMUHARN"
    product: ClassVar[str | None] = None  # None: the class name
    revision: ClassVar[str] = "0001"
    ieee_company_id: ClassVar[int] = 0x001405  # the OUI LIO uses in its NAA designators
    max_transfer_bytes: ClassVar[int] = 8 << 20
    max_write_same_bytes: ClassVar[int] = 64 << 20
    max_unmap_bytes: ClassVar[int] = 1 << 30
    max_unmap_descriptors: ClassVar[int] = 64
    max_compare_and_write_blocks: ClassVar[int] = 1  # as LIO and tcmu-runner report
    max_atomic_transfer_bytes: ClassVar[int] = 64 << 10
    unmap_granularity_bytes: ClassVar[int] = 4096  # the page the back-ends deallocate
    unmap_reads_zeroes: ClassVar[bool] = False  # LBPRZ: unmapped blocks read back as zeroes
    options = (
        Option("physical_block_exponent", int, 0,
               "logical blocks per physical block = 2**N (READ CAPACITY(16), Block Limits)",
               min=0, max=15),
        Option("workers", int, 0, "storage commands served at once, on a pool of threads "
               "(0: one at a time, in the ring thread)", min=0),
    )
    physical_block_exponent: int
    workers: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Async storage methods need the worker pool: such a class gets its own
        `workers` option, at least 1 and by default 16 (a class attribute may say
        otherwise)."""
        inherited = options_of(cls).get("workers")
        if async_storage_methods(cls) and (inherited is None or not inherited.min):
            pool = Option("workers", int, 16, "storage commands in flight at once (async "
                          "storage methods run on the handler's event loop)", min=1)
            cls.options = (*vars(cls).get("options", ()), pool)
        super().__init_subclass__(**kwargs)

    def __init__(self, device: DeviceInfo, **options: Any) -> None:
        super().__init__(device, **options)
        if device.block_size <= 0 or device.size < device.block_size:
            raise ValueError(
                f"{device.name}: size {device.size} / block size {device.block_size} "
                "do not make even one block; fix dev_size / hw_block_size"
            )
        self.block_size = device.block_size
        self.supports_unmap = type(self).unmap is not BlockHandler.unmap
        self.supports_lba_status = type(self).mapped_extents is not BlockHandler.mapped_extents
        self._stopped = False  # START STOP UNIT with START=0 until START=1
        # Unit attentions (ASC/ASCQ) for the next commands, oldest first. TCMU does not say
        # which I_T nexus sent a command, so each is reported once, to whichever comes.
        self._attentions: list[Asc] = []
        self._init_mode_pages()
        self._init_commands()

    # --- storage methods (the part a storage author writes) ---------------------------------

    @abc.abstractmethod
    def read(self, offset: int, buf: ScatterBuffer) -> None:
        """Fill `buf` with the `len(buf)` bytes stored at `offset`."""

    @abc.abstractmethod
    def write(self, offset: int, buf: ScatterBuffer) -> None:
        """Store the `len(buf)` bytes of `buf` at `offset`."""

    def flush(self) -> None:
        """Make every completed write durable; the default has nothing to flush."""

    # Any storage method may be `async def`: the base then awaits it on the handler's
    # event loop, and serves commands on the worker pool (see tcmu.workers).

    def unmap(self, offset: int, length: int) -> None:
        """Override to support UNMAP and WRITE SAME's UNMAP bit (and advertise them)."""
        raise NotImplementedError

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zero a range; the default writes zero blocks through write()."""
        self._write_repeated(offset, length, bytes(self.block_size))

    def prefetch(self, offset: int, length: int) -> None:
        """A hint that the range will be read soon (PRE-FETCH); the default ignores it."""

    def mapped_extents(self, offset: int, length: int, limit: int) -> list[tuple[int, int, bool]]:
        """Override to serve GET LBA STATUS: consecutive (offset, length, mapped) extents of
        whole blocks starting exactly at `offset`, covering [offset, offset+length) or
        stopping after `limit` extents. Report a range unmapped only if it reads as zeroes."""
        raise NotImplementedError

    # --- the unit's state ---------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        """The capacity in logical blocks: follows dev_size through reconfiguration."""
        return self.device.size // self.block_size

    @property
    def stopped(self) -> bool:
        """START STOP UNIT stopped the unit: medium access gets NOT READY 04/02."""
        return self._stopped

    def _unit_attention(self, asc: Asc) -> None:
        if asc not in self._attentions:
            self._attentions.append(asc)

    def _take_unit_attention(self) -> Asc | None:
        return self._attentions.pop(0) if self._attentions else None

    def _request_sense(self, cmd: Command) -> Result:
        # Sense is always returned with CHECK CONDITION (autosense): only a unit attention
        # can be pending, and REQUEST SENSE reports (and clears) it (SAM-5 5.14).
        # A stopped unit reports the condition a medium access would get (SPC-4 6.39).
        c = cdbs.decode_request_sense(cmd.cdb)
        build = sense.descriptor if c.desc else sense.fixed
        attention = self._take_unit_attention()
        if attention is not None:
            key, asc = SenseKey.UNIT_ATTENTION, attention
        elif self._stopped:
            key, asc = SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED
        else:
            key, asc = SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE
        return data_in(cmd, build(key, asc), c.alloc_len)

    def _start_stop(self, cmd: Command) -> Result:
        c = cdbs.decode_start_stop(cmd.cdb)
        if c.power_condition:
            raise SenseError.invalid_cdb(4, 7)  # no power conditions (no Power Condition page)
        if c.loej:
            raise SenseError.invalid_cdb(4, 1)  # the medium is not removable
        if c.start:
            self._stopped = False
        else:
            if not c.no_flush:
                self._flush()  # stopping writes the cache back first
            self._stopped = True
        return Result.good()

    # --- reconfiguration ------------------------------------------------------------------------

    def apply_reconfig(self, change: Reconfig) -> None:
        """Ask reconfig(), then follow the new device: the block count (a property of
        the device size), the caching page's WCE, and a unit attention for each."""
        new = change.new
        if new.block_size != self.block_size or new.size < self.block_size:
            raise ReconfigRefused(
                f"{new.size} bytes of {new.block_size}-byte blocks do not make even one "
                f"{self.block_size}-byte block"
            )
        barrier = self._claims.claim(None, exclusive=True)  # after every command in flight
        try:
            barrier.wait()
            with self._lock:
                self._reconfigure(change)
        finally:
            self._claims.release(barrier)

    def _reconfigure(self, change: Reconfig) -> None:
        super().apply_reconfig(change)  # reconfig() may refuse: nothing changed then
        if change.size_changed:
            self._unit_attention(Asc.CAPACITY_DATA_HAS_CHANGED)
        if change.write_cache_changed:
            cache_was_on = self.write_cache_enabled
            wce = WCE if change.new.write_cache else 0
            self._mode_default[PAGE_CACHING] = self._default_mode_pages()[PAGE_CACHING]
            caching = self._mode_current[PAGE_CACHING]
            caching[2] = caching[2] & ~WCE | wce
            self._unit_attention(Asc.MODE_PARAMETERS_CHANGED)
            if cache_was_on and not wce:
                self._flush()  # write-back data must not stay cached once WCE is off

    # --- limits (Block Limits VPD), in logical blocks ---------------------------------------

    @property
    def max_transfer_blocks(self) -> int:
        """The class limit, capped by what the kernel sends in one command (hw_max_sectors)
        and by the ring's data area."""
        return min(
            self.max_transfer_bytes // self.block_size,
            self.device.max_sectors,
            self.device.data_area_bytes // self.block_size,
        )

    @property
    def max_write_same_blocks(self) -> int:
        return min(self.max_write_same_bytes // self.block_size, self.num_blocks)

    @property
    def max_unmap_blocks(self) -> int:
        return min(self.max_unmap_bytes // self.block_size, self.num_blocks)

    @property
    def max_atomic_transfer_blocks(self) -> int:
        return min(self.max_transfer_blocks, self.max_atomic_transfer_bytes // self.block_size)
