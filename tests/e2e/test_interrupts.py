"""Interrupting the harness leaves nothing behind: no QEMU, no VM temp dir. The run's
processes and dirs are found by its own TMPDIR (in QEMU's argv: the agent socket and
share live there), not host-wide: other runs boot VMs on this host at the same time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.process_table import processes_mentioning

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]
# Issue 10's goal. Measured 0.1-0.2 s on a loaded 2-core host (load average 7): the
# interrupted run abandons the guest (QEMU killed) instead of tearing its LUN down and
# powering it off, which took 7.6 s there (about 15 s before that).
UNWIND_BOUND = 5.0


def _ignore_sigint() -> None:  # what a script's background job inherits
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_powers_the_vm_off_and_cleans_up(signum: int, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcmu_harness", "run", "--",
         "sh", "-c", "echo started; sleep 300"],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        preexec_fn=_ignore_sigint,  # the CLI restores SIGINT's default at start
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"  # the guest command is running
        qemu = [p for p in processes_mentioning(str(tmp_path)) if "qemu-system" in p]
        assert len(qemu) == 1, "no QEMU of this run while the guest command runs"
        [temp_dir] = tmp_path.glob("tcmu-harness-vm-*")
        # Its owner's pid: a SIGKILLed run's dir is removed by the next VM's start
        # (vm.machine.remove_stale_temp_dirs, tests/vm/test_machine_recovery.py).
        assert (temp_dir / "owner.pid").read_text() == f"{proc.pid}\n"
        started = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 130
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "the VM was shut down" in proc.stderr.read()
    print(f"{signal.Signals(signum).name}: the run unwound in {took:.1f} s")
    assert took < UNWIND_BOUND
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.glob("tcmu-harness-vm-*")) == []
