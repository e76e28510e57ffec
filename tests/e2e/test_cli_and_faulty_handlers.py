"""Whole-program checks, each in its own process and VM: the `tcmu-harness run` CLI,
and the smoke suite catching a deliberately faulty handler with a readable failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=PROJECT, capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy(), check=False)


def test_cli_run_exposes_the_lun_and_returns_the_guest_exit_status() -> None:
    proc = _run(["-m", "tcmu_harness", "run", "--",
                 "sh", "-c", 'sg_inq "$TCMU_SG" | grep "Vendor identification"; '
                             'test -b "$TCMU_DISK" && exit 7'])  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.strip() == "Vendor identification: TCMUHARN"


def test_cli_rejects_an_unknown_kernel_with_one_sentence_and_status_4() -> None:
    proc = _run(["-m", "tcmu_harness", "run", "--kernel", "deb:6.99", "--", "true"])
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "tcmu-harness: no Debian kernel package matches 6.99; available: "
    )


def test_smoke_suite_catches_a_handler_with_the_wrong_out_of_range_sense() -> None:
    proc = _run(["-m", "pytest", "-p", "no:cacheprovider", "suites/smoke", "-q",
                 "-k", "out_of_range or read_capacity_10",
                 "--tcmu-handler", "tcmu.handlers.faulty:WrongSenseOnOutOfRange"])
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "4 failed, 1 passed" in proc.stdout
    # The failure reads like a SCSI trace: expectation, CDB in hex, status, decoded sense.
    assert "expected CHECK CONDITION, ILLEGAL REQUEST, asc 21/00" in proc.stdout
    assert "CDB: 28 00 00 02 00 00 00 00 01 00 (READ(10))" in proc.stdout  # LBA 0x20000
    assert "ILLEGAL REQUEST, asc/ascq 24/00 (INVALID FIELD IN CDB)" in proc.stdout


@pytest.mark.network
def test_cli_serves_a_lun_on_debian_6_12() -> None:
    proc = _run(["-m", "tcmu_harness", "run", "--kernel", "deb:6.12", "--",
                 "sh", "-c", 'uname -r; sg_turs "$TCMU_SG" && echo ready'])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    release, ready = proc.stdout.split()
    assert release.startswith("6.12.") and ready == "ready"
