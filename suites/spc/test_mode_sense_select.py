"""MODE SENSE(6)/(10) and MODE SELECT(6)/(10): the mode parameter header, the block
descriptor (short and long LBA), the mode pages the device returns for page 3Fh and one by
one, the page control values (current, changeable, default, saved), allocation length,
page and subpage refusals, MODE SELECT of changeable and non-changeable bits, parameter
list errors, and the D_SENSE bit of the Control mode page switching every later CHECK
CONDITION between fixed and descriptor sense data.

SPC-4 6.11-6.14 (the commands), 7.5 (mode parameters), 4.5 (sense data); SBC-4 6.5.2
(block descriptors). Reads share the module LUN; every MODE SELECT gets a fresh LUN.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

ALL_PAGES = 0x3F
ALL_SUBPAGES = 0xFF
PAGE_RW_ERROR_RECOVERY = 0x01
PAGE_CACHING = 0x08
PAGE_CONTROL = 0x0A
PAGE_INFORMATIONAL_EXCEPTIONS = 0x1C
# Page lengths the standards fix (SBC-4 6.5 and SPC-4 7.5.8 / 7.5 tables).
STANDARD_PAGE_LENGTH = {
    PAGE_RW_ERROR_RECOVERY: 0x0A,
    PAGE_CACHING: 0x12,
    PAGE_CONTROL: 0x0A,
    PAGE_INFORMATIONAL_EXCEPTIONS: 0x0A,
}
# Page codes a plain disk need not implement: the first one not listed is the "unsupported"
# page of the refusal tests.
UNCLAIMED_PAGE_CANDIDATES = (0x02, 0x19, 0x1A, 0x3E)
WCE = 0x04  # Caching page byte 2
D_SENSE = 0x04  # Control page byte 2
PS = 0x80  # page byte 0: parameters saveable
SPF = 0x40  # page byte 0: sub_page format
BIG = 1024  # data-in buffer for whole answers
HEADER = {6: 4, 10: 8}
MODE_SENSE = {6: cdb.mode_sense_6, 10: cdb.mode_sense_10}
MODE_SELECT = {6: cdb.mode_select_6, 10: cdb.mode_select_10}
SHORT_DESCRIPTOR = struct.Struct(">II")  # DENSITY CODE | BLOCKS (24), reserved | LENGTH (24)
LONG_DESCRIPTOR = struct.Struct(">QB3xI")  # BLOCKS, DENSITY CODE, reserved, LENGTH


@dataclasses.dataclass(frozen=True)
class ModeData:
    """A MODE SENSE answer, taken apart (SPC-4 7.5.5 header, SBC-4 6.5.2 descriptors)."""

    raw: bytes
    size: int  # 6 or 10
    mode_data_length: int
    medium_type: int
    device_specific: int
    longlba: bool
    bd_length: int
    block_descriptors: bytes
    pages: list[bytes]  # in the order returned
    end: int  # where the pages stopped (bytes parsed)

    @property
    def header(self) -> bytes:
        return self.raw[: HEADER[self.size]]

    def page(self, code: int, subpage: int = 0) -> bytes | None:
        for page in self.pages:
            if page_id(page) == (code, subpage):
                return page
        return None

    def page_bytes(self) -> bytes:
        return b"".join(self.pages)


def page_id(page: bytes) -> tuple[int, int]:
    return page[0] & 0x3F, page[1] if page[0] & SPF else 0


def parse_mode(data: bytes, size: int) -> ModeData:
    if size == 10:
        length, medium, specific, flags, bd_len = struct.unpack_from(">HBBBxH", data)
        longlba = bool(flags & 0x01)
        end = min(len(data), length + 2)
    else:
        length, medium, specific, bd_len = data[0], data[1], data[2], data[3]
        longlba = False
        end = min(len(data), length + 1)
    pos = HEADER[size] + bd_len
    descriptors = data[HEADER[size] : pos]
    pages = []
    while pos + 2 <= end:
        spf = data[pos] & SPF
        if spf and pos + 4 > end:
            break
        plen = 4 + int.from_bytes(data[pos + 2 : pos + 4], "big") if spf else 2 + data[pos + 1]
        pages.append(data[pos : pos + plen])
        pos += plen
    return ModeData(data, size, length, medium, specific, longlba, bd_len, descriptors,
                    pages, pos)  # fmt: skip


def sense(lun: Lun, size: int, page: int = ALL_PAGES, *, subpage: int = 0, pc: int = 0,
          dbd: bool = False, llbaa: bool = False, alloc: int | None = None) -> CdbResult:
    return lun.cdb(sense_cdb(size, page, subpage=subpage, pc=pc, dbd=dbd, llbaa=llbaa,
                             alloc=alloc), data_in_len=BIG)  # fmt: skip


def sense_cdb(size: int, page: int = ALL_PAGES, *, subpage: int = 0, pc: int = 0,
              dbd: bool = False, llbaa: bool = False, alloc: int | None = None) -> bytes:
    if size == 6:
        return cdb.mode_sense_6(page, subpage, pc, dbd, 255 if alloc is None else alloc)
    return cdb.mode_sense_10(page, subpage, pc, dbd, BIG if alloc is None else alloc, llbaa)


def select_list(size: int, pages: bytes, descriptors: bytes = b"", longlba: bool = False) -> bytes:
    """A MODE SELECT parameter list: header (MODE DATA LENGTH, MEDIUM TYPE and DEVICE-SPECIFIC
    PARAMETER 0: reserved or unchanged for MODE SELECT), block descriptors, pages."""
    if size == 10:
        header = struct.pack(">HBBBxH", 0, 0, 0, int(longlba), len(descriptors))
    else:
        header = bytes([0, 0, 0, len(descriptors)])
    return header + descriptors + pages


def selectable(page: bytes) -> bytearray:
    """A page as MODE SENSE returned it, ready for MODE SELECT (PS is reserved there)."""
    out = bytearray(page)
    out[0] &= ~PS & 0xFF
    return out


def select(lun: Lun, size: int, data: bytes, *, pf: bool = True, sp: bool = False) -> CdbResult:
    return lun.cdb(MODE_SELECT[size](len(data), pf=pf, sp=sp), data_out=data)


def current_page(lun: Lun, code: int) -> bytes:
    data = sense(lun, 10, code, dbd=True).expect_good().data
    page = parse_mode(data, 10).page(code)
    assert page is not None, f"MODE SENSE(10) page 0x{code:02X} did not return the page"
    return page


def require_page(caps: Capabilities, code: int) -> bytes:
    if code not in caps.mode_current:
        pytest.skip(f"the device does not return mode page 0x{code:02X} for page 3Fh")
    return caps.mode_current[code]


def require_changeable(caps: Capabilities, code: int, byte: int, mask: int, name: str) -> None:
    require_page(caps, code)
    changeable = caps.mode_changeable.get(code, b"")
    if len(changeable) <= byte or not changeable[byte] & mask:
        pytest.skip(f"{name} (page 0x{code:02X} byte {byte}) is not changeable on this device")


def require_no_saving(caps: Capabilities) -> None:
    saveable = [f"0x{c:02X}" for c, p in caps.mode_current.items() if p[0] & PS]
    if saveable:
        pytest.skip(f"the device can save pages {', '.join(saveable)} (PS=1)")


def unclaimed_page(caps: Capabilities) -> int:
    for code in UNCLAIMED_PAGE_CANDIDATES:
        if code not in caps.mode_current:
            return code
    pytest.skip("the device returns every candidate page code; none is left to refuse")


def non_changeable_bit(caps: Capabilities, code: int) -> tuple[int, int]:
    """(byte, bit) of the first bit of the page the device does not let change."""
    page = caps.mode_current[code]
    changeable = caps.mode_changeable.get(code, bytes(len(page)))
    for byte in range(2, len(page)):
        for bit in range(7, -1, -1):
            if not (changeable[byte] if byte < len(changeable) else 0) >> bit & 1:
                return byte, bit
    pytest.skip(f"every bit of mode page 0x{code:02X} is changeable")


def set_d_sense(lun: Lun, on: bool) -> None:
    page = selectable(current_page(lun, PAGE_CONTROL))
    page[2] = page[2] | D_SENSE if on else page[2] & ~D_SENSE & 0xFF
    select(lun, 10, select_list(10, bytes(page))).expect_good()
    assert bool(current_page(lun, PAGE_CONTROL)[2] & D_SENSE) == on


# --- MODE SENSE: pages ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [6, 10])
def test_mode_sense_all_pages_returns_each_page_once_in_ascending_order(
    shared_lun: Lun, size: int
) -> None:
    """SPC-4 6.13.1: page 3Fh returns every supported page (subpage 00h), ascending, page 00h
    last; the pages fill MODE DATA LENGTH exactly."""
    result = sense(shared_lun, size, dbd=True).expect_good()
    mode = parse_mode(result.data, size)
    assert mode.end == len(result.data), (
        f"the pages end at byte {mode.end}, MODE DATA LENGTH says {len(result.data)}")
    codes = [page_id(p) for p in mode.pages]
    assert all(sub == 0 for _, sub in codes), f"subpages returned for subpage 00h: {codes}"
    order = [c for c, _ in codes]
    expected = sorted(order, key=lambda c: (c == 0, c))
    assert order == expected and len(set(order)) == len(order), f"page order {order}"
    assert order, "MODE SENSE page 3Fh returned no page at all"


@pytest.mark.parametrize("code", sorted(STANDARD_PAGE_LENGTH),
                         ids=[f"page-{c:02x}" for c in sorted(STANDARD_PAGE_LENGTH)])
def test_mode_sense_one_page_returns_the_page_of_all_pages(
    shared_lun: Lun, caps: Capabilities, code: int
) -> None:
    """SPC-4 6.13.1: a page asked for alone is the page 3Fh returns; a page 3Fh does not
    return is refused, INVALID FIELD IN CDB on the PAGE CODE (byte 2 bit 5)."""
    results = shared_lun.cdbs([
        (sense_cdb(6, ALL_PAGES, dbd=True), None, BIG),
        (sense_cdb(6, code, dbd=True), None, BIG),
        (sense_cdb(10, code, dbd=True), None, BIG),
    ])  # fmt: skip
    listed = parse_mode(results[0].expect_good().data, 6).page(code)
    for size, result in zip((6, 10), results[1:], strict=True):
        if listed is None:
            result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                                field=FieldPointer(True, 2, 5))
            continue
        mode = parse_mode(result.expect_good().data, size)
        assert mode.pages == [listed], (
            f"MODE SENSE({size}) page 0x{code:02X}: {[p.hex(' ') for p in mode.pages]}, "
            f"page 3Fh has {listed.hex(' ')}")


@pytest.mark.parametrize("code", sorted(STANDARD_PAGE_LENGTH),
                         ids=[f"page-{c:02x}" for c in sorted(STANDARD_PAGE_LENGTH)])
def test_mode_page_has_the_page_length_its_standard_defines(
    caps: Capabilities, code: int
) -> None:
    """SBC-4 6.5 / SPC-4 7.5.8 and 7.5 tables: Read-Write Error Recovery 0Ah, Caching 12h,
    Control 0Ah, Informational Exceptions Control 0Ah; SPF 0 for subpage 00h."""
    page = require_page(caps, code)
    assert page[0] & SPF == 0, f"page 0x{code:02X} has SPF set"
    assert page[1] == STANDARD_PAGE_LENGTH[code], (
        f"page 0x{code:02X} PAGE LENGTH 0x{page[1]:02X}, the standard says "
        f"0x{STANDARD_PAGE_LENGTH[code]:02X}")
    assert len(page) == 2 + page[1]


def test_mode_sense_unsupported_page_code_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.13.1: a page the device does not implement: ILLEGAL REQUEST, INVALID FIELD IN
    CDB, field pointer on the PAGE CODE (byte 2, bit 5)."""
    code = unclaimed_page(caps)
    results = shared_lun.cdbs([(sense_cdb(size, code), None, BIG) for size in (6, 10)])
    for result in results:
        result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                            field=FieldPointer(True, 2, 5))


