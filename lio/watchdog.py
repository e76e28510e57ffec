"""Watch each LUN's handler while the harness has commands in flight on it, so a handler
that dies or hangs fails those commands at once, saying why, instead of leaving them to
the kernel's cmd_time_out (NOT READY 08/00) or to the SG_IO timeout (DID_TIME_OUT, then
SCSI error handling that waits on the stuck command again).

One monitor thread waits on every watched handler's process sentinel and on the hang
deadlines of the commands in flight:

- the handler exits or is killed: the verdict is "handler <spec> died (signal SIGSEGV)
  while <CDB> (<name>) was in flight" plus the tail of its output (the traceback);
- a command stays unanswered past its hang threshold, a little under the smaller of its
  SG_IO timeout and the backstore's cmd_time_out, so the handler is caught still stuck:
  its Python stacks are dumped (faulthandler, see lio.handlers), it is killed, and the
  verdict is "handler <spec> hung: <CDB> (<name>) unanswered for N s" with the stacks.

Either way action/reset_ring=2 then makes the kernel complete the commands still in the
ring with CHECK CONDITION (measured: SG_IO returns at once), so the waiting requests
return and raise HandlerFailure with the verdict; so does every later command on the
LUN. Exits the harness causes itself are not judged: kill_handler and restart announce
them with expect_exit(), teardown stops watching first (unwatch).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from tcmu_harness.initiator.result import opcode_name
from tcmu_harness.lio.handlers import HandlerProcess

HANG_MARGIN = 3.0  # seconds before the SG_IO timeout / cmd_time_out the handler is judged
_POLL = 0.5  # seconds between looks at the hang deadlines
QUIET = 0.1  # seconds without a command in flight that end the kernel's probe of a disk
PROBE_WAIT = 3.0  # seconds after which an idle, unfinished probe no longer holds set-up
OUTPUT_WINDOW = 1 << 16  # characters of the handler's output searched for its crash report
EVIDENCE_LIMIT = 8000  # characters of it a verdict quotes
# Where a crash report starts: faulthandler's (fatal signal) and Python's (exception).
_CRASH_MARKERS = ("Fatal Python error", "Traceback (most recent call last)")


class HandlerFailure(RuntimeError):
    """The LUN's handler died or hung; str() is the verdict with its evidence."""


class WatchedLun(Protocol):
    """What the watchdog needs of a LUN (lio.lun._Lun)."""

    name: str
    spec: str
    sg: str
    handler: HandlerProcess

    @property
    def backstore_dir(self) -> str: ...


@dataclass
class _InFlight:
    what: str  # "28 00 ... (READ(10))"
    started: float
    hang_after: float

    @property
    def deadline(self) -> float:
        return self.started + self.hang_after


@dataclass
class _Watch:
    lun: WatchedLun
    cmd_time_out: float  # 0: the kernel never times a command out
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    verdict: str | None = None
    judged: threading.Event = field(default_factory=threading.Event)  # verdict is final
    implicated: set[int] = field(default_factory=set)  # tokens in flight when judged
    reported: bool = False  # a command has raised the verdict
    expect_exit: bool = False


_lock = threading.Lock()
_watches: dict[str, _Watch] = {}
_tokens = itertools.count()
_monitor: threading.Thread | None = None


def describe_cdb(cdb: bytes) -> str:
    return f"{cdb.hex(' ')} ({opcode_name(cdb)})"


def watch(lun: WatchedLun) -> None:
    """Start watching `lun`'s handler (from the moment it serves)."""
    global _monitor
    cmd_time_out = float(_read(f"{lun.backstore_dir}/attrib/cmd_time_out") or 0)
    with _lock:
        _watches[lun.name] = _Watch(lun, cmd_time_out)
        if _monitor is None:
            _monitor = threading.Thread(target=_monitor_loop, name="handler-watchdog",
                                        daemon=True)
            _monitor.start()


def unwatch(name: str) -> _Watch | None:
    """Stop watching (teardown); returns the watch with its verdict, if any."""
    with _lock:
        return _watches.pop(name, None)


def expect_exit(name: str, expected: bool = True) -> None:
    """The harness itself stops this handler now (kill_handler, restart): no verdict.
    expected=False after a new handler took over; any old verdict is cleared too."""
    with _lock:
        watched = _watches.get(name)
        if watched is not None:
            watched.expect_exit = expected
            if not expected:
                watched.verdict, watched.implicated, watched.reported = None, set(), False
                watched.judged = threading.Event()


