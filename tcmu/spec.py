"""Handler specs: "package.module:Class key=value ..." or "path/to/file.py:Class key=value".

Options are strings, passed to the handler's __init__ as keyword arguments, which
converts them by the types the class declares (tcmu.options). Values may be quoted
shell-style ("path='/tmp/a b'"). load() checks everything it can without a device: the
import, the class, that it has every method it must implement, and the options' names
and values. Every error is a HandlerSpecError whose message says, in one sentence,
what was wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import shlex
import sys
from types import ModuleType

from tcmu.handler import DeviceInfo, Handler
from tcmu.options import OptionError
from tcmu.options import resolve as resolve_options


class HandlerSpecError(ValueError):
    """A handler spec that cannot be loaded."""


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerSpec:
    cls: type[Handler]
    options: dict[str, str]
    target: str = ""  # "module:Class" or "path/file.py:Class", as given

    def instantiate(self, device: DeviceInfo) -> Handler:
        try:
            return self.cls(device, **self.options)
        except OptionError as e:
            raise HandlerSpecError(_option_message(self.cls, e, self.target)) from e
        except TypeError as e:
            raise HandlerSpecError(
                f"{self.cls.__name__} rejected its options ({e}); pass only the options "
                f"its __init__ takes, as key=value"
            ) from e


def _option_message(cls: type, err: OptionError, target: str) -> str:
    where = target or f"{cls.__module__}:{cls.__name__}"
    what = f"{cls.__name__} option {err}" if err.option else str(err)
    return f"{what}; `tcmu-harness handler-info {where}` lists the options"


def _parse_options(words: list[str], spec: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.isidentifier():
            raise HandlerSpecError(
                f"option {word!r} in handler spec {spec!r} is not key=value; write options "
                f"as key=value separated by spaces"
            )
        if key in options:
            raise HandlerSpecError(f"option {key!r} is given twice in handler spec {spec!r}")
        options[key] = value
    return options


def _load_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise HandlerSpecError(
            f"handler file {path!r} does not exist; give a path to a .py file, relative to "
            f"{os.getcwd()!r} or absolute"
        )
    real = os.path.realpath(path)
    # One module per file, stable across calls so a second load reuses it.
    name = "tcmu_handler_" + hashlib.sha1(real.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, real)
    if module_spec is None or module_spec.loader is None:
        raise HandlerSpecError(f"cannot load {path!r} as a Python module; name it *.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise HandlerSpecError(
            f"loading handler file {path!r} failed with {type(e).__name__}: {e}; fix the file"
        ) from e
    return module


def _import(modname: str) -> ModuleType:
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name is not None and (modname == e.name or modname.startswith(e.name + ".")):
            raise HandlerSpecError(
                f"no module named {modname!r}; check the spelling or PYTHONPATH, or give a "
                f"file path ending in .py"
            ) from e
        raise HandlerSpecError(
            f"module {modname!r} imports {e.name!r}, which is not installed; install it "
            f"or remove the import"
        ) from e
    except Exception as e:
        raise HandlerSpecError(
            f"importing {modname!r} failed with {type(e).__name__}: {e}; fix the module"
        ) from e


def load(spec: str) -> HandlerSpec:
    """Parse and load a handler spec (module import, class lookup, option syntax)."""
    try:
        words = shlex.split(spec)
    except ValueError as e:
        raise HandlerSpecError(f"handler spec {spec!r} cannot be split into words ({e})") from e
    if not words:
        raise HandlerSpecError("the handler spec is empty; give 'package.module:Class'")
    target, *rest = words
    where, sep, clsname = target.rpartition(":")
    if not sep or not where or not clsname:
        raise HandlerSpecError(
            f"handler spec {target!r} lacks ':Class'; write 'package.module:Class' or "
            f"'path/to/file.py:Class'"
        )
    options = _parse_options(rest, spec)
    is_file = where.endswith(".py") or os.sep in where
    module = _load_file(where) if is_file else _import(where)
    obj = getattr(module, clsname, None)
    if obj is None:
        found = sorted(
            n for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, Handler) and v is not Handler
        )
        hint = f"it defines {', '.join(found)}" if found else "it defines no Handler subclass"
        raise HandlerSpecError(f"{where!r} has no {clsname!r} ({hint}); fix the class name")
    if not (isinstance(obj, type) and issubclass(obj, Handler)):
        raise HandlerSpecError(
            f"{where}:{clsname} is not a subclass of tcmu.handler.Handler; derive it from "
            f"Handler"
        )
    _check_complete(obj)
    try:
        resolve_options(obj, options)
    except OptionError as e:
        raise HandlerSpecError(_option_message(obj, e, target)) from e
    return HandlerSpec(obj, options, target)


def _check_complete(cls: type[Handler]) -> None:
    """A handler class still lacking an abstract method cannot serve: say which."""
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        methods = " and ".join(f"{name}({_parameters(cls, name)})" for name in missing)
        raise HandlerSpecError(
            f"{cls.__name__} cannot serve a device: it lacks {methods}; implement "
            f"{'it' if len(missing) == 1 else 'them'} in the class"
        )


def _parameters(cls: type, name: str) -> str:
    """"offset, buf" for BlockHandler.write: the abstract method's parameters."""
    try:
        params = list(inspect.signature(getattr(cls, name)).parameters)
    except (TypeError, ValueError):
        return "..."
    return ", ".join(p for p in params if p != "self")