@pytest.mark.parametrize("page", ["all-pages", "one-page"])
def test_mode_sense_subpage_ffh_returns_the_page_and_its_subpages(
    shared_lun: Lun, caps: Capabilities, page: str
) -> None:
    """SPC-4 6.13.1 / 7.5.7: SUBPAGE CODE FFh returns the subpage 00h pages as subpage 00h
    does, plus only SPF=1 subpages of the same page codes."""
    code = ALL_PAGES if page == "all-pages" else require_page(caps, PAGE_CACHING)[0] & 0x3F
    plain, every = shared_lun.cdbs([
        (sense_cdb(10, code, dbd=True), None, BIG),
        (sense_cdb(10, code, subpage=ALL_SUBPAGES, dbd=True), None, BIG),
    ])  # fmt: skip
    plain_pages = parse_mode(plain.expect_good().data, 10).pages
    mode = parse_mode(every.expect_good().data, 10)
    assert mode.end == len(every.data)
    subpage_0 = [p for p in mode.pages if not p[0] & SPF]
    assert subpage_0 == plain_pages, "subpage FFh changed the subpage 00h pages"
    codes = {page_id(p)[0] for p in plain_pages}
    strays = [page_id(p) for p in mode.pages if p[0] & SPF and page_id(p)[0] not in codes]
    assert not strays, f"subpages of pages not asked for: {strays}"


