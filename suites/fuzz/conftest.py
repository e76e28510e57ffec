"""Fixtures of the fuzz suite: its settings (--tcmu-fuzz-examples, --tcmu-fuzz-seed, declared in
suites/conftest.py) and a small patterned LUN per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from tcmu_harness.lun import Lun, LunSpec
from tcmu_harness.suites.fuzz.medium import PatternedMedium

MEDIUM_BLOCKS = 256  # small: random LBAs land inside it, and its digest is cheap


@pytest.fixture
def fuzz_seed(pytestconfig: pytest.Config) -> int:
    seed: int = pytestconfig.option.fuzz_seed
    print(f"fuzz seed {seed} (--tcmu-fuzz-seed {seed} repeats these examples)")
    return seed


@pytest.fixture
def fuzz_settings(pytestconfig: pytest.Config) -> settings:
    """No shrinking: every example costs guest round trips, and after a handler crash
    there is nothing left to shrink against; the failing example is printed as found.
    No example database: the seed alone decides the examples."""
    return settings(max_examples=pytestconfig.option.fuzz_examples, deadline=None,
                    database=None, phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=list(HealthCheck), print_blob=False)


@pytest.fixture
def medium(make_lun: Callable[..., Lun], lun_spec: LunSpec) -> PatternedMedium:
    medium = PatternedMedium(make_lun(size=MEDIUM_BLOCKS * lun_spec.block_size))
    medium.fill()
    return medium


@pytest.fixture
def replay_dir(pytestconfig: pytest.Config) -> Path:
    """Where a failing example's data-out goes, for its replay line's sg_raw -i."""
    return pytestconfig.rootpath / "reports" / "fuzz"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    opt = terminalreporter.config.option
    if any("suites/fuzz/" in r.nodeid for key in ("passed", "failed", "error")
           for r in terminalreporter.stats.get(key, []) if hasattr(r, "nodeid")):
        terminalreporter.write_line(f"fuzz: seed {opt.fuzz_seed}, {opt.fuzz_examples} "
                                    "examples per test (--tcmu-fuzz-seed, --tcmu-fuzz-examples)")
