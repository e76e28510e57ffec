"""INQUIRY, standard data (SPC-4 6.6.1, 6.6.2): the fixed fields (peripheral qualifier and
device type, RMB, VERSION, RESPONSE DATA FORMAT, NORMACA), ADDITIONAL LENGTH against what
is returned, the ASCII identification fields, the version descriptors, the allocation
length rule (SPC-4 4.2.5.6) and the CDB fields that must be refused (a PAGE CODE without
EVPD, reserved bits). VPD pages are in test_vpd.py.
"""

from __future__ import annotations

import struct

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult, expect_invalid_field_in_cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import PeripheralType

pytestmark = pytest.mark.vm

_NORMACA = 0x20  # byte 3 bit 5
_NACA = 0x04  # CONTROL byte bit 2
_VERSION_DESCRIPTORS = slice(58, 74)  # eight 2-byte descriptors
_ONE_BYTE_MAX = 255  # the largest ALLOCATION LENGTH both bytes-3-4 and byte-4 readers agree on

# Version descriptor families (SPC-4 table of version descriptor values): a descriptor
# is (family << 5) | version, so the family is value & ~0x1F. Standards only: anything
# else is not a code any standard assigns.
_SPC_FAMILIES = {0x0120: "SPC", 0x0260: "SPC-2", 0x0300: "SPC-3", 0x0460: "SPC-4",
                 0x05C0: "SPC-5"}  # fmt: skip
_SBC_FAMILIES = {0x0180: "SBC", 0x0320: "SBC-2", 0x04C0: "SBC-3", 0x0600: "SBC-4"}
_OTHER_FAMILIES = {
    0x0020: "SAM", 0x0040: "SAM-2", 0x0060: "SAM-3", 0x0080: "SAM-4", 0x00A0: "SAM-5",
    0x00C0: "SAM-6", 0x0140: "MMC", 0x0160: "SCC", 0x01A0: "SMC", 0x01C0: "SES",
    0x01E0: "SCC-2", 0x0200: "SSC", 0x0220: "RBC", 0x0240: "MMC-2", 0x0280: "OCRW",
    0x02A0: "MMC-3", 0x02E0: "SMC-2", 0x0340: "OSD", 0x0360: "SSC-2", 0x0380: "BCC",
    0x03A0: "MMC-4", 0x03C0: "ADC", 0x03E0: "SES-2", 0x0400: "SSC-3", 0x0420: "MMC-5",
    0x0440: "OSD-2", 0x0480: "SMC-3", 0x04A0: "ADC-2", 0x04E0: "MMC-6", 0x0500: "ADC-3",
    0x0520: "SSC-4", 0x0560: "OSD-3", 0x0580: "SES-3", 0x05A0: "SSC-5", 0x05E0: "SFSC",
    0x0620: "ZBC", 0x0820: "SSA-TL2", 0x0840: "SSA-TL1", 0x0860: "SSA-S3P",
    0x0880: "SSA-S2P", 0x08A0: "SIP", 0x08C0: "FCP", 0x08E0: "SBP-2", 0x0900: "FCP-2",
    0x0920: "SST", 0x0940: "SRP", 0x0960: "iSCSI", 0x0980: "SBP-3", 0x09C0: "ADP",
    0x09E0: "ADT", 0x0A00: "FCP-3", 0x0A20: "ADT-2", 0x0A40: "FCP-4", 0x0AA0: "SPI",
    0x0AC0: "Fast-20", 0x0AE0: "SPI-2", 0x0B00: "SPI-3", 0x0B20: "EPI", 0x0B40: "SPI-4",
    0x0B60: "SPI-5", 0x0BE0: "SAS", 0x0C00: "SAS-1.1", 0x0C20: "SAS-2", 0x0C40: "SAS-2.1",
    0x0C60: "SAS-3",
}  # fmt: skip
_KNOWN_FAMILIES = {**_SPC_FAMILIES, **_SBC_FAMILIES, **_OTHER_FAMILIES}
# VERSION (byte 2) -> the SPC family it claims (SPC-4 6.6.2 table "VERSION field").
_VERSION_FAMILY = {0x03: 0x0120, 0x04: 0x0260, 0x05: 0x0300, 0x06: 0x0460, 0x07: 0x05C0}


@pytest.fixture(scope="module")
def standard(shared_lun: Lun) -> bytes:
    """The standard INQUIRY data (up to 255 bytes of at most 260), read once."""
    result = shared_lun.cdb(cdb.inquiry(alloc_len=_ONE_BYTE_MAX), data_in_len=_ONE_BYTE_MAX)
    result.expect_good()
    assert len(result.data) >= 5, f"standard INQUIRY data of {len(result.data)} bytes"
    return result.data


