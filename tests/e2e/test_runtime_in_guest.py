"""The Python TCMU runtime against the real kernel: the reference handlers serve LUNs
that sg3_utils, the block layer (dd on /dev/sdX) and SG_IO all agree on, and a
handler that dies is replaced on the live device without touching the backstore."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Opcode, Status

pytestmark = pytest.mark.vm

HANDLERS = {
    "ramdisk": {"handler": "tcmu.handlers.ramdisk:RamDisk"},
    "filedisk": {"handler": "tcmu.handlers.filedisk:FileDisk",
                 "handler_options": {"path": "/run/tcmu-harness/filedisk.img"}},
}
SIZE = 32 << 20


@pytest.fixture(params=sorted(HANDLERS))
def ref_lun(request: pytest.FixtureRequest, make_lun: Callable[..., Lun]) -> Lun:
    return make_lun(size=SIZE, **HANDLERS[request.param])


def test_sg_inq_and_sg_readcap_are_answered_by_the_handler(ref_lun: Lun) -> None:
    inq = ref_lun.sg3.sg_inq()
    assert (inq.exit_code, inq.peripheral_type, inq.vendor) == (0, 0, "TCMUHARN")
    cap = ref_lun.sg3.sg_readcap()
    assert (cap.exit_code, cap.last_lba, cap.block_size) == (0, SIZE // 512 - 1, 512)
    seen = {c.opcode for c in ref_lun.handler_commands()}
    assert {Opcode.INQUIRY, Opcode.READ_CAPACITY_10} <= seen


def test_dd_through_the_block_device_reads_back_what_it_wrote(ref_lun: Lun) -> None:
    vm = ref_lun.vm
    script = (
        "set -e; head -c 1048576 /dev/urandom > /tmp/pattern;"
        f"dd if=/tmp/pattern of={ref_lun.sd} bs=64k seek=16 oflag=direct status=none;"
        f"dd if={ref_lun.sd} of=/tmp/back bs=64k skip=16 count=16 iflag=direct status=none;"
        "sha256sum /tmp/pattern /tmp/back"
    )
    output = vm.run(["sh", "-c", script], check=True).text
    digests = [line.split()[0] for line in output.splitlines()]
    assert len(digests) == 2 and digests[0] == digests[1]
    # ...and SG_IO sees the same bytes at the same place (64 KiB * 16 = LBA 2048).
    pattern = vm.read_file("/tmp/pattern")
    back = ref_lun.cdb(cdb.read_10(2048, 128), data_in_len=65536).expect_good().data
    assert back == pattern[:65536]


def test_sg_io_write_is_visible_through_the_block_device(ref_lun: Lun) -> None:
    data = bytes(range(256)) * 16  # 8 blocks
    ref_lun.cdb(cdb.write_10(4096, 8), data_out=data).expect_good()
    ref_lun.vm.run(["blockdev", "--flushbufs", ref_lun.sd], check=True)
    read = ref_lun.vm.run(["dd", f"if={ref_lun.sd}", "bs=512", "skip=4096", "count=8",
                           "iflag=direct", "status=none"], check=True)
    assert hashlib.sha256(read.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_killed_handler_is_replaced_on_the_live_device(
    make_lun: Callable[..., Lun],
) -> None:
    lun = make_lun(size=SIZE, handler="tcmu.handlers.filedisk:FileDisk",
                   handler_options={"path": "/run/tcmu-harness/restart.img"})
    data = b"\x5a" * 4096
    lun.cdb(cdb.write_10(10, 8), data_out=data).expect_good()
    assert lun.sd.startswith("/dev/sd")  # the sd probe is over: no kernel command in flight
    old_pid = lun.info["handler_pid"]
    assert lun.kill_handler() == -9
    lun.restart_handler()
    assert lun.info["handler_pid"] != old_pid
    assert lun.info["uio_name"].startswith("tcm-user/")
    lun.cdb(cdb.test_unit_ready()).expect_good()
    assert lun.cdb(cdb.read_10(10, 8), data_in_len=4096).expect_good().data == data
    assert lun.handler_commands()[-1].status == Status.GOOD


def test_the_readme_example_handler_serves_a_lun(make_lun: Callable[..., Lun]) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "dict_disk.py"
    lun = make_lun(size=SIZE, handler=f"{example}:DictDisk")
    data = bytes(range(256)) * 8
    lun.cdb(cdb.write_10(7, 4), data_out=data).expect_good()
    assert lun.cdb(cdb.read_10(6, 6), data_in_len=3072).expect_good().data == (
        bytes(512) + data + bytes(512)
    )
    assert lun.sg3.sg_inq().product == "DictDisk"
