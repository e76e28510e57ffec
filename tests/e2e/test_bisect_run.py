"""bisect-run end to end: a kernel build tree (the default Debian kernel laid out as
`make` and `make modules_install` leave it), one good and one bad step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcmu_harness.vm.config import default_cache_dir
from tcmu_harness.vm.kernel import parse_kernel_spec, resolve_kernel

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]
TUR = "suites/smoke/test_smoke.py::test_test_unit_ready_is_good_and_reaches_the_handler"


@pytest.fixture(scope="module")
def build_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a build tree holding arch/x86/boot/bzImage, its MODROOT)."""
    kernel = resolve_kernel(parse_kernel_spec(None), default_cache_dir())
    tree = tmp_path_factory.mktemp("linux")
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").symlink_to(kernel.image)
    return tree, kernel.modules_dir.parents[2]  # MODROOT/lib/modules/<version>


def _bisect_run(build: tuple[Path, Path], *pytest_args: str) -> subprocess.CompletedProcess[str]:
    tree, modroot = build
    return subprocess.run(
        [sys.executable, "-m", "tcmu_harness", "bisect-run", "--kernel-build-dir", str(tree),
         "--modules", str(modroot), "--", *pytest_args],
        cwd=tree, capture_output=True, text=True, timeout=600, env=os.environ.copy(),
        check=False)  # fmt: skip


def test_a_passing_selection_is_good(build_tree: tuple[Path, Path]) -> None:
    proc = _bisect_run(build_tree, f"{PROJECT}/{TUR}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "tcmu-harness bisect-run: 0 (good): 1 passed"), proc.stderr


def test_a_failing_test_is_bad_and_named(build_tree: tuple[Path, Path]) -> None:
    """Paths relative to the harness checkout work from the kernel tree (the cwd)."""
    proc = _bisect_run(build_tree, TUR, "--tcmu-handler",
                       f"{PROJECT}/tests/faulty/spc.py:TurNotReady")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tcmu-harness bisect-run: 1 (bad): 1 failed: {TUR}[TurNotReady]"), proc.stderr
