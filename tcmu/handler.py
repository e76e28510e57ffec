"""The handler API: what a TCMU handler author implements and what the runtime hands it.

A handler receives one `Command` per CMD ring entry and answers with a `Result`.
The runtime (tcmu.runner / tcmu.ring) owns the ring; a handler never touches it.

    class Zeroes(Handler):
        def handle(self, cmd: Command) -> Result:
            if cmd.cdb[0] == Opcode.READ_10:
                cmd.iov.fill(0)
                return Result.good()
            return Result.check_condition(sense.fixed(SenseKey.ILLEGAL_REQUEST,
                                                      Asc.INVALID_COMMAND_OPERATION_CODE))

Data direction: TCMU does not say which way a non-BIDI command's data flows. The
kernel copies data-out into `cmd.iov` before queueing (WRITE & co.) and copies `cmd.iov`
back to the initiator after completion (READ & co.); the handler knows which from the
CDB. BIDI commands (XDWRITEREAD) carry data-out in `cmd.iov` and data-in space in
`cmd.bidi_iov`.

Deferred completion: `handle()` may return None and later call `cmd.complete(result)`
from any thread; the runtime then completes out of order when the kernel offers
CAP_OOOC, so a slow command does not block fast ones.

Errors: a `tcmu.sense.SenseError` raised by handle() becomes CHECK CONDITION with its
sense data; any other exception becomes HARDWARE ERROR, INTERNAL TARGET FAILURE (44/00)
and is logged with its traceback.

Reconfiguration: when the kernel announces a new dev_size, write cache setting or
dev_config (netlink RECONFIG_DEVICE), the runtime calls `apply_reconfig(Reconfig)`,
which asks the optional `reconfig(change)` hook (raise ReconfigRefused to keep the old
configuration) and then swaps `handler.device`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from tcmu.layout import Cap
from tcmu.options import Option, check_declarations
from tcmu.options import resolve as resolve_options
from tcmu.sense import INTERNAL_FAILURE_SENSE
from tcmu_harness.scsi.constants import Status


class ScatterBuffer:
    """The data buffer of one command: the iovecs of a ring entry, as zero-copy views.

    `views` are memoryviews straight into the shared data area; keep no reference to
    them after the command completes (the kernel reuses the pages).
    """

    __slots__ = ("_len", "views")

    def __init__(self, views: Sequence[memoryview]) -> None:
        self.views: list[memoryview] = list(views)
        self._len = sum(len(v) for v in self.views)

    @classmethod
    def of_views(cls, views: list[memoryview], length: int) -> ScatterBuffer:
        """Wrap `views` (not copied) whose lengths sum to `length`: the runtime's
        per-command fast path."""
        buf = cls.__new__(cls)
        buf.views = views
        buf._len = length
        return buf

    def __len__(self) -> int:
        return self._len

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """Gather `length` bytes starting at `offset` (default: to the end)."""
        end = self._len if length is None else min(self._len, offset + length)
        out = bytearray()
        pos = 0
        for view in self.views:
            vend = pos + len(view)
            if vend > offset and pos < end:
                out += view[max(offset - pos, 0) : min(end, vend) - pos]
            pos = vend
            if pos >= end:
                break
        return bytes(out)

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        """Scatter `data` at `offset`; returns the number of bytes stored (may be short
        when the buffer is smaller than the data: that is the allocation length rule)."""
        src = memoryview(data).cast("B")
        end = min(self._len, offset + len(src))
        pos = 0
        done = 0
        for view in self.views:
            vend = pos + len(view)
            if vend > offset and pos < end:
                start = max(offset - pos, 0)
                stop = min(end, vend) - pos
                view[start:stop] = src[done : done + (stop - start)]
                done += stop - start
            pos = vend
            if pos >= end:
                break
        return done

    def fill(self, byte: int = 0, offset: int = 0, length: int | None = None) -> None:
        end = self._len if length is None else min(self._len, offset + length)
        if end > offset:
            self.write(bytes([byte]) * (end - offset), offset)


EMPTY_BUFFER = ScatterBuffer(())


@dataclasses.dataclass(slots=True)
class Command:
    """One SCSI command taken off the ring."""

    cmd_id: int
    cdb: bytes
    iov: ScatterBuffer
    bidi_iov: ScatterBuffer = EMPTY_BUFFER
    # Set by the runtime; calling it completes a deferred command (any thread).
    _completer: Callable[[Command, Result], None] | None = dataclasses.field(
        default=None, repr=False
    )

    @property
    def opcode(self) -> int:
        return self.cdb[0]

    def complete(self, result: Result) -> None:
        """Complete a command whose handle() returned None. Thread-safe."""
        if self._completer is None:
            raise RuntimeError(f"command {self.cmd_id} is not deferred; return the Result instead")
        self._completer(self, result)


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """A handler's answer to one command.

    data: data-in bytes; the runtime copies them into `cmd.iov` (or `cmd.bidi_iov`
      for BIDI), truncated to the buffer (the allocation length rule). A handler that
      filled the iovecs itself leaves data None.
    read_len: how many data-in bytes are valid, when fewer than the buffer holds; the
      runtime reports it to the kernel (READ_LEN) when the kernel offers CAP_READ_LEN,
      so the initiator sees a residual. With `data` given and read_len None, the runtime
      uses len(data) capped at the buffer size.
    unknown_op: hand the command back with TCMU_UFLAG_UNKNOWN_OP (status and sense are
      then ignored): the kernel fails it with CHECK CONDITION, NOT READY, LOGICAL UNIT
      COMMUNICATION FAILURE (08/00), as it does for a daemon that lacks the operation.
    keep_buf: complete the SCSI command but keep its data-area buffer (TCMU_UFLAG_KEEP_BUF,
      only when the kernel offers CAP_KEEP_BUF: see Handler.ring_caps; otherwise the
      runtime refuses the result with INTERNAL TARGET FAILURE and logs why). `cmd.iov`
      then stays valid, and its space taken, until the handler writes the cmd_id to the
      backstore's action/free_kept_buf (tcmu.device.free_kept_buf) or closes the device.
    """

    status: int = Status.GOOD
    sense: bytes = b""
    data: bytes | None = None
    read_len: int | None = None
    unknown_op: bool = False
    keep_buf: bool = False

    @classmethod
    def good(cls, data: bytes | None = None, read_len: int | None = None, *,
             keep_buf: bool = False) -> Result:
        return cls(Status.GOOD, b"", data, read_len, keep_buf=keep_buf)

    @classmethod
    def check_condition(cls, sense: bytes) -> Result:
        return cls(Status.CHECK_CONDITION, sense)


# The answer to a command whose handler failed with anything but a SenseError.
INTERNAL_FAILURE = Result.check_condition(INTERNAL_FAILURE_SENSE)

DEFAULT_MAX_SECTORS = 128  # target_core_user's hw_max_sectors
DEFAULT_DATA_AREA_BYTES = 1 << 30  # target_core_user's default max_data_area_mb (1024)


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the runtime knows of the device a handler serves (from sysfs/configfs)."""

    uio: str  # "uio0"
    name: str  # UIO name: "tcm-user/<hba>/<dev_name>/<dev_config>"
    hba: int
    dev_name: str
    config: str  # dev_config: "<subtype>/<rest>"
    size: int  # bytes (dev_size)
    block_size: int  # hw_block_size
    write_cache: bool
    # The most the kernel sends in one command: hw_max_sectors (in logical blocks) and
    # the ring's data area (max_data_area_mb). Defaults: the kernel's own defaults.
    max_sectors: int = DEFAULT_MAX_SECTORS
    data_area_bytes: int = DEFAULT_DATA_AREA_BYTES

    @property
    def subtype(self) -> str:
        return self.config.split("/", 1)[0]

    @property
    def cfgstring(self) -> str:
        """dev_config after the subtype: handler-specific (a file path, say)."""
        return self.config.split("/", 1)[1] if "/" in self.config else ""


