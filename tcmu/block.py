"""BlockHandler: the SPC/SBC command set of a direct-access device over a few storage
methods a storage author implements:

    read(offset, buf)           fill buf (a ScatterBuffer) with the bytes at offset
    write(offset, buf)          store buf at offset
    flush()                     make written data durable
    unmap(offset, length)       optional: deallocate (UNMAP, WRITE SAME with UNMAP)
    write_zeroes(offset, length)  optional: faster zeroing (default: write() zeroes)
    prefetch(offset, length)    optional: a hint that the range will be read (PRE-FETCH)
    mapped_extents(offset, length, limit)  optional: which blocks are mapped
                                (GET LBA STATUS is served only when this is implemented)

Offsets and lengths are in bytes, always whole logical blocks. Storage errors should be
raised as OSError (reported as MEDIUM ERROR) or as SenseError.

One command table (opcode, service action, CDB usage mask, method) drives dispatch, the
reserved-bit checks and REPORT SUPPORTED OPERATION CODES, so what RSOC reports is what
is served. The kernel answers REPORT LUNS and persistent reservations itself. PRE-FETCH,
GET LBA STATUS, ORWRITE, WRITE ATOMIC, READ DEFECT DATA and FORMAT UNIT live in
tcmu.sbc_extra.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct
import threading
from collections.abc import Callable
from typing import ClassVar

from scsi.constants import Asc, Opcode, PeripheralType, SenseKey, ServiceAction
from tcmu import cdb as cdbs
from tcmu import sbc_extra, sense
from tcmu.blockutil import (
    check_data_in,
    check_data_out,
    data_in,
    first_difference,
    medium_errors,
    scratch,
    slice_buffer,
)
from tcmu.handler import Command, DeviceInfo, Handler, Result, ScatterBuffer
from tcmu.sense import FieldPointer, SenseError

_CHUNK = 1 << 20  # bytes per write() when WRITE SAME repeats a block


@dataclasses.dataclass(frozen=True, slots=True)
class _CommandSpec:
    opcode: int
    service_action: int | None
    usage: bytes  # RSOC CDB USAGE DATA: opcode, then the bits the device server uses
    run: Callable[[Command], Result]
    medium: bool  # needs the medium: NOT READY while the unit is stopped


# Commands whose CDB byte 1 bits 7-5 are one RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT field:
# a non-zero value is refused with the bit pointer on the field's first bit, bit 7
# (SPC-4 4.5.2.4.2), whichever of its bits is set.
_PROTECT_FIELD = 0xE0
_PROTECT_OPCODES = frozenset({
    Opcode.READ_10, Opcode.READ_12, Opcode.READ_16,
    Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16,
    Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16,
    Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16,
    Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16, Opcode.COMPARE_AND_WRITE,
    Opcode.ORWRITE_16, Opcode.WRITE_ATOMIC_16,
})  # fmt: skip

# Commands refused with NOT READY while START STOP UNIT has the unit stopped.
_MEDIUM_ACCESS: frozenset[tuple[int, int | None]] = frozenset({(op, None) for op in (
    Opcode.TEST_UNIT_READY, Opcode.FORMAT_UNIT,
    Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16,
    Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16,
    Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16,
    Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16,
    Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16, Opcode.UNMAP, Opcode.COMPARE_AND_WRITE,
    Opcode.ORWRITE_16, Opcode.WRITE_ATOMIC_16, Opcode.PRE_FETCH_10, Opcode.PRE_FETCH_16,
    Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16,
)} | {(Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS)})  # fmt: skip


def _ascii(text: str, width: int) -> bytes:
    """An SPC ASCII field: left-aligned, space padded, truncated to width."""
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def _exponent(value: str | int) -> int:
    """The physical_block_exponent option (a string from the handler spec): 0..15."""
    text = str(value).strip()
    if not (text.isdecimal() and int(text) <= 15):
        raise ValueError(f"physical_block_exponent must be an integer from 0 to 15, not {value!r}")
    return int(text)


# --- INQUIRY and VPD layouts --------------------------------------------------------------

# Standard INQUIRY data (96 bytes): peripheral, RMB, VERSION, RDF|HiSup, ADDITIONAL LENGTH,
# three flag bytes, vendor, product, revision, vendor specific + reserved,
# 8 VERSION DESCRIPTORs, reserved.
_STD_INQUIRY = struct.Struct(">8B8s16s4s22x8H22x")
_SPC4_VERSION = 0x06
_HISUP_RDF2 = 0x12
_CMDQUE = 0x02
# Version descriptors: SAM-5, SPC-4, SBC-3 (no version claimed).
_VERSION_DESCRIPTORS = (0x00A0, 0x0460, 0x04C0, 0, 0, 0, 0, 0)

_VPD_HEADER = struct.Struct(">BBH")  # peripheral, PAGE CODE, PAGE LENGTH
_DESIGNATOR_HEADER = struct.Struct(">BBxB")  # CODE SET, ASSOCIATION|TYPE, LENGTH
_CODE_SET_BINARY = 0x1
_CODE_SET_ASCII = 0x2
_DESIGNATOR_T10 = 0x1
_DESIGNATOR_NAA = 0x3
_NAA_IEEE_REGISTERED_EXTENDED = 0x6
# Block Limits (0xB0), after the header: WSNZ, MAX COMPARE AND WRITE, OPTIMAL GRANULARITY,
# MAX TRANSFER, OPTIMAL TRANSFER, MAX PREFETCH, MAX UNMAP LBA COUNT, MAX UNMAP DESCRIPTORS,
# OPTIMAL UNMAP GRANULARITY, UGAVALID|ALIGNMENT, MAX WRITE SAME, MAX ATOMIC TRANSFER,
# ATOMIC ALIGNMENT, ATOMIC GRANULARITY, MAX ATOMIC WITH BOUNDARY, MAX ATOMIC BOUNDARY SIZE.
_VPD_B0 = struct.Struct(">BBHIIIIIIIQIIIII")
_WSNZ = 0x01
_VPD_B1 = struct.Struct(">H58x")  # MEDIUM ROTATION RATE, the rest reserved/0
_NON_ROTATING = 0x0001
_VPD_B2 = struct.Struct(">BBBx")  # THRESHOLD EXPONENT, LBPU|LBPWS|LBPWS10|LBPRZ, PROV TYPE
_LBPU = 0x80
_LBPWS = 0x40
_LBPWS10 = 0x20
_LBPRZ_B2 = 0x04  # LBPRZ field (bits 4-2) = 001b
_THIN_PROVISIONED = 0x02

# READ CAPACITY(16): RETURNED LBA, BLOCK LENGTH, P_TYPE|PROT_EN, exponents,
# LBPME|LBPRZ|LOWEST ALIGNED LBA, reserved.
_READ_CAPACITY_10 = struct.Struct(">II")
_READ_CAPACITY_16 = struct.Struct(">QIBBH16x")
_LBPME = 0x8000
_LBPRZ = 0x4000

# --- Mode pages -------------------------------------------------------------------------------

_PAGE_RW_ERROR_RECOVERY = 0x01
_PAGE_CACHING = 0x08
_PAGE_CONTROL = 0x0A
_PAGE_INFORMATIONAL_EXCEPTIONS = 0x1C
_ALL_PAGES = 0x3F
_ALL_SUBPAGES = 0xFF
_AWRE = 0x80  # read-write error recovery page byte 2: automatic write reallocation
_WCE = 0x04  # caching page byte 2
_D_SENSE = 0x04  # control page byte 2
_QAM_UNRESTRICTED = 0x10  # control page byte 3: commands may complete out of order
_DEXCPT = 0x08  # informational exceptions page byte 2: reporting disabled
_SPF = 0x40
_PC_CHANGEABLE = 1
_PC_DEFAULT = 2
_PC_SAVED = 3
_DPOFUA = 0x10
_LONGLBA = 0x01
_MODE_HEADER_6 = struct.Struct(">BBBB")  # DATA LENGTH, MEDIUM, DEVICE-SPECIFIC, BD LENGTH
_MODE_HEADER_10 = struct.Struct(">HBBBxH")  # ... LONGLBA between DEVICE-SPECIFIC and BD LEN
_SHORT_BLOCK_DESCRIPTOR = struct.Struct(">II")  # DENSITY|BLOCKS(24), reserved|LENGTH(24)
_LONG_BLOCK_DESCRIPTOR = struct.Struct(">QB3xI")  # BLOCKS, DENSITY, LENGTH


def _mode_page(code: int, length: int, values: dict[int, int]) -> bytes:
    page = bytearray(2 + length)
    page[0], page[1] = code, length
    for index, value in values.items():
        page[index] = value
    return bytes(page)


# --- UNMAP and RSOC layouts -----------------------------------------------------------------

_UNMAP_HEADER = struct.Struct(">HH4x")  # UNMAP DATA LENGTH, BLOCK DESCRIPTOR DATA LENGTH
_UNMAP_DESCRIPTOR = struct.Struct(">QI4x")  # LBA, NUMBER OF LOGICAL BLOCKS

_RSOC_DESCRIPTOR = struct.Struct(">BxHxBH")  # OPCODE, SA, CTDP|SERVACTV, CDB LENGTH
_RSOC_ONE = struct.Struct(">xBH")  # CTDP|SUPPORT, CDB SIZE (then the usage data)
_RSOC_TIMEOUTS = struct.Struct(">HxxII")  # LENGTH (0x0A), NOMINAL, RECOMMENDED (0: unknown)
_CTDP = 0x02
_SERVACTV = 0x01
_ONE_CTDP = 0x80
_SUPPORTED = 0x03
_NOT_SUPPORTED = 0x01
_RSOC_ALL = 0
_RSOC_OPCODE = 1
_RSOC_OPCODE_SA = 2
_RSOC_OPCODE_MAYBE_SA = 3


class BlockHandler(Handler):
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

    def __init__(
        self, device: DeviceInfo, *, physical_block_exponent: str | int = 0, **options: str
    ) -> None:
        super().__init__(device, **options)
        if device.block_size <= 0 or device.size < device.block_size:
            raise ValueError(
                f"{device.name}: size {device.size} / block size {device.block_size} "
                "do not make even one block; fix dev_size / hw_block_size"
            )
        self.block_size = device.block_size
        self.num_blocks = device.size // device.block_size
        # LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (READ CAPACITY(16)).
        self.physical_block_exponent = _exponent(physical_block_exponent)
        self.supports_unmap = type(self).unmap is not BlockHandler.unmap
        self.supports_lba_status = type(self).mapped_extents is not BlockHandler.mapped_extents
        self._stopped = False  # START STOP UNIT with START=0 until START=1
        self._mode_default = self._default_mode_pages()
        self._mode_current = {code: bytearray(page) for code, page in self._mode_default.items()}
        self._mode_changeable = {
            _PAGE_RW_ERROR_RECOVERY: _mode_page(_PAGE_RW_ERROR_RECOVERY, 0x0A, {}),
            _PAGE_CACHING: _mode_page(_PAGE_CACHING, 0x12, {2: _WCE}),
            _PAGE_CONTROL: _mode_page(_PAGE_CONTROL, 0x0A, {2: _D_SENSE}),
            _PAGE_INFORMATIONAL_EXCEPTIONS: _mode_page(_PAGE_INFORMATIONAL_EXCEPTIONS, 0x0A, {}),
        }
        self._commands = {(c.opcode, c.service_action): c for c in self._command_table()}
        self._sa_opcodes = {
            c.opcode for c in self._commands.values() if c.service_action is not None
        }
        # Commands complete synchronously; the lock keeps COMPARE AND WRITE atomic and mode
        # pages consistent should the runtime ever call handle() from several threads.
        self._lock = threading.Lock()

    # --- storage methods (the part a storage author writes) ---------------------------------

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        raise NotImplementedError

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

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

    # --- state the mode pages control ------------------------------------------------------

    @property
    def write_cache_enabled(self) -> bool:
        return bool(self._mode_current[_PAGE_CACHING][2] & _WCE)

    @property
    def descriptor_sense(self) -> bool:
        """D_SENSE of the control mode page: CHECK CONDITION sense in descriptor format."""
        return bool(self._mode_current[_PAGE_CONTROL][2] & _D_SENSE)

    @property
    def stopped(self) -> bool:
        """START STOP UNIT stopped the unit: medium access gets NOT READY 04/02."""
        return self._stopped

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

    # --- dispatch ----------------------------------------------------------------------------

    def handle(self, cmd: Command) -> Result:
        with self._lock:
            try:
                spec = self._lookup(cmd.cdb)
                _check_usage(cmd.cdb, spec.usage)
                if spec.medium and self._stopped:
                    raise SenseError.stopped()
                return spec.run(cmd)
            except SenseError as err:
                return Result.check_condition(err.sense(self.descriptor_sense))

    def _lookup(self, cdb: bytes) -> _CommandSpec:
        if not cdb:
            raise SenseError.invalid_cdb()
        if cdb[0] in self._sa_opcodes:
            spec = self._commands.get((cdb[0], cdb[1] & 0x1F)) if len(cdb) > 1 else None
            if spec is None:
                raise SenseError.invalid_cdb(1, 4)  # SERVICE ACTION, bits 4-0
            return spec
        spec = self._commands.get((cdb[0], None))
        if spec is None:
            raise SenseError.invalid_opcode()
        return spec

    def _command_table(self) -> list[_CommandSpec]:
        """Every served command with its CDB usage data (hex, from byte 1 on): bits
        outside the mask are reserved or unsupported and get 24/00 with a field pointer."""
        unmap = 0x08 if self.supports_unmap else 0  # WRITE SAME's UNMAP bit
        lba_len16 = "ff" * 12  # LBA(8) + LENGTH(4)

        def extra(run: Callable[[BlockHandler, Command], Result]) -> Callable[[Command], Result]:
            return functools.partial(run, self)

        rows: list[tuple[int, int | None, str, Callable[[Command], Result]]] = [
            (Opcode.TEST_UNIT_READY, None, "0000000000", self._good),
            (Opcode.REQUEST_SENSE, None, "010000ff00", self._request_sense),
            # FMTPINFO (bits 7-6) is examined (and refused) by the command itself.
            (Opcode.FORMAT_UNIT, None, "ff00000000", extra(sbc_extra.format_unit)),
            (Opcode.READ_6, None, "1fffffff00", self._read),
            (Opcode.WRITE_6, None, "1fffffff00", self._write),
            (Opcode.INQUIRY, None, "01ffffff00", self._inquiry),
            (Opcode.MODE_SELECT_6, None, "100000ff00", self._mode_select),
            (Opcode.MODE_SENSE_6, None, "08ffffff00", self._mode_sense),
            (Opcode.START_STOP_UNIT, None, "01000ff700", self._start_stop),
            # PREVENT field unsupported (not removable): only PREVENT=0 passes the mask.
            (Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, None, "0000000000", self._good),
            (Opcode.READ_CAPACITY_10, None, "00ffffffff00000100", self._read_capacity_10),
            (Opcode.READ_10, None, "18ffffffff00ffff00", self._read),
            (Opcode.WRITE_10, None, "18ffffffff00ffff00", self._write),
            (Opcode.WRITE_AND_VERIFY_10, None, "16ffffffff00ffff00", self._write_and_verify),
            (Opcode.VERIFY_10, None, "16ffffffff00ffff00", self._verify),
            (Opcode.PRE_FETCH_10, None, "02ffffffff00ffff00", extra(sbc_extra.pre_fetch)),
            (Opcode.SYNCHRONIZE_CACHE_10, None, "02ffffffff00ffff00", self._synchronize_cache),
            (Opcode.READ_DEFECT_DATA_10, None, "001f00000000ffff00",
             extra(sbc_extra.read_defect_data)),
            (Opcode.WRITE_SAME_10, None, f"{unmap:02x}ffffffff00ffff00", self._write_same),
            (Opcode.MODE_SELECT_10, None, "100000000000ffff00", self._mode_select),
            (Opcode.MODE_SENSE_10, None, "18ffff000000ffff00", self._mode_sense),
            (Opcode.READ_16, None, "18" + lba_len16 + "0000", self._read),
            (Opcode.COMPARE_AND_WRITE, None, "18" + "ff" * 8 + "000000ff0000", self._caw),
            (Opcode.WRITE_16, None, "18" + lba_len16 + "0000", self._write),
            (Opcode.ORWRITE_16, None, "18" + lba_len16 + "0000", extra(sbc_extra.orwrite)),
            (Opcode.WRITE_AND_VERIFY_16, None, "16" + lba_len16 + "0000", self._write_and_verify),
            (Opcode.VERIFY_16, None, "16" + lba_len16 + "0000", self._verify),
            (Opcode.PRE_FETCH_16, None, "02" + lba_len16 + "0000", extra(sbc_extra.pre_fetch)),
            (Opcode.SYNCHRONIZE_CACHE_16, None, "02" + lba_len16 + "0000", self._synchronize_cache),
            (Opcode.WRITE_SAME_16, None, f"{unmap | 0x01:02x}" + lba_len16 + "0000",
             self._write_same),
            # LBA(8), ATOMIC BOUNDARY(2), TRANSFER LENGTH(2)
            (Opcode.WRITE_ATOMIC_16, None, "18" + "ff" * 12 + "0000",
             extra(sbc_extra.write_atomic)),
            (Opcode.SERVICE_ACTION_IN_16, ServiceAction.READ_CAPACITY_16,
             "1f" + lba_len16 + "0100", self._read_capacity_16),
            (Opcode.MAINTENANCE_IN, ServiceAction.REPORT_SUPPORTED_OPERATION_CODES,
             "1f87ffffffffffffff0000", self._report_supported_opcodes),
            (Opcode.READ_12, None, "18ffffffffffffffff0000", self._read),
            (Opcode.WRITE_12, None, "18ffffffffffffffff0000", self._write),
            (Opcode.WRITE_AND_VERIFY_12, None, "16ffffffffffffffff0000", self._write_and_verify),
            (Opcode.VERIFY_12, None, "16ffffffffffffffff0000", self._verify),
            # ADDRESS DESCRIPTOR INDEX(4), ALLOCATION LENGTH(4)
            (Opcode.READ_DEFECT_DATA_12, None, "1fffffffffffffffff0000",
             extra(sbc_extra.read_defect_data)),
        ]  # fmt: skip
        if self.supports_unmap:
            rows.append((Opcode.UNMAP, None, "000000000000ffff00", self._unmap))
        if self.supports_lba_status:  # STARTING LBA(8), ALLOCATION LENGTH(4)
            rows.append((Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS,
                         "1f" + lba_len16 + "0000", extra(sbc_extra.get_lba_status)))  # fmt: skip
        return [
            _CommandSpec(op, sa, bytes([op]) + bytes.fromhex(mask), run, (op, sa) in _MEDIUM_ACCESS)
            for op, sa, mask, run in rows
        ]

    # --- SPC -----------------------------------------------------------------------------------

    def _good(self, cmd: Command) -> Result:
        return Result.good()

    def _request_sense(self, cmd: Command) -> Result:
        # Sense is always returned with CHECK CONDITION (autosense): nothing is pending.
        # A stopped unit reports the condition a medium access would get (SPC-4 6.39).
        c = cdbs.decode_request_sense(cmd.cdb)
        build = sense.descriptor if c.desc else sense.fixed
        if self._stopped:
            key, asc = SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED
        else:
            key, asc = SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE
        return data_in(cmd, build(key, asc), c.alloc_len)

    def _inquiry(self, cmd: Command) -> Result:
        c = cdbs.decode_inquiry(cmd.cdb)
        if not c.evpd:
            if c.page:
                raise SenseError.invalid_cdb(2)
            return data_in(cmd, self._standard_inquiry(), c.alloc_len)
        build = self._vpd_pages().get(c.page)
        if build is None:
            raise SenseError.invalid_cdb(2)
        return data_in(cmd, build(), c.alloc_len)

    def _standard_inquiry(self) -> bytes:
        return _STD_INQUIRY.pack(
            PeripheralType.DIRECT_ACCESS,
            0,  # RMB: not removable
            _SPC4_VERSION,
            _HISUP_RDF2,
            _STD_INQUIRY.size - 5,  # ADDITIONAL LENGTH
            0,
            0,
            _CMDQUE,
            _ascii(self.vendor, 8),
            _ascii(self.product or type(self).__name__, 16),
            _ascii(self.revision, 4),
            *_VERSION_DESCRIPTORS,
        )

    def _vpd_pages(self) -> dict[int, Callable[[], bytes]]:
        return {
            0x00: self._vpd_supported_pages,
            0x80: self._vpd_unit_serial,
            0x83: self._vpd_device_identification,
            0xB0: self._vpd_block_limits,
            0xB1: self._vpd_block_characteristics,
            0xB2: self._vpd_logical_block_provisioning,
        }

    @staticmethod
    def _vpd(page: int, body: bytes) -> bytes:
        return _VPD_HEADER.pack(PeripheralType.DIRECT_ACCESS, page, len(body)) + body

    def _vpd_supported_pages(self) -> bytes:
        return self._vpd(0x00, bytes(sorted(self._vpd_pages())))

    def _device_digest(self) -> bytes:
        """Stable identity of the device: a hash of its name, the same after a restart."""
        return hashlib.sha256(self.device.dev_name.encode()).digest()

    @property
    def unit_serial(self) -> str:
        return self._device_digest()[:16].hex()

    def _vpd_unit_serial(self) -> bytes:
        return self._vpd(0x80, self.unit_serial.encode("ascii"))

    def _vpd_device_identification(self) -> bytes:
        # NAA 6 (IEEE Registered Extended): 4-bit NAA, 24-bit company id, 100 bits of hash.
        vendor_bits = int.from_bytes(self._device_digest()[:13], "big") >> 4
        naa = (_NAA_IEEE_REGISTERED_EXTENDED << 124) | (self.ieee_company_id << 100) | vendor_bits
        naa_id = naa.to_bytes(16, "big")
        t10_id = _ascii(self.vendor, 8) + self.unit_serial.encode("ascii")
        body = (
            _DESIGNATOR_HEADER.pack(_CODE_SET_BINARY, _DESIGNATOR_NAA, len(naa_id))
            + naa_id
            + _DESIGNATOR_HEADER.pack(_CODE_SET_ASCII, _DESIGNATOR_T10, len(t10_id))
            + t10_id
        )
        return self._vpd(0x83, body)

    def _vpd_block_limits(self) -> bytes:
        unmap = self.supports_unmap
        body = _VPD_B0.pack(
            _WSNZ,  # WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is rejected
            self.max_compare_and_write_blocks,
            1 << self.physical_block_exponent,  # OPTIMAL TRANSFER LENGTH GRANULARITY
            self.max_transfer_blocks,
            self.max_transfer_blocks,  # OPTIMAL TRANSFER LENGTH
            self.max_transfer_blocks,  # MAXIMUM PREFETCH LENGTH
            self.max_unmap_blocks if unmap else 0,
            self.max_unmap_descriptors if unmap else 0,
            max(1, self.unmap_granularity_bytes // self.block_size) if unmap else 0,
            0,  # UGAVALID=0: no UNMAP GRANULARITY ALIGNMENT
            self.max_write_same_blocks,
            self.max_atomic_transfer_blocks,  # WRITE ATOMIC
            1,  # ATOMIC ALIGNMENT: any LBA
            1,  # ATOMIC TRANSFER LENGTH GRANULARITY: any length
            0,  # MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY: no boundaries
            0,  # MAXIMUM ATOMIC BOUNDARY SIZE
        )
        return self._vpd(0xB0, body)

    def _vpd_block_characteristics(self) -> bytes:
        return self._vpd(0xB1, _VPD_B1.pack(_NON_ROTATING))

    def _vpd_logical_block_provisioning(self) -> bytes:
        flags = 0
        provisioning = 0
        if self.supports_unmap:
            flags = _LBPU | _LBPWS | _LBPWS10 | (_LBPRZ_B2 if self.unmap_reads_zeroes else 0)
            provisioning = _THIN_PROVISIONED
        return self._vpd(0xB2, _VPD_B2.pack(0, flags, provisioning))

    def _report_supported_opcodes(self, cmd: Command) -> Result:
        c = cdbs.decode_rsoc(cmd.cdb)
        if c.options == _RSOC_ALL:
            data = b"".join(self._rsoc_descriptor(spec, c.rctd) for spec in self._sorted_specs())
            data = struct.pack(">I", len(data)) + data
        elif c.options in (_RSOC_OPCODE, _RSOC_OPCODE_SA, _RSOC_OPCODE_MAYBE_SA):
            data = self._rsoc_one(c)
        else:
            raise SenseError.invalid_cdb(2, 2)  # REPORTING OPTIONS, bits 2-0
        return data_in(cmd, data, c.alloc_len)

    def _sorted_specs(self) -> list[_CommandSpec]:
        return sorted(self._commands.values(), key=lambda s: (s.opcode, s.service_action or 0))

    @staticmethod
    def _rsoc_descriptor(spec: _CommandSpec, rctd: bool) -> bytes:
        flags = (_CTDP if rctd else 0) | (_SERVACTV if spec.service_action is not None else 0)
        out = _RSOC_DESCRIPTOR.pack(spec.opcode, spec.service_action or 0, flags, len(spec.usage))
        return out + (_RSOC_TIMEOUTS.pack(_RSOC_TIMEOUTS.size - 2, 0, 0) if rctd else b"")

    def _rsoc_one(self, c: cdbs.RsocCdb) -> bytes:
        has_sa = c.opcode in self._sa_opcodes
        if c.options == _RSOC_OPCODE and has_sa:
            raise SenseError.invalid_cdb(3)  # this opcode needs a service action
        if c.options == _RSOC_OPCODE_SA and (c.opcode, None) in self._commands:
            raise SenseError.invalid_cdb(3)  # this opcode has no service actions
        spec = self._commands.get((c.opcode, c.service_action if has_sa else None))
        if spec is None:
            return _RSOC_ONE.pack(_NOT_SUPPORTED, 0)
        timeouts = _RSOC_TIMEOUTS.pack(_RSOC_TIMEOUTS.size - 2, 0, 0) if c.rctd else b""
        flags = _SUPPORTED | (_ONE_CTDP if c.rctd else 0)
        return _RSOC_ONE.pack(flags, len(spec.usage)) + spec.usage + timeouts

    # --- mode pages -------------------------------------------------------------------------

    def _default_mode_pages(self) -> dict[int, bytes]:
        return {
            # Nothing to recover on these back-ends; AWRE=1 as SBC-3 disks default to.
            _PAGE_RW_ERROR_RECOVERY: _mode_page(_PAGE_RW_ERROR_RECOVERY, 0x0A, {2: _AWRE}),
            _PAGE_CACHING: _mode_page(
                _PAGE_CACHING, 0x12, {2: _WCE if self.device.write_cache else 0}
            ),
            _PAGE_CONTROL: _mode_page(_PAGE_CONTROL, 0x0A, {3: _QAM_UNRESTRICTED}),
            _PAGE_INFORMATIONAL_EXCEPTIONS: _mode_page(
                _PAGE_INFORMATIONAL_EXCEPTIONS, 0x0A, {2: _DEXCPT}
            ),
        }

    def _mode_sense(self, cmd: Command) -> Result:
        c = cdbs.decode_mode_sense(cmd.cdb)
        if c.pc == _PC_SAVED:
            raise SenseError(
                SenseKey.ILLEGAL_REQUEST,
                Asc.SAVING_PARAMETERS_NOT_SUPPORTED,
                field=FieldPointer(2, 7),
            )
        if c.page == _ALL_PAGES:
            codes = sorted(self._mode_current)
        elif c.page in self._mode_current:
            codes = [c.page]
        else:
            raise SenseError.invalid_cdb(2, 5)  # PAGE CODE, bits 5-0
        if c.subpage not in (0, _ALL_SUBPAGES):  # no page here has subpages
            raise SenseError.invalid_cdb(3)
        source = {
            _PC_CHANGEABLE: self._mode_changeable,
            _PC_DEFAULT: self._mode_default,
        }.get(c.pc, self._mode_current)
        pages = b"".join(bytes(source[code]) for code in codes)
        long_lba = c.ten and c.llbaa
        descriptor = b"" if c.dbd else self._block_descriptor(long_lba)
        if c.ten:
            total = _MODE_HEADER_10.size + len(descriptor) + len(pages)
            header = _MODE_HEADER_10.pack(
                total - 2, 0, _DPOFUA, _LONGLBA if long_lba else 0, len(descriptor)
            )
        else:
            total = _MODE_HEADER_6.size + len(descriptor) + len(pages)
            header = _MODE_HEADER_6.pack(total - 1, 0, _DPOFUA, len(descriptor))
        return data_in(cmd, header + descriptor + pages, c.alloc_len)

    def _block_descriptor(self, long_lba: bool) -> bytes:
        if long_lba:
            return _LONG_BLOCK_DESCRIPTOR.pack(self.num_blocks, 0, self.block_size)
        # Density code 0 in the top byte; a count that does not fit reads 0xFFFFFF.
        return _SHORT_BLOCK_DESCRIPTOR.pack(min(self.num_blocks, 0xFFFFFF), self.block_size)

    def _mode_select(self, cmd: Command) -> Result:
        c = cdbs.decode_mode_select(cmd.cdb)
        if not c.pf:
            raise SenseError.invalid_cdb(1, 4)  # only the SPC page format is understood
        data = cmd.iov.read(0, c.param_len)
        if not data:
            return Result.good()
        header = _MODE_HEADER_10 if c.ten else _MODE_HEADER_6
        if len(data) < header.size:
            raise SenseError.parameter_list_length()
        if c.ten:
            _, medium, _, longlba, bd_len = header.unpack_from(data)
            medium_byte, bd_len_byte = 2, 6
        else:
            _, medium, _, bd_len = header.unpack_from(data)
            longlba, medium_byte, bd_len_byte = 0, 1, 3
        if medium:
            raise SenseError.invalid_parameter(medium_byte)
        if header.size + bd_len > len(data):
            raise SenseError.parameter_list_length()
        long_lba = bool(longlba & _LONGLBA)
        self._check_block_descriptors(data, header.size, bd_len, long_lba, bd_len_byte)
        updates = self._parse_mode_pages(data, header.size + bd_len)
        cache_was_on = self.write_cache_enabled
        for code, page in updates.items():
            self._mode_current[code][2:] = page[2:]
        if cache_was_on and not self.write_cache_enabled:
            self._flush()  # write-back data must not stay cached once WCE is off
        return Result.good()

    def _check_block_descriptors(
        self, data: bytes, pos: int, length: int, long_lba: bool, length_byte: int
    ) -> None:
        """Block descriptors may only restate the current format (density 0, this block
        size, this capacity or 0)."""
        layout = _LONG_BLOCK_DESCRIPTOR if long_lba else _SHORT_BLOCK_DESCRIPTOR
        if length % layout.size:
            raise SenseError.invalid_parameter(length_byte)
        for start in range(pos, pos + length, layout.size):
            if long_lba:
                blocks, density, block_len = layout.unpack_from(data, start)
                offsets = (8, 0, 12)
                current = self.num_blocks
            else:
                word, block_len = layout.unpack_from(data, start)
                density, blocks = word >> 24, word & 0xFFFFFF
                block_len &= 0xFFFFFF
                offsets = (0, 1, 5)
                current = min(self.num_blocks, 0xFFFFFF)
            if density:
                raise SenseError.invalid_parameter(start + offsets[0])
            if blocks not in (0, current):
                raise SenseError.invalid_parameter(start + offsets[1])
            if block_len != self.block_size:
                raise SenseError.invalid_parameter(start + offsets[2])

    def _parse_mode_pages(self, data: bytes, pos: int) -> dict[int, bytes]:
        """Validate every page before any is applied: a bad page changes nothing."""
        updates: dict[int, bytes] = {}
        while pos < len(data):
            if pos + 2 > len(data):
                raise SenseError.parameter_list_length()
            code, length = data[pos] & 0x3F, data[pos + 1]
            if data[pos] & _SPF:
                raise SenseError.invalid_parameter(pos, 6)
            current = self._mode_current.get(code)
            if current is None:
                raise SenseError.invalid_parameter(pos, 5)
            if length != len(current) - 2:
                raise SenseError.invalid_parameter(pos + 1)
            if pos + 2 + length > len(data):
                raise SenseError.parameter_list_length()
            new = data[pos : pos + 2 + length]
            mask = self._mode_changeable[code]
            for i in range(2, len(new)):
                fixed_bits = (new[i] ^ current[i]) & ~mask[i] & 0xFF
                if fixed_bits:
                    raise SenseError.invalid_parameter(pos + i, fixed_bits.bit_length() - 1)
            updates[code] = new
            pos += 2 + length
        return updates

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

    # --- SBC: capacity ------------------------------------------------------------------------

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

    # --- SBC: data commands -------------------------------------------------------------------

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

    def _storage_read(self, offset: int, buf: ScatterBuffer) -> None:
        with medium_errors(Asc.UNRECOVERED_READ_ERROR):
            self.read(offset, buf)

    def _storage_write(self, offset: int, buf: ScatterBuffer, force_unit_access: bool) -> None:
        with medium_errors(Asc.WRITE_ERROR):
            self.write(offset, buf)
        if force_unit_access or not self.write_cache_enabled:
            self._flush()

    def _flush(self) -> None:
        with medium_errors(Asc.WRITE_ERROR):
            self.flush()

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
        return Result.good()

    def _medium_difference(self, offset: int, expected: bytes) -> int | None:
        actual, buf = scratch(len(expected))
        self._storage_read(offset, buf)
        return first_difference(expected, actual)

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
                self.unmap(offset, length)
            elif zeroes:
                self.write_zeroes(offset, length)
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
            self.write(offset, ScatterBuffer([part]))
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
                self.unmap(lba * self.block_size, blocks * self.block_size)
        return Result.good()

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


def _check_usage(cdb: bytes, usage: bytes) -> None:
    """24/00 for a CDB shorter than its command or with a bit the usage mask excludes;
    the field pointer names the byte and its highest offending bit (bit 7 for a
    protection field, the first bit of that 3-bit field)."""
    if len(cdb) < len(usage):
        raise SenseError.invalid_cdb()
    for i in range(1, len(usage)):
        bad = cdb[i] & ~usage[i] & 0xFF
        if bad:
            if i == 1 and bad & _PROTECT_FIELD and cdb[0] in _PROTECT_OPCODES:
                raise SenseError.invalid_cdb(1, 7)
            raise SenseError.invalid_cdb(i, bad.bit_length() - 1)
