"""CDB decoding: the fields of the SBC data commands and of the SPC commands BlockHandler
serves, as small frozen dataclasses. Layouts are `struct` formats named after the CDB
they describe; byte offsets kept here are the ones sense field pointers need.

Every decoder raises SenseError(INVALID FIELD IN CDB) for a CDB shorter than its layout.
Reserved-bit checks are not done here: the dispatcher does them from the usage masks.
"""

from __future__ import annotations

import dataclasses
import struct

from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Opcode

# READ(6)/WRITE(6): opcode and 21-bit LBA share the first big-endian word.
_CDB6_RW = struct.Struct(">IBB")  # opcode|LBA, TRANSFER LENGTH, CONTROL
_CDB10 = struct.Struct(">BBIBHB")  # opcode, flags, LBA, GROUP, LENGTH, CONTROL
_CDB12 = struct.Struct(">BBIIBB")  # opcode, flags, LBA, LENGTH, GROUP, CONTROL
_CDB16 = struct.Struct(">BBQIBB")  # opcode, flags, LBA, LENGTH, GROUP, CONTROL
_CDB_CAW = struct.Struct(">BBQ3xBBB")  # opcode, flags, LBA, NUMBER OF LOGICAL BLOCKS@13, ...
# WRITE ATOMIC(16): opcode, flags, LBA, ATOMIC BOUNDARY, TRANSFER LENGTH@12, GROUP, CONTROL
_CDB_WRITE_ATOMIC = struct.Struct(">BBQHHBB")
_LBA6_MASK = 0x1FFFFF

# Byte-1 flag bits of the SBC data commands (meaning depends on the opcode).
_DPO = 0x10
_FUA = 0x08
_PROTECT_SHIFT = 5  # RDPROTECT / WRPROTECT / VRPROTECT, bits 7-5
_BYTCHK_SHIFT = 1  # BYTCHK, bits 2-1
_IMMED = 0x02  # SYNCHRONIZE CACHE, PRE-FETCH
_ANCHOR = 0x10  # WRITE SAME
_UNMAP = 0x08  # WRITE SAME
_NDOB = 0x01  # WRITE SAME(16)


def _unpack(layout: struct.Struct, cdb: bytes) -> tuple[int, ...]:
    if len(cdb) < layout.size:
        raise SenseError.invalid_cdb()
    return layout.unpack_from(cdb)


@dataclasses.dataclass(frozen=True, slots=True)
class BlockCdb:
    """An SBC command that addresses a range of logical blocks.

    Only the flags the opcode defines are ever set; the rest stay False/0.
    length_byte is where the length field starts (for field pointers).
    """

    opcode: int
    lba: int
    blocks: int
    length_byte: int
    protect: int = 0
    dpo: bool = False
    fua: bool = False
    bytchk: int = 0
    immed: bool = False
    anchor: bool = False
    unmap: bool = False
    ndob: bool = False
    boundary: int = 0  # WRITE ATOMIC: ATOMIC BOUNDARY


_READS = {Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16}
_WRITES = {
    Opcode.WRITE_6,
    Opcode.WRITE_10,
    Opcode.WRITE_12,
    Opcode.WRITE_16,
    Opcode.ORWRITE_16,
}
_VERIFIES = {
    Opcode.VERIFY_10,
    Opcode.VERIFY_12,
    Opcode.VERIFY_16,
    Opcode.WRITE_AND_VERIFY_10,
    Opcode.WRITE_AND_VERIFY_12,
    Opcode.WRITE_AND_VERIFY_16,
}
_SYNCS = {
    Opcode.SYNCHRONIZE_CACHE_10,
    Opcode.SYNCHRONIZE_CACHE_16,
    Opcode.PRE_FETCH_10,
    Opcode.PRE_FETCH_16,
}
_WRITE_SAMES = {Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16}


