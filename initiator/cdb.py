"""CDB builders: pure functions returning the bytes SPC-5 / SBC-4 lay out.

Every builder checks that each value fits its field and raises ValueError naming the
field otherwise. Nothing else is checked on purpose: conformance tests send
semantically invalid CDBs (EVPD=0 with a page code, a zero allocation length...) to see
the target reject them. For bits a builder has no argument for, edit the bytes:
`bytearray(cdb)`. The last byte of every CDB is CONTROL, always 0 here.
"""

from __future__ import annotations

from collections.abc import Iterable

from tcmu_harness.scsi.constants import Opcode, ServiceAction

PR_OUT_PARAMETER_LIST_LEN = 24  # basic PERSISTENT RESERVE OUT parameter list
UNMAP_DESCRIPTOR_LEN = 16


def _uint(cmd: str, field: str, value: int, bits: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{cmd}: {field} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{cmd}: {field}={value} does not fit in {bits} bits "
                         f"(0..{(1 << bits) - 1})")
    return int(value)


def _be(cmd: str, field: str, value: int, nbytes: int) -> bytes:
    return _uint(cmd, field, value, nbytes * 8).to_bytes(nbytes, "big")


def _blocks_6(cmd: str, blocks: int) -> int:
    """6-byte READ/WRITE: TRANSFER LENGTH 0 means 256 blocks, so 1..256 is the range."""
    if not 1 <= blocks <= 256:
        raise ValueError(f"{cmd}: blocks={blocks} outside 1..256 (256 is encoded as 0)")
    return blocks & 0xFF


def _rw_flags(cmd: str, protect: int, dpo: bool, fua: bool) -> int:
    """Byte 1 of READ/WRITE(10/12/16): RDPROTECT/WRPROTECT (7-5), DPO (4), FUA (3)."""
    return (_uint(cmd, "protect", protect, 3) << 5) | (dpo << 4) | (fua << 3)


# --- SPC: device-type independent ------------------------------------------------------


def test_unit_ready() -> bytes:
    return bytes([Opcode.TEST_UNIT_READY, 0, 0, 0, 0, 0])


# Its name starts with "test": keep pytest from collecting it where it is imported.
test_unit_ready.__test__ = False  # type: ignore[attr-defined]


def inquiry(evpd: bool = False, page: int = 0, alloc_len: int = 255) -> bytes:
    cmd = "INQUIRY"
    return (bytes([Opcode.INQUIRY, int(evpd), _uint(cmd, "page", page, 8)])
            + _be(cmd, "alloc_len", alloc_len, 2) + b"\0")


def request_sense(desc: bool = False, alloc_len: int = 252) -> bytes:
    return bytes([Opcode.REQUEST_SENSE, int(desc), 0, 0,
                  _uint("REQUEST SENSE", "alloc_len", alloc_len, 8), 0])


def mode_sense_6(page: int, subpage: int = 0, pc: int = 0, dbd: bool = False,
                 alloc_len: int = 252) -> bytes:
    cmd = "MODE SENSE(6)"
    byte2 = (_uint(cmd, "pc", pc, 2) << 6) | _uint(cmd, "page", page, 6)
    return bytes([Opcode.MODE_SENSE_6, dbd << 3, byte2, _uint(cmd, "subpage", subpage, 8),
                  _uint(cmd, "alloc_len", alloc_len, 8), 0])


def mode_sense_10(page: int, subpage: int = 0, pc: int = 0, dbd: bool = False,
                  alloc_len: int = 4096, llbaa: bool = False) -> bytes:
    cmd = "MODE SENSE(10)"
    byte2 = (_uint(cmd, "pc", pc, 2) << 6) | _uint(cmd, "page", page, 6)
    return (bytes([Opcode.MODE_SENSE_10, (llbaa << 4) | (dbd << 3), byte2,
                   _uint(cmd, "subpage", subpage, 8), 0, 0, 0])
            + _be(cmd, "alloc_len", alloc_len, 2) + b"\0")


def mode_select_6(param_len: int, pf: bool = True, sp: bool = False) -> bytes:
    return bytes([Opcode.MODE_SELECT_6, (pf << 4) | int(sp), 0, 0,
                  _uint("MODE SELECT(6)", "param_len", param_len, 8), 0])


