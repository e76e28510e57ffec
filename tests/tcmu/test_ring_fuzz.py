"""tcmu.ring against malformed entries from a fake mailbox (tests/tcmu/fakering.py): no
kernel writes them, but a runtime must neither crash on them nor corrupt its state or
the mapping. What it does instead (tcmu/ring.py's docstring):

    CMD entry with a bad iovec array, iovecs outside the data area, or a CDB outside
    the entry        completed at once with HARDWARE ERROR 44/00, never handed to the
                     handler; the commands around it go on normally
    TMR entry whose cmd_ids overrun it   skipped
    entry length 0 or past the ring's end, cmd_head beyond the ring   RingError, after
                     the commands before it were fetched (they still complete)
    PAD entries, wrapping, unknown ops   skipped / UNKNOWN_OP, as a kernel expects
"""

from __future__ import annotations

import pytest
from fakering import ALL_CAPS, CMDR_OFF, PAGE, FakeKernel
from hypothesis import given, settings
from hypothesis import strategies as st

from tcmu.handler import Command, Result
from tcmu.layout import CMD_REQ, ENTRY_HDR, IOV_ARRAY_OFF, IOVEC, MAILBOX, TMR_ENTRY, Op, TmrType
from tcmu.ring import Ring, RingError
from tcmu.sense import INTERNAL_FAILURE_SENSE

TUR = bytes(6)
READ_10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
CHECK_CONDITION = 0x02
_TAIL = MAILBOX.offset("cmd_tail")


def _field(name: str) -> tuple[int, object]:
    return CMD_REQ.offset(name), CMD_REQ.field_struct(name)


def _set(k: FakeKernel, cmd_id: int, name: str, value: int) -> None:
    offset, struct = _field(name)
    struct.pack_into(k.buf, CMDR_OFF + k.inflight[cmd_id].slot + offset, value)  # type: ignore[attr-defined]


def _set_iov(k: FakeKernel, cmd_id: int, index: int, base: int, length: int) -> None:
    pos = CMDR_OFF + k.inflight[cmd_id].slot + IOV_ARRAY_OFF + index * IOVEC.size
    IOVEC.struct.pack_into(k.buf, pos, base, length)


def _serve(ring: Ring, k: FakeKernel) -> list[int]:
    """Fetch, complete every command GOOD with data-in 0xEE, flush, reap: the cmd_ids the
    handler saw."""
    seen = []
    for item in ring.fetch():
        if isinstance(item, Command):
            seen.append(item.cmd_id)
            ring.complete(item, Result.good(b"\xee" * len(item.iov)))
    ring.flush()
    k.reap()
    return seen


def _refused(k: FakeKernel, cmd_id: int) -> bool:
    """The latest completion of `cmd_id` (ids are reused) is 44/00."""
    done = [c for c in k.completions if c.cmd_id == cmd_id][-1:]
    return (len(done) == 1 and done[0].status == CHECK_CONDITION
            and done[0].sense[: len(INTERNAL_FAILURE_SENSE)] == INTERNAL_FAILURE_SENSE)


# (what is wrong, how to make it wrong on a queued READ(10) with one iovec)
MALFORMED_COMMANDS = {
    "iov_cnt past the entry": lambda k, c: _set(k, c, "iov_cnt", 1000),
    "iov_cnt 2**32-1": lambda k, c: _set(k, c, "iov_cnt", 0xFFFFFFFF),
    "bidi count past the entry": lambda k, c: _set(k, c, "iov_bidi_cnt", 7),
    "iovec into the mailbox": lambda k, c: _set_iov(k, c, 0, 0, PAGE),
    "iovec into the command ring": lambda k, c: _set_iov(k, c, 0, CMDR_OFF + 64, 64),
    "iovec past the mapping": lambda k, c: _set_iov(k, c, 0, len(k.buf) - 8, 16),
    "iovec of 2**64-1 bytes": lambda k, c: _set_iov(k, c, 0, k.data_off, 2**64 - 1),
    "cdb_off 0": lambda k, c: _set(k, c, "cdb_off", 0),
    "cdb_off past the mapping": lambda k, c: _set(k, c, "cdb_off", len(k.buf) + 4096),
    "cdb_off in the data area": lambda k, c: _set(k, c, "cdb_off", k.data_off),
    "cdb_off at the entry's last byte": lambda k, c: _set(
        k, c, "cdb_off", CMDR_OFF + k.inflight[c].slot + 127),
}


