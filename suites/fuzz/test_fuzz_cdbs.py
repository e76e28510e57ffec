"""Fuzzing the handler under test with CDBs through SG_IO (SAM-5 5.3, SPC-4 4.5): random
CDBs of every opcode, mutations of valid commands, and data transfers that disagree with
the CDB. Whatever arrives, the handler must answer each command with an acceptable
status and well-formed sense (suites/fuzz/checks.py), not crash or hang (the watchdog
raises HandlerFailure), not taint the kernel (the kernel log gate of every VM test), and
change no block outside those the commands may change (suites/fuzz/footprint.py) on a
small LUN filled with a known pattern (suites/fuzz/medium.py).

An example is a batch of 1-6 commands sent in one agent round trip, then one check of
the medium. Examples per test: --tcmu-fuzz-examples (default 15, ~20 s per test and handler
under TCG); their seed: --tcmu-fuzz-seed (default 0, so CI runs the same examples each time;
"random" draws one and prints it). A failure prints every command of its example as a
`tcmu-harness run -- sg_raw ...` line (data-out in reports/fuzz/).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, seed
from hypothesis import settings as Settings
from hypothesis import strategies as st

from tcmu_harness.lun import LunSpec
from tcmu_harness.suites.fuzz.checks import FuzzCase
from tcmu_harness.suites.fuzz.example import handler_args, run_example
from tcmu_harness.suites.fuzz.medium import PatternedMedium
from tcmu_harness.suites.fuzz.strategies import any_cdb, disagreeing_transfer, mutated_cdb

pytestmark = pytest.mark.vm

BATCH = 6  # commands per example, at most: one round trip, one medium check

Cases = Callable[[PatternedMedium], st.SearchStrategy[FuzzCase]]


def _fuzz(medium: PatternedMedium, cases: Cases, lun_spec: LunSpec, fuzz_seed: int,
          fuzz_settings: Settings, replay_dir: Path) -> None:
    args = handler_args(lun_spec, medium)

    @seed(fuzz_seed)
    @fuzz_settings
    @given(batch=st.lists(cases(medium), min_size=1, max_size=BATCH))
    def example(batch: list[FuzzCase]) -> None:
        run_example(medium, batch, args, fuzz_seed, replay_dir)

    example()


def test_random_cdbs_of_every_opcode(medium: PatternedMedium, lun_spec: LunSpec,
                                     fuzz_seed: int, fuzz_settings: Settings,
                                     replay_dir: Path) -> None:
    """Opcodes 00h-FFh, reserved and vendor-specific ones included, with random fields,
    CDB lengths and transfers."""
    _fuzz(medium, lambda m: any_cdb(m.bs), lun_spec, fuzz_seed, fuzz_settings, replay_dir)


def test_mutated_valid_cdbs(medium: PatternedMedium, lun_spec: LunSpec, fuzz_seed: int,
                            fuzz_settings: Settings, replay_dir: Path) -> None:
    """Valid READ, WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE, MODE SELECT, VERIFY and
    more, in range, with 0-3 CDB bits (and sometimes data-out bits) flipped."""
    _fuzz(medium, lambda m: mutated_cdb(m.blocks, m.bs, m.current), lun_spec, fuzz_seed,
          fuzz_settings, replay_dir)


def test_transfer_lengths_disagreeing_with_the_cdb(
    medium: PatternedMedium, lun_spec: LunSpec, fuzz_seed: int, fuzz_settings: Settings,
    replay_dir: Path,
) -> None:
    """Valid commands whose data-out or data-in length is not the one their CDB implies,
    or whose transfer goes the wrong way."""
    _fuzz(medium, lambda m: disagreeing_transfer(m.blocks, m.bs, m.current), lun_spec,
          fuzz_seed, fuzz_settings, replay_dir)