def mode_select_10(param_len: int, pf: bool = True, sp: bool = False) -> bytes:
    return (bytes([Opcode.MODE_SELECT_10, (pf << 4) | int(sp), 0, 0, 0, 0, 0])
            + _be("MODE SELECT(10)", "param_len", param_len, 2) + b"\0")


def report_luns(select: int = 0, alloc_len: int = 4096) -> bytes:
    cmd = "REPORT LUNS"
    return (bytes([Opcode.REPORT_LUNS, 0, _uint(cmd, "select", select, 8), 0, 0, 0])
            + _be(cmd, "alloc_len", alloc_len, 4) + b"\0\0")


def report_supported_opcodes(reporting_options: int = 0, opcode: int = 0,
                             service_action: int = 0, rctd: bool = False,
                             alloc_len: int = 8192) -> bytes:
    """MAINTENANCE IN / REPORT SUPPORTED OPERATION CODES. reporting_options 0 lists all
    commands; 1-3 ask about `opcode` (and `service_action`)."""
    cmd = "REPORT SUPPORTED OPERATION CODES"
    byte2 = (rctd << 7) | _uint(cmd, "reporting_options", reporting_options, 3)
    return (bytes([Opcode.MAINTENANCE_IN, ServiceAction.REPORT_SUPPORTED_OPERATION_CODES,
                   byte2, _uint(cmd, "opcode", opcode, 8)])
            + _be(cmd, "service_action", service_action, 2)
            + _be(cmd, "alloc_len", alloc_len, 4) + b"\0\0")


def persistent_reserve_in(service_action: int, alloc_len: int = 8192) -> bytes:
    cmd = "PERSISTENT RESERVE IN"
    return (bytes([Opcode.PERSISTENT_RESERVE_IN, _uint(cmd, "service_action", service_action, 5),
                   0, 0, 0, 0, 0])
            + _be(cmd, "alloc_len", alloc_len, 2) + b"\0")


def persistent_reserve_out(service_action: int, scope: int = 0, pr_type: int = 0,
                           param_len: int = PR_OUT_PARAMETER_LIST_LEN) -> bytes:
    cmd = "PERSISTENT RESERVE OUT"
    byte2 = (_uint(cmd, "scope", scope, 4) << 4) | _uint(cmd, "pr_type", pr_type, 4)
    return (bytes([Opcode.PERSISTENT_RESERVE_OUT,
                   _uint(cmd, "service_action", service_action, 5), byte2, 0, 0])
            + _be(cmd, "param_len", param_len, 4) + b"\0")


def pr_out_parameters(reservation_key: int = 0, service_action_key: int = 0, *,
                      aptpl: bool = False, all_tg_pt: bool = False,
                      spec_i_pt: bool = False, transport_ids: bytes = b"") -> bytes:
    """PERSISTENT RESERVE OUT parameter list for every service action but REGISTER AND
    MOVE: 24 bytes, then (SPEC_I_PT) a 4-byte length and the TransportIDs."""
    cmd = "PR OUT parameter list"
    flags = (spec_i_pt << 3) | (all_tg_pt << 2) | int(aptpl)
    body = (_be(cmd, "reservation_key", reservation_key, 8)
            + _be(cmd, "service_action_key", service_action_key, 8)
            + bytes([0, 0, 0, 0, flags, 0, 0, 0]))
    if transport_ids:
        body += _be(cmd, "len(transport_ids)", len(transport_ids), 4) + transport_ids
    return body


def pr_register_and_move_parameters(reservation_key: int, service_action_key: int,
                                    relative_port: int, transport_id: bytes, *,
                                    unreg: bool = False, aptpl: bool = False) -> bytes:
    """Parameter list of PERSISTENT RESERVE OUT / REGISTER AND MOVE (SPC-4 6.16.4)."""
    cmd = "PR OUT REGISTER AND MOVE parameter list"
    return (_be(cmd, "reservation_key", reservation_key, 8)
            + _be(cmd, "service_action_key", service_action_key, 8)
            + bytes([0, (unreg << 1) | int(aptpl)])
            + _be(cmd, "relative_port", relative_port, 2)
            + _be(cmd, "len(transport_id)", len(transport_id), 4) + transport_id)


def reserve_6() -> bytes:
    return bytes([Opcode.RESERVE_6, 0, 0, 0, 0, 0])


