"""The harness's options, in one table shared by the pytest plugin and the CLI.

Each option has one name and one meaning, and is found in this order:
    command line   pytest --tcmu-NAME VALUE       tcmu-harness run|shell|vm --NAME VALUE
    environment    TCMU_HARNESS_NAME=VALUE        (pytest and the CLI)
    ini file       tcmu_name = VALUE              (pytest: [pytest] of pytest.ini, tox.ini,
                                                   or [tool.pytest.ini_options])
    default        the table's
pytest's options carry one prefix, --tcmu-, because the plugin is loaded wherever the
harness is installed and must not clash with another plugin's --kernel or --handler.
A repeatable option takes several values: on the command line by repeating it, in the
environment separated by ";", in an ini file one per line.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

PYTEST_PREFIX = "--tcmu-"
ENV_PREFIX = "TCMU_HARNESS_"
INI_PREFIX = "tcmu_"


def whole_number(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not str(text).strip().isdigit() or int(text) < minimum:
            raise ValueError(f"{text!r} is not a whole number >= {minimum}")
        return int(text)

    return convert


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{text!r} is not a number of seconds > 0")
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return convert


def seed(text: str) -> int:
    """An integer, or "random": one drawn now (the suites print it, to replay)."""
    if text == "random":
        return random.randrange(1 << 32)
    if not str(text).isdigit():
        raise ValueError(f"{text!r} is neither a whole number nor 'random'")
    return int(text)


@dataclass(frozen=True)
class Option:
    name: str  # --tcmu-NAME (pytest), --NAME (CLI)
    help: str
    default: Any = None  # a value, not text; None: unset (the code says what that means)
    convert: Callable[[str], Any] = str  # text from any source -> value; ValueError if bad
    metavar: str | None = None
    many: bool = False  # repeatable; the value is a list
    cli_many: bool | None = None  # the CLI's own choice (None: as `many`)
    flag: bool = False  # true when given (on the command line: no value)
    cli: tuple[str, ...] = ()  # tcmu-harness subcommand groups that take it: "vm", "lun"
    pytest: bool = True
    env_name: str = ""  # only where an older name is kept

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.dest.upper()

    @property
    def ini(self) -> str:
        return INI_PREFIX + self.dest

    @property
    def pytest_flag(self) -> str:
        return PYTEST_PREFIX + self.name

    def from_text(self, text: str, source: str) -> Any:
        """`text` (from `source`: the environment, an ini file) as a value."""
        if self.flag:
            return text.strip().lower() in ("1", "yes", "true", "on")
        try:
            if self.many:
                return [self.convert(part) for part in text.split(";") if part]
            return self.convert(text)
        except ValueError as exc:
            raise OptionError(f"{source}: {exc}") from None


class OptionError(ValueError):
    """One sentence naming the option's source and what is wrong with its value."""


OPTIONS: tuple[Option, ...] = (
    # -- the VM -------------------------------------------------------------------------
    Option("kernel", "kernel spec: default, deb:VERSION, BZIMAGE:MODROOT", metavar="SPEC",
           cli=("vm",)),
    Option("vm-memory", "guest memory in MiB", 1024, whole_number(256), "MIB", cli=("vm",)),
    Option("vm-cpus", "guest vCPUs", 2, whole_number(1), "N", cli=("vm",)),
    Option("accel", "auto (probe KVM, else TCG), kvm or tcg", "auto",
           one_of("auto", "kvm", "tcg"), "auto|kvm|tcg", cli=("vm",)),
    Option("cache-dir", "cache for kernels and images (default $XDG_CACHE_HOME/tcmu-harness)",
           metavar="DIR", cli=("vm",), env_name="TCMU_HARNESS_CACHE"),
    Option("vm-request-timeout", "seconds without an answer after which the guest is "
           "judged hung", 120.0, seconds, "SECONDS", cli=("vm",)),
    Option("vm-log-dir", "where VM console logs are kept (relative: to the rootdir)",
           "reports/vm", metavar="DIR"),
    Option("vm-attach", "use the VM `tcmu-harness vm up` keeps running instead of booting "
           "one (fast inner loop; its kernel is the one given to vm up)", False, flag=True),
    # -- the LUN and its handler ----------------------------------------------------------
    Option("handler", "handler under test: package.module:Class or path/file.py:Class, "
           "options may follow (pytest: repeatable, the suites run against each)",
           many=True, cli_many=False, metavar="SPEC", cli=("lun",)),
    Option("handler-opt", "option for every handler under test (repeatable)",
           many=True, metavar="KEY=VALUE", cli=("lun",)),
    Option("size", "LUN size: bytes or K/M/G/T", "64M", metavar="SIZE", cli=("lun",)),
    # (a power of two >= 512: checked with the size, harness/geometry.py)
    Option("block-size", "logical block size in bytes", 512, whole_number(1), "BYTES",
           cli=("lun",)),
    Option("physical-block-exponent", "logical blocks per physical block = 2**N (0..15)", 0,
           whole_number(0), "N", cli=("lun",)),
    Option("cmd-time-out", "attrib/cmd_time_out of every LUN in seconds (default: the "
           "kernel's, 30; 0: never); a hung handler is reported 3 s before it",
           None, whole_number(0), "SECONDS", cli=("lun",)),
    # -- what the tests accept --------------------------------------------------------------
    Option("kernel-log-allow", "a kernel log line matching REGEX does not fail the test "
           "(repeatable)", many=True, metavar="REGEX"),
    Option("fuzz-examples", "hypothesis examples per suites/fuzz test", 15, whole_number(1),
           "N"),
    Option("fuzz-seed", 'seed of the suites/fuzz examples: an integer, or "random" (printed, '
           "to replay with --tcmu-fuzz-seed)", 0, seed, "SEED"),
)
BY_NAME = {option.name: option for option in OPTIONS}


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return option.convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.name  # argparse names it in "invalid <name> value"
    return convert


def add_arguments(add: Callable[..., Any], option: Option, flag: str) -> None:
    """Declare `option` as `flag` with an argparse-style `add` (argparse's add_argument,
    pytest's addoption). The default is None ([] or False): resolve() fills it in."""
    text = option.help
    if option.default not in (None, False) and not option.many:
        text += f" (default {option.default})"
    text += f" [env {option.env}]"
    if option.flag:
        add(flag, dest=option.dest, action="store_true", default=False, help=text)
    elif option.many:
        add(flag, dest=option.dest, action="append", default=[], type=_argparse_type(option),
            metavar=option.metavar, help=text)
    else:
        add(flag, dest=option.dest, default=None, type=_argparse_type(option),
            metavar=option.metavar, help=text)


def resolve(options: Iterable[Option], given: Any,
            ini: Callable[[Option], str | list[str] | None] = lambda option: None) -> None:
    """Fill each option's attribute of `given` (an argparse namespace, pytest's
    config.option) that the command line left unset from the environment, then the ini
    file, then the default. OptionError names the source of a bad value."""
    for option in options:
        value = getattr(given, option.dest, None)
        # Unset: None, an empty list, a flag not given (`is`: a given 0 is a value).
        if not (value is None or value is False or (isinstance(value, list) and not value)):
            continue
        text = os.environ.get(option.env)
        if text:
            value = option.from_text(text, f"{option.env}={text}")
        else:
            raw = ini(option)
            if isinstance(raw, list):  # a linelist ini key
                raw = ";".join(line.strip() for line in raw if line.strip())
            if raw:
                value = option.from_text(raw, f"ini {option.ini} = {raw}")
            else:
                value = list(option.default or []) if option.many else option.default
        setattr(given, option.dest, value)
