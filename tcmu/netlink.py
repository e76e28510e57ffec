"""The TCMU generic netlink channel: family "TCM-USER", multicast group "config".

The kernel announces ADDED_DEVICE / REMOVED_DEVICE / RECONFIG_DEVICE there, with the
UIO name (TCMU_ATTR_DEVICE), the UIO minor and the se_device index (DEVICE_ID).

Decision: the runtime does NOT turn reply mode on (SET_FEATURES with
SUPP_KERN_CMD_REPLY=1). Reply mode is module-wide and makes the kernel wait, without
timeout and uninterruptibly, for a *_DONE reply to every event of every device whose
nl_reply_supported >= 0: a handler process that dies (or a test that never starts one)
would then hang the next `enable`/delete write in configfs. Without reply mode the
events are pure notifications. Should someone else (tcmu-runner) have turned it on,
the runner answers *_DONE with status 0, promptly, for the device it serves, so removal
and reconfiguration of that device still complete. set_features() exists for tests
that exercise reply mode on purpose, and to switch it back off.

Implementation: pyroute2 resolves the family id and group id (GenericNetlinkSocket
.bind) and encodes/decodes messages (TcmuGenlMsg); events are then read from a plain
non-blocking netlink socket, so the fd can sit in the runner's poll set and every
wait has a timeout (pyroute2 0.9's own receive path runs an asyncio loop with no
timeout).
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import select
import socket
import struct
from collections.abc import Callable

from pyroute2.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_GENERIC,
    NLM_F_REQUEST,
    SOL_NETLINK,
    genlmsg,
)
from pyroute2.netlink.generic import GenericNetlinkSocket

FAMILY = "TCM-USER"
GROUP = "config"
FAMILY_VERSION = 2
_NLMSG_LEN = struct.Struct("=I")


class GenlCmd(enum.IntEnum):
    """enum tcmu_genl_cmd."""

    UNSPEC = 0
    ADDED_DEVICE = 1
    REMOVED_DEVICE = 2
    RECONFIG_DEVICE = 3
    ADDED_DEVICE_DONE = 4
    REMOVED_DEVICE_DONE = 5
    RECONFIG_DEVICE_DONE = 6
    SET_FEATURES = 7


# An event's reply is the command three further on (ADDED 1 -> ADDED_DONE 4, ...).
_DONE: dict[int, int] = {
    GenlCmd.ADDED_DEVICE: GenlCmd.ADDED_DEVICE_DONE,
    GenlCmd.REMOVED_DEVICE: GenlCmd.REMOVED_DEVICE_DONE,
    GenlCmd.RECONFIG_DEVICE: GenlCmd.RECONFIG_DEVICE_DONE,
}


class TcmuGenlMsg(genlmsg):
    """A TCM-USER message; attribute map from enum tcmu_genl_attr and the kernel's
    nla_policy (DEVICE string, MINOR u32, DEV_SIZE u64, CMD_STATUS s32, ...)."""

    nla_map = (
        ("TCMU_ATTR_UNSPEC", "none"),
        ("TCMU_ATTR_DEVICE", "asciiz"),
        ("TCMU_ATTR_MINOR", "uint32"),
        ("TCMU_ATTR_PAD", "none"),
        ("TCMU_ATTR_DEV_CFG", "asciiz"),
        ("TCMU_ATTR_DEV_SIZE", "uint64"),
        ("TCMU_ATTR_WRITECACHE", "uint8"),
        ("TCMU_ATTR_CMD_STATUS", "int32"),
        ("TCMU_ATTR_DEVICE_ID", "uint32"),
        ("TCMU_ATTR_SUPP_KERN_CMD_REPLY", "uint8"),
    )


class NetlinkUnavailable(OSError):
    """The TCM-USER family is not registered (target_core_user not loaded) or the
    socket cannot be set up."""


@dataclasses.dataclass(frozen=True, slots=True)
class TcmuEvent:
    cmd: int  # GenlCmd
    device: str | None  # UIO name
    minor: int | None  # UIO minor: /dev/uio<minor>
    device_id: int | None  # se_device dev_index; what a *_DONE reply must name
    dev_cfg: str | None = None  # RECONFIG: new dev_config
    dev_size: int | None = None  # RECONFIG: new size
    write_cache: int | None = None  # RECONFIG: new emulate_write_cache


_resolved: tuple[int, int] | None = None


def resolve(*, cached: bool = True) -> tuple[int, int]:
    """(family id, "config" group id) of TCM-USER, from the kernel's genl controller.

    The ids stay valid while target_core_user stays loaded, so the answer is cached:
    a warm process that resolves once hands it to the handlers it forks.
    """
    global _resolved
    if cached and _resolved is not None:
        return _resolved
    sock = GenericNetlinkSocket()
    try:
        sock.bind(FAMILY, TcmuGenlMsg)
        _resolved = (sock.prid, sock.mcast_groups[GROUP])
        return _resolved
    except Exception as e:
        raise NetlinkUnavailable(
            errno.ENOENT,
            f"generic netlink family {FAMILY} is not available ({e}); load target_core_user",
        ) from e
    finally:
        sock.close()


def encode(family_id: int, cmd: int, attrs: list[tuple[str, int | str]], seq: int = 0,
           pid: int = 0) -> bytes:
    msg = TcmuGenlMsg()
    msg["cmd"] = cmd
    msg["version"] = FAMILY_VERSION
    msg["attrs"] = [list(a) for a in attrs]
    msg["header"]["type"] = family_id
    msg["header"]["flags"] = NLM_F_REQUEST
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = pid
    msg.encode()
    return bytes(msg.data)


def decode(data: bytes, family_id: int) -> list[TcmuEvent]:
    """The TCM-USER messages of one datagram (acks, errors and others are skipped)."""
    events = []
    off = 0
    while off + 16 <= len(data):
        length = _NLMSG_LEN.unpack_from(data, off)[0]
        if length < 16:
            break
        msg = TcmuGenlMsg(data, offset=off)
        msg.decode()
        if msg["header"]["type"] == family_id:
            events.append(
                TcmuEvent(
                    cmd=msg["cmd"],
                    device=msg.get_attr("TCMU_ATTR_DEVICE"),
                    minor=msg.get_attr("TCMU_ATTR_MINOR"),
                    device_id=msg.get_attr("TCMU_ATTR_DEVICE_ID"),
                    dev_cfg=msg.get_attr("TCMU_ATTR_DEV_CFG"),
                    dev_size=msg.get_attr("TCMU_ATTR_DEV_SIZE"),
                    write_cache=msg.get_attr("TCMU_ATTR_WRITECACHE"),
                )
            )
        off += (length + 3) & ~3
    return events


class TcmuNetlink:
    """A listener on the "config" group that can also send *_DONE replies.

    Every receive has a timeout; fileno() can be polled by a caller's own loop, then
    receive(0) takes what is there.
    """

    def __init__(self, family_id: int, group_id: int | None) -> None:
        self.family_id = family_id
        self._seq = 0
        self.sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_GENERIC,
        )
        try:
            self.sock.bind((0, 0))  # the kernel assigns the port id
            if group_id is not None:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group_id)
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[0]

    @classmethod
    def open(cls) -> TcmuNetlink:
        family_id, group_id = resolve()
        try:
            return cls(family_id, group_id)
        except OSError:  # stale cached ids (module reloaded): ask again
            return cls(*resolve(cached=False))

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TcmuNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def receive(self, timeout: float) -> list[TcmuEvent]:
        """Events that arrive within `timeout` seconds (all that are queued once the
        first arrives); [] on timeout. A finite timeout is required."""
        if not 0 <= timeout < float("inf"):
            raise ValueError("receive() needs a finite timeout >= 0")
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return []
        events: list[TcmuEvent] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # overrun: events were lost, keep going
                    continue
                raise
            events += decode(data, self.family_id)

    def _send(self, cmd: int, attrs: list[tuple[str, int | str]]) -> None:
        self._seq += 1
        self.sock.sendto(encode(self.family_id, cmd, attrs, self._seq, self.port), (0, 0))

    def reply(self, event: TcmuEvent, status: int = 0) -> None:
        """Send the *_DONE answer to an ADDED/REMOVED/RECONFIG event."""
        done = _DONE.get(event.cmd)
        if done is None or event.device_id is None:
            raise ValueError(f"event {event} expects no reply")
        self._send(
            done, [("TCMU_ATTR_CMD_STATUS", status), ("TCMU_ATTR_DEVICE_ID", event.device_id)]
        )

    def set_features(self, kern_cmd_reply: bool) -> None:
        """SET_FEATURES: turn module-wide reply mode on or off (needs CAP_NET_ADMIN).
        See the module docstring for why the runtime leaves it off."""
        self._send(GenlCmd.SET_FEATURES, [("TCMU_ATTR_SUPP_KERN_CMD_REPLY", int(kern_cmd_reply))])

    def pump(self, timeout: float, should_reply: Callable[[TcmuEvent], bool]) -> list[TcmuEvent]:
        """receive(timeout), answering status 0 to each event should_reply() accepts."""
        events = self.receive(timeout)
        for event in events:
            if event.cmd in _DONE and event.device_id is not None and should_reply(event):
                self.reply(event, 0)
        return events