@pytest.mark.parametrize("ooo", [True, False], ids=["ooo", "in-order"])
@pytest.mark.parametrize("wrong", list(MALFORMED_COMMANDS))
def test_a_malformed_command_is_refused_and_its_neighbours_complete(wrong: str, ooo: bool
                                                                    ) -> None:
    k = FakeKernel(flags=ALL_CAPS if ooo else 0)
    ring = Ring(k.buf)
    before = k.queue_cmd(TUR)
    bad = k.queue_cmd(READ_10, data_in=PAGE)
    after = k.queue_cmd(READ_10, data_in=PAGE)
    mailbox = bytes(k.buf[:CMDR_OFF])
    MALFORMED_COMMANDS[wrong](k, bad)
    assert _serve(ring, k) == [before, after]
    assert _refused(k, bad), k.completions
    # (out of order, the refusal, ready first, fills the slot at the tail)
    assert sorted(c.cmd_id for c in k.completions) == [before, bad, after]
    assert not k.broken and k.tail == k.head and not k.inflight
    assert bytes(k.buf[:_TAIL]) == mailbox[:_TAIL]  # no data-in landed in the mailbox
    # the ring goes on serving
    again = k.queue_cmd(TUR)
    assert _serve(ring, k) == [again] and not k.broken


def test_a_variable_length_cdb_running_past_its_entry_is_refused() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    cdb = bytes([0x7F, 0, 0, 0, 0, 0, 0, 24]) + bytes(24)  # 32 bytes, as queued
    bad = k.queue_cmd(cdb)
    offset, struct = _field("cdb_off")
    cdb_off = struct.unpack_from(k.buf, CMDR_OFF + k.inflight[bad].slot + offset)[0]  # type: ignore[attr-defined]
    k.buf[cdb_off + 7] = 0xF8  # ADDITIONAL CDB LENGTH 248: 256 bytes, past the entry
    assert _serve(ring, k) == [] and _refused(k, bad) and not k.broken


def test_a_tmr_whose_cmd_ids_overrun_it_is_skipped() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    pos = k.queue_tmr(TmrType.ABORT_TASK, [1])
    TMR_ENTRY.field_struct("cmd_cnt").pack_into(
        k.buf, CMDR_OFF + pos + TMR_ENTRY.offset("cmd_cnt"), 5000)
    after = k.queue_cmd(TUR)
    assert _serve(ring, k) == [after]
    assert k.tail == k.head and not k.broken


@pytest.mark.parametrize("length", [0, 1 << 20], ids=["zero", "past-the-end"])
def test_an_unwalkable_entry_raises_after_the_commands_before_it(length: int) -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    first = k.queue_cmd(TUR)
    bad = k.queue_cmd(TUR)
    ENTRY_HDR.struct.pack_into(k.buf, CMDR_OFF + k.inflight[bad].slot, length | Op.CMD, bad,
                               0, 0)
    (cmd,) = ring.fetch()  # the good one first
    assert cmd.cmd_id == first
    with pytest.raises(RingError, match="corrupt ring entry at 120"):
        ring.fetch()
    ring.complete(cmd, Result.good())  # what was fetched still completes
    assert ring.flush() and k.tail == 120
    assert [c.cmd_id for c in k.reap()] == [first]
    with pytest.raises(RingError):  # and stays refused, without re-fetching the first
        ring.fetch()


