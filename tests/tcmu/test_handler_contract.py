"""The contract a handler author relies on (issue 8): RECONFIG reaches BlockHandler's
geometry and cache state, a BlockHandler lacking read()/write() fails when loaded,
flush() is optional, and a SenseError raised by any handler becomes its CHECK
CONDITION. (Options: test_handler_options.py; concurrency: test_concurrency.py.)"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from blockkit import (
    ILLEGAL_REQUEST,
    MemDisk,
    assert_check,
    assert_good,
    make_device,
    pattern,
    read_capacity_16,
    run,
    rw10,
)
from test_device import make_dev
from test_runner import NlStub, Rig

from tcmu import runner as runmod
from tcmu.block import BlockHandler
from tcmu.handler import (
    Command,
    DeviceInfo,
    Handler,
    Reconfig,
    ReconfigRefused,
    Result,
    ScatterBuffer,
)
from tcmu.handlers.filedisk import FdDisk, FileDisk
from tcmu.handlers.ramdisk import RamDisk
from tcmu.netlink import GenlCmd, TcmuEvent
from tcmu.sense import SenseError
from tcmu.spec import HandlerSpecError, load

UNIT_ATTENTION = 0x06
TUR = bytes(6)
SYNCHRONIZE_CACHE_10 = bytes([0x35]) + bytes(9)
MODE_SENSE_CACHING = bytes([0x1A, 0x08, 0x08, 0, 255, 0])


class GrowingDisk(MemDisk):
    """MemDisk whose storage follows the device size."""

    def reconfig(self, change: Reconfig) -> None:
        self.mem.extend(bytes(max(0, change.new.size - len(self.mem))))


def reconfig_peer(
    tmp_path: Path, handler: Handler, nl_reply_supported: int = 0
) -> tuple[Callable[..., None], NlStub]:
    """A netlink peer for `handler`'s device, which exists with `nl_reply_supported`
    (> 0: the kernel waits for a reply; the peer reads it once, as the device lives)."""
    device = make_dev(tmp_path, 1, handler.device.dev_name)
    (device / "attrib" / "nl_reply_supported").write_text(f"{nl_reply_supported}\n")
    nl = NlStub()
    peer = runmod._NetlinkPeer(nl, handler, minor=0, configfs=str(tmp_path))  # type: ignore[arg-type]

    def send(**attrs: object) -> None:
        peer(TcmuEvent(GenlCmd.RECONFIG_DEVICE, handler.device.name, 0, 9, **attrs))  # type: ignore[arg-type]

    return send, nl


# --- RECONFIG -------------------------------------------------------------------------------


def test_reconfig_dev_size_reaches_read_capacity_with_a_unit_attention(tmp_path: Path) -> None:
    disk = GrowingDisk(make_device(blocks=300))
    send, _ = reconfig_peer(tmp_path, disk)
    send(dev_size=600 * 512)
    # The first command after the change learns of it (SAM-5: CAPACITY DATA HAS CHANGED).
    assert_check(run(disk, TUR), UNIT_ATTENTION, 0x2A, 0x09)
    assert_good(run(disk, TUR))  # reported once
    data = run(disk, read_capacity_16()).data_in
    assert int.from_bytes(data[:8], "big") == 599
    assert run(disk, bytes([0x25]) + bytes(9)).data_in[:4] == (599).to_bytes(4, "big")
    block = pattern(512)
    assert_good(run(disk, rw10(0x2A, 550, 1), block))  # beyond the old end
    assert run(disk, rw10(0x28, 550, 1), buf_len=512).data_in == block


def test_reconfig_write_cache_reaches_the_caching_page_and_the_write_path(
    tmp_path: Path,
) -> None:
    disk = MemDisk(make_device(write_cache=True))
    send, _ = reconfig_peer(tmp_path, disk)
    send(write_cache=0)
    assert_check(run(disk, TUR), UNIT_ATTENTION, 0x2A, 0x01)  # MODE PARAMETERS CHANGED
    page = run(disk, MODE_SENSE_CACHING).data_in[4:]
    assert page[0] & 0x3F == 0x08 and not page[2] & 0x04  # WCE off
    flushes = disk.flushes
    assert_good(run(disk, rw10(0x2A, 0, 1), pattern(512)))
    assert disk.flushes == flushes + 1  # write-through now


def test_request_sense_reports_the_unit_attention_and_inquiry_leaves_it(
    tmp_path: Path,
) -> None:
    disk = GrowingDisk(make_device(blocks=300))
    send, _ = reconfig_peer(tmp_path, disk)
    send(dev_size=400 * 512)
    assert_good(run(disk, bytes([0x12, 0, 0, 0, 96, 0])))  # INQUIRY: not failed by it
    sense = run(disk, bytes([0x03, 0, 0, 0, 252, 0])).data_in
    assert (sense[2], sense[12], sense[13]) == (UNIT_ATTENTION, 0x2A, 0x09)
    assert_good(run(disk, TUR))  # REQUEST SENSE cleared it


class Refusing(MemDisk):
    def reconfig(self, change: Reconfig) -> None:
        raise ReconfigRefused("this disk never changes size")


def test_a_refused_reconfig_changes_nothing_and_fails_the_kernels_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Refusing(make_device(blocks=300))
    before = disk.device
    send, nl = reconfig_peer(tmp_path, disk, nl_reply_supported=1)
    send(dev_size=600 * 512)
    assert disk.device == before and disk.num_blocks == 300
    assert_good(run(disk, TUR))  # no unit attention: nothing changed
    assert [status for _, status in nl.replies] == [-errno.EINVAL]
    assert "never changes size" in caplog.text


def test_a_size_below_one_block_is_refused_by_the_base(tmp_path: Path) -> None:
    disk = MemDisk(make_device(blocks=300))
    send, _ = reconfig_peer(tmp_path, disk)
    send(dev_size=100)
    assert disk.num_blocks == 300 and disk.device.size == 300 * 512


@pytest.mark.parametrize("cls", [RamDisk, FileDisk])
def test_reference_handlers_grow_their_storage(cls: type[FdDisk], tmp_path: Path) -> None:
    disk = cls(make_device(blocks=64), path=str(tmp_path / "disk.img")) if cls is FileDisk \
        else cls(make_device(blocks=64))
    disk.open()
    try:
        send, _ = reconfig_peer(tmp_path, disk)
        send(dev_size=128 * 512)
        assert_check(run(disk, TUR), UNIT_ATTENTION, 0x2A, 0x09)
        assert_good(run(disk, rw10(0x2A, 127, 1), pattern(512)))
        assert run(disk, rw10(0x28, 127, 1), buf_len=512).data_in == pattern(512)
        assert os.fstat(disk._fd).st_size == 128 * 512
    finally:
        disk.close()


# --- missing and optional storage methods -------------------------------------------------------

NO_WRITE = """
from tcmu.block import BlockHandler

