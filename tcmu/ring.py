"""The TCMU command ring over any writable buffer (the UIO mmap, or a bytearray in tests).

Protocol (see /usr/include/linux/target_core_user.h and TCMU-NOTES.md):
- The kernel appends entries at mailbox.cmd_head; userspace consumes from cmd_tail,
  which only userspace writes. Entries never wrap: the kernel pads to the ring's end.
- A response is written into a CMD entry in place and handed back by moving cmd_tail
  past it; the kernel then reads the entries from its old position to the new tail,
  in ring order.
- Out-of-order completion (CAP_OOOC): the kernel identifies a response by the cmd_id
  in the entry header, not by the slot. So a command that finishes early is written
  into the CMD slot at the tail (whoever's request it held) with its own cmd_id.

Use: fetch() after each wakeup, complete() each command (any order), then flush() and,
when it returns True, kick the kernel once. All calls from one thread.

Malformed entries (no kernel writes them; tests/tcmu/test_ring_fuzz.py makes them):
- a CMD entry whose iovec array overruns the entry, whose iovecs leave the data area
  (into the mailbox or command ring, which a data-in copy would overwrite, or past the
  mapping), or whose CDB does not lie inside the entry never reaches the handler: it is
  completed at once with HARDWARE ERROR, INTERNAL TARGET FAILURE (44/00), and logged;
- a TMR entry whose cmd_ids overrun it is skipped (it needs no reply) and logged;
- an entry whose length cannot be walked (0, or past the ring's end) and a cmd_head
  beyond the ring make the ring unusable: fetch() returns the commands before it, then
  raises RingError, with the ring's state consistent (what was fetched can complete).

Every entry between the tail and the parse position has been decoded into a Command
before any response is written, so reusing a slot for another command's response never
loses request data (CDB and iovecs are copied/sliced out at fetch time; the data
itself lives outside the ring).

Memory ordering: the kernel publishes cmd_head with a release store after writing the
entry; we read cmd_head once per fetch() and then the entries. On x86 (TSO) plain loads
keep that order and our response stores land before the cmd_tail store.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
from collections import deque
from collections.abc import Callable

from tcmu.handler import EMPTY_BUFFER, Command, Result, ScatterBuffer
from tcmu.layout import (
    CMD_ID,
    CMD_REQ,
    CMD_RSP,
    ENTRY_HDR,
    IOV_ARRAY_OFF,
    IOVEC,
    MAILBOX,
    MAILBOX_VERSION,
    OP_MASK,
    SENSE_BUFFER_SIZE,
    TMR_CMD_IDS_OFF,
    TMR_ENTRY,
    Cap,
    Op,
    UFlag,
)
from tcmu.sense import INTERNAL_FAILURE_SENSE

Buffer = mmap.mmap | bytearray

_U32 = MAILBOX.field_struct("cmd_head")
_HEAD_OFF = MAILBOX.offset("cmd_head")
_TAIL_OFF = MAILBOX.offset("cmd_tail")
_UFLAGS_OFF = ENTRY_HDR.offset("uflags")
_HDR = ENTRY_HDR.struct
_REQ = CMD_REQ.struct
_RSP = CMD_RSP.struct
_IOV = IOVEC.struct
_IOV_SIZE = IOVEC.size
_TMR = TMR_ENTRY.struct
_CMD_ID_SIZE = CMD_ID.size
_LEN_MASK = 0xFFFFFFFF & ~OP_MASK
_OP_CMD = int(Op.CMD)
_OP_PAD = int(Op.PAD)
_OP_TMR = int(Op.TMR)
_UF_READ_LEN = int(UFlag.READ_LEN)
_UF_UNKNOWN_OP = int(UFlag.UNKNOWN_OP)
_UF_KEEP_BUF = int(UFlag.KEEP_BUF)
_NOT_CMD = -1  # cmd_id marker of a slot that needs no response (PAD, TMR, unknown)

# The kernel copies scsi_command_size(cdb) bytes: a length per opcode group
# (opcode >> 5), except VARIABLE LENGTH (0x7f) whose length is cdb[7] + 8.
_CDB_GROUP_LEN = (6, 10, 10, 12, 16, 12, 10, 10)
_VARIABLE_LENGTH_CMD = 0x7F

# (cmd_id, uflags, status, read_len, sense) of a completed command, not yet on the ring
_Response = tuple[int, int, int, int, bytes]


log = logging.getLogger(__name__)
_CHECK_CONDITION = 0x02


class RingError(Exception):
    """The ring cannot be used, or an entry/completion would corrupt it."""


class UnsupportedResult(ValueError):
    """A result that asks for something the kernel does not offer (KEEP_BUF without
    CAP_KEEP_BUF); the message says what."""


class _MalformedEntry(RingError):
    """One entry cannot be decoded safely; the ring around it is sound."""


@dataclasses.dataclass(frozen=True, slots=True)
class TmrNotice:
    """A TMR entry: the task management function and the cmd_ids it affects."""

    tmr_type: int
    cmd_ids: list[int]


class Ring:
    """Consumer side of one TCMU command ring.

    completer: set as Command._completer on every command built (deferred completion).
    """

    def __init__(
        self,
        buf: Buffer,
        completer: Callable[[Command, Result], None] | None = None,
    ) -> None:
        version, flags, cmdr_off, cmdr_size, _head, tail = MAILBOX.struct.unpack_from(buf, 0)
        if version != MAILBOX_VERSION:
            raise RingError(
                f"TCMU mailbox version {version} is not supported (this runtime speaks "
                f"version {MAILBOX_VERSION}); use a kernel with target_core_user ABI 2"
            )
        if cmdr_size == 0 or cmdr_off < MAILBOX.size or cmdr_off + cmdr_size > len(buf):
            raise RingError(
                f"mailbox describes a command ring at {cmdr_off}+{cmdr_size} that does not "
                f"fit a {len(buf)}-byte mapping"
            )
        self._buf = buf
        self._mv = memoryview(buf)
        self._size = len(buf)
        self.flags = Cap(flags)
        self.cmdr_off = cmdr_off
        self.cmdr_size = cmdr_size
        self._data_off = cmdr_off + cmdr_size  # the data area: iovecs must point past here
        self.ooo = bool(flags & Cap.OOOC)
        self.read_len_cap = bool(flags & Cap.READ_LEN)
        self.keep_buf_cap = bool(flags & Cap.KEEP_BUF)
        self._completer = completer
        # Resume where the kernel says userspace stopped (fresh device: 0; after
        # action/reset_ring: 0; after a crash without reset: the old tail).
        self._tail = tail % cmdr_size
        self._next = self._tail  # parse position: entries in [tail, next) are decoded
        self._slots: deque[tuple[int, int, int]] = deque()  # (pos, len_op, cmd_id)
        self._inflight: dict[int, Command] = {}
        self._ready: deque[_Response] = deque()  # OOOC: responses in completion order
        self._done: dict[int, _Response] = {}  # in order: responses by cmd_id

    # -- state -------------------------------------------------------------------

    @property
    def tail(self) -> int:
        return self._tail

    @property
    def inflight(self) -> int:
        """Commands fetched and not yet completed."""
        return len(self._inflight)

    def release(self) -> None:
        """Drop this ring's view of the buffer (needed before closing an mmap)."""
        self._mv.release()

    # -- consuming -----------------------------------------------------------------

    def fetch(self) -> list[Command | TmrNotice]:
        """Decode every entry the kernel has published since the last fetch.

        Returns commands and TMR notices in ring order. PAD entries are skipped; entries
        with an unknown opcode get UNKNOWN_OP set in their uflags.
        """
        buf = self._buf
        cmdr_off = self.cmdr_off
        cmdr_size = self.cmdr_size
        head = _U32.unpack_from(buf, _HEAD_OFF)[0]  # read once per pass
        if head >= cmdr_size:
            raise RingError(f"cmd_head {head} is beyond the {cmdr_size}-byte command ring")
        pos = self._next
        out: list[Command | TmrNotice] = []
        slots = self._slots
        while pos != head:
            off = cmdr_off + pos
            len_op = _HDR.unpack_from(buf, off)[0]
            length = len_op & _LEN_MASK
            if length == 0 or pos + length > cmdr_size:
                self._next = pos  # what came before is fetched; this stays unwalkable
                if out:
                    return out
                raise RingError(f"corrupt ring entry at {pos}: len_op {len_op:#x}")
            op = len_op & OP_MASK
            if op == _OP_CMD:
                try:
                    cmd = self._command(off, length)
                except _MalformedEntry as exc:
                    self._refuse(pos, len_op, exc)
                else:
                    self._inflight[cmd.cmd_id] = cmd
                    slots.append((pos, len_op, cmd.cmd_id))
                    out.append(cmd)
            else:
                if op == _OP_TMR:
                    try:
                        out.append(self._tmr(off, length))
                    except _MalformedEntry as exc:
                        log.error("skipping a TMR entry at %d: %s", pos, exc)
                elif op != _OP_PAD:
                    buf[off + _UFLAGS_OFF] |= _UF_UNKNOWN_OP
                slots.append((pos, len_op, _NOT_CMD))
            pos = (pos + length) % cmdr_size
        self._next = pos
        return out

    def _refuse(self, pos: int, len_op: int, exc: RingError) -> None:
        """Complete a CMD entry that cannot be decoded safely with INTERNAL TARGET
        FAILURE, without the handler seeing it."""
        cmd_id = _HDR.unpack_from(self._buf, self.cmdr_off + pos)[1]
        log.error("refusing cmd %d at %d with 44/00: %s", cmd_id, pos, exc)
        self._slots.append((pos, len_op, cmd_id))
        rsp = (cmd_id, 0, _CHECK_CONDITION, 0, INTERNAL_FAILURE_SENSE)
        if self.ooo:
            self._ready.append(rsp)
        else:
            self._done[cmd_id] = rsp

    def _command(self, off: int, length: int) -> Command:
        buf = self._buf
        _, cmd_id, _, _, iov_cnt, bidi_cnt, dif_cnt, cdb_off = _REQ.unpack_from(buf, off)
        iov_off = off + IOV_ARRAY_OFF
        if iov_off + (iov_cnt + bidi_cnt + dif_cnt) * _IOV_SIZE > off + length:
            raise _MalformedEntry(f"cmd {cmd_id}: iovec array overruns its {length}-byte entry")
        iov = self._scatter(iov_off, iov_cnt, cmd_id) if iov_cnt else EMPTY_BUFFER
        bidi = (
            self._scatter(iov_off + iov_cnt * _IOV_SIZE, bidi_cnt, cmd_id)
            if bidi_cnt
            else EMPTY_BUFFER
        )
        # DIF iovecs (iov_dif_cnt) follow the BIDI ones; the kernel never sends any.
        end = off + length
        if not off < cdb_off <= end - 6:  # the kernel puts the CDB inside the entry
            raise _MalformedEntry(f"cmd {cmd_id}: cdb_off {cdb_off} is outside its entry")
        opcode = buf[cdb_off]
        if opcode == _VARIABLE_LENGTH_CMD:
            cdb_len = buf[cdb_off + 7] + 8 if cdb_off + 8 <= end else 8
        else:
            cdb_len = _CDB_GROUP_LEN[opcode >> 5]
        if cdb_off + cdb_len > end:
            raise _MalformedEntry(f"cmd {cmd_id}: its {cdb_len}-byte CDB overruns its entry")
        cdb = buf[cdb_off : cdb_off + cdb_len]  # bytes from an mmap: one copy
        if type(cdb) is not bytes:
            cdb = bytes(cdb)
        return Command(cmd_id, cdb, iov, bidi, self._completer)

    def _scatter(self, iov_off: int, count: int, cmd_id: int) -> ScatterBuffer:
        buf = self._buf
        mv = self._mv
        size = self._size
        views = []
        total = 0
        for i in range(count):
            base, ln = _IOV.unpack_from(buf, iov_off + i * _IOV_SIZE)
            if base < self._data_off or base + ln > size:
                raise _MalformedEntry(f"cmd {cmd_id}: iovec {base}+{ln} is outside the data "
                                      "area")
            views.append(mv[base : base + ln])
            total += ln
        return ScatterBuffer.of_views(views, total)

    def _tmr(self, off: int, length: int) -> TmrNotice:
        _, _, _, _, tmr_type, cmd_cnt = _TMR.unpack_from(self._buf, off)
        ids_off = off + TMR_CMD_IDS_OFF
        if cmd_cnt * _CMD_ID_SIZE > length - TMR_CMD_IDS_OFF:
            raise _MalformedEntry(f"TMR entry with {cmd_cnt} cmd_ids overruns its {length} bytes")
        ids = [CMD_ID.unpack_from(self._buf, ids_off + i * _CMD_ID_SIZE)[0] for i in range(cmd_cnt)]
        return TmrNotice(tmr_type, ids)

    # -- completing ----------------------------------------------------------------

    def complete(self, cmd: Command, result: Result) -> None:
        """Record the result of an in-flight command; flush() puts it on the ring.

        Copies result.data into the data-in buffer (bidi_iov for BIDI, else iov),
        truncated to its size (the allocation length rule). Raises RingError for a
        command that is not in flight (completing an unknown cmd_id would mark the
        kernel's ring broken) and UnsupportedResult for keep_buf without CAP_KEEP_BUF;
        any other exception leaves the command in flight.
        """
        cmd_id = cmd.cmd_id
        if self._inflight.get(cmd_id) is not cmd:
            raise RingError(f"cmd_id {cmd_id} is not in flight (completed twice?)")
        if result.keep_buf and not self.keep_buf_cap:
            raise UnsupportedResult(
                f"cmd {cmd_id}: keep_buf needs the kernel's KEEP_BUF capability, which this "
                f"ring does not offer (mailbox flags {int(self.flags):#x})")
        data_in = cmd.bidi_iov if cmd.bidi_iov.views else cmd.iov
        read_len = result.read_len
        data = result.data
        if data is not None:
            views = data_in.views
            if len(views) == 1 and type(data) is bytes:  # the common case, inlined
                view = views[0]
                stored = len(data)
                if stored > len(view):
                    stored = len(view)
                    data = data[:stored]
                view[:stored] = data
            else:
                stored = data_in.write(data)
            if read_len is None:
                read_len = stored
        uflags = 0
        rsp_len = 0
        # The kernel ignores a read_len of 0 and returns the whole buffer, which still
        # holds whatever an earlier command left in those data-area pages: zero it, so no
        # stale data reaches the initiator (ALLOCATION LENGTH 0, say).
        if read_len == 0 and len(data_in):
            data_in.fill(0)
        if read_len is not None and self.read_len_cap and read_len < len(data_in):
            uflags = _UF_READ_LEN
            rsp_len = read_len
        if result.unknown_op:
            uflags |= _UF_UNKNOWN_OP
        if result.keep_buf:  # the kernel keeps the data blocks until free_kept_buf
            uflags |= _UF_KEEP_BUF
        status = int(result.status)
        if not 0 <= status <= 0xFF or rsp_len < 0:
            raise ValueError(f"cmd {cmd_id}: bad status {status} or read_len {rsp_len}")
        sense = result.sense
        if sense:
            sense = bytes(sense[:SENSE_BUFFER_SIZE])
        rsp = (cmd_id, uflags, status, rsp_len, sense)
        del self._inflight[cmd_id]
        if self.ooo:
            self._ready.append(rsp)
        else:
            self._done[cmd_id] = rsp

    def flush(self) -> bool:
        """Write recorded responses into their slots and advance cmd_tail over every
        finished slot. Returns True when the tail moved (then kick the kernel once)."""
        slots = self._slots
        if not slots:
            return False
        buf = self._buf
        cmdr_off = self.cmdr_off
        ready = self._ready
        done = self._done
        ooo = self.ooo
        moved = False
        while slots:
            pos, len_op, cmd_id = slots[0]
            if cmd_id != _NOT_CMD:
                if ooo:
                    if not ready:
                        break
                    rsp = ready.popleft()
                else:
                    rsp = done.pop(cmd_id, None)
                    if rsp is None:
                        break
                rid, uflags, status, read_len, sense = rsp
                # Keep the slot's len_op: the kernel advances by the slot's length.
                _RSP.pack_into(buf, cmdr_off + pos, len_op, rid, 0, uflags, status, read_len, sense)
            slots.popleft()
            moved = True
        if not moved:
            return False
        self._tail = slots[0][0] if slots else self._next
        _U32.pack_into(buf, _TAIL_OFF, self._tail)  # after the responses: publishes them
        return True
