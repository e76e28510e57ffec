"""Profile a Python handler's process in the guest while fio drives its LUN.

    python -m tcmu_harness.benchmarks.profile_handler [--handler SPEC] [--runtime S] [--rate HZ]

Runs inside the VM (e.g. `tcmu-harness run --accel tcg -- python -m
benchmarks.profile_handler`): creates one LUN, then for 4 KiB random reads at QD1 and
QD16 runs fio and, at the same time, py-spy (pip install py-spy; sampling, without
stopping the handler) on the handler process. Prints fio's IOPS, the handler's CPU
share (utime+stime over wall time: near 100% means Python bounds it, far below means
it waits for wakeups) and the functions with the most samples, self and inclusive.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from tcmu_harness.benchmarks import fio

JOBS = ("randread-4k-qd1", "randread-4k-qd16")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def top_frames(raw: str, limit: int = 15
               ) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, self counts, inclusive counts) per frame from py-spy's raw (collapsed)
    output: the `limit` frames with most samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    return sum(own.values()), own.most_common(limit), inclusive.most_common(limit)


def _profile_job(job: fio.Job, args: argparse.Namespace, py_spy: str, workdir: str) -> None:
    from tcmu_harness.lio import lun

    name = f"profile_{job.iodepth}"
    lun.create(name, size=64 << 20, handler=args.handler)
    try:
        disk = lun.block_device(name)
        pid = lun._get(name).handler.pid
        with open(f"{workdir}/prefill.fio", "w") as f:
            f.write(fio.job_file(disk, fio.PREFILL_JOB, 0, 0))
        subprocess.run(["fio", "--output-format=json", f"{workdir}/prefill.fio"],
                       check=True, capture_output=True)
        path = f"{workdir}/{job.name}.fio"
        with open(path, "w") as f:
            f.write(fio.job_file(disk, job, args.runtime, 0))
        out = f"{workdir}/{job.name}.txt"
        threads = subprocess.run([py_spy, "dump", "--nonblocking", "-p", str(pid)],
                                 capture_output=True, text=True, check=False).stdout
        print(f"-- handler threads before {job.name}: "
              f"{'; '.join(x for x in threads.splitlines() if x.startswith('Thread'))}")
        spy = subprocess.Popen([py_spy, "record", "--nonblocking", "--format", "raw",
                                "-r", str(args.rate), "-d", str(int(args.runtime)),
                                "-p", str(pid), "-o", out],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0, t0 = _cpu_s(pid), time.monotonic()
        done = subprocess.run(["fio", "--output-format=json", path], capture_output=True,
                              text=True, check=True)
        share = (_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
        spy.wait(30)
    finally:
        report = lun.delete(name)
    figures = fio.parse(json.loads(fio.json_part(done.stdout)))[job.name]
    per_io = share / figures.iops * 1e6 if figures.iops else 0.0
    served = [line for line in report["handler_output"].splitlines() if "wakeups" in line]
    print(f"== {job.name}: {figures.iops:.0f} IOPS, p50 {figures.lat_p50_us:.0f} us, "
          f"handler CPU {share:.0%} of one CPU, {per_io:.0f} us of it per I/O; handler "
          f"{served[-1].split(' INFO ')[-1] if served else 'gave no wakeup count'} "
          "(prefill included)")
    with open(out) as f:
        total, own, inclusive = top_frames(f.read())
    total = total or 1
    print("  self:")
    for frame, count in own:
        print(f"    {count / total:6.1%}  {frame}")
    print("  inclusive:")
    for frame, count in inclusive:
        print(f"    {count / total:6.1%}  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--handler", default="tcmu.handlers.ramdisk:RamDisk")
    parser.add_argument("--runtime", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")

    workdir = tempfile.mkdtemp(prefix="tcmu-profile-")
    try:
        for job_name in JOBS:  # a LUN per job: its handler's wakeup count is the job's
            _profile_job(fio.JOBS_BY_NAME[job_name], args, py_spy, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        import multiprocessing

        for child in multiprocessing.active_children():  # lio.handlers' spare
            child.terminate()
            child.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
