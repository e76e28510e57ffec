"""What a run left behind, read from the host's process table (tests of teardown)."""

from __future__ import annotations

import os
from pathlib import Path


def processes_mentioning(text: str) -> list[str]:
    """'pid: argv' of every process whose command line contains `text` (not this one):
    a run's QEMU names its private temp dir in its argv."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in argv and cmdline.parent.name != str(os.getpid()):
            found.append(f"{cmdline.parent.name}: {argv}")
    return found
