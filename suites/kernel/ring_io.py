"""Host-side helpers of the ring suites (test_ring_*.py): commands sent straight to SG_IO
in the guest (initiator.guest), around the harness's watchdog, because these tests hold
commands in the ring, stop the handler and reset the ring on purpose; several commands
in flight at once; the backstore's action/ files; the TMR records of the command log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import HandlerCommand, Lun
from tcmu_harness.suites.kernel.kernel_handlers import HOLD_OPCODE

T = TypeVar("T")
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ring-io")


def sg_io(lun: Lun, cdb: bytes, *, data_in_len: int = 0, timeout: float = 30.0) -> CdbResult:
    """One SG_IO on the LUN's sg node, not watched."""
    return CdbResult.from_dict(lun.vm.call(
        "tcmu_harness.initiator.guest:sg_io", device=lun.sg, cdb=cdb, data_in_len=data_in_len,
        timeout=timeout, call_timeout=timeout + 60))


def concurrently(lun: Lun, commands: list[dict[str, Any]]) -> list[CdbResult]:
    """initiator.guest.sg_io_concurrent on the LUN's sg node (a command's "device" may
    name another path's); results in the order given."""
    longest = max(c.get("timeout", 30.0) + c.get("delay", 0.0) for c in commands)
    answers = lun.vm.call("tcmu_harness.initiator.guest:sg_io_concurrent", device=lun.sg,
                          commands=commands, call_timeout=longest + 60)
    results = []
    for answer in answers:
        if "error" in answer:
            raise AssertionError(f"SG_IO failed in the guest: {answer['error']}")
        answer.pop("sent_s")
        results.append(CdbResult.from_dict(answer))
    return results


def in_background(fn: Callable[[], T]) -> Future[T]:
    return _POOL.submit(fn)


def after(delay: float, fn: Callable[[], T]) -> Future[T]:
    """fn() in a host thread, `delay` seconds from now."""
    def run() -> T:
        time.sleep(delay)
        return fn()
    return _POOL.submit(run)


def action(lun: Lun, name: str, value: int) -> None:
    """Write `value` to the backstore's action/`name` (block_dev, reset_ring)."""
    lun.vm.write_file(f"{lun.backstore_dir}/action/{name}", f"{value}\n".encode())


def has_action(lun: Lun, name: str) -> bool:
    return lun.vm.run(["test", "-e", f"{lun.backstore_dir}/action/{name}"]).exit_code == 0


def tmr_records(lun: Lun) -> list[tuple[int, list[int]]]:
    """The TMR notifications the handler's runtime logged: (tmr_type, cmd_ids)."""
    lines = lun.vm.read_file(lun.info["command_log"]).splitlines()
    return [(e["tmr"], e["cmd_ids"]) for e in map(json.loads, lines) if "tmr" in e]


def held(lun: Lun) -> list[tuple[int, HandlerCommand]]:
    """The HOLD_OPCODE commands the handler completed, in completion order, each with
    its tag (CDB bytes 2-5)."""
    return [(int.from_bytes(c.cdb[2:6], "big"), c) for c in lun.handler_commands()
            if c.opcode == HOLD_OPCODE]
