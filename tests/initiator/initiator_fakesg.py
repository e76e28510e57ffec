"""The test side of the fakesg LD_PRELOAD shim (fakesg.c): its rules and its log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

FAKE_DEVICE = "/dev/null"  # the shim answers SG_IO on /dev/null only


@dataclasses.dataclass(frozen=True)
class SgIoCall:
    cdb: bytes
    direction: int  # SG_DXFER_*
    length: int  # dxfer_len
    data_out: bytes
    timeout_ms: int


@dataclasses.dataclass
class FakeSg:
    """Rules for the shim's answers, and the log of what it was sent."""

    library: Path
    rules_path: Path
    log_path: Path
    device: str = FAKE_DEVICE

    def rules(self, text: str) -> None:
        """Replace the rules: lines of "CDB_PREFIX STATUS SENSE DATA [HOST [DRIVER]]"."""
        self.rules_path.write_text(text)

    def log(self) -> list[SgIoCall]:
        """Every SG_IO the shim answered, oldest first."""
        if not self.log_path.exists():
            return []
        calls = []
        for line in self.log_path.read_text().splitlines():
            cdb, direction, length, out, timeout = line.split()
            calls.append(SgIoCall(bytes.fromhex(cdb), int(direction), int(length),
                                  b"" if out == "-" else bytes.fromhex(out), int(timeout)))
        return calls

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(self.library), "FAKESG_RULES": str(self.rules_path),
                "FAKESG_LOG": str(self.log_path)}