def test_mode_sense_unsupported_subpage_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.13.1: a subpage the device does not implement: ILLEGAL REQUEST, INVALID FIELD
    IN CDB, field pointer on the SUBPAGE CODE (byte 3)."""
    code = require_page(caps, PAGE_CACHING)[0] & 0x3F
    every = sense(shared_lun, 10, code, subpage=ALL_SUBPAGES, dbd=True).expect_good()
    offered = {page_id(p)[1] for p in parse_mode(every.data, 10).pages}
    subpage = next(s for s in range(0xFE, 0, -1) if s not in offered)
    results = shared_lun.cdbs([(sense_cdb(size, code, subpage=subpage), None, BIG)
                               for size in (6, 10)])  # fmt: skip
    for result in results:
        result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                            field=FieldPointer(True, 3, None))


# --- MODE SENSE: header and block descriptors ------------------------------------------------


@pytest.mark.parametrize("size", [6, 10])
def test_mode_data_length_counts_every_byte_after_itself(shared_lun: Lun, size: int) -> None:
    """SPC-4 7.5.5: MODE DATA LENGTH = bytes that follow it; the header, 8-byte block
    descriptor and pages are all returned; medium type 0; SBC-4 6.5.1 device-specific
    reserved bits 0."""
    result = sense(shared_lun, size).expect_good()
    data = result.data
    mode = parse_mode(data, size)
    assert mode.mode_data_length == len(data) - (2 if size == 10 else 1), (
        f"MODE DATA LENGTH {mode.mode_data_length} but {len(data)} bytes came back")
    assert result.resid == BIG - len(data)
    assert mode.end == len(data), "the pages do not end where MODE DATA LENGTH says"
    assert mode.medium_type == 0
    assert mode.device_specific & 0x6F == 0, f"reserved bits in 0x{mode.device_specific:02x}"
    assert mode.bd_length == 8, f"BLOCK DESCRIPTOR LENGTH {mode.bd_length}, expected 8"
    if size == 10:
        assert not mode.longlba
        assert data[5] == 0, "MODE SENSE(10) header byte 5 is reserved"


@pytest.mark.parametrize("size", [6, 10])
def test_mode_sense_dbd_returns_no_block_descriptor(shared_lun: Lun, size: int) -> None:
    """SPC-4 6.13.1: DBD=1: no block descriptors (BLOCK DESCRIPTOR LENGTH 0); the pages
    follow the header and are those returned with DBD=0."""
    with_bd, without = shared_lun.cdbs([
        (sense_cdb(size), None, BIG), (sense_cdb(size, dbd=True), None, BIG),
    ])  # fmt: skip
    full = parse_mode(with_bd.expect_good().data, size)
    bare = parse_mode(without.expect_good().data, size)
    assert bare.bd_length == 0, f"DBD=1 still gave BLOCK DESCRIPTOR LENGTH {bare.bd_length}"
    assert len(without.data) == HEADER[size] + len(full.page_bytes())
    assert without.data[HEADER[size] :] == full.page_bytes()
    assert bare.mode_data_length == full.mode_data_length - full.bd_length


@pytest.mark.parametrize("size", [6, 10])
def test_short_block_descriptor_matches_read_capacity(shared_lun: Lun, size: int) -> None:
    """SBC-4 6.5.2.2: short LBA block descriptor: DENSITY CODE 0, NUMBER OF LOGICAL BLOCKS
    and LOGICAL BLOCK LENGTH as READ CAPACITY(16) reports them."""
    mode_result, rc16 = shared_lun.cdbs([
        (sense_cdb(size), None, BIG), (cdb.read_capacity_16(32), None, 32),
    ])  # fmt: skip
    last, length = struct.unpack_from(">QI", rc16.expect_good().data)
    assert (last + 1, length) == (shared_lun.blocks, shared_lun.block_size)
    mode = parse_mode(mode_result.expect_good().data, size)
    assert mode.bd_length == 8
    word, length_word = SHORT_DESCRIPTOR.unpack(mode.block_descriptors)
    assert word >> 24 == 0, f"DENSITY CODE 0x{word >> 24:02x}"
    assert word & 0xFFFFFF == min(last + 1, 0xFFFFFF), (
        f"NUMBER OF LOGICAL BLOCKS {word & 0xFFFFFF}, READ CAPACITY says {last + 1}")
    assert length_word >> 24 == 0, "short block descriptor byte 4 is reserved"
    assert length_word & 0xFFFFFF == length


def test_mode_sense_10_llbaa_returns_the_long_block_descriptor(shared_lun: Lun) -> None:
    """SPC-4 6.14 / SBC-4 6.5.2.3: LLBAA=1: LONGLBA=1, BLOCK DESCRIPTOR LENGTH 16, the
    64-bit NUMBER OF LOGICAL BLOCKS and the LOGICAL BLOCK LENGTH."""
    result = sense(shared_lun, 10, llbaa=True).expect_good()
    mode = parse_mode(result.data, 10)
    assert mode.longlba, "LONGLBA not set in the MODE SENSE(10) header"
    assert mode.bd_length == 16, f"BLOCK DESCRIPTOR LENGTH {mode.bd_length}, expected 16"
    assert mode.mode_data_length == len(result.data) - 2
    blocks, density, length = LONG_DESCRIPTOR.unpack(mode.block_descriptors)
    assert (blocks, density, length) == (shared_lun.blocks, 0, shared_lun.block_size)
    assert mode.block_descriptors[9:12] == bytes(3)


def test_short_block_descriptor_saturates_the_block_count_at_ffffffh(
    make_lun, lun_spec
) -> None:
    """SBC-4 6.5.2.2: more blocks than 24 bits hold: NUMBER OF LOGICAL BLOCKS FFFFFFh in the
    short descriptor; the long descriptor (LLBAA=1) has the real count."""
    blocks = 0x1000000 + 8
    lun = make_lun(size=blocks * lun_spec.block_size)
    short6, short10, long10 = lun.cdbs([
        (sense_cdb(6), None, BIG), (sense_cdb(10), None, BIG),
        (sense_cdb(10, llbaa=True), None, BIG),
    ])  # fmt: skip
    for size, result in ((6, short6), (10, short10)):
        word, length = SHORT_DESCRIPTOR.unpack(parse_mode(result.expect_good().data,
                                                          size).block_descriptors)
        assert word & 0xFFFFFF == 0xFFFFFF, (
            f"MODE SENSE({size}) short descriptor NUMBER OF LOGICAL BLOCKS "
            f"0x{word & 0xFFFFFF:06x}, expected FFFFFFh for {blocks} blocks")
        assert length & 0xFFFFFF == lun.block_size
    count, _, length = LONG_DESCRIPTOR.unpack(parse_mode(long10.expect_good().data,
                                                         10).block_descriptors)
    assert (count, length) == (blocks, lun.block_size)


# --- MODE SENSE: page control ----------------------------------------------------------------


def test_changeable_values_mark_only_bits_mode_select_can_change(
    lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.13.3: PC=01b marks with ones exactly the bits that may be changed: MODE
    SELECT of each bit marked changeable succeeds and MODE SENSE then shows it."""
    before = parse_mode(sense(lun, 10, dbd=True).expect_good().data, 10)
    mask = parse_mode(sense(lun, 10, pc=1, dbd=True).expect_good().data, 10)
    assert [page_id(p) for p in mask.pages] == [page_id(p) for p in before.pages]
    batch, what = [], []
    for page, changeable in zip(before.pages, mask.pages, strict=True):
        assert (changeable[0] & 0x7F, changeable[1]) == (page[0] & 0x7F, page[1])
        for byte in range(2, len(page)):
            for bit in range(8):
                if changeable[byte] >> bit & 1:
                    flipped = selectable(page)
                    flipped[byte] ^= 1 << bit
                    batch += [(MODE_SELECT[10](8 + len(page)), select_list(10, bytes(flipped)),
                               0),
                              (sense_cdb(10, page[0] & 0x3F, dbd=True), None, BIG),
                              (MODE_SELECT[10](8 + len(page)),
                               select_list(10, bytes(selectable(page))), 0)]
                    what.append((page[0] & 0x3F, byte, bit, bytes(flipped)))
    if not batch:
        pytest.skip("the device marks no mode page bit changeable")
    results = lun.cdbs(batch)
    for i, (code, byte, bit, flipped) in enumerate(what):
        change, shown, restore = results[3 * i : 3 * i + 3]
        where = f"page 0x{code:02X} byte {byte} bit {bit} (marked changeable)"
        assert change.good, f"MODE SELECT of {where} refused\n{change.describe()}"
        page = parse_mode(shown.expect_good().data, 10).page(code)
        assert page is not None and page[2:] == flipped[2:], f"MODE SENSE does not show {where}"
        assert restore.good, f"MODE SELECT restoring {where} refused\n{restore.describe()}"


