"""python -m tcmu: one-sentence errors with exit status 2, never a bare traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tcmu import __main__ as cli
from tcmu import runner
from tcmu.uio import UioNotFound

ROOT = Path(__file__).resolve().parents[2]


def test_bad_spec_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tcmu", "serve", "--handler", "nosuch.mod:X", "--device", "d"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tcmu: error: no module named 'nosuch.mod'")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_missing_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--device", "d"])
    assert e.value.code == 2
    assert "--handler" in capsys.readouterr().err


def test_unknown_device_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*a: object, **k: object) -> int:
        raise UioNotFound("no TCMU device matches 'd'; pass the full UIO name")

    monkeypatch.setattr(runner, "serve", fail)
    assert cli.main(["serve", "--handler", "tcmu.handler:Handler", "--device", "d"]) == 2
    err = capsys.readouterr().err
    assert err == "tcmu: error: no TCMU device matches 'd'; pass the full UIO name\n"


def test_busy_device_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*a: object, **k: object) -> int:
        raise OSError(16, "/dev/uio0 is already open (another handler serves x)")

    monkeypatch.setattr(runner, "serve", fail)
    assert cli.main(["serve", "--handler", "m:C", "--device", "d"]) == 2
    assert "already open" in capsys.readouterr().err


def test_unexpected_failure_is_one_line_and_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*a: object, **k: object) -> int:
        raise KeyError("surprise")

    monkeypatch.setattr(runner, "serve", fail)
    assert cli.main(["serve", "--handler", "m:C", "--device", "d"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KeyError" in err and "Traceback" not in err


def test_serve_arguments_are_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(spec: str, device: str, **kw: object) -> int:
        seen.update(kw, spec=spec, device=device)
        return 0

    monkeypatch.setattr(runner, "serve", fake)
    argv = ["serve", "--handler", "m:C a=1", "--device", "d", "--log", "/tmp/l", "--recover"]
    assert cli.main(argv) == 0
    assert seen == {"spec": "m:C a=1", "device": "d", "log_path": "/tmp/l", "recover": True,
                    "netlink": True}
