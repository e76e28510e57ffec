"""fixtures/allure_detail.py on a throwaway test run (no VM): a fake LUN manager feeds
CDB results to the observers the plugin registers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]

_TESTS = '''
"""UNMAP: what the handler does with descriptors."""
import pytest
from tcmu_harness.lun import Lun
from tcmu_harness.initiator.result import CdbResult

ILLEGAL_24 = bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 24 00 00 00 00 00")


class Manager:
    cdb_observers = []


@pytest.fixture
def lun_manager(request):
    yield Manager()
    request.node.add_report_section("teardown", "kernel log", "[ 1.0] sd 0:0:0:0: ok")
    request.node.add_report_section("teardown", "handler lun0 commands", "cmd 1 cdb 28")
    request.node.add_report_section("teardown", "unrelated", "not attached")


def _lun(manager):
    lun = Lun.__new__(Lun)
    lun.name, lun.path, lun.observers = "lun0", 1, manager.cdb_observers
    return lun


def test_cdbs_become_steps(lun_manager):
    """An UNMAP that reads (SBC-4 5.30.2)."""
    lun = _lun(lun_manager)
    lun._observed(CdbResult(cdb=bytes([0x28]) + bytes(9), status=2, sense=ILLEGAL_24))
    lun._observed(CdbResult(cdb=bytes(6), status=0))


def test_steps_are_capped(lun_manager):
    lun = _lun(lun_manager)
    for _ in range({count}):
        lun._observed(CdbResult(cdb=bytes(6), status=0))


def test_without_a_lun():
    pass
'''


def _results(tmp_path: Path) -> dict[str, dict[str, Any]]:
    from tcmu_harness.fixtures.allure_detail import MAX_STEPS

    (tmp_path / "test_sample.py").write_text(_TESTS.format(count=MAX_STEPS + 5))
    out = tmp_path / "allure"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--alluredir={out}",
         f"--rootdir={tmp_path}", str(tmp_path)],
        cwd=PROJECT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {}
    for file in out.glob("*-result.json"):
        result = json.loads(file.read_text())
        results[result["name"]] = result
    return results


def test_steps_labels_and_attachments(tmp_path: Path) -> None:
    results = _results(tmp_path)
    first = results["test_cdbs_become_steps"]
    assert [s["name"] for s in first["steps"]] == [
        "lun0 (path 1): READ(10) -> CHECK CONDITION, ILLEGAL REQUEST 24/00",
        "lun0 (path 1): TEST UNIT READY -> GOOD",
    ]
    response = first["steps"][0]["attachments"][0]
    assert response["name"] == "response"
    text = (tmp_path / "allure" / response["source"]).read_text()
    assert text.startswith("CDB: 28 00 00 00 00 00 00 00 00 00 (READ(10))\n"
                           "status: CHECK CONDITION (0x02)\n"), text
    labels = {(label["name"], label["value"]) for label in first["labels"]}
    assert {("epic", tmp_path.name), ("feature", "UNMAP: what the handler does with descriptors"),
            ("story", "cdbs become steps"), ("spec", "SBC-4 5.30.2")} <= labels
    assert [a["name"] for a in first["attachments"]] == ["kernel log", "handler lun0 commands"]

    capped = results["test_steps_are_capped"]["steps"]
    from tcmu_harness.fixtures.allure_detail import MAX_STEPS

    assert len(capped) == MAX_STEPS + 1
    assert capped[-1]["name"] == (f"... and 5 more CDBs (not recorded: at most {MAX_STEPS} "
                                  "steps per test)")
    assert not results["test_without_a_lun"].get("steps")
