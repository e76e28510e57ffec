"""Fixtures the SPC/SBC suites share.

    caps        what the module's shared LUN claims (harness.caps.Capabilities), read
                once per module and handler; tests check claims and refusals from it
    lun_caps    the same for the per-test `lun`

Options of suites/fuzz (here: pytest reads options only from the conftests it loads
first, and suites/fuzz/conftest.py is not one of them for `pytest suites`):
    --fuzz-examples N   hypothesis examples per fuzz test (default 15)
    --fuzz-seed S       the examples' seed, an integer or "random" (default 0)
"""

from __future__ import annotations

import argparse
import random

import pytest

from harness.caps import Capabilities, discover
from harness.lun import Lun


def _fuzz_examples(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _fuzz_seed(text: str) -> int:
    if text == "random":
        return random.randrange(1 << 32)
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor 'random'")
    return int(text)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tcmu-harness")
    group.addoption("--fuzz-examples", type=_fuzz_examples, default=15, metavar="N",
                    help="hypothesis examples per suites/fuzz test (default 15)")
    group.addoption("--fuzz-seed", type=_fuzz_seed, default=0, metavar="SEED",
                    help='seed of the suites/fuzz examples: an integer, or "random" '
                         "(printed, to replay with --fuzz-seed); default 0")


@pytest.fixture(scope="module")
def caps(shared_lun: Lun) -> Capabilities:
    return discover(shared_lun)


@pytest.fixture
def lun_caps(lun: Lun) -> Capabilities:
    return discover(lun)
