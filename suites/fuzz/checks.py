"""What the fuzz suite demands of every answer, whatever the CDB, and how a failing
command is printed for replay.

Acceptable statuses (SAM-5 5.3) for a command sent alone, on an idle LUN, by the only
initiator:
    GOOD, CHECK CONDITION      any command
    CONDITION MET              PRE-FETCH(10/16) only (SBC-4 5.9: the blocks fit the cache)
    RESERVATION CONFLICT       PERSISTENT RESERVE OUT and RESERVE/RELEASE(6/10) only: the
                               kernel answers them itself and refuses a wrong reservation
                               key with it (SPC-4 5.13); no other command can conflict,
                               since no other I_T nexus exists
BUSY, TASK SET FULL, ACA ACTIVE, TASK ABORTED and anything else are wrong here: nothing
else is queued, so there is nothing to be busy with or abort. The transport must say
DID_OK (no timeout, no reset, no aborted command).

Sense with CHECK CONDITION (SPC-4 4.5): present; response code 70h-73h; fixed format
with ADDITIONAL SENSE LENGTH >= 10 (through the ASC/ASCQ and sense key specific bytes);
descriptor format whose descriptors fit the additional length, each well formed
(initiator.sense lists every deviation); sense key not the reserved 0Fh. HARDWARE
ERROR, INTERNAL TARGET FAILURE (44/00) is what the tcmu runtime answers when an exception
escapes handle() (tcmu/runner.py): the handler crashed on the command, and fails it too.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tcmu_harness.initiator.result import CdbResult, status_name
from tcmu_harness.initiator.sense import decode_sense
from tcmu_harness.scsi.constants import Asc, SenseKey, Status

_PRE_FETCH = {0x34, 0x90}
_RESERVATIONS = {0x5F, 0x16, 0x17, 0x56, 0x57}  # PR OUT, RESERVE/RELEASE(6/10)
_RESERVED_SENSE_KEY = 0x0F
CRASH_SENSE = (SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE >> 8, 0x00)
CRASHED = "HARDWARE ERROR 44/00: the runtime's answer to an exception escaping handle()"


@dataclass(frozen=True)
class FuzzCase:
    """One command to send: its CDB, data-out (None: none) and data-in length."""

    cdb: bytes
    data_out: bytes | None = None
    data_in_len: int = 0
    origin: str = ""  # how it was made, e.g. "WRITE SAME(16) with bits 17, 40 flipped"


def acceptable_statuses(cdb: bytes) -> set[int]:
    allowed = {Status.GOOD, Status.CHECK_CONDITION}
    if cdb and cdb[0] in _PRE_FETCH:
        allowed.add(Status.CONDITION_MET)
    if cdb and cdb[0] in _RESERVATIONS:
        allowed.add(Status.RESERVATION_CONFLICT)
    return {int(s) for s in allowed}


def answer_problems(result: CdbResult) -> list[str]:
    """Everything wrong with one answer (empty: acceptable)."""
    if result.timed_out or not result.transport_ok:
        return ["the command did not complete with a SCSI status (transport failure or "
                "timeout)"]
    problems = []
    if result.status not in acceptable_statuses(result.cdb):
        problems.append(f"status {status_name(result.status)} (0x{result.status:02x}) is not "
                        "acceptable for this command (suites/fuzz/checks.py says which are)")
    if result.status == Status.CHECK_CONDITION:
        problems += sense_problems(result.sense)
    return problems


def sense_problems(sense: bytes) -> list[str]:
    if not sense:
        return ["CHECK CONDITION without sense data"]
    decoded = decode_sense(sense)
    problems = [f"sense: {p}" for p in decoded.problems]
    if not decoded.valid and not problems:
        problems.append("sense data that cannot be decoded")
    elif decoded.valid and decoded.key == _RESERVED_SENSE_KEY:
        problems.append("sense key 0Fh is reserved")
    elif decoded.valid and (decoded.key, decoded.asc, decoded.ascq) == CRASH_SENSE:
        problems.append(CRASHED)
    return problems


def replay_line(case: FuzzCase, handler_args: str, data_file: Path | None) -> str:
    """The command line that sends `case` again on a fresh LUN of the same handler."""
    sg_raw = ["sg_raw"]
    if case.data_in_len:
        sg_raw += ["-r", str(case.data_in_len)]
    if case.data_out:  # an empty data-out is no data transfer, as without -s
        sg_raw += ["-s", str(len(case.data_out)), "-i", str(data_file) if data_file else "FILE"]
    words = " ".join(shlex.quote(w) for w in sg_raw)
    return (f"tcmu-harness run {handler_args} -- {words} '$TCMU_SG' "
            f"{case.cdb.hex(' ')}")
