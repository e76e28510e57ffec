"""Every binary layout of the TCMU ring, declared once.

Each layout is a list of (field name, struct format) in C order, with the padding the
compiler inserts written out explicitly (fields named "_..." with an "x" format). From
that one declaration we derive the field offsets, the total size and precompiled
`struct.Struct` objects; no other module writes an offset by hand.

Source of truth: /usr/include/linux/target_core_user.h (mailbox version 2, x86_64,
little endian). tests/tcmu/test_layout.py compiles the header with gcc and compares.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

MAILBOX_VERSION = 2
SENSE_BUFFER_SIZE = 96  # TCMU_SENSE_BUFFERSIZE
OP_ALIGN = 8  # TCMU_OP_ALIGN_SIZE: every entry length is a multiple of this
OP_MASK = 0x7  # TCMU_OP_MASK: low bits of len_op hold the opcode


class Op(enum.IntEnum):
    PAD = 0
    CMD = 1
    TMR = 2


class UFlag(enum.IntFlag):
    UNKNOWN_OP = 0x1
    READ_LEN = 0x2
    KEEP_BUF = 0x4


class Cap(enum.IntFlag):
    """tcmu_mailbox.flags: what the kernel offers."""

    OOOC = 1 << 0  # out-of-order completion
    READ_LEN = 1 << 1
    TMR = 1 << 2
    KEEP_BUF = 1 << 3


class TmrType(enum.IntEnum):
    UNKNOWN = 0
    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LUN_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    LUN_RESET_PRO = 128  # pseudo reset caused by a PR OUT


class Layout:
    """A C struct as an ordered list of (name, struct format) fields.

    Padding fields (format ending in "x") take space but are neither packed nor
    unpacked, so `struct` packs/unpacks exactly the named fields, in order.
    """

    def __init__(self, name: str, fields: Sequence[tuple[str, str]], c_decl: str) -> None:
        self.__doc__ = c_decl  # the C declaration this mirrors
        self.name = name
        self.fields = tuple(fields)
        self.offsets: dict[str, int] = {}
        fmt = "<"
        for field, code in self.fields:
            self.offsets[field] = struct.calcsize(fmt)
            fmt += code
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.names = tuple(f for f, code in self.fields if not code.endswith("x"))

    def offset(self, field: str) -> int:
        return self.offsets[field]

    def field_struct(self, field: str) -> struct.Struct:
        """A Struct for one named field alone (use with offset(field))."""
        code = dict(self.fields)[field]
        if code.endswith("x"):
            raise ValueError(f"{self.name}.{field} is padding")
        return struct.Struct("<" + code)

    def __repr__(self) -> str:
        return f"Layout({self.name}, size={self.size})"


MAILBOX = Layout(
    "tcmu_mailbox",
    [
        ("version", "H"),
        ("flags", "H"),
        ("cmdr_off", "I"),
        ("cmdr_size", "I"),
        ("cmd_head", "I"),
        ("_align", "48x"),  # cmd_tail is __aligned__(64): its own cache line
        ("cmd_tail", "I"),
        ("_tail_pad", "60x"),  # the struct is rounded up to its 64-byte alignment
    ],
    """
struct tcmu_mailbox {
    __u16 version;
    __u16 flags;
    __u32 cmdr_off;
    __u32 cmdr_size;
    __u32 cmd_head;
    __u32 cmd_tail __attribute__((__aligned__(ALIGN_SIZE)));   /* ALIGN_SIZE 64 */
} __attribute__((packed));
""",
)

_HDR_FIELDS = [("len_op", "I"), ("cmd_id", "H"), ("kflags", "B"), ("uflags", "B")]

ENTRY_HDR = Layout(
    "tcmu_cmd_entry_hdr", _HDR_FIELDS,
    """
