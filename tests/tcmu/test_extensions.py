"""BlockHandler's extension points: @scsi_command, @vpd_page and ModePage join dispatch,
REPORT SUPPORTED OPERATION CODES, VPD 0x00 and MODE SENSE/SELECT by themselves; and
the examples in examples/ (options, async, extension points) behave as documented."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from blockkit import (
    ILLEGAL_REQUEST,
    MemDisk,
    all_commands,
    assert_check,
    assert_good,
    cdb_sks,
    evpd,
    make_device,
    mode_select_6,
    param_sks,
    pattern,
    rsoc,
    run,
    rw10,
)
from test_runner import Rig

from tcmu import spec
from tcmu.block import ModePage, scsi_command, vpd_page
from tcmu.describe import describe
from tcmu.handler import Command, Result
from tcmu_harness.scsi.constants import Opcode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOT_READY = 0x02


class Extended(MemDisk):
    """A vendor command (data-in, medium access), a VPD page and a mode page."""

    tuning = ModePage(0x21, default=bytes([0x10, 0x00]), changeable=bytes([0xF0, 0x00]))

    @scsi_command(0xC0, usage="01 00 00 ff 00", medium=True)  # 6 bytes: a flag, ALLOC LEN
    def counters(self, cmd: Command) -> Result:
        data = b"counters" if cmd.cdb[1] & 0x01 else b"c"
        return Result.good(data[: cmd.cdb[4]])

    @vpd_page(0xC1)
    def build_page(self) -> bytes:
        return b"build 7"


def test_a_declared_command_is_served_checked_and_listed() -> None:
    disk = Extended(make_device())
    assert run(disk, bytes([0xC0, 0x01, 0, 0, 255, 0])).data_in == b"counters"
    out = run(disk, bytes([0xC0, 0x02, 0, 0, 255, 0]))  # a bit outside the usage data
    assert_check(out, ILLEGAL_REQUEST, 0x24, sks=cdb_sks(1, 1))
    assert (0xC0, None, 6) in all_commands(disk)
    one = run(disk, rsoc(1, 0xC0)).data_in
    assert one[1] & 0x07 == 0x03 and one[4:10] == bytes.fromhex("c0 01 00 00 ff 00")
    assert (0xC0, None, 6) not in all_commands(MemDisk(make_device()))


def test_a_declared_medium_command_is_not_ready_while_stopped() -> None:
    disk = Extended(make_device())
    assert_good(run(disk, bytes([0x1B, 0, 0, 0, 0, 0])))  # STOP
    assert_check(run(disk, bytes([0xC0, 0, 0, 0, 8, 0])), NOT_READY, 0x04, 0x02)


def test_a_declared_vpd_page_is_listed_and_served() -> None:
    disk = Extended(make_device())
    listed = evpd(disk, 0x00)
    assert list(listed[4:]) == [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0xC1]
    assert struct.unpack(">H", listed[2:4]) == (len(listed) - 4,)
    assert evpd(disk, 0xC1) == bytes([0, 0xC1, 0, 7]) + b"build 7"


MODE_SENSE_ALL = bytes([0x1A, 0x08, 0x3F, 0, 255, 0])


def _pages(data: bytes) -> dict[int, bytes]:
    pages, pos = {}, 4
    while pos < len(data):
        pages[data[pos] & 0x3F] = data[pos : pos + 2 + data[pos + 1]]
        pos += 2 + data[pos + 1]
    return pages


def test_a_declared_mode_page_is_sensed_selected_and_read_back() -> None:
    disk = Extended(make_device())
    pages = _pages(run(disk, MODE_SENSE_ALL).data_in)
    assert list(pages) == [0x01, 0x08, 0x0A, 0x1C, 0x21]  # ascending, with the new one
    assert pages[0x21] == bytes([0x21, 2, 0x10, 0x00])
    changeable = run(disk, bytes([0x1A, 0x08, 0x61, 0, 255, 0])).data_in[4:]
    assert changeable == bytes([0x21, 2, 0xF0, 0x00])
    assert disk.tuning == bytes([0x10, 0x00])
    assert_good(mode_select_6(disk, bytes(4) + bytes([0x21, 2, 0x30, 0x00])))
    assert disk.tuning == bytes([0x30, 0x00])
    refused = mode_select_6(disk, bytes(4) + bytes([0x21, 2, 0x30, 0x01]))  # not changeable
    assert_check(refused, ILLEGAL_REQUEST, 0x26, sks=param_sks(7, 0))
    default = run(disk, bytes([0x1A, 0x08, 0xA1, 0, 255, 0])).data_in[4:]
    assert default == bytes([0x21, 2, 0x10, 0x00])


def test_a_declared_command_may_replace_a_built_in_one() -> None:
    class QuietInquiry(MemDisk):
        @scsi_command(Opcode.INQUIRY, usage="01 ff ff ff 00")
        def my_inquiry(self, cmd: Command) -> Result:
            return Result.good(bytes(36))

    assert run(QuietInquiry(make_device()), bytes([0x12, 0, 0, 0, 36, 0])).data_in == bytes(36)


@pytest.mark.parametrize(
    "declare",
    [lambda: scsi_command(0xC0, usage="zz"), lambda: scsi_command(0xC0, usage="00"),
     lambda: scsi_command(0xC0, usage="00 00 00 00 00", access="sometimes"),
     lambda: vpd_page(0x00), lambda: ModePage(0x3F, bytes(2)),
     lambda: ModePage(0x21, bytes(2), changeable=bytes(3))],
)
def test_bad_declarations_fail_at_class_definition(declare: object) -> None:
    with pytest.raises(TypeError):
        declare()  # type: ignore[operator]


def test_handler_info_lists_the_extensions() -> None:
    text = describe(Extended)
    assert "adds command c0 (6-byte CDB, access none): counters()" in text
    assert "adds VPD page c1: build_page()" in text and "adds mode page 21" in text


# --- the examples ---------------------------------------------------------------------------


def _example(name: str, options: str = "") -> object:
    return spec.load(f"{EXAMPLES / name} {options}").instantiate(make_device())


def test_options_example() -> None:
    disk = _example("options_disk.py:OptionsDisk", "fill=165 read_only=yes")
    assert run(disk, rw10(0x28, 3, 1), buf_len=512).data_in == b"\xa5" * 512
    out = run(disk, rw10(0x2A, 3, 1), pattern(512))
    assert_check(out, 0x07, 0x27)  # DATA PROTECT, WRITE PROTECTED
    with pytest.raises(spec.HandlerSpecError, match="fill must be an integer from 0 to 255"):
        spec.load(f"{EXAMPLES / 'options_disk.py:OptionsDisk'} fill=256")


def test_vendor_example() -> None:
    disk = _example("vendor_disk.py:VendorDisk")
    assert_good(run(disk, bytes([0x1D, 0x04, 0, 0, 0, 0])))  # SEND DIAGNOSTIC, SELFTEST
    assert_check(run(disk, bytes([0x1D, 0, 0, 0, 0, 0])), ILLEGAL_REQUEST, 0x24,
                 sks=cdb_sks(1, 2))  # fmt: skip
    assert (Opcode.SEND_DIAGNOSTIC, None, 6) in all_commands(disk)
    assert 0xC0 in evpd(disk, 0x00)[4:] and evpd(disk, 0xC0)[4:].startswith(b"vendor-disk")
    assert_good(mode_select_6(disk, bytes(4) + bytes([0x21, 2, 0x01, 0x00])))
    assert disk.verify_page[0] & 0x01  # type: ignore[attr-defined]
    assert_good(run(disk, rw10(0x2A, 3, 1), pattern(512)))  # verified after the write


def test_async_example_serves_reads_at_once() -> None:
    disk = _example("async_disk.py:AsyncDisk", "latency_ms=400")
    rig = Rig(disk).start()  # type: ignore[arg-type]
    try:
        start = time.monotonic()
        ids = [rig.k.queue_cmd(rw10(0x28, lba, 1), data_in=512) for lba in (1, 2, 3, 4)]
        done = rig.wait(4, timeout=5)
        assert sorted(c.cmd_id for c in done) == sorted(ids)
        assert time.monotonic() - start < 1.2  # four 0.4 s reads at once, not one by one
    finally:
        rig.stop()
        disk.quiesce()  # type: ignore[attr-defined]


def test_the_readme_shows_dict_disk_as_it_is() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme.split("## Writing a handler", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```python\n", 1)[1].split("```", 1)[0]
    code = (EXAMPLES / "dict_disk.py").read_text()
    assert code.endswith(shown), "README's DictDisk differs from examples/dict_disk.py"
