"""tcmu.ring against a fake kernel that lays the ring out like target_core_user.c."""

from __future__ import annotations

import random

import pytest
from fakering import ALL_CAPS, CMDR_OFF, PAGE, Completion, FakeKernel, RingFull
from hypothesis import given, settings
from hypothesis import strategies as st

from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.layout import CMD_REQ, CMD_RSP, ENTRY_HDR, IOV_ARRAY_OFF, IOVEC, Cap, Op, TmrType, UFlag
from tcmu.ring import Ring, RingError, TmrNotice, UnsupportedResult

INQUIRY = bytes([0x12, 0, 0, 0, 36, 0])
READ_10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE_10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0])
TUR = bytes(6)
SENSE = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0])


def only_commands(items: list[Command | TmrNotice]) -> list[Command]:
    return [i for i in items if isinstance(i, Command)]


def test_mailbox_version_other_than_2_is_refused_naming_the_version() -> None:
    k = FakeKernel(version=1)
    with pytest.raises(RingError, match="version 1 "):
        Ring(k.buf)


def test_ring_outside_the_mapping_is_refused() -> None:
    k = FakeKernel()
    with pytest.raises(RingError, match="does not fit"):
        Ring(k.buf[: CMDR_OFF + 100])


def test_caps_are_exposed() -> None:
    r = Ring(FakeKernel(flags=int(Cap.READ_LEN | Cap.TMR)).buf)
    assert r.flags == Cap.READ_LEN | Cap.TMR
    assert not r.ooo and r.read_len_cap
    r = Ring(FakeKernel().buf)
    assert r.ooo and r.flags == ALL_CAPS


@pytest.mark.parametrize("backing", ["bytearray", "mmap"])
def test_command_is_decoded_and_completed_with_data(backing: str) -> None:
    k = FakeKernel(backing=backing)
    r = Ring(k.buf)
    cmd_id = k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    assert isinstance(cmd, Command)
    assert (cmd.cmd_id, cmd.cdb, len(cmd.iov), len(cmd.bidi_iov)) == (cmd_id, INQUIRY, 36, 0)
    data = bytes(range(36))
    r.complete(cmd, Result.good(data))
    assert r.flush() is True
    assert k.tail == 120 == k.head  # 112-byte entry + 6-byte CDB aligned to 8
    (done,) = k.reap()
    assert (done.cmd_id, done.status, done.uflags, done.read_len) == (cmd_id, 0, 0, 0)
    assert done.data_in == data
    assert done.sense == bytes(96)
    assert r.flush() is False  # nothing more to hand back
    del cmd
    r.release()
    k.close()


def test_response_bytes_exactly() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(TUR)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.check_condition(SENSE))
    r.flush()
    raw = bytes(k.buf[CMDR_OFF : CMDR_OFF + CMD_RSP.size])
    assert raw[0:4] == (120 | Op.CMD).to_bytes(4, "little")  # len_op kept
    assert raw[4:6] == cmd.cmd_id.to_bytes(2, "little")
    assert raw[6] == 0 and raw[7] == 0  # kflags, uflags
    assert raw[8] == 0x02 and raw[9:12] == bytes(3)  # status, pads
    assert raw[12:16] == bytes(4)  # read_len unused
    assert raw[16:] == SENSE + bytes(96 - len(SENSE))


def test_sense_longer_than_96_bytes_is_cut() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(TUR)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.check_condition(bytes(range(1, 121))))
    r.flush()
    (done,) = k.reap()
    assert done.sense == bytes(range(1, 97))
    assert k.buf[CMDR_OFF + 120] == 0  # nothing written past the slot's response


def test_read_len_is_reported_when_fewer_bytes_and_cap_offered() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.good(b"abcde"))
    r.flush()
    (done,) = k.reap()
    assert done.uflags == UFlag.READ_LEN and done.read_len == 5
    assert done.data_in == b"abcde"


def test_explicit_read_len_when_the_handler_filled_the_buffer() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    cmd.iov.write(b"0123456789")
    r.complete(cmd, Result.good(read_len=8))
    r.flush()
    (done,) = k.reap()
    assert (done.uflags, done.read_len, done.data_in) == (UFlag.READ_LEN, 8, b"01234567")


