"""A fake kernel side of a TCMU ring, for tests without target_core_user.

It lays entries out the way drivers/target/target_core_user.c does (queue_cmd_ring,
queue_tmr_ring, ring_insert_padding, tcmu_handle_completions):
- data in page-sized blocks taken lowest-free-first; runs of adjacent blocks share one
  iovec; iov_base is an offset from the start of the mapping;
- entry length = max(offsetof(req.iov[n]), sizeof(tcmu_cmd_entry)) + align8(cdb length),
  the CDB right after the iovec array (cdb_off relative to the mapping);
- a PAD entry fills the rest of the ring when the next entry does not fit there;
- one byte of the ring always stays free (spc_free);
- completions are consumed from the kernel's last-cleaned position up to cmd_tail in
  ring order, identified by the cmd_id in each entry header; an unknown cmd_id marks
  the ring broken;
- a completion with KEEP_BUF completes the command but keeps its data blocks (and its
  cmd_id) until free_kept_buf(cmd_id), as action/free_kept_buf does.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import mmap
import os
import tempfile
from collections.abc import Callable

from tcmu.layout import (
    CMD_ENTRY_SIZE,
    CMD_ID,
    CMD_REQ,
    CMD_RSP,
    ENTRY_HDR,
    IOV_ARRAY_OFF,
    IOVEC,
    MAILBOX,
    OP_MASK,
    TMR_CMD_IDS_OFF,
    TMR_ENTRY,
    Cap,
    Op,
    UFlag,
    align,
    entry_size,
)

PAGE = 4096
CMDR_OFF = MAILBOX.size
ALL_CAPS = int(Cap.OOOC | Cap.READ_LEN | Cap.TMR | Cap.KEEP_BUF)
CHECK_CONDITION = 0x02
_HEAD = MAILBOX.field_struct("cmd_head")
_TAIL = MAILBOX.field_struct("cmd_tail")


class RingFull(Exception):
    """Not enough ring or data space (the kernel would queue the command internally)."""


@dataclasses.dataclass
class Completion:
    """What the kernel took from one completed CMD slot."""

    cmd_id: int
    slot: int  # ring position of the entry the response was read from
    status: int
    uflags: int
    read_len: int
    sense: bytes  # all 96 bytes of sense_buffer
    data_in: bytes  # what the kernel would copy back to the initiator
    raw: bytes  # the whole response as written (sizeof(struct tcmu_cmd_entry) bytes)


@dataclasses.dataclass
class _Inflight:
    cmd_id: int
    slot: int
    direction: str  # "none", "out", "in", "bidi"
    length: int
    blocks: list[int]
    bidi_length: int
    bidi_blocks: list[int]


def cdb_length(cdb: bytes) -> int:
    """scsi_command_size(): what the kernel copies into the ring."""
    if cdb[0] == 0x7F:
        return cdb[7] + 8
    return (6, 10, 10, 12, 16, 12, 10, 10)[cdb[0] >> 5]


class FakeKernel:
    """Owns a buffer shaped like the UIO mapping and plays target_core_user on it."""

    def __init__(
        self,
        *,
        cmd_area: int = 2 * PAGE,  # CMDR_SIZE: mailbox + command ring
        data_pages: int = 64,
        flags: int = ALL_CAPS,
        version: int = 2,
        backing: str = "bytearray",
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.cmdr_size = cmd_area - CMDR_OFF
        self.data_off = cmd_area
        self.data_pages = data_pages
        size = cmd_area + data_pages * PAGE
        self._fd = -1
        self.buf: mmap.mmap | bytearray
        if backing == "mmap":  # an ordinary file, mapped shared like the UIO map
            self._fd, path = tempfile.mkstemp(prefix="fakering")
            os.unlink(path)
            os.ftruncate(self._fd, size)
            self.buf = mmap.mmap(self._fd, size, mmap.MAP_SHARED)
        else:
            self.buf = bytearray(size)
        MAILBOX.struct.pack_into(self.buf, 0, version, flags, CMDR_OFF, self.cmdr_size, 0, 0)
        self.notify = notify
        self.last_cleaned = 0
        self.used = [False] * data_pages
        self.inflight: dict[int, _Inflight] = {}
        self.kept: dict[int, _Inflight] = {}  # completed with KEEP_BUF, blocks still used
        self.broken = False
        self.completions: list[Completion] = []
        self.scatter = False  # take every other free block: many iovecs per command

    # -- mailbox -------------------------------------------------------------------

    @property
    def head(self) -> int:
        return _HEAD.unpack_from(self.buf, MAILBOX.offset("cmd_head"))[0]

    @head.setter
    def head(self, value: int) -> None:
        _HEAD.pack_into(self.buf, MAILBOX.offset("cmd_head"), value % self.cmdr_size)

    @property
    def tail(self) -> int:
        return _TAIL.unpack_from(self.buf, MAILBOX.offset("cmd_tail"))[0]

    @tail.setter
    def tail(self, value: int) -> None:
        _TAIL.pack_into(self.buf, MAILBOX.offset("cmd_tail"), value)

    # -- queueing --------------------------------------------------------------------

    def _space_free(self) -> int:
        used = (self.head - self.last_cleaned) % self.cmdr_size
        return self.cmdr_size - used - 1

    def _reserve(self, size: int) -> int:
        """is_ring_space_avail + ring_insert_padding: returns the entry's ring position."""
        head = self.head
        to_end = self.cmdr_size - head
        needed = size if to_end >= size else size + to_end
        if self._space_free() < needed:
            raise RingFull(f"no ring space for {size} bytes")
        if to_end < size:
            ENTRY_HDR.struct.pack_into(self.buf, CMDR_OFF + head, to_end | Op.PAD, 0, 0, 0)
            self.head = head + to_end
            head = self.head
            assert head == 0
        return head

    def _alloc(self, nblocks: int) -> list[int]:
        free = [i for i, u in enumerate(self.used) if not u]
        if self.scatter:
            free = free[::2] + free[1::2]
        if len(free) < nblocks:
            raise RingFull(f"no data space for {nblocks} blocks")
        got = free[:nblocks]
        for b in got:
            self.used[b] = True
        return got

    def _iovs(self, blocks: list[int], length: int) -> list[tuple[int, int]]:
        """new_block_to_iov: adjacent blocks extend the current iovec."""
        iovs: list[list[int]] = []
        prev = -2
        for b in blocks:
            n = min(PAGE, length)
            length -= n
            if b != prev + 1:
                iovs.append([self.data_off + b * PAGE, 0])
            iovs[-1][1] += n
            prev = b
        return [(base, ln) for base, ln in iovs]

    def queue_cmd(
        self,
        cdb: bytes,
        *,
        data_out: bytes = b"",
        data_in: int = 0,
        bidi_in: int = 0,
        notify: bool = True,
    ) -> int:
        """Queue a CMD entry; returns its cmd_id. data_out with bidi_in is a BIDI command."""
        if data_out and data_in:
            raise ValueError("a non-BIDI command has one data direction")
        length = len(data_out) or data_in
        direction = "bidi" if bidi_in else "out" if data_out else "in" if data_in else "none"
        blocks = self._alloc(-(-length // PAGE))
        bidi_blocks = self._alloc(-(-bidi_in // PAGE))
        iovs = self._iovs(blocks, length)
        bidi_iovs = self._iovs(bidi_blocks, bidi_in)
        clen = cdb_length(cdb)
        base_size = max(IOV_ARRAY_OFF + (len(iovs) + len(bidi_iovs)) * IOVEC.size, CMD_ENTRY_SIZE)
        size = entry_size(len(iovs) + len(bidi_iovs), clen)
        assert size == base_size + align(clen)
        if size > self.cmdr_size // 2:
            raise RingFull("entry larger than half the ring (ILLEGAL REQUEST in the kernel)")
        try:
            pos = self._reserve(size)
        except RingFull:
            for b in blocks + bidi_blocks:
                self.used[b] = False
            raise
        cmd_id = next(i for i in itertools.count(1)  # lowest free
                      if i not in self.inflight and i not in self.kept)
        off = CMDR_OFF + pos
        self.buf[off : off + size] = bytes(size)
        cdb_off = off + base_size
        CMD_REQ.struct.pack_into(
            self.buf, off, size | Op.CMD, cmd_id, 0, 0, len(iovs), len(bidi_iovs), 0, cdb_off
        )
        for i, (base, ln) in enumerate(iovs + bidi_iovs):
            IOVEC.struct.pack_into(self.buf, off + IOV_ARRAY_OFF + i * IOVEC.size, base, ln)
        self.buf[cdb_off : cdb_off + clen] = cdb[:clen].ljust(clen, b"\0")
        self._scatter_out(blocks, data_out)
        self.inflight[cmd_id] = _Inflight(
            cmd_id, pos, direction, length, blocks, bidi_in, bidi_blocks
        )
        self.head = pos + size
        if notify and self.notify:
            self.notify()
        return cmd_id

    def queue_tmr(self, tmr_type: int, cmd_ids: list[int], *, notify: bool = True) -> int:
        size = align(TMR_ENTRY.size + CMD_ID.size * len(cmd_ids))
        pos = self._reserve(size)
        off = CMDR_OFF + pos
        self.buf[off : off + size] = bytes(size)
        TMR_ENTRY.struct.pack_into(self.buf, off, size | Op.TMR, 0, 0, 0, tmr_type, len(cmd_ids))
        for i, cid in enumerate(cmd_ids):
            CMD_ID.pack_into(self.buf, off + TMR_CMD_IDS_OFF + i * CMD_ID.size, cid)
        self.head = pos + size
        if notify and self.notify:
            self.notify()
        return pos

    def queue_raw(self, op: int, size: int = 16) -> int:
        """An entry with an arbitrary opcode (no kernel sends one; for UNKNOWN_OP)."""
        pos = self._reserve(size)
        off = CMDR_OFF + pos
        self.buf[off : off + size] = bytes(size)
        ENTRY_HDR.struct.pack_into(self.buf, off, size | op, 0, 0, 0)
        self.head = pos + size
        return pos

    def _scatter_out(self, blocks: list[int], data: bytes) -> None:
        for i, b in enumerate(blocks):
            chunk = data[i * PAGE : (i + 1) * PAGE]
            start = self.data_off + b * PAGE
            self.buf[start : start + len(chunk)] = chunk

    def _gather(self, blocks: list[int], length: int) -> bytes:
        out = bytearray()
        for b in blocks:
            start = self.data_off + b * PAGE
            n = min(PAGE, length - len(out))
            out += self.buf[start : start + n]
        return bytes(out)

    def fill_data(self, cmd_id: int, byte: int) -> None:
        """Pre-fill a command's data-in blocks (to see what a handler overwrote)."""
        k = self.inflight[cmd_id]
        for b in k.bidi_blocks if k.direction == "bidi" else k.blocks:
            start = self.data_off + b * PAGE
            self.buf[start : start + PAGE] = bytes([byte]) * PAGE

    def uflags_at(self, pos: int) -> int:
        return self.buf[CMDR_OFF + pos + ENTRY_HDR.offset("uflags")]

    # -- completions -----------------------------------------------------------------

    def reap(self) -> list[Completion]:
        """tcmu_handle_completions: what a kick (write to the UIO fd) makes the kernel do."""
        got: list[Completion] = []
        if self.broken:
            return got
        tail = self.tail
        while self.last_cleaned != tail:
            pos = self.last_cleaned
            off = CMDR_OFF + pos
            len_op, cmd_id, _kflags, uflags = ENTRY_HDR.struct.unpack_from(self.buf, off)
            length = len_op & ~OP_MASK
            if length == 0 or pos + length > self.cmdr_size:  # the kernel would spin
                self.broken = True
                return got
            if len_op & OP_MASK in (Op.PAD, Op.TMR):
                self.last_cleaned = (pos + length) % self.cmdr_size
                continue
            k = self.inflight.pop(cmd_id, None)
            if k is None:
                self.broken = True
                return got
            (_, _, _, _, status, read_len, sense) = CMD_RSP.struct.unpack_from(self.buf, off)
            raw = bytes(self.buf[off : off + CMD_RSP.size])
            data = b""
            if uflags & UFlag.UNKNOWN_OP:
                status = CHECK_CONDITION
            else:
                n = k.length
                valid = k.direction == "in" and bool(uflags & UFlag.READ_LEN) and read_len > 0
                if valid:
                    n = min(n, read_len)
                if status != CHECK_CONDITION or valid:
                    if k.direction == "bidi":
                        data = self._gather(k.bidi_blocks, min(n, k.bidi_length))
                    elif k.direction == "in":
                        data = self._gather(k.blocks, n)
            if uflags & UFlag.KEEP_BUF:
                self.kept[cmd_id] = k
            else:
                self._free(k)
            got.append(Completion(cmd_id, pos, status, uflags, read_len, sense, data, raw))
            self.last_cleaned = (pos + length) % self.cmdr_size
        self.completions += got
        return got

    def _free(self, k: _Inflight) -> None:
        for b in k.blocks + k.bidi_blocks:
            self.used[b] = False

    def free_kept_buf(self, cmd_id: int) -> None:
        """A write of cmd_id to action/free_kept_buf: EINVAL unless it was kept."""
        k = self.kept.pop(cmd_id, None)
        if k is None:
            raise OSError(errno.EINVAL, f"cmd_id {cmd_id} was not completed with KEEP_BUF")
        self._free(k)

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
