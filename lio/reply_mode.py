"""Guest side of the kernel suite's netlink reply-mode tests
(suites/kernel/test_netlink_reply_mode.py), called through vm.call("lio.reply_mode:FUNCTION").

A peer on the TCM-USER "config" group that turns the module-wide reply mode on
(SET_FEATURES), records every event, and answers *_DONE only where a test told it to
(answer()): the runtime's handlers answer for their own devices, as they would
alongside tcmu-runner.

With reply mode on the kernel waits for a *_DONE without a timeout and
uninterruptibly, so every configfs write a test makes while it is on runs armed
(arm()/disarm()): should the write still be waiting when the time is up, the peer's
thread fails every waiting netlink command with -EINTR through target_core_user's module
parameters (block_netlink=1, reset_netlink=1, block_netlink=0), and disarm() says so.
Caveat (measured once on 6.1, cause not found): with the test broken on purpose (a LUN
created with nl_reply_supported=0 and nobody answering its ADDED_DEVICE) the creation
stayed blocked past the rescue (hung-task reports at 120-362 s) and the kept VM had to be
restarted: treat the rescue as a best effort, not a guarantee.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tcmu.netlink import TcmuEvent, TcmuNetlink

PARAMETERS = "/sys/module/target_core_user/parameters"
CORE = "/sys/kernel/config/target/core"


@dataclass
class _Peer:
    nl: TcmuNetlink
    rules: dict[tuple[str, int], int] = field(default_factory=dict)  # -> status
    events: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    deadline: float | None = None  # monotonic time of the armed rescue
    rescued: int = 0  # times the rescue fired since the last disarm()
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None


_PEER: _Peer | None = None


def _name_of(event: TcmuEvent) -> str:
    parts = (event.device or "").split("/")
    return parts[2] if len(parts) > 2 else ""


def _rescue() -> None:
    """Fail every netlink command the kernel waits for (-EINTR), then unblock."""
    for name, value in (("block_netlink", "1"), ("reset_netlink", "1"), ("block_netlink", "0")):
        with open(f"{PARAMETERS}/{name}", "w") as f:
            f.write(value)


def _loop(peer: _Peer) -> None:
    while not peer.stop.is_set():
        for event in peer.nl.receive(0.05):
            name = _name_of(event)
            with peer.lock:
                peer.events.append({"cmd": event.cmd, "device": name, "t": time.monotonic(),
                                    "dev_size": event.dev_size})
                status = peer.rules.get((name, event.cmd))
            if status is not None:
                peer.nl.reply(event, status)
                with peer.lock:
                    peer.replies.append({"cmd": event.cmd, "device": name, "status": status})
        with peer.lock:
            due = peer.deadline is not None and time.monotonic() >= peer.deadline
            if due:
                peer.deadline = None
                peer.rescued += 1
        if due:
            _rescue()


def start() -> None:
    """Open the peer and turn reply mode on."""
    global _PEER
    if _PEER is not None:
        raise RuntimeError("the reply-mode peer is running already")
    peer = _Peer(TcmuNetlink.open())
    peer.thread = threading.Thread(target=_loop, args=(peer,), name="nl-reply-peer",
                                   daemon=True)
    peer.thread.start()
    _PEER = peer
    peer.nl.set_features(True)


def stop() -> dict[str, Any]:
    """Turn reply mode off and close the peer; what it saw and answered."""
    global _PEER
    peer, _PEER = _PEER, None
    if peer is None:
        return {"events": [], "replies": []}
    try:
        peer.nl.set_features(False)
    finally:
        peer.stop.set()
        if peer.thread is not None:
            peer.thread.join(5)
        peer.nl.close()
    return {"events": peer.events, "replies": peer.replies}


def _peer() -> _Peer:
    if _PEER is None:
        raise RuntimeError("the reply-mode peer is not running (start() first)")
    return _PEER


def answer(device: str, cmd: int, status: int) -> None:
    """Answer `cmd` events of backstore `device` (its name: the UIO name is
    tcm-user/<hba>/<name>/<config>) with `status` (0 or a negative errno) from now on."""
    peer = _peer()
    with peer.lock:
        peer.rules[(device, cmd)] = status


def seen(device: str) -> list[dict[str, Any]]:
    """The events of backstore `device` so far: cmd, t (guest monotonic), dev_size."""
    peer = _peer()
    with peer.lock:
        return [dict(e) for e in peer.events if e["device"] == device]


def arm(seconds: float) -> None:
    peer = _peer()
    with peer.lock:
        peer.deadline = time.monotonic() + seconds


def disarm() -> int:
    """Disarm; how many times the rescue fired since the last disarm()."""
    peer = _peer()
    with peer.lock:
        peer.deadline, fired, peer.rescued = None, peer.rescued, 0
    return fired


def write(path: str, text: str) -> int:
    """Write `text` to a configfs file; 0, or the errno the write failed with."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())  # one write(2): a buffered file retries at close
    except OSError as exc:
        return exc.errno or -1
    finally:
        os.close(fd)
    return 0


def make_backstore(name: str, control: str) -> str:
    """A user backstore `name` in an HBA of its own, with `control`, not enabled; its
    configfs directory."""
    used = {int(p.rsplit("_", 1)[1]) for p in glob.glob(f"{CORE}/user_*")}
    path = f"{CORE}/user_{max(used, default=0) + 1}/{name}"
    os.makedirs(path)
    error = write(f"{path}/control", control)
    if error:
        remove_backstore(path)
        raise OSError(error, f"writing {control!r} to {path}/control failed")
    return path


def uio_names() -> list[str]:
    names = []
    for path in glob.glob("/sys/class/uio/uio*/name"):
        with contextlib.suppress(OSError), open(path) as f:
            names.append(f.read().strip())
    return names


def remove_backstore(path: str) -> None:
    os.rmdir(path)
    os.rmdir(os.path.dirname(path))
