"""The UIO side of a TCMU device: find it in sysfs, open and map it, wait and kick.

- /sys/class/uio/uioN/name is "tcm-user/<hba>/<dev_name>/<dev_config>" (or without
  "/<dev_config>" when the device has none).
- /sys/class/uio/uioN/maps/map0/size (hex) is the size to mmap, exactly, at offset 0,
  MAP_SHARED. Opening /dev/uioN is exclusive (a second open fails with EBUSY).
- read(fd, 4) returns the event count once the kernel queued something; write(fd, 4
  bytes) makes the kernel consume completions up to cmd_tail. After the device is
  removed a read fails with EIO: that is DeviceGone.

The roots ("/sys", "/dev") are parameters so tests can point them at a temp dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import mmap
import os
import re

UIO_PREFIX = "tcm-user/"
_KICK = b"\x00\x00\x00\x00"  # the value is ignored; the write itself is the signal


class DeviceGone(Exception):
    """The UIO device went away (its backstore was deleted)."""


class UioNotFound(LookupError):
    """No (or no unique) TCMU UIO device matches the name given."""


@dataclasses.dataclass(frozen=True, slots=True)
class UioInfo:
    uio: str  # "uio0"
    name: str  # the UIO name, "tcm-user/<hba>/<dev_name>/<dev_config>"
    map_size: int  # bytes to mmap

    @property
    def minor(self) -> int:
        return int(self.uio[3:])


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def list_tcmu(sysfs: str = "/sys") -> list[tuple[str, str]]:
    """(uioN, UIO name) of every TCMU device, in minor order."""
    base = os.path.join(sysfs, "class", "uio")
    try:
        entries = os.listdir(base)
    except FileNotFoundError:
        return []
    found = []
    for uio in entries:
        if not re.fullmatch(r"uio\d+", uio):
            continue
        try:
            name = _read(os.path.join(base, uio, "name"))
        except OSError:
            continue  # removed while we looked
        if name.startswith(UIO_PREFIX):
            found.append((uio, name))
    return sorted(found, key=lambda item: int(item[0][3:]))


def map_size(uio: str, sysfs: str = "/sys") -> int:
    return int(_read(os.path.join(sysfs, "class", "uio", uio, "maps", "map0", "size")), 16)


def find(device: str, sysfs: str = "/sys") -> UioInfo:
    """The TCMU device named `device`: its exact UIO name, its dev_name (the configfs
    directory name of the backstore), or "uioN"."""
    devices = list_tcmu(sysfs)
    matches = [(u, n) for u, n in devices if n == device or u == device]
    if not matches:
        matches = [(u, n) for u, n in devices if n.split("/")[2:3] == [device]]
    if len(matches) != 1:
        known = ", ".join(n for _, n in devices) or "none"
        what = "several TCMU devices match" if matches else "no TCMU device matches"
        raise UioNotFound(
            f"{what} {device!r} (known: {known}); pass the full UIO name "
            f"'tcm-user/<hba>/<dev_name>/<config>'"
        )
    uio, name = matches[0]
    return UioInfo(uio, name, map_size(uio, sysfs))


class UioDevice:
    """An open /dev/uioN and its mapping. Also built directly from an fd and a buffer
    (tests use a socketpair end and an mmap'd temp file)."""

    def __init__(self, fd: int, mapping: mmap.mmap | bytearray) -> None:
        self.fd = fd
        self.map = mapping

    @classmethod
    def open(cls, info: UioInfo, devfs: str = "/dev") -> UioDevice:
        path = os.path.join(devfs, info.uio)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise OSError(
                    e.errno, f"{path} is already open (another handler serves {info.name})"
                ) from e
            raise
        try:
            mapping = mmap.mmap(
                fd, info.map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, mapping)

    def fileno(self) -> int:
        return self.fd

    def ack(self) -> int:
        """Consume the pending event (call when the fd polls readable); returns the
        kernel's event count. Raises DeviceGone when the device was removed."""
        try:
            data = os.read(self.fd, 4)
        except BlockingIOError:
            return -1
        except OSError as e:
            if e.errno in (errno.EIO, errno.ENODEV, errno.ENXIO):
                raise DeviceGone(str(e)) from e
            raise
        if len(data) != 4:  # a real UIO never returns short; a closed fake does
            raise DeviceGone("UIO event channel closed")
        return int.from_bytes(data, "little")

    def kick(self) -> None:
        """Tell the kernel that cmd_tail moved."""
        try:
            os.write(self.fd, _KICK)
        except OSError as e:
            if e.errno in (errno.EIO, errno.ENODEV, errno.ENXIO, errno.EPIPE):
                raise DeviceGone(str(e)) from e
            raise

    def close(self) -> None:
        """Unmap and close. If views into the mapping are still alive (a handler kept
        one), the mapping stays until they go; the fd is closed regardless."""
        if isinstance(self.map, mmap.mmap):
            with contextlib.suppress(BufferError):
                self.map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
