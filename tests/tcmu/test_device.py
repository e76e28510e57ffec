"""tcmu.uio (discovery, events) and tcmu.device (DeviceInfo, recovery actions) on fake
sysfs/configfs trees."""

from __future__ import annotations

import mmap
import os
import socket
from pathlib import Path

import pytest

from tcmu import device as devmod
from tcmu import uio as uiomod

INFO_61 = (
    "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 128\n"
    "        Config: harness/x Size: 1048576 MaxDataAreaMB: 1024 DataPagesPerBlk: 1\n"
)


def make_uio(sysfs: Path, uio: str, name: str, size: int = 0x40800000) -> None:
    d = sysfs / "class" / "uio" / uio
    (d / "maps" / "map0").mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "maps" / "map0" / "size").write_text(f"{size:#x}\n")


def make_dev(configfs: Path, hba: int, dev: str, *, dev_size: int | None = 1 << 20,
             block: int = 4096, wce: int = 1) -> Path:
    d = configfs / "target" / "core" / f"user_{hba}" / dev
    (d / "attrib").mkdir(parents=True)
    (d / "action").mkdir()
    (d / "info").write_text(INFO_61)
    if dev_size is not None:
        (d / "attrib" / "dev_size").write_text(f"{dev_size}\n")
    (d / "attrib" / "hw_block_size").write_text(f"{block}\n")
    (d / "attrib" / "emulate_write_cache").write_text(f"{wce}\n")
    (d / "attrib" / "nl_reply_supported").write_text("0\n")
    (d / "action" / "block_dev").write_text("unblocked\n")
    (d / "action" / "reset_ring").write_text("")
    return d


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    make_uio(root, "uio0", "tcm-user/1/disk0/harness/x")
    make_uio(root, "uio1", "not-tcmu")
    make_uio(root, "uio12", "tcm-user/2/disk1", size=0x801000)
    return root


def test_list_tcmu_skips_other_uio_devices(sysfs: Path) -> None:
    assert uiomod.list_tcmu(str(sysfs)) == [
        ("uio0", "tcm-user/1/disk0/harness/x"),
        ("uio12", "tcm-user/2/disk1"),
    ]
    assert uiomod.list_tcmu(str(sysfs / "nope")) == []


@pytest.mark.parametrize("name", ["tcm-user/1/disk0/harness/x", "disk0", "uio0"])
def test_find_by_uio_name_dev_name_or_uio(sysfs: Path, name: str) -> None:
    info = uiomod.find(name, str(sysfs))
    assert info == uiomod.UioInfo("uio0", "tcm-user/1/disk0/harness/x", 0x40800000)
    assert info.minor == 0


def test_find_reads_the_map_size_in_hex(sysfs: Path) -> None:
    assert uiomod.find("disk1", str(sysfs)).map_size == 0x801000
    assert uiomod.find("disk1", str(sysfs)).minor == 12


def test_find_unknown_names_the_known_devices(sysfs: Path) -> None:
    with pytest.raises(uiomod.UioNotFound, match=r"no TCMU device matches 'disk9'.*disk0"):
        uiomod.find("disk9", str(sysfs))


def test_find_ambiguous_dev_name(sysfs: Path) -> None:
    make_uio(sysfs, "uio3", "tcm-user/5/disk0/other")
    with pytest.raises(uiomod.UioNotFound, match="several"):
        uiomod.find("disk0", str(sysfs))
    assert uiomod.find("tcm-user/5/disk0/other", str(sysfs)).uio == "uio3"


def test_parse_uio_name() -> None:
    assert devmod.parse_uio_name("tcm-user/3/d/file/a/b") == (3, "d", "file/a/b")
    assert devmod.parse_uio_name("tcm-user/3/d") == (3, "d", "")
    for bad in ("tcm-user/x/d/c", "other/1/d/c", "tcm-user/1"):
        with pytest.raises(devmod.DeviceError):
            devmod.parse_uio_name(bad)


def test_device_info_from_configfs(tmp_path: Path) -> None:
    make_dev(tmp_path, 1, "disk0", dev_size=8 << 20, block=4096, wce=1)
    info = devmod.read_device_info("uio0", "tcm-user/1/disk0/harness/x", str(tmp_path))
    assert (info.hba, info.dev_name, info.config, info.subtype, info.cfgstring) == (
        1, "disk0", "harness/x", "harness", "x"
    )
    assert (info.size, info.block_size, info.write_cache) == (8 << 20, 4096, True)