def test_read_len_0_zeroes_the_buffer_the_kernel_returns_whole() -> None:
    """The kernel ignores read_len 0 and copies the whole data-in buffer back: stale
    data-area bytes from an earlier command must not go with it."""
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    cmd.iov.write(b"stale data of an earlier command")
    r.complete(cmd, Result.good(b""))
    r.flush()
    (done,) = k.reap()
    assert done.read_len == 0 and done.data_in in (b"", bytes(36))


def test_no_read_len_without_the_cap() -> None:
    k = FakeKernel(flags=int(Cap.OOOC))
    r = Ring(k.buf)
    k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.good(b"abcde"))
    r.flush()
    (done,) = k.reap()
    assert (done.uflags, done.read_len) == (0, 0)
    assert done.data_in[:5] == b"abcde" and len(done.data_in) == 36


def test_data_longer_than_the_buffer_is_truncated_without_read_len() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.good(bytes(range(100))))
    r.flush()
    (done,) = k.reap()
    assert (done.uflags, done.read_len, done.data_in) == (0, 0, bytes(range(36)))


def test_data_out_reaches_the_handler() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    payload = bytes(random.Random(1).randbytes(512))
    k.queue_cmd(WRITE_10, data_out=payload)
    (cmd,) = r.fetch()
    assert cmd.iov.read() == payload
    assert cmd.cdb == WRITE_10


@pytest.mark.parametrize(
    "cdb",
    [
        bytes([0x88]) + bytes(15),  # READ(16)
        bytes([0xA8]) + bytes(11),  # READ(12)
        bytes([0x7F, 0, 0, 0, 0, 0, 0, 0x18]) + bytes(24),  # variable length: 8 + 0x18
    ],
)
def test_cdb_length_follows_the_opcode(cdb: bytes) -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(cdb)
    (cmd,) = r.fetch()
    assert cmd.cdb == cdb


def test_many_iovecs_are_zero_copy_views_in_order() -> None:
    k = FakeKernel()
    k.scatter = True  # every other block: no two adjacent, one iovec each
    r = Ring(k.buf)
    payload = random.Random(2).randbytes(5 * PAGE - 100)
    k.queue_cmd(WRITE_10, data_out=payload)
    off = CMDR_OFF
    assert CMD_REQ.struct.unpack_from(k.buf, off)[4] == 5  # iov_cnt
    assert k.head == IOV_ARRAY_OFF + 5 * IOVEC.size + 16  # entry grew past 112 bytes
    (cmd,) = r.fetch()
    assert [len(v) for v in cmd.iov.views] == [PAGE] * 4 + [PAGE - 100]
    assert cmd.iov.read() == payload
    for i, view in enumerate(cmd.iov.views):  # zero copy: writes land in the mapping
        base, _ = IOVEC.struct.unpack_from(k.buf, off + IOV_ARRAY_OFF + i * IOVEC.size)
        view[0] = 0xEE
        assert k.buf[base] == 0xEE


def test_adjacent_blocks_share_one_iovec() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(READ_10, data_in=3 * PAGE)
    (cmd,) = r.fetch()
    assert [len(v) for v in cmd.iov.views] == [3 * PAGE]


def test_bidi_data_out_in_iov_data_in_in_bidi_iov() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    xdwriteread = bytes([0x53]) + bytes(9)
    out = b"\x11" * 512
    k.queue_cmd(xdwriteread, data_out=out, bidi_in=512)
    (cmd,) = r.fetch()
    assert cmd.iov.read() == out and len(cmd.bidi_iov) == 512
    r.complete(cmd, Result.good(b"\x22" * 512))
    r.flush()
    (done,) = k.reap()
    assert done.data_in == b"\x22" * 512
    assert cmd.iov.read() == out  # data-out untouched


def test_dif_iovecs_are_skipped() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(READ_10, data_in=PAGE)
    # Announce one DIF iovec after the data one (the kernel never does; the ABI allows it).
    dif_off = CMDR_OFF + CMD_REQ.offset("iov_dif_cnt")
    CMD_REQ.field_struct("iov_dif_cnt").pack_into(k.buf, dif_off, 1)
    IOVEC.struct.pack_into(k.buf, CMDR_OFF + IOV_ARRAY_OFF + IOVEC.size, k.data_off, 8)
    (cmd,) = r.fetch()
    assert len(cmd.iov) == PAGE and len(cmd.bidi_iov) == 0 and cmd.cdb == READ_10