def release_6() -> bytes:
    return bytes([Opcode.RELEASE_6, 0, 0, 0, 0, 0])


def reserve_10() -> bytes:
    return bytes([Opcode.RESERVE_10]) + bytes(9)


def release_10() -> bytes:
    return bytes([Opcode.RELEASE_10]) + bytes(9)


# --- SBC: block commands --------------------------------------------------------------


def read_capacity_10() -> bytes:
    return bytes([Opcode.READ_CAPACITY_10]) + bytes(9)


def read_capacity_16(alloc_len: int = 32) -> bytes:
    return (bytes([Opcode.SERVICE_ACTION_IN_16, ServiceAction.READ_CAPACITY_16]) + bytes(8)
            + _be("READ CAPACITY(16)", "alloc_len", alloc_len, 4) + b"\0\0")


def read_6(lba: int, blocks: int) -> bytes:
    cmd = "READ(6)"
    return (bytes([Opcode.READ_6]) + _be(cmd, "lba", _uint(cmd, "lba", lba, 21), 3)
            + bytes([_blocks_6(cmd, blocks), 0]))


def write_6(lba: int, blocks: int) -> bytes:
    cmd = "WRITE(6)"
    return (bytes([Opcode.WRITE_6]) + _be(cmd, "lba", _uint(cmd, "lba", lba, 21), 3)
            + bytes([_blocks_6(cmd, blocks), 0]))


def _rw_10(op: int, cmd: str, lba: int, blocks: int, protect: int, dpo: bool, fua: bool,
           group: int) -> bytes:
    return (bytes([op, _rw_flags(cmd, protect, dpo, fua)]) + _be(cmd, "lba", lba, 4)
            + bytes([_uint(cmd, "group", group, 6)]) + _be(cmd, "blocks", blocks, 2) + b"\0")


def _rw_12(op: int, cmd: str, lba: int, blocks: int, protect: int, dpo: bool, fua: bool,
           group: int) -> bytes:
    return (bytes([op, _rw_flags(cmd, protect, dpo, fua)]) + _be(cmd, "lba", lba, 4)
            + _be(cmd, "blocks", blocks, 4) + bytes([_uint(cmd, "group", group, 6), 0]))


def _rw_16(op: int, cmd: str, lba: int, blocks: int, protect: int, dpo: bool, fua: bool,
           group: int) -> bytes:
    return (bytes([op, _rw_flags(cmd, protect, dpo, fua)]) + _be(cmd, "lba", lba, 8)
            + _be(cmd, "blocks", blocks, 4) + bytes([_uint(cmd, "group", group, 6), 0]))


def read_10(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
            rdprotect: int = 0, group: int = 0) -> bytes:
    return _rw_10(Opcode.READ_10, "READ(10)", lba, blocks, rdprotect, dpo, fua, group)


def read_12(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
            rdprotect: int = 0, group: int = 0) -> bytes:
    return _rw_12(Opcode.READ_12, "READ(12)", lba, blocks, rdprotect, dpo, fua, group)


def read_16(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
            rdprotect: int = 0, group: int = 0) -> bytes:
    return _rw_16(Opcode.READ_16, "READ(16)", lba, blocks, rdprotect, dpo, fua, group)


def write_10(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
             wrprotect: int = 0, group: int = 0) -> bytes:
    return _rw_10(Opcode.WRITE_10, "WRITE(10)", lba, blocks, wrprotect, dpo, fua, group)


def write_12(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
             wrprotect: int = 0, group: int = 0) -> bytes:
    return _rw_12(Opcode.WRITE_12, "WRITE(12)", lba, blocks, wrprotect, dpo, fua, group)


def write_16(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
             wrprotect: int = 0, group: int = 0) -> bytes:
    return _rw_16(Opcode.WRITE_16, "WRITE(16)", lba, blocks, wrprotect, dpo, fua, group)


def _verify_flags(cmd: str, vrprotect: int, dpo: bool, bytchk: int) -> int:
    return ((_uint(cmd, "vrprotect", vrprotect, 3) << 5) | (dpo << 4)
            | (_uint(cmd, "bytchk", bytchk, 2) << 1))


