"""The fio jobs the backstore comparison runs, and the figures read from fio's JSON.

Each backstore gets the same sequence of fio runs, one process per job: a prefill that
writes the whole LUN once (so that reads hit allocated blocks: sparse files read holes
without any I/O), then 4 KiB random reads and writes at queue depths 1 and
16, then 1 MiB sequential reads and writes. All jobs use libaio with O_DIRECT on the
LUN's /dev/sdX and, but for the prefill, a fixed runtime.
"""

from __future__ import annotations

import dataclasses
from typing import Any

PREFILL = "prefill"


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    rw: str  # fio's rw= (randread, randwrite, read, write)
    bs: str
    iodepth: int

    @property
    def direction(self) -> str:
        """The fio JSON section that holds this job's figures."""
        return "read" if self.rw in ("read", "randread") else "write"


JOBS = (
    Job("randread-4k-qd1", "randread", "4k", 1),
    Job("randread-4k-qd16", "randread", "4k", 16),
    Job("randwrite-4k-qd1", "randwrite", "4k", 1),
    Job("randwrite-4k-qd16", "randwrite", "4k", 16),
    Job("read-1m-qd1", "read", "1m", 1),
    Job("write-1m-qd1", "write", "1m", 1),
)
JOBS_BY_NAME = {job.name: job for job in JOBS}


PREFILL_JOB = Job(PREFILL, "write", "1m", 4)


def job_file(device: str, job: Job, runtime_s: float, ramp_s: float) -> str:
    """A fio job file for one job on `device`: time-based, except the prefill, which
    writes the whole device once."""
    lines = [
        f"[{job.name}]",
        f"filename={device}",
        "ioengine=libaio",
        "direct=1",
        "randrepeat=0",
        "norandommap=1",
        "lat_percentiles=1",  # percentiles of submission + completion latency
        f"rw={job.rw}",
        f"bs={job.bs}",
        f"iodepth={job.iodepth}",
    ]
    if job.name != PREFILL:
        lines += ["time_based=1", f"runtime={runtime_s:g}s", f"ramp_time={ramp_s:g}s"]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class JobFigures:
    """What one job measured: IOPS, bandwidth and total (submission + completion)
    latency percentiles."""

    name: str
    iops: float
    bw_mib_s: float
    lat_p50_us: float
    lat_p99_us: float
    lat_mean_us: float
    ios: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FioOutputError(ValueError):
    """fio's JSON lacks what a job's figures need."""


def _percentile(lat: dict[str, Any], pct: str) -> float:
    table = lat.get("percentile") or {}
    for key, value in table.items():
        if abs(float(key) - float(pct)) < 1e-6:
            return float(value) / 1000.0
    raise FioOutputError(f"no {pct}th percentile in fio's lat_ns (have {sorted(table)}): "
                         "run fio with lat_percentiles=1")


def parse(report: dict[str, Any]) -> dict[str, JobFigures]:
    """The figures of every known job in a fio --output-format=json report, by name
    (the prefill and unknown jobs are skipped)."""
    jobs = report.get("jobs")
    if not isinstance(jobs, list):
        raise FioOutputError("fio's JSON has no 'jobs' list")
    out: dict[str, JobFigures] = {}
    for entry in jobs:
        name = entry.get("jobname")
        job = JOBS_BY_NAME.get(name)
        if job is None:
            continue
        if entry.get("error"):
            raise FioOutputError(f"fio job {name} failed with error {entry['error']}")
        side = entry.get(job.direction)
        if not isinstance(side, dict) or "lat_ns" not in side:
            raise FioOutputError(f"fio job {name} has no '{job.direction}' figures")
        # Total latency (lat_ns = slat + clat), not clat: an in-kernel backstore often
        # completes a write inside io_submit, leaving clat near zero.
        lat = side["lat_ns"]
        out[name] = JobFigures(
            name=name,
            iops=float(side["iops"]),
            bw_mib_s=float(side["bw_bytes"]) / (1 << 20),
            lat_p50_us=_percentile(lat, "50"),
            lat_p99_us=_percentile(lat, "99"),
            lat_mean_us=float(lat.get("mean", 0.0)) / 1000.0,
            ios=int(side.get("total_ios", 0)),
        )
    return out


def json_part(output: str) -> str:
    """fio's JSON without what it may print before it (warnings on stdout)."""
    start = output.find("{")
    if start < 0:
        raise FioOutputError(f"fio printed no JSON: {output[-500:]!r}")
    return output[start:]
