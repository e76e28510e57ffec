"""Installed, not checked out: a wheel of the harness, unpacked outside this checkout,
runs its suites from a handler author's own directory (`pytest --pyargs
tcmu_harness.suites`, the plugin loaded by its pytest11 entry point, the author's
handler file resolved in their directory, the options from their own ini file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

MY_DISK = '''
from tcmu.handlers.ramdisk import RamDisk


class MyDisk(RamDisk):
    """A handler author's disk."""
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The harness pip-installed (a wheel built from this checkout) into a directory of
    its own; its dependencies are this environment's."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(target), str(PROJECT)],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _author(tmp_path: Path, installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "my_disk.py").write_text(MY_DISK)
    # The installed copy first on the path: it, not this checkout, is what runs.
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_the_suites_collect_from_the_installed_package(tmp_path: Path, installed: Path) -> None:
    proc = _author(tmp_path, installed, "tcmu_harness.suites.spc", "--collect-only", "-q",
                   "--tcmu-handler", "my_disk.py:MyDisk", "--tcmu-fuzz-seed", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tests = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(tests) > 100 and all("[MyDisk" in line or "-MyDisk]" in line for line in tests), (
        tests[:5])
    origin = subprocess.run(
        [sys.executable, "-c", "import tcmu, tcmu_harness.fixtures.plugin as p, "
         "tcmu_harness.suites as s; print(tcmu.__file__, p.__file__, s.__file__)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True,
        text=True, check=True)  # fmt: skip
    assert all(path.startswith(f"{installed}/") for path in origin.stdout.split()), origin.stdout
    # This environment has the editable install's entry point too: the wheel's own must
    # be there for an environment that has only the wheel.
    (entry_points,) = installed.glob("tcmu_harness-*.dist-info/entry_points.txt")
    assert ("[pytest11]\ntcmu_harness.fixtures.plugin = tcmu_harness.fixtures.plugin"
            in entry_points.read_text()), entry_points.read_text()


@pytest.mark.vm
def test_an_authors_handler_passes_the_installed_smoke_suite(
    tmp_path: Path, installed: Path
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\ntcmu_handler = my_disk.py:MyDisk\n")
    junit = tmp_path / "junit.xml"
    proc = _author(tmp_path, installed, "tcmu_harness.suites.smoke", "-q",
                   "-k", "inquiry or read_capacity", f"--junitxml={junit}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[MyDisk]" in junit.read_text()
    assert f"console log: {tmp_path}/reports/vm/" in proc.stdout
