"""The block device VPD pages, their claims checked against what the device does: Block
Limits (B0h: transfer, WRITE SAME, UNMAP and COMPARE AND WRITE limits, WSNZ, unmap
granularity), Block Device Characteristics (B1h: medium rotation rate) and Logical Block
Provisioning (B2h: LBPU, LBPWS, LBPWS10, LBPRZ, ANC_SUP, provisioning type) against REPORT
SUPPORTED OPERATION CODES, READ CAPACITY(16) and the commands themselves.

SBC-4 6.6.2 (B1h), 6.6.4 (B0h), 6.6.6 (B2h); the commands in SBC-4 clause 5 (READ, WRITE
SAME, UNMAP, COMPARE AND WRITE 5.3). Limits that need a LUN larger than the limit get their own LUN.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import BlockLimits, Capabilities, Provisioning
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun, LunSpec
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

VPD_ALLOC = 255
SG_IO_MAX = 1 << 20  # the most SG_IO carries in one command here
NO_MAXIMUM = 0xFFFFFFFF  # MAXIMUM UNMAP LBA COUNT / BLOCK DESCRIPTOR COUNT: no limit
UNMAP_BIT = 0x08  # WRITE SAME CDB byte 1
BIG_LUN_BLOCKS = 2**32 + 8
RESERVED_ROTATION = range(0x0002, 0x0401)


def block_limits(caps: Capabilities) -> BlockLimits:
    caps.require_vpd(0xB0)
    limits = caps.block_limits
    assert limits is not None
    return limits


def provisioning(caps: Capabilities) -> Provisioning:
    caps.require_vpd(0xB2)
    page = caps.provisioning
    assert page is not None
    return page


def read_block_limits(lun: Lun) -> BlockLimits:
    result = lun.cdb(cdb.inquiry(evpd=True, page=0xB0, alloc_len=VPD_ALLOC),
                     data_in_len=VPD_ALLOC).expect_good()  # fmt: skip
    return BlockLimits.parse(result.data)


def usage_data(lun: Lun, opcode: int) -> bytes | None:
    """CDB USAGE DATA from REPORT SUPPORTED OPERATION CODES (one command), None when the
    command is not supported."""
    data = lun.cdb(cdb.report_supported_opcodes(1, opcode, alloc_len=64),
                   data_in_len=64).expect_good().data  # fmt: skip
    if data[1] & 0x07 != 0x03:
        return None
    return data[4 : 4 + int.from_bytes(data[2:4], "big")]


def make_larger_lun(make_lun: Callable[..., Lun], lun_spec: LunSpec, blocks: int) -> Lun:
    try:
        return make_lun(size=blocks * lun_spec.block_size)
    except Exception as exc:
        pytest.skip(f"{lun_spec.handler} cannot make a LUN of {blocks} blocks: "
                    f"{str(exc)[-300:]}")


def read_blocks(lun: Lun, lbas: list[int]) -> list[bytes]:
    results = lun.cdbs([(cdb.read_16(lba, 1), None, lun.block_size) for lba in lbas])
    return [r.expect_good().data for r in results]


# --- Block Limits (B0h) ------------------------------------------------------------------------


def test_block_limits_page_length_is_3ch(caps: Capabilities) -> None:
    """SBC-4 6.6.4: Block Limits VPD page: PAGE CODE B0h, PAGE LENGTH 003Ch, the peripheral
    byte of standard INQUIRY."""
    page = caps.require_vpd(0xB0)
    assert page[1] == 0xB0
    assert int.from_bytes(page[2:4], "big") == 0x3C, f"PAGE LENGTH 0x{page[2:4].hex()}"
    assert len(page) == 64
    assert page[0] == caps.inquiry[0]


def test_maximum_transfer_length_does_not_exceed_hw_max_sectors(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 6.6.4: MAXIMUM TRANSFER LENGTH is a limit the device can keep: behind LIO a
    command carries at most attrib/hw_max_sectors blocks, so it is reported (not 0) and is
    no larger."""
    limits = block_limits(caps)
    hw_max = int(shared_lun.attribute("hw_max_sectors"))
    assert limits.max_transfer != 0, (
        f"MAXIMUM TRANSFER LENGTH 0 (no limit) but LIO passes at most {hw_max} blocks")
    assert limits.max_transfer <= hw_max, (
        f"MAXIMUM TRANSFER LENGTH {limits.max_transfer} blocks > hw_max_sectors {hw_max}")


