"""harness/options.py: one table, four sources (command line, environment, ini,
default) in that order, the same option for pytest (--tcmu-NAME) and the CLI (--NAME)."""

from __future__ import annotations

import argparse

import pytest

from tcmu_harness import cli
from tcmu_harness.options import BY_NAME, OPTIONS, OptionError, add_arguments, resolve


def _parse(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
           ini: dict[str, str | list[str]] | None = None) -> argparse.Namespace:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    for option in OPTIONS:
        add_arguments(parser.add_argument, option, option.pytest_flag)
    given = parser.parse_args(argv)
    resolve(OPTIONS, given, ini=lambda option: (ini or {}).get(option.ini))
    return given


def test_the_command_line_wins_over_the_environment_and_the_ini_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = _parse(["--tcmu-vm-memory", "2048"], {"TCMU_HARNESS_VM_MEMORY": "512"}, monkeypatch,
                 ini={"tcmu_vm_memory": "768"})
    assert got.vm_memory == 2048


def test_a_zero_on_the_command_line_is_a_value_not_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = _parse(["--tcmu-cmd-time-out", "0", "--tcmu-fuzz-seed", "0"],
                 {"TCMU_HARNESS_CMD_TIME_OUT": "30", "TCMU_HARNESS_FUZZ_SEED": "7"}, monkeypatch)
    assert (got.cmd_time_out, got.fuzz_seed) == (0, 0)


def test_the_environment_wins_over_the_ini_file(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _parse([], {"TCMU_HARNESS_VM_MEMORY": "512"}, monkeypatch,
                 ini={"tcmu_vm_memory": "768"})
    assert got.vm_memory == 512


def test_the_ini_file_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _parse([], {}, monkeypatch, ini={"tcmu_vm_memory": "768", "tcmu_handler": ["a:B", "c:D"]})
    assert (got.vm_memory, got.handler) == (768, ["a:B", "c:D"])


def test_defaults_are_values_of_their_type(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _parse([], {}, monkeypatch)
    assert (got.vm_memory, got.vm_cpus, got.accel, got.size, got.block_size, got.kernel,
            got.handler, got.vm_attach, got.fuzz_seed, got.vm_request_timeout) == (
        1024, 2, "auto", "64M", 512, None, [], False, 0, 120.0)


def test_a_repeatable_option_splits_the_environment_on_semicolons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = _parse([], {"TCMU_HARNESS_KERNEL_LOG_ALLOW": "a b;c;"}, monkeypatch)
    assert got.kernel_log_allow == ["a b", "c"]


def test_a_flag_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parse([], {"TCMU_HARNESS_VM_ATTACH": "1"}, monkeypatch).vm_attach is True
    assert _parse([], {"TCMU_HARNESS_VM_ATTACH": "no"}, monkeypatch).vm_attach is False


def test_the_cache_keeps_its_older_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BY_NAME["cache-dir"].env == "TCMU_HARNESS_CACHE"
    assert _parse([], {"TCMU_HARNESS_CACHE": "/c"}, monkeypatch).cache_dir == "/c"


@pytest.mark.parametrize(("env", "ini", "message"), [
    ({"TCMU_HARNESS_VM_CPUS": "zero"}, {}, "TCMU_HARNESS_VM_CPUS=zero: 'zero' is not a whole "
                                           "number >= 1"),
    ({}, {"tcmu_accel": "hvf"}, "ini tcmu_accel = hvf: 'hvf' is not one of auto, kvm, tcg"),
    ({"TCMU_HARNESS_VM_REQUEST_TIMEOUT": "0"}, {}, "TCMU_HARNESS_VM_REQUEST_TIMEOUT=0: '0' is "
                                                   "not a number of seconds > 0"),
])
def test_a_bad_value_names_its_source(env: dict[str, str], ini: dict[str, str], message: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OptionError) as caught:
        _parse([], env, monkeypatch, ini=ini)
    assert str(caught.value) == message


def test_every_pytest_option_has_the_prefix_and_an_ini_key() -> None:
    for option in OPTIONS:
        assert option.pytest_flag == f"--tcmu-{option.name}"
        assert option.ini == "tcmu_" + option.name.replace("-", "_")


def test_the_cli_takes_the_table_options_without_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TCMU_HARNESS_BLOCK_SIZE", "4096")
    args = cli._parser().parse_args(["run", "--size", "1M", "--accel", "tcg", "--", "true"])
    cli._resolve_table_options(args)
    assert (args.size, args.block_size, args.accel, args.vm_memory) == ("1M", 4096, "tcg", 1024)
    assert args.handler == "tcmu.handlers.ramdisk:RamDisk"


def test_the_cli_serves_one_handler_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TCMU_HARNESS_HANDLER", "a.b:C;d.e:F")
    args = cli._parser().parse_args(["run", "--", "true"])
    with pytest.raises(cli.UsageError, match="TCMU_HARNESS_HANDLER names 2 handlers; run "
                                             "serves one: give --handler"):
        cli._resolve_table_options(args)
    monkeypatch.setenv("TCMU_HARNESS_HANDLER", "a.b:C")
    args = cli._parser().parse_args(["run", "--", "true"])
    cli._resolve_table_options(args)
    assert args.handler == "a.b:C"


def test_cli_only_and_pytest_only_options_stay_where_they_belong() -> None:
    run = cli._parser().parse_args(["run", "--", "true"])
    assert not hasattr(run, "fuzz_seed") and not hasattr(run, "vm_attach")
    assert hasattr(run, "paths") and hasattr(run, "cmd_time_out")
