"""Fixtures shared by the runtime's unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from test_runner import Rig

from tcmu.handler import Handler


@pytest.fixture
def rig_factory() -> Iterator[Callable[[Handler], Rig]]:
    """Fake kernel + runner thread per handler (tests/tcmu/test_runner.py's Rig), stopped
    at the end of the test."""
    rigs: list[Rig] = []

    def make(handler: Handler) -> Rig:
        rigs.append(Rig(handler))
        return rigs[-1].start()

    yield make
    for rig in rigs:
        if rig.thread.is_alive():
            rig.stop()
