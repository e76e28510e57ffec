"""A VM that stays up between test sessions, for the developer's inner loop.

    tcmu-harness vm up [--kernel SPEC ...]         boot it; the keeper process owns it
    pytest --tcmu-vm-attach suites/...             sessions use it instead of booting
    tcmu-harness vm status | vm down

The keeper is a background process that boots one VirtualMachine and relays agent
requests to it from one client at a time over a private unix socket (0600 in a 0700
directory under the cache dir). The relay speaks the agent's own framing
(vm/protocol.py): on connect the client gets a hello (the guest's, plus the VM's
identity), then its requests are answered as the guest answers them, events included;
request ids are the client's own (the keeper maps `stdin` targets to its ids).

What stays in the guest between sessions is the client's to clean up (fixtures/lun.py
removes configfs leftovers at session start). A client that loses the guest (it hung or
panicked) is disconnected; the keeper then powers the VM off and exits, and the next
attach says so: run `tcmu-harness vm up` again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tcmu_harness.vm import protocol
from tcmu_harness.vm.client import AgentError, LostVMError, VMError
from tcmu_harness.vm.config import VmConfig
from tcmu_harness.vm.machine import VirtualMachine

STATE_FILE = "keeper.json"
SOCKET_FILE = "keeper.sock"
LOG_FILE = "keeper.log"
# The client enforces its own request timeouts; the keeper only bounds a forgotten one.
RELAY_TIMEOUT = 24 * 3600.0
REFUSED_OPS = frozenset({"poweroff"})  # the keeper's VM is powered off by `vm down` only


class KeeperError(VMError):
    """No kept VM to attach to, or it is busy or gone; str() says what to do."""


def keeper_dir(cache_dir: Path) -> Path:
    """Where the keeper's state and socket live: $TCMU_HARNESS_KEEPER_DIR (tests use
    their own), else a folder of the cache dir."""
    return Path(os.environ.get("TCMU_HARNESS_KEEPER_DIR") or cache_dir / "keeper")


def read_state(cache_dir: Path) -> dict[str, Any] | None:
    """The running keeper's state, or None (none started, or its process is gone)."""
    path = keeper_dir(cache_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass
    return state


class _Relay:
    """One client connection: its requests go to the VM, the answers come back."""

    def __init__(self, vm: VirtualMachine, conn: socket.socket) -> None:
        self.vm = vm
        self.conn = conn
        self.send_lock = threading.Lock()
        self.ids: dict[int, int] = {}  # the client's request id -> the keeper's

    def send(self, message: dict[str, Any]) -> None:
        with self.send_lock, contextlib.suppress(OSError):
            self.conn.sendall(protocol.encode(message))

    def serve(self, hello: dict[str, Any]) -> None:
        self.send({"hello": hello})
        decoder = protocol.FrameDecoder()
        with contextlib.suppress(OSError, protocol.ProtocolError):
            while chunk := self.conn.recv(1 << 20):
                for message in decoder.feed(chunk):
                    threading.Thread(target=self.answer, args=(message,), daemon=True).start()

    def answer(self, message: dict[str, Any]) -> None:
        rid, op, args = message.get("id", 0), message.get("op", ""), message.get("args", {})
        if op in REFUSED_OPS:
            self.send({"id": rid, "ok": False, "error": {
                "type": "KeeperError", "message": f"{op} is refused on a kept VM; use "
                "tcmu-harness vm down", "traceback": ""}})
            return
        if op == "stdin" and "target" in args:
            args = {**args, "target": self.ids.get(args["target"], -1)}
        try:
            result = self.vm._request(  # the relay is the VM's own request path
                op, args, timeout=RELAY_TIMEOUT,
                on_event=lambda name, data: self.send({"id": rid, "event": name, "data": data}),
                on_sent=lambda own: self.ids.__setitem__(rid, own))  # fmt: skip
        except AgentError as exc:
            self.send({"id": rid, "ok": False, "error": {
                "type": exc.exc_type, "message": exc.message,
                "traceback": exc.guest_traceback}})  # fmt: skip
        except VMError:  # the guest is gone: the client sees its connection end
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)
        else:
            self.send({"id": rid, "ok": True, "result": result})
        finally:
            self.ids.pop(rid, None)


def _identity(vm: VirtualMachine, directory: Path) -> dict[str, Any]:
    kernel = vm.kernel
    assert kernel is not None
    return {
        "pid": os.getpid(),
        "socket": str(directory / SOCKET_FILE),
        "kernel": {"version": kernel.version, "image": str(kernel.image),
                   "modules_dir": str(kernel.modules_dir), "source": kernel.source},
        "accel": vm.accel, "accel_reason": vm.accel_reason,
        "console_log": str(vm.console_log) if vm.console_log else "",
        "share_dir": str(vm.share_dir),
        "boot": vm.timings.summary() if vm.timings else "",
        "started": time.time(),
    }  # fmt: skip


def serve(config: VmConfig) -> int:
    """The keeper process: boot, publish the state file, relay until SIGTERM or loss."""
    directory = keeper_dir(config.cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    state_path, sock_path = directory / STATE_FILE, directory / SOCKET_FILE
    with VirtualMachine(config, log=lambda m: print(m, flush=True), name="kept") as vm:
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        os.chmod(sock_path, 0o600)
        listener.listen(1)
        listener.settimeout(0.5)
        identity = _identity(vm, directory)
        state_path.write_text(json.dumps(identity, indent=1) + "\n")
        print(f"kept VM up: {json.dumps(identity)}", flush=True)
        try:
            while not stopping.is_set() and vm.lost is None:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                _serve_client(vm, conn, identity)
        finally:
            listener.close()
            sock_path.unlink(missing_ok=True)
            state_path.unlink(missing_ok=True)
        reason = vm.lost or "vm down"
    print(f"kept VM stopped: {reason}", flush=True)
    return 0


def _serve_client(vm: VirtualMachine, conn: socket.socket, identity: dict[str, Any]) -> None:
    conn.settimeout(None)
    relay = _Relay(vm, conn)
    try:
        vm.ping()  # a guest hung by the previous client is found here, not by this one
    except VMError as exc:
        relay.send({"hello": {"error": f"the kept VM is gone ({exc}); run tcmu-harness "
                                       "vm down, then vm up"}})  # fmt: skip
        conn.close()
        return
    print(f"client attached ({time.strftime('%H:%M:%S')})", flush=True)
    relay.serve({**vm._agent.hello, "keeper": identity})
    conn.close()
    print(f"client detached ({time.strftime('%H:%M:%S')})", flush=True)


def main(argv: list[str]) -> int:
    """python -m tcmu_harness.vm.keeper CONFIG_JSON: the process `tcmu-harness vm up` starts."""
    fields = json.loads(argv[0])
    fields["cache_dir"] = Path(fields["cache_dir"])
    if fields.get("log_dir"):
        fields["log_dir"] = Path(fields["log_dir"])
    fields["guest_warmup"] = tuple(fields.get("guest_warmup", ()))
    config = VmConfig(**fields)
    try:
        return serve(config)
    except (VMError, LostVMError, OSError) as exc:
        print(f"the kept VM could not start: {exc}", flush=True)
        return 1


def config_json(config: VmConfig) -> str:
    """A VmConfig as main() reads it back."""
    fields = dataclasses.asdict(config)
    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items()})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
