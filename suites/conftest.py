"""Fixtures the SPC/SBC suites share.

    caps        what the module's shared LUN claims (harness.caps.Capabilities), read
                once per module and handler; tests check claims and refusals from it
    lun_caps    the same for the per-test `lun`

The suites' options (--tcmu-fuzz-examples, --tcmu-fuzz-seed) are the plugin's:
fixtures/options.py says why.
"""

from __future__ import annotations

import pytest

from tcmu_harness.caps import Capabilities, discover
from tcmu_harness.lun import Lun


@pytest.fixture(scope="module")
def caps(shared_lun: Lun) -> Capabilities:
    return discover(shared_lun)


@pytest.fixture
def lun_caps(lun: Lun) -> Capabilities:
    return discover(lun)
