"""The batched command log: lines wait for flush(), and the runner flushes them before it
tells the kernel of the completions (so a test that sees its command complete finds the
command's line in the log)."""

from __future__ import annotations

import json
import select
from pathlib import Path

from test_runner import INQUIRY, TUR, Rig, Scripted

from tcmu.cmdlog import CommandLog


def test_batched_lines_wait_for_flush_and_go_in_one_write(tmp_path: Path) -> None:
    path = tmp_path / "cmds.jsonl"
    log = CommandLog(str(path), batched=True)
    log.command(3, TUR, 0, b"", 7)
    log.tmr(1, [3, 4])
    assert path.read_text() == ""
    log.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x.get("cmd_id"), x.get("tmr")) for x in lines] == [(3, None), (None, 1)]
    log.command(5, INQUIRY, 2, b"\x70", 1)
    log.close()  # close flushes what is left
    assert json.loads(path.read_text().splitlines()[-1])["cmd_id"] == 5


class _OrderLog(CommandLog):
    """Records, at each flush, whether a kick already waited on the kernel's end."""

    def __init__(self, path: str, kernel_end: object) -> None:
        super().__init__(path, batched=True)
        self.kernel_end = kernel_end
        self.kicked_before_flush: list[bool] = []

    def flush(self) -> None:
        if self._pending:
            ready = select.select([self.kernel_end], [], [], 0)[0]
            self.kicked_before_flush.append(bool(ready))
        super().flush()


def test_runner_writes_the_batch_before_the_kick(tmp_path: Path) -> None:
    rig = Rig(Scripted())
    log = _OrderLog(str(tmp_path / "cmds.jsonl"), rig.kernel_end)
    rig.log = rig.runner.log_file = log
    ids = [rig.k.queue_cmd(TUR, notify=False) for _ in range(3)]
    rig.start()  # the first pass finds all three without an event
    try:
        assert select.select([rig.kernel_end], [], [], 5)[0], "no kick"
        done = rig.wait(3)
        assert [c.cmd_id for c in done] == ids
        assert log.kicked_before_flush == [False]  # one batch, written before its kick
        lines = [json.loads(x) for x in (tmp_path / "cmds.jsonl").read_text().splitlines()]
        assert [x["cmd_id"] for x in lines] == ids
        assert rig.kicks == 1 and rig.runner.wakeups == 1 and rig.runner.commands == 3
    finally:
        rig.stop()
