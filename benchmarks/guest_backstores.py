"""Guest side of the backstore comparison: export each backstore through tcm_loop, run
the fio jobs (benchmarks.fio) on its /dev/sdX, tear it down; print one JSON object.

    python -m tcmu_harness.benchmarks.guest_backstores [--size BYTES] [--runtime S] [--ramp S]
        [--backstores NAME,...]

Runs inside the harness's VM (benchmarks.compare_backstores starts it); progress lines
("bench: ...") go to stderr, the JSON to stdout. Every backstore lives on one tmpfs that
is mounted here and unmounted at the end, and only one backstore exists at a time.

tcmu-runner is measured first and runs only while its own device exists: at start it
writes the module's reset_netlink (failing whatever netlink reply the kernel waits for)
and turns on reply mode for the whole module (SET_FEATURES), and it answers every
device's netlink events, failing those whose subtype it has no handler for (libtcmu.c
handle_netlink / find_handler). Our LUNs are created with nl_reply_supported=-1, so the
kernel never waits for a reply about them, but keeping tcmu-runner to its own slot
keeps it from seeing them at all. It finds its device when it starts (open_devices
scans /dev/uio* whose name starts "tcm-user" and takes those whose dev_config subtype
is one of its handlers': "qcow/<image>" here).

tcmu-runner's image is raw (a sparse file of the LUN's size), which its qcow handler
serves with plain preadv/pwritev (bdev_open probes qcow, qcow2, then raw). Not qcow
version 1: tcmu-runner 1.5.4 sets the COPIED flag only for qcow2 images, so on a qcow1
image every write to an allocated cluster copies it to a new 64 KiB cluster at the end
of the file ("re-allocating shared cluster for writing", with fdatasync); the image grew
past the tmpfs and writes failed with EIO. Not qcow2: it allocates clusters with
fallocate(FALLOC_FL_ZERO_RANGE), which tmpfs does not support.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from tcmu_harness.benchmarks import fio

BACKSTORES = ("tcmu-runner-raw", "python-ramdisk", "python-filedisk", "lio-rd_mcp",
              "lio-fileio")
PYTHON_HANDLERS = {
    "python-ramdisk": "tcmu.handlers.ramdisk:RamDisk",
    "python-filedisk": "tcmu.handlers.filedisk:FileDisk",
}
NODE_TIMEOUT = 120.0
FIO_SLACK = 120.0  # s beyond runtime + ramp before a fio run counts as hung


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _wait_for_disk(address: str, deadline: float) -> str:
    """The /dev/sdX of SCSI device `address` (H:C:T:L), once sd has bound it."""
    pattern = f"/sys/class/scsi_device/{address}/device/block/sd*"
    while True:
        found = glob.glob(pattern)
        if found and os.path.exists(f"/dev/{os.path.basename(found[0])}"):
            return f"/dev/{os.path.basename(found[0])}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"no /dev/sd node appeared for SCSI device {address}")
        time.sleep(0.02)


@contextlib.contextmanager
def _exported(storage: Any) -> Iterator[str]:
    """Export an rtslib storage object through its own tcm_loop target; yields /dev/sdX."""
    from rtslib_fb import LUN, TPG, FabricModule, Target

    target = Target(FabricModule("loopback"))
    try:
        tpg = TPG(target, 1)  # rtslib writes the loopback TPG's nexus
        LUN(tpg, 0, storage)
        address = f"{_read(f'{tpg.path}/address').strip()}:0"
        yield _wait_for_disk(address, time.monotonic() + NODE_TIMEOUT)
    finally:
        target.delete()


@contextlib.contextmanager
def _kernel_backstore(kind: str, name: str, size: int, workdir: str) -> Iterator[str]:
    from rtslib_fb import FileIOStorageObject, RDMCPStorageObject

    if kind == "rd_mcp":
        storage = RDMCPStorageObject(name, size=size)
    else:
        storage = FileIOStorageObject(name, f"{workdir}/{name}.img", size=size)
    try:
        with _exported(storage) as disk:
            yield disk
    finally:
        storage.delete()


def _uio_of(pid: int) -> str | None:
    """The /dev/uioN that process `pid` has open, if any."""
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("/dev/uio"):
                return target
    return None


@contextlib.contextmanager
def _tcmu_runner(name: str, size: int, workdir: str) -> Iterator[str]:
    """tcmu-runner's qcow handler on a raw image in the tmpfs (see the module's notes)."""
    from rtslib_fb import UserBackedStorageObject

    image = f"{workdir}/{name}.raw"
    with open(image, "wb") as f:
        f.truncate(size)
    log_dir = f"{workdir}/tcmu-runner-log"
    os.makedirs(log_dir, exist_ok=True)
    storage = UserBackedStorageObject(name, config=f"qcow/{image}", size=size)
    runner: subprocess.Popen[bytes] | None = None
    try:
        with open(f"{log_dir}/output", "wb") as output:
            runner = subprocess.Popen(["tcmu-runner", "--tcmu-log-dir", log_dir],
                                      stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + NODE_TIMEOUT
        while _uio_of(runner.pid) is None:
            if runner.poll() is not None or time.monotonic() > deadline:
                logs = _tail(f"{log_dir}/output") + _tail(f"{log_dir}/tcmu-runner.log")
                raise RuntimeError(f"tcmu-runner did not open its device ({logs.strip()})")
            time.sleep(0.05)
        with _exported(storage) as disk:
            yield disk
    finally:
        storage.delete()  # REMOVED_DEVICE: tcmu-runner answers it while still running
        if runner is not None:
            runner.terminate()
            try:
                runner.wait(15)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()


def _tail(path: str, size: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def _python_handler(kind: str, name: str, size: int, workdir: str) -> Iterator[str]:
    from tcmu_harness.lio import lun

    config = f"{workdir}/{name}.img" if kind == "python-filedisk" else None
    lun.create(name, size=size, handler=PYTHON_HANDLERS[kind], config=config)
    try:
        yield lun.block_device(name, NODE_TIMEOUT)
    finally:
        report = lun.delete(name)
        if report["errors"]:
            _say(f"{name} teardown: {'; '.join(report['errors'])}")


def _backstore(kind: str, size: int, workdir: str) -> contextlib.AbstractContextManager[str]:
    name = "bench_" + kind.replace("-", "_")
    if kind == "tcmu-runner-raw":
        return _tcmu_runner(name, size, workdir)
    if kind in PYTHON_HANDLERS:
        return _python_handler(kind, name, size, workdir)
    if kind in ("lio-rd_mcp", "lio-fileio"):
        return _kernel_backstore(kind.removeprefix("lio-"), name, size, workdir)
    raise ValueError(f"unknown backstore {kind!r}; known: {', '.join(BACKSTORES)}")


def _fio(disk: str, job: fio.Job, runtime_s: float, ramp_s: float, workdir: str
         ) -> dict[str, Any]:
    job_path = f"{workdir}/{job.name}.fio"
    with open(job_path, "w") as f:
        f.write(fio.job_file(disk, job, runtime_s, ramp_s))
    done = subprocess.run(["fio", "--output-format=json", job_path], capture_output=True,
                          text=True, timeout=runtime_s + ramp_s + FIO_SLACK, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fio {job.name} exited {done.returncode}: {one_line(done.stderr)}")
    return json.loads(fio.json_part(done.stdout))


def one_line(text: str, limit: int = 240) -> str:
    """A failure in one line: fio's own error line if it printed one (e.g. "fio: io_u
    error on file /dev/sda: Input/output error: write offset=..."), else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    line = (errors or lines or ["(no output)"])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def run_fio(disk: str, runtime_s: float, ramp_s: float, workdir: str) -> dict[str, Any]:
    """The prefill, then every job in benchmarks.fio.JOBS: {job name: figures}, or
    {job name: {"error": one line}} for a job that failed (the later jobs still run).
    A failed prefill fails the backstore: its reads would hit holes."""
    _fio(disk, fio.PREFILL_JOB, runtime_s, ramp_s, workdir)
    out: dict[str, Any] = {}
    for job in fio.JOBS:
        try:
            figures = fio.parse(_fio(disk, job, runtime_s, ramp_s, workdir))[job.name]
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            error = one_line(f"{type(exc).__name__}: {exc}")
            _say(f"  {job.name}: failed: {error}")
            out[job.name] = {"error": error}
            continue
        _say(f"  {job.name}: {figures.iops:.0f} IOPS, p50 {figures.lat_p50_us:.0f} us")
        out[job.name] = figures.as_dict()
    return out