def test_default_values_do_not_follow_mode_select(lun: Lun, caps: Capabilities) -> None:
    """SPC-4 6.13.4 / 6.13.6: after power on (saving unsupported) the current values are the
    default values; MODE SELECT changes the current values, not PC=10b default values."""
    require_no_saving(caps)
    code = next((c for c, m in caps.mode_changeable.items() if any(m[2:])), None)
    if code is None:
        pytest.skip("the device marks no mode page bit changeable")
    default, current = lun.cdbs([
        (sense_cdb(10, pc=2, dbd=True), None, BIG), (sense_cdb(10, dbd=True), None, BIG),
    ])  # fmt: skip
    defaults = parse_mode(default.expect_good().data, 10)
    assert defaults.pages == parse_mode(current.expect_good().data, 10).pages, (
        "a fresh LUN's current values differ from its default values")
    page = selectable(defaults.page(code))  # type: ignore[arg-type]
    mask = caps.mode_changeable[code]
    byte = next(i for i in range(2, len(mask)) if mask[i])
    page[byte] ^= 1 << (mask[byte].bit_length() - 1)
    select(lun, 10, select_list(10, bytes(page))).expect_good()
    default_after, current_after = lun.cdbs([
        (sense_cdb(10, code, pc=2, dbd=True), None, BIG),
        (sense_cdb(10, code, dbd=True), None, BIG),
    ])  # fmt: skip
    assert parse_mode(current_after.expect_good().data, 10).pages[0][2:] == page[2:]
    assert parse_mode(default_after.expect_good().data, 10).pages == [defaults.page(code)], (
        "MODE SELECT changed the default values")


