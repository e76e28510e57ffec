"""Send one CDB with the SG_IO ioctl (sg v3 interface, <scsi/sg.h>) and collect the result.

Runs inside the guest, in a TCG-emulated VM where a command's whole round trip should
stay near 2 ms: every ctypes object is made once per thread and reused, and device files
stay open in an `Initiator` until close().
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import math
import os
import threading
import time
from types import TracebackType

from tcmu_harness.initiator.result import CdbResult, opcode_name

SG_IO = 0x2285
SG_INTERFACE_ID = ord("S")
SG_DXFER_NONE = -1
SG_DXFER_TO_DEV = -2
SG_DXFER_FROM_DEV = -3

MAX_CDB_LEN = 252  # SG_MAX_CDB_SIZE: variable-length CDBs go up to 260, sg takes 252
MAX_SENSE_LEN = 252  # mx_sb_len is a u8; the kernel keeps at most 96 (SCSI_SENSE_BUFFERSIZE)
_MAX_TIMEOUT_MS = 0xFFFFFFFF  # the kernel reads UINT_MAX as "no timeout"
_STALE_FD_ERRNOS = (errno.ENODEV, errno.ENXIO)


class SgIoHdr(ctypes.Structure):
    """struct sg_io_hdr; field order and types as in /usr/include/scsi/sg.h."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


class _Buffers:
    """One thread's preallocated header, CDB, sense and data buffers."""

    __slots__ = ("cdb", "cdb_addr", "data", "data_addr", "hdr", "sense", "sense_addr")

    def __init__(self) -> None:
        self.hdr = SgIoHdr()
        self.cdb = ctypes.create_string_buffer(MAX_CDB_LEN)
        self.sense = ctypes.create_string_buffer(MAX_SENSE_LEN)
        self.cdb_addr = ctypes.addressof(self.cdb)
        self.sense_addr = ctypes.addressof(self.sense)
        self.data = ctypes.create_string_buffer(4096)
        self.data_addr = ctypes.addressof(self.data)
        hdr = self.hdr
        hdr.interface_id = SG_INTERFACE_ID
        hdr.cmdp = self.cdb_addr
        hdr.sbp = self.sense_addr
        hdr.mx_sb_len = MAX_SENSE_LEN

    def data_buffer(self, size: int) -> int:
        """Address of a data buffer of at least `size` bytes (grown, never shrunk)."""
        if size > len(self.data):
            self.data = ctypes.create_string_buffer(size)
            self.data_addr = ctypes.addressof(self.data)
        return self.data_addr


def _timeout_ms(timeout: float) -> int:
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if math.isinf(timeout):
        return _MAX_TIMEOUT_MS
    return min(max(1, round(timeout * 1000)), _MAX_TIMEOUT_MS - 1)


def _check_args(cdb: bytes, data_out: bytes | None, data_in_len: int) -> None:
    if not 1 <= len(cdb) <= MAX_CDB_LEN:
        raise ValueError(f"CDB length {len(cdb)} outside 1..{MAX_CDB_LEN}")
    if data_in_len < 0:
        raise ValueError(f"data_in_len must be >= 0, got {data_in_len}")
    if data_out and data_in_len:
        raise ValueError(
            "bidirectional transfer (data_out and data_in_len together) is not supported "
            "by the sg v3 SG_IO interface"
        )


