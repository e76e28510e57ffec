"""tcmu.layout against the kernel header, compiled with gcc (offsetof/sizeof)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tcmu import layout as L

HEADER = "/usr/include/linux/target_core_user.h"

# layout -> (C type, prefix of its named fields inside that type)
C_NAMES = {
    L.MAILBOX: ("struct tcmu_mailbox", ""),
    L.ENTRY_HDR: ("struct tcmu_cmd_entry_hdr", ""),
    L.CMD_REQ: ("struct tcmu_cmd_entry", "req."),
    L.CMD_RSP: ("struct tcmu_cmd_entry", "rsp."),
    L.TMR_ENTRY: ("struct tcmu_tmr_entry", ""),
    L.IOVEC: ("struct iovec", ""),
}
HDR_FIELDS = {"len_op", "cmd_id", "kflags", "uflags"}

CONSTANTS = {
    "TCMU_MAILBOX_VERSION": L.MAILBOX_VERSION,
    "TCMU_MAILBOX_FLAG_CAP_OOOC": L.Cap.OOOC,
    "TCMU_MAILBOX_FLAG_CAP_READ_LEN": L.Cap.READ_LEN,
    "TCMU_MAILBOX_FLAG_CAP_TMR": L.Cap.TMR,
    "TCMU_MAILBOX_FLAG_CAP_KEEP_BUF": L.Cap.KEEP_BUF,
    "TCMU_OP_PAD": L.Op.PAD,
    "TCMU_OP_CMD": L.Op.CMD,
    "TCMU_OP_TMR": L.Op.TMR,
    "TCMU_OP_MASK": L.OP_MASK,
    "TCMU_OP_ALIGN_SIZE": L.OP_ALIGN,
    "TCMU_UFLAG_UNKNOWN_OP": L.UFlag.UNKNOWN_OP,
    "TCMU_UFLAG_READ_LEN": L.UFlag.READ_LEN,
    "TCMU_UFLAG_KEEP_BUF": L.UFlag.KEEP_BUF,
    "TCMU_SENSE_BUFFERSIZE": L.SENSE_BUFFER_SIZE,
    **{f"TCMU_TMR_{t.name}": t.value for t in L.TmrType},
}


def _expectations() -> dict[str, int]:
    """C expression -> the value our declarations give it."""
    want: dict[str, int] = {}
    for layout, (ctype, prefix) in C_NAMES.items():
        if layout not in (L.CMD_REQ, L.CMD_RSP):
            want[f"sizeof({ctype})"] = layout.size
        for name in layout.names:
            in_hdr = name in HDR_FIELDS and layout is not L.ENTRY_HDR
            member = f"hdr.{name}" if in_hdr else f"{prefix}{name}"
            want[f"offsetof({ctype}, {member})"] = layout.offset(name)
    want["sizeof(struct tcmu_cmd_entry)"] = L.CMD_ENTRY_SIZE
    want["offsetof(struct tcmu_cmd_entry, req.iov)"] = L.IOV_ARRAY_OFF
    want["offsetof(struct tcmu_tmr_entry, cmd_ids)"] = L.TMR_CMD_IDS_OFF
    want["sizeof(((struct tcmu_tmr_entry *)0)->cmd_ids[0])"] = L.CMD_ID.size
    want["offsetof(struct tcmu_cmd_entry, rsp.sense_buffer) + TCMU_SENSE_BUFFERSIZE"] = (
        L.CMD_RSP.size
    )
    for macro, value in CONSTANTS.items():
        want[f"(long)({macro})"] = int(value)
    return want


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc/cc) to compile the kernel header with")
    if not os.path.exists(HEADER):
        pytest.skip(f"{HEADER} is missing (install linux-libc-dev)")
    exprs = list(_expectations())
    src = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/target_core_user.h>",
           "int main(void) {"]
    src += [f'    printf("%ld\\n", (long)({e}));' for e in exprs]
    src += ["    return 0;", "}"]
    d = tmp_path_factory.mktemp("layout")
    (d / "t.c").write_text("\n".join(src) + "\n")
    subprocess.run([gcc, "-o", str(d / "t"), str(d / "t.c")], check=True, capture_output=True)
    out = subprocess.run([str(d / "t")], check=True, capture_output=True, text=True).stdout
    return dict(zip(exprs, map(int, out.split()), strict=True))


def test_every_declared_offset_size_and_constant_matches_the_header(
    compiled: dict[str, int],
) -> None:
    want = _expectations()
    wrong = {e: (want[e], compiled[e]) for e in want if want[e] != compiled[e]}
    assert not wrong, f"ours vs kernel header: {wrong}"


def test_layout_arithmetic() -> None:
    assert L.MAILBOX.offset("cmd_tail") == 64
    assert L.CMD_REQ.offset("cdb_off") == 24  # the hole after iov_dif_cnt
    assert L.CMD_RSP.offset("read_len") == 12
    # kernel: max(offsetof(req.iov[n]), sizeof(entry)) + round_up(cdb_len, 8)
    assert L.entry_size(0, 6) == 112 + 8
    assert L.entry_size(4, 16) == 112 + 16
    assert L.entry_size(5, 10) == 48 + 5 * 16 + 16
    assert L.MAILBOX.names == ("version", "flags", "cmdr_off", "cmdr_size", "cmd_head", "cmd_tail")
    with pytest.raises(ValueError):
        L.CMD_REQ.field_struct("_hole")