@pytest.mark.parametrize("size", [6, 10])
def test_mode_sense_saved_values_without_saving_is_saving_parameters_not_supported(
    shared_lun: Lun, caps: Capabilities, size: int
) -> None:
    """SPC-4 6.13.5: PC=11b on a device that cannot save pages: ILLEGAL REQUEST, SAVING
    PARAMETERS NOT SUPPORTED (39/00), field pointer on PC (byte 2 bit 7)."""
    require_no_saving(caps)
    sense(shared_lun, size, pc=3).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED,
        field=FieldPointer(True, 2, 7))


# --- MODE SENSE: allocation length ------------------------------------------------------------


@pytest.mark.parametrize(("size", "alloc"), [(6, 0), (6, 4), (6, 12), (10, 0), (10, 8), (10, 20)],
                         ids=["6-alloc0", "6-alloc4", "6-alloc12", "10-alloc0", "10-alloc8",
                              "10-alloc20"])  # fmt: skip
def test_mode_sense_allocation_length_truncates_the_answer(
    shared_lun: Lun, size: int, alloc: int
) -> None:
    """SPC-4 4.2.5.6 / 6.13: the answer is cut at ALLOCATION LENGTH (the header still says
    the full MODE DATA LENGTH); the buffer beyond it stays untransferred (residual)."""
    # ALLOCATION LENGTH 0 gets no buffer: target_core_user (6.1) ignores a READ_LEN of 0
    # and returns the whole buffer, so "nothing transferred" cannot be told from a buffer.
    buffer = 64 if alloc else 0
    full, cut = shared_lun.cdbs([
        (sense_cdb(size), None, BIG), (sense_cdb(size, alloc=alloc), None, buffer),
    ])  # fmt: skip
    whole = full.expect_good().data
    assert len(whole) > alloc
    cut.expect_good()
    assert cut.data == whole[:alloc], f"{cut.data.hex(' ')} != {whole[:alloc].hex(' ')}"
    assert cut.resid == buffer - alloc


