"""initiator.sgio: struct layout against <scsi/sg.h>, argument checks, error reporting,
and real SG_IO round trips against the fakesg shim (in a subprocess, where LD_PRELOAD
applies)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from initiator_fakesg import FakeSg

from tcmu_harness.initiator import cdb, sgio
from tcmu_harness.initiator.result import CdbResult

REPO = Path(__file__).resolve().parents[2]

_C_LAYOUT = r"""
#include <stddef.h>
#include <stdio.h>
#include <scsi/sg.h>
#define F(name) printf(#name " %zu %zu\n", offsetof(sg_io_hdr_t, name), \
                       sizeof(((sg_io_hdr_t *)0)->name));
int main(void) {
    printf("sizeof %zu 0\n", sizeof(sg_io_hdr_t));
    F(interface_id) F(dxfer_direction) F(cmd_len) F(mx_sb_len) F(iovec_count) F(dxfer_len)
    F(dxferp) F(cmdp) F(sbp) F(timeout) F(flags) F(pack_id) F(usr_ptr) F(status)
    F(masked_status) F(msg_status) F(sb_len_wr) F(host_status) F(driver_status) F(resid)
    F(duration) F(info)
    printf("SG_IO %d 0\nSG_DXFER_NONE %d 0\nSG_DXFER_TO_DEV %d 0\nSG_DXFER_FROM_DEV %d 0\n",
           SG_IO, SG_DXFER_NONE, SG_DXFER_TO_DEV, SG_DXFER_FROM_DEV);
    return 0;
}
"""


@pytest.fixture(scope="module")
def sg_h_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/scsi/sg.h").exists():
        pytest.skip("needs gcc and /usr/include/scsi/sg.h")
    tmp = tmp_path_factory.mktemp("sg_h")
    (tmp / "layout.c").write_text(_C_LAYOUT)
    subprocess.run([gcc, "-o", str(tmp / "layout"), str(tmp / "layout.c")], check=True)
    out = subprocess.run([str(tmp / "layout")], check=True, capture_output=True, text=True)
    return {name: (int(a), int(b)) for name, a, b in (ln.split() for ln in out.stdout.splitlines())}


def test_struct_layout_matches_sg_h(sg_h_layout: dict[str, tuple[int, int]]) -> None:
    assert ctypes.sizeof(sgio.SgIoHdr) == sg_h_layout["sizeof"][0]
    for name, _ in sgio.SgIoHdr._fields_:
        field = getattr(sgio.SgIoHdr, name)
        assert (field.offset, field.size) == sg_h_layout[name], name
    assert len(sgio.SgIoHdr._fields_) == len(sg_h_layout) - 5  # sizeof + 4 constants


@pytest.mark.parametrize("name", ["SG_IO", "SG_DXFER_NONE", "SG_DXFER_TO_DEV", "SG_DXFER_FROM_DEV"])
def test_constants_match_sg_h(name: str, sg_h_layout: dict[str, tuple[int, int]]) -> None:
    assert getattr(sgio, name) == sg_h_layout[name][0]


# --- checks that fire before any device is touched ------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_out": b"x" * 512, "data_in_len": 512}, "bidirectional"),
        ({"data_in_len": -1}, "data_in_len"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sgio.Initiator().run("/nonexistent/sg0", cdb.read_10(0, 1), **kwargs)


@pytest.mark.parametrize("length", [0, 253])
def test_bad_cdb_length(length: int) -> None:
    with pytest.raises(ValueError, match="CDB length"):
        sgio.Initiator().run("/nonexistent/sg0", bytes(length))


def test_open_error_names_the_device() -> None:
    with pytest.raises(FileNotFoundError, match="/nonexistent/sg0"):
        sgio.Initiator().run("/nonexistent/sg0", cdb.test_unit_ready())


def test_ioctl_error_names_the_device(tmp_path: Path) -> None:
    not_a_device = tmp_path / "plain-file"
    not_a_device.write_bytes(b"")
    with sgio.Initiator() as init, pytest.raises(OSError) as info:
        init.run(str(not_a_device), cdb.inquiry(), data_in_len=96)
    assert info.value.errno == errno.ENOTTY
    assert str(not_a_device) in str(info.value)
    assert "SG_IO INQUIRY failed" in str(info.value)


def test_timeout_conversion() -> None:
    assert sgio._timeout_ms(30.0) == 30000
    assert sgio._timeout_ms(0.0001) == 1
    assert sgio._timeout_ms(float("inf")) == 0xFFFFFFFF


def test_fds_are_cached_and_closed(tmp_path: Path) -> None:
    dev = str(tmp_path / "dev")
    Path(dev).write_bytes(b"")
    init = sgio.Initiator()
    fd = init.fd(dev)
    assert init.fd(dev) == fd
    init.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


class _FakeIssue:
    """Stands in for sgio._issue: fails with the given errnos, then succeeds."""

    def __init__(self, errnos: list[int]) -> None:
        self.errnos = errnos
        self.fds: list[int] = []

    def __call__(self, bufs: object, fd: int, device: str, *rest: object) -> CdbResult:
        self.fds.append(fd)
        if self.errnos:
            code = self.errnos.pop(0)
            raise OSError(code, os.strerror(code), device)
        return CdbResult(cdb=bytes(6), status=0, device=device)


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, flags: int, *args: Any) -> int:
        opened.append(path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(sgio.os, "open", counting_open)
    return opened


def test_stale_fd_is_reopened_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = str(tmp_path / "dev")
    Path(dev).write_bytes(b"")
    opened = _count_opens(monkeypatch)
    fake = _FakeIssue([errno.ENODEV])
    monkeypatch.setattr(sgio, "_issue", fake)
    with sgio.Initiator() as init:
        init.fd(dev)
        assert init.run(dev, cdb.test_unit_ready()).device == dev
    assert opened == [dev, dev]
    assert len(fake.fds) == 2


@pytest.mark.parametrize("errnos", [[errno.EIO], [errno.ENODEV, errno.ENODEV]])
def test_other_errors_and_second_failures_raise(
    errnos: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = str(tmp_path / "dev")
    Path(dev).write_bytes(b"")
    monkeypatch.setattr(sgio, "_issue", _FakeIssue(list(errnos)))
    with sgio.Initiator() as init, pytest.raises(OSError) as info:
        init.run(dev, cdb.test_unit_ready())
    assert info.value.errno == errnos[-1]


# --- SG_IO round trips against the fakesg shim ----------------------------------------

_CLIENT_PREAMBLE = """
import json, sys, threading, time
from tcmu_harness.initiator import cdb, sgio
def dump(r):
    d = r.to_dict()
    print(json.dumps({k: ("hex:" + v.hex()) if isinstance(v, bytes) else v for k, v in d.items()}))
