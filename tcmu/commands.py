"""BlockHandler's command table and dispatch.

One table of CommandSpec rows (opcode, service action, CDB usage mask, method) drives
dispatch, the reserved-bit checks and RSOC (tcmu.rsoc), so what RSOC reports is what
is served.
`_command_table()` lists the built-in commands; the other mixins of BlockHandler
(tcmu.inquiry, tcmu.modepages, tcmu.sbc) and tcmu.sbc_extra provide their methods.

Each row also says what the command touches (Access): nothing but the handler's state
(answered at once, in the ring thread), an LBA range it reads or writes, or the whole
device. With the `workers` option above 0, commands that touch storage run on the
handler's worker pool under range claims (tcmu.workers) and complete out of order.

Extension point: a BlockHandler subclass serves another opcode with a method marked
@scsi_command(opcode, usage=...); it joins the table (after the built-in rows, so it
may also replace one), hence dispatch, the reserved-bit checks and RSOC.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from tcmu import cdb as cdbs
from tcmu import sbc_extra
from tcmu.blockutil import declared, mark
from tcmu.handler import INTERNAL_FAILURE, Command, Result
from tcmu.sense import SenseError
from tcmu.workers import Claim, RangeClaims, Ranges, Workers
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, ServiceAction

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tcmu.block import BlockHandler


_COMMAND_MARK = "__tcmu_scsi_command__"


class Access(enum.Enum):
    """What a command touches, which decides where and when it runs."""

    NONE = "none"  # only the handler's state: answered at once, in the ring thread
    READ = "read"  # reads its LBA range: runs beside other readers of it
    WRITE = "write"  # writes its LBA range: alone on it, after the earlier commands there
    DEVICE = "device"  # the whole device and the unit's state: alone, after all earlier


@dataclasses.dataclass(frozen=True, slots=True)
class CommandSpec:
    """One served command."""

    opcode: int
    service_action: int | None
    usage: bytes  # RSOC CDB USAGE DATA: opcode, then the bits the device server uses
    run: Callable[[Command], Result]
    medium: bool  # needs the medium: NOT READY while the unit is stopped
    access: Access = Access.NONE


@dataclasses.dataclass(frozen=True, slots=True)
class _CommandDeclaration:
    opcode: int
    service_action: int | None
    usage: bytes
    medium: bool
    access: Access


def scsi_command(
    opcode: int,
    usage: str,
    *,
    service_action: int | None = None,
    medium: bool = False,
    access: Access | str = Access.NONE,
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Serve `opcode` (with `service_action`, for opcodes that carry one in byte 1)
    with the decorated method, `def method(self, cmd: Command) -> Result`, which may
    raise SenseError.

    usage: the CDB usage data after the opcode, in hex ("04 00 00 00 00": a 6-byte CDB
      whose only settable bit is byte 1 bit 2). It sets the CDB length RSOC reports, and
      the base refuses a CDB with a bit outside it (24/00, field pointer on the bit).
    medium: the command needs the medium (NOT READY while the unit is stopped).
    access: what it touches (Access, or its value): "none" (the default) runs at once
      in the ring thread; "read"/"write" claim the LBA range of a standard READ/WRITE
      style CDB (else the whole device) and "device" the whole device, and run on the
      worker pool when the handler has one.
    """
    try:
        mask = bytes.fromhex(usage)
        kind = Access(access)
    except ValueError as e:
        raise TypeError(f"scsi_command({opcode:#04x}): {e}; give usage as hex bytes after "
                        f"the opcode and access as one of none, read, write, device") from e
    if not (0 <= opcode <= 0xFF and len(mask) >= 5):
        raise TypeError(f"scsi_command({opcode:#04x}): an opcode is one byte and a CDB at "
                        f"least 6 bytes (usage names the 5 or more after the opcode)")
    if service_action is not None and not 0 <= service_action <= 0x1F:
        raise TypeError(f"scsi_command({opcode:#04x}): service actions are 0..31")
    declaration = _CommandDeclaration(opcode, service_action, bytes([opcode]) + mask, medium,
                                      kind)
    return mark(_COMMAND_MARK, declaration)


# Commands whose CDB byte 1 bits 7-5 are one RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT field:
# a non-zero value is refused with the bit pointer on the field's first bit, bit 7
# (SPC-4 4.5.2.4.2), whichever of its bits is set.
_PROTECT_FIELD = 0xE0
_PROTECT_OPCODES = frozenset({
    Opcode.READ_10, Opcode.READ_12, Opcode.READ_16,
    Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16,
    Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16,
    Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16,
    Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16, Opcode.COMPARE_AND_WRITE,
    Opcode.ORWRITE_16, Opcode.WRITE_ATOMIC_16,
})  # fmt: skip

