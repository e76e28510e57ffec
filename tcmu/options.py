"""Declared, typed handler options.

A handler class declares the options it takes in its `options` class attribute:

    class SlowDisk(BlockHandler):
        options = (
            Option("latency_ms", float, 0.0, "added to every read", min=0),
            Option("mode", str, "fast", "how to store", choices=("fast", "safe")),
        )

The options of a class are its own plus those of its bases (a subclass redeclaring a
name replaces the base's option). A plain class attribute of the same name is the
option's default instead (`class MyDisk(BlockHandler): workers = 8`). Handler.__init__
checks the options it is given against the declarations, converts strings (from a spec
"module:Class latency_ms=5") by the declared type, and sets every declared option as an
attribute of the handler (`self.latency_ms`). The same check runs when a spec is loaded,
so a misspelt name or a bad value is one sentence on the host, before any VM boots.

Handlers written before declarations took options as keyword parameters of __init__
(`def __init__(self, device, path=None, **options)`); such parameters still count as
options (untyped strings), so their specs load as before.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Sequence
from typing import Any

_TYPES = (str, int, float, bool)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class OptionError(ValueError):
    """An option that is not declared, or a value its declaration does not allow
    (`option` names it then)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class UnknownOption(OptionError, TypeError):
    """An option the class does not take (a TypeError, as an unexpected keyword is)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Option:
    """One handler option: its name, type (str, int, float or bool), default and help,
    with optional bounds (numbers) or choices (strings)."""

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: Sequence[str] | None = None
    declared: bool = True  # False: a keyword parameter of an __init__ (untyped)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise TypeError(f"option name {self.name!r} is not a Python identifier")
        if self.type not in _TYPES:
            raise TypeError(f"option {self.name}: type must be str, int, float or bool, "
                            f"not {self.type!r}")

    def requirement(self) -> str:
        """What a value must be, as the end of "NAME must be ..."."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.type is bool:
            return "true or false (also yes/no, on/off, 1/0)"
        noun = {int: "an integer", float: "a number", str: "a string"}[self.type]
        if self.min is not None and self.max is not None:
            return f"{noun} from {_num(self.min)} to {_num(self.max)}"
        if self.min is not None:
            return f"{noun} >= {_num(self.min)}"
        if self.max is not None:
            return f"{noun} <= {_num(self.max)}"
        return noun

    def convert(self, value: Any) -> Any:
        """The typed value of `value` (a spec's string, or already typed); OptionError
        "NAME must be ..., not VALUE" when it does not fit."""
        try:
            typed = self._typed(value)
        except (TypeError, ValueError):
            typed = None
        ok = typed is not None
        if ok and self.choices is not None:
            ok = typed in self.choices
        if ok and self.min is not None:
            ok = typed >= self.min
        if ok and self.max is not None:
            ok = typed <= self.max
        if not ok:
            raise OptionError(f"{self.name} must be {self.requirement()}, not {str(value)!r}",
                              self.name)
        return typed

    def _typed(self, value: Any) -> Any:
        if self.type is str:
            return str(value)
        if self.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            return True if text in _TRUE else False if text in _FALSE else None
        if isinstance(value, bool):
            return None  # True is not the integer 1 here
        if self.type is int:
            if isinstance(value, int):
                return value
            text = str(value).strip()
            return int(text, 0) if text.lower().startswith(("0x", "0o", "0b")) else int(text)
        return float(value)  # float: ints and numeric strings


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _own_options(klass: type) -> Sequence[Option]:
    own = vars(klass).get("options", ())
    if not isinstance(own, tuple | list) or not all(isinstance(o, Option) for o in own):
        raise TypeError(f"{klass.__name__}.options must be a tuple of tcmu.options.Option")
    return own


def _keyword_parameters(klass: type) -> list[Option]:
    """Keyword parameters of klass's own __init__ (after device), as untyped options."""
    init = vars(klass).get("__init__")
    if init is None:
        return []
    try:
        params = list(inspect.signature(init).parameters.values())[2:]  # self, device
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        Option(p.name, str, None if p.default is inspect.Parameter.empty else p.default,
               "(a keyword parameter of __init__)", declared=False)
        for p in params if p.kind in kinds
    ]  # fmt: skip


def options_of(cls: type) -> dict[str, Option]:
    """Every option `cls` takes, by name, in declaration order (bases first)."""
    found: dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        for option in [*_keyword_parameters(klass), *_own_options(klass)]:
            found.pop(option.name, None)  # a redeclaration moves to its new place
            found[option.name] = option
    for name, option in found.items():
        attr = inspect.getattr_static(cls, name, None)
        if option.declared and attr is not None and not hasattr(type(attr), "__get__"):
            found[name] = dataclasses.replace(option, default=attr)  # class attribute
    return found


def check_declarations(cls: type) -> None:
    """TypeError (one sentence) when an option would clash with a method or property."""
    for name, option in options_of(cls).items():
        attr = inspect.getattr_static(cls, name, None)
        if option.declared and attr is not None and hasattr(type(attr), "__get__"):
            raise TypeError(f"{cls.__name__}: option {name!r} clashes with the attribute "
                            f"{cls.__name__}.{name}; rename the option")


def resolve(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Check `given` (name -> string or typed value) against the options of `cls`;
    returns the typed value of every declared option (defaults for those not given).
    Raises OptionError naming the first problem."""
    known = options_of(cls)
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            takes = ", ".join(known) or "none"
            raise UnknownOption(f"{cls.__name__} has no option {name!r}{hint}; its options "
                                f"are: {takes}")
    values: dict[str, Any] = {}
    for name, option in known.items():
        if name in given:
            value = option.convert(given[name]) if option.declared else given[name]
        else:
            value = option.default
        if option.declared:
            values[name] = value
    return values


def describe(cls: type) -> list[str]:
    """One line per option: name, type, default, help (what handler-info prints)."""
    rows = []
    for option in options_of(cls).values():
        kind = option.type.__name__ if option.declared else "str?"
        default = "(none)" if option.default is None else repr(option.default)
        limits = "" if option.requirement() in ("a string",) else f" [{option.requirement()}]"
        rows.append((option.name, kind, default, option.help + limits))
    if not rows:
        return ["(no options)"]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"{n:<{widths[0]}}  {t:<{widths[1]}}  default {d:<{widths[2]}}  {h}".rstrip()
            for n, t, d, h in rows]  # fmt: skip
