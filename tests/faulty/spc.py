"""Broken handlers for the SPC suites in suites/spc/ (TEST UNIT READY, INQUIRY, VPD
pages, REQUEST SENSE, REPORT SUPPORTED OPERATION CODES): each gets one behaviour wrong
the way a real handler plausibly would, and names the suite tests that must fail against
it. Load one as --tcmu-handler tests/faulty/spc.py:<Class>.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import struct
from typing import ClassVar

from tcmu.block import BlockHandler, _CommandSpec
from tcmu.handler import Command, DeviceInfo, Result
from tcmu.handlers.ramdisk import RamDisk
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, ServiceAction, Status

_TUR = "suites/spc/test_test_unit_ready.py::"
_INQ = "suites/spc/test_inquiry.py::"
_VPD = "suites/spc/test_vpd.py::"
_RS = "suites/spc/test_request_sense.py::"
_RSOC = "suites/spc/test_report_supported_opcodes.py::"

_RSOC_SA = ServiceAction.REPORT_SUPPORTED_OPERATION_CODES
_READS = {Opcode.READ_10, Opcode.READ_12, Opcode.READ_16}
_STD_DATA = 96  # BlockHandler's standard INQUIRY data
_DESIGNATOR = struct.Struct(">BBxB")  # CODE SET, PIV|ASSOCIATION|TYPE, LENGTH


def _with_cdb(cmd: Command, cdb: bytes | bytearray) -> Command:
    """The same command with another CDB (what a handler that misreads a field sees)."""
    return dataclasses.replace(cmd, cdb=bytes(cdb))


def _is_rsoc(cmd: Command) -> bool:
    return cmd.opcode == Opcode.MAINTENANCE_IN and cmd.cdb[1] & 0x1F == _RSOC_SA


def _check(handler: BlockHandler, error: SenseError) -> Result:
    return Result.check_condition(error.sense(handler.descriptor_sense))


def _good_data(cmd: Command, data: bytes) -> Result:
    return Result.good(data, read_len=min(len(data), len(cmd.iov)))


# --- TEST UNIT READY -----------------------------------------------------------------------


class TurNotReady(RamDisk):
    """Breaks: TEST UNIT READY answers CHECK CONDITION, NOT READY, LOGICAL UNIT NOT READY,
    CAUSE NOT REPORTABLE (02/04/00) although the unit is ready."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _TUR + "test_test_unit_ready_is_good_with_no_data_and_reaches_the_handler",
        _TUR + "test_test_unit_ready_transfers_nothing_into_a_data_in_buffer",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.TEST_UNIT_READY:
            return _check(self, SenseError(SenseKey.NOT_READY,
                                           Asc.LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE))
        return super().handle(cmd)


class TurReturnsData(RamDisk):
    """Breaks: TEST UNIT READY returns 8 bytes of zeroes as data-in (a shared "GOOD with
    an empty record" path used for every command)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _TUR + "test_test_unit_ready_transfers_nothing_into_a_data_in_buffer",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.TEST_UNIT_READY and result.status == Status.GOOD:
            return _good_data(cmd, bytes(8))
        return result


class TurIgnoresStop(RamDisk):
    """Breaks: TEST UNIT READY is GOOD even while START STOP UNIT has the unit stopped."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _TUR + "test_test_unit_ready_while_stopped_is_not_ready_initializing_command_required",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.TEST_UNIT_READY and cmd.cdb == bytes(6):
            return Result.good()
        return super().handle(cmd)


# --- INQUIRY, standard data ---------------------------------------------------------------


