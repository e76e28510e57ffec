"""Handler processes in the guest: one per LUN, forked from a warm process.

A fresh Python costs seconds under TCG, so handlers are forked from a multiprocessing
forkserver that has already imported the runtime and the reference handlers
(PRELOAD). The forkserver, not the multi-threaded agent, does the forking, so no
agent lock can be inherited held. warm() starts it in the background at agent start.

One spare process is always forked ahead and waits for its assignment (spec, device),
so a LUN's set-up pays neither fork nor process start-up. A handler process runs
tcmu.runner.serve(); it reports "ready" over its pipe once the ring is mapped and the
handler opened (the LUN may be exported from then on), or the one-line reason it could
not start. Its stdout/stderr go to a file beside the command log, and so do the Python
stacks faulthandler writes on a fatal signal or on STACK_DUMP_SIGNAL (lio.watchdog asks
a hung handler for them).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.forkserver import ensure_running

PRELOAD = [
    "tcmu_harness.scsi.constants",
    "tcmu.runner",
    "tcmu.netlink",  # pulls in pyroute2: seconds under TCG if left to each child
    "tcmu.block",
    "tcmu.handlers.ramdisk",
    "tcmu.handlers.filedisk",
    "tcmu.handlers.faulty",
]
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(PRELOAD)
_READY = "ready"
STACK_DUMP_SIGNAL = signal.SIGUSR1  # faulthandler prints every thread's stack on it


class HandlerStartError(RuntimeError):
    pass


def warm() -> None:
    """Start the forkserver and fork the first spare now, in the background, so the
    first LUN does not wait for them."""

    def run() -> None:
        ensure_running()
        _SPARES.refill()

    threading.Thread(target=run, name="forkserver-warm", daemon=True).start()


@dataclass
class HandlerProcess:
    spec: str
    device: str
    log_path: str
    output_path: str
    process: multiprocessing.process.BaseProcess

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Wait for a voluntary exit (the device went away), then SIGTERM, then SIGKILL.
        Returns the exit code (negative: killed by that signal)."""
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
            self.process.join(timeout)
            if not self.process.is_alive():
                break
        return self.process.exitcode

    def kill(self, timeout: float = 5.0) -> int | None:
        """SIGKILL (a hung handler would not heed SIGTERM); returns the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.join(timeout)
        return self.process.exitcode

    def exit_description(self) -> str:
        """How the process ended: "exit status N", "signal SIGSEGV", or "running"."""
        code = self.process.exitcode
        if code is None:
            return "running"
        if code < 0:
            try:
                return f"signal {signal.Signals(-code).name}"
            except ValueError:
                return f"signal {-code}"
        return f"exit status {code}"

    def dump_stacks(self, timeout: float = 1.5) -> str:
        """Every thread's Python stack, as faulthandler writes it to the output on
        STACK_DUMP_SIGNAL (it works while the handler is stuck, even in C code)."""
        start = self._output_size()
        try:
            os.kill(self.pid, STACK_DUMP_SIGNAL)
        except ProcessLookupError:
            return ""
        deadline = time.monotonic() + timeout
        size, settled = start, time.monotonic()
        while time.monotonic() < deadline:  # until the output stops growing
            time.sleep(0.05)
            now = self._output_size()
            if now != size:
                size, settled = now, time.monotonic()
            elif size > start and time.monotonic() - settled > 0.2:
                break
        return self.output_from(start)

    def _output_size(self) -> int:
        try:
            return os.path.getsize(self.output_path)
        except OSError:
            return 0

    def output_from(self, offset: int) -> str:
        try:
            with open(self.output_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def output_tail(self, limit: int = 4000) -> str:
        return self.output_from(max(0, self._output_size() - limit))


def report_stacks() -> None:
    """In a handler process: a fatal signal (SIGSEGV, SIGABRT...) leaves every thread's
    Python stack on stderr (the output file); so does STACK_DUMP_SIGNAL, at any time,
    without stopping the handler."""
    stderr = 2  # the descriptor, whatever object sys.stderr is
    faulthandler.enable(stderr, all_threads=True)
    faulthandler.register(STACK_DUMP_SIGNAL, stderr, all_threads=True)


def _serve_assignment(
    spec: str,
    device: str,
    log_path: str,
    output_path: str,
    recover: bool,
    conn: multiprocessing.connection.Connection,
) -> None:
    out = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    report_stacks()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from tcmu.runner import serve  # preloaded in the forkserver: no import cost

    def ready() -> None:
        conn.send(_READY)
        conn.close()

    try:
        serve(spec, device, log_path=log_path, ready=ready, recover=recover)
    except SystemExit:  # sys.exit() in the handler: say from where, then exit as asked
        traceback.print_exc()
        raise
    except Exception as exc:
        traceback.print_exc()
        with contextlib.suppress(OSError):
            conn.send(f"{type(exc).__name__}: {exc}")
        sys.exit(1)


def _spare(conn: multiprocessing.connection.Connection) -> None:
    """A forked handler process waiting for its device: it resolves the netlink family
    now (cached for serve()), then takes one assignment, or exits when the pipe closes."""
    with contextlib.suppress(Exception):  # serve() copes without netlink
        from tcmu.netlink import resolve

        resolve()
    try:
        assignment = conn.recv()
    except EOFError:
        return
    _serve_assignment(*assignment, conn)


class _Spares:
    """One pre-forked spare, so LUN set-up does not wait for fork and process start-up
    (~0.1 s under TCG); each one taken is replaced in the background."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: tuple[multiprocessing.process.BaseProcess, Connection] | None = None

    def take(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None or not spare[0].is_alive():
            spare = self._fork()
        threading.Thread(target=self.refill, name="spare-handler", daemon=True).start()
        return spare

    def refill(self) -> None:
        with self._lock:
            if self._spare is None:
                self._spare = self._fork()

    @staticmethod
    def _fork() -> tuple[multiprocessing.process.BaseProcess, Connection]:
        ours, theirs = _CTX.Pipe(duplex=True)
        process = _CTX.Process(target=_spare, args=(theirs,), name="tcmu-handler")
        process.start()
        theirs.close()
        return process, ours


_SPARES = _Spares()


def start(
    spec: str,
    device: str,
    *,
    log_path: str,
    output_path: str,
    recover: bool = False,
    timeout: float = 30.0,
) -> HandlerProcess:
    """Hand `device` (its UIO name) to a spare handler process and wait until it serves."""
    process, conn = _SPARES.take()
    try:
        conn.send((spec, device, log_path, output_path, recover))
    except OSError:  # the spare died since we looked: fork a fresh one
        conn.close()
        process, conn = _Spares._fork()
        conn.send((spec, device, log_path, output_path, recover))
    handler = HandlerProcess(spec, device, log_path, output_path, process)
    try:
        if not conn.poll(timeout):
            handler.stop(timeout=1)
            raise HandlerStartError(
                f"handler {spec} did not start serving {device} within {timeout:.0f} s; "
                f"its output: {handler.output_tail().strip()[-500:]}"
            )
        message = conn.recv()
    except EOFError:
        message = "it exited before it was ready"
    finally:
        conn.close()
    if message != _READY:
        handler.stop(timeout=5)
        raise HandlerStartError(f"handler {spec} could not serve {device}: {message}; "
                                f"its output:\n{handler.output_tail().rstrip()}")
    return handler