# --- MODE SELECT ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [6, 10])
def test_mode_select_round_trips_the_write_cache_enable_bit(
    lun: Lun, caps: Capabilities, size: int
) -> None:
    """SBC-4 6.5.6 / SPC-4 6.11: WCE is changeable: MODE SELECT WCE=1 then MODE SENSE shows
    1, WCE=0 shows 0; nothing else in the page moves."""
    require_changeable(caps, PAGE_CACHING, 2, WCE, "WCE")
    page = selectable(current_page(lun, PAGE_CACHING))
    batch, wanted = [], []
    for wce in (1, 0, 1, 0):
        page[2] = (page[2] & ~WCE & 0xFF) | (WCE if wce else 0)
        data = select_list(size, bytes(page))
        batch += [(MODE_SELECT[size](len(data)), data, 0),
                  (sense_cdb(size, PAGE_CACHING, dbd=True), None, BIG)]
        wanted.append(bytes(page))
    results = lun.cdbs(batch)
    for i, expected in enumerate(wanted):
        results[2 * i].expect_good()
        shown = parse_mode(results[2 * i + 1].expect_good().data, size).page(PAGE_CACHING)
        assert shown is not None
        assert shown[2] & WCE == expected[2] & WCE, (
            f"WCE={expected[2] & WCE and 1} selected, MODE SENSE shows byte 2 = {shown[2]:#04x}")
        assert shown[2:] == expected[2:], f"{shown.hex(' ')} != {expected.hex(' ')}"


@pytest.mark.parametrize("size", [6, 10])
def test_mode_select_of_a_non_changeable_bit_is_refused_and_changes_nothing(
    shared_lun: Lun, caps: Capabilities, size: int
) -> None:
    """SPC-4 6.11 / 7.5.7: a field changed that PC=01b marks not changeable: ILLEGAL REQUEST,
    INVALID FIELD IN PARAMETER LIST, field pointer (C/D=0) on that byte and bit of the
    parameter list; no field of the page changes."""
    code = PAGE_CACHING if PAGE_CACHING in caps.mode_current else min(caps.mode_current or [0])
    require_page(caps, code)
    byte, bit = non_changeable_bit(caps, code)
    before = current_page(shared_lun, code)
    page = selectable(before)
    page[byte] ^= 1 << bit
    mask = caps.mode_changeable.get(code, b"")
    allowed = next(((i, m) for i, m in enumerate(mask) if i >= 2 and m), None)
    if allowed is not None:  # also ask for a legal change: it must not happen either
        page[allowed[0]] ^= 1 << (allowed[1].bit_length() - 1)
    data = select_list(size, bytes(page))
    select(shared_lun, size, data).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field=FieldPointer(False, HEADER[size] + byte, bit))
    assert current_page(shared_lun, code) == before, "the refused MODE SELECT changed the page"


