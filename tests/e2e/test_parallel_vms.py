"""pytest-xdist: `-n 2` gives each worker its own VM, and the run still ends in one JUnit
report with one identity and one summary page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcmu_harness import summary
from tcmu_harness.junit import read_run

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vm


def test_two_workers_boot_two_vms_and_merge_into_one_summary(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    log_dir = tmp_path / "vm"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
         "suites/smoke/test_smoke.py", "-k", "capacity or inquiry",
         f"--junitxml={junit}", f"--tcmu-vm-log-dir={log_dir}"],
        cwd=PROJECT, capture_output=True, text=True, timeout=900, check=False,
        env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = read_run(junit)
    assert run.properties["vms"] == "2"
    assert run.properties["kernel"] and " | " not in run.properties["kernel"]
    assert sorted(p.name for p in log_dir.glob("*-console.log")) == [
        "session-gw0-console.log", "session-gw1-console.log"]
    assert run.count("passed") == len(run.cases) == 4
    _, page = summary.write(run, tmp_path)
    assert "Verdict: PASSED" in page.read_text()


def test_worker_properties_merge_into_one_value_each() -> None:
    from tcmu_harness.fixtures.report import _merge

    own = {"tcmu_harness.commit": "abc", "tcmu_harness.exit_status": "0 (passed)"}
    workers = [{"tcmu_harness.kernel": "6.1", "tcmu_harness.commit": "worker"},
               {"tcmu_harness.kernel": "6.1"}, {"tcmu_harness.kernel": "6.12"}]
    assert _merge(own, workers) == {
        "tcmu_harness.commit": "abc", "tcmu_harness.exit_status": "0 (passed)",
        "tcmu_harness.kernel": "6.1 | 6.12", "tcmu_harness.vms": "3"}
