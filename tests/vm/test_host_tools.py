"""Missing host packages are named before anything boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_harness.vm.host_tools import GUEST_TOOLS, MissingHostTool, require_host_tools


def _path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *tools: str) -> None:
    for tool in tools:
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_nothing_installed_names_both_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_with(tmp_path, monkeypatch)
    with pytest.raises(MissingHostTool) as err:
        require_host_tools("qemu-system-x86_64")
    assert str(err.value) == (
        "qemu-system-x86_64, sg_raw, sg_inq, sg_reset are not installed on this host; install "
        "qemu-system-x86 sg3-utils (apt-get install qemu-system-x86 sg3-utils) or run .ci/setup")


def test_only_qemu_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _path_with(tmp_path, monkeypatch, *GUEST_TOOLS)
    with pytest.raises(MissingHostTool) as err:
        require_host_tools("qemu-system-x86_64")
    assert str(err.value) == (
        "qemu-system-x86_64 is not installed on this host; install qemu-system-x86 "
        "(apt-get install qemu-system-x86) or run .ci/setup")


def test_all_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _path_with(tmp_path, monkeypatch, "qemu-system-x86_64", *GUEST_TOOLS)
    require_host_tools("qemu-system-x86_64")