def test_pad_at_the_wrap_is_skipped_and_the_tail_wraps() -> None:
    k = FakeKernel(cmd_area=PAGE)  # ring of 3968 bytes
    r = Ring(k.buf)
    # 32 TURs of 120 bytes reach 3840; 128 bytes remain: the next 120 fit, then 8 do not.
    for _ in range(33):
        k.queue_cmd(TUR, notify=False)
        for cmd in only_commands(r.fetch()):
            r.complete(cmd, Result.good())
        r.flush()
        k.reap()
    assert k.head == k.tail == 3960
    cmd_id = k.queue_cmd(INQUIRY, data_in=36)  # needs 120: PAD of 8, then at 0
    assert ENTRY_HDR.struct.unpack_from(k.buf, CMDR_OFF + 3960)[0] == 8 | Op.PAD
    assert k.head == 120
    (cmd,) = r.fetch()
    assert cmd.cmd_id == cmd_id
    r.complete(cmd, Result.good(b"x" * 36))
    assert r.flush()
    assert k.tail == 120
    (done,) = k.reap()
    assert done.cmd_id == cmd_id and done.slot == 0 and not k.broken


def test_tmr_is_reported_in_ring_order_and_skipped() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    a = k.queue_cmd(TUR)
    b = k.queue_cmd(TUR)
    k.queue_tmr(TmrType.LUN_RESET, [a, b])
    items = r.fetch()
    assert isinstance(items[2], TmrNotice)
    assert items[2] == TmrNotice(TmrType.LUN_RESET, [a, b])
    for cmd in only_commands(items):
        r.complete(cmd, Result.good())
    r.flush()
    assert k.tail == k.head == 120 + 120 + 40  # TMR: 32 + 2 ids, aligned to 8
    assert [c.cmd_id for c in k.reap()] == [a, b]


def test_unknown_op_gets_the_uflag_and_is_passed() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    pos = k.queue_raw(5)
    cmd_id = k.queue_cmd(TUR)
    (cmd,) = r.fetch()
    assert k.uflags_at(pos) == UFlag.UNKNOWN_OP
    r.complete(cmd, Result.good())
    r.flush()
    assert k.tail == 16 + 120
    # (a real kernel would call such an entry a CMD with cmd_id 0 and break the ring;
    # none ever writes one, so only the runtime's side is checked here)
    assert ENTRY_HDR.struct.unpack_from(k.buf, CMDR_OFF + 16)[1] == cmd_id


def test_ooo_completion_goes_into_the_slot_at_the_tail_with_its_cmd_id() -> None:
    k = FakeKernel()
    k.scatter = True
    r = Ring(k.buf)
    a = k.queue_cmd(WRITE_10, data_out=b"A" * (5 * PAGE))  # 5 iovecs: a 144-byte slot
    b = k.queue_cmd(INQUIRY, data_in=36)  # 120 bytes
    c = k.queue_cmd(TUR)  # 120 bytes
    cmd_a, cmd_b, cmd_c = r.fetch()
    assert k.head == 144 + 120 + 120

    r.complete(cmd_c, Result.check_condition(SENSE))
    assert r.flush()
    assert k.tail == 144
    len_op, cmd_id, _, uflags = ENTRY_HDR.struct.unpack_from(k.buf, CMDR_OFF)
    assert (len_op, cmd_id, uflags) == (144 | Op.CMD, c, 0)  # A's slot and length, C's id
    assert k.buf[CMDR_OFF + CMD_RSP.offset("scsi_status")] == 0x02
    (done,) = k.reap()
    assert (done.cmd_id, done.slot, done.sense[:18]) == (c, 0, SENSE)

    # A's request was decoded before its slot was reused.
    assert cmd_a.cdb == WRITE_10 and cmd_a.iov.read() == b"A" * (5 * PAGE)

    r.complete(cmd_a, Result.good())
    r.flush()
    assert k.tail == 264
    assert ENTRY_HDR.struct.unpack_from(k.buf, CMDR_OFF + 144)[:2] == (120 | Op.CMD, a)
    r.complete(cmd_b, Result.good(b"inq"))
    r.flush()
    assert k.tail == k.head
    assert [(x.cmd_id, x.slot) for x in k.reap()] == [(a, 144), (b, 264)]
    assert k.completions[-1].data_in == b"inq" and not k.broken


