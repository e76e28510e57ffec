"""Host side of the agent protocol: send requests over the VM's socket, wait for answers.

One reader thread owns the socket's receive side and hands each answer to the request
that waits for it; any number of threads may have requests in flight. Every wait is
bounded: a guest that stops answering raises AgentTimeout, a guest that is gone
(QEMU exited, kernel panic, socket closed) raises LostVMError, never a hang.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable
from typing import Any

from tcmu_harness.vm import protocol


class VMError(Exception):
    """Base of every error the VM layer raises; str() is a sentence for the user."""


class LostVMError(VMError):
    """The guest is gone or unreachable; the VM cannot be used any more."""


class AgentTimeout(LostVMError):
    """The guest did not answer a request in time; the VM is treated as hung."""


class AgentError(VMError):
    """A request failed inside the guest (the op raised); the VM itself is fine."""

    def __init__(self, op: str, exc_type: str, message: str, guest_traceback: str) -> None:
        super().__init__(f"guest {op} failed: {exc_type}: {message}")
        self.op = op
        self.exc_type = exc_type
        self.message = message
        self.guest_traceback = guest_traceback


class _Pending:
    __slots__ = ("callback_error", "done", "message", "on_event", "op")

    def __init__(self, op: str, on_event: Callable[[str, Any], None] | None) -> None:
        self.op = op
        self.on_event = on_event
        self.done = threading.Event()
        self.message: dict[str, Any] | None = None
        self.callback_error: BaseException | None = None


class AgentClient:
    def __init__(self, sock: socket.socket, describe_loss: Callable[[], str]) -> None:
        """`describe_loss` explains a lost connection (e.g. QEMU's exit status and the
        console tail); it is called once, when the stream ends unexpectedly."""
        self._sock = sock
        self._describe_loss = describe_loss
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._hello = threading.Event()
        self.hello: dict[str, Any] = {}
        self._lost: str | None = None
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, name="agent-reader", daemon=True)
        self._reader.start()

    # -- public ------------------------------------------------------------------

    def wait_hello(self, timeout: float) -> dict[str, Any]:
        if not self._hello.wait(timeout):
            self._raise_if_lost()
            raise AgentTimeout(f"the guest agent did not start within {timeout:.0f} s")
        self._raise_if_lost()
        return self.hello

    def request(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float,
        on_event: Callable[[str, Any], None] | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> Any:
        """Send one request and wait for its answer. `on_sent(request_id)` is called once
        the request is on the wire (to address it later, e.g. with `stdin`)."""
        req_id = next(self._ids)
        pending = _Pending(op, on_event)
        with self._lock:
            self._raise_if_lost()
            self._pending[req_id] = pending
        try:
            frame = protocol.encode(protocol.request(req_id, op, args or {}))
            with self._send_lock:
                self._sock.sendall(frame)
            if on_sent is not None:
                on_sent(req_id)
            if not pending.done.wait(timeout):
                raise AgentTimeout(
                    f"the guest did not answer {op} within {timeout:.1f} s; the VM is hung"
                )
        except OSError as exc:
            self._mark_lost(f"the connection to the guest failed: {exc}")
        finally:
            with self._lock:
                self._pending.pop(req_id, None)
        if pending.callback_error is not None:
            raise pending.callback_error
        message = pending.message
        if message is None:
            self._raise_if_lost()
            raise LostVMError(f"no answer to {op}")
        if not message["ok"]:
            err = message["error"]
            raise AgentError(op, err["type"], err["message"], err.get("traceback", ""))
        return message["result"]

    @property
    def lost(self) -> str | None:
        return self._lost

    def abandon(self, reason: str) -> None:
        """Treat the guest as gone (e.g. it stopped answering and QEMU was killed): every
        waiting and later request raises LostVMError(reason) at once."""
        self._mark_lost(reason)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=5)

    # -- reader ------------------------------------------------------------------

    def _read_loop(self) -> None:
        decoder = protocol.FrameDecoder()
        reason = "the guest closed the agent connection"
        try:
            while True:
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    break
                for message in decoder.feed(chunk):
                    self._deliver(message)
        except (OSError, protocol.ProtocolError) as exc:
            reason = f"the agent connection broke: {exc}"
        if not self._closing:
            try:
                reason = f"{reason}; {self._describe_loss()}"
            except Exception as exc:  # the description is best effort
                reason = f"{reason} (and describing it failed: {exc})"
        self._mark_lost(reason if not self._closing else "the VM was shut down")

    def _deliver(self, message: dict[str, Any]) -> None:
        if "hello" in message:
            self.hello = message["hello"]
            self._hello.set()
            return
        with self._lock:
            pending = self._pending.get(message.get("id", -1))
        if pending is None:
            return  # answer to a request that already timed out
        if "event" in message:
            if pending.on_event is not None and pending.callback_error is None:
                try:
                    pending.on_event(message["event"], message.get("data"))
                except Exception as exc:  # the caller's bug: fail its request, not the VM
                    pending.callback_error = exc
                    pending.done.set()
            return
        pending.message = message
        pending.done.set()

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self._lost is None:
                self._lost = reason
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.done.set()
        self._hello.set()

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise LostVMError(self._lost)
