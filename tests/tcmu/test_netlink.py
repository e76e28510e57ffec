"""tcmu.netlink without target_core_user: a second netlink socket plays the kernel by
sending TCM-USER messages straight to the listener's port."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from pyroute2.netlink import NETLINK_GENERIC

from tcmu import netlink as nlmod
from tcmu.netlink import GenlCmd, TcmuEvent, TcmuGenlMsg, TcmuNetlink

FAMILY_ID = 0x7FF0  # no such family: replies the test sends get an error ack, ignored


@pytest.fixture
def listener() -> Iterator[TcmuNetlink]:
    with TcmuNetlink(FAMILY_ID, None) as nl:
        yield nl


@pytest.fixture
def kernel() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    sock.bind((0, 0))
    yield sock
    sock.close()


def added(name: str = "tcm-user/1/d/harness/x", minor: int = 3, dev_id: int = 7) -> bytes:
    return nlmod.encode(FAMILY_ID, GenlCmd.ADDED_DEVICE, [
        ("TCMU_ATTR_DEVICE", name), ("TCMU_ATTR_MINOR", minor), ("TCMU_ATTR_DEVICE_ID", dev_id),
    ])


def test_decode_all_attributes() -> None:
    data = nlmod.encode(FAMILY_ID, GenlCmd.RECONFIG_DEVICE, [
        ("TCMU_ATTR_DEVICE", "tcm-user/1/d/harness/x"), ("TCMU_ATTR_MINOR", 3),
        ("TCMU_ATTR_DEVICE_ID", 7), ("TCMU_ATTR_DEV_SIZE", 1 << 40),
        ("TCMU_ATTR_WRITECACHE", 1), ("TCMU_ATTR_DEV_CFG", "harness/y"),
    ])
    assert nlmod.decode(data + added(), FAMILY_ID) == [
        TcmuEvent(GenlCmd.RECONFIG_DEVICE, "tcm-user/1/d/harness/x", 3, 7, "harness/y", 1 << 40,
                  1),
        TcmuEvent(GenlCmd.ADDED_DEVICE, "tcm-user/1/d/harness/x", 3, 7),
    ]
    assert nlmod.decode(data, FAMILY_ID + 1) == []  # another family's message


def test_receive_events_sent_to_the_listener(listener: TcmuNetlink, kernel: socket.socket) -> None:
    kernel.sendto(added(minor=1), (listener.port, 0))
    kernel.sendto(added(minor=2), (listener.port, 0))
    time.sleep(0.05)
    events = listener.receive(1.0)
    assert [e.minor for e in events] == [1, 2]
    assert listener.receive(0) == []


def test_receive_times_out(listener: TcmuNetlink) -> None:
    t0 = time.monotonic()
    assert listener.receive(0.1) == []
    assert 0.09 <= time.monotonic() - t0 < 1.0
    with pytest.raises(ValueError):
        listener.receive(float("inf"))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[int, int]]] = []

    def sendto(self, data: bytes, addr: tuple[int, int]) -> None:
        self.sent.append((data, addr))


def decoded(data: bytes) -> TcmuGenlMsg:
    msg = TcmuGenlMsg(data)
    msg.decode()
    return msg


def test_reply_is_the_matching_done_with_status_and_device_id(listener: TcmuNetlink) -> None:
    real, rec = listener.sock, Recorder()
    listener.sock = rec  # type: ignore[assignment]
    try:
        listener.reply(TcmuEvent(GenlCmd.REMOVED_DEVICE, "n", 3, 42), 0)
        listener.set_features(False)
    finally:
        listener.sock = real
    (done, addr), (features, _) = rec.sent
    assert addr == (0, 0)  # to the kernel
    msg = decoded(done)
    assert msg["header"]["type"] == FAMILY_ID and msg["cmd"] == GenlCmd.REMOVED_DEVICE_DONE
    assert msg.get_attr("TCMU_ATTR_CMD_STATUS") == 0
    assert msg.get_attr("TCMU_ATTR_DEVICE_ID") == 42
    msg = decoded(features)
    assert msg["cmd"] == GenlCmd.SET_FEATURES
    assert msg.get_attr("TCMU_ATTR_SUPP_KERN_CMD_REPLY") == 0
    with pytest.raises(ValueError):
        listener.reply(TcmuEvent(GenlCmd.SET_FEATURES, None, None, None))


def test_pump_replies_to_accepted_events_only(listener: TcmuNetlink, kernel: socket.socket) -> None:
    kernel.sendto(added(minor=1, dev_id=11), (listener.port, 0))
    kernel.sendto(added(minor=2, dev_id=12), (listener.port, 0))
    time.sleep(0.05)
    real, rec = listener.sock, Recorder()
    events = []
    try:
        # receive with the real socket, then reply through the recorder
        events = listener.receive(1.0)
        listener.sock = rec  # type: ignore[assignment]
        for e in events:
            if e.minor == 2:
                listener.reply(e)
    finally:
        listener.sock = real
    assert [decoded(d).get_attr("TCMU_ATTR_DEVICE_ID") for d, _ in rec.sent] == [12]
    kernel.sendto(added(minor=2, dev_id=12), (listener.port, 0))
    time.sleep(0.05)
    # a real reply to a family the kernel does not know draws an error ack: skipped
    assert [e.minor for e in listener.pump(1.0, lambda e: e.minor == 2)] == [2]
    assert listener.receive(0.2) == []


def test_resolve_without_the_module_says_what_to_load() -> None:
    try:
        family, group = nlmod.resolve()
    except nlmod.NetlinkUnavailable as e:
        assert "load target_core_user" in str(e)
    else:
        assert family > 0 and group > 0