@dataclasses.dataclass(frozen=True, slots=True)
class Reconfig:
    """A reconfiguration the kernel announced: the device before and after it."""

    old: DeviceInfo
    new: DeviceInfo

    @property
    def size_changed(self) -> bool:
        return self.old.size != self.new.size

    @property
    def write_cache_changed(self) -> bool:
        return self.old.write_cache != self.new.write_cache

    @property
    def config_changed(self) -> bool:
        return self.old.config != self.new.config


class ReconfigRefused(Exception):
    """Raised by Handler.reconfig() to keep the old configuration; the message says why.
    When the kernel waits for netlink replies the configfs write then fails (EINVAL);
    otherwise the handler just goes on with its old configuration."""


class Handler(abc.ABC):
    """Base class of every handler. Override handle(); the other methods are optional.

    Options come from the handler spec (`module:Class key=value ...`) as strings. A
    class declares the ones it takes in `options` (tcmu.options.Option: name, type,
    default, help); __init__ checks and converts what it is given and sets each declared
    option as an attribute (`self.latency_ms`). Pass **options on to super().__init__.
    """

    subtype: ClassVar[str] = "harness"
    options: ClassVar[tuple[Option, ...]] = ()
    # What the kernel offers (the mailbox's flags), set by the runtime once the ring is
    # mapped, before open(): test `Cap.KEEP_BUF in self.ring_caps` before keep_buf.
    ring_caps: Cap = Cap(0)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        check_declarations(cls)

    def __init__(self, device: DeviceInfo, **options: Any) -> None:
        for name, value in resolve_options(type(self), options).items():
            setattr(self, name, value)
        self.device = device

    def open(self) -> None:  # noqa: B027 (optional hook)
        """Called once before the first command (after the ring is mapped)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Called once when the device goes away or the runner stops."""

    @abc.abstractmethod
    def handle(self, cmd: Command) -> Result | None:
        """Answer one command: a Result, or None to complete it later (cmd.complete())."""

    def reconfig(self, change: Reconfig) -> None:  # noqa: B027 (optional hook)
        """Optional hook: the kernel changed dev_size, the write cache setting or
        dev_config (`change.old` -> `change.new`). Adapt the storage (grow a file, say) or
        raise ReconfigRefused(reason) to keep the old configuration. Runs in the ring
        thread, between commands."""

    def apply_reconfig(self, change: Reconfig) -> None:
        """The runtime's entry point for RECONFIG_DEVICE: asks reconfig(), then makes
        `change.new` the device. Subclasses extend this to keep derived state right;
        handler authors override reconfig() instead."""
        self.reconfig(change)
        self.device = change.new

    def quiesce(self) -> None:  # noqa: B027 (optional hook)
        """Wait for the commands this handler completes on its own threads (deferred
        completions); the runtime calls it when it stops, before close()."""

    def tmr(self, tmr_type: int, cmd_ids: list[int]) -> None:  # noqa: B027 (optional hook)
        """Optional: a task management notification (tcmu.layout.TmrType) naming the
        cmd_ids of in-flight commands it affects. Informational: those commands must
        still be completed. Needs attrib/tmr_notification=1 on the device."""