def test_size_falls_back_to_info_not_sectorsize(tmp_path: Path) -> None:
    make_dev(tmp_path, 1, "disk0", dev_size=None, wce=0)
    info = devmod.read_device_info("uio0", "tcm-user/1/disk0/harness/x", str(tmp_path))
    assert info.size == 1048576 and info.write_cache is False


def test_transfer_limits_from_attrib(tmp_path: Path) -> None:
    d = make_dev(tmp_path, 1, "disk0")
    (d / "attrib" / "hw_max_sectors").write_text("2048\n")
    (d / "attrib" / "max_data_area_mb").write_text("16\n")
    info = devmod.read_device_info("uio0", "tcm-user/1/disk0/harness/x", str(tmp_path))
    assert (info.max_sectors, info.data_area_bytes) == (2048, 16 << 20)


def test_transfer_limits_fall_back_to_info(tmp_path: Path) -> None:
    d = make_dev(tmp_path, 1, "disk0")
    (d / "info").write_text(INFO_61.replace("HwMaxSectors: 128", "HwMaxSectors: 64")
                            .replace("MaxDataAreaMB: 1024", "MaxDataAreaMB: 8"))  # fmt: skip
    info = devmod.read_device_info("uio0", "tcm-user/1/disk0/harness/x", str(tmp_path))
    assert (info.max_sectors, info.data_area_bytes) == (64, 8 << 20)


def test_transfer_limits_default_when_absent(tmp_path: Path) -> None:
    d = make_dev(tmp_path, 1, "disk0")
    (d / "info").write_text("Status: ACTIVATED  Config: harness/x Size: 1048576\n")
    info = devmod.read_device_info("uio0", "tcm-user/1/disk0/harness/x", str(tmp_path))
    assert (info.max_sectors, info.data_area_bytes) == (128, 1 << 30)


def test_missing_configfs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(devmod.DeviceError, match=r"cannot read .*/info"):
        devmod.read_device_info("uio0", "tcm-user/1/disk0/harness/x", str(tmp_path))


def test_recovery_actions_write_the_values(tmp_path: Path) -> None:
    d = make_dev(tmp_path, 1, "disk0")
    info = devmod.read_device_info("uio0", "tcm-user/1/disk0/harness/x", str(tmp_path))
    devmod.block_dev(info, True, str(tmp_path))
    assert (d / "action" / "block_dev").read_text() == "1\n"
    devmod.reset_ring(info, 1, str(tmp_path))
    assert (d / "action" / "reset_ring").read_text() == "1\n"
    devmod.block_dev(info, False, str(tmp_path))
    assert (d / "action" / "block_dev").read_text() == "0\n"
    (d / "action" / "free_kept_buf").write_text("")
    devmod.free_kept_buf(info, 513, str(tmp_path))
    assert (d / "action" / "free_kept_buf").read_text() == "513\n"
    assert devmod.nl_reply_supported(info, str(tmp_path)) == 0
    (d / "action").rename(d / "gone")
    with pytest.raises(devmod.DeviceError, match="cannot write 1"):
        devmod.block_dev(info, True, str(tmp_path))


def test_uio_open_maps_exactly_map0_size(tmp_path: Path) -> None:
    devfs = tmp_path / "dev"
    devfs.mkdir()
    (devfs / "uio0").write_bytes(bytes(3 * 4096))
    dev = uiomod.UioDevice.open(uiomod.UioInfo("uio0", "tcm-user/1/d", 2 * 4096), str(devfs))
    assert isinstance(dev.map, mmap.mmap) and len(dev.map) == 2 * 4096
    dev.map[0] = 7  # MAP_SHARED: visible in the file
    dev.close()
    assert (devfs / "uio0").read_bytes()[0] == 7


def test_ack_and_kick_over_a_socketpair() -> None:
    ours, kernel = socket.socketpair()
    dev = uiomod.UioDevice(ours.fileno(), bytearray(8))
    kernel.send((5).to_bytes(4, "little"))
    assert dev.ack() == 5
    dev.kick()
    assert kernel.recv(16) == bytes(4)
    kernel.close()
    with pytest.raises(uiomod.DeviceGone):
        dev.ack()
    ours.close()


def test_eio_on_read_is_device_gone() -> None:
    # A pty master whose slave is closed fails reads with EIO, like a removed UIO device.
    master, slave = os.openpty()
    os.close(slave)
    dev = uiomod.UioDevice(master, bytearray(8))
    with pytest.raises(uiomod.DeviceGone):
        dev.ack()
    dev.close()