# Commands refused with NOT READY while START STOP UNIT has the unit stopped.
_MEDIUM_ACCESS: frozenset[tuple[int, int | None]] = frozenset({(op, None) for op in (
    Opcode.TEST_UNIT_READY, Opcode.FORMAT_UNIT,
    Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16,
    Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16,
    Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16,
    Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16,
    Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16, Opcode.UNMAP, Opcode.COMPARE_AND_WRITE,
    Opcode.ORWRITE_16, Opcode.WRITE_ATOMIC_16, Opcode.PRE_FETCH_10, Opcode.PRE_FETCH_16,
    Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16,
)} | {(Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS)})  # fmt: skip

_READS = (
    Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16,
    Opcode.VERIFY_10, Opcode.VERIFY_12, Opcode.VERIFY_16, Opcode.PRE_FETCH_10,
    Opcode.PRE_FETCH_16,
)  # fmt: skip
_WRITES = (
    Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16,
    Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16,
    Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16, Opcode.COMPARE_AND_WRITE, Opcode.ORWRITE_16,
    Opcode.WRITE_ATOMIC_16, Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16,
)  # fmt: skip
_WHOLE_DEVICE = (
    Opcode.UNMAP, Opcode.FORMAT_UNIT, Opcode.MODE_SELECT_6, Opcode.MODE_SELECT_10,
    Opcode.START_STOP_UNIT,
)  # fmt: skip
_GET_LBA_STATUS = (Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS)
_ACCESS: dict[tuple[int, int | None], Access] = {
    **{(op, None): Access.READ for op in _READS},
    **{(op, None): Access.WRITE for op in _WRITES},
    **{(op, None): Access.DEVICE for op in _WHOLE_DEVICE},
    _GET_LBA_STATUS: Access.READ,
}
# PREFETCH LENGTH / NUMBER OF LOGICAL BLOCKS 0: from the LBA to the end of the medium.
_ZERO_MEANS_TO_THE_END = frozenset({
    Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16, Opcode.PRE_FETCH_10,
    Opcode.PRE_FETCH_16,
})  # fmt: skip

# Commands a pending unit attention does not fail (SAM-5 5.14): REQUEST SENSE reports it.
_NO_ATTENTION = frozenset({Opcode.INQUIRY, Opcode.REQUEST_SENSE, Opcode.REPORT_LUNS})



def check_usage(cdb: bytes, usage: bytes) -> None:
    """24/00 for a CDB shorter than its command or with a bit the usage mask excludes;
    the field pointer names the byte and its highest offending bit (bit 7 for a
    protection field, the first bit of that 3-bit field)."""
    if len(cdb) < len(usage):
        raise SenseError.invalid_cdb()
    for i in range(1, len(usage)):
        bad = cdb[i] & ~usage[i] & 0xFF
        if bad:
            if i == 1 and bad & _PROTECT_FIELD and cdb[0] in _PROTECT_OPCODES:
                raise SenseError.invalid_cdb(1, 7)
            raise SenseError.invalid_cdb(i, bad.bit_length() - 1)