def measure(kind: str, size: int, runtime_s: float, ramp_s: float, workdir: str,
            clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """One backstore: set-up time, fio figures, teardown time (or the error)."""
    t0 = clock()
    try:
        with _backstore(kind, size, workdir) as disk:
            setup = clock() - t0
            _say(f"{kind}: {disk} ready after {setup:.2f} s; running fio")
            jobs = run_fio(disk, runtime_s, ramp_s, workdir)
            t1 = clock()
        return {"jobs": jobs, "setup_s": round(setup, 3), "teardown_s": round(clock() - t1, 3)}
    except Exception as exc:
        _say(f"{kind}: failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        # The next backstore gets the whole tmpfs (a qcow1 image for tcmu-runner once
        # filled it, and every later file-backed backstore failed its writes with EIO).
        for entry in os.scandir(workdir):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64 << 20)
    parser.add_argument("--runtime", type=float, default=4.0)
    parser.add_argument("--ramp", type=float, default=1.0)
    parser.add_argument("--backstores", default=",".join(BACKSTORES))
    args = parser.parse_args(argv)
    kinds = [k for k in args.backstores.split(",") if k]
    unknown = [k for k in kinds if k not in BACKSTORES]
    if unknown:
        parser.error(f"unknown backstore(s) {', '.join(unknown)}; known: {', '.join(BACKSTORES)}")
    os.makedirs("/etc/target", exist_ok=True)  # rtslib's dbroot must exist
    workdir = tempfile.mkdtemp(prefix="tcmu-bench-", dir="/run")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={4 * args.size + (64 << 20)}",
                    "tcmu-bench", workdir], check=True)
    results: dict[str, Any] = {}
    try:
        for kind in kinds:
            _say(f"{kind}: setting up")
            results[kind] = measure(kind, args.size, args.runtime, args.ramp, workdir)
    finally:
        subprocess.run(["umount", workdir], check=False)
        os.rmdir(workdir)
    json.dump({"backstores": results, "kernel": os.uname().release}, sys.stdout)
    print(flush=True)
    _stop_spare_handlers()
    return 0


def _stop_spare_handlers() -> None:
    """lio.handlers keeps a forked spare waiting for a device; multiprocessing would wait
    for it at exit forever."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()
        child.join(10)


if __name__ == "__main__":
    sys.exit(main())
