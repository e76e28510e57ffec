"""Serve one TCMU device with one handler: the event loop.

    serve(spec, device, *, log_path=None, ready=None, recover=False, stop_fd=None) -> 0

serve() finds the UIO device, builds DeviceInfo, instantiates the handler from its spec,
maps the ring, calls handler.open() and then `ready()` (the LUN may be exported from
then on), and loops until stopped (SIGTERM/SIGINT when called in the main thread, or
`stop_fd` readable) or the device is removed (DeviceGone): it then closes the handler
and returns 0. Setup problems raise: HandlerSpecError, UioNotFound, DeviceError,
RingError, OSError (e.g. EBUSY: another process has the UIO device open).

One loop iteration: poll(uio fd, deferred-completion eventfd, stop fds, netlink fd)
-> read the UIO event -> decode every published entry -> handler.handle() each ->
complete -> one cmd_tail update -> one kick. Deferred completions (handle() returned
None, cmd.complete() later from any thread) travel through a deque plus an eventfd to
the loop thread, which alone touches the ring; they complete out of order when the
kernel offers CAP_OOOC, else in ring order.

Recovery (recover=True, a restarted handler on a live device): action/block_dev=1,
action/reset_ring=1 (in-flight commands fail with BUSY and are retried by the
initiator), map the ring and resume from the kernel's cmd_tail, action/block_dev=0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from tcmu import device as devmod
from tcmu import uio as uiomod
from tcmu.cmdlog import CommandLog
from tcmu.handler import (
    INTERNAL_FAILURE,
    Command,
    DeviceInfo,
    Handler,
    Reconfig,
    ReconfigRefused,
    Result,
)
from tcmu.ring import Ring, RingError, TmrNotice, UnsupportedResult
from tcmu.sense import INTERNAL_FAILURE_SENSE, SenseError  # noqa: F401 (re-exported)
from tcmu.spec import load as load_spec

if TYPE_CHECKING:
    from tcmu.netlink import TcmuEvent, TcmuNetlink

log = logging.getLogger(__name__)


_POLLIN = select.POLLIN
_perf = time.perf_counter


class Runner:
    """The loop over one mapped device. Build it, then run() until stop or DeviceGone."""

    def __init__(
        self,
        uio: uiomod.UioDevice,
        handler: Handler,
        *,
        log_file: CommandLog | None = None,
        stop_fds: Sequence[int] = (),
        netlink: TcmuNetlink | None = None,
        on_netlink: Callable[[TcmuEvent], None] | None = None,
    ) -> None:
        self.uio = uio
        self.handler = handler
        self.log_file = log_file
        self.stop_fds = tuple(stop_fds)
        self.netlink = netlink
        self.on_netlink = on_netlink
        self._deferred: deque[tuple[Command, Result]] = deque()
        self._t0: dict[int, float] = {}  # deferred commands' handle() start (log only)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._closed = False
        self.wakeups = 0  # passes that found entries on the ring
        self.commands = 0  # entries (commands and TMRs) they found
        self.ring = Ring(uio.map, self._defer)  # raises RingError (mailbox version)
        handler.ring_caps = self.ring.flags

    # -- any thread --------------------------------------------------------------------

    def _defer(self, cmd: Command, result: Result) -> None:
        self._deferred.append((cmd, result))
        if not self._closed:
            with contextlib.suppress(OSError):
                os.eventfd_write(self._wake, 1)

    # -- loop thread -------------------------------------------------------------------

    def run(self) -> None:
        """Serve until a stop fd polls readable (returns) or the device goes (raises
        uio.DeviceGone)."""
        poller = select.poll()
        uio_fd = self.uio.fileno()
        wake = self._wake
        nl_fd = self.netlink.fileno() if self.netlink is not None else -1
        stop = set(self.stop_fds)
        for fd in (uio_fd, wake, *stop, *([nl_fd] if nl_fd >= 0 else [])):
            poller.register(fd, _POLLIN)
        # Entries queued before we opened the fd raised no event we can see: look now.
        self._pump()
        while True:
            stopping = False
            for fd, _ in poller.poll():
                if fd == uio_fd:
                    self.uio.ack()
                elif fd == wake:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(wake)
                elif fd in stop:
                    stopping = True
                elif fd == nl_fd:
                    self._netlink()
            if stopping:
                self._drain_deferred()  # hand back what is finished; the rest stays
                self._kick()
                return
            self._pump()

    def _pump(self) -> None:
        items = self.ring.fetch()
        if items:
            self.wakeups += 1
            self.commands += len(items)
            self._dispatch(items)
        if self._deferred:
            self._drain_deferred()
        self._kick()

    def _kick(self) -> None:
        """Publish the finished responses and tell the kernel, once for the whole batch;
        their command-log lines are written first."""
        if self.log_file is not None:
            self.log_file.flush()
        if self.ring.flush():
            self.uio.kick()

    def _dispatch(self, items: list[Command | TmrNotice]) -> None:
        handle = self.handler.handle
        logging_on = self.log_file is not None
        for item in items:
            if isinstance(item, TmrNotice):
                self._tmr(item)
                continue
            t0 = _perf() if logging_on else 0.0
            try:
                result = handle(item)
            except SenseError as err:  # the documented way to refuse a command
                result = Result.check_condition(err.sense(_descriptor_sense(self.handler)))
            except Exception:
                log.exception("handler failed on cmd %d, cdb %s", item.cmd_id, item.cdb.hex())
                result = INTERNAL_FAILURE
            if result is None:
                if logging_on:
                    self._t0[item.cmd_id] = t0
                continue
            self._complete(item, result, t0)

    def _drain_deferred(self) -> None:
        deferred = self._deferred
        while deferred:
            cmd, result = deferred.popleft()
            self._complete(cmd, result, self._t0.pop(cmd.cmd_id, None))

    def _complete(self, cmd: Command, result: Result, t0: float | None) -> None:
        """t0: when handle() was called (perf_counter), for the log's "us"."""
        us = -1
        if self.log_file is not None and t0 is not None:
            us = int((_perf() - t0) * 1e6)
        try:
            self.ring.complete(cmd, result)
        except RingError as e:
            log.error("dropping a completion: %s", e)
            return
        except UnsupportedResult as e:  # the handler's mistake, said in one line
            log.error("%s; answering INTERNAL TARGET FAILURE", e)
            result = INTERNAL_FAILURE
            self.ring.complete(cmd, result)
        except Exception:
            log.exception("cmd %d: unusable result %r", cmd.cmd_id, result)
            result = INTERNAL_FAILURE
            self.ring.complete(cmd, result)
        if self.log_file is not None:
            self.log_file.command(
                cmd.cmd_id, cmd.cdb, int(result.status), bytes(result.sense), us
            )

    def _tmr(self, notice: TmrNotice) -> None:
        if self.log_file is not None:
            self.log_file.tmr(notice.tmr_type, notice.cmd_ids)
        try:
            self.handler.tmr(notice.tmr_type, notice.cmd_ids)
        except Exception:
            log.exception("handler failed on TMR %d %s", notice.tmr_type, notice.cmd_ids)

    def _netlink(self) -> None:
        assert self.netlink is not None
        try:
            events = self.netlink.receive(0)
        except OSError:
            log.exception("netlink receive failed")
            return
        if self.on_netlink is not None:
            for event in events:
                try:
                    self.on_netlink(event)
                except Exception:
                    log.exception("netlink event %s not handled", event)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(BufferError):
            self.ring.release()
        os.close(self._wake)


