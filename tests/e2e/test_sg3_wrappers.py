"""Every sg3_utils wrapper against a real LUN: the tool's exit status, and its parsed
output agreeing with what SG_IO says (the parsers were written from the 1.46 sources;
this is where they meet the real tools' output)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import PrOutAction

pytestmark = pytest.mark.vm


def test_sg_turs(shared_lun: Lun) -> None:
    tool = shared_lun.sg3.sg_turs(number=3)
    assert (tool.exit_code, tool.ready) == (0, True), tool.stderr


def test_sg_luns_lists_lun_0(shared_lun: Lun) -> None:
    tool = shared_lun.sg3.sg_luns()
    assert tool.exit_code == 0, tool.stderr
    assert list(tool.luns) == [0]


@pytest.mark.parametrize("page", [0x00, 0x80, 0x83, 0xB0])
def test_sg_vpd_returns_the_page_sg_io_returns(shared_lun: Lun, page: int) -> None:
    tool = shared_lun.sg3.sg_vpd(page=page)
    assert tool.exit_code == 0, tool.stderr
    raw = shared_lun.cdb(cdb.inquiry(evpd=True, page=page, alloc_len=252),
                         data_in_len=252).expect_good().data
    assert tool.data == raw[: 4 + struct.unpack_from(">H", raw, 2)[0]]


def test_sg_modes_reports_the_caching_page(shared_lun: Lun) -> None:
    tool = shared_lun.sg3.sg_modes(page=0x08)
    assert tool.exit_code == 0, tool.stderr
    caching = tool.page(0x08)
    assert caching is not None and caching[0] & 0x3F == 0x08


def test_sg_write_same_then_sg_verify_with_bytchk(shared_lun: Lun) -> None:
    block = bytes([0xC3]) * shared_lun.block_size
    tool = shared_lun.sg3.sg_write_same(lba=200, blocks=4, data=block)
    assert tool.exit_code == 0, tool.stderr
    back = shared_lun.cdb(cdb.read_10(200, 4), data_in_len=4 * len(block)).expect_good().data
    assert back == block * 4
    assert shared_lun.sg3.sg_verify(lba=200, count=4, data=block * 4).exit_code == 0
    assert shared_lun.sg3.sg_verify(lba=200, count=4, data=bytes(4 * len(block))).exit_code == 14


def test_sg_unmap_reads_back_zeroes(shared_lun: Lun) -> None:
    shared_lun.cdb(cdb.write_10(300, 2), data_out=b"\x77" * 1024).expect_good()
    tool = shared_lun.sg3.sg_unmap(extents=[(300, 2)])
    assert tool.exit_code == 0, tool.stderr
    assert shared_lun.cdb(cdb.read_10(300, 2), data_in_len=1024).expect_good().data == bytes(1024)


def test_sg_compare_and_write_writes_on_match_and_reports_a_miscompare(shared_lun: Lun) -> None:
    size = shared_lun.block_size
    old, new = b"\x11" * size, b"\x22" * size
    shared_lun.cdb(cdb.write_10(400, 1), data_out=old).expect_good()
    ok = shared_lun.sg3.sg_compare_and_write(lba=400, compare=old, write=new)
    assert ok.exit_code == 0, ok.stderr
    bad = shared_lun.sg3.sg_compare_and_write(lba=400, compare=old, write=old)
    assert bad.exit_code == 14, bad.stderr  # MISCOMPARE: the medium now holds `new`
    assert bad.miscompare_offset == 0
    assert shared_lun.cdb(cdb.read_10(400, 1), data_in_len=size).expect_good().data == new


def test_sg_sync(shared_lun: Lun) -> None:
    assert shared_lun.sg3.sg_sync().exit_code == 0


def test_sg_persist_register_is_handled_by_the_kernel(shared_lun: Lun) -> None:
    # Fails with NOT READY 08/00 when the guest lacks <dbroot>/pr (see vm/guest_boot.py).
    out = shared_lun.sg3.sg_persist_out(action=PrOutAction.REGISTER, sa_key=0xABC)
    assert out.exit_code == 0, out.stderr
    keys = shared_lun.sg3.sg_persist_read_keys()
    assert keys.exit_code == 0, keys.stderr
    assert list(keys.keys) == [0xABC]
    gone = shared_lun.sg3.sg_persist_out(action=PrOutAction.REGISTER, key=0xABC, sa_key=0)
    assert gone.exit_code == 0, gone.stderr
    assert list(shared_lun.sg3.sg_persist_read_keys().keys) == []
    assert all(c.opcode not in (0x5E, 0x5F) for c in shared_lun.handler_commands())


def test_two_luns_with_their_own_geometry_and_attributes(make_lun: Callable[..., Lun]) -> None:
    small = make_lun(size=8 << 20, block_size=4096, attributes={"cmd_time_out": 7})
    large = make_lun(size=96 << 20)
    assert small.sg != large.sg
    for lun in (small, large):
        data = lun.cdb(cdb.read_capacity_10(), data_in_len=8).expect_good().data
        assert struct.unpack(">II", data) == (lun.size // lun.block_size - 1, lun.block_size)
    hba = small.info["uio_name"].split("/")[1]
    attrib = f"/sys/kernel/config/target/core/user_{hba}/{small.name}/attrib/cmd_time_out"
    assert small.vm.read_file(attrib) == b"7\n"