@contextlib.contextmanager
def command(name: str, what: str, timeout: float) -> Iterator[WatchedLun]:
    """Run one command on LUN `name` (the body sends it, at most `timeout` s) under
    the watchdog: raises HandlerFailure instead of the command's own outcome when the
    handler died or hung with it in flight, and at once when it had done so before."""
    limit = min(timeout, _watch(name).cmd_time_out or math.inf)
    hang_after = _hang_after(limit)
    token = next(_tokens)
    with _lock:
        watched = _watch(name)
        judged_before = bool(watched.implicated)
        if not judged_before:
            watched.in_flight[token] = _InFlight(what, time.monotonic(), hang_after)
    if judged_before:
        watched.judged.wait(30)
        watched.reported = True
        raise HandlerFailure(f"{watched.verdict}\n(so {what} was not sent)")
    try:
        yield watched.lun
    finally:
        with _lock:
            watched.in_flight.pop(token, None)
            failed = token in watched.implicated
            if failed:
                watched.reported = True
    if failed:
        watched.judged.wait(30)  # the judgement (a stack dump) may still be under way
        raise HandlerFailure(watched.verdict or "the watchdog gave no verdict in 30 s")


def settle(name: str, scsi_dir: str, timeout: float, probe_wait: float = PROBE_WAIT) -> None:
    """Wait while the kernel probes the new disk (sd: READ CAPACITY, MODE SENSE, VPD
    pages, then the partition scan's READs), so a handler that dies or hangs on those
    fails the LUN's creation instead of its first test. `scsi_dir` is the SCSI device's
    sysfs directory. Done when the handler has answered the partition scan's first READ
    (or sd will not take the device: not type 0) and no command has been in flight for
    QUIET s. (The sd node and a quiet moment are not enough: sd revalidates the disk
    again before the scan, after a pause.) A probe still idle after `probe_wait` s (sd
    waits between spin-up attempts when a handler answers NOT READY; no scan when the
    capacity is 0) is left to finish on its own. The hang clock runs while commands are
    in flight without a break; raises HandlerFailure."""
    watched = _watch(name)
    limit = min(timeout, watched.cmd_time_out or math.inf)
    probe = _InFlight("the kernel's probe of the new disk", time.monotonic(),
                      _hang_after(limit))
    token = next(_tokens)
    with _lock:
        watched.in_flight[token] = probe
    start = idle_since = time.monotonic()
    scanned = _ReadSeen(watched.lun.handler.log_path)
    try:
        while True:
            now = time.monotonic()
            if _read(f"{scsi_dir}/device_busy") not in ("", "0"):
                idle_since = None
            else:
                idle_since = idle_since or now
                with _lock:
                    probe.started = now  # the hang clock runs only while busy
            with _lock:
                if watched.implicated:
                    break
            quiet = idle_since is not None and now - idle_since >= QUIET
            if quiet and (scanned() or _not_a_disk(scsi_dir) or now - start > probe_wait):
                return
            time.sleep(0.02)
    finally:
        with _lock:
            watched.in_flight.pop(token, None)
            failed = token in watched.implicated
            watched.reported = bool(watched.implicated)
    watched.judged.wait(30)
    raise HandlerFailure(f"LUN set-up failed: {watched.verdict}" if failed else
                         f"LUN set-up failed: the handler failed earlier: {watched.verdict}")


def _not_a_disk(scsi_dir: str) -> bool:
    """sd binds peripheral device type 0 only: no disk, no partition scan."""
    pdt = _read(f"{scsi_dir}/type")
    return pdt.isdigit() and int(pdt) != 0


class _ReadSeen:
    """Whether the handler's command log has a READ answered yet (read as it grows)."""

    _READS = tuple(f'"cdb": "{op:02x}'.encode() for op in (0x08, 0x28, 0xA8, 0x88))

    def __init__(self, log_path: str) -> None:
        self._path = log_path
        self._offset = 0
        self._seen = False

    def __call__(self) -> bool:
        if not self._seen:
            try:
                with open(self._path, "rb") as f:
                    f.seek(self._offset)
                    lines = f.read().splitlines(keepends=True)
            except OSError:
                return False
            whole = [line for line in lines if line.endswith(b"\n")]
            self._offset += sum(map(len, whole))
            self._seen = any(read in line for line in whole for read in self._READS)
        return self._seen