def _descriptor_sense(handler: Handler) -> bool:
    """Whether the handler reports sense in descriptor format (BlockHandler: D_SENSE)."""
    try:
        return bool(getattr(handler, "descriptor_sense", False))
    except Exception:
        return False


def reconfigured(info: DeviceInfo, event: TcmuEvent) -> DeviceInfo:
    """The device after a RECONFIG_DEVICE event (attributes it lacks stay as they were)."""
    config = info.config if event.dev_cfg is None else event.dev_cfg
    return dataclasses.replace(
        info,
        size=info.size if event.dev_size is None else event.dev_size,
        write_cache=info.write_cache if event.write_cache is None else bool(event.write_cache),
        config=config,
        name=(
            info.name
            if event.dev_cfg is None
            else f"{uiomod.UIO_PREFIX}{info.hba}/{info.dev_name}/{config}"
        ),
    )


class _NetlinkPeer:
    """Hands RECONFIG to the handler (apply_reconfig: it may refuse) and answers *_DONE
    for our device when the kernel waits for it (see tcmu.netlink for the reply-mode
    decision): status 0, or -EINVAL for a refused reconfiguration."""

    def __init__(self, nl: TcmuNetlink, handler: Handler, minor: int, configfs: str) -> None:
        self.nl = nl
        self.handler = handler
        self.minor = minor
        self.configfs = configfs
        # Read once: the kernel refuses to change it on an enabled device, and by the time
        # REMOVED_DEVICE arrives the attribute is gone (an unknown value means "reply",
        # and an unexpected reply makes the kernel log "completion could not find device").
        self.reply_supported = devmod.nl_reply_supported(handler.device, configfs)

    def __call__(self, event: TcmuEvent) -> None:
        from tcmu.netlink import GenlCmd

        if event.minor != self.minor:
            return
        info: DeviceInfo = self.handler.device
        status = 0
        if event.cmd == GenlCmd.RECONFIG_DEVICE:
            new = reconfigured(info, event)
            try:
                self.handler.apply_reconfig(Reconfig(info, new))
                log.info("device reconfigured: %s", new)
            except ReconfigRefused as e:
                log.warning("%s refused the reconfiguration to %s: %s",
                            type(self.handler).__name__, new, e)
                status = -errno.EINVAL
            except Exception:
                log.exception("reconfiguration to %s failed", new)
                status = -errno.EIO
        if event.device_id is not None and self.reply_supported > 0:
            try:
                self.nl.reply(event, status)
            except (OSError, ValueError):
                log.exception("netlink reply failed")