def _range(cdb: bytes) -> tuple[int, int, int, int]:
    """(flags byte, LBA, length, offset of the length field) for 10/12/16-byte CDBs."""
    group = cdb[0] >> 5
    if group in (1, 2):  # 10-byte CDBs
        _, flags, lba, _, length, _ = _unpack(_CDB10, cdb)
        return flags, lba, length, 7
    if group == 5:  # 12-byte CDBs
        _, flags, lba, length, _, _ = _unpack(_CDB12, cdb)
        return flags, lba, length, 6
    if group == 4:  # 16-byte CDBs
        _, flags, lba, length, _, _ = _unpack(_CDB16, cdb)
        return flags, lba, length, 10
    raise ValueError(f"opcode {cdb[0]:#04x} has no LBA range layout")


def decode_block(cdb: bytes) -> BlockCdb:
    """Decode any READ/WRITE/VERIFY/WRITE AND VERIFY/SYNCHRONIZE CACHE/WRITE SAME/
    COMPARE AND WRITE/PRE-FETCH/ORWRITE/WRITE ATOMIC CDB. READ(6)/WRITE(6) length 0
    means 256 blocks."""
    if not cdb:
        raise SenseError.invalid_cdb()
    op = cdb[0]
    if op in (Opcode.READ_6, Opcode.WRITE_6):
        word, length, _ = _unpack(_CDB6_RW, cdb)
        return BlockCdb(op, word & _LBA6_MASK, length or 256, length_byte=4)
    if op == Opcode.COMPARE_AND_WRITE:
        _, flags, lba, blocks, _, _ = _unpack(_CDB_CAW, cdb)
        return BlockCdb(
            op,
            lba,
            blocks,
            length_byte=13,
            protect=flags >> _PROTECT_SHIFT,
            dpo=bool(flags & _DPO),
            fua=bool(flags & _FUA),
        )
    if op == Opcode.WRITE_ATOMIC_16:
        _, flags, lba, boundary, blocks, _, _ = _unpack(_CDB_WRITE_ATOMIC, cdb)
        return BlockCdb(
            op,
            lba,
            blocks,
            length_byte=12,
            protect=flags >> _PROTECT_SHIFT,
            dpo=bool(flags & _DPO),
            fua=bool(flags & _FUA),
            boundary=boundary,
        )
    flags, lba, length, length_byte = _range(cdb)
    protect = flags >> _PROTECT_SHIFT
    if op in _READS or op in _WRITES:
        return BlockCdb(
            op,
            lba,
            length,
            length_byte,
            protect=protect,
            dpo=bool(flags & _DPO),
            fua=bool(flags & _FUA),
        )
    if op in _VERIFIES:
        bytchk = (flags >> _BYTCHK_SHIFT) & 0x3
        return BlockCdb(
            op, lba, length, length_byte, protect=protect, dpo=bool(flags & _DPO), bytchk=bytchk
        )
    if op in _SYNCS:
        return BlockCdb(op, lba, length, length_byte, immed=bool(flags & _IMMED))
    if op in _WRITE_SAMES:
        return BlockCdb(
            op,
            lba,
            length,
            length_byte,
            protect=protect,
            anchor=bool(flags & _ANCHOR),
            unmap=bool(flags & _UNMAP),
            ndob=op == Opcode.WRITE_SAME_16 and bool(flags & _NDOB),
        )
    raise ValueError(f"opcode {op:#04x} is not a block command")


# --- SPC commands and the SBC commands without an LBA range -----------------------------