def test_cmd_head_beyond_the_ring_raises_and_changes_nothing() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    cmd_id = k.queue_cmd(TUR)
    good_head = k.head
    MAILBOX.field_struct("cmd_head").pack_into(k.buf, MAILBOX.offset("cmd_head"),
                                               k.cmdr_size + 8)
    with pytest.raises(RingError, match="beyond"):
        ring.fetch()
    k.head = good_head
    assert _serve(ring, k) == [cmd_id] and not k.broken


def test_pad_then_a_malformed_command_at_the_wrap() -> None:
    k = FakeKernel(cmd_area=PAGE)  # a 3968-byte ring: 33 TURs of 120 bytes reach 3960
    ring = Ring(k.buf)
    for _ in range(33):
        k.queue_cmd(TUR)
        _serve(ring, k)
    bad = k.queue_cmd(READ_10, data_in=PAGE)  # PAD of 8 bytes, then at position 0
    assert k.inflight[bad].slot == 0
    _set_iov(k, bad, 0, 0, 8)
    after = k.queue_cmd(TUR)
    assert _serve(ring, k) == [after]
    assert _refused(k, bad) and not k.broken and k.tail == k.head == 128 + 120


@st.composite
def _garbage(draw: st.DrawFn, size: int) -> list[tuple[int, bytes]]:
    """Up to 6 (offset, bytes) overwrites inside `size` bytes."""
    patches = []
    for _ in range(draw(st.integers(1, 6))):
        offset = draw(st.integers(0, size - 1))
        patches.append((offset, draw(st.binary(min_size=1, max_size=min(24, size - offset)))))
    return patches


@settings(max_examples=200, deadline=None)
@given(ooo=st.booleans(), data=st.data())
def test_random_overwrites_of_queued_entries_never_crash_or_escape_the_data_area(
    ooo: bool, data: st.DataObject
) -> None:
    """Whatever bytes replace parts of the queued entries: fetch() returns or raises
    RingError, nothing else; completing what it returned writes only inside the
    [tail, head) entries and the data area (the mailbox, apart from cmd_tail, and the
    rest of the ring stay as they were); and each command completes at most once."""
    k = FakeKernel(cmd_area=PAGE, data_pages=8, flags=ALL_CAPS if ooo else 0)
    ring = Ring(k.buf)
    for _ in range(data.draw(st.integers(0, 30))):  # move the tail somewhere, maybe wrap
        k.queue_cmd(TUR)
        _serve(ring, k)
    for cdb, length in data.draw(st.lists(st.sampled_from([(TUR, 0), (READ_10, PAGE),
                                                             (READ_10, 3 * PAGE)]),
                                          min_size=1, max_size=4)):
        try:
            k.queue_cmd(cdb, data_in=length)
        except Exception:
            break
    start, head = k.tail, k.head
    entries = (head - start) % k.cmdr_size
    for offset, chunk in data.draw(_garbage(entries)):
        for i, byte in enumerate(chunk):
            k.buf[CMDR_OFF + (start + offset + i) % k.cmdr_size] = byte
    snapshot = bytes(k.buf[: k.data_off])
    try:
        items = ring.fetch()
    except RingError:
        items = []
    seen = set()
    for item in items:
        if isinstance(item, Command):
            assert item.cmd_id not in seen
            seen.add(item.cmd_id)
            ring.complete(item, Result.good(b"\xee" * len(item.iov)))
    ring.flush()
    after = bytes(k.buf[: k.data_off])
    assert after[:_TAIL] == snapshot[:_TAIL]
    assert after[_TAIL + 4 : CMDR_OFF] == snapshot[_TAIL + 4 : CMDR_OFF]
    inside = {(start + i) % k.cmdr_size for i in range(entries)}
    changed = [i for i in range(k.cmdr_size)
               if after[CMDR_OFF + i] != snapshot[CMDR_OFF + i] and i not in inside]
    assert not changed, f"ring bytes outside the entries changed: {changed[:8]}"