@contextlib.contextmanager
def _signals_to_fd() -> Iterator[int | None]:
    """SIGTERM/SIGINT -> a readable fd (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.write(w, b"s")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield r
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        os.close(r)
        os.close(w)


def _open_netlink(handler: Handler, minor: int, configfs: str) -> tuple[
    TcmuNetlink | None, Callable[[TcmuEvent], None] | None
]:
    try:
        from tcmu.netlink import TcmuNetlink

        nl = TcmuNetlink.open()
    except Exception as e:  # optional: the ring works without it
        log.warning("no netlink listener (%s); serving without it", e)
        return None, None
    return nl, _NetlinkPeer(nl, handler, minor, configfs)


def serve(
    spec: str,
    device: str,
    *,
    log_path: str | None = None,
    ready: Callable[[], None] | None = None,
    recover: bool = False,
    stop_fd: int | None = None,
    netlink: bool = True,
    sysfs: str = "/sys",
    devfs: str = "/dev",
    configfs: str = devmod.CONFIGFS,
) -> int:
    """Serve `device` (UIO name, dev_name or "uioN") with the handler `spec` until
    stopped or the device is removed; returns 0. See the module docstring."""
    handler_spec = load_spec(spec)
    info = uiomod.find(device, sysfs)
    dev = devmod.read_device_info(info.uio, info.name, configfs)
    handler = handler_spec.instantiate(dev)
    if handler.subtype and dev.subtype and handler.subtype != dev.subtype:
        log.warning("%s is for subtype %r, the device's config says %r",
                    type(handler).__name__, handler.subtype, dev.subtype)
    blocked = False  # action/block_dev=1 written and not yet undone
    try:
        with contextlib.ExitStack() as stack:
            if recover:
                devmod.block_dev(dev, True, configfs)
                blocked = True
                devmod.reset_ring(dev, 1, configfs)
            uio = uiomod.UioDevice.open(info, devfs)
            stack.callback(uio.close)
            cmdlog = CommandLog(log_path, batched=True) if log_path else None
            if cmdlog is not None:
                stack.callback(cmdlog.close)
            nl, peer = _open_netlink(handler, info.minor, configfs) if netlink else (None, None)
            if nl is not None:
                stack.callback(nl.close)
            sig_fd = stack.enter_context(_signals_to_fd())
            stop_fds = [fd for fd in (sig_fd, stop_fd) if fd is not None]
            runner = Runner(uio, handler, log_file=cmdlog, stop_fds=stop_fds, netlink=nl,
                            on_netlink=peer)
            stack.callback(runner.close)
            handler.open()
            try:
                if blocked:
                    devmod.block_dev(dev, False, configfs)
                    blocked = False
                if ready is not None:
                    ready()
                runner.run()
            except uiomod.DeviceGone:
                log.info("%s was removed; stopping", info.name)
            finally:
                log.info("served %d ring entries in %d wakeups", runner.commands, runner.wakeups)
                try:
                    handler.quiesce()  # commands still running on the handler's threads
                    handler.close()
                except Exception:
                    log.exception("handler close failed")
    finally:
        if blocked:  # setup failed half-way: do not leave the device refusing I/O
            with contextlib.suppress(devmod.DeviceError):
                devmod.block_dev(dev, False, configfs)
    return 0
