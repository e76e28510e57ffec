"""The comparison table: fio figures per job and backstore, each Python handler's
figures as ratios to tcmu-runner and to the kernel's rd_mcp, and the issue's goals.

Input: {backstore: {job name: JobFigures.as_dict()}}; a job that failed maps to
{"error": "..."}, and so does a backstore whose set-up or prefill failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tcmu_harness.benchmarks.fio import JOBS

RUNNER = "tcmu-runner-raw"
RD_MCP = "lio-rd_mcp"
PYTHON_PREFIX = "python-"

# (python backstore's job, reference, minimum ratio of IOPS): the targets
GOALS = (
    ("randread-4k-qd1", RUNNER, 1.0),
    ("randread-4k-qd16", RUNNER, 2.0),
    ("randread-4k-qd1", RD_MCP, 0.5),
)

Results = Mapping[str, Mapping[str, Any]]


def _iops(results: Results, backstore: str, job: str) -> float | None:
    """The IOPS `backstore` measured on `job`, or None when the job failed or did not run."""
    row = results.get(backstore, {}).get(job)
    if not isinstance(row, Mapping) or "error" in row or "iops" not in row:
        return None
    return float(row["iops"])


def ratio(results: Results, backstore: str, reference: str, job: str) -> float | None:
    """backstore's IOPS on `job` over reference's, or None when either did not run."""
    mine = _iops(results, backstore, job)
    theirs = _iops(results, reference, job)
    if mine is None or not theirs:
        return None
    return mine / theirs


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: Results) -> str:
    """One row per (job, backstore) that ran: IOPS, MiB/s, p50/p99 total latency, and
    for Python handlers the IOPS ratio to tcmu-runner and to rd_mcp; a failed job's row
    says so with its error. Backstores that measured nothing are listed after."""
    header = (f"{'job':18s} {'backstore':18s} {'IOPS':>9s} {'MiB/s':>8s} {'p50 us':>9s} "
              f"{'p99 us':>9s} {'/runner':>8s} {'/rd_mcp':>8s}")
    lines = [header, "-" * len(header)]
    for job in JOBS:
        for backstore, figures in results.items():
            if "error" in figures:
                continue
            row = figures.get(job.name)
            if not isinstance(row, Mapping):
                continue
            if "error" in row:
                lines.append(f"{job.name:18s} {backstore:18s} failed: {row['error']}")
                continue
            python = backstore.startswith(PYTHON_PREFIX)
            to_runner = ratio(results, backstore, RUNNER, job.name) if python else None
            to_rd = ratio(results, backstore, RD_MCP, job.name) if python else None
            lines.append(
                f"{job.name:18s} {backstore:18s} {row['iops']:9.0f} {row['bw_mib_s']:8.1f} "
                f"{row['lat_p50_us']:9.0f} {row['lat_p99_us']:9.0f} "
                f"{_fmt_ratio(to_runner):>8s} {_fmt_ratio(to_rd):>8s}"
            )
    for backstore, figures in results.items():
        if "error" in figures:
            lines.append(f"{backstore}: not measured: {figures['error']}")
    return "\n".join(lines)


def goals(results: Results) -> list[dict[str, Any]]:
    """Each Python backstore against each goal: the ratio, the target, met or not
    (None when a figure is missing)."""
    out = []
    for backstore in results:
        if not backstore.startswith(PYTHON_PREFIX):
            continue
        for job, reference, target in GOALS:
            value = ratio(results, backstore, reference, job)
            out.append({"backstore": backstore, "job": job, "reference": reference,
                        "target": target, "ratio": value,
                        "met": None if value is None else value >= target})
    return out


def goals_text(checks: list[dict[str, Any]]) -> str:
    lines = []
    for check in checks:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
        lines.append(f"{check['backstore']:18s} {check['job']:18s} IOPS / {check['reference']}"
                     f" = {_fmt_ratio(check['ratio'])} (goal >= {check['target']:g}): {verdict}")
    return "\n".join(lines)
