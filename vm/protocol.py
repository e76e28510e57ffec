"""The host <-> guest agent protocol: framing and message shapes. Pure; no I/O.

Transport: one virtio-serial port (guest /dev/vportNpM named PORT_NAME, host side a
unix socket). Both directions carry frames:

    frame   = length (u32, big-endian) + body (UTF-8 JSON object, `length` bytes)
    bytes   = {"$b": "<base64>"}  anywhere in a body (JSON has no bytes)

Messages:
    guest -> host, once at start:  {"hello": {"version": 1, "kernel": <uname -r>, ...}}
    host -> guest, request:        {"id": N, "op": <op>, "args": {...}}
    guest -> host, progress:       {"id": N, "event": <name>, "data": ...}   (0..many)
    guest -> host, final answer:   {"id": N, "ok": true, "result": ...}
                                   {"id": N, "ok": false, "error": {"type", "message",
                                                                    "traceback"}}

Ops (see vm/agent.py): ping, run, read_file, write_file, kmsg, call, poweroff.
Requests may overlap: the guest answers in any order, matched by id.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

PROTOCOL_VERSION = 1
PORT_NAME = "org.tcmu-harness.agent"
MAX_FRAME = 256 << 20  # a larger length can only be garbage on the wire

_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """The byte stream is not a valid frame sequence (corrupt or not our peer)."""


def _default(obj: object) -> object:
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(obj).decode("ascii")}
    raise TypeError(f"{type(obj).__name__} cannot be sent to/from the guest agent")


def _object_hook(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and "$b" in obj:
        return base64.b64decode(obj["$b"])
    return obj


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, default=_default, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes exceeds the {MAX_FRAME} frame limit")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed() it whatever the transport delivered."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        self._buf += data
        while len(self._buf) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buf)
            if length > MAX_FRAME:
                raise ProtocolError(f"frame length {length} exceeds {MAX_FRAME}")
            end = _LENGTH.size + length
            if len(self._buf) < end:
                return
            body = bytes(self._buf[_LENGTH.size : end])
            del self._buf[:end]
            try:
                message = json.loads(body, object_hook=_object_hook)
            except ValueError as exc:
                raise ProtocolError(f"frame is not JSON: {exc}") from None
            if not isinstance(message, dict):
                raise ProtocolError("frame is not a JSON object")
            yield message

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (non-zero at EOF means a truncated stream)."""
        return len(self._buf)


def request(req_id: int, op: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": req_id, "op": op, "args": args}


def success(req_id: int, result: object) -> dict[str, Any]:
    return {"id": req_id, "ok": True, "result": result}


def failure(req_id: int, exc_type: str, message: str, traceback: str = "") -> dict[str, Any]:
    return {
        "id": req_id,
        "ok": False,
        "error": {"type": exc_type, "message": message, "traceback": traceback},
    }


def event(req_id: int, name: str, data: object) -> dict[str, Any]:
    return {"id": req_id, "event": name, "data": data}


def hello(**info: object) -> dict[str, Any]:
    return {"hello": {"version": PROTOCOL_VERSION, **info}}