def test_mode_select_with_a_wrong_page_length_is_invalid_field_in_parameter_list(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 7.5.7: PAGE LENGTH must be the length the device returns: ILLEGAL REQUEST,
    INVALID FIELD IN PARAMETER LIST, field pointer on the PAGE LENGTH byte; nothing changes."""
    page = selectable(require_page(caps, PAGE_CACHING))
    before = current_page(shared_lun, PAGE_CACHING)
    short = bytes(page[:1]) + bytes([page[1] - 2]) + bytes(page[2:-2])
    select(shared_lun, 10, select_list(10, short)).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field=FieldPointer(False, 8 + 1, None))
    assert current_page(shared_lun, PAGE_CACHING) == before


@pytest.mark.parametrize("cut", ["inside-the-header", "inside-a-page"])
def test_mode_select_truncated_parameter_list_is_parameter_list_length_error(
    shared_lun: Lun, caps: Capabilities, cut: str
) -> None:
    """SPC-4 6.11: a PARAMETER LIST LENGTH that cuts the header or a page short: ILLEGAL
    REQUEST, PARAMETER LIST LENGTH ERROR (1A/00); nothing changes."""
    page = selectable(require_page(caps, PAGE_CACHING))
    before = current_page(shared_lun, PAGE_CACHING)
    if caps.mode_changeable.get(PAGE_CACHING, b"\0\0\0")[2] & WCE:
        page[2] ^= WCE
    data = select_list(10, bytes(page))
    data = data[:5] if cut == "inside-the-header" else data[: 8 + len(page) - 4]
    select(shared_lun, 10, data).expect_check(SenseKey.ILLEGAL_REQUEST,
                                       Asc.PARAMETER_LIST_LENGTH_ERROR)
    assert current_page(shared_lun, PAGE_CACHING) == before


@pytest.mark.parametrize("size", [6, 10])
def test_mode_select_pf_0_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, size: int
) -> None:
    """SPC-4 6.11: PF=0 (vendor-specific page format) on a device that only takes the SPC
    page format: ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer byte 1 bit 4."""
    page = selectable(require_page(caps, PAGE_CACHING))  # unchanged: harmless if accepted
    select(shared_lun, size, select_list(size, bytes(page)), pf=False).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(True, 1, 4))


@pytest.mark.parametrize("size", [6, 10])
def test_mode_select_sp_1_without_saving_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, size: int
) -> None:
    """SPC-4 6.11: SP=1 on a device that cannot save pages: ILLEGAL REQUEST, INVALID FIELD
    IN CDB, field pointer byte 1 bit 0."""
    require_no_saving(caps)
    page = selectable(require_page(caps, PAGE_CACHING))
    select(shared_lun, size, select_list(size, bytes(page)), sp=True).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(True, 1, 0))


def test_mode_select_parameter_list_length_0_is_good(shared_lun: Lun) -> None:
    """SPC-4 6.11: PARAMETER LIST LENGTH 0: no data is transferred, not an error."""
    shared_lun.cdb(cdb.mode_select_10(0)).expect_good()
    shared_lun.cdb(cdb.mode_select_6(0)).expect_good()


def test_mode_select_applies_no_page_when_a_later_page_is_invalid(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.11: a parameter list with an invalid page is refused as a whole (INVALID
    FIELD IN PARAMETER LIST on the bad field): the valid page before it is not applied."""
    require_changeable(caps, PAGE_CACHING, 2, WCE, "WCE")
    second = next((c for c in sorted(caps.mode_current) if c != PAGE_CACHING), None)
    if second is None:
        pytest.skip("the device returns no mode page besides the Caching page")
    byte, bit = non_changeable_bit(caps, second)
    caching_before = current_page(shared_lun, PAGE_CACHING)
    other_before = current_page(shared_lun, second)
    first = selectable(caching_before)
    first[2] ^= WCE
    bad = selectable(other_before)
    bad[byte] ^= 1 << bit
    select(shared_lun, 10, select_list(10, bytes(first + bad))).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field=FieldPointer(False, 8 + len(first) + byte, bit))
    assert current_page(shared_lun, PAGE_CACHING) == caching_before, (
        "the Caching page was applied although the list was refused")
    assert current_page(shared_lun, second) == other_before


@pytest.mark.parametrize("form", ["short", "long"])
def test_mode_select_block_descriptor_restating_the_geometry_is_accepted(
    shared_lun: Lun, form: str
) -> None:
    """SBC-4 6.5.2: a block descriptor that restates the current NUMBER OF LOGICAL BLOCKS and
    LOGICAL BLOCK LENGTH (DENSITY CODE 0) is accepted and changes nothing."""
    lun = shared_lun
    if form == "short":
        descriptor = SHORT_DESCRIPTOR.pack(min(lun.blocks, 0xFFFFFF), lun.block_size)
    else:
        descriptor = LONG_DESCRIPTOR.pack(lun.blocks, 0, lun.block_size)
    data = select_list(10, b"", descriptor, longlba=form == "long")
    select(lun, 10, data).expect_good()
    data = lun.cdb(cdb.read_capacity_16(32), data_in_len=32).expect_good().data
    assert struct.unpack_from(">QI", data) == (lun.blocks - 1, lun.block_size)


