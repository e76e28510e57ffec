"""Reading a run's JUnit XML back: every test case with its outcome, its handler and its
evidence, and the run's identity properties (fixtures/report.py writes them). The
summary page and `compare` are built on this; neither needs the VM.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

OUTCOMES = ("passed", "failed", "error", "skipped")
_PREFIX = "tcmu_harness."


class JunitError(ValueError):
    """The file is missing or not a JUnit report."""


@dataclasses.dataclass(frozen=True)
class Case:
    module: str  # suites/sbc/test_unmap.py
    name: str  # test_unmap_..., without parameters
    params: str  # "ws10-RamDisk-1", "" when not parametrized
    outcome: str  # one of OUTCOMES
    seconds: float
    message: str  # failure/error/skip message (first line), "" when passed
    detail: str  # the failure/error text pytest wrote, "" when passed or skipped

    @property
    def node(self) -> str:
        return f"{self.module}::{self.name}"

    @property
    def node_id(self) -> str:
        return self.node + (f"[{self.params}]" if self.params else "")

    def handler(self, handler_ids: list[str]) -> str:
        """Which handler of the run this case ran against ("" when the test takes none)."""
        parts = self.params.split("-") if self.params else []
        return next((h for h in handler_ids if h in parts), "")


@dataclasses.dataclass(frozen=True)
class Run:
    path: Path
    properties: dict[str, str]  # without the "tcmu_harness." prefix
    cases: list[Case]
    seconds: float

    @property
    def handler_ids(self) -> list[str]:
        ids = self.properties.get("handler_ids", "")
        return [h.strip() for h in ids.split(",") if h.strip()]

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.cases if c.outcome == outcome)

    @property
    def complete(self) -> bool:
        """False for an interrupted run (or one whose identity was not recorded): its
        absent tests must not read as a clean result."""
        status = self.properties.get("exit_status", "")
        return bool(self.cases) and status.split(" ")[0] in ("0", "1")


def _case(element: ET.Element) -> Case:
    base, _, params = element.get("name", "").partition("[")
    module = element.get("classname", "").replace(".", "/") + ".py"
    outcome, message, detail = "passed", "", ""
    for tag, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        found = element.find(tag)
        if found is not None:
            outcome = word
            message = (found.get("message") or "").strip().splitlines()[0:1]
            message = message[0] if message else ""
            detail = "" if tag == "skipped" else (found.text or "")
            break
    return Case(module, base, params.removesuffix("]"), outcome,
                float(element.get("time") or 0.0), message, detail)  # fmt: skip


def read_run(path: Path) -> Run:
    """A JUnit file, or a run directory holding junit.xml."""
    file = path / "junit.xml" if path.is_dir() else path
    if not file.is_file():
        raise JunitError(f"{file} does not exist: give a JUnit XML file or a run directory "
                         "holding junit.xml")
    try:
        root = ET.parse(file).getroot()
    except ET.ParseError as exc:
        raise JunitError(f"{file} is not XML ({exc}); was the run killed while writing "
                         "it?") from None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if not suites:
        raise JunitError(f"{file} holds no <testsuite>: not a JUnit report")
    properties = {p.get("name", "").removeprefix(_PREFIX): p.get("value", "")
                  for suite in suites for p in suite.iter("property")}  # fmt: skip
    cases = [_case(c) for suite in suites for c in suite.iter("testcase")]
    seconds = sum(float(s.get("time") or 0.0) for s in suites)
    return Run(file, properties, cases, seconds)


# What every shard of one run must share; a merge of shards that differ would read as one
# qualification of something that was never run as one.
_SHARED_IDENTITY = ("commit", "kernel", "accelerator")


def merge_shards(runs: list[Run]) -> Run:
    """Shards of one run (CI jobs that each ran part of the suites, e.g. by directory or
    `-k`) as one run: every case, the handlers of all, the worst exit status (an
    interrupted shard leaves the whole INCOMPLETE), and the slowest shard's time (they
    ran side by side). JunitError when the shards did not test the same thing."""
    first = runs[0]
    for key in _SHARED_IDENTITY:
        values = {run.properties.get(key, "") for run in runs}
        if len(values) > 1:
            raise JunitError(f"the shards differ in {key} ({', '.join(sorted(values))}): "
                             "they are not one run; compare them instead")
    properties = dict(first.properties)
    handlers: list[str] = []
    for run in runs:
        handlers += [h for h in run.handler_ids if h not in handlers]
    properties["handler_ids"] = ",".join(handlers)
    statuses = [run.properties.get("exit_status", "") for run in runs]
    # 0 < 1 (tests failed) < anything else (interrupted, internal error, no tests)
    properties["exit_status"] = max(
        statuses, key=lambda s: {"0": 0, "1": 1}.get(s.split(" ")[0], 2))
    properties["shards"] = str(len(runs))
    cases = [case for run in runs for case in run.cases]
    return Run(first.path, properties, cases, max(run.seconds for run in runs))