_INQUIRY = struct.Struct(">BBBHB")  # opcode, EVPD, PAGE CODE, ALLOCATION LENGTH, CONTROL
_REQUEST_SENSE = struct.Struct(">BB2xBB")  # opcode, DESC, ALLOCATION LENGTH, CONTROL
_MODE_SENSE_6 = struct.Struct(">BBBBBB")  # opcode, DBD, PC|PAGE, SUBPAGE, ALLOC LEN, CONTROL
_MODE_SENSE_10 = struct.Struct(">BBBB3xHB")  # opcode, LLBAA|DBD, PC|PAGE, SUBPAGE, ALLOC
_MODE_SELECT_6 = struct.Struct(">BB2xBB")  # opcode, PF|SP, PARAMETER LIST LENGTH, CONTROL
_MODE_SELECT_10 = struct.Struct(">BB5xHB")  # opcode, PF|SP, PARAMETER LIST LENGTH, CONTROL
_READ_CAPACITY_10 = struct.Struct(">BBI2xBB")  # opcode, obsolete, LBA, PMI, CONTROL
_READ_CAPACITY_16 = struct.Struct(">BBQIBB")  # opcode, SA, LBA, ALLOC LEN, PMI, CONTROL
_RSOC = struct.Struct(">BBBBHIxB")  # opcode, SA, RCTD|OPTIONS, OPCODE, SA, ALLOC, CONTROL
_UNMAP_CDB = struct.Struct(">BB4xBHB")  # opcode, ANCHOR, GROUP, PARAMETER LIST LENGTH, CONTROL
_START_STOP = struct.Struct(">BBxBBB")  # opcode, IMMED, POWER COND MODIFIER, flags, CONTROL


@dataclasses.dataclass(frozen=True, slots=True)
class InquiryCdb:
    evpd: bool
    page: int
    alloc_len: int


def decode_inquiry(cdb: bytes) -> InquiryCdb:
    _, flags, page, alloc_len, _ = _unpack(_INQUIRY, cdb)
    return InquiryCdb(bool(flags & 0x01), page, alloc_len)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestSenseCdb:
    desc: bool
    alloc_len: int


def decode_request_sense(cdb: bytes) -> RequestSenseCdb:
    _, flags, alloc_len, _ = _unpack(_REQUEST_SENSE, cdb)
    return RequestSenseCdb(bool(flags & 0x01), alloc_len)


@dataclasses.dataclass(frozen=True, slots=True)
class ModeSenseCdb:
    ten: bool  # MODE SENSE(10) (8-byte header) rather than (6)
    dbd: bool
    llbaa: bool
    pc: int  # page control: 0 current, 1 changeable, 2 default, 3 saved
    page: int
    subpage: int
    alloc_len: int


