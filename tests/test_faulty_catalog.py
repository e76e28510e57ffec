"""The suites prove they can fail: every deliberately broken handler in tests/faulty/ is
caught by the suite tests it names. The handlers are split over one pytest session per
host core (at most two), run side by side, each one VM boot running each of its handlers
against only the tests that must catch it.

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


def _shards() -> int:
    """Concurrent sessions (one VM each) the matrix is split over: most of its time is
    LUN set-up in a guest that keeps one host core busy, so each core gets a session."""
    return max(1, min(2, os.cpu_count() or 1))


@pytest.mark.vm
def test_the_suites_catch_every_faulty_handler(tmp_path: Path) -> None:
    runs = []
    for index in range(_shards()):
        handlers = HANDLERS[index::_shards()]  # round robin: each shard gets every kind
        files, keyword = selection(handlers)
        junit = tmp_path / f"faulty-{index}.xml"
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *files,
                "-k", keyword, f"--junitxml={junit}"]
        for handler in handlers:
            argv += ["--tcmu-handler", handler.spec]
        output = (tmp_path / f"faulty-{index}.out").open("w+")
        proc = subprocess.Popen(argv, cwd=PROJECT, stdout=output, stderr=subprocess.STDOUT,
                                text=True, env=os.environ.copy())  # fmt: skip
        runs.append((proc, junit, output))
    seen: dict[tuple[str, str], list[str]] = {}
    tails = []
    try:
        for proc, junit, output in runs:
            proc.wait(timeout=3000)
            output.seek(0)
            tail = output.read()[-4000:]
            assert junit.exists(), tail
            seen.update(outcomes(junit))
            tails.append(tail)
    finally:
        for proc, _, output in runs:  # interrupted, timed out or failed: no orphan session
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
            output.close()
    escaped = []
    for handler in HANDLERS:
        for node in handler.caught_by:
            results = seen.get((handler.name, node), [])
            if "failed" not in results:
                escaped.append(f"{handler.name} ({handler.breaks}) was not caught by {node}: "
                               f"{results or 'not run'}")
    assert not escaped, "\n".join(escaped) + "\n" + "\n".join(tails)
