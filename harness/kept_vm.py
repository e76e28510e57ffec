"""`tcmu-harness vm up|down|status`: the kept VM (vm/keeper.py) for fast inner loops.

    tcmu-harness vm up [--kernel SPEC] [--vm-memory MIB] ...   then pytest --tcmu-vm-attach
    tcmu-harness vm status
    tcmu-harness vm down
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tcmu_harness.vm.config import VmConfig
from tcmu_harness.vm.keeper import LOG_FILE, STATE_FILE, config_json, keeper_dir, read_state

STOP_WAIT = 30.0  # s for the keeper to power its VM off after SIGTERM


def _describe(state: dict) -> str:
    kernel = state["kernel"]
    return (f"kept VM up: kernel {kernel['version']} ({kernel['source']}), accelerator "
            f"{state['accel']}, keeper pid {state['pid']}, console log {state['console_log']}")


def up(config: VmConfig) -> int:
    state = read_state(config.cache_dir)
    if state is not None:
        print(f"tcmu-harness: {_describe(state)}; tcmu-harness vm down first to change it",
              file=sys.stderr)
        return 4
    directory = keeper_dir(config.cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    (directory / STATE_FILE).unlink(missing_ok=True)
    log_path = directory / LOG_FILE
    with open(log_path, "ab") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "tcmu_harness.vm.keeper", config_json(config)],
            cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + config.boot_timeout + 120
    while time.monotonic() < deadline:
        state = read_state(config.cache_dir)
        if state is not None and state.get("pid") == keeper.pid:
            print(_describe(state))
            print("attach with: pytest --tcmu-vm-attach ... (or TCMU_HARNESS_VM_ATTACH=1); "
                  "stop with: tcmu-harness vm down")
            return 0
        if keeper.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            print(f"tcmu-harness: the kept VM did not start: {' '.join(tail)} "
                  f"(log: {log_path})", file=sys.stderr)
            return 125
        time.sleep(0.2)
    keeper.terminate()
    print(f"tcmu-harness: the kept VM did not come up in time (log: {log_path})",
          file=sys.stderr)
    return 125


def status(config: VmConfig) -> int:
    state = read_state(config.cache_dir)
    if state is None:
        print("no kept VM is running")
        return 1
    print(_describe(state))
    return 0


def down(config: VmConfig) -> int:
    state = read_state(config.cache_dir)
    if state is None:
        print("no kept VM is running")
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"kept VM stopped (keeper pid {pid})")
            return 0
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)  # QEMU dies with it (PR_SET_PDEATHSIG)
    (keeper_dir(config.cache_dir) / STATE_FILE).unlink(missing_ok=True)
    print(f"kept VM killed: the keeper (pid {pid}) did not stop within {STOP_WAIT:.0f} s")
    return 0
