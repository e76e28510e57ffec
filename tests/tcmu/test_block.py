"""BlockHandler driven through handle() with no kernel (helpers in blockkit.py).

Expected sense is written out byte by byte (not built with tcmu.sense), in fixed format
unless a test turns D_SENSE on. New command families and the newer rules have their own
modules: test_block_limits.py, test_block_buffers.py, test_sbc_extra.py.
"""

from __future__ import annotations

import struct

import pytest
from blockkit import (
    BLOCKS,
    BS,
    ILLEGAL_REQUEST,
    MEDIUM_ERROR,
    MISCOMPARE,
    MemDisk,
    ThinDisk,
    all_commands,
    assert_check,
    assert_good,
    assert_mismatch,
    caw,
    cdb_sks,
    evpd,
    make_device,
    mode_select_6,
    param_sks,
    pattern,
    read_capacity_16,
    rsoc,
    run,
    rw6,
    rw10,
    rw12,
    rw16,
    scattered,
    set_d_sense,
    unmap_cdb,
    unmap_params,
)

from tcmu.block import BlockHandler
from tcmu.handler import Command, ScatterBuffer
from tcmu_harness.scsi.constants import Status


@pytest.fixture
def disk() -> MemDisk:
    return MemDisk(make_device())


@pytest.fixture
def thin() -> ThinDisk:
    return ThinDisk(make_device())


# --- dispatch ---------------------------------------------------------------------------


def test_unknown_opcode_is_invalid_command_operation_code(disk: MemDisk) -> None:
    assert_check(run(disk, bytes([0xC0, 0, 0, 0, 0, 0])), ILLEGAL_REQUEST, 0x20)
    assert_check(run(disk, bytes([0x1D, 0, 0, 0, 0, 0])), ILLEGAL_REQUEST, 0x20)  # SEND DIAG


def test_unknown_service_action_points_at_byte_1(disk: MemDisk) -> None:
    out = run(disk, bytes([0x9E, 0x12]) + bytes(14))  # GET LBA STATUS: not served
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 4))


def test_reserved_bit_points_at_byte_and_bit(disk: MemDisk) -> None:
    out = run(disk, rw10(0x28, 0, 1, flags=0x20))  # RDPROTECT=001b: no protection info
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 7))
    naca = bytearray(rw10(0x28, 0, 1))
    naca[9] = 0x04
    assert_check(run(disk, bytes(naca)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(9, 2))


def test_short_and_empty_cdb_are_invalid_field(disk: MemDisk) -> None:
    assert_check(run(disk, rw10(0x28, 0, 1)[:9]), ILLEGAL_REQUEST, 0x24)
    assert_check(run(disk, b""), ILLEGAL_REQUEST, 0x24)


def test_test_unit_ready(disk: MemDisk) -> None:
    out = run(disk, bytes(6))
    assert_good(out)
    assert out.result.data is None


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="block size"):
        MemDisk(make_device(blocks=0))


# --- REQUEST SENSE ------------------------------------------------------------------------


def test_request_sense_reports_no_sense(disk: MemDisk) -> None:
    out = run(disk, bytes([0x03, 0, 0, 0, 252, 0]))
    assert_good(out)
    assert out.data_in == bytes([0x70, 0, 0, 0, 0, 0, 0, 10]) + bytes(10)


def test_request_sense_descriptor_and_allocation_length(disk: MemDisk) -> None:
    assert run(disk, bytes([0x03, 1, 0, 0, 252, 0])).data_in == bytes([0x72]) + bytes(7)
    out = run(disk, bytes([0x03, 0, 0, 0, 4, 0]))
    assert (out.result.read_len, out.data_in) == (4, bytes([0x70, 0, 0, 0]))


# --- INQUIRY -------------------------------------------------------------------------------


def test_standard_inquiry(disk: MemDisk) -> None:
    out = run(disk, bytes([0x12, 0, 0, 0, 255, 0]))
    assert_good(out)
    data = out.data_in
    assert len(data) == 96 and out.result.read_len == 96
    # type 0, not removable, SPC-4, HiSup|RDF 2, additional length 91, CMDQUE
    assert data[:8] == bytes([0x00, 0x00, 0x06, 0x12, 91, 0x00, 0x00, 0x02])
    assert data[8:36] == b"TCMUHARN" + b"MemDisk         " + b"0001"
    assert data[58:64] == bytes([0x00, 0xA0, 0x04, 0x60, 0x04, 0xC0])  # SAM-5 SPC-4 SBC-3


def test_inquiry_identity_is_configurable() -> None:
    class Branded(MemDisk):
        vendor = "ACME"
        product = "A very long product name"
        revision = "2"

    data = run(Branded(make_device()), bytes([0x12, 0, 0, 0, 36, 0])).data_in
    assert data[8:36] == b"ACME    " + b"A very long prod" + b"2   "


def test_inquiry_allocation_length_truncates(disk: MemDisk) -> None:
    out = run(disk, bytes([0x12, 0, 0, 0, 5, 0]))
    assert (out.result.read_len, out.data_in) == (5, bytes([0, 0, 6, 0x12, 91]))
    out = run(disk, bytes([0x12, 0, 0, 0, 255, 0]), buf_len=40)  # buffer smaller still
    assert out.result.read_len == 40


def test_inquiry_cmddt_and_page_without_evpd_are_invalid(disk: MemDisk) -> None:
    out = run(disk, bytes([0x12, 0x02, 0, 0, 255, 0]))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 1))
    out = run(disk, bytes([0x12, 0x00, 0x80, 0, 255, 0]))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(2))


def test_unsupported_vpd_page_points_at_byte_2(disk: MemDisk) -> None:
    out = run(disk, bytes([0x12, 0x01, 0x99, 0, 255, 0]))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(2))