def test_standard_inquiry_is_a_connected_direct_access_device(standard: bytes) -> None:
    """SPC-4 6.6.2: PERIPHERAL QUALIFIER 000b (a logical unit is connected) and
    PERIPHERAL DEVICE TYPE 00h (direct access block device, SBC) for a TCMU disk."""
    assert standard[0] >> 5 == 0, f"PERIPHERAL QUALIFIER {standard[0] >> 5}"
    assert standard[0] & 0x1F == PeripheralType.DIRECT_ACCESS, (
        f"PERIPHERAL DEVICE TYPE 0x{standard[0] & 0x1F:02x}")


def test_standard_inquiry_rmb_is_clear_and_byte_1_reserved_bits_are_zero(
    standard: bytes,
) -> None:
    """SPC-4 6.6.2: RMB=0 (the medium of a backstore is not removable) and the reserved
    bits of byte 1 are zero."""
    assert standard[1] & 0x80 == 0, "RMB is set: the LUN claims removable medium"
    assert standard[1] & 0x7F == 0, f"byte 1 reserved bits set: 0x{standard[1]:02x}"


def test_standard_inquiry_version_claims_an_spc_standard_its_descriptors_confirm(
    standard: bytes,
) -> None:
    """SPC-4 6.6.2: VERSION names the SPC standard the device conforms to (3..7 for SPC to
    SPC-5; SPC-4 devices report 6); when version descriptors are returned, the SPC
    descriptor they list is of that same standard."""
    version = standard[2]
    assert version in _VERSION_FAMILY, f"VERSION 0x{version:02x} claims no SPC standard"
    descriptors = _version_descriptors(standard)
    spc = [d for d in descriptors if d & ~0x1F in _SPC_FAMILIES]
    if spc:
        assert all(d & ~0x1F == _VERSION_FAMILY[version] for d in spc), (
            f"VERSION 0x{version:02x} claims {_SPC_FAMILIES[_VERSION_FAMILY[version]]} but "
            f"the version descriptors list {[_describe(d) for d in spc]}"
        )


def test_standard_inquiry_response_data_format_is_2(standard: bytes) -> None:
    """SPC-4 6.6.2: RESPONSE DATA FORMAT is 2 (the only value the standard allows)."""
    assert len(standard) >= 4
    assert standard[3] & 0x0F == 2, f"RESPONSE DATA FORMAT {standard[3] & 0x0F}"


def test_standard_inquiry_normaca_matches_naca_support(
    shared_lun: Lun, standard: bytes
) -> None:
    """SPC-4 6.6.2, SAM-5 5.2: NORMACA=0 means the device does not support NACA=1 in the
    CONTROL byte, so an INQUIRY with NACA=1 is ILLEGAL REQUEST, INVALID FIELD IN CDB (field
    pointer CONTROL byte 5 bit 2); NORMACA=1 means it is accepted."""
    inquiry = bytearray(cdb.inquiry(alloc_len=36))
    inquiry[5] |= _NACA
    result = shared_lun.cdb(bytes(inquiry), data_in_len=36)
    if standard[3] & _NORMACA:
        result.expect_good()
    else:
        expect_invalid_field_in_cdb(result, 5, 2)


def test_standard_inquiry_additional_length_matches_the_data(shared_lun: Lun) -> None:
    """SPC-4 6.6.2: ADDITIONAL LENGTH is the number of bytes after byte 4, so the data
    is ADDITIONAL LENGTH + 5 bytes (at least 36), and exactly that much is transferred
    into a larger buffer (the rest is residual)."""
    result = shared_lun.cdb(cdb.inquiry(alloc_len=255), data_in_len=255).expect_good()
    data = result.data
    assert len(data) >= 5
    assert data[4] >= 31, f"ADDITIONAL LENGTH {data[4]}: standard data is at least 36 bytes"
    assert len(data) == data[4] + 5, (
        f"ADDITIONAL LENGTH {data[4]} says {data[4] + 5} bytes, {len(data)} were returned")
    assert result.resid == 255 - len(data)


@pytest.mark.parametrize(
    ("field", "start", "end"),
    [("T10 VENDOR IDENTIFICATION", 8, 16), ("PRODUCT IDENTIFICATION", 16, 32),
     ("PRODUCT REVISION LEVEL", 32, 36)],
    ids=["vendor", "product", "revision"],
)  # fmt: skip
def test_standard_inquiry_identification_is_left_aligned_space_padded_ascii(
    standard: bytes, field: str, start: int, end: int
) -> None:
    """SPC-4 6.6.2 and 4.4.1: the identification fields are left-aligned ASCII (20h-7Eh),
    padded with spaces (not NULs), and not blank."""
    assert len(standard) >= 36, f"standard INQUIRY data of {len(standard)} bytes"
    text = standard[start:end]
    assert all(0x20 <= b <= 0x7E for b in text), f"{field} {text!r} is not printable ASCII"
    assert text.strip(b" "), f"{field} is blank"
    assert not text.startswith(b" "), f"{field} {text!r} is not left-aligned"


