"""vm/machine.py without QEMU: what a lost guest is called, and the clean-up of temp dirs
whose owner died (SIGKILL leaves them; the next VM's start removes them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tcmu_harness.vm.machine import PID_FILE, TEMP_PREFIX, VirtualMachine, remove_stale_temp_dirs

_PANIC_CONSOLE = """\
[   12.3] db_root: cannot open: /etc/target
[  119.507597] sysrq: Trigger a crash
[  119.507910] Kernel panic - not syncing: sysrq triggered crash
[  119.508161] CPU: 0 PID: 185 Comm: sh Not tainted 6.1.0-57-amd64 #1
[  119.509746] Call Trace:
"""


def _machine_with_console(tmp_path: Path, text: str) -> VirtualMachine:
    machine = VirtualMachine()
    machine.console_log = tmp_path / "console.log"
    machine.console_log.write_text(text)
    return machine


def test_a_panic_on_the_console_is_the_verdict(tmp_path: Path) -> None:
    verdict = _machine_with_console(tmp_path, _PANIC_CONSOLE).loss_verdict()
    assert verdict.message == ("the guest kernel panicked: Kernel panic - not syncing: "
                               "sysrq triggered crash")
    assert verdict.console == _PANIC_CONSOLE.rstrip("\n")


def test_without_a_panic_the_guest_is_called_gone(tmp_path: Path) -> None:
    verdict = _machine_with_console(tmp_path, "[ 1.0] booting\n").loss_verdict()
    assert verdict.message == ("the guest is gone (the VM is not running), without a "
                               "kernel panic on its console")
    assert verdict.console == "[ 1.0] booting"


def test_the_excerpt_of_a_long_console_ends_shortly_after_the_panic(tmp_path: Path) -> None:
    lines = [f"[ {n}.0] line {n}" for n in range(300)]
    lines[200] = "[ 200.0] Kernel panic - not syncing: Fatal exception"
    excerpt = _machine_with_console(tmp_path, "\n".join(lines)).console_excerpt(lines=60)
    rows = excerpt.splitlines()
    assert (rows[0], rows[-1], len(rows)) == ("[ 150.0] line 150", "[ 209.0] line 209", 60)


def test_retire_keeps_the_first_reason() -> None:
    machine = VirtualMachine()
    machine.retire("tainted W")
    machine.retire("tainted D")
    assert machine.retired == "tainted W"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temp_dirs_of_dead_owners_are_removed(tmp_path: Path) -> None:
    dead, live, foreign, other = (tmp_path / f"{TEMP_PREFIX}{n}" for n in "abcd")
    for path, owner in ((dead, str(_dead_pid())), (live, "1"), (foreign, None)):
        path.mkdir()
        if owner is not None:
            (path / PID_FILE).write_text(f"{owner}\n")
    (dead / "share").mkdir()  # what a killed run leaves: the share, the socket ...
    other.with_name("unrelated-dir").mkdir()
    assert remove_stale_temp_dirs(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{TEMP_PREFIX}b", f"{TEMP_PREFIX}c", "unrelated-dir"]