def test_ooo_skips_pad_and_tmr_slots_at_the_tail() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_tmr(TmrType.ABORT_TASK, [])
    a = k.queue_cmd(TUR)
    b = k.queue_cmd(TUR)
    _, cmd_a, cmd_b = r.fetch()
    r.complete(cmd_b, Result.good())
    r.flush()
    assert k.tail == 32 + 120
    assert ENTRY_HDR.struct.unpack_from(k.buf, CMDR_OFF + 32)[1] == b
    r.complete(cmd_a, Result.good())
    r.flush()
    assert [x.cmd_id for x in k.reap()] == [b, a]


def test_in_order_completion_waits_for_the_oldest_and_uses_own_slots() -> None:
    k = FakeKernel(flags=int(Cap.READ_LEN))
    r = Ring(k.buf)
    a = k.queue_cmd(TUR)
    b = k.queue_cmd(TUR)
    cmd_a, cmd_b = r.fetch()
    r.complete(cmd_b, Result.check_condition(SENSE))
    assert r.flush() is False and k.tail == 0
    r.complete(cmd_a, Result.good())
    assert r.flush() is True and k.tail == 240
    assert ENTRY_HDR.struct.unpack_from(k.buf, CMDR_OFF)[1] == a
    assert ENTRY_HDR.struct.unpack_from(k.buf, CMDR_OFF + 120)[1] == b
    assert [(x.cmd_id, x.status) for x in k.reap()] == [(a, 0), (b, 2)]


def test_completing_twice_or_a_stranger_is_refused() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(TUR)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.good())
    with pytest.raises(RingError, match="not in flight"):
        r.complete(cmd, Result.good())
    stranger = Command(cmd.cmd_id + 1, TUR, ScatterBuffer(()))
    with pytest.raises(RingError):
        r.complete(stranger, Result.good())
    r.flush()
    assert len(k.reap()) == 1 and not k.broken


def test_a_bad_result_leaves_the_command_in_flight() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(TUR)
    (cmd,) = r.fetch()
    with pytest.raises(ValueError):
        r.complete(cmd, Result(status=300))
    assert r.inflight == 1
    r.complete(cmd, Result.good())
    assert r.inflight == 0


def test_batch_one_tail_update_for_all_ready_entries() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    ids = [k.queue_cmd(TUR) for _ in range(5)]
    cmds = only_commands(r.fetch())
    assert [c.cmd_id for c in cmds] == ids
    for c in cmds:
        r.complete(c, Result.good())
    assert k.tail == 0  # nothing written before flush
    assert r.flush() and k.tail == 600
    assert [c.cmd_id for c in k.reap()] == ids


def test_head_is_read_once_per_fetch() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(TUR)
    assert len(r.fetch()) == 1
    k.queue_cmd(TUR)  # published after that pass
    assert len(r.fetch()) == 1
    assert r.fetch() == []


def test_corrupt_entry_raises_instead_of_spinning() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(TUR)
    ENTRY_HDR.struct.pack_into(k.buf, CMDR_OFF, 0 | Op.CMD, 1, 0, 0)
    with pytest.raises(RingError, match="corrupt"):
        r.fetch()


def test_resumes_from_the_mailbox_tail() -> None:
    k = FakeKernel()
    r0 = Ring(k.buf)
    k.queue_cmd(TUR)
    k.queue_cmd(TUR)
    first, _ = r0.fetch()
    r0.complete(first, Result.good())
    r0.flush()
    k.reap()
    r = Ring(k.buf)  # a restarted handler
    assert r.tail == 120
    (cmd,) = r.fetch()
    r.complete(cmd, Result.good())
    r.flush()
    assert k.tail == 240 and len(k.reap()) == 1


def check(done: Completion, data: bytes) -> None:
    if data:
        assert done.data_in == data
    else:  # the kernel ignores read_len 0 and returns the whole buffer
        assert done.read_len == 0


