"""INQUIRY: standard data and the VPD pages of BlockHandler (0x00 supported pages,
0x80 unit serial number, 0x83 device identification, 0xB0 block limits, 0xB1 block
device characteristics, 0xB2 logical block provisioning).

`_vpd_pages()` maps page codes to builders; VPD 0x00 lists exactly its keys.

Extension point: a BlockHandler subclass adds a page with a method marked
@vpd_page(code) that returns the page's body; the base adds the 4-byte header, and
VPD 0x00 lists the page.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable
from typing import ClassVar

from tcmu import cdb as cdbs
from tcmu.blockutil import data_in, declared, mark
from tcmu.handler import Command, DeviceInfo, Result
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import PeripheralType

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


_VPD_MARK = "__tcmu_vpd_page__"


def vpd_page(code: int) -> Callable[[Callable[..., bytes]], Callable[..., bytes]]:
    """Serve VPD page `code` (0x01-0xFF; 0xC0-0xFF are vendor specific) with the
    decorated method, `def method(self) -> bytes`, returning the page after its 4-byte
    header (which the base adds: peripheral, page code, page length)."""
    if not 0x01 <= code <= 0xFF:
        raise TypeError(f"vpd_page({code:#x}): page codes are 0x01-0xFF (0x00 is the list)")
    return mark(_VPD_MARK, code)


def ascii_field(text: str, width: int) -> bytes:
    """An SPC ASCII field: left-aligned, space padded, truncated to width."""
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


class InquiryMixin:
    """INQUIRY and the VPD pages; part of BlockHandler."""

    vendor: ClassVar[str]
    product: ClassVar[str | None]
    revision: ClassVar[str]
    ieee_company_id: ClassVar[int]
    max_compare_and_write_blocks: ClassVar[int]
    max_unmap_descriptors: ClassVar[int]
    unmap_granularity_bytes: ClassVar[int]
    unmap_reads_zeroes: ClassVar[bool]
    device: DeviceInfo
    block_size: int
    physical_block_exponent: int
    supports_unmap: bool
    max_transfer_blocks: int
    max_unmap_blocks: int
    max_write_same_blocks: int
    max_atomic_transfer_blocks: int

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
            ascii_field(self.vendor, 8),
            ascii_field(self.product or type(self).__name__, 16),
            ascii_field(self.revision, 4),
            *_VERSION_DESCRIPTORS,
        )

    def _vpd_pages(self) -> dict[int, Callable[[], bytes]]:
        pages: dict[int, Callable[[], bytes]] = {
            0x00: self._vpd_supported_pages,
            0x80: self._vpd_unit_serial,
            0x83: self._vpd_device_identification,
            0xB0: self._vpd_block_limits,
            0xB1: self._vpd_block_characteristics,
            0xB2: self._vpd_logical_block_provisioning,
        }
        for name, code in declared(type(self), _VPD_MARK).items():
            pages[code] = functools.partial(self._declared_vpd, code, getattr(self, name))
        return pages

    def _declared_vpd(self, code: int, body: Callable[[], bytes]) -> bytes:
        return self._vpd(code, bytes(body()))

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
        t10_id = ascii_field(self.vendor, 8) + self.unit_serial.encode("ascii")
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
