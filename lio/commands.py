"""Guest-side entry points for commands to a LUN by name, sent under the watchdog
(lio.watchdog): a handler that dies or hangs with one of them in flight makes it raise
HandlerFailure with the verdict, not time out. The host's harness.lun.Lun calls these
(`vm.call("tcmu_harness.lio.commands:sg_io", name=...)`); arguments and results are JSON + bytes.
"""

from __future__ import annotations

from typing import Any

from tcmu_harness.initiator import guest, sg3
from tcmu_harness.lio import watchdog


def sg_io(
    name: str,
    cdb: bytes,
    data_out: bytes | None = None,
    data_in_len: int = 0,
    timeout: float = 30.0,
    path: int = 0,
) -> dict[str, Any]:
    """One SG_IO on the LUN's sg node (initiator.guest.sg_io), watched; `path` > 0: on
    the sg node of that extra I_T nexus (lio.lun.add_path) instead."""
    with watchdog.command(name, watchdog.describe_cdb(cdb), timeout) as lun:
        sg = lun.path_sg(path) if path else lun.sg  # type: ignore[attr-defined]
        return guest.sg_io(sg, cdb, data_out=data_out, data_in_len=data_in_len,
                           timeout=timeout)


def sg_io_batch(name: str, commands: list[dict[str, Any]], path: int = 0
                ) -> list[dict[str, Any]]:
    """Several SG_IOs in order (see initiator.guest.sg_io_batch), each one watched: the
    first that the handler fails on raises, and the rest are not sent. A command's own
    "path" overrides `path`."""
    return [sg_io(name, **{"path": path, **command}) for command in commands]


def sg3_tool(name: str, tool: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One sg3_utils wrapper on the LUN (initiator.guest.sg3_tool), watched."""
    timeout = float(kwargs.get("timeout", sg3.DEFAULT_TIMEOUT))
    with watchdog.command(name, f"{tool} (sg3_utils)", timeout) as lun:
        return guest.sg3_tool(tool, {"device": lun.sg, **kwargs})
