"""tcmu-harness run's guest variables (harness.cli.guest_values): TCMU_SG[_N] for every
path, TCMU_DISK[_N] only for the paths the command names, and a missing sd node is a
set-up failure (exit 125), never a usage error (exit 4). No VM: the LUN is a stand-in."""

from __future__ import annotations

import pytest

from tcmu_harness import cli
from tcmu_harness.vm.client import AgentError

NO_SD = "SCSI device 0:0:1:0 gets no /dev/sd node: its INQUIRY says peripheral qualifier 1"


class FakePath:
    """A Lun path as guest_values sees it: sg, and sd resolved on first use (counted)."""

    def __init__(self, number: int, disk: bool = True) -> None:
        self.sg = f"/dev/sg{number}"
        self._disk = disk
        self.number = number
        self.resolved = 0

    @property
    def sd(self) -> str:
        self.resolved += 1
        if not self._disk:
            raise AgentError("call tcmu_harness.lio.lun:block_device", "LunError", NO_SD, "")
        return f"/dev/sd{'abc'[self.number]}"


class FakeLun:
    def __init__(self, *paths: FakePath) -> None:
        self.paths = list(paths)


def test_only_the_named_disks_are_resolved() -> None:
    lun = FakeLun(FakePath(0), FakePath(1), FakePath(2))
    values = cli.guest_values(lun, ["sh", "-c", "dd if=${TCMU_DISK_3} of=/dev/null; "
                                    "sg_inq $TCMU_SG_2 $TCMU_DISKS"])  # type: ignore[arg-type]
    assert values == {"TCMU_SG": "/dev/sg0", "TCMU_SG_2": "/dev/sg1", "TCMU_SG_3": "/dev/sg2",
                      "TCMU_DISK_3": "/dev/sdc"}
    assert [p.resolved for p in lun.paths] == [0, 0, 1]


def test_a_command_using_only_tcmu_sg_runs_on_a_lun_without_an_sd_node() -> None:
    lun = FakeLun(FakePath(0, disk=False))
    assert cli.guest_values(lun, ["sg_inq", "$TCMU_SG"]) == {  # type: ignore[arg-type]
        "TCMU_SG": "/dev/sg0"}
    assert lun.paths[0].resolved == 0


def test_naming_a_missing_disk_is_a_set_up_failure_with_one_sentence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lun = FakeLun(FakePath(0, disk=False))
    with pytest.raises(cli.NoDiskError) as caught:
        cli.guest_values(lun, ["dd", "if=$TCMU_DISK"])  # type: ignore[arg-type]
    assert str(caught.value) == f"the command names $TCMU_DISK, but {NO_SD}"

    def run(args: object) -> int:
        raise caught.value

    monkeypatch.setattr(cli, "_run", run)
    assert cli.main(["run", "--", "dd", "if=$TCMU_DISK"]) == cli.EXIT_SETUP
    assert capsys.readouterr().err == f"tcmu-harness: {caught.value}\n"


def test_the_shell_gets_every_disk_it_can_and_no_error() -> None:
    lun = FakeLun(FakePath(0), FakePath(1, disk=False))
    assert cli.guest_values(lun, None) == {  # type: ignore[arg-type]
        "TCMU_SG": "/dev/sg0", "TCMU_DISK": "/dev/sda", "TCMU_SG_2": "/dev/sg1"}


def test_paths_below_1_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--paths", "0", "--", "true"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "tcmu-harness: --paths 0: give 1 or more I_T nexuses\n"