def test_version_descriptors_are_known_standards_including_spc_and_sbc(
    standard: bytes,
) -> None:
    """SPC-4 6.6.2: every non-zero VERSION DESCRIPTOR is a code the version descriptor
    table assigns; a direct-access device lists the SPC and the SBC standard it follows."""
    if len(standard) < _VERSION_DESCRIPTORS.start + 2:
        pytest.skip(f"standard INQUIRY data has {len(standard)} bytes: no version descriptors")
    descriptors = _version_descriptors(standard)
    unknown = [f"0x{d:04x}" for d in descriptors if d & ~0x1F not in _KNOWN_FAMILIES]
    assert not unknown, f"unknown version descriptors {unknown}"
    named = [_describe(d) for d in descriptors]
    assert any(d & ~0x1F in _SPC_FAMILIES for d in descriptors), f"no SPC descriptor: {named}"
    assert any(d & ~0x1F in _SBC_FAMILIES for d in descriptors), f"no SBC descriptor: {named}"


@pytest.mark.parametrize("alloc_len", [0, 1, 5, 36, 95, 96, 255, 256, 4096])
def test_inquiry_allocation_length_limits_the_transfer(
    shared_lun: Lun, standard: bytes, alloc_len: int
) -> None:
    """SPC-4 4.2.5.6 and 6.6.1: exactly min(ALLOCATION LENGTH, available) bytes are
    returned into a larger buffer, the start of the full data, the rest is residual;
    ALLOCATION LENGTH 0 transfers nothing and is not an error; the field is 2 bytes."""
    buffer = alloc_len + 100
    result = shared_lun.cdb(cdb.inquiry(alloc_len=alloc_len), data_in_len=buffer).expect_good()
    expected = min(alloc_len, standard[4] + 5)
    if expected == 0 and _kernel_returned_the_whole_buffer(result):
        return
    assert len(result.data) == expected, (
        f"{len(result.data)} bytes for ALLOCATION LENGTH {alloc_len}, expected {expected}")
    assert result.data[:_ONE_BYTE_MAX] == standard[:expected]
    assert result.resid == buffer - expected


def test_inquiry_page_code_without_evpd_is_invalid_field_in_cdb(shared_lun: Lun) -> None:
    """SPC-4 6.6.1: EVPD=0 with a non-zero PAGE CODE is ILLEGAL REQUEST, INVALID FIELD IN
    CDB with the field pointer on PAGE CODE (byte 2)."""
    results = shared_lun.cdbs([(cdb.inquiry(evpd=False, page=page, alloc_len=96), None, 96)
                               for page in (0x80, 0x83, 0x01)])  # fmt: skip
    for result in results:
        expect_invalid_field_in_cdb(result, 2, None)


def test_inquiry_reserved_bits_in_byte_1_are_invalid_field_in_cdb(shared_lun: Lun) -> None:
    """SPC-4 6.6.1: byte 1 bits 7-2 are reserved and bit 1 (CMDDT) obsolete: each one set
    is ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer byte 1 and that bit."""
    bits = range(1, 8)
    commands = []
    for bit in bits:
        inquiry = bytearray(cdb.inquiry(alloc_len=96))
        inquiry[1] |= 1 << bit
        commands.append((bytes(inquiry), None, 96))
    for bit, result in zip(bits, shared_lun.cdbs(commands), strict=True):
        expect_invalid_field_in_cdb(result, 1, bit)


def _kernel_returned_the_whole_buffer(result: CdbResult) -> bool:
    """A handler cannot report a zero-byte transfer through TCMU: target_core_user ignores
    READ_LEN 0 and completes the whole data-in buffer (residual 0, the data area's stale
    contents). What a handler that transferred nothing looks like there."""
    return result.resid == 0 and len(result.data) == result.data_in_len


def _version_descriptors(standard: bytes) -> list[int]:
    """The non-zero VERSION DESCRIPTORs the data covers (ADDITIONAL LENGTH permitting)."""
    end = min(len(standard), standard[4] + 5 if len(standard) > 4 else 0,
              _VERSION_DESCRIPTORS.stop)  # fmt: skip
    body = standard[_VERSION_DESCRIPTORS.start : end]
    codes = struct.unpack(f">{len(body) // 2}H", body[: len(body) // 2 * 2])
    return [code for code in codes if code]


def _describe(code: int) -> str:
    return f"0x{code:04x} ({_KNOWN_FAMILIES.get(code & ~0x1F, 'unknown')})"