class ReadOnlyByMistake(BlockHandler):
    def read(self, offset, buf):
        buf.fill(0)
"""


def test_a_block_handler_without_write_fails_when_loaded(tmp_path: Path) -> None:
    path = tmp_path / "nowrite.py"
    path.write_text(NO_WRITE)
    with pytest.raises(HandlerSpecError) as e:
        load(f"{path}:ReadOnlyByMistake")
    message = str(e.value)
    assert "write(" in message and "\n" not in message


class NoFlush(BlockHandler):
    def __init__(self, device: DeviceInfo, **options: str) -> None:
        super().__init__(device, **options)
        self.mem = bytearray(device.size)

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        buf.write(self.mem[offset : offset + len(buf)])

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        self.mem[offset : offset + len(buf)] = buf.read()


class NoHandle(Handler):
    pass


def test_a_handler_without_handle_fails_when_loaded() -> None:
    with pytest.raises(HandlerSpecError, match=r"NoHandle cannot serve a device: it lacks "
                                               r"handle\(cmd\); implement it in the class"):
        load(f"{__name__}:NoHandle")


def test_flush_is_optional() -> None:
    disk = NoFlush(make_device())
    assert_good(run(disk, SYNCHRONIZE_CACHE_10))
    assert_good(run(disk, rw10(0x2A, 0, 1, flags=0x08), pattern(512)))  # FUA


class Refuses(Handler):
    def handle(self, cmd: Command) -> Result:
        raise SenseError.invalid_opcode()


def test_sense_error_from_a_raw_handler_is_its_check_condition(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(Refuses(make_device()))
    rig.k.queue_cmd(bytes([0xC0]) + bytes(15))
    (done,) = rig.wait(1)
    assert done.status == 0x02
    assert (done.sense[2], done.sense[12], done.sense[13]) == (ILLEGAL_REQUEST, 0x20, 0x00)
