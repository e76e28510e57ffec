"""One fuzz example: send its commands, judge every answer, check the medium, and on any
failure say how to replay it."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from tcmu_harness.lun import HandlerFailure, LunSpec
from tcmu_harness.suites.fuzz.checks import CRASHED, FuzzCase, answer_problems, replay_line
from tcmu_harness.suites.fuzz.footprint import NOTHING, footprint
from tcmu_harness.suites.fuzz.medium import PatternedMedium


class FuzzFailure(AssertionError):
    """A fuzz example failed: what was wrong, then replay lines."""


def handler_args(spec: LunSpec, medium: PatternedMedium) -> str:
    """`tcmu-harness run` options that make the LUN the example ran on."""
    words = " ".join([spec.handler, *(f"{k}={v}" for k, v in spec.handler_options.items())])
    return (f"--handler {shlex.quote(words)} --size {medium.blocks * medium.bs} "
            f"--block-size {medium.bs}")


def _data_file(case: FuzzCase, data_dir: Path) -> Path | None:
    if not case.data_out:
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"data-out-{hashlib.sha1(case.data_out).hexdigest()[:12]}.bin"
    path.write_bytes(case.data_out)
    return path


def _replay(cases: list[FuzzCase], args: str, data_dir: Path) -> str:
    lines = [f"  # {case.origin}\n  {replay_line(case, args, _data_file(case, data_dir))}"
             for case in cases]  # fmt: skip
    head = "replay" if len(cases) == 1 else f"replay (the {len(cases)} commands, in order)"
    return f"{head}:\n" + "\n".join(lines)


def run_example(medium: PatternedMedium, cases: list[FuzzCase], args: str, seed: int,
                data_dir: Path) -> None:
    """Send `cases` in one batch; every answer must be acceptable (suites/fuzz/checks.py)
    and no block outside their footprints may change. Raises FuzzFailure, or
    HandlerFailure when the handler died or hung, with the replay lines."""
    __tracebackhide__ = True
    failure: type[AssertionError] = FuzzFailure
    try:
        results = medium.lun.cdbs([(c.cdb, c.data_out, c.data_in_len) for c in cases])
        message = ""
        for number, (case, result) in enumerate(zip(cases, results, strict=True), 1):
            problems = answer_problems(result)
            if problems:
                message = (f"command {number} of {len(cases)} ({case.origin}): "
                           + "; ".join(problems) + f"\n{result.describe()}")
                if CRASHED in problems:
                    message += "\nhandler output (tail):\n" + medium.lun.handler_output()[-3000:]
                cases = cases[:number]
                break
        if not message:
            allowed = NOTHING
            for case in cases:
                allowed |= footprint(case.cdb, case.data_out, medium.blocks_per_physical)
            message = medium.changed_outside(allowed) or ""
    except HandlerFailure as exc:
        failure, message = HandlerFailure, str(exc)
    if message:
        raise failure(f"{message}\n{_replay(cases, args, data_dir)}\n"
                      f"(fuzz seed {seed}: --tcmu-fuzz-seed {seed} runs these examples again)")
