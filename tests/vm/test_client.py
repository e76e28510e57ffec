"""vm/client.py: AgentClient against a fake guest agent on the other end of a socketpair."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tcmu_harness.vm import protocol
from tcmu_harness.vm.client import AgentClient, AgentError, AgentTimeout, LostVMError, VMError

LOSS = "QEMU exited with status 1; console tail: Kernel panic - not syncing"

Handler = Callable[["FakeAgent", dict[str, Any]], None]


class FakeAgent:
    """The guest end: a thread that reads request frames and lets `handler` answer."""

    def __init__(self, sock: socket.socket, handler: Handler, hello: bool = True) -> None:
        self.sock = sock
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self._send_lock = threading.Lock()
        if hello:
            self.send(protocol.hello(kernel="6.1.0-test", pid=1))
        self.thread = threading.Thread(target=self._loop, name="fake-agent", daemon=True)
        self.thread.start()

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self.sock.sendall(protocol.encode(message))

    def hang_up(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)

    def _loop(self) -> None:
        decoder = protocol.FrameDecoder()
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            for message in decoder.feed(chunk):
                self.requests.append(message)
                self.handler(self, message)


def echo(agent: FakeAgent, message: dict[str, Any]) -> None:
    agent.send(protocol.success(message["id"], {"op": message["op"], "args": message["args"]}))


def silent(agent: FakeAgent, message: dict[str, Any]) -> None:
    pass


class Loss:
    def __init__(self, text: str = LOSS) -> None:
        self.text = text
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.text


class Rig:
    def __init__(self) -> None:
        self.host, self.guest = socket.socketpair()
        self.loss = Loss()
        self.client: AgentClient | None = None
        self.agent: FakeAgent | None = None

    def start(self, handler: Handler = echo, hello: bool = True) -> AgentClient:
        self.agent = FakeAgent(self.guest, handler, hello)
        self.client = AgentClient(self.host, self.loss)
        return self.client

    @property
    def fake(self) -> FakeAgent:
        assert self.agent is not None
        return self.agent

    def finish(self) -> None:
        if self.client is not None:
            self.client.close()
        self.guest.close()
        if self.agent is not None:
            self.agent.thread.join(timeout=2)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.finish()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run fn in a thread; the dict gets "result" or "error"."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# -- hello ---------------------------------------------------------------------------


def test_wait_hello_returns_the_guest_info(rig: Rig) -> None:
    client = rig.start()
    assert client.wait_hello(2) == {"version": 1, "kernel": "6.1.0-test", "pid": 1}
    assert client.hello == {"version": 1, "kernel": "6.1.0-test", "pid": 1}


def test_wait_hello_times_out_when_the_agent_never_starts(rig: Rig) -> None:
    client = rig.start(hello=False)
    start = time.monotonic()
    with pytest.raises(AgentTimeout) as info:
        client.wait_hello(0.6)
    assert 0.55 <= time.monotonic() - start < 2
    assert str(info.value) == "the guest agent did not start within 1 s"
    assert isinstance(info.value, LostVMError)
    assert client.lost is None


def test_wait_hello_raises_lost_vm_when_the_guest_dies_before_hello(rig: Rig) -> None:
    client = rig.start(hello=False)
    rig.fake.hang_up()
    start = time.monotonic()
    with pytest.raises(LostVMError) as info:
        client.wait_hello(10)
    assert time.monotonic() - start < 2
    assert type(info.value) is LostVMError
    assert str(info.value) == f"the guest closed the agent connection; {LOSS}"


# -- answers ---------------------------------------------------------------------------


def test_success_returns_the_result_and_sends_the_request_frame(rig: Rig) -> None:
    client = rig.start()
    assert client.request("run", {"argv": ["true"], "input": b"\x00"}, timeout=2) == {
        "op": "run",
        "args": {"argv": ["true"], "input": b"\x00"},
    }
    assert client.request("ping", timeout=2) == {"op": "ping", "args": {}}
    assert rig.fake.requests == [
        {"id": 1, "op": "run", "args": {"argv": ["true"], "input": b"\x00"}},
        {"id": 2, "op": "ping", "args": {}},
    ]


def test_a_guest_failure_is_an_agent_error_with_type_message_and_traceback(rig: Rig) -> None:
    def fail(agent: FakeAgent, message: dict[str, Any]) -> None:
        if message["op"] != "read_file":
            echo(agent, message)
            return
        agent.send(
            protocol.failure(
                message["id"],
                "FileNotFoundError",
                "[Errno 2] No such file or directory: '/nope'",
                "Traceback (most recent call last):\n  ...\nFileNotFoundError\n",
            )
        )

    client = rig.start(fail)
    with pytest.raises(AgentError) as info:
        client.request("read_file", {"path": "/nope"}, timeout=2)
    err = info.value
    assert str(err) == (
        "guest read_file failed: FileNotFoundError: [Errno 2] No such file or directory: '/nope'"
    )
    assert err.op == "read_file"
    assert err.exc_type == "FileNotFoundError"
    assert err.message == "[Errno 2] No such file or directory: '/nope'"
    assert err.guest_traceback == "Traceback (most recent call last):\n  ...\nFileNotFoundError\n"
    assert isinstance(err, VMError)
    assert not isinstance(err, LostVMError)
    # the VM is fine after a failed op
    assert client.lost is None
    assert client.request("ping", timeout=2) == {"op": "ping", "args": {}}


def test_agent_error_without_traceback_field(rig: Rig) -> None:
    def fail(agent: FakeAgent, message: dict[str, Any]) -> None:
        agent.send(
            {"id": message["id"], "ok": False, "error": {"type": "KeyError", "message": "'x'"}}
        )

    client = rig.start(fail)
    with pytest.raises(AgentError) as info:
        client.request("call", timeout=2)
    assert (info.value.exc_type, info.value.message, info.value.guest_traceback) == (
        "KeyError",
        "'x'",
        "",
    )


def test_events_reach_on_event_before_the_final_answer(rig: Rig) -> None:
    def stream(agent: FakeAgent, message: dict[str, Any]) -> None:
        agent.send(protocol.event(message["id"], "stdout", b"one\n"))
        agent.send(protocol.event(message["id"], "stderr", b"two\n"))
        agent.send(protocol.event(message["id"], "stdout", b"three\n"))
        agent.send(protocol.success(message["id"], "done"))

    client = rig.start(stream)
    seen: list[tuple[str, Any]] = []
    result = client.request("run", timeout=2, on_event=lambda name, data: seen.append((name, data)))
    seen.append(("result", result))
    assert seen == [
        ("stdout", b"one\n"),
        ("stderr", b"two\n"),
        ("stdout", b"three\n"),
        ("result", "done"),
    ]
    # without a callback the events are dropped and the answer still arrives
    assert client.request("run", timeout=2) == "done"


def test_answers_out_of_order_reach_their_own_requests(rig: Rig) -> None:
    held: list[dict[str, Any]] = []
    answered: list[int] = []

    def reverse(agent: FakeAgent, message: dict[str, Any]) -> None:
        held.append(message)
        if len(held) == 2:
            for m in reversed(held):  # the later request is answered first
                answered.append(m["args"]["n"])
                agent.send(protocol.success(m["id"], m["args"]["n"] * 10))

    client = rig.start(reverse)
    first, first_out = in_thread(lambda: client.request("work", {"n": 1}, timeout=5))
    wait_for(lambda: len(held) == 1)
    second, second_out = in_thread(lambda: client.request("work", {"n": 2}, timeout=5))
    first.join(5)
    second.join(5)
    assert answered == [2, 1]
    assert first_out == {"result": 10}
    assert second_out == {"result": 20}


def test_answers_to_unknown_ids_are_ignored(rig: Rig) -> None:
    def noisy(agent: FakeAgent, message: dict[str, Any]) -> None:
        agent.send(protocol.success(999, "stray"))
        agent.send(protocol.event(998, "stdout", b"stray"))
        agent.send({"no": "id"})
        agent.send(protocol.success(message["id"], "mine"))

    client = rig.start(noisy)
    assert client.request("ping", timeout=2) == "mine"
    assert client.lost is None


# -- timeouts and loss ---------------------------------------------------------------


def test_a_request_timeout_names_the_op_and_the_seconds(rig: Rig) -> None:
    client = rig.start(silent)
    start = time.monotonic()
    with pytest.raises(AgentTimeout) as info:
        client.request("run", {"argv": ["sleep", "99"]}, timeout=0.3)
    assert 0.29 <= time.monotonic() - start < 2
    assert str(info.value) == "the guest did not answer run within 0.3 s; the VM is hung"
    assert isinstance(info.value, LostVMError)


def test_a_late_answer_after_a_timeout_is_dropped(rig: Rig) -> None:
    late: list[int] = []

    def slow_first(agent: FakeAgent, message: dict[str, Any]) -> None:
        if message["op"] == "slow":
            late.append(message["id"])
            return
        agent.send(protocol.success(late[0], "too late"))
        agent.send(protocol.success(message["id"], "fast"))

    client = rig.start(slow_first)
    with pytest.raises(AgentTimeout):
        client.request("slow", timeout=0.1)
    assert client.request("fast", timeout=2) == "fast"
    assert client.lost is None


def test_the_guest_closing_fails_waiting_requests_with_the_loss_description(rig: Rig) -> None:
    client = rig.start(silent)
    thread, out = in_thread(lambda: client.request("run", timeout=30))
    wait_for(lambda: len(rig.fake.requests) == 1)
    start = time.monotonic()
    rig.fake.hang_up()
    thread.join(5)
    assert time.monotonic() - start < 2
    error = out["error"]
    assert type(error) is LostVMError
    assert str(error) == f"the guest closed the agent connection; {LOSS}"
    assert client.lost == f"the guest closed the agent connection; {LOSS}"
    assert rig.loss.calls == 1


def test_requests_after_the_loss_fail_at_once(rig: Rig) -> None:
    client = rig.start(echo)
    client.wait_hello(2)
    rig.fake.hang_up()
    wait_for(lambda: client.lost is not None)
    for _ in range(3):
        start = time.monotonic()
        with pytest.raises(LostVMError) as info:
            client.request("ping", timeout=30)
        assert time.monotonic() - start < 0.5
        assert type(info.value) is LostVMError
        assert str(info.value) == f"the guest closed the agent connection; {LOSS}"
    with pytest.raises(LostVMError) as hello_info:
        client.wait_hello(30)
    assert str(hello_info.value) == f"the guest closed the agent connection; {LOSS}"
    assert rig.fake.requests == []
    assert rig.loss.calls == 1


def test_garbage_from_the_guest_is_a_lost_vm(rig: Rig) -> None:
    def garbage(agent: FakeAgent, message: dict[str, Any]) -> None:
        agent.sock.sendall(b"\xff\xff\xff\xffjunk")

    client = rig.start(garbage)
    with pytest.raises(LostVMError) as info:
        client.request("ping", timeout=30)
    assert str(info.value) == (
        f"the agent connection broke: frame length 4294967295 exceeds {protocol.MAX_FRAME}; {LOSS}"
    )


def test_after_a_loss_nothing_more_is_sent_even_if_the_socket_is_open(rig: Rig) -> None:
    def garbage(agent: FakeAgent, message: dict[str, Any]) -> None:
        agent.sock.sendall(b"\x00\x00\x00\x02[]")  # valid frame, not an object

    client = rig.start(garbage)
    with pytest.raises(LostVMError):
        client.request("ping", timeout=30)
    start = time.monotonic()
    with pytest.raises(LostVMError) as info:
        client.request("run", timeout=30)
    assert time.monotonic() - start < 0.5
    assert str(info.value) == f"the agent connection broke: frame is not a JSON object; {LOSS}"
    time.sleep(0.05)
    assert [m["op"] for m in rig.fake.requests] == ["ping"]


def test_a_failing_describe_loss_is_reported_not_raised(rig: Rig) -> None:
    def broken() -> str:
        raise RuntimeError("console log unreadable")

    client = AgentClient(rig.host, broken)
    rig.client = client
    rig.guest.shutdown(socket.SHUT_RDWR)
    with pytest.raises(LostVMError) as info:
        client.wait_hello(5)
    assert str(info.value) == (
        "the guest closed the agent connection (and describing it failed: console log unreadable)"
    )


def test_a_send_failure_marks_the_vm_lost(rig: Rig) -> None:
    client = rig.start(silent)
    client.wait_hello(2)
    rig.host.shutdown(socket.SHUT_WR)  # our side can no longer send
    with pytest.raises(LostVMError) as info:
        client.request("ping", timeout=30)
    assert type(info.value) is LostVMError
    assert str(info.value) == "the connection to the guest failed: [Errno 32] Broken pipe"
    assert client.lost == "the connection to the guest failed: [Errno 32] Broken pipe"


def test_an_on_event_callback_that_raises_does_not_hang_the_request(rig: Rig) -> None:
    """BUG: the callback runs in the reader thread, and its exception kills that thread
    without marking the VM lost: this request waits its whole timeout and reports a
    "hung" VM, and every later request times out too."""

    def stream(agent: FakeAgent, message: dict[str, Any]) -> None:
        agent.send(protocol.event(message["id"], "stdout", b"x"))
        agent.send(protocol.success(message["id"], "done"))

    def explode(name: str, data: Any) -> None:
        raise ValueError("the log file is full")

    client = rig.start(stream)
    with pytest.raises(ValueError) as info:
        client.request("run", timeout=0.5, on_event=explode)
    assert str(info.value) == "the log file is full"
    assert client.request("ping", timeout=1.0) == "done"


def test_finished_requests_leave_nothing_behind(rig: Rig) -> None:
    def mixed(agent: FakeAgent, message: dict[str, Any]) -> None:
        if message["op"] == "fail":
            agent.send(protocol.failure(message["id"], "OSError", "x"))
        elif message["op"] != "hang":
            echo(agent, message)

    client = rig.start(mixed)
    client.request("ping", timeout=2)
    with pytest.raises(AgentError):
        client.request("fail", timeout=2)
    with pytest.raises(AgentTimeout):
        client.request("hang", timeout=0.05)
    assert client._pending == {}  # a long session must not accumulate state


# -- close -----------------------------------------------------------------------------


def test_close_releases_waiting_requests_and_is_repeatable(rig: Rig) -> None:
    client = rig.start(silent)
    client.wait_hello(2)
    thread, out = in_thread(lambda: client.request("run", timeout=30))
    wait_for(lambda: len(rig.fake.requests) == 1)
    start = time.monotonic()
    client.close()
    client.close()
    thread.join(5)
    assert time.monotonic() - start < 2
    assert type(out["error"]) is LostVMError
    assert str(out["error"]) == "the VM was shut down"
    assert client.lost == "the VM was shut down"
    assert rig.loss.calls == 0  # a deliberate close is not a loss to explain
    with pytest.raises(LostVMError) as info:
        client.request("ping", timeout=30)
    assert str(info.value) == "the VM was shut down"


def test_close_without_a_peer_answering_does_not_hang() -> None:
    host, guest = socket.socketpair()
    try:
        client = AgentClient(host, Loss())
        start = time.monotonic()
        client.close()
        client.close()
        assert time.monotonic() - start < 2
        assert client.lost == "the VM was shut down"
    finally:
        guest.close()
