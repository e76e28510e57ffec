"""`tcmu-harness run --paths N` on a LUN that sd does not bind, in its own process and VM
(harness/cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]
HANDLERS = Path(__file__).resolve().parent / "not_a_disk_handlers.py"


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcmu_harness", "run", *argv], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy(), check=False)


# Two initiators, one LUN: path 2's peripheral qualifier, then a key registered from
# each path, path 1 reserves Write Exclusive, path 2 lists both keys and the
# reservation, and path 2's WRITE(10) is RESERVATION CONFLICT (sg_raw exit 24) while
# its READ(10) is GOOD.
PR_REPRODUCTION = """
set -u
echo "paths: ${TCMU_SG#/dev/} ${TCMU_SG_2#/dev/} disk=$(printenv TCMU_DISK || echo unset)"
sg_inq "$TCMU_SG_2" | grep -o "PQual=[0-9]"
sg_persist -n -o -G -S 0xa "$TCMU_SG" || exit 90
sg_persist -n -o -G -S 0xb "$TCMU_SG_2" || exit 91
sg_persist -n -o -R -K 0xa -T 1 "$TCMU_SG" || exit 92
sg_persist -n -k "$TCMU_SG_2"
sg_persist -n -r "$TCMU_SG_2"
sg_raw -s 512 -i /dev/zero "$TCMU_SG_2" 2a 00 00 00 00 20 00 00 01 00 2>/dev/null
echo "write via path 2: $?"
sg_raw -r 512 -o /dev/null "$TCMU_SG_2" 28 00 00 00 00 20 00 00 01 00 2>/dev/null
echo "read via path 2: $?"
"""


def test_run_paths_2_reproduces_a_two_initiator_reservation_on_a_lun_sd_does_not_bind() -> None:
    """--paths 2 with a handler whose INQUIRY says peripheral qualifier 1 (no sd node on
    either path): TCMU_SG and TCMU_SG_2 are two sg nodes of one backstore on two I_T
    nexuses (LIO keeps one registration per nexus), the command uses only them, so it
    runs (no sd node is looked for: before, such a LUN made the run exit 4) and
    TCMU_DISK is unset (printenv reads it without naming $TCMU_DISK). One VM for both
    checks: a boot costs more than the checks."""
    proc = _run(["--paths", "2", "--handler", f"{HANDLERS}:QualifierOne", "--",
                 "sh", "-c", PR_REPRODUCTION])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    first, second = lines[0].split()[1:3]
    assert first.startswith("sg") and second.startswith("sg") and first != second, lines[0]
    assert lines[0].endswith(" disk=unset"), lines[0]
    text = "\n".join(line.strip() for line in lines[1:])
    assert text == ("PQual=1\n"
                    "PR generation=0x2, 2 registered reservation keys follow:\n0xa\n0xb\n"
                    "PR generation=0x2, Reservation follows:\nKey=0xa\n"
                    "scope: LU_SCOPE,  type: Write Exclusive\n"
                    "write via path 2: 24\nread via path 2: 0"), text