def verify_10(lba: int, blocks: int, bytchk: int = 0, dpo: bool = False, *,
              vrprotect: int = 0, group: int = 0) -> bytes:
    """bytchk 0: medium check only; 1: compare with data-out (blocks * block size);
    3: compare every block with one block of data-out."""
    cmd = "VERIFY(10)"
    return (bytes([Opcode.VERIFY_10, _verify_flags(cmd, vrprotect, dpo, bytchk)])
            + _be(cmd, "lba", lba, 4) + bytes([_uint(cmd, "group", group, 6)])
            + _be(cmd, "blocks", blocks, 2) + b"\0")


def verify_16(lba: int, blocks: int, bytchk: int = 0, dpo: bool = False, *,
              vrprotect: int = 0, group: int = 0) -> bytes:
    cmd = "VERIFY(16)"
    return (bytes([Opcode.VERIFY_16, _verify_flags(cmd, vrprotect, dpo, bytchk)])
            + _be(cmd, "lba", lba, 8) + _be(cmd, "blocks", blocks, 4)
            + bytes([_uint(cmd, "group", group, 6), 0]))


def write_same_10(lba: int, blocks: int, unmap: bool = False, *, anchor: bool = False,
                  wrprotect: int = 0, group: int = 0) -> bytes:
    """WRITE SAME(10); data-out is one logical block. (NDOB exists only in the 16-byte
    CDB.) blocks=0 asks for every block to the end of the medium."""
    cmd = "WRITE SAME(10)"
    byte1 = (_uint(cmd, "wrprotect", wrprotect, 3) << 5) | (anchor << 4) | (unmap << 3)
    return (bytes([Opcode.WRITE_SAME_10, byte1]) + _be(cmd, "lba", lba, 4)
            + bytes([_uint(cmd, "group", group, 6)]) + _be(cmd, "blocks", blocks, 2) + b"\0")


def write_same_16(lba: int, blocks: int, unmap: bool = False, ndob: bool = False, *,
                  anchor: bool = False, wrprotect: int = 0, group: int = 0) -> bytes:
    """WRITE SAME(16); with ndob=True there is no data-out (the blocks read as zeroes)."""
    cmd = "WRITE SAME(16)"
    byte1 = ((_uint(cmd, "wrprotect", wrprotect, 3) << 5) | (anchor << 4) | (unmap << 3)
             | int(ndob))
    return (bytes([Opcode.WRITE_SAME_16, byte1]) + _be(cmd, "lba", lba, 8)
            + _be(cmd, "blocks", blocks, 4) + bytes([_uint(cmd, "group", group, 6), 0]))


def unmap(param_len: int, *, anchor: bool = False, group: int = 0) -> bytes:
    cmd = "UNMAP"
    return (bytes([Opcode.UNMAP, int(anchor), 0, 0, 0, 0, _uint(cmd, "group", group, 6)])
            + _be(cmd, "param_len", param_len, 2) + b"\0")


def unmap_parameter_list(extents: Iterable[tuple[int, int]]) -> bytes:
    """UNMAP parameter list: an 8-byte header, then one 16-byte descriptor per
    (lba, blocks) extent."""
    cmd = "UNMAP parameter list"
    descriptors = b"".join(
        _be(cmd, "lba", lba, 8) + _be(cmd, "blocks", blocks, 4) + bytes(4)
        for lba, blocks in extents
    )
    header = (_be(cmd, "unmap data length", 6 + len(descriptors), 2)
              + _be(cmd, "block descriptor data length", len(descriptors), 2) + bytes(4))
    return header + descriptors


def compare_and_write(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
                      wrprotect: int = 0, group: int = 0) -> bytes:
    """Data-out is 2 * blocks * block size: the compare data, then the write data."""
    cmd = "COMPARE AND WRITE"
    return (bytes([Opcode.COMPARE_AND_WRITE, _rw_flags(cmd, wrprotect, dpo, fua)])
            + _be(cmd, "lba", lba, 8) + bytes(3)
            + bytes([_uint(cmd, "blocks", blocks, 8), _uint(cmd, "group", group, 6), 0]))


