"""tcmu-harness vm up / pytest --tcmu-vm-attach / vm down, as a developer uses them; the
keeper's state lives in this test's own directory (TCMU_HARNESS_KEEPER_DIR)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.process_table import processes_mentioning

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]
TUR = "suites/smoke/test_smoke.py::test_test_unit_ready_is_good_and_reaches_the_handler"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "TCMU_HARNESS_KEEPER_DIR": str(tmp_path / "keeper")}
    env.pop("TCMU_HARNESS_VM_ATTACH", None)
    yield env
    subprocess.run([sys.executable, "-m", "tcmu_harness", "vm", "down"], env=env, check=False,
                   capture_output=True, timeout=60)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcmu_harness", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=400, check=False)


def _pytest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tcmu-vm-attach", *args],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=400, check=False)


def test_a_kept_vm_serves_sessions_until_vm_down(env: dict[str, str], tmp_path: Path) -> None:
    status = _cli(env, "vm", "status")
    assert (status.returncode, status.stdout) == (1, "no kept VM is running\n")
    early = _pytest(env, TUR)
    assert early.returncode == 1
    assert "no kept VM is running (for the cache dir" in early.stdout, early.stdout[-2000:]
    assert "start one with tcmu-harness vm up" in early.stdout

    up = _cli(env, "vm", "up", "--accel", "tcg")
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout.startswith("kept VM up: kernel "), up.stdout
    keeper = tmp_path / "keeper"
    assert stat.S_IMODE(keeper.stat().st_mode) == 0o700
    assert stat.S_IMODE((keeper / "keeper.sock").stat().st_mode) == 0o600
    state = json.loads((keeper / "keeper.json").read_text())
    again = _cli(env, "vm", "up", "--accel", "tcg")
    assert again.returncode == 4 and "vm down first" in again.stderr, again.stderr

    # A session that died with a LUN in the guest: the next one starts clean anyway.
    leave = subprocess.run([sys.executable, "-c", (
        "from vm.attached import AttachedMachine\nfrom vm.config import VmConfig\n"
        "from harness.lun import LunManager\nvm = AttachedMachine(VmConfig()); vm.start()\n"
        "print(LunManager(vm).create().name)\nvm.close()\n")],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert leave.stdout == "lun0\n", leave.stderr
    for _ in range(2):
        session = _pytest(env, TUR)
        assert session.returncode == 0, session.stdout[-3000:]
        assert "1 passed" in session.stdout
        assert f"kept VM, pid {state['pid']}" in session.stdout  # attached, not booted
        assert "vm fixture:" not in session.stdout

    down = _cli(env, "vm", "down")
    assert down.returncode == 0 and down.stdout == f"kept VM stopped (keeper pid {state['pid']})\n"
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
    assert processes_mentioning(str(Path(state["share_dir"]).parent)) == []  # its QEMU
    assert _cli(env, "vm", "status").returncode == 1