def test_vpd_supported_pages(disk: MemDisk) -> None:
    assert evpd(disk, 0x00) == bytes([0, 0x00, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])


def test_vpd_unit_serial_is_stable_per_device_name() -> None:
    first = evpd(MemDisk(make_device(name="alpha")), 0x80)
    assert first[:4] == bytes([0, 0x80, 0, 32])
    assert all(chr(c) in "0123456789abcdef" for c in first[4:])
    assert evpd(MemDisk(make_device(name="alpha")), 0x80) == first
    assert evpd(MemDisk(make_device(name="beta")), 0x80) != first


def test_vpd_device_identification() -> None:
    data = evpd(MemDisk(make_device(name="alpha")), 0x83)
    serial = evpd(MemDisk(make_device(name="alpha")), 0x80)[4:]
    assert data[:4] == bytes([0, 0x83, 0, 20 + 4 + 8 + 32])
    assert data[4:8] == bytes([0x01, 0x03, 0x00, 16])  # binary, LU, NAA, 16 bytes
    naa = int.from_bytes(data[8:24], "big")
    assert naa >> 124 == 6 and (naa >> 100) & 0xFFFFFF == 0x001405
    assert data[24:28] == bytes([0x02, 0x01, 0x00, 40])  # ASCII, LU, T10 vendor id
    assert data[28:] == b"TCMUHARN" + serial
    assert evpd(MemDisk(make_device(name="alpha")), 0x83) == data
    assert evpd(MemDisk(make_device(name="beta")), 0x83)[8:24] != data[8:24]


def test_vpd_block_limits_without_unmap(disk: MemDisk) -> None:
    data = evpd(disk, 0xB0)
    assert data[:4] == bytes([0, 0xB0, 0, 0x3C]) and len(data) == 64
    # WSNZ, MAX CAW, granularity, max/optimal transfer and max prefetch = hw_max_sectors
    fields = struct.unpack_from(">BBHIII", data, 4)
    assert fields == (1, 1, 1, 128, 128, 128)
    assert struct.unpack_from(">IIII", data, 20) == (0, 0, 0, 0)  # no UNMAP: no granularity
    assert struct.unpack_from(">Q", data, 36) == (BLOCKS,)  # WRITE SAME: at most the LUN
    # atomic: max transfer (64 KiB), alignment, granularity, with boundary, boundary size
    assert struct.unpack_from(">IIIII", data, 44) == (128, 1, 1, 0, 0)