struct tcmu_cmd_entry_hdr {
    __u32 len_op;       /* length (8-aligned) | opcode in the low 3 bits */
    __u16 cmd_id;
    __u8 kflags;
    __u8 uflags;        /* TCMU_UFLAG_UNKNOWN_OP 1, READ_LEN 2, KEEP_BUF 4 */
} __attribute__((packed));
""",
)

# The request and response views of struct tcmu_cmd_entry (a union after the header).
# The outer struct is packed but the inner anonymous struct is not, so the compiler
# leaves a 4-byte hole before the u64 cdb_off.
CMD_REQ = Layout(
    "tcmu_cmd_entry.req",
    [
        *_HDR_FIELDS,
        ("iov_cnt", "I"),
        ("iov_bidi_cnt", "I"),
        ("iov_dif_cnt", "I"),
        ("_hole", "4x"),
        ("cdb_off", "Q"),
        ("_pad1", "8x"),
        ("_pad2", "8x"),
        # struct iovec iov[0] follows: IOVEC at offset CMD_REQ.size + i * IOVEC.size
    ],
    """
struct tcmu_cmd_entry {
    struct tcmu_cmd_entry_hdr hdr;
    union {
        struct {
            __u32 iov_cnt;
            __u32 iov_bidi_cnt;
            __u32 iov_dif_cnt;
            __u64 cdb_off;      /* offset from the start of the mapping */
            __u64 __pad1;
            __u64 __pad2;
            struct iovec iov[0];
        } req;
        struct { ... } rsp;
    };
} __attribute__((packed));
""",
)

IOVEC = Layout(
    "iovec", [("iov_base", "Q"), ("iov_len", "Q")],
    """
struct iovec { void *iov_base; __kernel_size_t iov_len; };
/* in the ring, iov_base is an offset from the start of the mapping */
""",
)

CMD_RSP = Layout(
    "tcmu_cmd_entry.rsp",
    [
        *_HDR_FIELDS,
        ("scsi_status", "B"),
        ("_pad1", "x"),
        ("_pad2", "2x"),
        ("read_len", "I"),
        ("sense_buffer", f"{SENSE_BUFFER_SIZE}s"),
    ],
    """
        struct {
            __u8 scsi_status;
            __u8 __pad1;
            __u16 __pad2;
            __u32 read_len;     /* honoured when hdr.uflags has TCMU_UFLAG_READ_LEN */
            char sense_buffer[TCMU_SENSE_BUFFERSIZE];
        } rsp;
""",
)

TMR_ENTRY = Layout(
    "tcmu_tmr_entry",
    [
        *_HDR_FIELDS,
        ("tmr_type", "B"),
        ("_pad1", "x"),
        ("_pad2", "2x"),
        ("cmd_cnt", "I"),
        ("_pad3", "8x"),
        ("_pad4", "8x"),
        # __u16 cmd_ids[] follows at TMR_ENTRY.size
    ],
    """
struct tcmu_tmr_entry {
    struct tcmu_cmd_entry_hdr hdr;
    __u8 tmr_type;
    __u8 __pad1;
    __u16 __pad2;
    __u32 cmd_cnt;
    __u64 __pad3;
    __u64 __pad4;
    __u16 cmd_ids[];
} __attribute__((packed));
""",
)

# sizeof(struct tcmu_cmd_entry): the union is as large as its larger member (rsp).
CMD_ENTRY_SIZE = max(CMD_REQ.size, CMD_RSP.size)
IOV_ARRAY_OFF = CMD_REQ.size  # offsetof(struct tcmu_cmd_entry, req.iov)
TMR_CMD_IDS_OFF = TMR_ENTRY.size  # offsetof(struct tcmu_tmr_entry, cmd_ids)
CMD_ID = struct.Struct("<H")  # one element of tcmu_tmr_entry.cmd_ids

ALL_LAYOUTS = (MAILBOX, ENTRY_HDR, CMD_REQ, IOVEC, CMD_RSP, TMR_ENTRY)


def entry_size(iov_cnt: int, cdb_len: int) -> int:
    """Length of a CMD entry as the kernel computes it (tcmu_cmd_get_cmd_size)."""
    base = max(IOV_ARRAY_OFF + iov_cnt * IOVEC.size, CMD_ENTRY_SIZE)
    return base + align(cdb_len)


def align(n: int, to: int = OP_ALIGN) -> int:
    return (n + to - 1) // to * to
