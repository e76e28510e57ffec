"""Vital product data (INQUIRY with EVPD=1, SPC-4 6.6.1 and 7.8): the Supported VPD Pages
page (0x00) is sorted and truthful (every listed page answers with its own PAGE CODE and a
consistent PAGE LENGTH, every unlisted page code is refused), the Unit Serial Number page
(0x80), the Device Identification page (0x83, SPC-4 7.8.6: an NAA logical-unit designator,
designator lengths, PIV/association rules, the T10 vendor ID), identity that is stable per
LUN and unique across LUNs, and the allocation length rule (SPC-4 4.2.5.6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult, expect_invalid_field_in_cdb
from tcmu_harness.lun import Lun

pytestmark = pytest.mark.vm

_ALLOC = 4096
_SUPPORTED_PAGES = 0x00
_UNIT_SERIAL = 0x80
_DEVICE_IDENTIFICATION = 0x83

# Designator fields (SPC-4 7.8.6.1).
_CODE_SET_BINARY, _CODE_SET_ASCII, _CODE_SET_UTF8 = 1, 2, 3
_ASSOC_LOGICAL_UNIT, _ASSOC_TARGET_PORT, _ASSOC_TARGET_DEVICE = 0, 1, 2
_TYPE_VENDOR, _TYPE_T10, _TYPE_EUI64, _TYPE_NAA = 0, 1, 2, 3
_TYPE_RELATIVE_PORT, _TYPE_PORT_GROUP, _TYPE_LU_GROUP, _TYPE_MD5, _TYPE_SCSI_NAME = 4, 5, 6, 7, 8
_NAA_LENGTHS = {2: 8, 3: 8, 5: 8, 6: 16}  # NAA field -> designator length


@dataclasses.dataclass(frozen=True)
class Designator:
    offset: int  # of the descriptor within the page
    protocol: int
    code_set: int
    piv: bool
    association: int
    type: int
    identifier: bytes
    raw: bytes

    def __str__(self) -> str:
        return (f"designator at byte {self.offset}: type {self.type}, association "
                f"{self.association}, code set {self.code_set}, PIV {int(self.piv)}, "
                f"{len(self.identifier)} bytes {self.identifier.hex(' ')}")  # fmt: skip


def _designators(page: bytes) -> tuple[list[Designator], list[str]]:
    """The designation descriptors of a Device Identification page, and what is wrong
    with its framing (a descriptor running past PAGE LENGTH, a stray tail)."""
    end = 4 + int.from_bytes(page[2:4], "big")
    problems = []
    if end != len(page):
        problems.append(f"PAGE LENGTH says {end} bytes, {len(page)} were returned")
        end = min(end, len(page))
    found, pos = [], 4
    while pos < end:
        if pos + 4 > end:
            problems.append(f"{end - pos} stray bytes at offset {pos}")
            break
        length = page[pos + 3]
        if pos + 4 + length > end:
            problems.append(f"designator at byte {pos} (length {length}) runs past the page "
                            f"end at {end}")  # fmt: skip
            break
        found.append(Designator(
            offset=pos, protocol=page[pos] >> 4, code_set=page[pos] & 0x0F,
            piv=bool(page[pos + 1] & 0x80), association=(page[pos + 1] >> 4) & 0x3,
            type=page[pos + 1] & 0x0F, identifier=page[pos + 4 : pos + 4 + length],
            raw=page[pos : pos + 4 + length],
        ))  # fmt: skip
        pos += 4 + length
    return found, problems


def _vpd(lun: Lun, page: int, alloc_len: int = _ALLOC, buffer: int = _ALLOC) -> CdbResult:
    return lun.cdb(cdb.inquiry(evpd=True, page=page, alloc_len=alloc_len), data_in_len=buffer)


def _listed(caps: Capabilities) -> tuple[int, ...]:
    if not caps.vpd_pages:
        pytest.fail("the Supported VPD Pages page (0x00), which every device serves "
                    f"(SPC-4 7.8), was not returned:\n{caps.answers['vpd_00'].describe()}")
    return caps.vpd_pages


def _printable(text: bytes) -> bool:
    return all(0x20 <= b <= 0x7E for b in text)


# --- Supported VPD Pages (0x00) ----------------------------------------------------------


def test_supported_vpd_pages_are_listed_in_ascending_order_without_repeats(
    caps: Capabilities,
) -> None:
    """SPC-4 7.8 (Supported VPD Pages): the page codes are listed in ascending order, each
    once."""
    pages = _listed(caps)
    assert list(pages) == sorted(set(pages)), (
        f"page list {[f'{p:02x}' for p in pages]} is not strictly ascending")


def test_supported_vpd_pages_include_00_and_83(caps: Capabilities) -> None:
    """SPC-4 7.8.1: the Supported VPD Pages (0x00) and Device Identification (0x83) pages
    are mandatory, so both are listed."""
    pages = _listed(caps)
    assert _SUPPORTED_PAGES in pages and _DEVICE_IDENTIFICATION in pages, (
        f"page list {[f'{p:02x}' for p in pages]}")


def test_every_listed_vpd_page_answers_with_its_page_code_and_page_length(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 7.8.1: every page the device lists answers GOOD with the peripheral byte of
    standard INQUIRY, its own PAGE CODE, and exactly PAGE LENGTH + 4 bytes (the rest of a
    larger buffer is residual)."""
    pages = _listed(caps)
    results = shared_lun.cdbs([(cdb.inquiry(evpd=True, page=p, alloc_len=_ALLOC), None, _ALLOC)
                               for p in pages])  # fmt: skip
    problems = []
    for page, result in zip(pages, results, strict=True):
        data = result.data
        if not result.good:
            problems.append(f"page 0x{page:02x} is listed but refused:\n{result.describe()}")
        elif len(data) < 4:
            problems.append(f"page 0x{page:02x}: {len(data)} bytes, shorter than its header")
        elif data[1] != page:
            problems.append(f"page 0x{page:02x} answers with PAGE CODE 0x{data[1]:02x}")
        elif caps.inquiry and data[0] != caps.inquiry[0]:
            problems.append(f"page 0x{page:02x}: peripheral byte 0x{data[0]:02x}, standard "
                            f"INQUIRY says 0x{caps.inquiry[0]:02x}")  # fmt: skip
        elif len(data) != min(_ALLOC, 4 + int.from_bytes(data[2:4], "big")):
            problems.append(f"page 0x{page:02x}: PAGE LENGTH {int.from_bytes(data[2:4], 'big')}"
                            f" but {len(data)} bytes returned")  # fmt: skip
        elif result.resid != _ALLOC - len(data):
            problems.append(f"page 0x{page:02x}: residual {result.resid} for {len(data)} "
                            f"bytes in a {_ALLOC}-byte buffer")  # fmt: skip
    assert not problems, "\n".join(problems)


