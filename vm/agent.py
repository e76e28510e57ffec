"""The guest agent: runs inside the VM, serves the host's requests (vm/protocol.py).

Started by the per-VM boot script (vm/guest_boot.py) as `python -m tcmu_harness.vm.agent`. One
process for the life of the VM, so its Python start-up (seconds under TCG) is paid once;
requests run on a thread pool so a slow one (a command with a long timeout, an SG_IO
to a stuck handler) never blocks the others. When the host goes away the agent exits
and the boot script powers the guest off.

Ops:
    ping                                     -> {"uptime": float}
    run {argv, env?, cwd?, timeout?, input?, stream?}
                                             -> {"exit_code", "stdout", "stderr",
                                                 "timed_out", "duration"}
                                                (stream: "stdout"/"stderr" events as it runs)
    read_file {path, max_size?}              -> bytes
    write_file {path, data, mode?, append?}  -> null
    kmsg {since?}                            -> {"records": [[seq, level, usec, text]...],
                                                 "last_seq": int}
    call {fn: "package.module:function", kwargs}
                                             -> whatever the function returns (JSON + bytes)
    run_pty {argv, env?, cwd?, rows?, cols?} -> {"exit_code"}  ("output" events as it runs)
    stdin {target, data}                     -> null (input for the run_pty request `target`)
    poweroff                                 -> null, then the agent exits
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import importlib
import os
import pty
import selectors
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tcmu_harness.vm import protocol

# Only the harness's own guest-side packages may be called through `call`.
CALLABLE_PACKAGES = ("tcmu_harness.initiator", "tcmu_harness.lio", "tcmu_harness.vm",
                     "tcmu_harness.scsi", "tcmu")


def find_port(name: str, sys_root: str = "/sys/class/virtio-ports", dev_root: str = "/dev") -> str:
    """The /dev path of the virtio-serial port QEMU created with `name=<name>`."""
    with contextlib.suppress(FileNotFoundError):
        for port in sorted(os.listdir(sys_root)):
            try:
                with open(os.path.join(sys_root, port, "name")) as f:
                    if f.read().strip() == name:
                        return os.path.join(dev_root, port)
            except OSError:
                continue
    raise FileNotFoundError(f"no virtio-serial port named {name} under {sys_root}")


class KernelLog:
    """/dev/kmsg records since boot, kept in memory so a mark (a sequence number) can be
    taken and everything after it returned, however often the host asks."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._records: list[list[Any]] = []
        self._lock = threading.Lock()

    def _drain(self) -> None:
        while True:
            try:
                raw = os.read(self._fd, 8192)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read it; go on
                    continue
                raise
            if not raw:
                return
            prefix, _, rest = raw.decode("utf-8", "replace").partition(";")
            fields = prefix.split(",")
            text = rest.split("\n", 1)[0]
            self._records.append([int(fields[1]), int(fields[0]) & 7, int(fields[2]), text])

    def since(self, seq: int | None) -> dict[str, Any]:
        with self._lock:
            self._drain()
            records = list(self._records)  # a snapshot: other requests drain concurrently
            if seq is not None:
                records = [r for r in records if r[0] > seq]
            last = self._records[-1][0] if self._records else -1
            return {"records": records, "last_seq": last}


