"""LUNs as a test or the CLI sees them, on the host: create, send CDBs, read what the
handler saw, tear down. Everything runs in the guest through the agent:

    host (this) --agent call--> lio.lun (configfs, handler process)
                --agent call--> lio.commands (SG_IO, sg3_utils) -> kernel -> ring

Commands go through the guest's watchdog (lio.watchdog): when the handler dies or hangs
with one in flight, it raises HandlerFailure with the verdict, the handler's traceback or
stacks, at once rather than after the kernel's or SG_IO's timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tcmu.spec import HandlerSpec
from tcmu.spec import load as load_handler_spec
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator import sg3 as sg3_types
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.vm.client import AgentError
from tcmu_harness.vm.machine import VirtualMachine

DEFAULT_HANDLER = "tcmu.handlers.ramdisk:RamDisk"
DEFAULT_SIZE = 64 << 20


@dataclass(frozen=True)
class HandlerCommand:
    """One command the handler completed (a line of its command log)."""

    cmd_id: int
    cdb: bytes
    status: int
    sense: bytes
    t: float  # guest monotonic seconds at completion
    us: float  # time inside the handler

    @property
    def opcode(self) -> int:
        return self.cdb[0]


@dataclass(frozen=True)
class LunSpec:
    """What to create. Defaults: the reference RAM disk, 64 MiB, 512-byte blocks."""

    size: int = DEFAULT_SIZE
    block_size: int = 512
    handler: str = DEFAULT_HANDLER
    handler_options: dict[str, str] = field(default_factory=dict)
    config: str | None = None  # dev_config after the subtype (default: a per-LUN file path)
    attributes: dict[str, str | int] = field(default_factory=dict)  # attrib/ after creation
    control: dict[str, str | int] = field(default_factory=dict)  # control before enable
    # I_T nexuses to the backstore: 2 or more exports it through that many tcm_loop
    # targets (Lun.paths; LunManager.add_path), as two-initiator reservation tests need
    paths: int = 1


class HandlerFailure(AssertionError):
    """The handler under test died, hung or could not start: str() says which, on what
    command, with its output (traceback) or its threads' stacks."""


class HandlerSetupError(HandlerFailure):
    """A LUN could not be created because of its handler (see HandlerFailure)."""


# Guest exceptions that mean "the handler failed", not "the harness failed".
_HANDLER_FAILURES = ("HandlerFailure", "HandlerStartError")


def _guest_call(vm: VirtualMachine, fn: str, /, failure: type[HandlerFailure] = HandlerFailure,
                **kwargs: Any) -> Any:
    """vm.call, with the guest's handler failures raised as `failure` (its message only:
    the guest's own traceback says nothing about the handler)."""
    __tracebackhide__ = True
    try:
        return vm.call(fn, **kwargs)
    except AgentError as exc:
        if exc.exc_type in _HANDLER_FAILURES:
            raise failure(exc.message) from None
        raise


class HandlerOptionError(ValueError):
    """A --handler-opt that is not KEY=VALUE."""


def handler_spec_from_cli(handler: str, options: list[str],
                          prefix: str = "--") -> tuple[str, dict[str, str]]:
    """--handler/--handler-opt as given on a command line, made ready for the guest
    (`prefix`: how the command line spells its options, "--tcmu-" for pytest's).

    `handler` is "SPEC [KEY=VALUE ...]" (options may follow the spec in the same word
    list); `options` are more KEY=VALUE words (--handler-opt). A file spec becomes
    absolute (a kept VM's working directory may not be the caller's).
    """
    words = shlex.split(handler)
    if not words:
        raise HandlerOptionError(f"{prefix}handler is empty; give package.module:Class")
    spec, inline = words[0], words[1:]
    module, sep, cls = spec.rpartition(":")
    if sep and (module.endswith(".py") or "/" in module):
        spec = f"{os.path.abspath(module)}:{cls}"
    parsed: dict[str, str] = {}
    for flag, given in ((f"{prefix}handler", inline), (f"{prefix}handler-opt", options)):
        for option in given:
            key, eq, value = option.partition("=")
            if not eq or not key:
                raise HandlerOptionError(f"{flag} {option!r} is not KEY=VALUE")
            parsed[key] = value
    return spec, parsed


def check_handler(handler: str, options: dict[str, str]) -> HandlerSpec:
    """Load the handler spec on the host, as the guest will (the same Python and
    checkout): the class, the methods it must have, its options. HandlerSpecError says
    what is wrong in one sentence, before any VM boots."""
    words = [handler, *(f"{key}={shlex.quote(value)}" for key, value in options.items())]
    return load_handler_spec(" ".join(words))


def handler_id(spec: str, options: dict[str, str]) -> str:
    """A short name for test ids and reports: the class name, plus its options."""
    name = spec.rpartition(":")[2] or spec
    return "-".join([name, *(f"{k}={v}" for k, v in sorted(options.items()))])