@settings(max_examples=60, deadline=None)
@given(
    ooo=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    rounds=st.integers(1, 40),
)
def test_random_traffic_every_command_completes_once_and_correctly(
    ooo: bool, seed: int, rounds: int
) -> None:
    rnd = random.Random(seed)
    k = FakeKernel(cmd_area=PAGE, data_pages=16, flags=int(Cap.READ_LEN | (Cap.OOOC if ooo else 0)))
    k.scatter = rnd.random() < 0.5
    r = Ring(k.buf)
    expected: dict[int, bytes] = {}
    pending: list[Command] = []
    for _ in range(rounds):
        for _ in range(rnd.randint(0, 4)):
            cdb = rnd.choice([TUR, INQUIRY, READ_10, bytes([0x88]) + bytes(15)])
            try:
                cid = k.queue_cmd(cdb, data_in=rnd.choice([0, 1, 600, PAGE + 1, 3 * PAGE]))
            except Exception:
                break  # ring or data area full: the kernel would queue internally
            if rnd.random() < 0.2:
                k.queue_tmr(TmrType.ABORT_TASK, [cid])
        pending += only_commands(r.fetch())
        rnd.shuffle(pending)
        for cmd in pending[: rnd.randint(0, len(pending))]:
            data = rnd.randbytes(rnd.randint(0, len(cmd.iov)))
            r.complete(cmd, Result.good(data))
            expected[cmd.cmd_id] = data
            pending.remove(cmd)
        r.flush()
        for done in k.reap():
            check(done, expected.pop(done.cmd_id))
        assert not k.broken
    for cmd in pending:
        r.complete(cmd, Result.good(b""))
        expected[cmd.cmd_id] = b""
    r.flush()
    for done in k.reap():
        check(done, expected.pop(done.cmd_id))
    assert not expected and not k.inflight and k.tail == k.head


def test_keep_buf_sets_the_uflag_and_the_kernel_keeps_the_blocks_until_freed() -> None:
    """Result(keep_buf=True): TCMU_UFLAG_KEEP_BUF in the response; the command completes
    with its data-in, its blocks stay taken (and its views valid) until free_kept_buf."""
    k = FakeKernel(data_pages=4)
    r = Ring(k.buf)
    cmd_id = k.queue_cmd(READ_10, data_in=2 * PAGE)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.good(b"K" * (2 * PAGE), keep_buf=True))
    r.flush()
    (done,) = k.reap()
    assert (done.cmd_id, done.status, done.uflags) == (cmd_id, 0, UFlag.KEEP_BUF)
    assert done.data_in == b"K" * (2 * PAGE) and not k.broken
    assert cmd.iov.read() == b"K" * (2 * PAGE)  # still the command's, still mapped
    k.queue_cmd(READ_10, data_in=2 * PAGE)  # the other 2 pages
    with pytest.raises(RingFull):  # the kept 2 are not reused
        k.queue_cmd(READ_10, data_in=PAGE)
    k.free_kept_buf(cmd_id)
    k.queue_cmd(READ_10, data_in=2 * PAGE)
    with pytest.raises(OSError, match="not completed with KEEP_BUF"):
        k.free_kept_buf(cmd_id)


def test_keep_buf_with_read_len_and_sense_keeps_both_flags() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    r.complete(cmd, Result(0x02, SENSE, b"abc", keep_buf=True))
    r.flush()
    (done,) = k.reap()
    assert (done.status, done.uflags, done.read_len) == (2, UFlag.KEEP_BUF | UFlag.READ_LEN, 3)
    assert done.sense[:18] == SENSE and done.data_in == b"abc"


def test_no_keep_buf_uflag_unless_asked() -> None:
    k = FakeKernel()
    r = Ring(k.buf)
    a = k.queue_cmd(INQUIRY, data_in=36)
    (cmd,) = r.fetch()
    r.complete(cmd, Result.good(b"x" * 36))
    r.flush()
    assert k.reap()[0].uflags == 0 and not k.kept
    with pytest.raises(OSError):
        k.free_kept_buf(a)


def test_keep_buf_without_the_cap_is_refused_and_the_command_stays_in_flight() -> None:
    k = FakeKernel(flags=int(Cap.OOOC | Cap.READ_LEN | Cap.TMR))
    r = Ring(k.buf)
    assert not r.keep_buf_cap and Ring(FakeKernel().buf).keep_buf_cap
    k.queue_cmd(TUR)
    (cmd,) = r.fetch()
    with pytest.raises(UnsupportedResult, match=r"keep_buf needs the kernel's KEEP_BUF "
                       r"capability, which this ring does not offer \(mailbox flags 0x7\)"):
        r.complete(cmd, Result.good(keep_buf=True))
    assert r.inflight == 1 and r.flush() is False
    r.complete(cmd, Result.good())
    r.flush()
    assert k.reap()[0].uflags == 0
