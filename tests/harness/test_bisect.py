"""bisect-run's mapping of a pytest run to git bisect's exit statuses (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_harness import bisect
from tcmu_harness.junit import Case, Run
from tcmu_harness.vm.kernel import KernelError


def _case(name: str, outcome: str) -> Case:
    return Case("suites/smoke/test_smoke.py", name, "RamDisk", outcome, 0.1, "", "")


def _run(*outcomes: str, **properties: str) -> Run:
    cases = [_case(f"test_{i}", o) for i, o in enumerate(outcomes)]
    return Run(Path("junit.xml"), dict(properties), cases, 1.0)


def test_all_passed_with_skips_is_good() -> None:
    assert bisect.verdict(0, _run("passed", "skipped")) == (0, "1 passed, 1 skipped")


def test_a_failure_or_error_is_bad_and_named() -> None:
    code, reason = bisect.verdict(1, _run("passed", "failed", "error"))
    assert code == 1
    assert reason == ("1 passed, 1 failed, 1 error: suites/smoke/test_smoke.py::test_1[RamDisk], "
                      "suites/smoke/test_smoke.py::test_2[RamDisk]")


def test_more_than_five_bad_tests_are_counted_not_listed() -> None:
    code, reason = bisect.verdict(1, _run(*["failed"] * 7))
    assert code == 1 and reason.endswith("test_4[RamDisk] and 2 more")


def test_a_vm_that_did_not_boot_is_skip_not_bad() -> None:
    run = _run("error", "error", vm_boot_error="no guest agent within 120 s\nconsole: ...")
    assert bisect.verdict(1, run) == (125, "the VM did not boot: no guest agent within 120 s")


@pytest.mark.parametrize(("status", "reason"), [
    (2, "pytest was interrupted or could not collect the tests"),
    (3, "pytest hit an internal error"),
    (4, "pytest refused its arguments (a usage error)"),
    (5, "no test was selected"),
    (-9, "pytest was killed (status -9)"),
    (137, "pytest was killed (status 137)"),
])  # fmt: skip
def test_what_says_nothing_about_the_kernel_is_skip(status: int, reason: str) -> None:
    assert bisect.verdict(status, _run("passed")) == (125, reason)


def test_no_junit_is_skip() -> None:
    assert bisect.verdict(1, None) == (125, "pytest wrote no JUnit report")


def test_failed_status_without_a_failed_case_is_skip() -> None:
    """Exit 1 with every case passing (a session-level failure): nothing to blame."""
    assert bisect.verdict(1, _run("passed")) == (125, "pytest exited 1 with 1 passed")


def test_build_dir_spec_takes_modules_from_the_option_or_install_mod_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INSTALL_MOD_PATH", raising=False)
    assert bisect.kernel_spec(str(tmp_path), "/m", None) == f"{tmp_path}:/m"
    monkeypatch.setenv("INSTALL_MOD_PATH", "/env")
    assert bisect.kernel_spec(str(tmp_path), None, None) == f"{tmp_path}:/env"
    assert bisect.kernel_spec(None, None, "deb:6.12") == "deb:6.12"
    monkeypatch.delenv("INSTALL_MOD_PATH")
    with pytest.raises(KernelError, match="give --modules MODROOT"):
        bisect.kernel_spec(str(tmp_path), None, None)


def test_test_paths_of_the_callers_directory_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert bisect._absolute_paths(["mine.py::test_x", "-k", "x", "suites/smoke"]) == [
        f"{tmp_path}/mine.py::test_x", "-k", "x", "suites/smoke"]


@pytest.mark.parametrize("argv", [
    ["--kernel-build-dir", "/nonexistent", "--modules", "/m", "--", "suites/smoke"],
    ["--kernel-build-dir", "/tmp"],
    ["--bogus"],
])  # fmt: skip
def test_no_usable_kernel_or_bad_arguments_is_skip_in_one_sentence(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INSTALL_MOD_PATH", raising=False)
    assert bisect.run(argv) == 125
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tcmu-harness bisect-run: 125 (skip): "), last
