"""benchmarks.runtime_cpu: the runner serves the fake kernel's READs and the figures come
back per queue depth (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_harness.benchmarks import runtime_cpu


def test_measure_serves_every_read_and_reports_each_depth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tcmu"))
    figures = runtime_cpu.measure(64, depths=(1, 4))
    assert list(figures) == [1, 4]
    assert all(0 < us < 1_000_000 for us in figures.values())


def test_a_tree_without_the_runtime_is_one_sentence(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    assert runtime_cpu.main(["--tree", str(tmp_path)]) == 4
    assert capsys.readouterr().err == f"runtime_cpu: {tmp_path} has no tcmu/runner.py\n"
