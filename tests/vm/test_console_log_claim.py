"""Two VMs never write one console log (a second session in the checkout, or a test
that runs pytest inside pytest, used to overwrite reports/vm/session-console.log)."""

from __future__ import annotations

from pathlib import Path

from tcmu_harness.vm.machine import claim_console_log


def test_a_running_vms_log_name_is_not_reused_until_released(tmp_path: Path) -> None:
    first, first_claim = claim_console_log(tmp_path, "session")
    second, second_claim = claim_console_log(tmp_path, "session")
    third, third_claim = claim_console_log(tmp_path, "session")
    assert [first.name, second.name, third.name] == [
        "session-console.log", "session-2-console.log", "session-3-console.log"]
    second_claim.close()
    again, again_claim = claim_console_log(tmp_path, "session")
    assert again.name == "session-2-console.log"
    for claim in (first_claim, third_claim, again_claim):
        claim.close()
    assert claim_console_log(tmp_path, "session")[0].name == "session-console.log"