def synchronize_cache_10(lba: int = 0, blocks: int = 0, immed: bool = False, *,
                         group: int = 0) -> bytes:
    """blocks=0: from lba to the end of the medium."""
    cmd = "SYNCHRONIZE CACHE(10)"
    return (bytes([Opcode.SYNCHRONIZE_CACHE_10, immed << 1]) + _be(cmd, "lba", lba, 4)
            + bytes([_uint(cmd, "group", group, 6)]) + _be(cmd, "blocks", blocks, 2) + b"\0")


def synchronize_cache_16(lba: int = 0, blocks: int = 0, immed: bool = False, *,
                         group: int = 0) -> bytes:
    cmd = "SYNCHRONIZE CACHE(16)"
    return (bytes([Opcode.SYNCHRONIZE_CACHE_16, immed << 1]) + _be(cmd, "lba", lba, 8)
            + _be(cmd, "blocks", blocks, 4) + bytes([_uint(cmd, "group", group, 6), 0]))


def start_stop_unit(start: bool = True, loej: bool = False, immed: bool = False, *,
                    no_flush: bool = False, power_condition: int = 0,
                    power_condition_modifier: int = 0) -> bytes:
    cmd = "START STOP UNIT"
    byte4 = ((_uint(cmd, "power_condition", power_condition, 4) << 4) | (no_flush << 2)
             | (loej << 1) | int(start))
    return bytes([Opcode.START_STOP_UNIT, int(immed), 0,
                  _uint(cmd, "power_condition_modifier", power_condition_modifier, 4),
                  byte4, 0])


def prevent_allow_medium_removal(prevent: int = 1) -> bytes:
    """prevent: 0 allow, 1 prevent (2 and 3 are obsolete)."""
    return bytes([Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0,
                  _uint("PREVENT ALLOW MEDIUM REMOVAL", "prevent", prevent, 2), 0])


def verify_12(lba: int, blocks: int, bytchk: int = 0, dpo: bool = False, *,
              vrprotect: int = 0, group: int = 0) -> bytes:
    cmd = "VERIFY(12)"
    return (bytes([Opcode.VERIFY_12, _verify_flags(cmd, vrprotect, dpo, bytchk)])
            + _be(cmd, "lba", lba, 4) + _be(cmd, "blocks", blocks, 4)
            + bytes([_uint(cmd, "group", group, 6), 0]))


def write_and_verify_10(lba: int, blocks: int, bytchk: int = 0, dpo: bool = False, *,
                        wrprotect: int = 0, group: int = 0) -> bytes:
    """bytchk 0: write, then verify the medium; 1: write, then compare with data-out."""
    cmd = "WRITE AND VERIFY(10)"
    return (bytes([Opcode.WRITE_AND_VERIFY_10, _verify_flags(cmd, wrprotect, dpo, bytchk)])
            + _be(cmd, "lba", lba, 4) + bytes([_uint(cmd, "group", group, 6)])
            + _be(cmd, "blocks", blocks, 2) + b"\0")


def write_and_verify_12(lba: int, blocks: int, bytchk: int = 0, dpo: bool = False, *,
                        wrprotect: int = 0, group: int = 0) -> bytes:
    cmd = "WRITE AND VERIFY(12)"
    return (bytes([Opcode.WRITE_AND_VERIFY_12, _verify_flags(cmd, wrprotect, dpo, bytchk)])
            + _be(cmd, "lba", lba, 4) + _be(cmd, "blocks", blocks, 4)
            + bytes([_uint(cmd, "group", group, 6), 0]))


def write_and_verify_16(lba: int, blocks: int, bytchk: int = 0, dpo: bool = False, *,
                        wrprotect: int = 0, group: int = 0) -> bytes:
    cmd = "WRITE AND VERIFY(16)"
    return (bytes([Opcode.WRITE_AND_VERIFY_16, _verify_flags(cmd, wrprotect, dpo, bytchk)])
            + _be(cmd, "lba", lba, 8) + _be(cmd, "blocks", blocks, 4)
            + bytes([_uint(cmd, "group", group, 6), 0]))


def orwrite_16(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
               orprotect: int = 0, group: int = 0) -> bytes:
    """ORWRITE(16) (SBC-3 5.13): the medium becomes medium OR data-out."""
    return _rw_16(Opcode.ORWRITE_16, "ORWRITE(16)", lba, blocks, orprotect, dpo, fua, group)