def test_unlisted_vpd_pages_are_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 6.6.1: a VPD page the device does not support (every page code 00h-FFh not in
    its Supported VPD Pages list) is ILLEGAL REQUEST, INVALID FIELD IN CDB with the field
    pointer on PAGE CODE (byte 2)."""
    unlisted = [p for p in range(256) if p not in _listed(caps)]
    results = shared_lun.cdbs([(cdb.inquiry(evpd=True, page=p, alloc_len=255), None, 255)
                               for p in unlisted])  # fmt: skip
    wrong = []
    for page, result in zip(unlisted, results, strict=True):
        try:
            expect_invalid_field_in_cdb(result, 2, None)
        except AssertionError as exc:
            wrong.append(f"page 0x{page:02x}: {exc}")
    assert not wrong, f"{len(wrong)} unlisted pages not refused correctly:\n" + "\n".join(
        wrong[:5])


@pytest.mark.parametrize(
    ("page", "alloc_len"),
    [(0x00, 0), (0x00, 4), (0x00, 5), (0x80, 2), (0x80, 6), (0x83, 8), (0x83, 13),
     (0x83, 300)],
)  # fmt: skip
def test_vpd_allocation_length_limits_the_transfer(
    shared_lun: Lun, caps: Capabilities, page: int, alloc_len: int
) -> None:
    """SPC-4 4.2.5.6 and 6.6.1: a VPD page is cut to ALLOCATION LENGTH (2 bytes) in a larger
    buffer: exactly the first min(ALLOCATION LENGTH, page size) bytes, the rest residual;
    0 transfers nothing."""
    full = caps.require_vpd(page)
    buffer = alloc_len + 100
    result = _vpd(shared_lun, page, alloc_len, buffer).expect_good()
    expected = full[:alloc_len]
    if not expected and result.resid == 0 and len(result.data) == buffer:
        return  # TCMU cannot report a zero-byte transfer: the kernel returns the buffer
    assert len(result.data) == len(expected), (
        f"{len(result.data)} bytes for ALLOCATION LENGTH {alloc_len}, expected {len(expected)}")
    assert result.data == expected
    assert result.resid == buffer - len(expected)


# --- Unit Serial Number (0x80) -----------------------------------------------------------


def test_unit_serial_number_is_right_aligned_ascii_of_page_length_bytes(
    caps: Capabilities,
) -> None:
    """SPC-4 7.8 (Unit Serial Number): PRODUCT SERIAL NUMBER is PAGE LENGTH bytes of
    right-aligned printable ASCII (no NUL terminator or padding after it)."""
    page = caps.require_vpd(_UNIT_SERIAL)
    serial = page[4 : 4 + int.from_bytes(page[2:4], "big")]
    assert serial, "PAGE LENGTH 0: no serial number bytes"
    assert _printable(serial), f"serial {serial!r} is not printable ASCII"
    if serial.strip(b" "):
        assert not serial.endswith(b" "), f"serial {serial!r} is not right-aligned"


def test_unit_serial_number_is_the_same_on_every_read(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SPC-4 7.8 (Unit Serial Number): the serial number identifies the logical unit, so
    every read returns the same bytes."""
    first = caps.require_vpd(_UNIT_SERIAL)
    again = shared_lun.cdbs([(cdb.inquiry(evpd=True, page=_UNIT_SERIAL, alloc_len=_ALLOC),
                              None, _ALLOC)] * 3)  # fmt: skip
    assert [r.expect_good().data for r in again] == [first] * 3


