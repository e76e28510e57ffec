"""Which tests changed outcome between two runs: the kernel-upgrade question ("what did
6.12 break?") and the handler-release one.

    python -m tcmu_harness.compare RUN_A RUN_B      (also: tcmu-harness compare RUN_A RUN_B)

RUN_A and RUN_B are JUnit XML files or run directories holding junit.xml. Prints one line
per test whose outcome differs (passed -> failed, ...), then the tests only one run has,
then the identities of both runs where they differ (kernel, handlers, ...). Exit status,
as diff(1): 0 when every outcome is the same, 1 when any differs, 4 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tcmu_harness.junit import JunitError, Run, read_run


@dataclasses.dataclass(frozen=True)
class Change:
    node_id: str
    before: str  # outcome in run A, "absent" when A lacks the test
    after: str


def changes(a: Run, b: Run) -> list[Change]:
    """Every test id whose outcome differs, absent tests included, sorted by id."""
    before = {c.node_id: c.outcome for c in a.cases}
    after = {c.node_id: c.outcome for c in b.cases}
    return [Change(node, before.get(node, "absent"), after.get(node, "absent"))
            for node in sorted(before.keys() | after.keys())
            if before.get(node) != after.get(node)]  # fmt: skip


def report(a: Run, b: Run) -> list[str]:
    found = changes(a, b)
    changed = [c for c in found if "absent" not in (c.before, c.after)]
    lines = [f"{a.path} -> {b.path}: {len(changed)} outcome(s) changed, "
             f"{sum(c.before == 'absent' for c in found)} test(s) only in B, "
             f"{sum(c.after == 'absent' for c in found)} only in A"]  # fmt: skip
    lines += [f"  {c.before} -> {c.after}  {c.node_id}" for c in changed]
    lines += [f"  only in B ({c.after})  {c.node_id}" for c in found if c.before == "absent"]
    lines += [f"  only in A ({c.before})  {c.node_id}" for c in found if c.after == "absent"]
    for key in sorted(a.properties.keys() | b.properties.keys()):
        old, new = a.properties.get(key, "-"), b.properties.get(key, "-")
        if old != new and key != "exit_status":
            lines.append(f"  {key}: {old} -> {new}")
    for run in (a, b):
        if not run.complete:
            lines.append(f"  note: {run.path} is an incomplete run (interrupted, or its "
                         "identity was not recorded)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcmu_harness.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    try:
        a, b = read_run(args.run_a), read_run(args.run_b)
    except JunitError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 4
    print("\n".join(report(a, b)))
    return 1 if changes(a, b) else 0


if __name__ == "__main__":
    sys.exit(main())
