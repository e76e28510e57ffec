"""benchmarks.report: the comparison table, the ratios and the goals (no VM)."""

from __future__ import annotations

from typing import Any

from tcmu_harness.benchmarks import report


def _row(iops: float, bw: float = 1.0, p50: float = 10.0, p99: float = 20.0) -> dict[str, Any]:
    return {"iops": iops, "bw_mib_s": bw, "lat_p50_us": p50, "lat_p99_us": p99}


RESULTS = {
    report.RUNNER: {"randread-4k-qd1": _row(400), "randread-4k-qd16": _row(1600)},
    "python-ramdisk": {"randread-4k-qd1": _row(600, 2.3, 1500, 3100),
                       "randread-4k-qd16": _row(2400)},
    "lio-rd_mcp": {"randread-4k-qd1": _row(8000), "randread-4k-qd16": _row(8000)},
    "lio-fileio": {"error": "RuntimeError: fio exited 1"},
}


def test_ratio_is_iops_over_the_reference() -> None:
    assert report.ratio(RESULTS, "python-ramdisk", report.RUNNER, "randread-4k-qd1") == 1.5
    assert report.ratio(RESULTS, "python-ramdisk", report.RD_MCP, "randread-4k-qd16") == 0.3
    assert report.ratio(RESULTS, "python-ramdisk", "lio-fileio", "randread-4k-qd1") is None
    assert report.ratio(RESULTS, "python-ramdisk", report.RUNNER, "write-1m-qd1") is None


def test_table_rows_and_ratio_columns() -> None:
    lines = report.table(RESULTS).splitlines()
    python = [line for line in lines if "python-ramdisk" in line]
    assert python[0].split() == ["randread-4k-qd1", "python-ramdisk", "600", "2.3", "1500",
                                 "3100", "1.50", "0.07"]
    assert python[1].split()[-2:] == ["1.50", "0.30"]
    runner = [line for line in lines if line.startswith("randread-4k-qd1 ") and "tcmu-runner"
              in line]
    assert runner[0].split()[-2:] == ["-", "-"]  # ratios only for Python handlers
    assert lines[-1] == "lio-fileio: not measured: RuntimeError: fio exited 1"


EIO = ("RuntimeError: fio write-1m-qd1 exited 1: fio: io_u error on file /dev/sda: "
       "Input/output error: write offset=24117248, buflen=1048576")
WITH_A_FAILED_JOB = {
    report.RUNNER: {"randread-4k-qd1": _row(400), "write-1m-qd1": {"error": EIO}},
    "python-ramdisk": {"randread-4k-qd1": _row(600), "write-1m-qd1": _row(80, 80.0)},
    "lio-rd_mcp": {"randread-4k-qd1": _row(8000), "write-1m-qd1": _row(200, 200.0)},
}


def test_table_keeps_a_backstore_with_a_failed_job() -> None:
    lines = report.table(WITH_A_FAILED_JOB).splitlines()
    runner = [line for line in lines if report.RUNNER in line]
    assert runner[0].split() == ["randread-4k-qd1", report.RUNNER, "400", "1.0", "10",
                                 "20", "-", "-"]
    assert runner[1] == f"{'write-1m-qd1':18s} {report.RUNNER:18s} failed: {EIO}"
    assert len(runner) == 2
    python = [line.split() for line in lines if "python-ramdisk" in line]
    assert python[0][-2:] == ["1.50", "0.07"]
    assert python[1] == ["write-1m-qd1", "python-ramdisk", "80", "80.0", "10", "20", "-",
                         "0.40"]  # no ratio to the job that failed
    assert not any("not measured" in line for line in lines)


def test_ratio_to_a_failed_job_is_none_both_ways() -> None:
    assert report.ratio(WITH_A_FAILED_JOB, "python-ramdisk", report.RUNNER,
                        "write-1m-qd1") is None
    assert report.ratio(WITH_A_FAILED_JOB, report.RUNNER, "python-ramdisk",
                        "write-1m-qd1") is None
    assert report.ratio(WITH_A_FAILED_JOB, "python-ramdisk", report.RUNNER,
                        "randread-4k-qd1") == 1.5


def test_goals_met_and_missed() -> None:
    checks = report.goals(RESULTS)
    assert [(c["job"], c["reference"], c["ratio"], c["met"]) for c in checks] == [
        ("randread-4k-qd1", report.RUNNER, 1.5, True),
        ("randread-4k-qd16", report.RUNNER, 1.5, False),
        ("randread-4k-qd1", report.RD_MCP, 0.075, False),
    ]
    text = report.goals_text(checks).splitlines()
    assert text[1].endswith("= 1.50 (goal >= 2): MISSED")
    assert text[0].endswith("= 1.50 (goal >= 1): met")


def test_goals_without_a_reference_are_not_measured() -> None:
    checks = report.goals({"python-filedisk": {"randread-4k-qd1": _row(500)}})
    assert {c["met"] for c in checks} == {None}
    assert report.goals_text(checks).splitlines()[0].endswith("= - (goal >= 1): not measured")