def test_vpd_block_limits_with_unmap(thin: ThinDisk) -> None:
    data = evpd(thin, 0xB0)
    # MAX UNMAP LBA COUNT (capped at the LUN), descriptors, OPTIMAL UNMAP GRANULARITY, UGAVALID 0
    assert struct.unpack_from(">IIII", data, 20) == (BLOCKS, 64, 4096 // BS, 0)
    big = ThinDisk(make_device(blocks=(1 << 30) // BS + 1))
    assert struct.unpack_from(">II", evpd(big, 0xB0), 20) == ((1 << 30) // BS, 64)


def test_vpd_block_device_characteristics(disk: MemDisk) -> None:
    data = evpd(disk, 0xB1)
    assert data[:6] == bytes([0, 0xB1, 0, 0x3C, 0x00, 0x01]) and len(data) == 64
    assert data[6:] == bytes(58)


def test_vpd_logical_block_provisioning(disk: MemDisk, thin: ThinDisk) -> None:
    assert evpd(disk, 0xB2) == bytes([0, 0xB2, 0, 4, 0, 0x00, 0x00, 0])
    # LBPU | LBPWS | LBPWS10 | LBPRZ=001b, thin provisioned
    assert evpd(thin, 0xB2) == bytes([0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0])


# --- READ CAPACITY ----------------------------------------------------------------------------


def test_read_capacity_10(disk: MemDisk) -> None:
    out = run(disk, bytes([0x25]) + bytes(9))
    assert_good(out)
    assert out.data_in == struct.pack(">II", BLOCKS - 1, BS)


@pytest.mark.parametrize(
    ("blocks", "returned"),
    [((1 << 32) - 1, 0xFFFFFFFE), (1 << 32, 0xFFFFFFFF), ((1 << 32) + 1, 0xFFFFFFFF)],
)
def test_read_capacity_10_saturates_past_32_bits(blocks: int, returned: int) -> None:
    class Huge(BlockHandler):  # no storage needed to report capacity
        def read(self, offset: int, buf: ScatterBuffer) -> None:
            raise AssertionError("not read")

        def write(self, offset: int, buf: ScatterBuffer) -> None:
            raise AssertionError("not written")

    huge = Huge(make_device(blocks=blocks))
    assert run(huge, bytes([0x25]) + bytes(9)).data_in == struct.pack(">II", returned, BS)
    assert run(huge, read_capacity_16()).data_in[:12] == struct.pack(">QI", blocks - 1, BS)


def test_read_capacity_lba_without_pmi_is_invalid(disk: MemDisk) -> None:
    out = run(disk, bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(2))
    assert_good(run(disk, bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0])))


def test_read_capacity_16(disk: MemDisk, thin: ThinDisk) -> None:
    out = run(disk, read_capacity_16())
    assert_good(out)
    assert out.data_in == struct.pack(">QI", BLOCKS - 1, BS) + bytes(20)
    data = run(thin, read_capacity_16()).data_in
    assert data[12:16] == bytes([0, 0, 0xC0, 0x00])  # LBPME | LBPRZ


def test_read_capacity_16_allocation_length(disk: MemDisk) -> None:
    out = run(disk, read_capacity_16(alloc=12))
    assert (out.result.read_len, out.data_in) == (12, struct.pack(">QI", BLOCKS - 1, BS))


# --- MODE SENSE / MODE SELECT ---------------------------------------------------------------

RW_ERROR_RECOVERY = bytes([0x01, 0x0A, 0x80]) + bytes(9)  # AWRE
CACHING_WCE = bytes([0x08, 0x12, 0x04]) + bytes(17)
CONTROL = bytes([0x0A, 0x0A, 0x00, 0x10]) + bytes(8)
INFO_EXCEPTIONS = bytes([0x1C, 0x0A, 0x08]) + bytes(9)
SHORT_BD = bytes([0, 0, 0x01, 0x2C, 0, 0, 0x02, 0x00])  # 300 blocks of 512


def test_mode_sense_6_all_pages(disk: MemDisk) -> None:
    out = run(disk, bytes([0x1A, 0, 0x3F, 0, 255, 0]))
    assert_good(out)
    pages = RW_ERROR_RECOVERY + CACHING_WCE + CONTROL + INFO_EXCEPTIONS  # ascending codes
    assert out.data_in == bytes([3 + 8 + len(pages), 0, 0x10, 8]) + SHORT_BD + pages


def test_mode_sense_wce_follows_device_and_dbd() -> None:
    handler = MemDisk(make_device(write_cache=False))
    out = run(handler, bytes([0x1A, 0x08, 0x08, 0, 255, 0]))
    assert out.data_in == bytes([3 + 20, 0, 0x10, 0]) + bytes([0x08, 0x12, 0x00]) + bytes(17)


def test_mode_sense_10_long_lba(disk: MemDisk) -> None:
    out = run(disk, bytes([0x5A, 0x10, 0x0A, 0, 0, 0, 0, 0, 255, 0]))
    long_bd = (BLOCKS).to_bytes(8, "big") + bytes([0, 0, 0, 0]) + BS.to_bytes(4, "big")
    header = bytes([0, 6 + 16 + 12, 0, 0x10, 0x01, 0, 0, 16])
    assert out.data_in == header + long_bd + CONTROL


def test_mode_sense_10_short_descriptor(disk: MemDisk) -> None:
    out = run(disk, bytes([0x5A, 0x00, 0x1C, 0, 0, 0, 0, 0, 255, 0]))
    assert out.data_in == bytes([0, 6 + 8 + 12, 0, 0x10, 0, 0, 0, 8]) + SHORT_BD + INFO_EXCEPTIONS


def test_mode_sense_changeable_and_default(disk: MemDisk) -> None:
    out = run(disk, bytes([0x1A, 0x08, 0x40 | 0x3F, 0, 255, 0]))
    changeable = (
        bytes([0x01, 0x0A]) + bytes(10)
        + bytes([0x08, 0x12, 0x04]) + bytes(17) + bytes([0x0A, 0x0A, 0x04]) + bytes(9)
        + bytes([0x1C, 0x0A]) + bytes(10)
    )  # fmt: skip
    assert out.data_in[4:] == changeable
    set_d_sense(disk)
    assert run(disk, bytes([0x1A, 0x08, 0x80 | 0x0A, 0, 255, 0])).data_in[4:] == CONTROL
    assert run(disk, bytes([0x1A, 0x08, 0x0A, 0, 255, 0])).data_in[6] == 0x04


def test_mode_sense_saved_values_not_supported(disk: MemDisk) -> None:
    out = run(disk, bytes([0x1A, 0, 0xC0 | 0x08, 0, 255, 0]))
    assert_check(out, ILLEGAL_REQUEST, 0x39, sks=cdb_sks(2, 7))


def test_mode_sense_unknown_page_and_subpage(disk: MemDisk) -> None:
    assert_check(
        run(disk, bytes([0x1A, 0, 0x19, 0, 255, 0])), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(2, 5)
    )
    assert_check(
        run(disk, bytes([0x1A, 0, 0x08, 1, 255, 0])), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(3)
    )
    assert_good(run(disk, bytes([0x1A, 0, 0x3F, 0xFF, 255, 0])))


def test_mode_sense_allocation_length(disk: MemDisk) -> None:
    out = run(disk, bytes([0x1A, 0, 0x3F, 0, 4, 0]))
    assert (out.result.read_len, out.data_in) == (4, bytes([67, 0, 0x10, 8]))


def test_mode_select_d_sense_switches_sense_format(disk: MemDisk) -> None:
    set_d_sense(disk)
    out = run(disk, rw10(0x28, BLOCKS, 1))
    assert out.result.status == Status.CHECK_CONDITION
    assert out.result.sense == bytes([0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0])
    out = run(disk, bytes([0x12, 0x01, 0x99, 0, 255, 0]))
    assert out.result.sense == bytes(
        [0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xC0, 0, 2, 0]
    )


def test_mode_select_10_turns_write_cache_off_and_flushes(disk: MemDisk) -> None:
    params = bytes(8) + bytes([0x08, 0x12, 0x00]) + bytes(17)
    out = run(disk, bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, len(params), 0]), params)
    assert_good(out)
    assert (disk.write_cache_enabled, disk.flushes) == (False, 1)
    assert_good(run(disk, rw10(0x2A, 0, 1), bytes(BS)))
    assert disk.flushes == 2  # write-through: every write is flushed


def test_mode_select_accepts_current_block_descriptor(disk: MemDisk) -> None:
    params = bytes([0, 0, 0, 8]) + SHORT_BD + CONTROL
    assert_good(mode_select_6(disk, params))
    zero_blocks = bytes([0, 0, 0, 8]) + bytes(5) + bytes([0, 0x02, 0x00])
    assert_good(mode_select_6(disk, zero_blocks))


