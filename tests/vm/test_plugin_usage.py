"""Bad harness options are pytest usage errors (exit status 4) with one sentence, and
nothing boots. Each case runs pytest in a subprocess on the guest tests."""

from __future__ import annotations

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
        (["--kernel", "/nope"], "ERROR: the kernel image /nope does not exist; pass an existing "
                                "bzImage, kernel build tree or BZIMAGE:MODROOT"),
        (["--kernel", "deb:"], "ERROR: kernel spec 'deb:' names no Debian kernel;"),
        (["--vm-cpus", "0"], "ERROR: the VM needs at least one vCPU, not 0"),
        (["--accel", "hvf"], "ERROR: unknown accelerator 'hvf'; use one of auto, kvm, tcg"),
    ],
    ids=["missing-image", "empty-deb-spec", "zero-cpus", "unknown-accel"],
)
def test_bad_vm_option_is_a_usage_error(args: list[str], sentence: str) -> None:
    proc = _pytest(*args)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert sentence in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_bad_handler_option_is_a_usage_error() -> None:
    proc = _pytest("--handler-opt", "novalue", "suites/smoke", "-k", "inquiry")
    assert proc.returncode == 4
    assert "ERROR: --handler-opt 'novalue' is not KEY=VALUE" in proc.stderr


def test_unloadable_handler_is_a_usage_error() -> None:
    proc = _pytest("--handler", "tcmu.handlers.ramdisk:NoSuchDisk", "suites/smoke")
    assert proc.returncode == 4
    assert proc.stderr.startswith("ERROR: --handler tcmu.handlers.ramdisk:NoSuchDisk: ")


def test_negative_cmd_time_out_is_a_usage_error() -> None:
    proc = _pytest("--cmd-time-out", "-5", "suites/smoke")
    assert proc.returncode == 4
    assert "ERROR: --cmd-time-out -5 is not a whole number of seconds >= 0" in proc.stderr
