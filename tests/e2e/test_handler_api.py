"""The handler API against the real kernel: RECONFIG (dev_size, emulate_write_cache
written in configfs) reaches READ CAPACITY, MODE SENSE and a unit attention, and a
slow command no longer holds up fast ones when the handler serves concurrently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, Status

pytestmark = pytest.mark.vm

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
SIZE = 16 << 20


def _configfs_write(lun: Lun, attribute: str, value: int) -> None:
    lun.vm.run(["sh", "-c", f"echo {value} > {lun.backstore_dir}/attrib/{attribute}"],
               check=True)


def test_reconfig_of_dev_size_and_write_cache_reaches_the_initiator(
    make_lun: Callable[..., Lun],
) -> None:
    lun = make_lun(size=SIZE, handler="tcmu.handlers.ramdisk:RamDisk")
    assert lun.attribute("emulate_write_cache") == "0"  # the kernel's default
    assert lun.sd.startswith("/dev/sd")  # the sd probe is over: nothing else in flight
    _configfs_write(lun, "dev_size", 2 * SIZE)
    lun.cdb(cdb.test_unit_ready()).expect_check(SenseKey.UNIT_ATTENTION,
                                                Asc.CAPACITY_DATA_HAS_CHANGED)
    cap = lun.cdb(cdb.read_capacity_16(), data_in_len=32).expect_good().data
    assert int.from_bytes(cap[:8], "big") == 2 * SIZE // 512 - 1
    last = 2 * SIZE // 512 - 1
    lun.cdb(cdb.write_10(last, 1), data_out=b"\xa5" * 512).expect_good()
    assert lun.cdb(cdb.read_10(last, 1), data_in_len=512).expect_good().data == b"\xa5" * 512

    _configfs_write(lun, "emulate_write_cache", 1)
    lun.cdb(cdb.test_unit_ready()).expect_check(SenseKey.UNIT_ATTENTION,
                                                Asc.MODE_PARAMETERS_CHANGED)
    caching = lun.cdb(cdb.mode_sense_6(0x08, dbd=True), data_in_len=255).expect_good().data
    assert caching[4] & 0x3F == 0x08 and caching[6] & 0x04  # WCE now 1


def _slow_and_fast_reads(lun: Lun) -> tuple[float, list[float]]:
    """One slow READ (LBA 0) in the background, then three fast ones (LBA 4096) while it
    is in flight; returns the completion times the handler logged."""
    sg = lun.sg
    script = (
        f"sg_raw -r 512 {sg} 28 00 00 00 00 00 00 00 01 00 >/dev/null 2>&1 & "
        "sleep 0.5; "
        f"for i in 1 2 3; do sg_raw -r 512 {sg} 28 00 00 00 10 00 00 00 01 00 "
        ">/dev/null 2>&1 || exit 1; done; wait"
    )
    lun.vm.run(["sh", "-c", script], check=True, timeout=120)
    reads = [c for c in lun.handler_commands()
             if c.opcode == Opcode.READ_10 and c.cdb[7:9] == b"\x00\x01"]  # not the sd probe
    slow = [c.t for c in reads if c.cdb[2:6] == bytes(4)]
    fast = [c.t for c in reads if c.cdb[2:6] == bytes([0, 0, 0x10, 0])]
    assert len(slow) == 1 and len(fast) == 3, reads
    return slow[0], fast


@pytest.mark.parametrize(("handler", "concurrent"), [("PooledSlowStartRamDisk", True),
                                                     ("SlowStartRamDisk", False)])
def test_a_slow_read_no_longer_blocks_fast_ones(
    make_lun: Callable[..., Lun], handler: str, concurrent: bool
) -> None:
    """A 3 s read and three fast ones behind it: on a worker pool the fast ones complete
    while the slow one runs; served one at a time (workers=0) they wait for it."""
    lun = make_lun(size=SIZE, handler=f"{HERE / 'handler_api_handlers.py'}:{handler}")
    assert lun.sd.startswith("/dev/sd")  # the sd probe (which reads LBA 0 too) is over
    slow, fast = _slow_and_fast_reads(lun)
    if concurrent:
        assert all(t < slow for t in fast), (slow, fast)  # completed while the slow one ran
    else:
        assert all(t > slow for t in fast), (slow, fast)


# --- the examples ---------------------------------------------------------------------------


def test_the_options_example(make_lun: Callable[..., Lun]) -> None:
    lun = make_lun(size=SIZE, handler=f"{EXAMPLES}/options_disk.py:OptionsDisk",
                   handler_options={"fill": "165", "read_only": "yes"})
    assert lun.cdb(cdb.read_10(100, 2), data_in_len=1024).expect_good().data == b"\xa5" * 1024
    lun.cdb(cdb.write_10(100, 1), data_out=bytes(512)).expect_check(
        SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)


def test_the_async_example_serves_reads_side_by_side(make_lun: Callable[..., Lun]) -> None:
    lun = make_lun(size=SIZE, handler=f"{EXAMPLES}/async_disk.py:AsyncDisk",
                   handler_options={"latency_ms": "1500"})
    lun.cdb(cdb.write_10(4096, 1), data_out=b"\x5a" * 512).expect_good()
    reads = " ".join(f"sg_raw -r 512 {lun.sg} 28 00 00 00 {lba:02x} 00 00 00 01 00 "
                     ">/dev/null 2>&1 &" for lba in (0x11, 0x12, 0x13, 0x14))
    lun.vm.run(["sh", "-c", f"{reads} wait"], check=True, timeout=120)
    done = [c.t for c in lun.handler_commands()
            if c.opcode == Opcode.READ_10 and c.cdb[4] in (0x11, 0x12, 0x13, 0x14)]
    assert len(done) == 4
    assert max(done) - min(done) < 1.5, done  # one by one they would take 1.5 s each
    assert lun.cdb(cdb.read_10(4096, 1), data_in_len=512).expect_good().data == b"\x5a" * 512


def test_the_extension_example(make_lun: Callable[..., Lun]) -> None:
    lun = make_lun(size=SIZE, handler=f"{EXAMPLES}/vendor_disk.py:VendorDisk")
    lun.cdb(bytes([Opcode.SEND_DIAGNOSTIC, 0x04, 0, 0, 0, 0])).expect_good()  # self-test
    one = lun.cdb(cdb.report_supported_opcodes(1, Opcode.SEND_DIAGNOSTIC),
                  data_in_len=64).expect_good().data
    assert one[1] & 0x07 == 0x03  # SUPPORT: supported, as the standard says
    pages = lun.cdb(cdb.inquiry(evpd=True, page=0x00), data_in_len=255).expect_good().data
    assert 0xC0 in pages[4:]
    firmware = lun.cdb(cdb.inquiry(evpd=True, page=0xC0), data_in_len=255).expect_good().data
    assert firmware[4:].startswith(b"vendor-disk")
    page = lun.cdb(cdb.mode_sense_6(0x21, dbd=True), data_in_len=255).expect_good().data
    assert page[4:] == bytes([0x21, 2, 0, 0])
    params = bytes(4) + bytes([0x21, 2, 0x01, 0])
    lun.cdb(cdb.mode_select_6(len(params)), data_out=params).expect_good()
    page = lun.cdb(cdb.mode_sense_6(0x21, dbd=True), data_in_len=255).expect_good().data
    assert page[4:] == bytes([0x21, 2, 0x01, 0])
    lun.cdb(cdb.write_10(8, 1), data_out=b"\x33" * 512).expect_good()  # verified writes
    assert lun.handler_commands()[-1].status == Status.GOOD
