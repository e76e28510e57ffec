"""The suites prove they can fail: every deliberately broken handler in tests/faulty/ is
caught by the suite tests it names, in one pytest session (one VM boot) that runs each
handler against only those tests.

The catalog checks (names, docstrings, node ids) need no VM; the catch itself does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faulty_catalog import PROJECT, catalog, outcomes, selection

HANDLERS = catalog()


def _collected_suite_tests() -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "suites"], cwd=PROJECT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {line.partition("[")[0] for line in proc.stdout.splitlines() if "::" in line}


def test_every_faulty_handler_says_what_it_breaks_and_what_catches_it() -> None:
    assert len(HANDLERS) >= 25, f"only {len(HANDLERS)} faulty handlers in tests/faulty"
    names = [h.name for h in HANDLERS]
    assert len(names) == len(set(names)), "faulty handler class names must be unique"
    for handler in HANDLERS:
        assert handler.breaks, f"{handler.spec}: docstring lacks 'Breaks: <the bug>'"
        assert handler.caught_by, f"{handler.spec}: caught_by names no suite test"
        for other in names:  # -k matches substrings: one name inside another selects both
            assert other == handler.name or other not in handler.name, (
                f"{other} is a substring of {handler.name}; rename one")


def test_caught_by_names_existing_suite_tests() -> None:
    collected = _collected_suite_tests()
    missing = [f"{h.name}: {node}" for h in HANDLERS for node in h.caught_by
               if node not in collected]  # fmt: skip
    assert not missing, "caught_by names tests that do not exist:\n" + "\n".join(missing)


@pytest.mark.vm
def test_the_suites_catch_every_faulty_handler(tmp_path: Path) -> None:
    files, keyword = selection(HANDLERS)
    junit = tmp_path / "faulty.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *files,
            "-k", keyword, f"--junitxml={junit}"]
    for handler in HANDLERS:
        argv += ["--tcmu-handler", handler.spec]
    proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, check=False,
                          timeout=3000, env=os.environ.copy())  # fmt: skip
    assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = outcomes(junit)
    escaped = []
    for handler in HANDLERS:
        for node in handler.caught_by:
            results = seen.get((handler.name, node), [])
            if "failed" not in results:
                escaped.append(f"{handler.name} ({handler.breaks}) was not caught by {node}: "
                               f"{results or 'not run'}")
    assert not escaped, "\n".join(escaped) + "\n" + proc.stdout[-4000:]
