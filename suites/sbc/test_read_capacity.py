"""READ CAPACITY(10) and READ CAPACITY(16): the last LBA and block length of the LUN as
created (512- and 4096-byte blocks, more than 2^32 blocks), the FFFFFFFFh saturation of
READ CAPACITY(10), allocation length, the obsolete LBA/PMI fields, and the provisioning and
geometry claims of READ CAPACITY(16) (LBPME, LBPRZ, LOGICAL BLOCKS PER PHYSICAL BLOCK
EXPONENT, protection) checked against the rest of what the device says and does.

SBC-4 5.20 (READ CAPACITY(10)), 5.21 (READ CAPACITY(16)), 6.6.6 (Logical Block Provisioning
VPD page); SPC-4 6.35 (REPORT SUPPORTED OPERATION CODES usage data).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities, Capacity
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.sense import FieldPointer
from tcmu_harness.lun import Lun, LunSpec
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey

pytestmark = pytest.mark.vm

RC10 = struct.Struct(">II")
BIG_LUN_BLOCKS = 2**32 + 8  # more blocks than READ CAPACITY(10) can count
UNMAP_BIT = 0x08  # WRITE SAME(10)/(16) CDB byte 1


def read_capacity(lun: Lun) -> tuple[tuple[int, int], Capacity]:
    rc10, rc16 = lun.cdbs([
        (cdb.read_capacity_10(), None, 8), (cdb.read_capacity_16(32), None, 32),
    ])  # fmt: skip
    assert len(rc10.expect_good().data) == 8
    assert len(rc16.expect_good().data) == 32
    return RC10.unpack(rc10.data), Capacity.parse(rc16.data)


def write_same_usage(lun: Lun, opcode: int) -> bytes | None:
    """CDB USAGE DATA of a WRITE SAME from REPORT SUPPORTED OPERATION CODES (one command),
    None when it is not supported."""
    data = lun.cdb(cdb.report_supported_opcodes(1, opcode, alloc_len=64),
                   data_in_len=64).expect_good().data  # fmt: skip
    if data[1] & 0x07 != 0x03:
        return None
    size = int.from_bytes(data[2:4], "big")
    return data[4 : 4 + size]


def test_read_capacity_10_reports_the_last_lba_and_block_length(shared_lun: Lun) -> None:
    """SBC-4 5.20.2: RETURNED LOGICAL BLOCK ADDRESS = last LBA, LOGICAL BLOCK LENGTH IN BYTES =
    the block size; exactly 8 bytes even with a larger buffer."""
    result = shared_lun.cdb(cdb.read_capacity_10(), data_in_len=16).expect_good()
    assert RC10.unpack(result.data) == (shared_lun.blocks - 1, shared_lun.block_size)
    assert result.resid == 8


def test_read_capacity_16_reports_the_last_lba_and_block_length(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 5.21.2: the same last LBA and block length as READ CAPACITY(10); without
    protection information (INQUIRY PROTECT=0) P_TYPE and PROT_EN are 0; bytes 16-31
    reserved."""
    result = shared_lun.cdb(cdb.read_capacity_16(32), data_in_len=32).expect_good()
    rc = Capacity.parse(result.data)
    assert (rc.last_lba, rc.block_size) == (shared_lun.blocks - 1, shared_lun.block_size)
    if len(caps.inquiry) > 5 and not caps.inquiry[5] & 0x01:
        assert (rc.p_type, rc.prot_en, rc.p_i_exponent) == (0, False, 0)
    assert result.data[16:] == bytes(16), f"reserved bytes: {result.data[16:].hex(' ')}"