class InquiryIgnoresAllocationLength(RamDisk):
    """Breaks: standard INQUIRY returns all 96 bytes whatever the ALLOCATION LENGTH (only
    the buffer size limits it)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_inquiry_allocation_length_limits_the_transfer",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.INQUIRY and not cmd.cdb[1] & 1 and result.status == Status.GOOD:
            return _good_data(cmd, self._standard_inquiry())
        return result


class InquiryAllocationLengthLowByteOnly(RamDisk):
    """Breaks: INQUIRY reads ALLOCATION LENGTH from byte 4 only (the SPC-2 one-byte
    field), so 256 asks for nothing and 4096 for nothing either."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_inquiry_allocation_length_limits_the_transfer",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.INQUIRY:
            cdb = bytearray(cmd.cdb)
            cdb[3] = 0
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class AdditionalLengthOffByOne(RamDisk):
    """Breaks: ADDITIONAL LENGTH counts from byte 4 instead of byte 5 (92 for 96 bytes)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_standard_inquiry_additional_length_matches_the_data",
    )

    def _standard_inquiry(self) -> bytes:
        data = bytearray(super()._standard_inquiry())
        data[4] += 1
        return bytes(data)


class NulPaddedVendor(RamDisk):
    """Breaks: T10 VENDOR IDENTIFICATION is "TCMU" padded with NULs (strncpy), not spaces."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_standard_inquiry_identification_is_left_aligned_space_padded_ascii",
    )

    def _standard_inquiry(self) -> bytes:
        data = bytearray(super()._standard_inquiry())
        data[8:16] = b"TCMU\0\0\0\0"
        return bytes(data)


class VersionSaysSpc3(RamDisk):
    """Breaks: VERSION is 05h (SPC-3) while the version descriptors claim SPC-4."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_standard_inquiry_version_claims_an_spc_standard_its_descriptors_confirm",
    )

    def _standard_inquiry(self) -> bytes:
        data = bytearray(super()._standard_inquiry())
        data[2] = 0x05
        return bytes(data)


class NoSbcVersionDescriptor(RamDisk):
    """Breaks: the version descriptors list SAM-5 and SPC-4 but no SBC standard."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_version_descriptors_are_known_standards_including_spc_and_sbc",
    )

    def _standard_inquiry(self) -> bytes:
        data = bytearray(super()._standard_inquiry())
        for pos in range(58, 74, 2):
            if data[pos : pos + 2] == b"\x04\xc0":
                data[pos : pos + 2] = b"\0\0"
        return bytes(data)


class UnknownVersionDescriptor(RamDisk):
    """Breaks: a version descriptor holds a code no standard assigns (0xFFFF, a sentinel
    meant as "end of list")."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_version_descriptors_are_known_standards_including_spc_and_sbc",
    )

    def _standard_inquiry(self) -> bytes:
        data = bytearray(super()._standard_inquiry())
        data[64:66] = b"\xff\xff"  # the fourth descriptor, after SAM-5, SPC-4, SBC-3
        return bytes(data)


class RemovableMedium(RamDisk):
    """Breaks: RMB is set: the disk claims removable medium."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_standard_inquiry_rmb_is_clear_and_byte_1_reserved_bits_are_zero",
    )

    def _standard_inquiry(self) -> bytes:
        data = bytearray(super()._standard_inquiry())
        data[1] |= 0x80
        return bytes(data)


class ResponseDataFormat1(RamDisk):
    """Breaks: RESPONSE DATA FORMAT is 1 (the pre-SCSI-2 value)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_standard_inquiry_response_data_format_is_2",
    )

    def _standard_inquiry(self) -> bytes:
        data = bytearray(super()._standard_inquiry())
        data[3] = (data[3] & 0xF0) | 0x01
        return bytes(data)


class AcceptsNaca(RamDisk):
    """Breaks: the NACA bit of the CONTROL byte is ignored (masked before the checks)
    although NORMACA=0 says ACA is not supported."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_standard_inquiry_normaca_matches_naca_support",
        _RSOC + "test_reserved_bits_outside_the_usage_data_are_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        cdb = bytearray(cmd.cdb)
        cdb[-1] &= ~0x04
        return super().handle(_with_cdb(cmd, cdb))


class AcceptsPageCodeWithoutEvpd(RamDisk):
    """Breaks: INQUIRY with EVPD=0 ignores PAGE CODE and returns standard data."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_inquiry_page_code_without_evpd_is_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.INQUIRY and not cmd.cdb[1] & 1:
            cdb = bytearray(cmd.cdb)
            cdb[2] = 0
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class InquiryIgnoresReservedBits(RamDisk):
    """Breaks: INQUIRY ignores byte 1 but for EVPD (CMDDT and the reserved bits accepted),
    while REPORT SUPPORTED OPERATION CODES says they are not used."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _INQ + "test_inquiry_reserved_bits_in_byte_1_are_invalid_field_in_cdb",
        _RSOC + "test_reserved_bits_outside_the_usage_data_are_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.INQUIRY:
            cdb = bytearray(cmd.cdb)
            cdb[1] &= 0x01
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


