"""What a TCMU device is (DeviceInfo from sysfs/configfs) and its recovery actions.

configfs layout (drivers/target/target_core_user.c, target_core_configfs.c):
  <configfs>/target/core/user_<hba>/<dev_name>/
    info                  "... Config: <cfg|NULL> Size: <bytes> MaxDataAreaMB: ..."
    attrib/dev_size       bytes (kernels >= 4.16)
    attrib/hw_block_size  bytes
    attrib/emulate_write_cache  0/1
    attrib/hw_max_sectors logical blocks per command ("HwMaxSectors:" in info)
    attrib/max_data_area_mb  the ring's data area ("MaxDataAreaMB:" in info)
    attrib/nl_reply_supported   >0: the kernel waits for netlink replies (if on globally)
    action/block_dev      1: new commands fail with BUSY; 0: resume
    action/reset_ring     1: in-flight commands fail with BUSY, head = tail = 0
    action/free_kept_buf  a cmd_id completed with KEEP_BUF: its data blocks are freed
"""

from __future__ import annotations

import os
import re

from tcmu.handler import DEFAULT_DATA_AREA_BYTES, DEFAULT_MAX_SECTORS, DeviceInfo
from tcmu.uio import UIO_PREFIX

CONFIGFS = "/sys/kernel/config"


class DeviceError(Exception):
    """The device's configfs entries are missing or unreadable."""


def parse_uio_name(name: str) -> tuple[int, str, str]:
    """"tcm-user/<hba>/<dev_name>[/<dev_config>]" -> (hba, dev_name, dev_config)."""
    parts = name.split("/", 3)
    if len(parts) < 3 or parts[0] + "/" != UIO_PREFIX or not parts[1].isdigit() or not parts[2]:
        raise DeviceError(
            f"{name!r} is not a TCMU UIO name ('tcm-user/<hba>/<dev_name>/<dev_config>')"
        )
    return int(parts[1]), parts[2], parts[3] if len(parts) == 4 else ""


def device_dir(hba: int, dev_name: str, configfs: str = CONFIGFS) -> str:
    return os.path.join(configfs, "target", "core", f"user_{hba}", dev_name)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise DeviceError(f"cannot read {path}: {e.strerror}; is the backstore configured?") from e


def _size(devdir: str) -> int:
    try:
        return int(_read(os.path.join(devdir, "attrib", "dev_size")))
    except DeviceError:
        pass  # older kernels: only in info
    info = _read(os.path.join(devdir, "info"))
    # "Size:" as a word: "SectorSize:" and "PageSize:" also appear in info.
    m = re.search(r"(?:^|\s)Size: (\d+)", info)
    if m is None:
        raise DeviceError(f"no 'Size:' in {devdir}/info: {info!r}")
    return int(m.group(1))


def _optional_int(devdir: str, attrib: str, info_key: str) -> int | None:
    """attrib/<attrib>, else "<info_key>: N" in info, else None (older kernels lack some)."""
    try:
        return int(_read(os.path.join(devdir, "attrib", attrib)))
    except (DeviceError, ValueError):
        pass
    try:
        info = _read(os.path.join(devdir, "info"))
    except DeviceError:
        return None
    m = re.search(rf"(?:^|\s){info_key}: (\d+)", info)
    return int(m.group(1)) if m else None


def read_device_info(uio: str, name: str, configfs: str = CONFIGFS) -> DeviceInfo:
    """DeviceInfo of the TCMU device whose UIO is `uio` ("uio0") and UIO name `name`."""
    hba, dev_name, config = parse_uio_name(name)
    devdir = device_dir(hba, dev_name, configfs)
    attrib = os.path.join(devdir, "attrib")
    max_sectors = _optional_int(devdir, "hw_max_sectors", "HwMaxSectors")
    data_area_mb = _optional_int(devdir, "max_data_area_mb", "MaxDataAreaMB")
    return DeviceInfo(
        uio=uio,
        name=name,
        hba=hba,
        dev_name=dev_name,
        config=config,
        size=_size(devdir),
        block_size=int(_read(os.path.join(attrib, "hw_block_size"))),
        write_cache=_read(os.path.join(attrib, "emulate_write_cache")) not in ("", "0"),
        max_sectors=max_sectors or DEFAULT_MAX_SECTORS,
        data_area_bytes=(data_area_mb << 20) if data_area_mb else DEFAULT_DATA_AREA_BYTES,
    )


def nl_reply_supported(info: DeviceInfo, configfs: str = CONFIGFS) -> int:
    """attrib/nl_reply_supported: > 0 means the kernel waits for *_DONE netlink replies
    for this device (while reply mode is on module-wide). 1 when unknown (old kernels)."""
    path = os.path.join(device_dir(info.hba, info.dev_name, configfs), "attrib",
                        "nl_reply_supported")
    try:
        return int(_read(path))
    except (DeviceError, ValueError):
        return 1


def _action(info: DeviceInfo, action: str, value: int, configfs: str) -> None:
    path = os.path.join(device_dir(info.hba, info.dev_name, configfs), "action", action)
    try:
        with open(path, "w") as f:
            f.write(f"{value}\n")
    except OSError as e:
        raise DeviceError(f"cannot write {value} to {path}: {e.strerror}") from e


def block_dev(info: DeviceInfo, blocked: bool, configfs: str = CONFIGFS) -> None:
    """action/block_dev: while blocked, new commands fail with BUSY instead of queueing."""
    _action(info, "block_dev", int(blocked), configfs)


def reset_ring(info: DeviceInfo, level: int = 1, configfs: str = CONFIGFS) -> None:
    """action/reset_ring: fail in-flight commands (1: BUSY, 2: CHECK CONDITION), empty
    the ring (head = tail = 0) and clear a 'ring broken' state."""
    _action(info, "reset_ring", level, configfs)


def free_kept_buf(info: DeviceInfo, cmd_id: int, configfs: str = CONFIGFS) -> None:
    """action/free_kept_buf: release the data-area blocks of a command completed with
    Result(keep_buf=True). The kernel refuses (EINVAL, DeviceError here) a cmd_id it does
    not know or that was not completed with KEEP_BUF."""
    _action(info, "free_kept_buf", cmd_id, configfs)