def test_read_capacity_with_4096_byte_blocks(make_lun: Callable[..., Lun]) -> None:
    """SBC-4 5.20.2 / 5.21.2: a LUN of 4096-byte logical blocks reports 4096 and its own
    last LBA in both commands."""
    lun = make_lun(block_size=4096, size=16 << 20)
    (last10, size10), rc16 = read_capacity(lun)
    assert (last10, size10) == ((16 << 20) // 4096 - 1, 4096)
    assert (rc16.last_lba, rc16.block_size) == ((16 << 20) // 4096 - 1, 4096)


def test_read_capacity_10_saturates_at_ffffffffh_beyond_2_32_blocks(
    make_lun: Callable[..., Lun], lun_spec: LunSpec
) -> None:
    """SBC-4 5.20.2: a last LBA that does not fit 32 bits: RETURNED LOGICAL BLOCK ADDRESS
    FFFFFFFFh (use READ CAPACITY(16)); READ CAPACITY(16) has the real last LBA, and it is
    readable while the next one is out of range."""
    lun = make_big_lun(make_lun, lun_spec)
    (last10, size10), rc16 = read_capacity(lun)
    assert last10 == 0xFFFFFFFF, f"READ CAPACITY(10) last LBA 0x{last10:08x}, expected FFFFFFFFh"
    assert size10 == 512
    assert (rc16.last_lba, rc16.block_size) == (BIG_LUN_BLOCKS - 1, 512)
    last = BIG_LUN_BLOCKS - 1
    data = pattern(last, 1, 512, seed=5)
    write, back, beyond = lun.cdbs([
        (cdb.write_16(last, 1), data, 0), (cdb.read_16(last, 1), None, 512),
        (cdb.read_16(last + 1, 1), None, 512),
    ])  # fmt: skip
    write.expect_good()
    assert_blocks_equal(back.expect_good().data, data, 512, first_lba=last)
    beyond.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


def make_big_lun(make_lun: Callable[..., Lun], lun_spec: LunSpec) -> Lun:
    """A LUN of 2^32 + 8 blocks of 512 bytes (2 TiB): memory or a sparse file that is never
    touched beyond a few blocks. A back-end that cannot even create it skips, saying why."""
    try:
        return make_lun(size=BIG_LUN_BLOCKS * 512, block_size=512)
    except Exception as exc:
        text = str(exc)
        if any(word in text for word in ("File too large", "No space", "Cannot allocate",
                                         "cannot map", "EFBIG", "ENOSPC", "ENOMEM")):
            pytest.skip(f"{lun_spec.handler} cannot hold a 2 TiB LUN here: {text[-300:]}")
        raise


def test_read_capacity_16_allocation_length_truncates(shared_lun: Lun) -> None:
    """SBC-4 5.21.1 / SPC-4 4.2.5.6: ALLOCATION LENGTH 12 with a 32-byte buffer: the first
    12 bytes of the parameter data, residual 20."""
    full, cut = shared_lun.cdbs([
        (cdb.read_capacity_16(32), None, 32), (cdb.read_capacity_16(12), None, 32),
    ])  # fmt: skip
    cut.expect_good()
    assert cut.data == full.expect_good().data[:12], f"{cut.data.hex(' ')}"
    assert cut.resid == 20


@pytest.mark.parametrize("command", ["10", "16"])
def test_read_capacity_lba_without_pmi_is_invalid_field_in_cdb(
    shared_lun: Lun, command: str
) -> None:
    """SBC-4 5.20.1 / 5.21.1: LOGICAL BLOCK ADDRESS not 0 with PMI=0: ILLEGAL REQUEST, INVALID
    FIELD IN CDB, field pointer on the LOGICAL BLOCK ADDRESS (byte 2)."""
    if command == "10":
        raw = bytearray(cdb.read_capacity_10())
        raw[2:6] = (1).to_bytes(4, "big")
        size = 8
    else:
        raw = bytearray(cdb.read_capacity_16(32))
        raw[2:10] = (1).to_bytes(8, "big")
        size = 32
    shared_lun.cdb(bytes(raw), data_in_len=size).expect_check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field=FieldPointer(True, 2, None))


def test_lbpme_is_set_iff_the_device_offers_a_way_to_unmap(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 5.21.2 / 4.7: LBPME=1 (logical block provisioning management) exactly when the
    device offers UNMAP or WRITE SAME with the UNMAP bit (REPORT SUPPORTED OPERATION CODES
    lists UNMAP, or a WRITE SAME's CDB usage data has the UNMAP bit)."""
    assert caps.capacity is not None, "READ CAPACITY(16) failed during discovery"
    if caps.rsoc is None:
        pytest.skip("REPORT SUPPORTED OPERATION CODES is not supported: the unmap mechanisms "
                    "cannot be listed")
    ways = []
    if caps.claims(Opcode.UNMAP):
        ways.append("UNMAP")
    for opcode, name in ((Opcode.WRITE_SAME_10, "WRITE SAME(10)"),
                         (Opcode.WRITE_SAME_16, "WRITE SAME(16)")):
        usage = write_same_usage(shared_lun, opcode)
        if usage is not None and usage[1] & UNMAP_BIT:
            ways.append(f"{name} UNMAP=1")
    assert caps.capacity.lbpme == bool(ways), (
        f"LBPME={int(caps.capacity.lbpme)} but the unmap mechanisms offered are {ways or 'none'}")


def test_lbprz_agrees_with_the_logical_block_provisioning_vpd_page(caps: Capabilities) -> None:
    """SBC-4 5.21.2 / 6.6.6: LBPRZ=1 iff the Logical Block Provisioning VPD page's LBPRZ field
    is 001b (unmapped blocks read zeroes); LBPME=0 implies LBPRZ=0."""
    assert caps.capacity is not None
    if not caps.capacity.lbpme:
        assert not caps.capacity.lbprz, "LBPRZ=1 although LBPME=0"
        return
    caps.require_vpd(0xB2)
    provisioning = caps.provisioning
    assert provisioning is not None
    assert caps.capacity.lbprz == (provisioning.lbprz == 0b001), (
        f"READ CAPACITY(16) LBPRZ={int(caps.capacity.lbprz)}, VPD B2h LBPRZ field "
        f"{provisioning.lbprz:03b}b")


def test_logical_blocks_per_physical_block_exponent_is_the_session_setting(
    caps: Capabilities, lun_spec: LunSpec
) -> None:
    """SBC-4 5.21.2: LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT is the geometry the LUN was
    given (--tcmu-physical-block-exponent); LOWEST ALIGNED LOGICAL BLOCK ADDRESS 0."""
    assert caps.capacity is not None
    expected = int(lun_spec.handler_options.get("physical_block_exponent", "0"))
    assert caps.capacity.lbppbe == expected, (
        f"LBPPBE {caps.capacity.lbppbe}, the LUN was made with exponent {expected}")
    assert caps.capacity.lowest_aligned_lba == 0


def test_logical_blocks_per_physical_block_exponent_3(
    make_lun: Callable[..., Lun], lun_spec: LunSpec
) -> None:
    """SBC-4 5.21.2: a LUN made with physical_block_exponent=3 (8 logical blocks per physical
    block) reports LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT 3."""
    options = {**lun_spec.handler_options, "physical_block_exponent": "3"}
    try:
        lun = make_lun(handler_options=options)
    except Exception as exc:
        pytest.skip(f"{lun_spec.handler} does not take physical_block_exponent=3: "
                    f"{str(exc)[-300:]}")
    data = lun.cdb(cdb.read_capacity_16(32), data_in_len=32).expect_good().data
    rc = Capacity.parse(data)
    assert rc.lbppbe == 3, f"LBPPBE {rc.lbppbe}, expected 3"
    assert (rc.last_lba, rc.block_size) == (lun.blocks - 1, lun.block_size)
