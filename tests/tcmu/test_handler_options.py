"""Declared, typed handler options: checked when the spec is loaded (on the host, at
pytest start and by the CLI before booting), converted from the strings of a spec,
and shown by `tcmu-harness handler-info`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from blockkit import make_device

from tcmu.handler import DeviceInfo
from tcmu.handlers.ramdisk import RamDisk
from tcmu.options import Option, OptionError, options_of
from tcmu.spec import HandlerSpecError, load
from tcmu_harness import cli

PROJECT = Path(__file__).resolve().parents[2]

# --- options checked on the host ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("physical_block_exponnet=3", "physical_block_exponnet"),  # misspelt
        ("physical_block_exponent=three", "physical_block_exponent"),  # not an integer
        ("physical_block_exponent=16", "physical_block_exponent"),  # out of range
    ],
)
def test_bad_options_fail_when_the_spec_is_loaded(options: str, named: str) -> None:
    with pytest.raises(HandlerSpecError) as e:
        load(f"tcmu.handlers.ramdisk:RamDisk {options}")
    message = str(e.value)
    assert named in message and "\n" not in message


def test_the_cli_rejects_a_bad_option_before_booting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_boot(*args: object, **kwargs: object) -> None:
        raise AssertionError("the VM was booted for a handler spec that cannot work")

    monkeypatch.setattr(cli, "VirtualMachine", no_boot)
    code = cli.main(["run", "--handler", "tcmu.handlers.ramdisk:RamDisk colour=red", "--",
                     "true"])
    assert code == cli.EXIT_USAGE
    assert "colour" in capsys.readouterr().err


# --- declaring options ----------------------------------------------------------------------

README_PATTERN = """
from tcmu.block import BlockHandler
from tcmu.options import Option


class LatencyDisk(BlockHandler):
    options = (
        Option("latency_ms", float, 0.0, "added to every read", min=0),
        Option("label", str, "disk", "a name for the logs"),
        Option("verify", bool, False, "read back every write"),
    )

    def __init__(self, device, **options):
        super().__init__(device, **options)
        self.blocks = {}

    def read(self, offset, buf):
        buf.fill(0)

    def write(self, offset, buf):
        pass
"""

DEVICE = DeviceInfo("uio0", "tcm-user/1/d/harness/x", 1, "d", "harness/x", 1 << 20, 512, False)


@pytest.fixture
def latency_disk(tmp_path: Path) -> str:
    path = tmp_path / "latency.py"
    path.write_text(README_PATTERN)
    return f"{path}:LatencyDisk"


def test_the_readme_pattern_takes_its_declared_options_typed(latency_disk: str) -> None:
    handler = load(f"{latency_disk} latency_ms=2.5 verify=yes").instantiate(DEVICE)
    assert (handler.latency_ms, handler.label, handler.verify) == (2.5, "disk", True)
    assert handler.physical_block_exponent == 0  # the base's options come along
    handler = load(f"{latency_disk} physical_block_exponent=3 label='a b'").instantiate(DEVICE)
    assert (handler.physical_block_exponent, handler.label) == (3, "a b")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("latency=5", "LatencyDisk has no option 'latency' (did you mean latency_ms?); its "
                      "options are: physical_block_exponent, workers, latency_ms, label, verify"),
        ("latency_ms=-1", "LatencyDisk option latency_ms must be a number >= 0, not '-1'"),
        ("verify=maybe", "LatencyDisk option verify must be true or false"),
    ],
)
def test_the_readme_pattern_refuses_bad_options_when_loaded(
    latency_disk: str, options: str, message: str
) -> None:
    with pytest.raises(HandlerSpecError) as e:
        load(f"{latency_disk} {options}")
    assert str(e.value).startswith(message)
    assert str(e.value).endswith(f"; `tcmu-harness handler-info {latency_disk}` lists the options")


def test_a_class_attribute_is_the_options_default() -> None:
    class Deep(RamDisk):
        physical_block_exponent = 3

    assert options_of(Deep)["physical_block_exponent"].default == 3
    assert Deep(make_device()).physical_block_exponent == 3
    assert Deep(make_device(), physical_block_exponent="1").physical_block_exponent == 1


def test_an_option_clashing_with_a_method_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match="option 'flush' clashes with the attribute"):
        class Clash(RamDisk):
            options = (Option("flush", bool, False),)


@pytest.mark.parametrize(
    ("option", "value", "typed"),
    [(Option("n", int), "0x10", 16), (Option("n", int), " 7", 7), (Option("x", float), "1e3", 1e3),
     (Option("b", bool), "On", True), (Option("b", bool), "0", False),
     (Option("m", str, choices=("a", "b")), "b", "b")],
)
def test_conversions(option: Option, value: str, typed: object) -> None:
    assert option.convert(value) == typed


@pytest.mark.parametrize(
    ("option", "value"),
    [(Option("n", int), "2.0"), (Option("n", int), True), (Option("x", float), "fast"),
     (Option("m", str, choices=("a", "b")), "c"), (Option("n", int, max=3), "4")],
)
def test_bad_values(option: Option, value: object) -> None:
    with pytest.raises(OptionError, match=rf"^{option.name} must be .*, not '{value}'$"):
        option.convert(value)


# --- handler-info and pytest start ------------------------------------------------------------


def test_handler_info_prints_the_options(
    latency_disk: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["handler-info", latency_disk]) == 0
    out = capsys.readouterr().out
    assert "storage methods: read, write" in out
    assert re.search(r"latency_ms +float +default 0\.0 +added to every read \[a number >= 0\]",
                     out), out
    assert re.search(r"verify +bool +default False +read back every write", out), out


def test_handler_info_of_a_bad_spec_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["handler-info", "tcmu.handlers.ramdisk:Nope"]) == cli.EXIT_USAGE
    assert "no 'Nope'" in capsys.readouterr().err


def test_pytest_refuses_a_bad_option_at_start() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "suites/smoke", "--tcmu-handler", "tcmu.handlers.ramdisk:RamDisk colour=red"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "RamDisk has no option 'colour'" in proc.stderr
