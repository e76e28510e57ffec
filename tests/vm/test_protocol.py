"""vm/protocol.py: frame encoding and the incremental decoder. Pure, no I/O."""

from __future__ import annotations

import struct

import pytest

from tcmu_harness.vm import protocol
from tcmu_harness.vm.protocol import MAX_FRAME, FrameDecoder, ProtocolError


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_encode_is_a_big_endian_length_then_compact_json() -> None:
    assert protocol.encode({"a": 1, "b": [True, None]}) == frame(b'{"a":1,"b":[true,null]}')


def test_bytes_travel_as_base64_objects() -> None:
    assert protocol.encode({"data": b"\x00\xff"}) == frame(b'{"data":{"$b":"AP8="}}')


def test_round_trip_with_nested_bytes() -> None:
    message = {
        "id": 7,
        "ok": True,
        "result": {
            "stdout": b"out\n",
            "nested": [b"", {"deep": b"\x00\x01\xfe\xff"}, "text", 1.5],
            "bytearray": bytearray(b"ba"),
            "memoryview": memoryview(b"mv"),
            "empty": {},
        },
    }
    decoded = list(FrameDecoder().feed(protocol.encode(message)))
    assert decoded == [
        {
            "id": 7,
            "ok": True,
            "result": {
                "stdout": b"out\n",
                "nested": [b"", {"deep": b"\x00\x01\xfe\xff"}, "text", 1.5],
                "bytearray": b"ba",
                "memoryview": b"mv",
                "empty": {},
            },
        }
    ]
    assert type(decoded[0]["result"]["stdout"]) is bytes


def test_an_object_with_more_keys_than_b_stays_an_object() -> None:
    message = {"x": {"$b": "AA==", "other": 1}}
    assert list(FrameDecoder().feed(protocol.encode(message))) == [message]


def test_unencodable_values_are_refused_by_type_name() -> None:
    with pytest.raises(TypeError) as info:
        protocol.encode({"x": {1, 2}})
    assert str(info.value) == "set cannot be sent to/from the guest agent"


def test_a_frame_fed_one_byte_at_a_time() -> None:
    data = protocol.encode(protocol.success(3, {"blob": b"\x01\x02\x03"}))
    decoder = FrameDecoder()
    for i, byte in enumerate(data[:-1]):
        assert list(decoder.feed(bytes([byte]))) == []
        assert decoder.pending == i + 1
    assert list(decoder.feed(data[-1:])) == [
        {"id": 3, "ok": True, "result": {"blob": b"\x01\x02\x03"}}
    ]
    assert decoder.pending == 0


def test_several_frames_in_one_chunk_and_a_partial_tail() -> None:
    messages = [
        protocol.hello(kernel="6.1.0"),
        protocol.event(1, "stdout", b"partial"),
        protocol.success(1, None),
        protocol.failure(2, "OSError", "no such file", "Traceback ..."),
    ]
    chunk = b"".join(protocol.encode(m) for m in messages)
    tail = protocol.encode(protocol.request(9, "ping", {}))
    decoder = FrameDecoder()
    assert list(decoder.feed(chunk + tail[:6])) == [
        {"hello": {"version": 1, "kernel": "6.1.0"}},
        {"id": 1, "event": "stdout", "data": b"partial"},
        {"id": 1, "ok": True, "result": None},
        {
            "id": 2,
            "ok": False,
            "error": {"type": "OSError", "message": "no such file", "traceback": "Traceback ..."},
        },
    ]
    assert decoder.pending == 6
    assert list(decoder.feed(tail[6:])) == [{"id": 9, "op": "ping", "args": {}}]
    assert decoder.pending == 0


def test_a_chunk_ending_inside_the_next_length_prefix() -> None:
    first, second = protocol.encode({"n": 1}), protocol.encode({"n": 2})
    decoder = FrameDecoder()
    assert list(decoder.feed(first + second[:2])) == [{"n": 1}]
    assert decoder.pending == 2
    assert list(decoder.feed(second[2:])) == [{"n": 2}]
    assert decoder.pending == 0


def test_an_empty_feed_yields_nothing() -> None:
    decoder = FrameDecoder()
    assert list(decoder.feed(b"")) == []
    assert decoder.pending == 0


def test_a_length_above_max_frame_is_garbage() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        list(decoder.feed(struct.pack(">I", MAX_FRAME + 1) + b"{}"))
    assert str(info.value) == f"frame length {MAX_FRAME + 1} exceeds {MAX_FRAME}"


def test_a_length_of_exactly_max_frame_waits_for_its_body() -> None:
    decoder = FrameDecoder()
    assert list(decoder.feed(struct.pack(">I", MAX_FRAME) + b"{")) == []
    assert decoder.pending == 5


def test_garbage_length_is_detected_from_the_four_length_bytes_alone() -> None:
    decoder = FrameDecoder()
    assert list(decoder.feed(b"HTT")) == []
    with pytest.raises(ProtocolError) as info:
        list(decoder.feed(b"P/1.1 200 OK"))
    assert str(info.value) == f"frame length {0x48545450} exceeds {MAX_FRAME}"


def test_a_body_that_is_not_json() -> None:
    with pytest.raises(ProtocolError) as info:
        list(FrameDecoder().feed(frame(b"{nope")))
    assert str(info.value) == (
        "frame is not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    )


def test_a_body_that_is_not_utf8() -> None:
    with pytest.raises(ProtocolError) as info:
        list(FrameDecoder().feed(frame(b'{"a":"\xff"}')))
    assert str(info.value) == (
        "frame is not JSON: 'utf-8' codec can't decode byte 0xff in position 6: invalid start byte"
    )


@pytest.mark.parametrize("body", [b"[1,2]", b'"text"', b"42", b"null", b"true"])
def test_a_body_that_is_not_an_object(body: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        list(FrameDecoder().feed(frame(body)))
    assert str(info.value) == "frame is not a JSON object"


def test_frames_before_a_bad_one_are_still_delivered() -> None:
    decoder = FrameDecoder()
    received = []
    with pytest.raises(ProtocolError):
        for message in decoder.feed(protocol.encode({"n": 1}) + frame(b"[]")):
            received.append(message)
    assert received == [{"n": 1}]


def test_pending_after_a_truncated_frame() -> None:
    data = protocol.encode({"id": 1, "op": "run", "args": {"argv": ["true"]}})
    decoder = FrameDecoder()
    assert list(decoder.feed(data[:2])) == []
    assert decoder.pending == 2
    assert list(decoder.feed(data[2:-3])) == []
    assert decoder.pending == len(data) - 3


def test_message_builders() -> None:
    assert protocol.request(1, "run", {"argv": ["x"]}) == {
        "id": 1,
        "op": "run",
        "args": {"argv": ["x"]},
    }
    assert protocol.success(2, [1]) == {"id": 2, "ok": True, "result": [1]}
    assert protocol.failure(3, "ValueError", "bad") == {
        "id": 3,
        "ok": False,
        "error": {"type": "ValueError", "message": "bad", "traceback": ""},
    }
    assert protocol.event(4, "stderr", b"e") == {"id": 4, "event": "stderr", "data": b"e"}
    assert protocol.hello(pid=5) == {"hello": {"version": protocol.PROTOCOL_VERSION, "pid": 5}}
    assert protocol.PROTOCOL_VERSION == 1
    assert protocol.PORT_NAME == "org.tcmu-harness.agent"
