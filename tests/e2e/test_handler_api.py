"""The handler API against the real kernel: RECONFIG (dev_size, emulate_write_cache
written in configfs) reaches READ CAPACITY, MODE SENSE and a unit attention."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.lun import Lun
from initiator import cdb
from scsi.constants import Asc, SenseKey

pytestmark = pytest.mark.vm

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