class Agent:
    def __init__(self, fd: int, kmsg: KernelLog | None, warmup: tuple[str, ...] = ()) -> None:
        self._fd = fd
        self._warmup = warmup
        self._write_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="request")
        self._kmsg = kmsg
        self._stop = threading.Event()
        self._ops: dict[str, Callable[..., Any]] = {
            "ping": self.op_ping,
            "run": self.op_run,
            "read_file": self.op_read_file,
            "write_file": self.op_write_file,
            "kmsg": self.op_kmsg,
            "call": self.op_call,
            "poweroff": self.op_poweroff,
            "run_pty": self.op_run_pty,
            "stdin": self.op_stdin,
        }
        self._ptys: dict[int, int] = {}  # run_pty request id -> pty master fd
        self._ptys_changed = threading.Condition()

    # -- transport ---------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(protocol.encode(message))
        with self._write_lock:
            while data:
                data = data[os.write(self._fd, data) :]

    def serve(self) -> None:
        self.send(
            protocol.hello(
                kernel=os.uname().release,
                python=sys.version.split()[0],
                pid=os.getpid(),
                uptime=_uptime(),
            )
        )
        if self._warmup:
            threading.Thread(target=self._warm, name="warmup", daemon=True).start()
        decoder = protocol.FrameDecoder()
        while not self._stop.is_set():
            chunk = os.read(self._fd, 1 << 20)
            if not chunk:  # host closed the socket: nobody left to serve
                break
            for message in decoder.feed(chunk):
                self._pool.submit(self._dispatch, message)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _warm(self) -> None:
        """Call the warm-up functions (e.g. start the handler forkserver) while the
        host is still busy with its first requests; failures go to the console."""
        for fn in self._warmup:
            try:
                self.op_call(-1, fn)
            except Exception:
                traceback.print_exc()

    def _dispatch(self, message: dict[str, Any]) -> None:
        req_id = message.get("id", -1)
        try:
            op = self._ops[message["op"]]
            result = op(req_id, **message.get("args", {}))
        except Exception as exc:  # every failure goes back to the host, never lost
            self.send(
                protocol.failure(req_id, type(exc).__name__, str(exc), traceback.format_exc())
            )
        else:
            self.send(protocol.success(req_id, result))

    # -- ops -----------------------------------------------------------------------

    def op_ping(self, req_id: int) -> dict[str, float]:
        return {"uptime": _uptime()}

    def op_run(
        self,
        req_id: int,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        input: bytes | None = None,
        stream: bool = False,
    ) -> dict[str, Any]:
        full_env = dict(os.environ)
        full_env.update(env or {})
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # so a timeout kills the whole process group
        )
        out = {"stdout": bytearray(), "stderr": bytearray()}
        timed_out = False
        with selectors.DefaultSelector() as sel:
            assert proc.stdout is not None and proc.stderr is not None
            sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
            sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
            pending_input = memoryview(input or b"")
            if proc.stdin is not None:
                if pending_input:
                    # Non-blocking, so a child that stops reading stdin while it fills
                    # stdout cannot deadlock us (and the timeout keeps working).
                    os.set_blocking(proc.stdin.fileno(), False)
                    sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
                else:
                    proc.stdin.close()
            deadline = None if timeout is None else start + timeout
            while sel.get_map():
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    timed_out = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    break
                for key, _ in sel.select(wait):
                    if key.data == "stdin":
                        assert proc.stdin is not None
                        try:
                            pending_input = pending_input[os.write(key.fd, pending_input[:65536]) :]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            pending_input = memoryview(b"")
                        if not pending_input:
                            sel.unregister(key.fileobj)
                            proc.stdin.close()
                        continue
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    if stream:
                        self.send(protocol.event(req_id, key.data, chunk))
                    out[key.data] += chunk
        exit_code = proc.wait()
        for pipe in (proc.stdout, proc.stderr, proc.stdin):
            if pipe is not None:
                pipe.close()
        return {
            "exit_code": exit_code,
            "stdout": bytes(out["stdout"]),
            "stderr": bytes(out["stderr"]),
            "timed_out": timed_out,
            "duration": time.monotonic() - start,
        }

    def op_run_pty(
        self, req_id: int, argv: list[str], env: dict[str, str] | None = None,
        cwd: str | None = None, rows: int = 24, cols: int = 80,
    ) -> dict[str, Any]:
        """Run argv on a new pseudo-terminal (an interactive shell, say): its output
        comes back as "output" events, its input through `stdin` requests."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        full_env = {**os.environ, "TERM": "xterm", **(env or {})}
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=full_env, cwd=cwd,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )  # fmt: skip
        os.close(slave)
        with self._ptys_changed:
            self._ptys[req_id] = master
            self._ptys_changed.notify_all()
        try:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the last process on the terminal is gone
                    break
                if not chunk:
                    break
                self.send(protocol.event(req_id, "output", chunk))
        finally:
            del self._ptys[req_id]
            os.close(master)
        return {"exit_code": proc.wait()}

    def op_stdin(self, req_id: int, target: int, data: bytes) -> None:
        """Type `data` into the terminal of the run_pty request `target`."""
        # Input can overtake the run_pty request it is for: wait for it a little.
        with self._ptys_changed:
            self._ptys_changed.wait_for(lambda: target in self._ptys, timeout=10)
            fd = self._ptys.get(target)
        if fd is None:
            raise ProcessLookupError(f"no interactive command is running as request {target}")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def op_read_file(self, req_id: int, path: str, max_size: int = 64 << 20) -> bytes:
        with open(path, "rb") as f:
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise ValueError(f"{path} is larger than {max_size} bytes; raise max_size")
        return data

    def op_write_file(
        self, req_id: int, path: str, data: bytes, mode: int | None = None, append: bool = False
    ) -> None:
        with open(path, "ab" if append else "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(path, mode)

    def op_kmsg(self, req_id: int, since: int | None = None) -> dict[str, Any]:
        if self._kmsg is None:
            raise RuntimeError("/dev/kmsg could not be opened in this guest")
        return self._kmsg.since(since)

    def op_call(self, req_id: int, fn: str, kwargs: dict[str, Any] | None = None) -> Any:
        module_name, _, func_name = fn.partition(":")
        inside = any(module_name == p or module_name.startswith(p + ".")
                     for p in CALLABLE_PACKAGES)
        if not inside or not func_name:
            raise ValueError(
                f"cannot call {fn!r}: give package.module:function within "
                f"{', '.join(CALLABLE_PACKAGES)}"
            )
        func = getattr(importlib.import_module(module_name), func_name)
        return func(**(kwargs or {}))

    def op_poweroff(self, req_id: int) -> None:
        self._stop.set()
        # Unblock serve(): it is in os.read on the port; the host closes after our answer.
        return None


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcmu_harness.vm.agent", description=__doc__)
    parser.add_argument("--port-name", default=protocol.PORT_NAME)
    parser.add_argument("--port", help="device path (default: found by --port-name)")
    parser.add_argument("--warm", action="append", default=[], metavar="MODULE:FUNCTION",
                        help="call this in the background after start (repeatable)")
    args = parser.parse_args(argv)
    path = args.port or find_port(args.port_name)
    fd = os.open(path, os.O_RDWR)
    try:
        kmsg = KernelLog()
    except OSError:
        kmsg = None
    Agent(fd, kmsg, tuple(args.warm)).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
