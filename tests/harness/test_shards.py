"""Shards of one run (CI jobs) merged into one summary: every test, the worst status."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_harness import summary
from tcmu_harness.junit import JunitError, merge_shards, read_run


def _junit(path: Path, cases: str, status: str = "0 (all passed)", kernel: str = "6.1",
           handlers: str = "RamDisk", seconds: float = 10.0) -> Path:
    path.write_text(
        f'<testsuites><testsuite name="pytest" time="{seconds}"><properties>'
        f'<property name="tcmu_harness.kernel" value="{kernel}"/>'
        f'<property name="tcmu_harness.commit" value="abc"/>'
        f'<property name="tcmu_harness.handler_ids" value="{handlers}"/>'
        f'<property name="tcmu_harness.exit_status" value="{status}"/>'
        f"</properties>{cases}</testsuite></testsuites>")
    return path


def test_shards_merge_into_one_run_with_every_case_and_the_worst_status(
    tmp_path: Path,
) -> None:
    a = _junit(tmp_path / "a.xml", '<testcase classname="suites.spc.test_x" name="t[RamDisk]"/>',
               seconds=30.0)
    b = _junit(tmp_path / "b.xml",
               '<testcase classname="suites.sbc.test_y" name="t[FileDisk]">'
               '<failure message="boom"/></testcase>',
               status="1 (tests failed)", handlers="FileDisk", seconds=50.0)
    merged = merge_shards([read_run(a), read_run(b)])
    assert [(c.module, c.outcome) for c in merged.cases] == [
        ("suites/spc/test_x.py", "passed"), ("suites/sbc/test_y.py", "failed")]
    assert merged.properties["exit_status"] == "1 (tests failed)"
    assert merged.properties["handler_ids"] == "RamDisk,FileDisk"
    assert merged.properties["shards"] == "2"
    assert merged.seconds == 50.0


def test_an_interrupted_shard_leaves_the_merge_incomplete(tmp_path: Path) -> None:
    a = _junit(tmp_path / "a.xml", '<testcase classname="suites.x" name="t"/>')
    b = _junit(tmp_path / "b.xml", '<testcase classname="suites.y" name="t"/>',
               status="2 (interrupted)")
    assert not merge_shards([read_run(a), read_run(b)]).complete


def test_shards_of_different_kernels_are_refused(tmp_path: Path) -> None:
    a = _junit(tmp_path / "a.xml", '<testcase classname="suites.x" name="t"/>')
    b = _junit(tmp_path / "b.xml", '<testcase classname="suites.y" name="t"/>', kernel="6.12")
    with pytest.raises(JunitError, match=r"the shards differ in kernel \(6.1, 6.12\)"):
        merge_shards([read_run(a), read_run(b)])


def test_summary_shards_writes_one_page_counting_every_shards_tests(tmp_path: Path) -> None:
    a = _junit(tmp_path / "a.xml", '<testcase classname="suites.x" name="t"/>')
    b = _junit(tmp_path / "b.xml", '<testcase classname="suites.y" name="t"/>'
                                   '<testcase classname="suites.y" name="u"/>')
    out = tmp_path / "merged"
    assert summary.main(["--shards", str(a), str(b), "--out", str(out)]) == 0
    page = (out / "summary.md").read_text()
    assert "## Verdict: PASSED" in page
    assert "3 tests: 3 passed; 10 s of test time in 2 shards (the slowest's time)" in page