def test_mode_select_rejects_other_block_length(disk: MemDisk) -> None:
    params = bytes([0, 0, 0, 8]) + bytes([0, 0, 0x01, 0x2C, 0, 0, 0x10, 0x00])
    assert_check(mode_select_6(disk, params), ILLEGAL_REQUEST, 0x26, sks=param_sks(9))
    params = bytes([0, 0, 0, 8]) + bytes([0x01, 0, 0x01, 0x2C, 0, 0, 0x02, 0x00])
    assert_check(mode_select_6(disk, params), ILLEGAL_REQUEST, 0x26, sks=param_sks(4))
    params = bytes([0, 0, 0, 8]) + bytes([0, 0, 0x01, 0x2B, 0, 0, 0x02, 0x00])  # 299 blocks
    assert_check(mode_select_6(disk, params), ILLEGAL_REQUEST, 0x26, sks=param_sks(5))
    params = bytes([0, 0, 0, 7]) + bytes(7)
    assert_check(mode_select_6(disk, params), ILLEGAL_REQUEST, 0x26, sks=param_sks(3))


def test_mode_select_unchangeable_field_points_at_bit(disk: MemDisk) -> None:
    page = bytes([0x0A, 0x0A, 0x00, 0x00]) + bytes(8)  # QAM 1 -> 0: not changeable
    out = mode_select_6(disk, bytes(4) + page)
    assert_check(out, ILLEGAL_REQUEST, 0x26, sks=param_sks(4 + 3, 4))


def test_mode_select_bad_page_changes_nothing(disk: MemDisk) -> None:
    caching_off = bytes([0x08, 0x12, 0x00]) + bytes(17)
    bad_control = bytes([0x0A, 0x0A, 0x04, 0x10, 0x80]) + bytes(7)  # byte 4 not changeable
    out = mode_select_6(disk, bytes(4) + caching_off + bad_control)
    assert_check(out, ILLEGAL_REQUEST, 0x26, sks=param_sks(4 + 20 + 4, 7))
    assert (disk.write_cache_enabled, disk.descriptor_sense) == (True, False)


def test_mode_select_page_errors(disk: MemDisk) -> None:
    assert_check(
        mode_select_6(disk, bytes(4) + bytes([0x19, 0x02, 0, 0])),
        ILLEGAL_REQUEST, 0x26, sks=param_sks(4, 5),
    )  # fmt: skip
    assert_check(
        mode_select_6(disk, bytes(4) + bytes([0x0A, 0x08]) + bytes(8)),
        ILLEGAL_REQUEST, 0x26, sks=param_sks(5),
    )  # fmt: skip
    assert_check(
        mode_select_6(disk, bytes(4) + bytes([0x4A, 0x0A]) + bytes(10)),
        ILLEGAL_REQUEST, 0x26, sks=param_sks(4, 6),
    )  # fmt: skip
    assert_check(
        mode_select_6(disk, bytes([0, 1, 0, 0]) + CONTROL),
        ILLEGAL_REQUEST, 0x26, sks=param_sks(1),
    )  # fmt: skip


def test_mode_select_truncation_is_parameter_list_length_error(disk: MemDisk) -> None:
    assert_check(mode_select_6(disk, bytes(4) + CONTROL[:8]), ILLEGAL_REQUEST, 0x1A)
    assert_check(mode_select_6(disk, bytes(3)), ILLEGAL_REQUEST, 0x1A)
    assert_check(mode_select_6(disk, bytes(4) + b"\x0a"), ILLEGAL_REQUEST, 0x1A)
    assert_check(mode_select_6(disk, bytes([0, 0, 0, 8]) + bytes(4)), ILLEGAL_REQUEST, 0x1A)


def test_mode_select_cdb_checks(disk: MemDisk) -> None:
    out = mode_select_6(disk, bytes(4) + CONTROL, flags=0x11)  # SP: nothing is saved
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 0))
    out = mode_select_6(disk, bytes(4) + CONTROL, flags=0x00)  # PF=0: vendor format
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 4))
    assert_good(run(disk, bytes([0x15, 0x10, 0, 0, 0, 0])))  # no parameter list


# --- READ / WRITE ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write_cdb", "read_cdb"),
    [(rw6(0x0A, 5, 3), rw6(0x08, 5, 3)), (rw10(0x2A, 5, 3), rw10(0x28, 5, 3)),
     (rw12(0xAA, 5, 3), rw12(0xA8, 5, 3)), (rw16(0x8A, 5, 3), rw16(0x88, 5, 3))],
)  # fmt: skip
def test_write_then_read_round_trip(disk: MemDisk, write_cdb: bytes, read_cdb: bytes) -> None:
    data = pattern(3 * BS)
    assert_good(run(disk, write_cdb, data))
    assert disk.mem[5 * BS : 8 * BS] == data
    assert disk.mem[4 * BS : 5 * BS] == bytes(BS) and disk.mem[8 * BS : 9 * BS] == bytes(BS)
    out = run(disk, read_cdb, buf_len=3 * BS)
    assert_good(out)
    assert (out.result.data, out.result.read_len, out.data_in) == (None, 3 * BS, data)


def test_read_fills_the_command_views_zero_copy(disk: MemDisk) -> None:
    disk.mem[0:BS] = pattern(BS, seed=9)
    buf = scattered(BS)
    result = disk.handle(Command(1, rw10(0x28, 0, 1), buf))
    assert (result.status, result.data) == (Status.GOOD, None)
    assert b"".join(bytes(v) for v in buf.views) == pattern(BS, seed=9)


