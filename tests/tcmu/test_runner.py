"""tcmu.runner end to end against the fake kernel: a socketpair stands in for /dev/uioN
(the kernel end writes 4 bytes per event and reads 4 per kick)."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakering import ALL_CAPS, Completion, FakeKernel
from pyroute2.netlink import NETLINK_GENERIC
from test_device import make_dev, make_uio

from tcmu import device as devmod
from tcmu import netlink as nlmod
from tcmu import runner as runmod
from tcmu import uio as uiomod
from tcmu.cmdlog import CommandLog
from tcmu.handler import Command, DeviceInfo, Handler, Result
from tcmu.layout import Cap, TmrType, UFlag
from tcmu.netlink import GenlCmd, TcmuEvent, TcmuNetlink, encode
from tcmu.runner import INTERNAL_FAILURE_SENSE, Runner, serve

INQUIRY = bytes([0x12, 0, 0, 0, 36, 0])
TUR = bytes(6)
DEVICE = DeviceInfo("uio0", "tcm-user/1/disk0/harness/x", 1, "disk0", "harness/x", 1 << 20,
                    512, False)


class Scripted(Handler):
    """Answers by opcode: INQUIRY -> data, TUR -> GOOD, 0xEE -> raises, 0xDD -> deferred,
    0xBB -> returns garbage."""

    def __init__(self, device: DeviceInfo = DEVICE, **options: str) -> None:
        super().__init__(device, **options)
        self.deferred: list[Command] = []
        self.tmrs: list[tuple[int, list[int]]] = []
        self.opened = self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1

    def handle(self, cmd: Command) -> Result | None:
        op = cmd.cdb[0]
        if op == 0x12:
            return Result.good(b"I" * 36)
        if op == 0xEE:
            raise RuntimeError("boom")
        if op == 0xDD:
            self.deferred.append(cmd)
            return None
        if op == 0xBB:
            return "not a result"  # type: ignore[return-value]
        return Result.good()

    def tmr(self, tmr_type: int, cmd_ids: list[int]) -> None:
        self.tmrs.append((tmr_type, cmd_ids))


class Rig:
    """Fake kernel + runner thread."""

    def __init__(self, handler: Handler, *, flags: int = ALL_CAPS, log: Path | None = None,
                 **runner_options: object):
        self.ours, self.kernel_end = socket.socketpair()
        self.k = FakeKernel(flags=flags, notify=self.event)
        self.uio = uiomod.UioDevice(self.ours.fileno(), self.k.buf)
        self.stop_r, self.stop_w = os.pipe()
        self.log = CommandLog(str(log)) if log else None
        self.runner = Runner(self.uio, handler, log_file=self.log, stop_fds=[self.stop_r],
                             **runner_options)  # type: ignore[arg-type]
        self.error: BaseException | None = None
        self.kicks = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def event(self) -> None:
        self.kernel_end.send(b"\x01\x00\x00\x00")

    def start(self) -> Rig:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as e:
            self.error = e

    def wait(self, n: int, timeout: float = 5.0) -> list[Completion]:
        """Completions for the next n commands, reaped on kicks."""
        got: list[Completion] = []
        while len(got) < n:
            ready, _, _ = select.select([self.kernel_end], [], [], timeout)
            assert ready, f"no kick within {timeout}s; got {got}"
            data = self.kernel_end.recv(4096)
            assert data, "runner closed its end"
            self.kicks += len(data) // 4
            got += self.k.reap()
        assert not self.k.broken
        return got

    def quiet(self, timeout: float = 0.2) -> bool:
        return not select.select([self.kernel_end], [], [], timeout)[0]

    def stop(self) -> None:
        os.write(self.stop_w, b"x")
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.runner.close()
        if self.log:
            self.log.close()
        self.ours.close()
        self.kernel_end.close()
        os.close(self.stop_r)
        os.close(self.stop_w)


@pytest.fixture
def rig_factory() -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(handler: Handler, **kw: object) -> Rig:
        rig = Rig(handler, **kw)  # type: ignore[arg-type]
        rigs.append(rig)
        return rig.start()

    yield make
    for rig in rigs:
        if rig.thread.is_alive():
            rig.stop()


def log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_commands_are_served_and_logged(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory(Scripted(), log=tmp_path / "cmds.jsonl")
    a = rig.k.queue_cmd(INQUIRY, data_in=96)
    (done,) = rig.wait(1)
    assert (done.cmd_id, done.status, done.data_in) == (a, 0, b"I" * 36)
    assert done.read_len == 36  # READ_LEN: fewer bytes than the allocation
    b = rig.k.queue_cmd(TUR)
    assert [c.cmd_id for c in rig.wait(1)] == [b]
    lines = log_lines(tmp_path / "cmds.jsonl")
    assert [(x["cmd_id"], x["cdb"], x["status"], x["sense"]) for x in lines] == [
        (a, INQUIRY.hex(), 0, ""), (b, TUR.hex(), 0, "")
    ]
    assert all(isinstance(x["t"], float) and isinstance(x["us"], int) for x in lines)
    assert lines[0]["t"] <= lines[1]["t"]


def test_handler_exception_is_internal_target_failure_and_the_loop_goes_on(
    rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_factory(Scripted())
    with caplog.at_level(logging.ERROR, logger="tcmu.runner"):
        rig.k.queue_cmd(bytes([0xEE]) + bytes(15))
        (done,) = rig.wait(1)
    assert done.status == 0x02
    assert done.sense[:18] == INTERNAL_FAILURE_SENSE
    assert INTERNAL_FAILURE_SENSE[:3] == bytes([0x70, 0, 0x04])
    assert INTERNAL_FAILURE_SENSE[7] == 10 and INTERNAL_FAILURE_SENSE[12:14] == b"\x44\x00"
    assert done.sense[18:] == bytes(96 - 18)
    assert "boom" in caplog.text and "Traceback" in caplog.text
    rig.k.queue_cmd(TUR)
    assert rig.wait(1)[0].status == 0


def test_a_non_result_is_internal_target_failure(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(Scripted())
    rig.k.queue_cmd(bytes([0xBB]) + bytes(15))
    (done,) = rig.wait(1)
    assert done.status == 0x02 and done.sense[:18] == INTERNAL_FAILURE_SENSE


def test_deferred_completion_from_another_thread_is_out_of_order(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    handler = Scripted()
    rig = rig_factory(handler, log=tmp_path / "log")
    slow = rig.k.queue_cmd(bytes([0xDD]) + bytes(15), data_in=512)
    fast = rig.k.queue_cmd(TUR)
    (first,) = rig.wait(1)
    assert first.cmd_id == fast and first.slot == 0  # into the slow command's slot
    (cmd,) = handler.deferred
    t = threading.Thread(target=cmd.complete, args=(Result.good(b"late"),))
    t.start()
    t.join()
    (second,) = rig.wait(1)
    assert (second.cmd_id, second.data_in, second.read_len) == (slow, b"late", 4)
    assert [x["cmd_id"] for x in log_lines(tmp_path / "log")] == [fast, slow]


def test_deferred_completion_in_order_without_ooo(rig_factory: Callable[..., Rig]) -> None:
    handler = Scripted()
    rig = rig_factory(handler, flags=int(Cap.READ_LEN))
    slow = rig.k.queue_cmd(bytes([0xDD]) + bytes(15))
    fast = rig.k.queue_cmd(TUR)
    assert rig.quiet()  # the fast one waits behind the slow one
    threading.Thread(target=handler.deferred[0].complete, args=(Result.good(),)).start()
    assert [(c.cmd_id, c.slot) for c in rig.wait(2)] == [(slow, 0), (fast, 128)]


def test_completing_twice_is_dropped_not_sent(
    rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    handler = Scripted()
    rig = rig_factory(handler)
    rig.k.queue_cmd(bytes([0xDD]) + bytes(15))
    rig.quiet(0.1)
    cmd = handler.deferred[0]
    cmd.complete(Result.good())
    rig.wait(1)
    with caplog.at_level(logging.ERROR, logger="tcmu.runner"):
        cmd.complete(Result.good())
        rig.k.queue_cmd(TUR)
        assert len(rig.wait(1)) == 1
    assert "not in flight" in caplog.text and not rig.k.broken


def test_tmr_reaches_the_handler_and_the_log(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    handler = Scripted()
    rig = rig_factory(handler, log=tmp_path / "log")
    slow = rig.k.queue_cmd(bytes([0xDD]) + bytes(15))
    rig.k.queue_tmr(TmrType.ABORT_TASK, [slow])
    rig.k.queue_cmd(TUR)
    rig.wait(1)
    assert handler.tmrs == [(TmrType.ABORT_TASK, [slow])]
    assert {"tmr": 1, "cmd_ids": [slow]} in log_lines(tmp_path / "log")


def test_a_batch_is_one_tail_update_and_one_kick(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(Scripted())
    ids = [rig.k.queue_cmd(TUR, notify=False) for _ in range(10)]
    rig.event()
    assert [c.cmd_id for c in rig.wait(10)] == ids
    assert rig.kicks == 1 and rig.quiet(0.1)


def test_entries_queued_before_the_loop_starts_are_served() -> None:
    rig = Rig(Scripted())
    a = rig.k.queue_cmd(TUR, notify=False)  # no event: the fd was not open yet
    rig.start()
    assert [c.cmd_id for c in rig.wait(1)] == [a]
    rig.stop()


def test_device_gone_ends_run() -> None:
    rig = Rig(Scripted()).start()
    rig.kernel_end.close()  # like EIO from a removed UIO device
    rig.thread.join(5)
    assert isinstance(rig.error, uiomod.DeviceGone)
    rig.runner.close()
    rig.ours.close()


def test_stop_hands_back_finished_deferred_commands() -> None:
    handler = Scripted()
    rig = Rig(handler)
    gate, entered = threading.Event(), threading.Event()
    real_kick = rig.uio.kick

    def kick() -> None:  # hold the loop after its first kick
        if not gate.is_set():
            entered.set()
            gate.wait(5)
        real_kick()

    rig.uio.kick = kick  # type: ignore[method-assign]
    slow = rig.k.queue_cmd(bytes([0xDD]) + bytes(15), notify=False)
    rig.k.queue_cmd(TUR, notify=False)
    rig.start()
    assert entered.wait(5)
    handler.deferred[0].complete(Result.good())  # arrives together with the stop
    os.write(rig.stop_w, b"x")
    gate.set()
    rig.thread.join(5)
    assert rig.error is None
    assert [c.cmd_id for c in rig.k.reap()][-1] == slow
    rig.stop()


# -- serve() -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, str]:
    sysfs, configfs = tmp_path / "sys", tmp_path / "cfg"
    make_uio(sysfs, "uio0", "tcm-user/1/disk0/harness/x", size=2 * 4096 + 64 * 4096)
    make_dev(configfs, 1, "disk0")
    (tmp_path / "h.py").write_text(
        "from test_runner import Scripted\nclass H(Scripted):\n    pass\n"
    )
    return {"sysfs": str(sysfs), "configfs": str(configfs), "spec": f"{tmp_path}/h.py:H"}


class FakeUio:
    """Replaces UioDevice.open: a fake kernel behind a socketpair."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
        self.ours, self.kernel_end = socket.socketpair()
        self.k = FakeKernel(notify=lambda: self.kernel_end.send(bytes(4)))
        self.events = events

        def fake_open(info: uiomod.UioInfo, devfs: str = "/dev") -> uiomod.UioDevice:
            events.append(f"open {info.uio} {info.map_size}")
            return uiomod.UioDevice(os.dup(self.ours.fileno()), self.k.buf)

        monkeypatch.setattr(uiomod.UioDevice, "open", staticmethod(fake_open))


