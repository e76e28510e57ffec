"""The per-test kernel log gate: which kernel lines and taint changes fail a test."""

from __future__ import annotations

from tcmu_harness.fixtures.kernel_log import problems, taint_letters
from tcmu_harness.vm.machine import KmsgRecord


def _records(*texts: str) -> list[KmsgRecord]:
    return [KmsgRecord(i, 4, i * 1000, t) for i, t in enumerate(texts)]


def test_real_kernel_trouble_fails_and_ordinary_noise_does_not() -> None:
    trouble = [
        "WARNING: CPU: 1 PID: 123 at drivers/target/target_core_user.c:1234 tcmu_foo+0x12/0x30",
        "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        "Oops: 0000 [#1] PREEMPT SMP NOPTI",
        "general protection fault, probably for non-canonical address 0xdead: 0000 [#1]",
        "INFO: task kworker/0:1:42 blocked for more than 120 seconds.",
        "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [python3:99]",
        "BUG: KASAN: use-after-free in tcmu_handle_completion+0x1c/0x2e0",
        "WARNING: possible circular locking dependency detected",
        "Kernel panic - not syncing: Fatal exception",
    ]
    noise = [
        "Buffer I/O error on dev sda, logical block 0, async page read",
        "sd 0:0:1:0: [sda] tag#0 device offline error, dev sda, sector 0",
        "target_core_user: completion could not find device",
        "sd 0:0:1:0: [sda] Write cache: enabled, read cache: enabled",
        "a line that says WARNING: somewhere in the middle",
    ]
    found = problems(_records(*trouble, *noise), 0, 0, [])
    assert found == [f"kernel reported: {t}" for t in trouble]


def test_an_allowed_line_does_not_fail() -> None:
    line = "WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:1 known_noise+0x1/0x2"
    assert problems(_records(line), 0, 0, [r"known_noise"]) == []
    assert problems(_records(line), 0, 0, [r"other"]) != []


def test_a_taint_change_fails_and_names_the_new_flags() -> None:
    assert problems([], 0, 0, []) == []
    assert problems([], 4096, 4096, []) == []  # tainted before the test: not its doing
    (found,) = problems([], 4096, 4096 | 512, [])
    assert "4096 -> 4608" in found and "new flags W" in found
    assert taint_letters(512) == "W" and taint_letters(1 | 4096) == "PO"