def _issue(
    bufs: _Buffers, fd: int, device: str, cdb: bytes, data_out: bytes | None,
    data_in_len: int, timeout_ms: int,
) -> CdbResult:
    hdr = bufs.hdr
    ctypes.memmove(bufs.cdb_addr, cdb, len(cdb))
    hdr.cmd_len = len(cdb)
    if data_out:
        addr = bufs.data_buffer(len(data_out))
        ctypes.memmove(addr, data_out, len(data_out))
        hdr.dxfer_direction, hdr.dxfer_len, hdr.dxferp = SG_DXFER_TO_DEV, len(data_out), addr
    elif data_in_len:
        addr = bufs.data_buffer(data_in_len)
        hdr.dxfer_direction, hdr.dxfer_len, hdr.dxferp = SG_DXFER_FROM_DEV, data_in_len, addr
    else:
        hdr.dxfer_direction, hdr.dxfer_len, hdr.dxferp = SG_DXFER_NONE, 0, None
    hdr.timeout = timeout_ms
    hdr.sb_len_wr = 0
    start = time.perf_counter()
    try:
        fcntl.ioctl(fd, SG_IO, hdr)
    except OSError as e:
        raise OSError(e.errno, f"SG_IO {opcode_name(cdb)} failed: {e.strerror}", device) from e
    elapsed = time.perf_counter() - start
    resid = hdr.resid
    got = min(max(data_in_len - resid, 0), data_in_len)
    return CdbResult(
        cdb=bytes(cdb),
        status=hdr.status,
        sense=ctypes.string_at(bufs.sense_addr, hdr.sb_len_wr) if hdr.sb_len_wr else b"",
        data=ctypes.string_at(hdr.dxferp, got) if got else b"",
        resid=resid,
        host_status=hdr.host_status,
        driver_status=hdr.driver_status,
        duration_s=elapsed,
        info=hdr.info,
        device=device,
        data_in_len=data_in_len,
        data_out_len=len(data_out) if data_out else 0,
    )


class Initiator:
    """Sends CDBs to sg (or sd) device nodes, keeping each node open until close().

    Thread-safe: each thread gets its own buffers, so tests may keep several commands
    in flight at once from several threads.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._open_lock = threading.Lock()
        self._local = threading.local()

    def _buffers(self) -> _Buffers:
        bufs: _Buffers | None = getattr(self._local, "bufs", None)
        if bufs is None:
            bufs = self._local.bufs = _Buffers()
        return bufs

    def fd(self, path: str) -> int:
        """The open file descriptor of `path`, opening it on first use."""
        fd = self._fds.get(path)
        if fd is None:
            with self._open_lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                    self._fds[path] = fd
        return fd

    def run(
        self, device: str | int, cdb: bytes, *, data_out: bytes | None = None,
        data_in_len: int = 0, timeout: float = 30.0,
    ) -> CdbResult:
        """Send `cdb` to `device` (a path, or an fd the caller owns) and wait for it."""
        _check_args(cdb, data_out, data_in_len)
        timeout_ms = _timeout_ms(timeout)
        bufs = self._buffers()
        if isinstance(device, int):
            return _issue(bufs, device, f"fd {device}", cdb, data_out, data_in_len, timeout_ms)
        try:
            return _issue(bufs, self.fd(device), device, cdb, data_out, data_in_len, timeout_ms)
        except OSError as e:
            if e.errno not in _STALE_FD_ERRNOS:
                raise
        # The cached fd may belong to a device that was removed and re-created under the
        # same name. sg fails such an fd before sending anything, so one retry on a
        # fresh open cannot run the command twice.
        self.close(device)
        return _issue(bufs, self.fd(device), device, cdb, data_out, data_in_len, timeout_ms)

    def close(self, path: str | None = None) -> None:
        """Close `path`'s descriptor, or all of them."""
        with self._open_lock:
            paths = list(self._fds) if path is None else [path]
            for p in paths:
                fd = self._fds.pop(p, None)
                if fd is not None:
                    os.close(fd)

    def __enter__(self) -> Initiator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_default = Initiator()


def sg_io(
    fd_or_path: int | str, cdb: bytes, *, data_out: bytes | None = None,
    data_in_len: int = 0, timeout: float = 30.0,
) -> CdbResult:
    """One command through a process-wide Initiator (paths stay open; see close_all)."""
    return _default.run(fd_or_path, cdb, data_out=data_out, data_in_len=data_in_len,
                        timeout=timeout)


def close(path: str) -> None:
    """Close the process-wide Initiator's descriptor for `path` (before it goes away)."""
    _default.close(path)


def close_all() -> None:
    _default.close()
