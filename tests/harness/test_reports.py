"""The run's own record (JUnit properties, allure environment), the qualification summary
and `compare`, on real JUnit files written by pytest runs of small throwaway tests (no VM).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tcmu_harness import compare, summary
from tcmu_harness.junit import JunitError, read_run

PROJECT = Path(__file__).resolve().parents[2]

_TESTS = '''
import pytest

def test_passes():
    assert True

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == {broken}

def test_skips():
    pytest.skip("no such feature in this kernel")
'''


def _run(tmp: Path, name: str, broken: int = 1, extra: str = "") -> tuple[int, Path]:
    """pytest, with the harness's plugins, on a small test file; its JUnit path."""
    folder = tmp / name
    folder.mkdir()
    (folder / "test_sample.py").write_text(_TESTS.format(broken=broken) + extra)
    junit = folder / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
         f"--alluredir={folder / 'allure'}", f"--rootdir={folder}", str(folder)],
        cwd=PROJECT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert junit.exists(), proc.stdout + proc.stderr
    return proc.returncode, junit


def test_junit_carries_the_runs_identity_and_exit_status(tmp_path: Path) -> None:
    status, junit = _run(tmp_path, "a")
    assert status == 1
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert props["tcmu_harness.commit"].startswith(head)
    assert props["tcmu_harness.exit_status"] == "1 (tests failed)"
    assert props["tcmu_harness.handler_ids"] == "RamDisk"
    assert props["tcmu_harness.lun"] == "67108864 bytes, 512-byte blocks"
    env = (tmp_path / "a" / "allure" / "environment.properties").read_text().splitlines()
    assert "exit_status=1 (tests failed)" in env
    assert any(line.startswith("commit=" + head) for line in env)


def test_an_interrupted_run_reads_as_incomplete_not_clean(tmp_path: Path) -> None:
    extra = "\n\ndef test_zz_interrupt():\n    raise KeyboardInterrupt\n"
    status, junit = _run(tmp_path, "a", extra=extra)
    assert status == 2
    run = read_run(junit)
    assert run.properties["exit_status"] == "2 (interrupted)"
    assert not run.complete
    assert summary.verdict(run) == "INCOMPLETE"
    assert "did not run, they did not pass" in summary.markdown(run)


def test_summary_pages_hold_the_verdict_counts_failures_and_skip_reasons(tmp_path: Path) -> None:
    _, junit = _run(tmp_path, "a")
    run = read_run(junit.parent)
    md_path, html_path = summary.write(run, tmp_path / "out")
    md, page = md_path.read_text(), html_path.read_text()
    assert summary.verdict(run) == "FAILED"
    assert "## Verdict: FAILED" in md
    assert "4 tests: 2 passed, 1 failed, 1 skipped" in md
    assert "FAILED" in page and "<table>" in page
    for text in (md, page):
        assert "test_param[2]" in text  # the failure, named
        assert "assert 2 == 1" in text  # with its evidence
        assert "no such feature in this kernel" in text  # the skip reason
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_compare_reports_exactly_the_changed_outcome(tmp_path: Path) -> None:
    _, a = _run(tmp_path, "a", broken=1)  # test_param[2] fails
    _, b = _run(tmp_path, "b", broken=2)  # test_param[1] fails, test_param[2] passes
    run_a, run_b = read_run(a), read_run(b)
    found = compare.changes(run_a, run_b)
    assert [(c.node_id.split("::")[1], c.before, c.after) for c in found] == [
        ("test_param[1]", "passed", "failed"), ("test_param[2]", "failed", "passed")]
    assert compare.main([str(a), str(b)]) == 1
    assert compare.main([str(a), str(a)]) == 0
    assert compare.main([str(a), str(tmp_path / "missing.xml")]) == 4


def test_a_missing_or_truncated_junit_is_one_sentence(tmp_path: Path) -> None:
    truncated = tmp_path / "junit.xml"
    truncated.write_text("<testsuites><testsuite")
    for path, words in ((tmp_path / "nope.xml", "does not exist"), (truncated, "not XML")):
        try:
            read_run(path)
        except JunitError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"{path} was read")


def test_the_summary_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The page a release engineer opens: Debian's chromium renders it offline (every
    network request refused by a dead proxy) with the verdict and the tables in its DOM."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/setup installs it)")
    _, junit = _run(tmp_path, "a")
    _, page = summary.write(read_run(junit), tmp_path / "out")
    shot = tmp_path / "summary.png"
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
              "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
              f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "Verdict: FAILED" in dom
    assert dom.count("<table>") >= 3, dom[:2000]
    assert "test_param[2]" in dom and "assert 2 == 1" in dom
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_matrix_summary_names_each_run_and_what_changed_between_them(tmp_path: Path) -> None:
    _, a = _run(tmp_path, "a", broken=1)
    _, b = _run(tmp_path, "b", broken=2)
    out = tmp_path / "matrix"
    assert summary.main([str(a.parent), str(b.parent), "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "## Verdict: FAILED" in md and "2 runs" in md
    assert "## Changes from a to b (2)" in md  # run labels: the run directories (no VM)
    assert "test_param[1] | passed | failed |" in md
    assert "test_param[2] | failed | passed |" in md
    assert "a: Failures (1)" in md and "b: Failures (1)" in md
    assert "<table>" in (out / "summary.html").read_text()
