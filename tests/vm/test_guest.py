"""The guest as the suites see it: booted kernel, target modules, configfs, agent ops."""

from __future__ import annotations

import pytest

from tcmu_harness.vm.client import AgentError
from tcmu_harness.vm.machine import VirtualMachine

pytestmark = pytest.mark.vm


def test_guest_runs_the_resolved_kernel(vm: VirtualMachine) -> None:
    assert vm.kernel is not None
    result = vm.run(["uname", "-r"], check=True)
    assert result.text.strip() == vm.kernel.version
    assert vm.kernel_version == vm.kernel.version


@pytest.mark.parametrize("module", ["target_core_user", "tcm_loop", "target_core_mod", "uio"])
def test_target_modules_are_loaded(vm: VirtualMachine, module: str) -> None:
    assert vm.run(["test", "-d", f"/sys/module/{module}"]).exit_code == 0


def test_configfs_shows_target_core(vm: VirtualMachine) -> None:
    result = vm.run(["ls", "/sys/kernel/config/target"], check=True)
    assert {"core", "dbroot", "version"} <= set(result.text.split())


def test_guest_sees_kernel_modules_for_kmod(vm: VirtualMachine) -> None:
    result = vm.run(["modinfo", "-F", "name", "target_core_user"], check=True)
    assert result.text.strip() == "target_core_user"


def test_run_reports_exit_status_and_both_streams(vm: VirtualMachine) -> None:
    result = vm.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    assert result.timed_out is False


def test_run_passes_env_and_stdin(vm: VirtualMachine) -> None:
    result = vm.run(["sh", "-c", 'echo "$X"; cat'], env={"X": "from-host"}, input=b"stdin\n")
    assert result.stdout == b"from-host\nstdin\n"


def test_run_kills_a_command_past_its_timeout(vm: VirtualMachine) -> None:
    result = vm.run(["sleep", "30"], timeout=1.0)
    assert result.timed_out is True
    assert result.exit_code == -9
    assert result.duration < 10


def test_run_streams_output_as_it_comes(vm: VirtualMachine) -> None:
    chunks: list[tuple[str, bytes]] = []
    result = vm.run(["sh", "-c", "echo a; sleep 0.2; echo b >&2"],
                    on_output=lambda stream, data: chunks.append((stream, data)))
    assert ("stdout", b"a\n") in chunks and ("stderr", b"b\n") in chunks
    assert result.stdout == b"a\n"


def test_write_then_read_file_round_trips_binary(vm: VirtualMachine) -> None:
    data = bytes(range(256)) * 40
    vm.write_file("/tmp/roundtrip.bin", data, mode=0o600)
    assert vm.read_file("/tmp/roundtrip.bin") == data
    assert vm.run(["stat", "-c", "%a", "/tmp/roundtrip.bin"]).text.strip() == "600"


def test_guest_exception_comes_back_as_agent_error(vm: VirtualMachine) -> None:
    with pytest.raises(AgentError, match="FileNotFoundError") as info:
        vm.read_file("/does/not/exist")
    assert info.value.exc_type == "FileNotFoundError"
    assert vm.alive


def test_kernel_log_since_mark_has_only_new_records(vm: VirtualMachine) -> None:
    vm.write_file("/dev/kmsg", b"tcmu-harness-before-mark\n")
    mark = vm.kernel_log_mark()
    vm.write_file("/dev/kmsg", b"tcmu-harness-after-mark\n")
    texts = [r.text for r in vm.kernel_log(since=mark).records]
    assert "tcmu-harness-after-mark" in texts
    assert "tcmu-harness-before-mark" not in texts
    assert any(r.text == "tcmu-harness-before-mark" for r in vm.kernel_log().records)


def test_call_refuses_functions_outside_the_harness(vm: VirtualMachine) -> None:
    with pytest.raises(AgentError, match="cannot call 'os:system'"):
        vm.call("os:system", command="true")
