"""harness.coverage: the table is generated from the suites and a JUnit report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_harness import coverage

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite>
<testcase classname="suites.sbc.test_unmap" name="test_unmap_reads_zeroes[RamDisk]"/>
<testcase classname="suites.sbc.test_unmap" name="test_unmap_reads_zeroes[FileDisk]">
<failure message="x"/></testcase>
<testcase classname="suites.sbc.test_unmap" name="test_unmap_limit[10-RamDisk]">
<skipped message="not claimed"/></testcase>
</testsuite></testsuites>"""


def test_results_per_handler(tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    junit.write_text(JUNIT)
    found = coverage.results(junit)
    assert found["suites/sbc/test_unmap.py::test_unmap_reads_zeroes"] == {
        "RamDisk": ["pass"], "FileDisk": ["FAIL"]}
    assert found["suites/sbc/test_unmap.py::test_unmap_limit"] == {"RamDisk": ["skip"]}


def test_tables(tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    junit.write_text(JUNIT)
    test = coverage.SuiteTest("suites/sbc/test_unmap.py", "test_unmap_reads_zeroes",
                              "SBC-3 5.28: unmapped blocks read zeroes.")
    other = coverage.SuiteTest("suites/sbc/test_unmap.py", "test_unmap_limit", "")
    family = coverage.Family("suites/sbc/test_unmap.py", "UNMAP", (test, other))
    table = coverage.readme_table([family], coverage.results(junit))
    header = "| command family | tests | what is checked | FileDisk | RamDisk |"
    assert table.splitlines()[0] == header
    assert table.splitlines()[2] == (
        "| UNMAP (`test_unmap.py`) | 2 | unmap reads zeroes; unmap limit | 0 pass, **1 FAIL** "
        "| 1 pass, 1 skip |")
    page = coverage.detail_page([family], coverage.results(junit))
    assert "| unmap reads zeroes | SBC-3 5.28 | FAIL | pass |" in page
    assert test.clause == "SBC-3 5.28"


def test_update_readme_replaces_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{coverage.START}\nold\n{coverage.END}\nrest\n")
    coverage.update_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{coverage.START}\nnew table\n{coverage.END}\nrest\n"
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="no coverage markers"):
        coverage.update_readme(readme, "x")


def test_missing_junit_is_one_sentence_and_status_4(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    assert coverage.main(["--junit", str(tmp_path / "none.xml")]) == 4
    assert "run the suites with --junitxml first" in capsys.readouterr().err


def test_readme_table_lists_every_suite_module_with_its_test_count() -> None:
    """The README's table is regenerated when the suites change (tox -e coverage)."""
    text = (coverage.PROJECT / "README.md").read_text()
    block = text.split(coverage.START, 1)[1].split(coverage.END, 1)[0]
    rows = {line.split("(`")[1].split("`)")[0]: int(line.split("|")[2])
            for line in block.splitlines() if "(`" in line}
    wanted = {Path(f.module).name: len(f.tests) for f in coverage.scan()}
    assert rows == wanted, "README coverage table is stale: run tox -e coverage"