"""


def run_client(body: str, extra_env: dict[str, str] | None = None) -> list[Any]:
    """Run `body` in a fresh python (LD_PRELOAD set by the fakesg fixture); each stdout
    line is JSON, CdbResults (via dump()) come back as CdbResult."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **(extra_env or {}))
    code = _CLIENT_PREAMBLE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out: list[Any] = []
    for line in proc.stdout.splitlines():
        obj = json.loads(line)
        if isinstance(obj, dict) and "cdb" in obj:
            obj = CdbResult.from_dict({k: bytes.fromhex(v[4:]) if isinstance(v, str)
                                       and v.startswith("hex:") else v for k, v in obj.items()})
        out.append(obj)
    return out


INQUIRY_DATA = bytes([0, 0, 6, 0x12, 91]) + bytes(3) + b"LIO-ORG tcmu-harness    0.1 " + bytes(60)


def test_data_in_with_residual(fakesg: FakeSg) -> None:
    fakesg.rules(f"12 00 - {INQUIRY_DATA.hex()}\n")
    [r] = run_client("dump(sgio.sg_io('/dev/null', cdb.inquiry(alloc_len=255), data_in_len=255))")
    assert r.good and r.status == 0
    assert r.data == INQUIRY_DATA and r.resid == 255 - len(INQUIRY_DATA)
    assert r.data_in_len == 255 and r.sense == b""
    [call] = fakesg.log()
    assert call.cdb == cdb.inquiry(alloc_len=255)
    assert (call.direction, call.length, call.timeout_ms) == (sgio.SG_DXFER_FROM_DEV, 255, 30000)


