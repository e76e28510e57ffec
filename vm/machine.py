"""One QEMU guest with the TCMU kernel: boot it, talk to its agent, shut it down.

    with VirtualMachine(VmConfig(kernel="deb:6.12")) as vm:
        print(vm.run(["uname", "-r"]).stdout)

Boot: resolve the kernel (vm/kernel.py), build or reuse its initramfs
(vm/initramfs.py), choose KVM or TCG (vm/accel.py), write the per-VM boot script
(vm/guest_boot.py) into a private temp dir, start QEMU (vm/qemu.py) and wait for the
agent's hello on the unix socket QEMU connects to. Every step is bounded; on any
failure, and on close(), QEMU is reaped (poweroff, grace, SIGTERM, SIGKILL) and the
temp dir removed. QEMU also dies with its parent (PR_SET_PDEATHSIG), so not even a
SIGKILL of the test run leaves a guest behind; the temp dir holds the owner's pid
(PID_FILE), and the next VM started on this host removes dirs whose owner is dead.

A guest that stops answering a request in time is judged hung: QEMU is killed at once,
so every later request fails fast (LostVMError) instead of waiting out its own timeout.
loss_verdict() then says what happened (hung, kernel panic, agent gone) with a console
excerpt; retire() marks a guest that still answers as not to be trusted (e.g. its
kernel became tainted), for whoever owns the VM to replace it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tcmu_harness.vm import guest_boot
from tcmu_harness.vm.accel import choose_accel
from tcmu_harness.vm.client import AgentClient, AgentTimeout, LostVMError, VMError
from tcmu_harness.vm.config import VmConfig
from tcmu_harness.vm.host_tools import require_host_tools
from tcmu_harness.vm.initramfs import STAGE2, build_initramfs
from tcmu_harness.vm.kernel import Kernel, parse_kernel_spec, resolve_kernel
from tcmu_harness.vm.qemu import QemuLaunch, qemu_argv

_PR_SET_PDEATHSIG = 1
TEMP_PREFIX = "tcmu-harness-vm-"  # tempfile.mkdtemp prefix of every VM's private dir
PID_FILE = "owner.pid"  # in the temp dir: the pid of the process that owns the VM
PANIC_MARK = "Kernel panic - not syncing"  # kernel/panic.c


class CommandFailed(VMError):
    pass


@dataclass(frozen=True)
class RunResult:
    argv: list[str]
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    duration: float

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def check(self) -> RunResult:
        if self.timed_out or self.exit_code != 0:
            what = "timed out" if self.timed_out else f"exited with status {self.exit_code}"
            tail = self.stderr.decode(errors="replace").strip()[-2000:]
            raise CommandFailed(f"guest command {' '.join(self.argv)} {what}: {tail}")
        return self


@dataclass(frozen=True)
class KmsgRecord:
    seq: int
    level: int  # 0 emerg .. 7 debug
    usec: int  # since boot
    text: str

    def __str__(self) -> str:
        return f"[{self.usec / 1e6:12.6f}] {self.text}"


@dataclass(frozen=True)
class KernelLog:
    records: list[KmsgRecord]
    last_seq: int  # pass as `since` to get only what comes after

    def __str__(self) -> str:
        return "\n".join(map(str, self.records))


@dataclass(frozen=True)
class GuestLoss:
    """Why a guest can no longer be used: one sentence, and the console's last lines."""

    message: str
    console: str


@dataclass
class BootTimings:
    kernel_s: float = 0.0  # resolve (and fetch, first time) the kernel
    initramfs_s: float = 0.0
    accel_s: float = 0.0
    boot_s: float = 0.0  # QEMU start -> agent hello
    first_command_s: float = 0.0  # hello -> first request answered
    total_s: float = 0.0  # start() entry -> first request answered

    def summary(self) -> str:
        return (
            f"{self.total_s:.1f} s from start to the first guest command answered "
            f"(kernel {self.kernel_s:.1f} s, "
            f"initramfs {self.initramfs_s:.1f} s, accelerator choice {self.accel_s:.1f} s, "
            f"QEMU start to agent {self.boot_s:.1f} s, first command {self.first_command_s:.2f} s)"
        )


