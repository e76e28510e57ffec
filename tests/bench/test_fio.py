"""benchmarks.fio: job files and the figures read from fio's JSON (no VM)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tcmu_harness.benchmarks import fio


def _side(iops: float, bw_bytes: int, p50_ns: int, p99_ns: int, ios: int) -> dict[str, Any]:
    return {
        "iops": iops,
        "bw_bytes": bw_bytes,
        "total_ios": ios,
        "clat_ns": {"mean": 1.0, "percentile": {"50.000000": 1, "99.000000": 2}},
        "lat_ns": {
            "mean": 1_500_000.0,
            "percentile": {"1.000000": 1000, "50.000000": p50_ns, "99.000000": p99_ns,
                           "99.900000": 9_000_000},
        },
    }


def _idle() -> dict[str, Any]:
    return _side(0.0, 0, 0, 0, 0)


# The shape of `fio --output-format=json` (fio 3.33, lat_percentiles=1), trimmed to what
# parse() reads; clat_ns holds other figures, to show they are not the ones read.
REPORT: dict[str, Any] = {
    "fio version": "fio-3.33",
    "jobs": [
        {"jobname": "prefill", "error": 0, "read": _idle(),
         "write": _side(40.0, 41943040, 10_000_000, 20_000_000, 64)},
        {"jobname": "randread-4k-qd1", "error": 0,
         "read": _side(648.5, 2656256, 1_400_000, 3_200_000, 2594), "write": _idle()},
        {"jobname": "write-1m-qd1", "error": 0, "read": _idle(),
         "write": _side(12.0, 12582912, 80_000_000, 120_000_000, 48)},
    ],
}


def test_parse_reads_the_job_direction_and_skips_the_prefill() -> None:
    figures = fio.parse(REPORT)
    assert sorted(figures) == ["randread-4k-qd1", "write-1m-qd1"]
    read = figures["randread-4k-qd1"]
    assert read == fio.JobFigures(name="randread-4k-qd1", iops=648.5,
                                  bw_mib_s=2656256 / 1048576, lat_p50_us=1400.0,
                                  lat_p99_us=3200.0, lat_mean_us=1500.0, ios=2594)
    write = figures["write-1m-qd1"]
    assert (write.iops, write.bw_mib_s, write.lat_p50_us, write.lat_p99_us) == (
        12.0, 12.0, 80000.0, 120000.0)


def test_parse_refuses_a_failed_job() -> None:
    report = copy.deepcopy(REPORT)
    report["jobs"][1]["error"] = 5
    with pytest.raises(fio.FioOutputError, match="randread-4k-qd1 failed with error 5"):
        fio.parse(report)


def test_parse_refuses_missing_percentiles() -> None:
    report = copy.deepcopy(REPORT)
    del report["jobs"][1]["read"]["lat_ns"]["percentile"]["99.000000"]
    with pytest.raises(fio.FioOutputError, match="no 99th percentile"):
        fio.parse(report)


def test_parse_refuses_a_report_without_jobs() -> None:
    with pytest.raises(fio.FioOutputError, match="no 'jobs' list"):
        fio.parse({"fio version": "fio-3.33"})


def test_json_part_drops_what_fio_prints_before_the_json() -> None:
    text = 'fio: some warning\n{"jobs": []}\n'
    assert fio.json_part(text) == '{"jobs": []}\n'
    with pytest.raises(fio.FioOutputError, match="printed no JSON"):
        fio.json_part("fio: file:ioengines.c: failed\n")


def test_job_file_for_a_timed_job() -> None:
    job = fio.JOBS_BY_NAME["randread-4k-qd16"]
    text = fio.job_file("/dev/sdb", job, 4.0, 1.0)
    assert text.splitlines() == [
        "[randread-4k-qd16]", "filename=/dev/sdb", "ioengine=libaio", "direct=1",
        "randrepeat=0", "norandommap=1", "lat_percentiles=1", "rw=randread", "bs=4k", "iodepth=16",
        "time_based=1", "runtime=4s", "ramp_time=1s",
    ]


def test_the_prefill_writes_the_whole_device_untimed() -> None:
    text = fio.job_file("/dev/sdb", fio.PREFILL_JOB, 4.0, 1.0)
    assert "rw=write" in text.splitlines()
    assert "time_based" not in text and "runtime" not in text


def test_the_jobs_the_issue_asks_for() -> None:
    assert [(j.rw, j.bs, j.iodepth, j.direction) for j in fio.JOBS] == [
        ("randread", "4k", 1, "read"), ("randread", "4k", 16, "read"),
        ("randwrite", "4k", 1, "write"), ("randwrite", "4k", 16, "write"),
        ("read", "1m", 1, "read"), ("write", "1m", 1, "write"),
    ]