def test_serve_runs_a_handler_spec_until_stopped(
    tree: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    fake = FakeUio(monkeypatch, events)
    stop_r, stop_w = os.pipe()
    handlers: list[Handler] = []
    orig_open = Scripted.open
    monkeypatch.setattr(Scripted, "open", lambda self: (handlers.append(self), orig_open(self)))
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(serve(
        tree["spec"], "disk0", log_path=str(tmp_path / "log"), ready=lambda: events.append("ready"),
        stop_fd=stop_r, netlink=False, sysfs=tree["sysfs"], configfs=tree["configfs"],
    )))
    t.start()
    cmd_id = fake.k.queue_cmd(INQUIRY, data_in=36)
    assert select.select([fake.kernel_end], [], [], 5)[0]
    fake.kernel_end.recv(64)
    assert fake.k.reap()[0].cmd_id == cmd_id
    os.write(stop_w, b"x")
    t.join(5)
    assert result == [0]
    assert events == [f"open uio0 {2 * 4096 + 64 * 4096}", "ready"]
    (h,) = handlers
    assert (h.opened, h.closed) == (1, 1)
    assert h.device.size == 1 << 20 and h.device.block_size == 4096
    assert log_lines(tmp_path / "log")[0]["cmd_id"] == cmd_id


def test_serve_recover_blocks_resets_then_unblocks(
    tree: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    fake = FakeUio(monkeypatch, events)
    # a previous handler got as far as completing one command
    fake.k.queue_cmd(TUR, notify=False)
    fake.k.tail = fake.k.head
    fake.k.reap()

    def record(name: str) -> Callable[..., None]:
        return lambda info, value, configfs=None: events.append(f"{name}={int(value)}")

    monkeypatch.setattr(devmod, "block_dev", record("block_dev"))
    monkeypatch.setattr(devmod, "reset_ring", record("reset_ring"))
    fake.kernel_end.close()  # the device goes away at once: serve returns
    assert serve(tree["spec"], "tcm-user/1/disk0/harness/x", recover=True,
                 ready=lambda: events.append("ready"), netlink=False, sysfs=tree["sysfs"],
                 configfs=tree["configfs"]) == 0
    assert events == ["block_dev=1", "reset_ring=1", f"open uio0 {2 * 4096 + 64 * 4096}",
                      "block_dev=0", "ready"]


def test_serve_unblocks_when_setup_fails_after_blocking(
    tree: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr(devmod, "block_dev",
                        lambda info, value, configfs=None: events.append(f"block={int(value)}"))
    monkeypatch.setattr(devmod, "reset_ring", lambda *a, **k: None)

    def busy(info: uiomod.UioInfo, devfs: str = "/dev") -> uiomod.UioDevice:
        raise OSError(16, "busy")

    monkeypatch.setattr(uiomod.UioDevice, "open", staticmethod(busy))
    with pytest.raises(OSError):
        serve(tree["spec"], "disk0", recover=True, netlink=False, sysfs=tree["sysfs"],
              configfs=tree["configfs"])
    assert events == ["block=1", "block=0"]


def test_serve_refuses_a_wrong_mailbox_version(
    tree: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeUio(monkeypatch, [])
    fake.k.buf[0] = 3
    with pytest.raises(runmod.RingError, match="version 3"):
        serve(tree["spec"], "disk0", netlink=False, sysfs=tree["sysfs"],
              configfs=tree["configfs"])


# -- netlink ---------------------------------------------------------------------------


def test_netlink_events_reach_the_loop(rig_factory: Callable[..., Rig]) -> None:
    nl = TcmuNetlink(0x7FF0, None)
    seen: list[TcmuEvent] = []
    arrived = threading.Event()

    def on_event(event: TcmuEvent) -> None:
        seen.append(event)
        arrived.set()

    rig_factory(Scripted(), netlink=nl, on_netlink=on_event)
    sender = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    sender.bind((0, 0))
    sender.sendto(encode(0x7FF0, GenlCmd.REMOVED_DEVICE, [("TCMU_ATTR_MINOR", 0),
                                                          ("TCMU_ATTR_DEVICE_ID", 4)]),
                  (nl.port, 0))
    assert arrived.wait(5)
    assert (seen[0].cmd, seen[0].minor, seen[0].device_id) == (GenlCmd.REMOVED_DEVICE, 0, 4)
    sender.close()
    nl.close()


def test_serve_goes_on_without_netlink(
    tree: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable(**kw: object) -> tuple[int, int]:
        raise nlmod.NetlinkUnavailable(2, "generic netlink family TCM-USER is not available")

    monkeypatch.setattr(nlmod, "resolve", unavailable)
    fake = FakeUio(monkeypatch, [])
    fake.kernel_end.close()
    with caplog.at_level(logging.WARNING, logger="tcmu.runner"):
        assert serve(tree["spec"], "disk0", sysfs=tree["sysfs"], configfs=tree["configfs"]) == 0
    assert "no netlink listener" in caplog.text




class NlStub:
    def __init__(self) -> None:
        self.replies: list[tuple[TcmuEvent, int]] = []

    def reply(self, event: TcmuEvent, status: int = 0) -> None:
        self.replies.append((event, status))


def test_netlink_reconfig_updates_the_device_and_replies_when_the_kernel_waits(
    tmp_path: Path,
) -> None:
    d = make_dev(tmp_path, 1, "disk0")
    handler = Scripted()
    nl = NlStub()
    peer = runmod._NetlinkPeer(nl, handler, minor=0, configfs=str(tmp_path))  # type: ignore[arg-type]
    other = TcmuEvent(GenlCmd.RECONFIG_DEVICE, "x", 5, 9, dev_size=1)
    peer(other)
    assert handler.device == DEVICE and nl.replies == []
    ev = TcmuEvent(GenlCmd.RECONFIG_DEVICE, DEVICE.name, 0, 9, dev_size=2 << 20, write_cache=1)
    peer(ev)  # nl_reply_supported is 0: the kernel does not wait, no reply
    assert handler.device.size == 2 << 20 and handler.device.write_cache is True
    assert handler.device.name == DEVICE.name and nl.replies == []
    removed = TcmuEvent(GenlCmd.REMOVED_DEVICE, DEVICE.name, 0, 9)
    (d / "attrib" / "nl_reply_supported").write_text("1\n")
    waited_for = runmod._NetlinkPeer(nl, handler, minor=0, configfs=str(tmp_path))  # type: ignore[arg-type]
    # REMOVED_DEVICE arrives after the device's configfs directory is gone: each peer
    # answers as the attribute said while the device lived.
    shutil.rmtree(d)
    peer(removed)
    assert nl.replies == []
    waited_for(removed)
    assert nl.replies == [(removed, 0)]


def test_sigterm_becomes_a_readable_stop_fd() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with runmod._signals_to_fd() as fd:
        assert fd is not None
        os.kill(os.getpid(), signal.SIGTERM)
        assert select.select([fd], [], [], 5)[0] == [fd]
    assert signal.getsignal(signal.SIGTERM) is before


class Keeper(Handler):
    """Asks for KEEP_BUF on every command when the ring offers it, or regardless."""

    def __init__(self, *, always: bool) -> None:
        super().__init__(DEVICE)
        self.always = always

    def handle(self, cmd: Command) -> Result:
        keep = self.always or Cap.KEEP_BUF in self.ring_caps
        return Result.good(b"k" * len(cmd.iov), keep_buf=keep)


@pytest.mark.parametrize("flags", [ALL_CAPS, int(Cap.OOOC | Cap.READ_LEN)])
def test_the_handler_sees_the_ring_caps_and_keep_buf_follows_them(
    rig_factory: Callable[..., Rig], flags: int
) -> None:
    handler = Keeper(always=False)
    rig = rig_factory(handler, flags=flags)
    assert handler.ring_caps == Cap(flags)  # set by the Runner, before serve() calls open()
    cmd_id = rig.k.queue_cmd(INQUIRY, data_in=36)
    (done,) = rig.wait(1)
    kept = bool(flags & Cap.KEEP_BUF)
    assert (done.status, done.uflags, done.data_in) == (0, UFlag.KEEP_BUF if kept else 0,
                                                        b"k" * 36)
    assert (cmd_id in rig.k.kept) is kept


def test_keep_buf_without_the_cap_is_internal_target_failure_in_one_log_line(
    rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_factory(Keeper(always=True), flags=int(Cap.OOOC | Cap.READ_LEN))
    with caplog.at_level(logging.ERROR, logger="tcmu.runner"):
        rig.k.queue_cmd(TUR)
        (done,) = rig.wait(1)
    assert (done.status, done.uflags) == (0x02, 0)
    assert done.sense[:18] == INTERNAL_FAILURE_SENSE
    assert ("keep_buf needs the kernel's KEEP_BUF capability, which this ring does not offer "
            "(mailbox flags 0x3); answering INTERNAL TARGET FAILURE") in caplog.text
    assert "Traceback" not in caplog.text