def test_read_and_write_of_the_maximum_transfer_length_are_good(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 6.6.4 (READ(16), WRITE(16)): a WRITE(16) and a READ(16) of exactly MAXIMUM
    TRANSFER LENGTH blocks are served, and the data reads back."""
    limits = block_limits(caps)
    lun = shared_lun
    blocks = limits.max_transfer
    if not blocks or blocks * lun.block_size > SG_IO_MAX or blocks > lun.blocks:
        pytest.skip(f"MAXIMUM TRANSFER LENGTH {blocks} does not fit one SG_IO command or the LUN")
    data = pattern(0, blocks, lun.block_size, seed=21)
    write, back = lun.cdbs([
        (cdb.write_16(0, blocks), data, 0), (cdb.read_16(0, blocks), None, len(data)),
    ])  # fmt: skip
    write.expect_good()
    assert_blocks_equal(back.expect_good().data, data, lun.block_size)


@pytest.mark.parametrize("command", ["read-10", "read-16"])
def test_read_beyond_the_maximum_transfer_length_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, command: str
) -> None:
    """SBC-4 6.6.4 (READ(10), READ(16)): TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH:
    ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer on TRANSFER LENGTH (byte 7 of
    READ(10), 10 of READ(16)). The buffer is the most SG_IO carries: the CDB is refused
    before any data moves."""
    limits = block_limits(caps)
    lun = shared_lun
    blocks = limits.max_transfer + 1
    if limits.max_transfer == 0 or blocks > lun.blocks:
        pytest.skip(f"MAXIMUM TRANSFER LENGTH {limits.max_transfer}: no length beyond it fits")
    if command == "read-10":
        if blocks > 0xFFFF:
            pytest.skip(f"{blocks} blocks do not fit READ(10)")
        raw, byte = cdb.read_10(0, blocks), 7
    else:
        raw, byte = cdb.read_16(0, blocks), 10
    buffer = min(blocks * lun.block_size, SG_IO_MAX)
    lun.cdb(raw, data_in_len=buffer).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(True, byte, None))


def test_optimal_transfer_length_fits_the_maximum_and_the_granularity(caps: Capabilities) -> None:
    """SBC-4 6.6.4: OPTIMAL TRANSFER LENGTH <= MAXIMUM TRANSFER LENGTH (when both are
    reported) and a multiple of OPTIMAL TRANSFER LENGTH GRANULARITY."""
    limits = block_limits(caps)
    if limits.optimal_transfer and limits.max_transfer:
        assert limits.optimal_transfer <= limits.max_transfer, (
            f"OPTIMAL {limits.optimal_transfer} > MAXIMUM {limits.max_transfer}")
    if limits.optimal_transfer and limits.optimal_granularity:
        assert limits.optimal_transfer % limits.optimal_granularity == 0, (
            f"OPTIMAL TRANSFER LENGTH {limits.optimal_transfer} is not a multiple of the "
            f"granularity {limits.optimal_granularity}")


def test_maximum_write_same_length_does_not_exceed_the_lun(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 6.6.4: MAXIMUM WRITE SAME LENGTH, when the device offers WRITE SAME, is at most
    the number of logical blocks (a longer WRITE SAME could never be in range)."""
    if not (caps.claims(Opcode.WRITE_SAME_16) or caps.claims(Opcode.WRITE_SAME_10)):
        pytest.skip("the device claims no WRITE SAME")
    limits = block_limits(caps)
    assert limits.max_write_same <= shared_lun.blocks, (
        f"MAXIMUM WRITE SAME LENGTH {limits.max_write_same} > {shared_lun.blocks} blocks")


def test_write_same_of_the_maximum_length_is_good_and_one_block_more_is_refused(
    make_lun: Callable[..., Lun], lun_spec: LunSpec, caps: Capabilities
) -> None:
    """SBC-4 6.6.4 (WRITE SAME(16)): WRITE SAME(16) of exactly MAXIMUM WRITE SAME LENGTH
    blocks writes them all; one block more: ILLEGAL REQUEST, INVALID FIELD IN CDB on NUMBER
    OF LOGICAL BLOCKS (byte 10), nothing written. On a LUN larger than the limit."""
    caps.require(Opcode.WRITE_SAME_16)
    limit = block_limits(caps).max_write_same
    if not limit or limit * lun_spec.block_size > 256 << 20:
        pytest.skip(f"MAXIMUM WRITE SAME LENGTH {limit}: not reported or too long to write")
    lun = make_larger_lun(make_lun, lun_spec, limit + 8)
    limit = read_block_limits(lun).max_write_same
    if not limit or limit + 1 > lun.blocks:
        pytest.skip(f"on a LUN of {lun.blocks} blocks MAXIMUM WRITE SAME LENGTH is {limit}")
    block = pattern(0, 1, lun.block_size, seed=31)
    lun.cdb(cdb.write_same_16(0, limit + 1), data_out=block).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(True, 10, None))
    assert read_blocks(lun, [0, limit]) == [bytes(lun.block_size)] * 2, (
        "the refused WRITE SAME wrote blocks")
    lun.cdb(cdb.write_same_16(0, limit), data_out=block, timeout=120).expect_good()
    first, middle, last, after = read_blocks(lun, [0, limit // 2, limit - 1, limit])
    assert first == middle == last == block, "WRITE SAME did not write every block"
    assert after == bytes(lun.block_size), "WRITE SAME wrote past its range"


def test_unmap_limits_are_reported_iff_unmap_is_offered(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 6.6.4: MAXIMUM UNMAP LBA COUNT and MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT are
    non-zero exactly when UNMAP is supported; the LBA count is at most the number of blocks
    unless FFFFFFFFh (no maximum)."""
    limits = block_limits(caps)
    if caps.rsoc is None:
        pytest.skip("REPORT SUPPORTED OPERATION CODES is not supported")
    if not caps.claims(Opcode.UNMAP):
        assert (limits.max_unmap_lba_count, limits.max_unmap_descriptors) == (0, 0)
        return
    assert limits.max_unmap_lba_count > 0 and limits.max_unmap_descriptors > 0, (
        f"UNMAP offered with MAXIMUM UNMAP LBA COUNT {limits.max_unmap_lba_count}, "
        f"BLOCK DESCRIPTOR COUNT {limits.max_unmap_descriptors}")
    if limits.max_unmap_lba_count != NO_MAXIMUM:
        assert limits.max_unmap_lba_count <= shared_lun.blocks, (
            f"MAXIMUM UNMAP LBA COUNT {limits.max_unmap_lba_count} > {shared_lun.blocks} blocks")


def test_unmap_beyond_the_maximum_unmap_lba_count_is_refused(
    make_lun: Callable[..., Lun], lun_spec: LunSpec, caps: Capabilities
) -> None:
    """SBC-4 6.6.4 (UNMAP): an UNMAP of more blocks than MAXIMUM UNMAP LBA COUNT: ILLEGAL
    REQUEST, INVALID FIELD IN PARAMETER LIST, nothing unmapped; exactly the maximum is GOOD.
    On a LUN larger than the limit."""
    caps.require(Opcode.UNMAP)
    if block_limits(caps).max_unmap_lba_count in (0, NO_MAXIMUM):
        pytest.skip("MAXIMUM UNMAP LBA COUNT is not a limit")
    lun = make_larger_lun(make_lun, lun_spec, BIG_LUN_BLOCKS)
    limit = read_block_limits(lun).max_unmap_lba_count
    if limit in (0, NO_MAXIMUM) or limit + 1 > lun.blocks:
        pytest.skip(f"on a LUN of {lun.blocks} blocks MAXIMUM UNMAP LBA COUNT is {limit}")
    data = pattern(0, 1, lun.block_size, seed=41)
    lun.cdbs([(cdb.write_16(0, 1), data, 0), (cdb.write_16(limit, 1), data, 0)])
    too_many = cdb.unmap_parameter_list([(0, limit + 1)])
    lun.cdb(cdb.unmap(len(too_many)), data_out=too_many).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST)
    assert read_blocks(lun, [0, limit]) == [data, data], "the refused UNMAP unmapped blocks"
    exact = cdb.unmap_parameter_list([(0, limit)])
    lun.cdb(cdb.unmap(len(exact)), data_out=exact, timeout=120).expect_good()
    assert read_blocks(lun, [limit]) == [data], "UNMAP went past its range"


def test_unmap_with_more_descriptors_than_the_maximum_is_refused(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 6.6.4 (UNMAP): more UNMAP block descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR
    COUNT: ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, nothing unmapped; exactly the
    maximum is GOOD."""
    caps.require(Opcode.UNMAP)
    lun = shared_lun
    count = block_limits(caps).max_unmap_descriptors
    if count in (0, NO_MAXIMUM) or 8 + 16 * (count + 1) > 0xFFFF or 2 * count + 2 > lun.blocks // 4:
        pytest.skip(f"MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT {count}: not testable here")
    base = lun.blocks // 2
    lbas = [base + 2 * i for i in range(count + 1)]
    data = pattern(base, 2 * count + 2, lun.block_size, seed=51)
    lun.cdb(cdb.write_16(base, 2 * count + 2), data_out=data).expect_good()
    too_many = cdb.unmap_parameter_list([(lba, 1) for lba in lbas])
    lun.cdb(cdb.unmap(len(too_many)), data_out=too_many).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST)
    back = lun.cdb(cdb.read_16(base, 2 * count + 2), data_in_len=len(data)).expect_good()
    assert_blocks_equal(back.data, data, lun.block_size, first_lba=base,
                        what="blocks of the refused UNMAP")
    exact = cdb.unmap_parameter_list([(lba, 1) for lba in lbas[:count]])
    lun.cdb(cdb.unmap(len(exact)), data_out=exact).expect_good()


def test_compare_and_write_of_the_maximum_length_is_good_and_one_block_more_is_refused(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 5.3 / 6.6.4: COMPARE AND WRITE of MAXIMUM COMPARE AND WRITE LENGTH blocks
    compares and writes; one block more: ILLEGAL REQUEST, INVALID FIELD IN CDB on NUMBER OF
    LOGICAL BLOCKS (byte 13), nothing written."""
    caps.require(Opcode.COMPARE_AND_WRITE)
    lun = shared_lun
    bs = lun.block_size
    limit = block_limits(caps).max_compare_and_write
    assert limit > 0, "COMPARE AND WRITE offered with MAXIMUM COMPARE AND WRITE LENGTH 0"
    if 2 * (limit + 1) * bs > SG_IO_MAX or limit > 254:
        pytest.skip(f"MAXIMUM COMPARE AND WRITE LENGTH {limit}: one more does not fit here")
    lba = lun.blocks // 4
    old = pattern(lba, limit + 1, bs, seed=61)
    new = pattern(lba, limit + 1, bs, seed=62)
    lun.cdb(cdb.write_16(lba, limit + 1), data_out=old).expect_good()
    lun.cdb(cdb.compare_and_write(lba, limit + 1), data_out=old + new).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(True, 13, None))
    back = lun.cdb(cdb.read_16(lba, limit + 1), data_in_len=len(old)).expect_good()
    assert_blocks_equal(back.data, old, bs, first_lba=lba, what="blocks of the refused CAW")
    size = limit * bs
    lun.cdb(cdb.compare_and_write(lba, limit), data_out=old[:size] + new[:size]).expect_good()
    back = lun.cdb(cdb.read_16(lba, limit + 1), data_in_len=len(old)).expect_good()
    assert_blocks_equal(back.data, new[:size] + old[size:], bs, first_lba=lba)


@pytest.mark.parametrize("command", ["write-same-10", "write-same-16"])
def test_write_same_of_zero_blocks_with_wsnz_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, command: str
) -> None:
    """SBC-4 6.6.4 (WRITE SAME(10)/(16)): WSNZ=1: a WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is
    refused: ILLEGAL REQUEST, INVALID FIELD IN CDB on the field (byte 7 / byte 10)."""
    if not block_limits(caps).wsnz:
        pytest.skip("WSNZ=0: NUMBER OF LOGICAL BLOCKS 0 means to the end of the medium")
    lun = shared_lun
    if command == "write-same-10":
        caps.require(Opcode.WRITE_SAME_10)
        raw, byte = cdb.write_same_10(0, 0), 7
    else:
        caps.require(Opcode.WRITE_SAME_16)
        raw, byte = cdb.write_same_16(0, 0), 10
    lun.cdb(raw, data_out=pattern(0, 1, lun.block_size, seed=71)).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(True, byte, None))


def test_unmap_granularity_and_alignment_are_consistent(caps: Capabilities) -> None:
    """SBC-4 6.6.4: UGAVALID=0: UNMAP GRANULARITY ALIGNMENT is not valid (0); UGAVALID=1:
    the alignment is below a non-zero OPTIMAL UNMAP GRANULARITY."""
    limits = block_limits(caps)
    if not limits.ugavalid:
        assert limits.unmap_alignment == 0, (
            f"UGAVALID=0 but UNMAP GRANULARITY ALIGNMENT {limits.unmap_alignment}")
    else:
        assert limits.optimal_unmap_granularity > 0
        assert limits.unmap_alignment < limits.optimal_unmap_granularity


# --- Block Device Characteristics (B1h) --------------------------------------------------------


def test_block_device_characteristics_page_length_and_rotation_rate(caps: Capabilities) -> None:
    """SBC-4 6.6.2: PAGE LENGTH 003Ch; MEDIUM ROTATION RATE 0 (not reported), 1
    (non-rotating) or 0401h-FFFEh rpm (0002h-0400h and FFFFh are reserved)."""
    page = caps.require_vpd(0xB1)
    assert page[1] == 0xB1
    assert int.from_bytes(page[2:4], "big") == 0x3C, f"PAGE LENGTH 0x{page[2:4].hex()}"
    assert len(page) == 64
    rate = int.from_bytes(page[4:6], "big")
    assert rate not in RESERVED_ROTATION and rate != 0xFFFF, (
        f"MEDIUM ROTATION RATE 0x{rate:04x} is reserved")


# --- Logical Block Provisioning (B2h) ----------------------------------------------------------


def test_logical_block_provisioning_page_length(caps: Capabilities) -> None:
    """SBC-4 6.6.6: PAGE LENGTH at least 4 (0004h without a provisioning group descriptor,
    DP=0) and the page is as long as it says."""
    page = caps.require_vpd(0xB2)
    length = int.from_bytes(page[2:4], "big")
    assert page[1] == 0xB2
    assert length >= 4 and len(page) == 4 + length
    if not provisioning(caps).dp:
        assert length == 4, f"DP=0 but PAGE LENGTH {length}"


def test_lbpu_is_set_iff_unmap_is_offered(caps: Capabilities) -> None:
    """SBC-4 6.6.6: LBPU=1 exactly when the device supports UNMAP (listed by REPORT SUPPORTED
    OPERATION CODES)."""
    page = provisioning(caps)
    claimed = caps.claims(Opcode.UNMAP)
    if claimed is None:
        pytest.skip("REPORT SUPPORTED OPERATION CODES is not supported")
    assert page.lbpu == claimed, f"LBPU={int(page.lbpu)}, UNMAP listed: {claimed}"


@pytest.mark.parametrize("command", ["write-same-16", "write-same-10"])
def test_lbpws_is_set_iff_write_same_takes_the_unmap_bit(
    shared_lun: Lun, caps: Capabilities, command: str
) -> None:
    """SBC-4 6.6.6: LBPWS (WRITE SAME(16)) / LBPWS10 (WRITE SAME(10)) = 1 exactly when the
    command's CDB usage data has the UNMAP bit; claimed, WRITE SAME with UNMAP=1 of a zero
    block is GOOD and reads zeroes; not claimed, it is refused (byte 1 bit 3)."""
    page = provisioning(caps)
    opcode = Opcode.WRITE_SAME_16 if command == "write-same-16" else Opcode.WRITE_SAME_10
    claimed = page.lbpws if command == "write-same-16" else page.lbpws10
    usage = usage_data(shared_lun, opcode)
    if usage is None:
        assert not claimed, f"{command} is not supported but its LBPWS bit is set"
        pytest.skip(f"the device does not support {command}")
    assert claimed == bool(usage[1] & UNMAP_BIT), (
        f"LBPWS bit {int(claimed)}, usage data byte 1 = 0x{usage[1]:02x}")
    lun = shared_lun
    lba = 3 * lun.blocks // 4 + (0 if command == "write-same-16" else 64)
    build = cdb.write_same_16 if command == "write-same-16" else cdb.write_same_10
    lun.cdb(cdb.write_16(lba, 8), data_out=pattern(lba, 8, lun.block_size)).expect_good()
    result = lun.cdb(build(lba, 8, unmap=True), data_out=bytes(lun.block_size))
    if not claimed:
        result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                            field=FieldPointer(True, 1, 3))
        return
    result.expect_good()
    back = lun.cdb(cdb.read_16(lba, 8), data_in_len=8 * lun.block_size).expect_good()
    assert_blocks_equal(back.data, bytes(8 * lun.block_size), lun.block_size, first_lba=lba)


def test_provisioning_type_is_reported_iff_lbpme(caps: Capabilities) -> None:
    """SBC-4 6.6.6 / 5.21.2: PROVISIONING TYPE 010b (thin) or 001b (resource) exactly when
    READ CAPACITY(16) has LBPME=1; 000b (full) otherwise; 011b-111b reserved."""
    page = provisioning(caps)
    assert caps.capacity is not None
    assert page.provisioning_type in (0, 1, 2), f"PROVISIONING TYPE {page.provisioning_type}"
    assert (page.provisioning_type != 0) == caps.capacity.lbpme, (
        f"PROVISIONING TYPE {page.provisioning_type:03b}b with LBPME={int(caps.capacity.lbpme)}")


@pytest.mark.parametrize("command", ["unmap", "write-same-16"])
def test_anchor_without_anc_sup_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, command: str
) -> None:
    """SBC-4 6.6.6 (UNMAP, WRITE SAME(16)): ANC_SUP=0: ANCHOR=1 in UNMAP (byte 1 bit 0) or
    WRITE SAME(16) (byte 1 bit 4): ILLEGAL REQUEST, INVALID FIELD IN CDB on the bit; nothing
    changes."""
    if provisioning(caps).anc_sup:
        pytest.skip("ANC_SUP=1: anchoring is supported")
    lun = shared_lun
    lba = 3 * lun.blocks // 4 + 128
    data = pattern(lba, 8, lun.block_size, seed=81)
    lun.cdb(cdb.write_16(lba, 8), data_out=data).expect_good()
    if command == "unmap":
        caps.require(Opcode.UNMAP)
        params = cdb.unmap_parameter_list([(lba, 8)])
        result = lun.cdb(cdb.unmap(len(params), anchor=True), data_out=params)
        field = FieldPointer(True, 1, 0)
    else:
        caps.require(Opcode.WRITE_SAME_16)
        result = lun.cdb(cdb.write_same_16(lba, 8, unmap=True, anchor=True),
                         data_out=bytes(lun.block_size))  # fmt: skip
        field = FieldPointer(True, 1, 4)
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=field)
    back = lun.cdb(cdb.read_16(lba, 8), data_in_len=len(data)).expect_good()
    assert_blocks_equal(back.data, data, lun.block_size, first_lba=lba)