def test_read6_length_zero_is_256_blocks() -> None:
    disk = MemDisk(make_device(max_sectors=256))
    disk.mem[255 * BS : 256 * BS] = b"\xab" * BS
    out = run(disk, rw6(0x08, 0, 0), buf_len=256 * BS)
    assert out.result.read_len == 256 * BS
    assert out.data_in[-BS:] == b"\xab" * BS


def test_lba_out_of_range(disk: MemDisk) -> None:
    assert_good(run(disk, rw10(0x28, BLOCKS - 1, 1)))
    assert_check(run(disk, rw10(0x28, BLOCKS - 1, 2)), ILLEGAL_REQUEST, 0x21)
    assert_check(run(disk, rw10(0x28, BLOCKS, 0)), ILLEGAL_REQUEST, 0x21)
    assert_check(run(disk, rw16(0x88, (1 << 64) - 1, 1)), ILLEGAL_REQUEST, 0x21)
    assert_check(run(disk, rw16(0x8A, BLOCKS, 1), bytes(BS)), ILLEGAL_REQUEST, 0x21)
    roomy = MemDisk(make_device(max_sectors=256))
    assert_check(run(roomy, rw6(0x08, 100, 0)), ILLEGAL_REQUEST, 0x21)  # 100 + 256 > 300
    assert_good(run(disk, rw10(0x28, BLOCKS - 1, 0)))


def test_transfer_beyond_maximum_is_invalid_field(disk: MemDisk) -> None:
    class Small(MemDisk):
        max_transfer_bytes = 4 * BS

    out = run(Small(make_device()), rw10(0x28, 0, 5))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(7))
    out = run(Small(make_device()), rw16(0x88, 0, 5))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(10))


def test_read_buffer_smaller_than_transfer_is_invalid_field(disk: MemDisk) -> None:
    disk.mem[: 2 * BS] = pattern(2 * BS)
    out = run(disk, rw10(0x28, 0, 2), buf_len=BS + 10)
    assert_check(out, ILLEGAL_REQUEST, 0x24)  # no field pointer
    assert out.result.data is None and out.buf.read() == bytes(BS + 10)  # nothing returned


def test_write_buffer_of_another_length_is_a_mismatch(disk: MemDisk) -> None:
    assert_mismatch(run(disk, rw10(0x2A, 10, 2), b"\x55" * 100))
    assert_mismatch(run(disk, rw10(0x2A, 0, 1), b"\x11" * (2 * BS)))
    assert disk.mem == bytes(len(disk.mem))  # nothing written


def test_read_buffer_larger_than_transfer_is_left_alone(disk: MemDisk) -> None:
    out = run(disk, rw10(0x28, 0, 1), buf_len=3 * BS)
    assert_good(out)
    assert out.result.read_len == BS


def test_fua_flushes_and_dpo_is_accepted(disk: MemDisk) -> None:
    assert_good(run(disk, rw10(0x2A, 0, 1), bytes(BS)))
    assert disk.flushes == 0
    assert_good(run(disk, rw10(0x2A, 0, 1, flags=0x08), bytes(BS)))
    assert disk.flushes == 1
    assert_good(run(disk, rw16(0x8A, 0, 1, flags=0x18), bytes(BS)))
    assert disk.flushes == 2
    assert_good(run(disk, rw10(0x28, 0, 1, flags=0x18)))


def test_write_cache_disabled_writes_through() -> None:
    handler = MemDisk(make_device(write_cache=False))
    assert_good(run(handler, rw10(0x2A, 0, 1), bytes(BS)))
    assert handler.flushes == 1


def test_storage_errors_are_medium_errors(disk: MemDisk) -> None:
    disk.fail_with = OSError(5, "EIO")
    assert_check(run(disk, rw10(0x28, 0, 1)), MEDIUM_ERROR, 0x11)
    assert_check(run(disk, rw10(0x2A, 0, 1), bytes(BS)), MEDIUM_ERROR, 0x0C)


# --- VERIFY / WRITE AND VERIFY --------------------------------------------------------------


def test_verify_without_bytchk_checks_range_only(disk: MemDisk) -> None:
    assert_good(run(disk, rw10(0x2F, 0, 4)))
    assert_check(run(disk, rw10(0x2F, BLOCKS - 1, 2)), ILLEGAL_REQUEST, 0x21)


def test_verify_bytchk_1(disk: MemDisk) -> None:
    disk.mem[2 * BS : 4 * BS] = pattern(2 * BS)
    assert_good(run(disk, rw10(0x2F, 2, 2, flags=0x02), pattern(2 * BS)))
    changed = bytearray(pattern(2 * BS))
    changed[700] ^= 1
    changed[900] ^= 1
    out = run(disk, rw16(0x8F, 2, 2, flags=0x02), bytes(changed))
    assert_check(out, MISCOMPARE, 0x1D, info=700)


def test_verify_bytchk_3_compares_one_block_with_each(disk: MemDisk) -> None:
    disk.mem[0 : 3 * BS] = b"\x5a" * (3 * BS)
    assert_good(run(disk, rw12(0xAF, 0, 3, flags=0x06), b"\x5a" * BS))
    disk.mem[2 * BS + 3] = 0
    assert_check(run(disk, rw12(0xAF, 0, 3, flags=0x06), b"\x5a" * BS), MISCOMPARE, 0x1D,
                 info=2 * BS + 3)  # fmt: skip


def test_verify_bytchk_2_is_reserved(disk: MemDisk) -> None:
    out = run(disk, rw10(0x2F, 0, 1, flags=0x04), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 2))