def test_identity_survives_a_handler_restart(lun: Lun) -> None:
    """SPC-4 7.8.6, 7.8 (Unit Serial Number): the serial number and the logical-unit
    designators name the logical unit, not the handler process: they are the same after
    the handler is restarted on the same backstore."""
    def identity() -> tuple[bytes, bytes]:
        serial, ident = lun.cdbs([
            (cdb.inquiry(evpd=True, page=_UNIT_SERIAL, alloc_len=_ALLOC), None, _ALLOC),
            (cdb.inquiry(evpd=True, page=_DEVICE_IDENTIFICATION, alloc_len=_ALLOC), None,
             _ALLOC),
        ])  # fmt: skip
        ident.expect_good()
        return serial.data if serial.good else b"", _logical_unit_part(ident.data)

    before = identity()
    lun.restart_handler()
    after = identity()
    assert after == before, f"identity changed across a restart: {before} -> {after}"


def test_two_luns_have_different_serial_numbers_and_naa_designators(
    shared_lun: Lun, caps: Capabilities, make_lun: Callable[..., Lun]
) -> None:
    """SPC-4 7.8.6.1, 7.8 (Unit Serial Number): designators of logical units are unique,
    so two LUNs served by the same handler differ in serial number and NAA designator."""
    other = make_lun()
    pages = []
    for page in (_UNIT_SERIAL, _DEVICE_IDENTIFICATION):
        if page not in caps.vpd:
            continue
        mine = caps.vpd[page]
        theirs = _vpd(other, page).expect_good().data
        pages.append(page)
        if page == _UNIT_SERIAL:
            assert mine != theirs, f"both LUNs report serial {mine[4:]!r}"
        else:
            naa = _naa_identifiers(mine)
            assert naa, "no logical-unit NAA designator"
            shared = naa & _naa_identifiers(theirs)
            assert not shared, f"both LUNs report NAA {[n.hex() for n in shared]}"
    if not pages:
        pytest.skip("neither page 0x80 nor 0x83 is listed")


# --- Device Identification (0x83) --------------------------------------------------------


@pytest.fixture(scope="module")
def identification(caps: Capabilities) -> list[Designator]:
    designators, _ = _designators(caps.require_vpd(_DEVICE_IDENTIFICATION))
    return designators


def test_device_identification_designators_fill_the_page_exactly(caps: Capabilities) -> None:
    """SPC-4 7.8.6.1: the designation descriptors, each 4 bytes plus DESIGNATOR LENGTH,
    exactly fill PAGE LENGTH."""
    _, problems = _designators(caps.require_vpd(_DEVICE_IDENTIFICATION))
    assert not problems, "; ".join(problems)


def test_device_identification_has_a_logical_unit_naa_designator(
    identification: list[Designator],
) -> None:
    """SPC-4 7.8.6.1, 7.8.6.5: at least one designator with ASSOCIATION 00b (logical unit),
    type 3 (NAA), code set 1 (binary), an NAA field of 2, 3, 5 or 6 and the length that
    NAA format has (8 bytes; 16 for NAA 6): the name Linux and multipath use for a disk."""
    problems = []
    for d in identification:
        if (d.association, d.type) != (_ASSOC_LOGICAL_UNIT, _TYPE_NAA):
            continue
        naa = d.identifier[0] >> 4 if d.identifier else None
        if d.code_set != _CODE_SET_BINARY:
            problems.append(f"{d}: code set is not binary")
        elif naa not in _NAA_LENGTHS:
            problems.append(f"{d}: NAA {naa} is not 2, 3, 5 or 6")
        elif len(d.identifier) != _NAA_LENGTHS[naa]:
            problems.append(f"{d}: NAA {naa} is {_NAA_LENGTHS[naa]} bytes long")
        else:
            return
    pytest.fail("no valid logical-unit NAA designator: "
                + ("; ".join(problems) or "; ".join(map(str, identification)) or "none"))