def _watch(name: str) -> _Watch:
    watched = _watches.get(name)
    if watched is None:
        raise LookupError(f"no LUN named {name} is being served")
    return watched


def _monitor_loop() -> None:
    while True:
        with _lock:
            judged = [w for w in _watches.values() if not w.implicated and not w.expect_exit]
            sentinels = {w.lun.handler.process.sentinel: (w, w.lun.handler) for w in judged}
            deadlines = [f.deadline for w in judged for f in w.in_flight.values()]
        wait = max(0.0, min([_POLL, *(d - time.monotonic() for d in deadlines)]))
        for sentinel in multiprocessing.connection.wait(list(sentinels), wait):
            watched, handler = sentinels[sentinel]
            # The handler may have been replaced meanwhile (restart): judge only this one.
            if watched.lun.handler is handler and not handler.alive():
                _judge(watched, hung=None)
        now = time.monotonic()
        for watched in judged:
            with _lock:
                late = [f for f in watched.in_flight.values() if f.deadline <= now]
            if late and watched.lun.handler.alive():
                _judge(watched, hung=min(late, key=lambda f: f.started))


def _judge(watched: _Watch, hung: _InFlight | None) -> None:
    """Give the verdict on a dead handler (hung=None) or one stuck on `hung`, then fail
    the commands in flight so their SG_IO returns."""
    lun, handler = watched.lun, watched.lun.handler
    with _lock:
        if watched.implicated or watched.expect_exit:
            return
        # Taken now: the kernel may time the commands out while the stacks are dumped.
        in_flight = [f.what for f in watched.in_flight.values()]
        watched.implicated = set(watched.in_flight) or {-1}
    if hung is None:
        verdict = f"handler {lun.spec} died ({handler.exit_description()})" + (
            f" while {' and '.join(in_flight)} was in flight" if in_flight
            else f" with no harness command in flight{_last_command(handler)}")
        evidence = _crash_report(handler)
    else:
        waited = time.monotonic() - hung.started
        stacks = handler.dump_stacks().rstrip() or "(no stack dump came)"
        handler.kill()  # it would not have answered anyway; the ring can be reset now
        verdict = (f"handler {lun.spec} hung: {hung.what} unanswered for {waited:.0f} s "
                   f"(the hang threshold, {HANG_MARGIN:.0f} s under the smaller of the SG_IO "
                   f"timeout and the backstore's cmd_time_out {watched.cmd_time_out:.0f} s); "
                   "it was killed")
        evidence = f"its threads, as faulthandler dumped them:\n{stacks}"
    with _lock:
        watched.verdict = f"{verdict}; {evidence}"
    watched.judged.set()
    # Complete what is left in the ring with CHECK CONDITION (no handler will).
    with contextlib.suppress(OSError):
        _write(f"{lun.backstore_dir}/action/reset_ring", "2")


def _crash_report(handler: HandlerProcess) -> str:
    """The handler's last crash report from its output, header first (with many threads
    or a deep stack a plain tail would lose the header and the crashing thread), or the
    output's tail when it has none."""
    output = handler.output_tail(OUTPUT_WINDOW).rstrip()
    start = max(output.rfind(marker) for marker in _CRASH_MARKERS)
    if start < 0:
        return f"its output (last lines):\n{output[-EVIDENCE_LIMIT:]}"
    report = output[start:]
    if len(report) > EVIDENCE_LIMIT:
        report = (f"{report[:EVIDENCE_LIMIT]}\n[... {len(report) - EVIDENCE_LIMIT} more "
                  f"characters in {handler.output_path}]")
    return f"its output, from its last crash report:\n{report}"


def _hang_after(limit: float) -> float:
    """When a command with `limit` s (SG_IO timeout, cmd_time_out) is judged hung."""
    return max(limit - HANG_MARGIN, limit * 0.6)


def _last_command(handler: HandlerProcess) -> str:
    """", after completing <CDB>" from the handler's command log, or ""."""
    try:
        with open(handler.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):  # the first may be cut: it then fails to parse
        with contextlib.suppress(ValueError, KeyError):
            return f", after completing {describe_cdb(bytes.fromhex(json.loads(line)['cdb']))}"
    return ""


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(f"{value}\n")