# --- VPD pages --------------------------------------------------------------------------


class VpdListsUnservedPage(RamDisk):
    """Breaks: the Supported VPD Pages page lists B3h (Referrals), which is not served."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_every_listed_vpd_page_answers_with_its_page_code_and_page_length",
    )

    def _vpd_supported_pages(self) -> bytes:
        return self._vpd(0x00, bytes(sorted([*self._vpd_pages(), 0xB3])))


class VpdUnsorted(RamDisk):
    """Breaks: the Supported VPD Pages page lists its pages unsorted (00 83 80 B0 B1 B2)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_supported_vpd_pages_are_listed_in_ascending_order_without_repeats",
    )

    def _vpd_supported_pages(self) -> bytes:
        pages = sorted(self._vpd_pages())
        pages.remove(0x80)
        pages.insert(pages.index(0x83) + 1, 0x80)
        return self._vpd(0x00, bytes(pages))


class VpdServesUnlistedPage(RamDisk):
    """Breaks: an Extended INQUIRY Data page (86h) is served but missing from the
    Supported VPD Pages list."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_unlisted_vpd_pages_are_invalid_field_in_cdb",
    )

    def _vpd_pages(self):  # type: ignore[no-untyped-def]
        pages = dict(super()._vpd_pages())
        pages[0x86] = lambda: self._vpd(0x86, bytes(60))
        return pages

    def _vpd_supported_pages(self) -> bytes:
        return self._vpd(0x00, bytes(sorted(p for p in self._vpd_pages() if p != 0x86)))


class VpdWrongPageCode(RamDisk):
    """Breaks: the Unit Serial Number page answers with PAGE CODE 00h (a copied header)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_every_listed_vpd_page_answers_with_its_page_code_and_page_length",
    )

    def _vpd_unit_serial(self) -> bytes:
        page = bytearray(super()._vpd_unit_serial())
        page[1] = 0x00
        return bytes(page)


class VpdIgnoresAllocationLength(RamDisk):
    """Breaks: VPD pages are returned whole whatever the ALLOCATION LENGTH."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_vpd_allocation_length_limits_the_transfer",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if cmd.opcode == Opcode.INQUIRY and cmd.cdb[1] & 1 and result.status == Status.GOOD:
            build = self._vpd_pages().get(cmd.cdb[2])
            if build is not None:
                return _good_data(cmd, build())
        return result


def _designator(code_set: int, kind: int, identifier: bytes) -> bytes:
    return _DESIGNATOR.pack(code_set, kind, len(identifier)) + identifier


class OnlyT10VendorIdDesignator(RamDisk):
    """Breaks: the Device Identification page has only the T10 vendor ID designator, no
    NAA designator for the logical unit."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_device_identification_has_a_logical_unit_naa_designator",
        _VPD + "test_two_luns_have_different_serial_numbers_and_naa_designators",
    )

    def _vpd_device_identification(self) -> bytes:
        t10 = self.vendor.encode().ljust(8)[:8] + self.unit_serial.encode()
        return self._vpd(0x83, _designator(0x2, 0x01, t10))


class DesignatorLengthWrong(RamDisk):
    """Breaks: the T10 vendor ID designator's DESIGNATOR LENGTH counts its 4-byte header
    too, so it runs past the end of the page."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_device_identification_designators_fill_the_page_exactly",
    )

    def _vpd_device_identification(self) -> bytes:
        page = bytearray(super()._vpd_device_identification())
        t10 = 4 + 4 + page[7]  # after the page header and the NAA designator
        page[t10 + 3] += 4
        return bytes(page)


class PivSetOnLogicalUnitDesignator(RamDisk):
    """Breaks: the NAA logical-unit designator has PIV=1 and a protocol identifier (SAS),
    as a port designator would."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_device_identification_designator_fields_are_consistent",
    )

    def _vpd_device_identification(self) -> bytes:
        page = bytearray(super()._vpd_device_identification())
        page[4] |= 0x60  # PROTOCOL IDENTIFIER 6h (SAS)
        page[5] |= 0x80  # PIV
        return bytes(page)


