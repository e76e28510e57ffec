"""`tcmu-harness run --paths N` and LUNs that sd does not bind, each in its own process
and VM (harness/cli.py)."""

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
    return subprocess.run([sys.executable, "-m", "harness", "run", *argv], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy(), check=False)


# Two initiators, one LUN: register a key from each, path 1 reserves Write Exclusive,
# path 2 lists both keys and the reservation, and path 2's WRITE(10) is RESERVATION
# CONFLICT (sg_raw exit 24) while its READ(10) is GOOD.
PR_REPRODUCTION = """
set -u
echo "paths: ${TCMU_SG#/dev/} ${TCMU_SG_2#/dev/} disk=$(printenv TCMU_DISK || echo unset)"
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


def test_run_paths_2_reproduces_a_two_initiator_reservation_with_sg_persist() -> None:
    """--paths 2: TCMU_SG and TCMU_SG_2 are two sg nodes of one backstore, on two I_T
    nexuses (LIO keeps one registration per nexus); TCMU_DISK is unset, the command
    not naming it (printenv reads it without naming $TCMU_DISK)."""
    proc = _run(["--paths", "2", "--", "sh", "-c", PR_REPRODUCTION])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    first, second = lines[0].split()[1:3]
    assert first.startswith("sg") and second.startswith("sg") and first != second, lines[0]
    assert lines[0].endswith(" disk=unset"), lines[0]
    text = "\n".join(line.strip() for line in lines[1:])
    assert text == ("PR generation=0x2, 2 registered reservation keys follow:\n0xa\n0xb\n"
                    "PR generation=0x2, Reservation follows:\nKey=0xa\n"
                    "scope: LU_SCOPE,  type: Write Exclusive\n"
                    "write via path 2: 24\nread via path 2: 0"), text


def test_run_serves_a_lun_that_sd_does_not_bind_when_the_command_uses_only_tcmu_sg() -> None:
    """A handler whose INQUIRY says peripheral qualifier 1: no sd node, but the command
    uses only $TCMU_SG, so it runs (the sd node was never looked for) and its status is
    the run's: the peripheral qualifier as sg_inq sees it, TCMU_DISK unset."""
    proc = _run(["--handler", f"{HANDLERS}:QualifierOne", "--", "sh", "-c",
                 'sg_inq "$TCMU_SG" | grep -o "PQual=[0-9]";'
                 ' echo "disk=$(printenv TCMU_DISK || echo unset)";'
                 ' exit 3'])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout == "PQual=1\ndisk=unset\n", proc.stdout