def claim_console_log(log_dir: Path, name: str) -> tuple[Path, IO[bytes]]:
    """`log_dir/<name>-console.log`, or `<name>-2-console.log` ... when a running VM
    writes that one (two sessions in one checkout, or a test that runs pytest, must not
    overwrite each other's log); the claim is an flock on the file, held until closed."""
    for n in itertools.count(1):
        path = log_dir / (f"{name}-console.log" if n == 1 else f"{name}-{n}-console.log")
        claim = open(path, "ab")  # noqa: SIM115 - held open for the VM's life
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            claim.close()
            continue
        return path, claim
    raise AssertionError("unreachable")


def _set_pdeathsig() -> None:  # runs in the QEMU child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class VirtualMachine:
    config: VmConfig = field(default_factory=VmConfig)
    log: Callable[[str], None] = lambda message: None
    name: str = "vm"
    # The guest works where the host does (its / is the host's, over 9p): handler file
    # paths and module names given relative to the host's working directory resolve there.
    work_dir: Path = field(default_factory=Path.cwd)

    kernel: Kernel | None = field(default=None, init=False)
    accel: str = field(default="", init=False)
    accel_reason: str = field(default="", init=False)
    timings: BootTimings = field(default_factory=BootTimings, init=False)
    console_log: Path | None = field(default=None, init=False)
    _tmp: Path | None = field(default=None, init=False, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _client: AgentClient | None = field(default=None, init=False, repr=False)
    _hung: str | None = field(default=None, init=False, repr=False)
    retired: str | None = field(default=None, init=False)  # why it is not trusted
    _log_claim: IO[bytes] | None = field(default=None, init=False, repr=False)

    # -- life cycle --------------------------------------------------------------

    def __enter__(self) -> VirtualMachine:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(fast=exc_type is not None and issubclass(exc_type, KeyboardInterrupt))

    def start(self) -> VirtualMachine:
        try:
            self._start()
        except BaseException as exc:
            self.close(fast=isinstance(exc, KeyboardInterrupt))
            raise
        return self

    def _start(self) -> None:
        cfg = self.config
        require_host_tools(cfg.qemu_binary)
        t0 = time.monotonic()
        spec = parse_kernel_spec(cfg.kernel)
        self.kernel = kernel = resolve_kernel(spec, cfg.cache_dir, log=self.log)
        t1 = time.monotonic()
        initramfs = build_initramfs(kernel.modules_dir, cfg.cache_dir)
        t2 = time.monotonic()
        choice = choose_accel(cfg.accel, cfg.qemu_binary, kernel.image, cfg.cache_dir)
        self.accel, self.accel_reason = choice.accel, choice.reason
        t3 = time.monotonic()

        remove_stale_temp_dirs()
        self._tmp = tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))  # mode 0700
        (tmp / PID_FILE).write_text(f"{os.getpid()}\n")
        share = tmp / "share"
        share.mkdir()
        (share / STAGE2).write_text(
            guest_boot.stage2_script(
                kernel_version=kernel.version,
                modules_dir=kernel.modules_dir,
                python=sys.executable,
                work_dir=self.work_dir,
                env=self._guest_env(),
                warmup=cfg.guest_warmup,
            )
        )
        if cfg.log_dir is not None:
            cfg.log_dir.mkdir(parents=True, exist_ok=True)
            self.console_log, self._log_claim = claim_console_log(cfg.log_dir, self.name)
        else:
            self.console_log = tmp / "console.log"
        sock_path = tmp / "agent.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(sock_path))
            os.chmod(sock_path, 0o600)
            listener.listen(1)
            launch = QemuLaunch(
                binary=cfg.qemu_binary,
                accel=choice.accel,
                cpus=cfg.cpus,
                memory_mb=cfg.memory_mb,
                kernel_image=kernel.image,
                initramfs=initramfs,
                share_dir=share,
                agent_socket=sock_path,
                console_log=self.console_log,
                name=f"tcmu-harness-{self.name}",
            )
            self.log(f"booting {kernel.version} under {choice.accel} ({choice.reason})")
            with open(tmp / "qemu.stderr", "wb") as stderr:
                self._proc = subprocess.Popen(
                    qemu_argv(launch),
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,  # Ctrl-C reaches us, and we shut QEMU down
                    preexec_fn=_set_pdeathsig,
                )
            conn = self._accept(listener, t3 + cfg.boot_timeout)
        finally:
            listener.close()
        self._client = AgentClient(conn, self._describe_loss)
        hello = self._client.wait_hello(max(1.0, t3 + cfg.boot_timeout - time.monotonic()))
        t4 = time.monotonic()
        if hello.get("kernel") != kernel.version:
            raise LostVMError(
                f"the guest runs kernel {hello.get('kernel')} but {kernel.version} was booted"
            )
        self.ping()
        t5 = time.monotonic()
        self.timings = BootTimings(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)
        self.log(f"VM ready: {self.timings.summary()}")

    def _guest_env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.work_dir),
            # The guest's writes vanish anyway. (A PYTHONPYCACHEPREFIX on the guest's tmpfs
            # was tried: Python then ignores every __pycache__ of the stdlib and the
            # virtualenv and compiles them all again in each VM; the agent took 23 s to
            # start instead of ~9 s under TCG.)
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "TCMU_HARNESS_GUEST": "1",
        }
        if "VIRTUAL_ENV" in os.environ:
            env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
        return env

    def _accept(self, listener: socket.socket, deadline: float) -> socket.socket:
        listener.settimeout(0.2)
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if self._proc is not None and self._proc.poll() is not None:
                    raise LostVMError(f"QEMU did not start: {self._describe_loss()}") from None
                if time.monotonic() > deadline:
                    raise AgentTimeout(
                        f"QEMU did not connect the agent channel within "
                        f"{self.config.boot_timeout:.0f} s"
                    ) from None
                continue
            conn.settimeout(None)
            return conn

    def _describe_loss(self) -> str:
        parts = []
        if self._proc is not None:
            code = self._proc.poll()
            if code is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._proc.wait(timeout=2)
            parts.append("QEMU is still running" if code is None else f"QEMU exited ({code})")
        if self._tmp is not None:
            stderr = _tail(self._tmp / "qemu.stderr", 5)
            if stderr:
                parts.append(f"QEMU said: {stderr}")
        if self.console_log is not None:
            console = _tail(self.console_log, 15)
            if console:
                parts.append(f"last console lines ({self.console_log}):\n{console}")
        return "; ".join(parts)

    def close(self, *, fast: bool = False) -> None:
        """Power off and reap. Idempotent; safe at any point of a failed start().
        fast (on Ctrl-C): kill QEMU at once; the guest holds nothing to save (the share
        is mounted sync, the rest is tmpfs)."""
        if fast and self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._client is not None:
            if self._client.lost is None and not fast:
                with contextlib.suppress(VMError):
                    self._client.request("poweroff", timeout=5)
            self._client.close()
            self._client = None
        if self._proc is not None:
            _reap(self._proc, self.config.shutdown_grace)
            self._proc = None
        if self._log_claim is not None:
            self._log_claim.close()  # releases the name for the next VM
            self._log_claim = None
        if self._tmp is not None:
            if self.console_log is not None and self.console_log.parent == self._tmp:
                self.console_log = None  # it goes with the temp dir
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- guest access --------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._client is not None and self._client.lost is None

    @property
    def started(self) -> bool:
        """Between start() and close() (the guest may be gone meanwhile)."""
        return self._proc is not None

    @property
    def qemu_pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def private_dir(self) -> Path | None:
        """The VM's private temp dir on the host (mode 0700): agent socket, share."""
        return self._tmp

    @property
    def lost(self) -> str | None:
        """Why the guest is gone (None while it answers, or before start)."""
        return None if self._client is None else self._client.lost

    def retire(self, reason: str) -> None:
        """Mark the guest as not to be trusted any more (it still answers): the owner
        should replace it. The first reason is kept."""
        if self.retired is None:
            self.retired = reason

    def loss_verdict(self) -> GuestLoss:
        """What happened to a guest that is gone: it stopped answering, its kernel
        panicked, or its agent (or QEMU) went away; with the console's last lines."""
        console = self.console_excerpt()
        if self._hung is not None:
            return GuestLoss(self._hung, console)
        panic = next((line for line in console.splitlines() if PANIC_MARK in line), None)
        if panic is not None:
            at = panic.find(PANIC_MARK)
            return GuestLoss(f"the guest kernel panicked: {panic[at:].strip()}", console)
        reason = (self.lost or "the VM is not running").split(";")[0]
        return GuestLoss(f"the guest is gone ({reason}), without a kernel panic on its "
                         "console", console)

    def console_excerpt(self, lines: int = 60) -> str:
        """The console's last lines; around a kernel panic, from before its oops."""
        if self.console_log is None:
            return ""
        text = _tail(self.console_log, 400)
        rows = text.splitlines()
        at = next((i for i, line in enumerate(rows) if PANIC_MARK in line), None)
        if at is not None:
            return "\n".join(rows[max(0, at - lines + 10):at + 10])
        return "\n".join(rows[-lines:])

    @property
    def kernel_version(self) -> str:
        return self._agent.hello["kernel"]

    @property
    def share_dir(self) -> Path:
        """Host path of the per-VM share; the guest sees it at vm.initramfs.SHARE_MOUNT."""
        if self._tmp is None:
            raise LostVMError("the VM is not running")
        return self._tmp / "share"

    @property
    def _agent(self) -> AgentClient:
        if self._client is None:
            raise LostVMError("the VM is not running")
        return self._client

    def request(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        return self._request(
            op, args, timeout=self.config.request_timeout if timeout is None else timeout
        )

    def _request(self, op: str, args: dict[str, Any], *, timeout: float, **kw: Any) -> Any:
        """Every request goes through here: no answer in time means a hung guest, which
        is killed, so that nothing else waits for it."""
        try:
            return self._agent.request(op, args, timeout=timeout, **kw)
        except AgentTimeout:
            self._declare_hung(f"the guest stopped answering for {timeout:.0f} s (no answer "
                               f"to {op}); QEMU was killed")
            raise AgentTimeout(self._hung or "") from None
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM) while the guest works: it is abandoned now, so that the
            # unwinding (LUN teardown, poweroff) does not wait for it.
            self._abandon("interrupted: the VM was shut down")
            raise

    def _declare_hung(self, reason: str) -> None:
        if self._hung is None:
            self._hung = reason
            self.log(reason)
        self._abandon(reason)

    def _abandon(self, reason: str) -> None:
        """Kill QEMU; every waiting and later request fails at once with `reason`."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._client is not None:
            self._client.abandon(reason)

    def ping(self) -> float:
        return self.request("ping", timeout=30)["uptime"]

    def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 60.0,
        input: bytes | None = None,
        check: bool = False,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> RunResult:
        """Run argv in the guest as root. The guest kills it after `timeout` seconds
        (timed_out=True); the host waits a little longer before declaring the VM hung."""
        args = {"argv": list(argv), "env": dict(env or {}), "cwd": cwd, "timeout": timeout,
                "input": input, "stream": on_output is not None}  # fmt: skip
        result = self._request("run", args, timeout=timeout + 30, on_event=on_output)
        run = RunResult(list(argv), result["exit_code"], result["stdout"], result["stderr"],
                        result["timed_out"], result["duration"])  # fmt: skip
        return run.check() if check else run

    def run_interactive(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        rows: int = 24,
        cols: int = 80,
        on_output: Callable[[bytes], None],
        on_started: Callable[[Callable[[bytes], None]], None],
        timeout: float = 24 * 3600,
    ) -> int:
        """Run argv on a guest pseudo-terminal. `on_started(send)` receives the function
        that types into it; `on_output` gets what the terminal prints. Returns the exit
        status."""
        def started(req_id: int) -> None:
            on_started(lambda data: self._request(
                "stdin", {"target": req_id, "data": data}, timeout=30))

        answer = self._request(
            "run_pty", {"argv": list(argv), "env": dict(env or {}), "rows": rows, "cols": cols},
            timeout=timeout, on_event=lambda _name, data: on_output(data), on_sent=started,
        )  # fmt: skip
        return answer["exit_code"]

    def read_file(self, path: str, *, max_size: int = 64 << 20) -> bytes:
        return self.request("read_file", path=path, max_size=max_size)

    def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        self.request("write_file", path=path, data=data, mode=mode)

    def kernel_log(self, since: int | None = None) -> KernelLog:
        answer = self.request("kmsg", since=since)
        return KernelLog([KmsgRecord(*r) for r in answer["records"]], answer["last_seq"])

    def kernel_log_mark(self) -> int:
        return self.kernel_log(since=sys.maxsize).last_seq

    def call(self, fn: str, /, *, call_timeout: float | None = None, **kwargs: Any) -> Any:
        """Call a guest-side function `package.module:function` (see vm/agent.py) with
        `kwargs`; `call_timeout` bounds the wait for its answer."""
        return self.request("call", timeout=call_timeout, fn=fn, kwargs=kwargs)


def _reap(proc: subprocess.Popen[bytes], grace: float) -> None:
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def remove_stale_temp_dirs(parent: Path | None = None) -> list[Path]:
    """Remove VM temp dirs (TEMP_PREFIX*) whose owner process is dead: a run killed with
    SIGKILL cannot clean up after itself (its QEMU died with it, PR_SET_PDEATHSIG).
    Dirs without a pid file (being created, or another user's) are left alone."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            pid = int((path / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
