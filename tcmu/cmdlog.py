"""The command log: one JSON object per line, written with one write(2) each.

Tests read it to learn which commands reached userspace and what they were answered:
  {"cmd_id": 3, "cdb": "120000002400", "status": 0, "sense": "", "t": 12.345678, "us": 41}
  {"tmr": 5, "cmd_ids": [3, 4]}
t is time.monotonic() at completion; us the handler's time in microseconds (for a
deferred command: from the handle() call to the completion reaching the runner).
Lines are formatted by hand (all values are ints or hex strings): cheaper than json.
"""

from __future__ import annotations

import os
import time


class CommandLog:
    """batched=True: lines wait in memory until flush(), which writes them with one
    write(2); the runner flushes before it tells the kernel of the completions, so a
    command's line is in the file before its initiator sees the command complete."""

    def __init__(self, path: str, *, batched: bool = False) -> None:
        # O_APPEND + one write per line (or batch): lines never interleave.
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._pending: list[str] | None = [] if batched else None

    def _line(self, line: str) -> None:
        if self._pending is None:
            os.write(self.fd, line.encode())
        else:
            self._pending.append(line)

    def command(self, cmd_id: int, cdb: bytes, status: int, sense: bytes, us: int) -> None:
        self._line(
            f'{{"cmd_id": {cmd_id}, "cdb": "{cdb.hex()}", "status": {status}, '
            f'"sense": "{sense.hex()}", "t": {time.monotonic():.6f}, "us": {us}}}\n'
        )

    def tmr(self, tmr_type: int, cmd_ids: list[int]) -> None:
        ids = ", ".join(map(str, cmd_ids))
        self._line(f'{{"tmr": {tmr_type}, "cmd_ids": [{ids}]}}\n')

    def flush(self) -> None:
        pending = self._pending
        if pending:
            os.write(self.fd, "".join(pending).encode())
            pending.clear()

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1
