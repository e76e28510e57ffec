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
    def __init__(self, path: str) -> None:
        # O_APPEND + one write per line: no buffering to flush, lines never interleave.
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def command(self, cmd_id: int, cdb: bytes, status: int, sense: bytes, us: int) -> None:
        os.write(
            self.fd,
            (
                f'{{"cmd_id": {cmd_id}, "cdb": "{cdb.hex()}", "status": {status}, '
                f'"sense": "{sense.hex()}", "t": {time.monotonic():.6f}, "us": {us}}}\n'
            ).encode(),
        )

    def tmr(self, tmr_type: int, cmd_ids: list[int]) -> None:
        ids = ", ".join(map(str, cmd_ids))
        os.write(self.fd, f'{{"tmr": {tmr_type}, "cmd_ids": [{ids}]}}\n'.encode())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
