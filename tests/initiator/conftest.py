"""Fixtures for the initiator tests: the fakesg LD_PRELOAD shim (see fakesg.c), which lets
sg3_utils binaries and initiator.sgio run on a host that has no SCSI devices."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from initiator_fakesg import FakeSg

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def fakesg_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the fakesg shim")
    out = tmp_path_factory.mktemp("fakesg") / "fakesg.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(out),
                    str(HERE / "fakesg.c"), "-ldl"], check=True)
    return out


@pytest.fixture
def fakesg(fakesg_library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSg:
    """A fresh shim setup, active in every subprocess this test starts (not in pytest's
    own process: LD_PRELOAD only takes effect at exec)."""
    fake = FakeSg(fakesg_library, tmp_path / "rules.txt", tmp_path / "log.txt")
    fake.rules("")
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    return fake