class DuplicateNaaDesignator(RamDisk):
    """Breaks: the NAA designator is reported twice."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_device_identification_designators_do_not_repeat",
    )

    def _vpd_device_identification(self) -> bytes:
        page = super()._vpd_device_identification()
        naa = page[4 : 4 + 4 + page[7]]
        body = naa + page[4:]
        return self._vpd(0x83, body)


class T10VendorIdFromAnotherVendor(RamDisk):
    """Breaks: the T10 vendor ID designator names "LIO-ORG" while standard INQUIRY names
    the handler's own vendor (a copied designator)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_t10_vendor_id_designator_starts_with_the_inquiry_vendor",
    )

    def _vpd_device_identification(self) -> bytes:
        page = bytearray(super()._vpd_device_identification())
        t10 = 4 + 4 + page[7] + 4  # the T10 designator's identifier
        page[t10 : t10 + 8] = b"LIO-ORG "
        return bytes(page)


class SerialNulTerminated(RamDisk):
    """Breaks: the Unit Serial Number page includes the C string's NUL terminator in
    PAGE LENGTH."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_unit_serial_number_is_right_aligned_ascii_of_page_length_bytes",
    )

    def _vpd_unit_serial(self) -> bytes:
        return self._vpd(0x80, self.unit_serial.encode() + b"\0")


class SerialChangesEveryRead(RamDisk):
    """Breaks: the serial number carries a per-read counter (built from a request id)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_unit_serial_number_is_the_same_on_every_read",
    )

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self._reads = itertools.count()

    def _vpd_unit_serial(self) -> bytes:
        return self._vpd(0x80, f"{self.unit_serial[:-4]}{next(self._reads):04d}".encode())


class IdentityPerProcess(RamDisk):
    """Breaks: serial number and NAA designator come from random bytes drawn when the
    handler starts, so they change when it is restarted."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_identity_survives_a_handler_restart",
    )

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self._digest = hashlib.sha256(os.urandom(16)).digest()

    def _device_digest(self) -> bytes:
        return self._digest


class SameIdentityForEveryLun(RamDisk):
    """Breaks: serial number and NAA designator are derived from the handler class, so
    every LUN it serves reports the same ones."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _VPD + "test_two_luns_have_different_serial_numbers_and_naa_designators",
    )

    def _device_digest(self) -> bytes:
        return hashlib.sha256(type(self).__name__.encode()).digest()


# --- REQUEST SENSE -------------------------------------------------------------------------


class RequestSenseIgnoresDesc(RamDisk):
    """Breaks: REQUEST SENSE always returns fixed format sense data, DESC=1 or not."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RS + "test_request_sense_descriptor_format_reports_no_sense",
        _RS + "test_request_sense_desc_bit_chooses_the_format_after_d_sense_is_set",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.REQUEST_SENSE:
            cdb = bytearray(cmd.cdb)
            cdb[1] &= ~0x01
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RequestSenseFollowsDSense(RamDisk):
    """Breaks: REQUEST SENSE picks the format from D_SENSE in the Control mode page, not
    from its DESC bit."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RS + "test_request_sense_desc_bit_chooses_the_format_after_d_sense_is_set",
        _RS + "test_request_sense_descriptor_format_reports_no_sense",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.REQUEST_SENSE:
            cdb = bytearray(cmd.cdb)
            cdb[1] = (cdb[1] & ~0x01) | int(self.descriptor_sense)
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RequestSenseIgnoresAllocationLength(RamDisk):
    """Breaks: REQUEST SENSE returns the whole sense data whatever the ALLOCATION LENGTH."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RS + "test_request_sense_allocation_length_limits_the_transfer",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode == Opcode.REQUEST_SENSE:
            cdb = bytearray(cmd.cdb)
            cdb[4] = 0xFC
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class FixedSenseAdditionalLengthZero(RamDisk):
    """Breaks: fixed format sense data has ADDITIONAL SENSE LENGTH 0 (the classic bug of
    sense "7 bytes long"), with every CHECK CONDITION and in REQUEST SENSE data."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RS + "test_request_sense_fixed_format_reports_no_sense",
        _INQ + "test_inquiry_page_code_without_evpd_is_invalid_field_in_cdb",
        _INQ + "test_inquiry_reserved_bits_in_byte_1_are_invalid_field_in_cdb",
        _VPD + "test_unlisted_vpd_pages_are_invalid_field_in_cdb",
        _RSOC + "test_reserved_reporting_options_are_invalid_field_in_cdb",
        _RSOC + "test_reserved_bits_outside_the_usage_data_are_invalid_field_in_cdb",
        _RSOC + "test_unlisted_operation_codes_are_unsupported_and_refused",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if result.status == Status.CHECK_CONDITION and result.sense[0] & 0x7F == 0x70:
            sense = bytearray(result.sense)
            sense[7] = 0
            return dataclasses.replace(result, sense=bytes(sense))
        if (cmd.opcode == Opcode.REQUEST_SENSE and result.status == Status.GOOD
                and result.data and result.data[0] & 0x7F == 0x70 and len(result.data) > 7):
            data = bytearray(result.data)
            data[7] = 0
            return dataclasses.replace(result, data=bytes(data))
        return result