def test_mode_select_block_descriptor_with_another_block_length_is_refused(
    shared_lun: Lun,
) -> None:
    """SBC-4 6.5.2.2: a LOGICAL BLOCK LENGTH the device cannot switch to: ILLEGAL REQUEST,
    INVALID FIELD IN PARAMETER LIST on that field (parameter list byte 8 + 5); the block
    length and the data stay as they were."""
    lun = shared_lun
    other = 4096 if lun.block_size != 4096 else 512
    lun.cdb(cdb.write_10(0, 8), data_out=pattern(0, 8, lun.block_size, seed=7)).expect_good()
    descriptor = SHORT_DESCRIPTOR.pack(min(lun.blocks, 0xFFFFFF), other)
    select(lun, 10, select_list(10, b"", descriptor)).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field=FieldPointer(False, 8 + 5, None))
    rc, back = lun.cdbs([
        (cdb.read_capacity_16(32), None, 32), (cdb.read_10(0, 8), None, 8 * lun.block_size),
    ])  # fmt: skip
    assert struct.unpack_from(">QI", rc.expect_good().data) == (lun.blocks - 1, lun.block_size)
    assert_blocks_equal(back.expect_good().data, pattern(0, 8, lun.block_size, seed=7),
                        lun.block_size)


# --- D_SENSE: the sense data format ------------------------------------------------------------


def test_d_sense_1_makes_check_condition_return_descriptor_sense(
    lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 7.5.8 / 4.5.2: D_SENSE=1: CHECK CONDITION sense data in descriptor format (72h)
    with the same key and ASC/ASCQ, an ILLEGAL REQUEST field pointer in a sense key specific
    descriptor."""
    require_changeable(caps, PAGE_CONTROL, 2, D_SENSE, "D_SENSE")
    set_d_sense(lun, True)
    beyond, bad_page = lun.cdbs([
        (cdb.read_10(lun.blocks, 1), None, lun.block_size),
        (sense_cdb(10, unclaimed_page(caps)), None, BIG),
    ])  # fmt: skip
    beyond.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE, descriptor_format=True)
    assert beyond.sense[0] == 0x72, f"response code 0x{beyond.sense[0]:02x}, expected 72h"
    bad_page.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                          field=FieldPointer(True, 2, 5), descriptor_format=True)
    assert bad_page.decoded is not None
    assert [t for t, _ in bad_page.decoded.descriptors] == [0x02], (
        "the field pointer belongs in exactly one sense key specific descriptor (02h)")


def test_d_sense_0_switches_back_to_fixed_sense(lun: Lun, caps: Capabilities) -> None:
    """SPC-4 7.5.8 / 4.5.3: D_SENSE=0 after 1: fixed format again (70h, 18 bytes, ADDITIONAL
    SENSE LENGTH 0Ah)."""
    require_changeable(caps, PAGE_CONTROL, 2, D_SENSE, "D_SENSE")
    set_d_sense(lun, True)
    set_d_sense(lun, False)
    result = lun.cdb(cdb.read_10(lun.blocks, 1), data_in_len=lun.block_size)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE, descriptor_format=False)
    assert result.sense[0] == 0x70 and result.sense[7] == 0x0A and len(result.sense) == 18, (
        f"fixed sense expected: {result.sense.hex(' ')}")


@pytest.mark.parametrize("command", ["compare-and-write", "verify-10"])
def test_d_sense_1_miscompare_carries_information_in_an_information_descriptor(
    lun: Lun, caps: Capabilities, command: str
) -> None:
    """SPC-4 4.5.2.2 / SBC-4 (COMPARE AND WRITE, VERIFY BYTCHK=1): with D_SENSE=1 a
    MISCOMPARE (1D/00) reports the offset of the first differing byte in an information
    descriptor (VALID set)."""
    require_changeable(caps, PAGE_CONTROL, 2, D_SENSE, "D_SENSE")
    caps.require(Opcode.COMPARE_AND_WRITE if command == "compare-and-write" else Opcode.VERIFY_10)
    bs = lun.block_size
    on_medium = pattern(20, 1, bs, seed=3)
    lun.cdb(cdb.write_10(20, 1), data_out=on_medium).expect_good()
    wrong = bytearray(on_medium)
    offset = bs // 2 + 5
    wrong[offset] ^= 0x5A
    set_d_sense(lun, True)
    if command == "compare-and-write":
        result = lun.cdb(cdb.compare_and_write(20, 1), data_out=bytes(wrong) + bytes(bs))
    else:
        result = lun.cdb(cdb.verify_10(20, 1, bytchk=1), data_out=bytes(wrong))
    result.expect_check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=offset,
                        descriptor_format=True)
    assert result.decoded is not None
    assert 0x00 in [t for t, _ in result.decoded.descriptors]
    back = lun.cdb(cdb.read_10(20, 1), data_in_len=bs).expect_good()
    assert_blocks_equal(back.data, on_medium, bs, first_lba=20)
