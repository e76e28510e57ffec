"""lio.watchdog without a VM: real processes stand in for handlers, a temporary
directory for the backstore's configfs (attrib/cmd_time_out, action/reset_ring), and a
wait for reset_ring to be written for the SG_IO that the kernel would then complete."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcmu_harness.lio import watchdog
from tcmu_harness.lio.handlers import HandlerProcess, report_stacks

_CTX = multiprocessing.get_context("fork")
_names = itertools.count()


def _handler_body(output: str, behaviour: str) -> None:
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    report_stacks()
    if behaviour == "segfault":
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGSEGV)
    elif behaviour == "exit":
        time.sleep(0.3)
        sys.exit(3)
    while True:  # "hang" and "idle"
        time.sleep(3600)


@dataclass
class FakeLun:
    name: str
    spec: str
    sg: str
    handler: HandlerProcess
    backstore_dir: str


@pytest.fixture
def make_lun(tmp_path: Path) -> Iterator[Callable[..., FakeLun]]:
    luns: list[FakeLun] = []

    def make(behaviour: str, cmd_time_out: int = 30) -> FakeLun:
        name = f"fake{next(_names)}"
        backstore = tmp_path / name
        (backstore / "attrib").mkdir(parents=True)
        (backstore / "action").mkdir()
        (backstore / "attrib" / "cmd_time_out").write_text(f"{cmd_time_out}\n")
        output = str(tmp_path / f"{name}.out")
        process = _CTX.Process(target=_handler_body, args=(output, behaviour), daemon=True)
        process.start()
        handler = HandlerProcess("fake:Handler", name, str(tmp_path / "log"), output, process)
        lun = FakeLun(name, f"fake:{behaviour.title()}", "/dev/sg99", handler, str(backstore))
        watchdog.watch(lun)
        luns.append(lun)
        return lun

    yield make
    for lun in luns:
        watchdog.unwatch(lun.name)
        lun.handler.kill()


def _until_reset(lun: FakeLun, limit: float = 20.0) -> str:
    """Stands in for an SG_IO that only a ring reset ends."""
    path = Path(lun.backstore_dir, "action", "reset_ring")
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, "the ring was never reset"
        time.sleep(0.02)
    return path.read_text()


def test_a_segfault_with_a_command_in_flight_raises_the_signal_and_traceback(
    make_lun: Callable[..., FakeLun],
) -> None:
    lun = make_lun("segfault")
    with pytest.raises(watchdog.HandlerFailure) as failure, \
            watchdog.command(lun.name, "28 00 (READ(10))", timeout=30):
        assert _until_reset(lun) == "2\n"  # in-flight commands: CHECK CONDITION
    message = str(failure.value)
    assert message.startswith("handler fake:Segfault died (signal SIGSEGV) while "
                              "28 00 (READ(10)) was in flight; its output")
    # The report is quoted from faulthandler's header on, however deep the stack the
    # forked process carries (pytest's, under tox): a plain tail used to lose the header.
    assert "its output, from its last crash report:\nFatal Python error: Segmentation " \
           "fault" in message
    assert "_handler_body" in message
    with pytest.raises(watchdog.HandlerFailure, match=r"was not sent"), \
            watchdog.command(lun.name, "00 (TEST UNIT READY)", timeout=30):
        pytest.fail("a command was sent to a dead handler")


def test_an_exit_names_the_exit_status(make_lun: Callable[..., FakeLun]) -> None:
    lun = make_lun("exit")
    with pytest.raises(watchdog.HandlerFailure, match=r"died \(exit status 3\) while 2a"), \
            watchdog.command(lun.name, "2a 00 (WRITE(10))", timeout=30):
        _until_reset(lun)


def test_a_hang_is_judged_before_cmd_time_out_with_the_stacks_and_the_handler_killed(
    make_lun: Callable[..., FakeLun],
) -> None:
    lun = make_lun("hang", cmd_time_out=2)  # judged after max(2 - 3, 0.6 * 2) = 1.2 s
    start = time.monotonic()
    with pytest.raises(watchdog.HandlerFailure) as failure, \
            watchdog.command(lun.name, "28 00 (READ(10))", timeout=30):
        _until_reset(lun)
    assert 1.0 < time.monotonic() - start < 10
    message = str(failure.value)
    assert message.startswith("handler fake:Hang hung: 28 00 (READ(10)) unanswered for 1 s")
    assert "faulthandler" in message and "_handler_body" in message
    assert lun.handler.exit_description() == "signal SIGKILL"


def test_a_command_that_completes_is_untouched(make_lun: Callable[..., FakeLun]) -> None:
    lun = make_lun("idle")
    with watchdog.command(lun.name, "00 (TEST UNIT READY)", timeout=30) as watched:
        assert watched is lun
    assert not Path(lun.backstore_dir, "action", "reset_ring").exists()


def test_an_exit_the_harness_expects_gets_no_verdict(make_lun: Callable[..., FakeLun]) -> None:
    lun = make_lun("idle")
    watchdog.expect_exit(lun.name)
    lun.handler.kill()
    time.sleep(1.0)  # two monitor rounds
    watched = watchdog.unwatch(lun.name)
    assert watched is not None and watched.verdict is None and not watched.implicated


def test_a_death_while_idle_is_kept_for_teardown(make_lun: Callable[..., FakeLun]) -> None:
    lun = make_lun("segfault")
    watched = watchdog._watches[lun.name]
    assert watched.judged.wait(10), "no verdict on a dead handler"
    assert watched.verdict is not None and not watched.reported
    assert watched.verdict.startswith("handler fake:Segfault died (signal SIGSEGV) with no "
                                      "harness command in flight")


def test_the_partition_scan_read_is_seen_in_the_command_log_once_whole(tmp_path: Path) -> None:
    log = tmp_path / "commands.jsonl"
    seen = watchdog._ReadSeen(str(log))
    assert not seen()  # no log yet
    log.write_bytes(b'{"cmd_id": 1, "cdb": "120000002400", "status": 0}\n{"cmd_id": 2, "cd')
    assert not seen()
    with log.open("ab") as f:
        f.write(b'b": "28000000000000000800", "status": 0}\n')
    assert seen()


def test_a_long_crash_report_is_quoted_from_its_header(tmp_path: Path) -> None:
    output = tmp_path / "out.log"
    frames = "".join(f'  File "/deep/module{i}.py", line {i} in frame{i}\n' for i in range(400))
    output.write_text("INFO serving\n" * 2000 + "Fatal Python error: Segmentation fault\n\n"
                      "Current thread 0x1 (most recent call first):\n" + frames)
    handler = HandlerProcess("m:C", "dev", str(tmp_path / "log"), str(output),
                             _CTX.Process(target=time.sleep, args=(0,)))
    report = watchdog._crash_report(handler)
    assert report.startswith("its output, from its last crash report:\nFatal Python error: "
                             "Segmentation fault\n\nCurrent thread 0x1 (most recent call first):"
                             '\n  File "/deep/module0.py", line 0 in frame0\n')
    assert "INFO serving" not in report
    assert report.endswith(f"more characters in {output}]")