CdbObserver = Callable[["Lun", CdbResult], None]


class Lun:
    """A LUN in the guest, as seen through one I_T nexus: `path` 0 is the LUN's own
    tcm_loop target; LunManager.add_path gives Luns for more nexuses to the same
    backstore (same handler, same command log; own sg node and initiator port).
    `paths` lists them all, this one first, on the Lun of path 0."""

    def __init__(self, vm: VirtualMachine, info: dict[str, Any], path: int = 0) -> None:
        self.vm = vm
        self.info = info
        self.path = path
        self.name: str = info["name"]
        self.sg: str = info["sg"]  # /dev/sgN in the guest
        self._sd: str = info["sd"]  # found on first use: see the sd property
        self.size: int = info["size"]
        self.block_size: int = info["block_size"]
        self.sg3 = Sg3(vm, self)
        self.paths: list[Lun] = [self]
        # Called with every CDB's result (the LunManager's list: reports record steps).
        self.observers: list[CdbObserver] = []

    @property
    def sd(self) -> str:
        """/dev/sdX in the guest, once the sd driver has probed the LUN (fails at once,
        naming the peripheral type, when the handler does not present a disk)."""
        if not self._sd:
            self._sd = self.vm.call("tcmu_harness.lio.lun:block_device", name=self.name,
                                    path=self.path)
        return self._sd

    @property
    def blocks(self) -> int:
        return self.size // self.block_size

    def __repr__(self) -> str:
        via = f" path {self.path}" if self.path else ""
        return f"<Lun {self.name}{via} {self.sg} {self.info['handler_spec']}>"

    def cdb(
        self,
        cdb: bytes,
        *,
        data_out: bytes | None = None,
        data_in_len: int = 0,
        timeout: float = 30.0,
    ) -> CdbResult:
        """Issue one CDB through SG_IO on the LUN's sg node, in the guest. Raises
        HandlerFailure when the handler dies or hangs on it (or did before)."""
        __tracebackhide__ = True
        answer = _guest_call(
            self.vm,
            "tcmu_harness.lio.commands:sg_io",
            call_timeout=timeout + 30,
            name=self.name,
            cdb=bytes(cdb),
            data_out=data_out,
            data_in_len=data_in_len,
            timeout=timeout,
            path=self.path,
        )
        return self._observed(CdbResult.from_dict(answer))

    def cdbs(
        self, commands: list[tuple[bytes, bytes | None, int]], *, timeout: float = 30.0
    ) -> list[CdbResult]:
        """Issue (cdb, data_out, data_in_len) commands in order in one agent round trip:
        for bulk checks, where the host<->guest transport would dominate."""
        __tracebackhide__ = True
        batch = [{"cdb": bytes(c), "data_out": out, "data_in_len": n, "timeout": timeout}
                 for c, out, n in commands]  # fmt: skip
        answers = _guest_call(self.vm, "tcmu_harness.lio.commands:sg_io_batch", name=self.name,
                              commands=batch, path=self.path,
                              call_timeout=timeout * len(batch) + 30)
        return [self._observed(CdbResult.from_dict(answer)) for answer in answers]

    def _observed(self, result: CdbResult) -> CdbResult:
        for observe in self.observers:
            observe(self, result)
        return result

    def write_blocks(self, lba: int, data: bytes) -> None:
        """WRITE(16) of whole blocks at `lba`, which must be GOOD: for laying down data
        around the command under test."""
        self.cdb(cdb.write_16(lba, len(data) // self.block_size), data_out=data).expect_good()

    def read_blocks(self, lba: int, blocks: int) -> bytes:
        """READ(16) of `blocks` blocks at `lba`, which must be GOOD: the data."""
        size = blocks * self.block_size
        return self.cdb(cdb.read_16(lba, blocks), data_in_len=size).expect_good().data

    @property
    def backstore_dir(self) -> str:
        """The backstore's configfs directory in the guest."""
        _, hba, dev_name = self.info["uio_name"].split("/")[:3]
        return f"/sys/kernel/config/target/core/user_{hba}/{dev_name}"

    def attribute(self, name: str) -> str:
        """A backstore attribute (attrib/NAME in configfs), e.g. "hw_max_sectors"."""
        return self.vm.read_file(f"{self.backstore_dir}/attrib/{name}").decode().strip()

    def handler_commands(self) -> list[HandlerCommand]:
        """Every command the handler completed so far, in completion order."""
        raw = self.vm.read_file(self.info["command_log"])
        return list(_parse_command_log(raw))

    def handler_output(self) -> str:
        return self.vm.read_file(self.info["handler_output"]).decode(errors="replace")

    def kill_handler(self, signum: int = 9) -> int | None:
        return self.vm.call("tcmu_harness.lio.lun:kill_handler", name=self.name, signum=signum)

    def restart_handler(self) -> None:
        self.info = self.vm.call("tcmu_harness.lio.lun:restart_handler", name=self.name)


def _parse_command_log(raw: bytes) -> Iterator[HandlerCommand]:
    for line in raw.splitlines():
        entry = json.loads(line)
        if "cdb" not in entry:
            continue  # TMR notifications and other records
        yield HandlerCommand(
            entry["cmd_id"], bytes.fromhex(entry["cdb"]), entry["status"],
            bytes.fromhex(entry.get("sense", "")), entry["t"], entry.get("us", 0.0),
        )  # fmt: skip


class Sg3:
    """sg3_utils run in the guest on this LUN: lun.sg3.sg_inq(), lun.sg3.sg_readcap()...
    Each call returns the dataclass of initiator/sg3.py (exit code, output, parsed)."""

    def __init__(self, vm: VirtualMachine, lun: Lun) -> None:
        self._vm = vm
        self._lun = lun

    def __getattr__(self, tool: str) -> Any:
        if not tool.startswith("sg_"):
            raise AttributeError(tool)

        def call(*args: Any, device: str | None = None, **kwargs: Any) -> Any:
            if args:
                raise TypeError(f"pass the arguments of {tool} by keyword")
            kwargs["device"] = device or self._lun.sg
            answer = _guest_call(self._vm, "tcmu_harness.lio.commands:sg3_tool",
                                 name=self._lun.name, tool=tool, kwargs=kwargs,
                                 call_timeout=kwargs.get("timeout", 60) + 30)
            return getattr(sg3_types, answer["type"])(**answer["fields"])

        return call


class LunManager:
    """Creates LUNs in one VM and guarantees their teardown."""

    def __init__(self, vm: VirtualMachine) -> None:
        self.vm = vm
        self._names = itertools.count()
        self.live: dict[str, Lun] = {}
        self.cdb_observers: list[CdbObserver] = []  # given to every Lun made here

    def create(self, spec: LunSpec | None = None, *, name: str | None = None) -> Lun:
        spec = spec or LunSpec()
        __tracebackhide__ = True
        name = name or f"lun{next(self._names)}"
        info = _guest_call(
            self.vm,
            "tcmu_harness.lio.lun:create",
            failure=HandlerSetupError,
            name=name,
            size=spec.size,
            block_size=spec.block_size,
            handler=spec.handler,
            handler_options=dict(spec.handler_options),
            config=spec.config,
            attributes=dict(spec.attributes),
            control=dict(spec.control),
            # The guest bounds set-up by `timeout` (30 s); a failed set-up's teardown can
            # wait on the kernel (an sd probe in progress), so allow for it here.
            call_timeout=330,
        )
        lun = Lun(self.vm, info)
        lun.observers = self.cdb_observers
        self.live[name] = lun
        for _ in range(spec.paths - 1):
            self.add_path(lun)
        return lun

    def add_path(self, lun: Lun) -> Lun:
        """Export `lun`'s backstore through one more tcm_loop target (its LUN 0): a new
        I_T nexus, with its own initiator port name and sg node; returns the Lun seen
        through it (appended to lun.paths). Removed when `lun` is deleted."""
        __tracebackhide__ = True
        primary = lun.paths[0]
        answer = _guest_call(self.vm, "tcmu_harness.lio.lun:add_path", failure=HandlerSetupError,
                             name=primary.name, call_timeout=330)
        info = {**primary.info, "sg": answer["sg"], "sd": "", "address": answer["address"],
                "wwn": answer["wwn"], "initiator": answer["initiator"]}
        path = Lun(self.vm, info, path=answer["path"])
        path.observers = self.cdb_observers
        path.paths = primary.paths
        primary.paths.append(path)
        return path

    def delete(self, lun: Lun) -> dict[str, Any]:
        lun = lun.paths[0]
        self.live.pop(lun.name, None)
        for path in lun.paths:
            self.vm.call("tcmu_harness.initiator.guest:close", device=path.sg)
        return self.vm.call("tcmu_harness.lio.lun:delete", name=lun.name, call_timeout=330)

    def delete_all(self) -> list[dict[str, Any]]:
        return [self.delete(lun) for lun in list(self.live.values())]

    def clear_guest(self) -> list[str]:
        """Delete every LUN the guest holds, this manager's or not (a kept VM keeps what
        an interrupted earlier session left), then configfs leftovers; what was removed."""
        removed = self.vm.call("tcmu_harness.lio.lun:delete_all", call_timeout=330)
        return [*removed, *self.remove_leftovers()]

    def remove_leftovers(self) -> list[str]:
        """Delete configfs entries no live LUN owns; returns them (empty when clean)."""
        return self.vm.call("tcmu_harness.lio.lun:remove_leftovers", call_timeout=330)