def test_check_condition_with_sense(fakesg: FakeSg) -> None:
    sense = bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 21 00 00 00 00 00")
    fakesg.rules(f"28 02 {sense.hex()} -\n")
    [r] = run_client("dump(sgio.sg_io('/dev/null', cdb.read_10(1 << 31, 1), data_in_len=512,"
                     " timeout=2.5))")
    assert r.status == 2 and r.sense == sense and r.data == b"" and r.resid == 512
    r.expect_check(0x5, 0x21, 0x00)
    assert r.info & 1
    assert fakesg.log()[0].timeout_ms == 2500


def test_data_out_reaches_the_device(fakesg: FakeSg) -> None:
    fakesg.rules("- 00 - -\n")
    [r] = run_client("dump(sgio.sg_io('/dev/null', cdb.write_10(7, 1),"
                     " data_out=bytes(range(256)) * 2))")
    assert r.good and r.data_out_len == 512 and r.data == b""
    [call] = fakesg.log()
    assert (call.direction, call.length) == (sgio.SG_DXFER_TO_DEV, 512)
    assert call.data_out == bytes(range(256)) * 2


def test_sense_length_is_what_the_target_wrote(fakesg: FakeSg) -> None:
    sense = bytes.fromhex("72 06 29 00 00 00 00 00")  # 8 bytes: header only
    fakesg.rules(f"00 02 {sense.hex()} -\n")
    [r] = run_client("dump(sgio.sg_io('/dev/null', cdb.test_unit_ready()))")
    assert r.sense == sense
    r.expect_check(0x6, 0x29, 0x00)


def test_no_data_and_transport_status(fakesg: FakeSg) -> None:
    fakesg.rules("00 00 - - 03 00\n")
    [r] = run_client("dump(sgio.sg_io('/dev/null', cdb.test_unit_ready()))")
    assert r.timed_out and not r.good and r.host_status == 3
    assert fakesg.log()[0].direction == sgio.SG_DXFER_NONE


def test_os_error_from_the_ioctl(fakesg: FakeSg) -> None:
    fakesg.rules("00 e19 - -\n")
    [err] = run_client("""
        try:
            sgio.sg_io('/dev/null', cdb.test_unit_ready())
        except OSError as e:
            print(json.dumps([e.errno, str(e)]))
    """)
    assert err[0] == errno.ENODEV
    assert "/dev/null" in err[1] and "TEST UNIT READY" in err[1]
    assert len(fakesg.log()) == 2  # ENODEV: reopened and retried once


def test_buffers_are_reused_without_leaking_old_data(fakesg: FakeSg) -> None:
    big = bytes(range(256)) * 32  # 8 KiB: larger than the initial 4 KiB buffer
    fakesg.rules(f"280000000000 00 - {big.hex()}\n28 00 - 0102030405\n")  # LBA 0, others
    first, second = run_client("""
        dump(sgio.sg_io('/dev/null', cdb.read_10(0, 16), data_in_len=8192))
        dump(sgio.sg_io('/dev/null', cdb.read_10(1, 16), data_in_len=8192))
    """)
    assert first.data == big
    assert second.data == bytes([1, 2, 3, 4, 5]) and second.resid == 8192 - 5


def test_threads_overlap_and_keep_their_own_buffers(fakesg: FakeSg) -> None:
    pages = (0x80, 0x83, 0xB0, 0xB1)
    fakesg.rules("".join(f"1201{p:02x} 00 - 00{p:02x}0001{p:02x}\n" for p in pages))
    results = run_client("""
        out = {}
        def one(page):
            out[page] = sgio.sg_io('/dev/null', cdb.inquiry(True, page), data_in_len=255)
        start = time.perf_counter()
        threads = [threading.Thread(target=one, args=(p,)) for p in (0x80, 0x83, 0xB0, 0xB1)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(json.dumps(time.perf_counter() - start))
        [dump(out[p]) for p in (0x80, 0x83, 0xB0, 0xB1)]
    """, {"FAKESG_DELAY_MS": "300"})
    elapsed, *answers = results
    assert elapsed < 0.9, "SG_IO calls from threads did not overlap (GIL held?)"
    for page, r in zip((0x80, 0x83, 0xB0, 0xB1), answers, strict=True):
        assert r.data == bytes([0, page, 0, 1, page])
