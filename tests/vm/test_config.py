"""vm/config.py: VmConfig validation and the cache directory default."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tcmu_harness.vm.config import ACCELERATORS, VmConfig, default_cache_dir


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("TCMU_HARNESS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    return home


def test_defaults(clean_env: Path) -> None:
    config = VmConfig()
    assert (config.kernel, config.memory_mb, config.cpus, config.accel) == (None, 1024, 2, "auto")
    assert config.cache_dir == clean_env / ".cache" / "tcmu-harness"
    assert config.log_dir is None
    assert (config.boot_timeout, config.request_timeout, config.shutdown_grace) == (
        180.0,
        120.0,
        10.0,
    )
    assert config.qemu_binary == "qemu-system-x86_64"
    assert ACCELERATORS == ("auto", "kvm", "tcg")


@pytest.mark.parametrize("accel", ["auto", "kvm", "tcg"])
def test_every_accelerator_is_accepted(accel: str) -> None:
    assert VmConfig(accel=accel).accel == accel


@pytest.mark.parametrize("accel", ["hvf", "KVM", "", "tcg,thread=multi"])
def test_a_bad_accelerator(accel: str) -> None:
    with pytest.raises(ValueError) as info:
        VmConfig(accel=accel)
    assert str(info.value) == f"unknown accelerator {accel!r}; use one of auto, kvm, tcg"


def test_too_little_memory() -> None:
    with pytest.raises(ValueError) as info:
        VmConfig(memory_mb=255)
    assert str(info.value) == "255 MiB of guest memory is too little; use >= 256"
    assert VmConfig(memory_mb=256).memory_mb == 256


@pytest.mark.parametrize("cpus", [0, -1])
def test_too_few_cpus(cpus: int) -> None:
    with pytest.raises(ValueError) as info:
        VmConfig(cpus=cpus)
    assert str(info.value) == f"the VM needs at least one vCPU, not {cpus}"
    assert VmConfig(cpus=1).cpus == 1


def test_the_accelerator_is_checked_first() -> None:
    with pytest.raises(ValueError) as info:
        VmConfig(accel="xen", memory_mb=1, cpus=0)
    assert str(info.value) == "unknown accelerator 'xen'; use one of auto, kvm, tcg"


def test_config_is_frozen() -> None:
    config = VmConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cpus = 4  # type: ignore[misc]


def test_default_cache_dir_prefers_tcmu_harness_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TCMU_HARNESS_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    assert VmConfig().cache_dir == tmp_path / "explicit"


def test_default_cache_dir_uses_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tcmu-harness"


def test_default_cache_dir_falls_back_to_home(clean_env: Path) -> None:
    assert default_cache_dir() == clean_env / ".cache" / "tcmu-harness"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setenv("TCMU_HARNESS_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert default_cache_dir() == clean_env / ".cache" / "tcmu-harness"


def test_the_cache_dir_default_is_read_per_instance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TCMU_HARNESS_CACHE", str(tmp_path / "one"))
    first = VmConfig()
    monkeypatch.setenv("TCMU_HARNESS_CACHE", str(tmp_path / "two"))
    assert (first.cache_dir, VmConfig().cache_dir) == (tmp_path / "one", tmp_path / "two")
