"""Bad harness options are pytest usage errors (exit status 4) with one sentence, and
nothing boots. Each case runs pytest in a subprocess on the guest tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/vm/test_guest.py", *args],
        cwd=PROJECT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["--tcmu-kernel", "/nope"], "ERROR: the kernel image /nope does not exist; pass an "
                                     "existing bzImage, kernel build tree or BZIMAGE:MODROOT"),
        (["--tcmu-kernel", "deb:"], "ERROR: kernel spec 'deb:' names no Debian kernel;"),
        (["--tcmu-vm-cpus", "0"], "error: argument --tcmu-vm-cpus: '0' is not a whole number "
                                  ">= 1"),
        (["--tcmu-accel", "hvf"], "error: argument --tcmu-accel: 'hvf' is not one of auto, "
                                  "kvm, tcg"),
    ],
    ids=["missing-image", "empty-deb-spec", "zero-cpus", "unknown-accel"],
)
def test_bad_vm_option_is_a_usage_error(args: list[str], sentence: str) -> None:
    proc = _pytest(*args)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert sentence in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_bad_handler_option_is_a_usage_error() -> None:
    proc = _pytest("--tcmu-handler-opt", "novalue", "suites/smoke", "-k", "inquiry")
    assert proc.returncode == 4
    assert "ERROR: --tcmu-handler-opt 'novalue' is not KEY=VALUE" in proc.stderr


def test_unloadable_handler_is_a_usage_error() -> None:
    proc = _pytest("--tcmu-handler", "tcmu.handlers.ramdisk:NoSuchDisk", "suites/smoke")
    assert proc.returncode == 4
    assert proc.stderr.startswith("ERROR: --tcmu-handler tcmu.handlers.ramdisk:NoSuchDisk: ")


def test_negative_cmd_time_out_is_a_usage_error() -> None:
    proc = _pytest("--tcmu-cmd-time-out", "-5", "suites/smoke")
    assert proc.returncode == 4
    assert "error: argument --tcmu-cmd-time-out: '-5' is not a whole number >= 0" in proc.stderr


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        ({"TCMU_HARNESS_VM_MEMORY": "lots"},
         "ERROR: TCMU_HARNESS_VM_MEMORY=lots: 'lots' is not a whole number >= 256"),
        ({"TCMU_HARNESS_FUZZ_SEED": "-1"},
         "ERROR: TCMU_HARNESS_FUZZ_SEED=-1: '-1' is neither a whole number nor 'random'"),
    ],
    ids=["memory", "seed"],
)
def test_a_bad_value_from_the_environment_names_the_variable(
    env: dict[str, str], sentence: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/vm/test_guest.py"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert sentence in proc.stderr


def test_an_ini_key_is_read_and_the_command_line_wins(tmp_path: Path) -> None:
    """tcmu_<name> in an ini file sets an option; --tcmu-<name> overrides it."""
    (tmp_path / "pytest.ini").write_text("[pytest]\ntcmu_vm_cpus = 0\n")
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--rootdir={tmp_path}", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)]
    bad = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         check=False)  # fmt: skip
    assert bad.returncode == 4, bad.stdout + bad.stderr
    assert "ERROR: ini tcmu_vm_cpus = 0: '0' is not a whole number >= 1" in bad.stderr
    good = subprocess.run([*base, "--tcmu-vm-cpus", "1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr
