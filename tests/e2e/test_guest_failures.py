"""Issue 10's "Done when": one pytest session that injects a guest kernel panic, a
handler segfault, a handler that never answers and a guest that stops answering among
passing tests completes, fails exactly those four tests with their evidence, and passes
the rest. After the panic and after the hang the next test gets a fresh VM, and the
module's shared LUN follows it (fixtures/plugin.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcmu_harness.junit import read_run
from tests.e2e.process_table import processes_mentioning

pytestmark = pytest.mark.vm

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
REQUEST_TIMEOUT = 10  # --tcmu-vm-request-timeout of the inner session: the hang is judged then
CMD_TIME_OUT = 8  # --tcmu-cmd-time-out: the watchdog judges the hung handler 3 s before

_INNER = f'''
import pytest
from tcmu_harness.initiator import cdb

HANDLERS = {str(HERE / "crashing_handlers.py")!r}
TEST_LBA = 4096  # beyond crashing_handlers.TRIGGER_OFFSET
# Every test takes lun_spec (the --tcmu-handler parameter), so pytest keeps the file's order
# instead of grouping the parametrized tests first.


def test_shared_lun_before(shared_lun):
    shared_lun.cdb(cdb.test_unit_ready()).expect_good()


def test_guest_kernel_panic(vm, lun_spec):
    vm.run(["sh", "-c", "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger"])


def test_shared_lun_after_the_panic(vm, shared_lun):
    shared_lun.cdb(cdb.test_unit_ready()).expect_good()
    assert vm.ping() < 120  # a fresh guest: booted moments ago


def test_handler_segfault(make_lun):
    lun = make_lun(handler=f"{{HANDLERS}}:SegfaultsOnRead")
    lun.cdb(cdb.read_10(TEST_LBA, 8), data_in_len=4096).expect_good()


def test_after_the_segfault(lun):
    lun.cdb(cdb.test_unit_ready()).expect_good()


def test_handler_never_answers(make_lun):
    lun = make_lun(handler=f"{{HANDLERS}}:HangsOnRead")
    lun.cdb(cdb.read_10(TEST_LBA, 8), data_in_len=4096).expect_good()


def test_after_the_handler_hang(lun):
    lun.cdb(cdb.test_unit_ready()).expect_good()


def test_guest_stops_answering(vm, lun_spec):
    # The agent is this shell's parent: stopped, it never answers. A plain request, so
    # that the run's own bound (its timeout + 30 s) does not apply, only the session's
    # --tcmu-vm-request-timeout.
    vm.request("run", argv=["sh", "-c", "kill -STOP $PPID"])


def test_shared_lun_after_the_hang(shared_lun):
    shared_lun.cdb(cdb.test_unit_ready()).expect_good()
'''

FAILED = {"test_guest_kernel_panic", "test_handler_segfault", "test_handler_never_answers",
          "test_guest_stops_answering"}


def test_a_session_with_four_injected_failures_fails_exactly_those(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(_INNER)
    junit = tmp_path / "junit.xml"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={tmp_path}",
         f"--junitxml={junit}", f"--tcmu-vm-log-dir={tmp_path / 'vm'}",
         f"--tcmu-vm-request-timeout={REQUEST_TIMEOUT}", f"--tcmu-cmd-time-out={CMD_TIME_OUT}",
         str(tmp_path)],
        cwd=PROJECT, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    took = time.monotonic() - start
    out = proc.stdout
    assert proc.returncode == 1, out[-4000:] + proc.stderr[-3000:]
    cases = {c.name: c for c in read_run(junit).cases}
    outcomes = {name: case.outcome for name, case in cases.items()}
    assert outcomes == {name: "failed" if name in FAILED else "passed"
                        for name in ["test_shared_lun_before", "test_guest_kernel_panic",
                                     "test_shared_lun_after_the_panic", "test_handler_segfault",
                                     "test_after_the_segfault", "test_handler_never_answers",
                                     "test_after_the_handler_hang",
                                     "test_guest_stops_answering",
                                     "test_shared_lun_after_the_hang"]}, out[-4000:]
    # Each failure with its evidence, counted above the short summary (CI=true repeats
    # whole messages there).
    report = out.split("short test summary info")[0].split("= tcmu-harness VM =")[0]
    assert report.count("the guest kernel panicked: Kernel panic - not syncing: "
                        "sysrq triggered crash") == 1, report[-4000:]
    assert report.count(f"the guest stopped answering for {REQUEST_TIMEOUT} s (no answer "
                        "to run); QEMU was killed") == 1, report[-4000:]
    assert report.count("guest console (last lines)") == 2
    assert "died (signal SIGSEGV) while 28 00 00 00 10 00 00 00 08 00 (READ(10))" in report
    assert "Fatal Python error: Segmentation fault" in report
    assert "HangsOnRead hung: 28 00 00 00 10 00 00 00 08 00 (READ(10)) unanswered" in report
    assert out.count("VM replaced after test_inner.py::") == 2, out[-3000:]
    # Three boots: the first, and one after each lost guest, each with its console log.
    assert sorted(p.name for p in (tmp_path / "vm").iterdir()) == [
        "session-boot2-console.log", "session-boot3-console.log", "session-console.log"]
    # Nothing of the run is left: no QEMU with its temp dirs in argv, no temp dir.
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.glob("tcmu-harness-vm-*")) == []
    print(f"inner session: {took:.0f} s")
