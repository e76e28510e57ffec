"""The CLI's pure parts: argument substitution, handler options, exit statuses for bad
input (none of these cases boots a VM)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tcmu_harness import cli
from tcmu_harness.lun import (
    HandlerOptionError,
    HandlerSetupError,
    _parse_command_log,
    handler_spec_from_cli,
)


def test_substitute_replaces_both_spellings_and_nothing_else() -> None:
    argv = ["sg_inq", "$TCMU_SG", "${TCMU_DISK}", "$TCMU_SGX", "$HOME", "$TCMU_SG_2,${TCMU_SG}_2"]
    values = {"TCMU_SG": "/dev/sg3", "TCMU_DISK": "/dev/sdb", "TCMU_SG_2": "/dev/sg4"}
    # As a shell reads them: $TCMU_SGX and $TCMU_SG_2 are other names than $TCMU_SG.
    assert cli.substitute(argv, values) == ["sg_inq", "/dev/sg3", "/dev/sdb", "$TCMU_SGX",
                                            "$HOME", "/dev/sg4,/dev/sg3_2"]


def test_handler_options_need_key_equals_value() -> None:
    assert handler_spec_from_cli("m:C", ["path=/a=b", "x="]) == ("m:C", {"path": "/a=b", "x": ""})
    with pytest.raises(HandlerOptionError, match="--handler-opt 'oops' is not KEY=VALUE"):
        handler_spec_from_cli("m:C", ["oops"])


def test_file_handler_specs_become_absolute_and_module_specs_stay() -> None:
    assert handler_spec_from_cli("examples/dict_disk.py:DictDisk", [])[0] == (
        f"{os.path.abspath('examples/dict_disk.py')}:DictDisk"
    )
    assert handler_spec_from_cli("tcmu.handlers.ramdisk:RamDisk", [])[0] == (
        "tcmu.handlers.ramdisk:RamDisk"
    )


def test_run_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        "tcmu-harness: give the command to run after --, e.g. "
        "tcmu-harness run -- sg_inq '$TCMU_SG'\n"
    )


def test_unparsable_kernel_spec_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--kernel", "deb:", "--", "true"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("tcmu-harness: kernel spec 'deb:' names no Debian kernel")
    assert err.count("\n") == 1


def test_command_log_lines_become_handler_commands() -> None:
    raw = (b'{"cmd_id": 3, "cdb": "2a00000000640000080000", "status": 0, "sense": "",'
           b' "t": 1.5, "us": 80.0}\n{"tmr": 5, "cmd_ids": [3]}\n'
           b'{"cmd_id": 4, "cdb": "e7", "status": 2, "sense": "70000500", "t": 1.6, "us": 9}\n')
    commands = list(_parse_command_log(raw))
    assert [(c.cmd_id, c.opcode, c.status, c.sense) for c in commands] == [
        (3, 0x2A, 0, b""), (4, 0xE7, 2, bytes.fromhex("70000500")),
    ]


@pytest.mark.parametrize("argv", [["run", "--bogus", "--", "true"], ["bogus"], ["compare", "a"],
                                  ["run", "--block-size", "x", "--", "true"]])
def test_every_bad_option_exits_4_not_argparses_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "error:" in capsys.readouterr().err


def test_compare_subcommand_reads_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite name="pytest" time="1"><properties>'
                     '<property name="tcmu_harness.exit_status" value="0 (passed)"/>'
                     '</properties><testcase classname="suites.x" name="test_a" time="1"/>'
                     "</testsuite></testsuites>")
    assert cli.main(["compare", str(junit), str(tmp_path)]) == 0
    assert "0 outcome(s) changed" in capsys.readouterr().out
    assert cli.main(["compare", str(junit), str(tmp_path / "none")]) == cli.EXIT_USAGE


@pytest.mark.parametrize(("argv", "says"), [
    (["--block-size", "3"], "--block-size 3 is not a power of two >= 512"),
    (["--size", "1000"], "--size 1000 is not a positive multiple of the block size 512"),
    (["--size", "12Q"], "'12Q' is not a size"),
])  # fmt: skip
def test_a_bad_geometry_is_refused_before_the_vm_boots(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", *argv, "--", "true"]) == cli.EXIT_USAGE
    assert says in capsys.readouterr().err


def test_a_handler_that_fails_its_lun_set_up_exits_125_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(args: object) -> int:
        raise HandlerSetupError("LUN set-up failed: handler m:C died (signal SIGSEGV)")

    monkeypatch.setattr(cli, "_run", fail)
    assert cli.main(["run", "--", "true"]) == cli.EXIT_SETUP == 125
    assert capsys.readouterr().err == ("tcmu-harness: LUN set-up failed: handler m:C died "
                                       "(signal SIGSEGV)\n")
