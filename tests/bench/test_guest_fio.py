"""benchmarks.guest_backstores.run_fio: a failed fio job is kept, in one line, and the
later jobs still run (no VM: fio is replaced)."""

from __future__ import annotations

from typing import Any

import pytest

from tcmu_harness.benchmarks import fio, guest_backstores

FIO_STDERR = (
    "fio: io_u error on file /dev/sda: Input/output error: write offset=24117248, "
    "buflen=1048576\n"
    "fio: pid=812, err=5/file:io_u.c:1845, func=io_u error, error=Input/output error\n"
)


def _report(job: fio.Job) -> dict[str, Any]:
    side = {"iops": 100.0, "bw_bytes": 409600, "total_ios": 400,
            "lat_ns": {"mean": 9e6, "percentile": {"50.000000": 8_000_000,
                                                   "99.000000": 20_000_000}}}
    return {"jobs": [{"jobname": job.name, "error": 0, job.direction: side}]}


def test_a_failed_job_is_recorded_and_the_rest_run(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def fake_fio(disk: str, job: fio.Job, runtime_s: float, ramp_s: float,
                 workdir: str) -> dict[str, Any]:
        ran.append(job.name)
        if job.name == "randwrite-4k-qd1":
            raise RuntimeError(f"fio {job.name} exited 1: "
                               f"{guest_backstores.one_line(FIO_STDERR)}")
        return _report(job)

    monkeypatch.setattr(guest_backstores, "_fio", fake_fio)
    out = guest_backstores.run_fio("/dev/sda", 1.0, 0.0, "/nonexistent")
    assert ran == [fio.PREFILL] + [job.name for job in fio.JOBS]
    assert list(out) == [job.name for job in fio.JOBS]
    assert out["randwrite-4k-qd1"] == {
        "error": "RuntimeError: fio randwrite-4k-qd1 exited 1: fio: io_u error on file "
                 "/dev/sda: Input/output error: write offset=24117248, buflen=1048576"}
    assert out["randwrite-4k-qd16"]["iops"] == 100.0
    assert out["randwrite-4k-qd16"]["lat_p50_us"] == 8000.0


def test_a_failed_prefill_fails_the_backstore(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_fio(disk: str, job: fio.Job, *args: Any) -> dict[str, Any]:
        raise RuntimeError(f"fio {job.name} exited 1: no space")

    monkeypatch.setattr(guest_backstores, "_fio", fake_fio)
    with pytest.raises(RuntimeError, match=r"^fio prefill exited 1: no space$"):
        guest_backstores.run_fio("/dev/sda", 1.0, 0.0, "/nonexistent")


def test_one_line_picks_fios_error_line_and_bounds_it() -> None:
    assert guest_backstores.one_line("starting\n\n  last words  \n") == "starting"
    assert guest_backstores.one_line(FIO_STDERR).startswith("fio: io_u error on file")
    assert guest_backstores.one_line("") == "(no output)"
    long = guest_backstores.one_line("error " + "x" * 400)
    assert len(long) == 240 and long.endswith("...")
