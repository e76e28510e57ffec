"""The kernel log gate in a real session: a test during which the guest kernel becomes
tainted fails with the flag named, its kernel log slice attached; the tests before and
after it pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcmu_harness.junit import read_run

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vm

_INNER = '''
def test_before(vm):
    assert vm.run(["true"]).exit_code == 0

def test_taints_the_kernel(vm):
    # Root may add taint flags; 512 is W, what a kernel WARNING sets.
    vm.write_file("/proc/sys/kernel/tainted", b"512")

def test_after(vm):
    assert vm.run(["true"]).exit_code == 0
'''


def test_a_taint_during_a_test_fails_that_test_only(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(_INNER)
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={tmp_path}",
         f"--junitxml={junit}", f"--tcmu-vm-log-dir={tmp_path / 'vm'}", str(tmp_path)],
        cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False,
        env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {c.name: c.outcome for c in read_run(junit).cases}
    assert outcomes == {"test_before": "passed", "test_taints_the_kernel": "error",
                        "test_after": "passed"}, proc.stdout[-3000:]
    assert "the kernel became tainted: 0 -> 512 (new flags W" in proc.stdout
    # A tainted kernel is not trusted: test_after ran on a fresh VM.
    assert ("VM replaced after test_inner.py::test_taints_the_kernel: the kernel became "
            "tainted: 0 -> 512" in proc.stdout), proc.stdout[-3000:]