def write_atomic_16(lba: int, blocks: int, fua: bool = False, dpo: bool = False, *,
                    atomic_boundary: int = 0, wrprotect: int = 0, group: int = 0) -> bytes:
    """WRITE ATOMIC(16) (SBC-4 5.48): LBA 2-9, ATOMIC BOUNDARY 10-11, TRANSFER LENGTH
    12-13, GROUP 14."""
    cmd = "WRITE ATOMIC(16)"
    return (bytes([Opcode.WRITE_ATOMIC_16, _rw_flags(cmd, wrprotect, dpo, fua)])
            + _be(cmd, "lba", lba, 8) + _be(cmd, "atomic_boundary", atomic_boundary, 2)
            + _be(cmd, "blocks", blocks, 2) + bytes([_uint(cmd, "group", group, 6), 0]))


def get_lba_status(lba: int, alloc_len: int = 4096) -> bytes:
    """SERVICE ACTION IN(16) / GET LBA STATUS (SBC-3 5.7): STARTING LBA 2-9, ALLOCATION
    LENGTH 10-13."""
    cmd = "GET LBA STATUS"
    return (bytes([Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS])
            + _be(cmd, "lba", lba, 8) + _be(cmd, "alloc_len", alloc_len, 4) + b"\0\0")


def pre_fetch_10(lba: int, blocks: int, immed: bool = False, *, group: int = 0) -> bytes:
    """PRE-FETCH(10) (SBC-3 5.10): IMMED is byte 1 bit 1; blocks 0 = to the end."""
    cmd = "PRE-FETCH(10)"
    return (bytes([Opcode.PRE_FETCH_10, immed << 1]) + _be(cmd, "lba", lba, 4)
            + bytes([_uint(cmd, "group", group, 6)]) + _be(cmd, "blocks", blocks, 2) + b"\0")


def pre_fetch_16(lba: int, blocks: int, immed: bool = False, *, group: int = 0) -> bytes:
    cmd = "PRE-FETCH(16)"
    return (bytes([Opcode.PRE_FETCH_16, immed << 1]) + _be(cmd, "lba", lba, 8)
            + _be(cmd, "blocks", blocks, 4) + bytes([_uint(cmd, "group", group, 6), 0]))


def read_defect_data_10(plist: bool = True, glist: bool = True, list_format: int = 0,
                        alloc_len: int = 4) -> bytes:
    """READ DEFECT DATA(10) (SBC-3 5.17): REQ_PLIST byte 2 bit 4, REQ_GLIST bit 3, DEFECT
    LIST FORMAT bits 2-0; ALLOCATION LENGTH 7-8."""
    cmd = "READ DEFECT DATA(10)"
    byte2 = (plist << 4) | (glist << 3) | _uint(cmd, "list_format", list_format, 3)
    return (bytes([Opcode.READ_DEFECT_DATA_10, 0, byte2, 0, 0, 0, 0])
            + _be(cmd, "alloc_len", alloc_len, 2) + b"\0")


def read_defect_data_12(plist: bool = True, glist: bool = True, list_format: int = 0,
                        alloc_len: int = 8) -> bytes:
    """READ DEFECT DATA(12) (SBC-3 5.18): flags in byte 1; ALLOCATION LENGTH 6-9."""
    cmd = "READ DEFECT DATA(12)"
    byte1 = (plist << 4) | (glist << 3) | _uint(cmd, "list_format", list_format, 3)
    return (bytes([Opcode.READ_DEFECT_DATA_12, byte1, 0, 0, 0, 0])
            + _be(cmd, "alloc_len", alloc_len, 4) + b"\0\0")


def format_unit(fmtdata: bool = False, *, fmtpinfo: int = 0, longlist: bool = False,
                cmplst: bool = False, defect_list_format: int = 0) -> bytes:
    """FORMAT UNIT (SBC-3 5.3): byte 1 = FMTPINFO(7-6) LONGLIST(5) FMTDATA(4) CMPLST(3)
    DEFECT LIST FORMAT(2-0)."""
    cmd = "FORMAT UNIT"
    byte1 = ((_uint(cmd, "fmtpinfo", fmtpinfo, 2) << 6) | (longlist << 5) | (fmtdata << 4)
             | (cmplst << 3) | _uint(cmd, "defect_list_format", defect_list_format, 3))
    return bytes([Opcode.FORMAT_UNIT, byte1, 0, 0, 0, 0])