def test_write_and_verify(disk: MemDisk) -> None:
    data = pattern(2 * BS, seed=3)
    assert_good(run(disk, rw10(0x2E, 7, 2, flags=0x02), data))
    assert disk.mem[7 * BS : 9 * BS] == data
    assert disk.flushes == 1  # written to the medium before it is verified
    out = run(disk, rw10(0x2E, 0, 1, flags=0x06), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 2))


def test_write_and_verify_detects_a_medium_that_lies() -> None:
    class Forgetful(MemDisk):
        def write(self, offset: int, buf: ScatterBuffer) -> None:
            pass

    out = run(Forgetful(make_device()), rw10(0x2E, 0, 1, flags=0x02), b"\x00\x07" + bytes(BS - 2))
    assert_check(out, MISCOMPARE, 0x1D, info=1)


# --- SYNCHRONIZE CACHE ---------------------------------------------------------------------


def test_synchronize_cache(disk: MemDisk) -> None:
    assert_good(run(disk, rw10(0x35, 0, 0)))
    assert_good(run(disk, rw16(0x91, 10, 5, flags=0x02)))
    assert disk.flushes == 2
    assert_check(run(disk, rw10(0x35, BLOCKS, 0)), ILLEGAL_REQUEST, 0x21)
    assert_check(run(disk, rw16(0x91, BLOCKS - 1, 2)), ILLEGAL_REQUEST, 0x21)
    assert disk.flushes == 2


# --- WRITE SAME --------------------------------------------------------------------------------


def test_write_same_repeats_the_block(disk: MemDisk) -> None:
    block = pattern(BS, seed=5)
    assert_good(run(disk, rw10(0x41, 3, 4), block))
    assert disk.mem[3 * BS : 7 * BS] == block * 4
    assert disk.mem[2 * BS : 3 * BS] == bytes(BS) and disk.mem[7 * BS : 8 * BS] == bytes(BS)


def test_write_same_longer_than_a_chunk(disk: MemDisk) -> None:
    big = MemDisk(make_device(blocks=4096))
    assert_good(run(big, rw16(0x93, 1, 4095), b"\x42" * BS))
    assert big.mem[BS:] == b"\x42" * (4095 * BS) and big.mem[:BS] == bytes(BS)


def test_write_same_unmap_deallocates_zero_blocks(thin: ThinDisk) -> None:
    thin.mem[:] = b"\xff" * len(thin.mem)
    assert_good(run(thin, rw16(0x93, 8, 16, flags=0x08), bytes(BS)))
    assert thin.unmapped == [(8 * BS, 16 * BS)]
    assert thin.mem[8 * BS : 24 * BS] == bytes(16 * BS)
    assert_good(run(thin, rw10(0x41, 30, 2, flags=0x08), bytes(BS)))
    assert thin.unmapped[-1] == (30 * BS, 2 * BS)


def test_write_same_zeroes_without_unmap_bit_stay_mapped(thin: ThinDisk) -> None:
    thin.mem[:] = b"\xff" * len(thin.mem)
    assert_good(run(thin, rw16(0x93, 2, 3), bytes(BS)))
    assert (thin.unmapped, thin.mem[2 * BS : 5 * BS]) == ([], bytes(3 * BS))


def test_write_same_unmap_with_data_writes_the_data(thin: ThinDisk) -> None:
    assert_good(run(thin, rw10(0x41, 0, 2, flags=0x08), b"\x01" * BS))
    assert (thin.unmapped, thin.mem[: 2 * BS]) == ([], b"\x01" * (2 * BS))


def test_write_same_ndob_writes_zeroes_without_data_out(disk: MemDisk) -> None:
    disk.mem[:] = b"\xff" * len(disk.mem)
    assert_good(run(disk, rw16(0x93, 1, 2, flags=0x01), buf_len=0))
    assert disk.mem[: 4 * BS] == b"\xff" * BS + bytes(2 * BS) + b"\xff" * BS


def test_write_same_unmap_bit_needs_unmap_support(disk: MemDisk) -> None:
    out = run(disk, rw16(0x93, 0, 1, flags=0x08), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 3))


