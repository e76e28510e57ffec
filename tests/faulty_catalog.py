"""The catalog of deliberately broken handlers (tests/faulty/*.py) and what must catch
them: each class says "Breaks: ..." in its docstring and names, in `caught_by`, the suite
tests (path::test_name) that must fail against it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from types import ModuleType

from tcmu.handler import Handler

PROJECT = Path(__file__).resolve().parents[1]
FAULTY_DIR = PROJECT / "tests" / "faulty"


@dataclasses.dataclass(frozen=True)
class FaultyHandler:
    name: str  # the class name, which is also its test-id parameter
    spec: str  # handler spec: "tests/faulty/<file>.py:<Class>"
    breaks: str  # the docstring's "Breaks:" sentence
    caught_by: tuple[str, ...]  # suite node ids without parameters


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"faulty_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def catalog() -> list[FaultyHandler]:
    found = []
    for path in sorted(FAULTY_DIR.glob("*.py")):
        module = _load(path)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ != module.__name__ or not issubclass(cls, Handler)
                    or name.startswith("_")):  # a private base shared by faulty handlers
                continue
            doc = inspect.getdoc(cls) or ""
            found.append(FaultyHandler(
                name=name,
                spec=f"{path.relative_to(PROJECT)}:{name}",
                breaks=doc.partition("Breaks:")[2].strip().replace("\n", " "),
                caught_by=tuple(getattr(cls, "caught_by", ())),
            ))  # fmt: skip
    return found


def selection(handlers: list[FaultyHandler]) -> tuple[list[str], str]:
    """The suite files to run and a -k expression that selects, per handler, only the
    tests that must catch it."""
    files = sorted({node.split("::")[0] for h in handlers for node in h.caught_by})
    terms = []
    for h in handlers:
        tests = sorted({node.split("::")[1] for node in h.caught_by})
        terms.append(f"({' or '.join(tests)}) and {h.name}")
    return files, " or ".join(f"({t})" for t in terms)


def outcomes(junit_xml: Path) -> dict[tuple[str, str], list[str]]:
    """(handler id, "path::test_name") -> outcomes ("passed", "failed", "error",
    "skipped") of every parametrized instance, from a JUnit XML report."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        name = case.get("name", "")
        base, _, params = name.partition("[")
        path = case.get("classname", "").replace(".", "/") + ".py"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
        for part in params.rstrip("]").split("-"):
            found[(part, f"{path}::{base}")].append(outcome)
    return found
