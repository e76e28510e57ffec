"""Mode pages of BlockHandler: MODE SENSE(6/10) and MODE SELECT(6/10).

Pages served: read-write error recovery (0x01), caching (0x08: WCE), control (0x0A:
D_SENSE) and informational exceptions (0x1C). Three dicts keyed by page code hold
whole pages (header included): `_mode_default`, `_mode_current` (bytearrays MODE SELECT
changes) and `_mode_changeable` (the masks of bits MODE SELECT may change).

Extension point: a BlockHandler subclass adds (or replaces) a page with a ModePage
class attribute; MODE SENSE reports it (current, changeable, default, and in "all
pages"), MODE SELECT changes its changeable bits, and the attribute reads back the
page's current parameters.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from tcmu import cdb as cdbs
from tcmu.blockutil import data_in
from tcmu.handler import Command, DeviceInfo, Result
from tcmu.sense import FieldPointer, SenseError
from tcmu_harness.scsi.constants import Asc, SenseKey

PAGE_RW_ERROR_RECOVERY = 0x01
PAGE_CACHING = 0x08
PAGE_CONTROL = 0x0A
PAGE_INFORMATIONAL_EXCEPTIONS = 0x1C
_ALL_PAGES = 0x3F
_ALL_SUBPAGES = 0xFF
_AWRE = 0x80  # read-write error recovery page byte 2: automatic write reallocation
WCE = 0x04  # caching page byte 2
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


def mode_page(code: int, length: int, values: dict[int, int]) -> bytes:
    """A page_0 format page: code, PAGE LENGTH, then zeroes but for `values` by index."""
    page = bytearray(2 + length)
    page[0], page[1] = code, length
    for index, value in values.items():
        page[index] = value
    return bytes(page)


class ModePage:
    """A mode page a BlockHandler subclass declares as a class attribute:

        class MyDisk(BlockHandler):
            power = ModePage(0x21, default=bytes(2), changeable=bytes([0x01, 0x00]))

    code: the page code, 0x01-0x3E (page_0 format, no subpages; 0x20-0x3E are vendor
      specific). default: the parameter bytes after the 2-byte header (code, PAGE
      LENGTH). changeable: a mask of the bits MODE SELECT may change, as long as
      default (none by default). On a handler, the attribute reads the current
      parameter bytes (`self.power[0] & 0x01`).
    """

    def __init__(self, code: int, default: bytes, changeable: bytes | None = None) -> None:
        changeable = bytes(len(default)) if changeable is None else bytes(changeable)
        if not 0x01 <= code <= 0x3E:
            raise TypeError(f"ModePage({code:#x}): page codes are 0x01-0x3E")
        if not 0 < len(default) <= 0xFF or len(changeable) != len(default):
            raise TypeError(f"ModePage({code:#x}): default must be 1-255 bytes and "
                            f"changeable as long as it")
        self.code = code
        self.default = mode_page(code, len(default), dict(enumerate(default, 2)))
        self.changeable = mode_page(code, len(default), dict(enumerate(changeable, 2)))

    def __get__(self, handler: Any, owner: type | None = None) -> Any:
        if handler is None:
            return self
        return bytes(handler._mode_current[self.code][2:])


def declared_mode_pages(cls: type) -> dict[int, ModePage]:
    """The ModePage attributes of `cls` and its bases, by page code (subclasses win)."""
    pages: dict[int, ModePage] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            if isinstance(value, ModePage):
                pages[value.code] = value
    return pages


class ModePagesMixin:
    """MODE SENSE / MODE SELECT over the three page dicts; part of BlockHandler."""

    device: DeviceInfo
    block_size: int
    num_blocks: int
    _mode_default: dict[int, bytes]
    _mode_current: dict[int, bytearray]
    _mode_changeable: dict[int, bytes]

    if TYPE_CHECKING:

        def _flush(self) -> None: ...  # tcmu.sbc

    def _init_mode_pages(self) -> None:
        self._mode_default = self._default_mode_pages()
        self._mode_changeable = {
            PAGE_RW_ERROR_RECOVERY: mode_page(PAGE_RW_ERROR_RECOVERY, 0x0A, {}),
            PAGE_CACHING: mode_page(PAGE_CACHING, 0x12, {2: WCE}),
            PAGE_CONTROL: mode_page(PAGE_CONTROL, 0x0A, {2: _D_SENSE}),
            PAGE_INFORMATIONAL_EXCEPTIONS: mode_page(PAGE_INFORMATIONAL_EXCEPTIONS, 0x0A, {}),
        }
        for code, page in declared_mode_pages(type(self)).items():
            self._mode_default[code] = page.default
            self._mode_changeable[code] = page.changeable
        self._mode_current = {code: bytearray(page) for code, page in self._mode_default.items()}

    def _default_mode_pages(self) -> dict[int, bytes]:
        return {
            # Nothing to recover on these back-ends; AWRE=1 as SBC-3 disks default to.
            PAGE_RW_ERROR_RECOVERY: mode_page(PAGE_RW_ERROR_RECOVERY, 0x0A, {2: _AWRE}),
            PAGE_CACHING: mode_page(PAGE_CACHING, 0x12, {2: WCE if self.device.write_cache else 0}),
            PAGE_CONTROL: mode_page(PAGE_CONTROL, 0x0A, {3: _QAM_UNRESTRICTED}),
            PAGE_INFORMATIONAL_EXCEPTIONS: mode_page(
                PAGE_INFORMATIONAL_EXCEPTIONS, 0x0A, {2: _DEXCPT}
            ),
        }

    # --- state the mode pages control ------------------------------------------------------

    @property
    def write_cache_enabled(self) -> bool:
        return bool(self._mode_current[PAGE_CACHING][2] & WCE)

    @property
    def descriptor_sense(self) -> bool:
        """D_SENSE of the control mode page: CHECK CONDITION sense in descriptor format."""
        return bool(self._mode_current[PAGE_CONTROL][2] & _D_SENSE)

    # --- MODE SENSE -----------------------------------------------------------------------------

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

    # --- MODE SELECT ----------------------------------------------------------------------------

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
