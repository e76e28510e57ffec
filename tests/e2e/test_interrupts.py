"""Interrupting the harness leaves nothing behind: no QEMU, no VM temp dir."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]


def _qemu_named(name: str) -> list[int]:
    pids = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = Path(cmdline).read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"qemu-system-x86_64") and name.encode() in argv:
            pids.append(int(cmdline.split("/")[2]))
    return pids


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_powers_the_vm_off_and_cleans_up(signum: int) -> None:
    temp_dirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tcmu-harness-vm-*")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "--",
         "sh", "-c", "echo started; sleep 300"],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"  # the guest command is running
        assert _qemu_named("tcmu-harness-cli"), "no QEMU while the guest command runs"
        started = time.monotonic()
        proc.send_signal(signum)
        # Teardown + poweroff take seconds; the bound allows for a loaded 2-core host
        # running two TCG guests (the session's and this one).
        assert proc.wait(timeout=120) == 130
        assert time.monotonic() - started < 120
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "the VM was shut down" in proc.stderr.read()
    assert _qemu_named("tcmu-harness-cli") == []
    temp_dirs_after = set(glob.glob(os.path.join(tempfile.gettempdir(), "tcmu-harness-vm-*")))
    assert temp_dirs_after <= temp_dirs_before