def decode_mode_sense(cdb: bytes) -> ModeSenseCdb:
    if cdb and cdb[0] == Opcode.MODE_SENSE_10:
        _, flags, pc_page, subpage, alloc_len, _ = _unpack(_MODE_SENSE_10, cdb)
        llbaa = bool(flags & 0x10)
        ten = True
    else:
        _, flags, pc_page, subpage, alloc_len, _ = _unpack(_MODE_SENSE_6, cdb)
        llbaa = False
        ten = False
    return ModeSenseCdb(
        ten, bool(flags & 0x08), llbaa, pc_page >> 6, pc_page & 0x3F, subpage, alloc_len
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ModeSelectCdb:
    ten: bool
    pf: bool
    sp: bool
    param_len: int


def decode_mode_select(cdb: bytes) -> ModeSelectCdb:
    ten = bool(cdb) and cdb[0] == Opcode.MODE_SELECT_10
    _, flags, param_len, _ = _unpack(_MODE_SELECT_10 if ten else _MODE_SELECT_6, cdb)
    return ModeSelectCdb(ten, bool(flags & 0x10), bool(flags & 0x01), param_len)


@dataclasses.dataclass(frozen=True, slots=True)
class ReadCapacityCdb:
    lba: int
    pmi: bool
    alloc_len: int  # READ CAPACITY(10) has none: 8


def decode_read_capacity(cdb: bytes) -> ReadCapacityCdb:
    if cdb and cdb[0] == Opcode.SERVICE_ACTION_IN_16:
        _, _, lba, alloc_len, pmi, _ = _unpack(_READ_CAPACITY_16, cdb)
        return ReadCapacityCdb(lba, bool(pmi & 0x01), alloc_len)
    _, _, lba, pmi, _ = _unpack(_READ_CAPACITY_10, cdb)
    return ReadCapacityCdb(lba, bool(pmi & 0x01), 8)


@dataclasses.dataclass(frozen=True, slots=True)
class RsocCdb:
    """REPORT SUPPORTED OPERATION CODES."""

    rctd: bool
    options: int
    opcode: int
    service_action: int
    alloc_len: int


def decode_rsoc(cdb: bytes) -> RsocCdb:
    _, _, flags, opcode, sa, alloc_len, _ = _unpack(_RSOC, cdb)
    return RsocCdb(bool(flags & 0x80), flags & 0x07, opcode, sa, alloc_len)


@dataclasses.dataclass(frozen=True, slots=True)
class UnmapCdb:
    anchor: bool
    param_len: int


def decode_unmap(cdb: bytes) -> UnmapCdb:
    _, flags, _, param_len, _ = _unpack(_UNMAP_CDB, cdb)
    return UnmapCdb(bool(flags & 0x01), param_len)


@dataclasses.dataclass(frozen=True, slots=True)
class StartStopCdb:
    immed: bool
    power_condition: int
    no_flush: bool
    loej: bool
    start: bool


def decode_start_stop(cdb: bytes) -> StartStopCdb:
    _, immed, _, flags, _ = _unpack(_START_STOP, cdb)
    return StartStopCdb(
        bool(immed & 0x01), flags >> 4, bool(flags & 0x04), bool(flags & 0x02), bool(flags & 0x01)
    )


_GET_LBA_STATUS = struct.Struct(">BBQIBB")  # opcode, SA, STARTING LBA, ALLOC LEN, ..., CONTROL


@dataclasses.dataclass(frozen=True, slots=True)
class GetLbaStatusCdb:
    lba: int
    alloc_len: int


def decode_get_lba_status(cdb: bytes) -> GetLbaStatusCdb:
    _, _, lba, alloc_len, _, _ = _unpack(_GET_LBA_STATUS, cdb)
    return GetLbaStatusCdb(lba, alloc_len)


_READ_DEFECT_DATA_10 = struct.Struct(">BxB4xHB")  # opcode, flags@2, ALLOCATION LENGTH@7
_READ_DEFECT_DATA_12 = struct.Struct(">BBIIxB")  # opcode, flags, INDEX, ALLOCATION LENGTH@6


@dataclasses.dataclass(frozen=True, slots=True)
class ReadDefectDataCdb:
    twelve: bool
    flags: int  # REQ_PLIST (bit 4) | REQ_GLIST (bit 3) | DEFECT LIST FORMAT (bits 2-0)
    alloc_len: int


def decode_read_defect_data(cdb: bytes) -> ReadDefectDataCdb:
    if cdb and cdb[0] == Opcode.READ_DEFECT_DATA_12:
        _, flags, _, alloc_len, _ = _unpack(_READ_DEFECT_DATA_12, cdb)
        return ReadDefectDataCdb(True, flags & 0x1F, alloc_len)
    _, flags, alloc_len, _ = _unpack(_READ_DEFECT_DATA_10, cdb)
    return ReadDefectDataCdb(False, flags & 0x1F, alloc_len)


_FORMAT_UNIT = struct.Struct(">BB3xB")  # opcode, flags, vendor specific, obsolete, CONTROL


@dataclasses.dataclass(frozen=True, slots=True)
class FormatUnitCdb:
    fmtpinfo: int  # bits 7-6
    longlist: bool
    fmtdata: bool
    cmplst: bool
    defect_list_format: int


def decode_format_unit(cdb: bytes) -> FormatUnitCdb:
    _, flags, _ = _unpack(_FORMAT_UNIT, cdb)
    return FormatUnitCdb(
        flags >> 6, bool(flags & 0x20), bool(flags & 0x10), bool(flags & 0x08), flags & 0x07
    )
