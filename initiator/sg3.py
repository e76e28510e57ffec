"""sg3_utils wrappers: run one tool (inside the guest, where the device exists) and
return its exit code, output and parsed fields.

A non-zero exit is a result, not an error: the suites assert on sg3_utils' exit codes
(`Sg3Exit`). Only a tool that hangs past `timeout` raises (TimeoutError). Parsing lives
in initiator.sg3_parse.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sh

from tcmu_harness.initiator import sg3_parse
from tcmu_harness.initiator.sg3_parse import (
    Capacity,
    InquiryInfo,
    ModeSenseInfo,
    PrKeys,
    PrReservation,
    RawOutput,
)
from tcmu_harness.scsi.constants import PrOutAction

DEFAULT_TIMEOUT = 120.0  # seconds for the whole tool process; sg_raw's own default is 20
_ANY_EXIT = list(range(-64, 256))  # negative: killed by that signal


class Sg3Exit(enum.IntEnum):
    """sg3_utils exit statuses (include/sg_lib.h SG_LIB_*). 50 + errno: OS errors."""

    OK = 0
    SYNTAX_ERROR = 1
    NOT_READY = 2
    MEDIUM_HARD = 3
    ILLEGAL_REQUEST = 5
    UNIT_ATTENTION = 6
    DATA_PROTECT = 7
    INVALID_OP = 9
    COPY_ABORTED = 10
    ABORTED_COMMAND = 11
    MISCOMPARE = 14
    FILE_ERROR = 15
    ILLEGAL_REQUEST_WITH_INFO = 17
    MEDIUM_HARD_WITH_INFO = 18
    NO_SENSE = 20
    RECOVERED = 21
    LBA_OUT_OF_RANGE = 22
    RESERVATION_CONFLICT = 24
    CONDITION_MET = 25
    BUSY = 26
    TASK_SET_FULL = 27
    ACA_ACTIVE = 28
    TASK_ABORTED = 29
    CONTRADICT = 31
    LOGIC_ERROR = 32
    TIMEOUT = 33
    OK_FALSE = 36
    PROTECTION = 40
    PROTECTION_WITH_INFO = 41
    OS_BASE = 50
    MALFORMED = 97
    SENSE = 98
    OTHER = 99


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToolResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == Sg3Exit.OK

    @property
    def exit(self) -> Sg3Exit | int:
        """The exit code as an Sg3Exit member when it names one."""
        try:
            return Sg3Exit(self.exit_code)
        except ValueError:
            return self.exit_code

    def describe(self) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.exit_code} ({self.exit!r})\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InqResult(ToolResult, InquiryInfo):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class VpdResult(ToolResult):
    page: str
    data: bytes = b""  # the page as returned, header included


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadcapResult(ToolResult, Capacity):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModesResult(ToolResult, ModeSenseInfo):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class TursResult(ToolResult):
    ready: bool = False
    commands: int | None = None
    errors: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LunsResult(ToolResult):
    lun_ids: tuple[bytes, ...] = ()  # the 8-byte LUNs as reported
    luns: tuple[int, ...] = ()  # the same as Linux LUN numbers


@dataclasses.dataclass(frozen=True, kw_only=True)
class RawResult(ToolResult, RawOutput):
    data: bytes = b""  # data-in, read back from sg_raw's -o file


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrKeysResult(ToolResult, PrKeys):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrReservationResult(ToolResult, PrReservation):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareAndWriteResult(ToolResult):
    miscompare_offset: int | None = None


def _fields(parsed: Any) -> dict[str, Any]:
    return {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}


@functools.cache
def _command(tool: str) -> sh.Command:
    return sh.Command(tool)


def run_tool(tool: str, *args: str | int, timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """Run any sg3_utils tool; never raises on its exit status."""
    argv = (tool, *(str(a) for a in args))
    try:
        proc = _command(tool)(*argv[1:], _ok_code=_ANY_EXIT, _return_cmd=True,
                              _tty_out=False, _timeout=timeout)
    except sh.TimeoutException as e:
        raise TimeoutError(f"{' '.join(argv)} still running after {timeout} s") from e
    return ToolResult(
        argv=argv,
        exit_code=proc.exit_code,
        stdout=proc.stdout.decode(errors="replace"),
        stderr=proc.stderr.decode(errors="replace"),
    )


# --- the tools -----------------------------------------------------------------------


def sg_inq(device: str, *, timeout: float = DEFAULT_TIMEOUT) -> InqResult:
    """Standard INQUIRY (sg_inq also fetches the unit serial number page)."""
    run = run_tool("sg_inq", device, timeout=timeout)
    return InqResult(**_fields(run), **_fields(sg3_parse.parse_sg_inq(run.stdout)))


def sg_vpd(device: str, page: int | str = 0, *, force: bool = False,
           timeout: float = DEFAULT_TIMEOUT) -> VpdResult:
    """One VPD page in hex (-HH). `page`: a number or an sg_vpd acronym ("sn", "di").
    Without `force` sg_vpd first checks the page is listed in page 0."""
    page_arg = f"0x{page:x}" if isinstance(page, int) else page
    args: list[str] = ["-p", page_arg, "-HH"] + (["--force"] if force else [])
    run = run_tool("sg_vpd", *args, device, timeout=timeout)
    return VpdResult(**_fields(run), page=page_arg, data=sg3_parse.parse_hexdump(run.stdout))


def sg_readcap(device: str, *, long: bool = False,
               timeout: float = DEFAULT_TIMEOUT) -> ReadcapResult:
    """READ CAPACITY(10), or (16) with long=True (sg_readcap itself falls back to 16
    when the 10-byte answer overflows)."""
    run = run_tool("sg_readcap", *(["--16"] if long else []), device, timeout=timeout)
    return ReadcapResult(**_fields(run), **_fields(sg3_parse.parse_sg_readcap(run.stdout)))


def sg_modes(device: str, page: int = 0x3F, subpage: int = 0, *, pc: int = 0,
             six: bool = False, dbd: bool = False,
             timeout: float = DEFAULT_TIMEOUT) -> ModesResult:
    """MODE SENSE(10), or (6) with six=True. sg_modes sends an INQUIRY first."""
    args: list[str] = [f"--page={page},{subpage}", f"--control={pc}"]
    args += (["--six"] if six else []) + (["--dbd"] if dbd else [])
    run = run_tool("sg_modes", *args, device, timeout=timeout)
    return ModesResult(**_fields(run), **_fields(sg3_parse.parse_sg_modes(run.stdout)))


def sg_turs(device: str, *, number: int = 1, timeout: float = DEFAULT_TIMEOUT) -> TursResult:
    """TEST UNIT READY, `number` times; `ready` means exit status 0."""
    run = run_tool("sg_turs", f"--number={number}", device, timeout=timeout)
    commands, errors = sg3_parse.parse_sg_turs(run.stdout)
    return TursResult(**_fields(run), ready=run.ok, commands=commands, errors=errors)


def sg_luns(device: str, *, select: int = 0, timeout: float = DEFAULT_TIMEOUT) -> LunsResult:
    run = run_tool("sg_luns", f"--select={select}", device, timeout=timeout)
    ids = sg3_parse.parse_sg_luns(run.stdout)
    return LunsResult(**_fields(run), lun_ids=ids,
                      luns=tuple(sg3_parse.lun_to_int(lun) for lun in ids))


def sg_raw(device: str, cdb: bytes, *, data_out: bytes | None = None, data_in_len: int = 0,
           cmd_timeout: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> RawResult:
    """Send `cdb` with sg_raw -v. cmd_timeout: the SCSI command timeout sg_raw sets (s)."""
    with tempfile.TemporaryDirectory(prefix="sg_raw.") as tmp:
        args: list[str] = ["-v"]
        if cmd_timeout is not None:
            args.append(f"--timeout={cmd_timeout}")
        if data_out is not None:
            infile = Path(tmp, "out.bin")
            infile.write_bytes(data_out)
            args += [f"--send={len(data_out)}", f"--infile={infile}"]
        outfile = Path(tmp, "in.bin")
        if data_in_len:
            args += [f"--request={data_in_len}", f"--outfile={outfile}"]
        run = run_tool("sg_raw", *args, device, *(f"{b:02x}" for b in cdb), timeout=timeout)
        # sg_raw writes the file only when data arrived and the command succeeded.
        data = outfile.read_bytes() if outfile.exists() else b""
    return RawResult(**_fields(run), **_fields(sg3_parse.parse_sg_raw(run.stderr)), data=data)


def sg_persist_read_keys(device: str, *, timeout: float = DEFAULT_TIMEOUT) -> PrKeysResult:
    run = run_tool("sg_persist", "--no-inquiry", "--in", "--read-keys", device, timeout=timeout)
    return PrKeysResult(**_fields(run), **_fields(sg3_parse.parse_sg_persist_keys(run.stdout)))


def sg_persist_read_reservation(device: str, *,
                                timeout: float = DEFAULT_TIMEOUT) -> PrReservationResult:
    run = run_tool("sg_persist", "--no-inquiry", "--in", "--read-reservation", device,
                   timeout=timeout)
    parsed = sg3_parse.parse_sg_persist_reservation(run.stdout)
    return PrReservationResult(**_fields(run), **_fields(parsed))


_PROUT_OPTIONS = {
    PrOutAction.REGISTER: "--register",
    PrOutAction.RESERVE: "--reserve",
    PrOutAction.RELEASE: "--release",
    PrOutAction.CLEAR: "--clear",
    PrOutAction.PREEMPT: "--preempt",
    PrOutAction.PREEMPT_AND_ABORT: "--preempt-abort",
    PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY: "--register-ignore",
    PrOutAction.REPLACE_LOST_RESERVATION: "--replace-lost",
}


def sg_persist_out(device: str, action: PrOutAction, *, key: int = 0, sa_key: int = 0,
                   pr_type: int = 0, aptpl: bool = False, all_tg_pt: bool = False,
                   timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """PERSISTENT RESERVE OUT. key: RESERVATION KEY; sa_key: SERVICE ACTION RESERVATION
    KEY (the new key of REGISTER, the preempted key of PREEMPT). REGISTER AND MOVE needs
    TransportIDs and is not wrapped: use sg_raw or SG_IO."""
    if action not in _PROUT_OPTIONS:
        raise ValueError(f"sg_persist_out does not wrap {action!r}")
    args = ["--no-inquiry", "--out", _PROUT_OPTIONS[action], f"--param-rk={key:x}",
            f"--param-sark={sa_key:x}", f"--prout-type={pr_type}"]
    args += (["--param-aptpl"] if aptpl else []) + (["--param-alltgpt"] if all_tg_pt else [])
    return run_tool("sg_persist", *args, device, timeout=timeout)


def sg_write_same(device: str, lba: int, blocks: int, *, data: bytes | None = None,
                  unmap: bool = False, ndob: bool = False, cdb_size: int | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """WRITE SAME of one block of `data` (zeroes when None: sg_write_same then issues a
    READ CAPACITY first to learn the block size). cdb_size 10/16/32 forces the CDB;
    by default sg_write_same picks 10 unless unmap, ndob or the range needs 16."""
    args = [f"--lba={lba}", f"--num={blocks}"]
    args += (["--unmap"] if unmap else []) + (["--ndob"] if ndob else [])
    if cdb_size is not None:
        args.append(f"--{cdb_size}")
    with tempfile.TemporaryDirectory(prefix="sg_write_same.") as tmp:
        if data is not None:
            infile = Path(tmp, "block.bin")
            infile.write_bytes(data)
            args.append(f"--in={infile}")  # the whole file is the block
        return run_tool("sg_write_same", *args, device, timeout=timeout)


def sg_unmap(device: str, extents: Sequence[tuple[int, int]], *,
             timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """UNMAP the (lba, blocks) extents in one command (--force: no 15 s countdown)."""
    if not extents:
        raise ValueError("sg_unmap needs at least one extent")
    lbas = ",".join(str(lba) for lba, _ in extents)
    nums = ",".join(str(n) for _, n in extents)
    return run_tool("sg_unmap", "--force", f"--lba={lbas}", f"--num={nums}", device,
                    timeout=timeout)


def sg_compare_and_write(device: str, lba: int, compare: bytes, write: bytes, *,
                         blocks: int = 1, fua: bool = False, dpo: bool = False,
                         timeout: float = DEFAULT_TIMEOUT) -> CompareAndWriteResult:
    """COMPARE AND WRITE of `blocks` blocks: `compare` and `write` are each blocks *
    block size bytes. Exit 14 (MISCOMPARE) carries the offset sg3_utils reports."""
    if len(compare) != len(write):
        raise ValueError(f"compare ({len(compare)} B) and write ({len(write)} B) differ in size")
    with tempfile.TemporaryDirectory(prefix="sg_caw.") as tmp:
        cfile, wfile = Path(tmp, "compare.bin"), Path(tmp, "write.bin")
        cfile.write_bytes(compare)
        wfile.write_bytes(write)
        args = [f"--in={cfile}", f"--inw={wfile}", f"--lba={lba}", f"--num={blocks}",
                f"--xferlen={len(compare) + len(write)}"]
        args += (["--fua"] if fua else []) + (["--dpo"] if dpo else [])
        run = run_tool("sg_compare_and_write", *args, device, timeout=timeout)
    return CompareAndWriteResult(**_fields(run),
                                 miscompare_offset=sg3_parse.parse_miscompare_offset(run.stderr))


def sg_sync(device: str, lba: int = 0, count: int = 0, *, sixteen: bool = False,
            immed: bool = False, timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """SYNCHRONIZE CACHE(10), or (16); count 0 means to the end of the medium."""
    args = [f"--lba={lba}", f"--count={count}"]
    args += (["--16"] if sixteen else []) + (["--immed"] if immed else [])
    return run_tool("sg_sync", *args, device, timeout=timeout)


def sg_verify(device: str, lba: int, count: int, *, data: bytes | None = None,
              sixteen: bool = False, dpo: bool = False,
              timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """VERIFY(10), or (16). With `data`, BYTCHK=1 and one command compares the medium
    with it (data must be count * block size bytes); exit 14 on a miscompare."""
    args = [f"--lba={lba}", f"--count={count}"]
    args += (["--16"] if sixteen else []) + (["--dpo"] if dpo else [])
    with tempfile.TemporaryDirectory(prefix="sg_verify.") as tmp:
        if data is not None:
            infile = Path(tmp, "data.bin")
            infile.write_bytes(data)
            args += [f"--ndo={len(data)}", f"--in={infile}"]
        return run_tool("sg_verify", *args, device, timeout=timeout)