def test_device_identification_designator_fields_are_consistent(
    identification: list[Designator],
) -> None:
    """SPC-4 7.8.6.1-7.8.6.11: ASSOCIATION is not the reserved 11b, PIV is 0 for logical
    unit designators (PROTOCOL IDENTIFIER is then not checked), DESIGNATOR TYPE and CODE SET
    are defined values, ASCII designators are printable, and each type has the code set,
    length and association its clause requires."""
    problems = []
    for d in identification:
        problems += [f"{d}: {p}" for p in _designator_problems(d)]
    assert not problems, "\n".join(problems)


def test_t10_vendor_id_designator_starts_with_the_inquiry_vendor(
    identification: list[Designator], caps: Capabilities
) -> None:
    """SPC-4 7.8.6.4: a T10 vendor ID based designator (type 1) starts with the 8-byte T10
    VENDOR IDENTIFICATION, the same as in standard INQUIRY data."""
    t10 = [d for d in identification if d.type == _TYPE_T10]
    if not t10:
        pytest.skip("the device reports no T10 vendor ID based designator")
    vendor = caps.inquiry[8:16]
    for d in t10:
        assert d.identifier[:8] == vendor, (
            f"{d}: vendor {d.identifier[:8]!r}, standard INQUIRY says {vendor!r}")


def test_device_identification_designators_do_not_repeat(
    identification: list[Designator],
) -> None:
    """SPC-4 7.8.6.1: each designation descriptor names the logical unit, a port or the
    target device once: no two descriptors are the same."""
    raws = [d.raw for d in identification]
    repeated = {r.hex(" ") for r in raws if raws.count(r) > 1}
    assert not repeated, f"repeated designators: {sorted(repeated)}"


def _designator_problems(d: Designator) -> list[str]:
    problems = []
    if d.association == 3:
        problems.append("ASSOCIATION 11b is reserved")
    if d.association == _ASSOC_LOGICAL_UNIT and d.piv:
        problems.append("PIV is set in a logical unit designator")
    if d.type > _TYPE_SCSI_NAME:
        problems.append(f"DESIGNATOR TYPE {d.type} is reserved")
    if d.code_set not in (_CODE_SET_BINARY, _CODE_SET_ASCII, _CODE_SET_UTF8):
        problems.append(f"CODE SET {d.code_set} is reserved")
    if d.code_set == _CODE_SET_ASCII and not _printable(d.identifier):
        problems.append("ASCII designator with non-printable bytes")
    if not d.identifier:
        problems.append("empty designator")
    # type -> (code sets, lengths (None: any), associations (None: any))
    rules: dict[int, tuple[set[int], set[int] | None, set[int] | None]] = {
        _TYPE_T10: ({_CODE_SET_ASCII}, None, None),
        _TYPE_EUI64: ({_CODE_SET_BINARY}, {8, 12, 16}, None),
        _TYPE_NAA: ({_CODE_SET_BINARY}, {8, 16}, None),
        _TYPE_RELATIVE_PORT: ({_CODE_SET_BINARY}, {4}, {_ASSOC_TARGET_PORT}),
        _TYPE_PORT_GROUP: ({_CODE_SET_BINARY}, {4}, {_ASSOC_TARGET_PORT}),
        _TYPE_LU_GROUP: ({_CODE_SET_BINARY}, {4}, {_ASSOC_LOGICAL_UNIT}),
        _TYPE_MD5: ({_CODE_SET_BINARY}, {16}, {_ASSOC_LOGICAL_UNIT}),
        _TYPE_SCSI_NAME: ({_CODE_SET_UTF8}, None, None),
    }
    if d.type in rules:
        code_sets, lengths, associations = rules[d.type]
        if d.code_set not in code_sets:
            problems.append(f"type {d.type} needs code set {sorted(code_sets)}")
        if lengths is not None and len(d.identifier) not in lengths:
            problems.append(f"type {d.type} is {sorted(lengths)} bytes long")
        if associations is not None and d.association not in associations:
            problems.append(f"type {d.type} needs association {sorted(associations)}")
    if d.type == _TYPE_T10 and len(d.identifier) < 8:
        problems.append("T10 vendor ID designator shorter than the 8-byte vendor")
    if d.type == _TYPE_SCSI_NAME and len(d.identifier) % 4:
        problems.append("SCSI name string designator length is not a multiple of 4")
    return problems


def _logical_unit_part(page: bytes) -> bytes:
    """The logical-unit designators of a Device Identification page (port designators may
    legitimately differ between paths)."""
    designators, _ = _designators(page)
    return b"".join(d.raw for d in designators if d.association == _ASSOC_LOGICAL_UNIT)


def _naa_identifiers(page: bytes) -> set[bytes]:
    designators, _ = _designators(page)
    return {d.identifier for d in designators
            if (d.association, d.type) == (_ASSOC_LOGICAL_UNIT, _TYPE_NAA)}  # fmt: skip
