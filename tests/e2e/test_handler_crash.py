"""A handler under test that crashes or hangs (tests/e2e/crashing_handlers.py) fails the
test at once with a message that names what happened (exit status, signal, hang), on
which command, with its traceback or stacks; its LUN is torn down and the next LUN works.
Without the watchdog each of these waited out cmd_time_out or SG_IO's timeout and read
as NOT READY 08/00 or DID_TIME_OUT."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import HandlerFailure, HandlerSetupError, Lun, LunManager, LunSpec

pytestmark = pytest.mark.vm

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
HANDLERS = HERE / "crashing_handlers.py"
TEST_LBA = 4096  # beyond crashing_handlers.TRIGGER_OFFSET at 512-byte blocks
SHORT_CMD_TIME_OUT = 8  # seconds: a hang is judged 3 s before it
# Generous bounds: the kernel's default cmd_time_out is 30 s, which is what a crash
# cost before (plus SCSI error handling); TCG on a busy host is slow.
PROMPT = 15.0


def _spec(name: str) -> str:
    return f"{HANDLERS}:{name}"


def _expect_fresh_lun_works(make_lun: Callable[..., Lun]) -> None:
    make_lun(handler="tcmu.handlers.ramdisk:RamDisk").cdb(cdb.test_unit_ready()).expect_good()


def test_a_segfault_fails_the_read_at_once_with_the_signal_and_traceback(
    make_lun: Callable[..., Lun],
) -> None:
    lun = make_lun(handler=_spec("SegfaultsOnRead"))
    start = time.monotonic()
    with pytest.raises(HandlerFailure) as failure:
        lun.cdb(cdb.read_10(TEST_LBA, 8), data_in_len=4096)
    assert time.monotonic() - start < PROMPT
    message = str(failure.value)
    assert (f"handler {_spec('SegfaultsOnRead')} died (signal SIGSEGV) while "
            "28 00 00 00 10 00 00 00 08 00 (READ(10)) was in flight") in message
    assert "Fatal Python error: Segmentation fault" in message
    assert "crashing_handlers.py" in message and "in read" in message
    # Every later command on that LUN fails at once, with the same verdict.
    with pytest.raises(HandlerFailure, match=r"(?s)died \(signal SIGSEGV\).*was not sent"):
        lun.cdb(cdb.test_unit_ready())
    _expect_fresh_lun_works(make_lun)


def test_an_exit_on_write_in_a_batch_names_the_exit_status_and_the_write(
    make_lun: Callable[..., Lun],
) -> None:
    lun = make_lun(handler=_spec("ExitsOnWrite"))
    start = time.monotonic()
    with pytest.raises(HandlerFailure) as failure:
        lun.cdbs([(cdb.test_unit_ready(), None, 0),
                  (cdb.write_10(TEST_LBA, 1), bytes(512), 0),
                  (cdb.test_unit_ready(), None, 0)])
    assert time.monotonic() - start < PROMPT
    message = str(failure.value)
    assert "died (exit status 3) while 2a 00 00 00 10 00 00 00 01 00 (WRITE(10))" in message
    assert "SystemExit: 3" in message and "in write" in message
    _expect_fresh_lun_works(make_lun)


def test_a_hang_is_reported_before_cmd_time_out_with_the_handlers_stacks(
    make_lun: Callable[..., Lun],
) -> None:
    lun = make_lun(handler=_spec("HangsOnRead"),
                   attributes={"cmd_time_out": SHORT_CMD_TIME_OUT})
    lun.cdb(cdb.read_10(0, 8), data_in_len=4096).expect_good()  # below the trigger
    start = time.monotonic()
    with pytest.raises(HandlerFailure) as failure:
        lun.cdb(cdb.read_10(TEST_LBA, 8), data_in_len=4096)
    took = time.monotonic() - start
    assert SHORT_CMD_TIME_OUT - 4 < took < SHORT_CMD_TIME_OUT + PROMPT
    message = str(failure.value)
    assert re.search(rf"handler {re.escape(_spec('HangsOnRead'))} hung: 28 00 00 00 10 00 00 "
                     r"00 08 00 \(READ\(10\)\) unanswered for \d+ s", message), message
    assert "it was killed" in message and "faulthandler" in message
    assert "crashing_handlers.py" in message and "in read" in message
    _expect_fresh_lun_works(make_lun)


def test_a_handler_that_cannot_start_fails_once_with_its_traceback_then_at_once(
    make_lun: Callable[..., Lun],
) -> None:
    with pytest.raises(HandlerSetupError) as first:
        make_lun(handler=_spec("FailsInInit"))
    message = str(first.value)
    assert "RuntimeError: FailsInInit refuses to start (deliberately)" in message
    assert "Traceback (most recent call last)" in message and "__init__" in message
    start = time.monotonic()
    with pytest.raises(HandlerSetupError) as again:
        make_lun(handler=_spec("FailsInInit"))
    assert time.monotonic() - start < 1.0  # not tried in the guest again
    assert str(again.value).startswith("not retried: handler FailsInInit failed to set up "
                                       "a LUN in tests/e2e/test_handler_crash.py::")
    assert len(str(again.value).splitlines()) == 1
    _expect_fresh_lun_works(make_lun)


def test_a_handler_that_dies_on_the_kernels_first_read_fails_the_lun_creation(
    make_lun: Callable[..., Lun],
) -> None:
    with pytest.raises(HandlerSetupError) as failure:
        make_lun(handler=_spec("SetupReadAborts"))
    message = str(failure.value)
    assert ("died (signal SIGABRT) while the kernel's probe of the new disk was in flight"
            in message)
    assert "Fatal Python error: Aborted" in message and "in read" in message
    _expect_fresh_lun_works(make_lun)


def test_a_handler_that_hangs_on_the_kernels_probe_fails_the_lun_creation(
    make_lun: Callable[..., Lun],
) -> None:
    start = time.monotonic()
    with pytest.raises(HandlerSetupError) as failure:
        make_lun(handler=_spec("HangsOnEveryRead"),
                 attributes={"cmd_time_out": SHORT_CMD_TIME_OUT})
    assert time.monotonic() - start < SHORT_CMD_TIME_OUT + PROMPT
    message = str(failure.value)
    assert re.search(r"hung: the kernel's probe of the new disk unanswered for \d+ s",
                     message), message
    assert "crashing_handlers.py" in message and "in read" in message
    _expect_fresh_lun_works(make_lun)


def test_a_handler_stuck_where_the_watchdog_does_not_look_is_killed_at_teardown(
    lun_manager: LunManager, lun_spec: LunSpec,
) -> None:
    """sg_raw through vm.run is not watched: the kernel fails its READ at cmd_time_out,
    the handler stays stuck, and teardown kills it and says so, with its stacks."""
    lun = lun_manager.create(dataclasses.replace(
        lun_spec, handler=_spec("HangsOnRead"), attributes={"cmd_time_out": SHORT_CMD_TIME_OUT}))
    try:
        read = lun.vm.run(["sg_raw", "-r", "4096", lun.sg, "28", "00", "00", "00", "10", "00",
                           "00", "00", "08", "00"], timeout=60)
        assert read.exit_code == 2, read.stderr  # NOT READY (08/00) from the kernel
    finally:
        report = lun_manager.delete(lun)
    stuck = [e for e in report["errors"] if "did not exit within 10 s of its device's "
             "removal; it was killed" in e]
    assert len(stuck) == 1 and "in read" in stuck[0], report["errors"]
    assert lun_manager.remove_leftovers() == []


def test_a_session_on_a_handler_that_dies_at_set_up_tries_it_once() -> None:
    """The smoke suite (19 tests) on a handler that dies on the kernel's first READ: one
    traceback, 18 one-line failures, and a session that ends soon after the VM boots."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/smoke", "-q",
         "--tcmu-handler", _spec("SetupReadAborts")],
        cwd=PROJECT, capture_output=True, text=True, timeout=900, env=os.environ.copy(),
        check=False,
    )  # fmt: skip
    took = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "19 errors" in proc.stdout, proc.stdout[-3000:]
    # The short summary repeats whole messages when pytest sees a CI environment (CI=true):
    # count the tracebacks above it.
    errors = proc.stdout.split("short test summary info")[0]
    assert errors.count("Fatal Python error: Aborted") == 1, errors[-3000:]
    assert proc.stdout.count("not retried: handler SetupReadAborts failed") >= 18
    assert took < 600, f"the session took {took:.0f} s"
