"""tcmu.spec: loading handlers from spec strings, and its one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu.handler import DeviceInfo, Handler
from tcmu.spec import HandlerSpecError, load

DEVICE = DeviceInfo("uio0", "tcm-user/1/d/harness/x", 1, "d", "harness/x", 1 << 20, 512, False)

HANDLERS = """
from tcmu.handler import Handler, Result

class Echo(Handler):
    def __init__(self, device, *, size="1", label="", **options):
        super().__init__(device, **options)
        self.size = size
        self.label = label

    def handle(self, cmd):
        return Result.good()

class NotAHandler:
    pass

helper = 3
"""


@pytest.fixture
def handler_file(tmp_path: Path) -> Path:
    path = tmp_path / "myhandlers.py"
    path.write_text(HANDLERS)
    return path


def one_sentence(e: pytest.ExceptionInfo[HandlerSpecError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.count("; ") >= 1, msg  # what is wrong; what to do
    return msg


def test_file_spec_with_options(handler_file: Path) -> None:
    spec = load(f"{handler_file}:Echo size=4096 label='a b'")
    assert spec.cls.__name__ == "Echo" and issubclass(spec.cls, Handler)
    assert spec.options == {"size": "4096", "label": "a b"}
    handler = spec.instantiate(DEVICE)
    assert (handler.size, handler.label, handler.device) == ("4096", "a b", DEVICE)


def test_module_spec(handler_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(handler_file.parent))
    spec = load("myhandlers:Echo")
    assert spec.cls.__name__ == "Echo" and spec.options == {}


def test_loading_the_same_file_twice_gives_the_same_class(handler_file: Path) -> None:
    assert load(f"{handler_file}:Echo").cls is load(f"{handler_file}:Echo").cls


def test_missing_class_part() -> None:
    with pytest.raises(HandlerSpecError) as e:
        load("tcmu.handler")
    assert "':Class'" in one_sentence(e)


def test_empty_spec() -> None:
    with pytest.raises(HandlerSpecError, match="empty"):
        load("  ")


def test_module_not_found() -> None:
    with pytest.raises(HandlerSpecError) as e:
        load("no_such_pkg.handlers:Foo")
    assert "no module named 'no_such_pkg.handlers'" in one_sentence(e)


def test_missing_dependency_of_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needsdep.py").write_text("import not_installed_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HandlerSpecError) as e:
        load("needsdep:Foo")
    assert "imports 'not_installed_dep_xyz'" in one_sentence(e)


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(HandlerSpecError) as e:
        load(f"{tmp_path}/nope.py:Foo")
    assert "does not exist" in one_sentence(e)


def test_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def (:\n")
    with pytest.raises(HandlerSpecError) as e:
        load(f"{path}:Foo")
    assert "SyntaxError" in one_sentence(e)


def test_no_such_class_lists_what_is_there(handler_file: Path) -> None:
    with pytest.raises(HandlerSpecError) as e:
        load(f"{handler_file}:Missing")
    msg = one_sentence(e)
    assert "'Missing'" in msg and "Echo" in msg


@pytest.mark.parametrize("name", ["NotAHandler", "helper"])
def test_not_a_handler_subclass(handler_file: Path, name: str) -> None:
    with pytest.raises(HandlerSpecError) as e:
        load(f"{handler_file}:{name}")
    assert "not a subclass of tcmu.handler.Handler" in one_sentence(e)


@pytest.mark.parametrize("opts", ["size", "=3", "1x=3", "size=1 size=2", "'unclosed"])
def test_bad_option_syntax(handler_file: Path, opts: str) -> None:
    with pytest.raises(HandlerSpecError):
        load(f"{handler_file}:Echo {opts}")


def test_option_the_handler_does_not_take(handler_file: Path) -> None:
    with pytest.raises(HandlerSpecError) as e:  # when loaded: on the host, before any VM
        load(f"{handler_file}:Echo colour=red")
    assert "colour" in one_sentence(e)