class DispatchMixin:
    """handle(): report a pending unit attention, else look the CDB up, check its
    reserved bits and the unit's state, and run it. Part of BlockHandler; `_commands` is
    built in BlockHandler.__init__."""

    _commands: dict[tuple[int, int | None], CommandSpec]
    _sa_opcodes: set[int]
    _lock: threading.Lock
    _stopped: bool
    supports_unmap: bool
    supports_lba_status: bool
    descriptor_sense: bool
    num_blocks: int
    workers: int

    if TYPE_CHECKING:

        def _take_unit_attention(self) -> Asc | None: ...  # tcmu.block

    def _init_commands(self) -> None:
        table = self._command_table() + self._declared_commands()  # declared ones win
        self._commands = {(c.opcode, c.service_action): c for c in table}
        self._sa_opcodes = {
            c.opcode for c in self._commands.values() if c.service_action is not None
        }
        # The state lock: commands that change the unit's state (mode pages, START STOP,
        # reconfiguration) hold it, and so does every command served in the ring thread.
        self._lock = threading.Lock()
        self._claims = RangeClaims()
        self._workers: Workers | None = None  # started on the first concurrent command

    def handle(self, cmd: Command) -> Result | None:
        """The Result at once, or None: the command runs on the worker pool and
        completes through cmd.complete() (workers > 0 and it touches storage)."""
        with self._lock:
            try:
                spec = self._admit(cmd)
                if spec.access is Access.NONE or not self.workers:
                    return spec.run(cmd)
            except SenseError as err:
                return Result.check_condition(err.sense(self.descriptor_sense))
        ranges, exclusive = self._footprint(spec, cmd.cdb)
        claim = self._claims.claim(ranges, exclusive)  # here: in arrival order
        self._pool().submit(functools.partial(self._run_claimed, spec, cmd, claim))
        return None

    def _admit(self, cmd: Command) -> CommandSpec:
        """A pending unit attention, the lookup, the reserved bits, the stopped unit."""
        if cmd.cdb[:1] and cmd.cdb[0] not in _NO_ATTENTION:
            attention = self._take_unit_attention()
            if attention is not None:
                raise SenseError(SenseKey.UNIT_ATTENTION, attention)
        spec = self._lookup(cmd.cdb)
        check_usage(cmd.cdb, spec.usage)
        if spec.medium and self._stopped:
            raise SenseError.stopped()
        return spec

    # --- concurrent serving (tcmu.workers) ---------------------------------------------------

    def _pool(self) -> Workers:
        if self._workers is None:
            self._workers = Workers(max(1, self.workers), f"{type(self).__name__}-worker")
        return self._workers

    def _footprint(self, spec: CommandSpec, cdb: bytes) -> tuple[Ranges, bool]:
        """The LBA ranges a command claims and whether alone; the whole device when the
        CDB cannot be decoded (the command then fails its own checks anyway)."""
        if spec.access is Access.DEVICE:
            return None, True
        try:
            if (spec.opcode, spec.service_action) == _GET_LBA_STATUS:
                lba = cdbs.decode_get_lba_status(cdb).lba
                blocks = self.num_blocks - lba
            else:
                io = cdbs.decode_block(cdb)
                lba, blocks = io.lba, io.blocks
                if not blocks and spec.opcode in _ZERO_MEANS_TO_THE_END:
                    blocks = self.num_blocks - lba
        except (SenseError, ValueError):
            return None, True
        return [(lba, lba + max(blocks, 0))], spec.access is Access.WRITE

    def _run_claimed(self, spec: CommandSpec, cmd: Command, claim: Claim) -> None:
        """A pool thread: wait for the earlier conflicting commands, run, complete."""
        try:
            claim.wait()
            if spec.access is Access.DEVICE:
                with self._lock:
                    result = self._run_checked(spec, cmd)
            else:
                result = self._run_checked(spec, cmd)
        except Exception:
            log.exception("cmd %d (cdb %s) failed", cmd.cmd_id, cmd.cdb.hex())
            result = INTERNAL_FAILURE
        finally:
            self._claims.release(claim)
        try:
            cmd.complete(result)
        except Exception:
            log.exception("cmd %d: completion failed", cmd.cmd_id)

    def _run_checked(self, spec: CommandSpec, cmd: Command) -> Result:
        try:
            if spec.medium and self._stopped:  # a STOP queued before it has run since
                raise SenseError.stopped()
            return spec.run(cmd)
        except SenseError as err:
            return Result.check_condition(err.sense(self.descriptor_sense))

    def quiesce(self) -> None:
        """Wait for the commands in flight on the pool; stop it (the runtime calls this
        before close())."""
        workers, self._workers = self._workers, None
        if workers is not None:
            workers.shutdown()

    def _lookup(self, cdb: bytes) -> CommandSpec:
        if not cdb:
            raise SenseError.invalid_cdb()
        if cdb[0] in self._sa_opcodes:
            spec = self._commands.get((cdb[0], cdb[1] & 0x1F)) if len(cdb) > 1 else None
            if spec is None:
                raise SenseError.invalid_cdb(1, 4)  # SERVICE ACTION, bits 4-0
            return spec
        spec = self._commands.get((cdb[0], None))
        if spec is None:
            raise SenseError.invalid_opcode()
        return spec

    def _command_table(self) -> list[CommandSpec]:
        """Every served command with its CDB usage data (hex, from byte 1 on): bits
        outside the mask are reserved or unsupported and get 24/00 with a field pointer."""
        h: BlockHandler = self  # type: ignore[assignment]
        unmap = 0x08 if self.supports_unmap else 0  # WRITE SAME's UNMAP bit
        lba_len16 = "ff" * 12  # LBA(8) + LENGTH(4)

        def extra(run: Callable[[BlockHandler, Command], Result]) -> Callable[[Command], Result]:
            return functools.partial(run, h)

        rows: list[tuple[int, int | None, str, Callable[[Command], Result]]] = [
            (Opcode.TEST_UNIT_READY, None, "0000000000", h._good),
            (Opcode.REQUEST_SENSE, None, "010000ff00", h._request_sense),
            # FMTPINFO (bits 7-6) is examined (and refused) by the command itself.
            (Opcode.FORMAT_UNIT, None, "ff00000000", extra(sbc_extra.format_unit)),
            (Opcode.READ_6, None, "1fffffff00", h._read),
            (Opcode.WRITE_6, None, "1fffffff00", h._write),
            (Opcode.INQUIRY, None, "01ffffff00", h._inquiry),
            (Opcode.MODE_SELECT_6, None, "100000ff00", h._mode_select),
            (Opcode.MODE_SENSE_6, None, "08ffffff00", h._mode_sense),
            (Opcode.START_STOP_UNIT, None, "01000ff700", h._start_stop),
            # PREVENT field unsupported (not removable): only PREVENT=0 passes the mask.
            (Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, None, "0000000000", h._good),
            (Opcode.READ_CAPACITY_10, None, "00ffffffff00000100", h._read_capacity_10),
            (Opcode.READ_10, None, "18ffffffff00ffff00", h._read),
            (Opcode.WRITE_10, None, "18ffffffff00ffff00", h._write),
            (Opcode.WRITE_AND_VERIFY_10, None, "16ffffffff00ffff00", h._write_and_verify),
            (Opcode.VERIFY_10, None, "16ffffffff00ffff00", h._verify),
            (Opcode.PRE_FETCH_10, None, "02ffffffff00ffff00", extra(sbc_extra.pre_fetch)),
            (Opcode.SYNCHRONIZE_CACHE_10, None, "02ffffffff00ffff00", h._synchronize_cache),
            (Opcode.READ_DEFECT_DATA_10, None, "001f00000000ffff00",
             extra(sbc_extra.read_defect_data)),
            (Opcode.WRITE_SAME_10, None, f"{unmap:02x}ffffffff00ffff00", h._write_same),
            (Opcode.MODE_SELECT_10, None, "100000000000ffff00", h._mode_select),
            (Opcode.MODE_SENSE_10, None, "18ffff000000ffff00", h._mode_sense),
            (Opcode.READ_16, None, "18" + lba_len16 + "0000", h._read),
            (Opcode.COMPARE_AND_WRITE, None, "18" + "ff" * 8 + "000000ff0000", h._caw),
            (Opcode.WRITE_16, None, "18" + lba_len16 + "0000", h._write),
            (Opcode.ORWRITE_16, None, "18" + lba_len16 + "0000", extra(sbc_extra.orwrite)),
            (Opcode.WRITE_AND_VERIFY_16, None, "16" + lba_len16 + "0000", h._write_and_verify),
            (Opcode.VERIFY_16, None, "16" + lba_len16 + "0000", h._verify),
            (Opcode.PRE_FETCH_16, None, "02" + lba_len16 + "0000", extra(sbc_extra.pre_fetch)),
            (Opcode.SYNCHRONIZE_CACHE_16, None, "02" + lba_len16 + "0000", h._synchronize_cache),
            (Opcode.WRITE_SAME_16, None, f"{unmap | 0x01:02x}" + lba_len16 + "0000",
             h._write_same),
            # LBA(8), ATOMIC BOUNDARY(2), TRANSFER LENGTH(2)
            (Opcode.WRITE_ATOMIC_16, None, "18" + "ff" * 12 + "0000",
             extra(sbc_extra.write_atomic)),
            (Opcode.SERVICE_ACTION_IN_16, ServiceAction.READ_CAPACITY_16,
             "1f" + lba_len16 + "0100", h._read_capacity_16),
            (Opcode.MAINTENANCE_IN, ServiceAction.REPORT_SUPPORTED_OPERATION_CODES,
             "1f87ffffffffffffff0000", h._report_supported_opcodes),
            (Opcode.READ_12, None, "18ffffffffffffffff0000", h._read),
            (Opcode.WRITE_12, None, "18ffffffffffffffff0000", h._write),
            (Opcode.WRITE_AND_VERIFY_12, None, "16ffffffffffffffff0000", h._write_and_verify),
            (Opcode.VERIFY_12, None, "16ffffffffffffffff0000", h._verify),
            # ADDRESS DESCRIPTOR INDEX(4), ALLOCATION LENGTH(4)
            (Opcode.READ_DEFECT_DATA_12, None, "1fffffffffffffffff0000",
             extra(sbc_extra.read_defect_data)),
        ]  # fmt: skip
        if self.supports_unmap:
            rows.append((Opcode.UNMAP, None, "000000000000ffff00", h._unmap))
        if self.supports_lba_status:  # STARTING LBA(8), ALLOCATION LENGTH(4)
            rows.append((Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS,
                         "1f" + lba_len16 + "0000", extra(sbc_extra.get_lba_status)))  # fmt: skip
        return [
            CommandSpec(op, sa, bytes([op]) + bytes.fromhex(mask), run,
                        (op, sa) in _MEDIUM_ACCESS, _ACCESS.get((op, sa), Access.NONE))
            for op, sa, mask, run in rows
        ]  # fmt: skip

    def _declared_commands(self) -> list[CommandSpec]:
        """The commands the class declares with @scsi_command."""
        return [
            CommandSpec(d.opcode, d.service_action, d.usage, getattr(self, name), d.medium,
                        d.access)
            for name, d in declared(type(self), _COMMAND_MARK).items()
        ]  # fmt: skip

    def _good(self, cmd: Command) -> Result:
        return Result.good()
