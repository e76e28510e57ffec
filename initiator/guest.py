"""Guest-side entry points of the initiator, called by the host through the agent
(`vm.call("tcmu_harness.initiator.guest:sg_io", ...)`). Arguments and results are JSON + bytes."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from tcmu_harness.initiator import sg3, sgio


def sg_io(
    device: str,
    cdb: bytes,
    data_out: bytes | None = None,
    data_in_len: int = 0,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """One SG_IO on `device` (kept open between calls)."""
    return sgio.sg_io(device, cdb, data_out=data_out, data_in_len=data_in_len,
                      timeout=timeout).to_dict()


def sg_io_batch(device: str, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several SG_IOs in order, one agent round trip: each command is a dict of sg_io's
    arguments (cdb, data_out, data_in_len, timeout). Every command runs, whatever the
    status of the previous ones."""
    return [sg_io(device, **command) for command in commands]


def sg_io_concurrent(device: str, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several SG_IOs in flight at once, one thread each (SG_IO blocks until its own
    command completes): each command is a dict of sg_io's arguments plus an optional
    "delay" (seconds after the start before it is sent, to order arrivals) and an
    optional "device" (another sg node, e.g. a second I_T nexus). Results in
    the order given, each with "sent_s": when it was sent, from the start. At most 16
    (the sg driver's requests per open file)."""
    if len(commands) > 16:
        raise ValueError(f"{len(commands)} concurrent commands: sg takes at most 16 per file")
    results: list[dict[str, Any]] = [{} for _ in commands]
    start = time.monotonic()

    def issue(i: int, command: dict[str, Any]) -> None:
        command = dict(command)
        node = command.pop("device", device)
        time.sleep(max(0.0, start + command.pop("delay", 0.0) - time.monotonic()))
        sent = time.monotonic() - start
        try:
            results[i] = {**sg_io(node, **command), "sent_s": sent}
        except Exception as exc:  # reported per command, like a status
            results[i] = {"error": f"{type(exc).__name__}: {exc}", "sent_s": sent}

    threads = [threading.Thread(target=issue, args=(i, c)) for i, c in enumerate(commands)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def close(device: str) -> None:
    """Close the cached descriptor of `device` (before the device goes away)."""
    sgio.close(device)


def sg3_tool(tool: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run one sg3_utils wrapper of initiator/sg3.py; returns its result's class name
    and fields (the host rebuilds the dataclass)."""
    func = getattr(sg3, tool, None)
    if not tool.startswith("sg_") or func is None:
        raise ValueError(f"{tool} is not an sg3_utils wrapper in initiator/sg3.py")
    result = func(**kwargs)
    return {"type": type(result).__name__, "fields": dataclasses.asdict(result)}