class RequestSenseIgnoresStop(RamDisk):
    """Breaks: REQUEST SENSE reports NO SENSE while the unit is stopped (the NOT READY
    condition is known only to the medium-access path)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RS + "test_request_sense_reports_not_ready_while_the_unit_is_stopped",
    )

    def _request_sense(self, cmd: Command) -> Result:
        stopped, self._stopped = self._stopped, False
        try:
            return super()._request_sense(cmd)
        finally:
            self._stopped = stopped


# --- REPORT SUPPORTED OPERATION CODES ----------------------------------------------------


class ListsUnservedCommand(RamDisk):
    """Breaks: REPORT SUPPORTED OPERATION CODES lists SEND DIAGNOSTIC, which the handler
    refuses with INVALID COMMAND OPERATION CODE (a table entry left behind)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_every_listed_command_is_served",
    )

    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)

        def refuse(cmd: Command) -> Result:
            raise SenseError.invalid_opcode()

        usage = bytes([Opcode.SEND_DIAGNOSTIC, 0xF7, 0x00, 0xFF, 0xFF, 0x00])
        self._commands[(Opcode.SEND_DIAGNOSTIC, None)] = _CommandSpec(
            Opcode.SEND_DIAGNOSTIC, None, usage, refuse, False)


def _patch_list(data: bytes, patch: dict[int, int]) -> bytes:
    """Change the CDB LENGTH of listed operation codes in an all-commands list."""
    out = bytearray(data)
    size = 20 if len(out) > 9 and out[9] & 0x02 else 8
    for pos in range(4, len(out) - size + 1, size):
        if out[pos] in patch and not out[pos + 5] & 0x01:
            out[pos + 6 : pos + 8] = patch[out[pos]].to_bytes(2, "big")
    return bytes(out)


class ListsWrongCdbLength(RamDisk):
    """Breaks: the all-commands list gives READ(16) a CDB LENGTH of 10 (a copied row)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_listed_cdb_lengths_match_the_operation_code_group",
        _RSOC + "test_one_command_forms_agree_with_the_list",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if _is_rsoc(cmd) and cmd.cdb[2] & 0x07 == 0 and result.data:
            return dataclasses.replace(result, data=_patch_list(result.data, {Opcode.READ_16: 10}))
        return result


class UsageOmitsAcceptedBit(RamDisk):
    """Breaks: the CDB USAGE DATA of READ(10) leaves out DPO, which the handler accepts
    (the usage table and the checks disagree)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_reserved_bits_outside_the_usage_data_are_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if (_is_rsoc(cmd) and cmd.cdb[2] & 0x07 in (1, 3) and cmd.cdb[3] == Opcode.READ_10
                and result.data and len(result.data) > 5):
            data = bytearray(result.data)
            data[5] &= ~0x10  # usage byte 1: DPO
            return dataclasses.replace(result, data=bytes(data))
        return result