def test_write_same_field_errors(disk: MemDisk) -> None:
    assert_check(run(disk, rw10(0x41, 0, 0), bytes(BS)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(7))
    assert_check(run(disk, rw16(0x93, 0, 0), bytes(BS)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(10))
    assert_check(
        run(disk, rw10(0x41, 0, 1, flags=0x10), bytes(BS)), ILLEGAL_REQUEST, 0x24,
        sks=cdb_sks(1, 4),
    )  # fmt: skip
    assert_check(run(disk, rw10(0x41, BLOCKS - 1, 2), bytes(BS)), ILLEGAL_REQUEST, 0x21)
    assert_mismatch(run(disk, rw10(0x41, 0, 1), b"\x01" * 100))  # less than one block
    big = MemDisk(make_device(blocks=(64 << 20) // BS + 8))
    out = run(big, rw16(0x93, 0, (64 << 20) // BS + 1), bytes(BS))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(10))  # MAXIMUM WRITE SAME LENGTH
    out = run(disk, rw16(0x93, 0, BLOCKS + 1), bytes(BS))  # the limit is the LUN's size
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(10))


# --- UNMAP -----------------------------------------------------------------------------------


def test_unmap_unsupported_is_invalid_opcode(disk: MemDisk) -> None:
    out = run(disk, unmap_cdb(24), unmap_params((0, 1)))
    assert_check(out, ILLEGAL_REQUEST, 0x20)


def test_unmap_ranges(thin: ThinDisk) -> None:
    thin.mem[:] = b"\xee" * len(thin.mem)
    params = unmap_params((1, 2), (10, 0), (20, 1))
    assert_good(run(thin, unmap_cdb(len(params)), params))
    assert thin.unmapped == [(BS, 2 * BS), (20 * BS, BS)]
    assert thin.mem[BS : 3 * BS] == bytes(2 * BS) and thin.mem[3 * BS] == 0xEE


def test_unmap_empty_parameter_list(thin: ThinDisk) -> None:
    assert_good(run(thin, unmap_cdb(0)))
    assert thin.unmapped == []


def test_unmap_parameter_list_length_errors(thin: ThinDisk) -> None:
    assert_check(run(thin, unmap_cdb(4), bytes(4)), ILLEGAL_REQUEST, 0x1A)
    params = unmap_params((1, 1), descriptors_len=32)  # says 2 descriptors, carries 1
    assert_check(run(thin, unmap_cdb(len(params)), params), ILLEGAL_REQUEST, 0x1A)
    assert thin.unmapped == []


def test_unmap_partial_descriptor_is_ignored(thin: ThinDisk) -> None:
    params = unmap_params((1, 1)) + bytes(8)
    params = params[:2] + (24).to_bytes(2, "big") + params[4:]
    assert_good(run(thin, unmap_cdb(len(params)), params))
    assert thin.unmapped == [(BS, BS)]


def test_unmap_out_of_range_unmaps_nothing(thin: ThinDisk) -> None:
    params = unmap_params((0, 1), (BLOCKS - 1, 2))
    assert_check(run(thin, unmap_cdb(len(params)), params), ILLEGAL_REQUEST, 0x21)
    assert thin.unmapped == []


def test_unmap_limits(thin: ThinDisk) -> None:
    class Limited(ThinDisk):
        max_unmap_descriptors = 1
        max_unmap_bytes = 4 * BS

    limited = Limited(make_device())
    params = unmap_params((0, 1), (5, 1))
    assert_check(
        run(limited, unmap_cdb(len(params)), params), ILLEGAL_REQUEST, 0x26, sks=param_sks(2)
    )
    params = unmap_params((0, 5))
    assert_check(
        run(limited, unmap_cdb(len(params)), params), ILLEGAL_REQUEST, 0x26, sks=param_sks(16)
    )
    assert limited.unmapped == []


def test_unmap_anchor_is_unsupported(thin: ThinDisk) -> None:
    params = unmap_params((0, 1))
    out = run(thin, unmap_cdb(len(params), flags=0x01), params)
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 0))


# --- COMPARE AND WRITE ---------------------------------------------------------------------


def test_compare_and_write_match_writes(disk: MemDisk) -> None:
    disk.mem[4 * BS : 5 * BS] = pattern(BS)
    assert_good(run(disk, caw(4, 1), pattern(BS) + b"\x77" * BS))
    assert disk.mem[4 * BS : 5 * BS] == b"\x77" * BS


def test_compare_and_write_miscompare_writes_nothing(disk: MemDisk) -> None:
    disk.mem[4 * BS : 5 * BS] = pattern(BS)
    expected = bytearray(pattern(BS))
    expected[5] ^= 0x80
    out = run(disk, caw(4, 1), bytes(expected) + b"\x77" * BS)
    assert_check(out, MISCOMPARE, 0x1D, info=5)
    assert out.result.sense[0] == 0xF0  # VALID: INFORMATION holds the offset
    assert disk.mem[4 * BS : 5 * BS] == pattern(BS)


def test_compare_and_write_miscompare_in_descriptor_format(disk: MemDisk) -> None:
    set_d_sense(disk)
    out = run(disk, caw(0, 1), b"\x01" + bytes(BS - 1) + bytes(BS))
    info = bytes([0x00, 0x0A, 0x80, 0x00]) + bytes(8)
    assert out.result.sense == bytes([0x72, 0x0E, 0x1D, 0x00, 0, 0, 0, 12]) + info


def test_compare_and_write_fields(disk: MemDisk) -> None:
    assert_check(run(disk, caw(0, 2), bytes(4 * BS)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(13))
    assert_check(run(disk, caw(BLOCKS, 1), bytes(2 * BS)), ILLEGAL_REQUEST, 0x21)
    assert_mismatch(run(disk, caw(0, 1), bytes(BS)))  # data-out must be 2 blocks
    assert_mismatch(run(disk, caw(0, 1), bytes(3 * BS)))
    assert_good(run(disk, caw(0, 0), buf_len=0))
    assert_mismatch(run(disk, caw(0, 0), bytes(2 * BS)))  # 0 blocks: no data-out
    assert disk.mem == bytes(len(disk.mem))


def test_compare_and_write_fua_flushes(disk: MemDisk) -> None:
    assert_good(run(disk, caw(0, 1, flags=0x08), bytes(2 * BS)))
    assert disk.flushes == 1
    assert_good(run(disk, caw(0, 0, flags=0x08), buf_len=0))  # 0 blocks: nothing at all
    assert disk.flushes == 1


# --- REPORT SUPPORTED OPERATION CODES -------------------------------------------------------


def test_rsoc_all_commands(disk: MemDisk, thin: ThinDisk) -> None:
    listed = all_commands(disk)
    assert (0x28, None, 10) in listed and (0x9E, 0x10, 16) in listed and (0xA3, 0x0C, 12) in listed
    assert (0x42, None, 10) not in listed
    assert (0x42, None, 10) in all_commands(thin)
    assert listed == sorted(listed, key=lambda c: (c[0], c[1] or 0))
    data = run(disk, rsoc(0)).data_in
    assert data[4:12] == bytes([0x00, 0, 0, 0, 0, 0x00, 0, 6])  # TEST UNIT READY first


def test_rsoc_with_timeouts_descriptors(disk: MemDisk) -> None:
    assert [c[0] for c in all_commands(disk, rctd=True)] == [c[0] for c in all_commands(disk)]
    data = run(disk, rsoc(0, rctd=True)).data_in
    assert data[12:24] == bytes([0, 0x0A]) + bytes(10)


def test_rsoc_never_lies(thin: ThinDisk) -> None:
    """Everything listed is served; every opcode not listed gets 20/00."""
    listed = all_commands(thin)
    for op, sa, cdb_len in listed:
        cdb = bytearray(cdb_len)
        cdb[0] = op
        if sa is not None:
            cdb[1] = sa
        sense = run(thin, bytes(cdb), bytes(BS * 2)).result.sense
        assert sense[12:14] != bytes([0x20, 0x00]), hex(op)
        if sa is not None:  # the service action itself was not refused
            assert sense[15:18] != cdb_sks(1, 4), hex(op)
    listed_ops = {op for op, _, _ in listed}
    for op in set(range(256)) - listed_ops:
        out = run(thin, bytes([op]) + bytes(15), buf_len=0)
        assert_check(out, ILLEGAL_REQUEST, 0x20)


# READ/WRITE/VERIFY/WRITE AND VERIFY (10/12/16), WRITE SAME (10/16), COMPARE AND WRITE,
# ORWRITE(16), WRITE ATOMIC(16): byte 1 bits 7-5 are one xxPROTECT field.
PROTECT_FIELD_OPCODES = frozenset({0x28, 0xA8, 0x88, 0x2A, 0xAA, 0x8A, 0x2F, 0xAF, 0x8F,
                                   0x2E, 0xAE, 0x8E, 0x41, 0x93, 0x89, 0x8B, 0x9C})


def test_rsoc_usage_data_matches_the_reserved_bit_checks(thin: ThinDisk) -> None:
    """A bit the usage data leaves clear is rejected with a pointer at exactly that bit."""
    for op, sa, cdb_len in all_commands(thin):
        one = run(thin, rsoc(2 if sa is not None else 1, op, sa or 0)).data_in
        assert one[:4] == bytes([0, 0x03]) + cdb_len.to_bytes(2, "big")
        usage = one[4 : 4 + cdb_len]
        assert usage[0] == op
        for byte in range(1, cdb_len):
            for bit in range(8):
                if usage[byte] & (1 << bit):
                    continue
                cdb = bytearray(cdb_len)
                cdb[0] = op
                cdb[1] = sa or 0
                cdb[byte] |= 1 << bit
                out = run(thin, bytes(cdb), bytes(2 * BS))
                # A bit of a byte-1 protection field: the pointer names the field's bit 7.
                protect = byte == 1 and bit >= 5 and op in PROTECT_FIELD_OPCODES
                assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(byte, 7 if protect else bit))


def test_rsoc_one_command(disk: MemDisk) -> None:
    out = run(disk, rsoc(1, 0x28))
    assert_good(out)
    assert out.data_in == bytes(
        [0, 0x03, 0, 10, 0x28, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]
    )
    with_timeouts = run(disk, rsoc(1, 0x28, rctd=True)).data_in
    assert with_timeouts[:2] == bytes([0, 0x83]) and with_timeouts[14:] == bytes([0, 0x0A]) + bytes(
        10
    )
    assert run(disk, rsoc(1, 0xC0)).data_in == bytes([0, 0x01, 0, 0])
    assert run(disk, rsoc(2, 0x9E, 0x12)).data_in == bytes([0, 0x01, 0, 0])
    cap16 = run(disk, rsoc(2, 0x9E, 0x10)).data_in
    assert cap16[:6] == bytes([0, 0x03, 0, 16, 0x9E, 0x1F])
    assert run(disk, rsoc(3, 0x28)).data_in == out.data_in
    assert run(disk, rsoc(3, 0x9E, 0x10)).data_in == cap16


def test_rsoc_unmap_bit_reported_only_with_unmap(disk: MemDisk, thin: ThinDisk) -> None:
    assert run(disk, rsoc(1, 0x41)).data_in[5] == 0x00
    assert run(thin, rsoc(1, 0x41)).data_in[5] == 0x08
    assert run(thin, rsoc(1, 0x93)).data_in[5] == 0x09


def test_rsoc_invalid_requests(disk: MemDisk) -> None:
    assert_check(run(disk, rsoc(1, 0x9E)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(3))
    assert_check(run(disk, rsoc(2, 0x28)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(3))
    assert_check(run(disk, rsoc(5)), ILLEGAL_REQUEST, 0x24, sks=cdb_sks(2, 2))


def test_rsoc_allocation_length(disk: MemDisk) -> None:
    out = run(disk, struct.pack(">BBBBHIxB", 0xA3, 0x0C, 0, 0, 0, 6, 0))
    assert out.result.read_len == 6
    assert out.data_in[4:6] == bytes([0x00, 0x00])


# --- START STOP UNIT / PREVENT ALLOW MEDIUM REMOVAL ----------------------------------------


def test_start_stop_unit(disk: MemDisk) -> None:
    assert_good(run(disk, bytes([0x1B, 0, 0, 0, 0x01, 0])))  # start
    assert disk.flushes == 0
    assert_good(run(disk, bytes([0x1B, 1, 0, 0, 0x00, 0])))  # stop: cache written back
    assert disk.flushes == 1
    assert_good(run(disk, bytes([0x1B, 0, 0, 0, 0x04, 0])))  # stop, NO_FLUSH
    assert disk.flushes == 1


def test_prevent_allow_medium_removal(disk: MemDisk) -> None:
    assert_good(run(disk, bytes([0x1E, 0, 0, 0, 0, 0])))
    out = run(disk, bytes([0x1E, 0, 0, 0, 1, 0]))
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(4, 0))