class RefusesFuaOnReads(RamDisk):
    """Breaks: READ with FUA=1 is refused (24/00, byte 1 bit 3) although the usage data
    claims FUA and MODE SENSE reports DPOFUA=1."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_flag_bits_the_usage_data_claims_are_accepted",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode in _READS and cmd.cdb[1] & 0x08:
            return _check(self, SenseError.invalid_cdb(1, 3))
        return super().handle(cmd)


class RsocIgnoresAllocationLength(RamDisk):
    """Breaks: REPORT SUPPORTED OPERATION CODES returns all its data whatever the
    ALLOCATION LENGTH."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_allocation_length_limits_the_transfer",
    )

    def handle(self, cmd: Command) -> Result:
        if _is_rsoc(cmd):
            cdb = bytearray(cmd.cdb)
            cdb[6:10] = (0xFFFF).to_bytes(4, "big")
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RsocIgnoresRctd(RamDisk):
    """Breaks: RCTD is ignored: no command timeouts descriptors, CTDP always 0."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_all_commands_list_with_rctd_adds_command_timeouts_descriptors",
        _RSOC + "test_one_command_forms_agree_with_the_list",
    )

    def handle(self, cmd: Command) -> Result:
        if _is_rsoc(cmd):
            cdb = bytearray(cmd.cdb)
            cdb[2] &= 0x7F
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RsocAcceptsReservedReportingOptions(RamDisk):
    """Breaks: REPORTING OPTIONS is read as 2 bits, so 4-7 act as 0-3."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_reserved_reporting_options_are_invalid_field_in_cdb",
    )

    def handle(self, cmd: Command) -> Result:
        if _is_rsoc(cmd):
            cdb = bytearray(cmd.cdb)
            cdb[2] &= ~0x04
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RsocOptions1IgnoresServiceActions(RamDisk):
    """Breaks: REPORTING OPTIONS 001b for an operation code with service actions is
    answered (as 011b, service action 0) instead of being refused."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_one_command_form_for_the_wrong_kind_of_opcode_is_invalid_field",
    )

    def handle(self, cmd: Command) -> Result:
        if _is_rsoc(cmd) and cmd.cdb[2] & 0x07 == 1:
            cdb = bytearray(cmd.cdb)
            cdb[2] |= 0x03
            cmd = _with_cdb(cmd, cdb)
        return super().handle(cmd)


class RsocListsACommandTwice(RamDisk):
    """Breaks: the all-commands list repeats its first descriptor at the end."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_all_commands_list_names_each_command_once_in_a_stable_order",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if _is_rsoc(cmd) and cmd.cdb[2] & 0x07 == 0 and result.data:
            data = result.data
            size = 20 if cmd.cdb[2] & 0x80 else 8
            length = int.from_bytes(data[:4], "big")
            if len(data) == 4 + length and length >= size:  # whole: the allocation allowed it
                body = data[4:] + data[4 : 4 + size]
                return _good_data(cmd, struct.pack(">I", len(body)) + body)
        return result


class AcceptsVendorOpcodes(RamDisk):
    """Breaks: vendor-specific operation codes (C0h-FFh) answer GOOD (a catch-all
    "ignore what you do not know" path)."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_unlisted_operation_codes_are_unsupported_and_refused",
    )

    def handle(self, cmd: Command) -> Result:
        if cmd.opcode >= 0xC0:
            return Result.good()
        return super().handle(cmd)


class UnknownServiceActionIsInvalidOpcode(RamDisk):
    """Breaks: an unsupported service action of a supported operation code is refused
    with INVALID COMMAND OPERATION CODE (20/00) instead of INVALID FIELD IN CDB."""

    caught_by: ClassVar[tuple[str, ...]] = (
        _RSOC + "test_unlisted_service_actions_are_unsupported_and_refused",
    )

    def handle(self, cmd: Command) -> Result:
        result = super().handle(cmd)
        if result.status == Status.CHECK_CONDITION and cmd.opcode in self._sa_opcodes \
                and (cmd.opcode, cmd.cdb[1] & 0x1F) not in self._commands:  # fmt: skip
            return _check(self, SenseError.invalid_opcode())
        return result

