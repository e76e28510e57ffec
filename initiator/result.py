"""The outcome of one CDB sent through SG_IO, and the assertions the suites make on it.

`CdbResult` crosses the host <-> guest agent boundary as a dict (`to_dict`/`from_dict`);
bytes stay bytes there because the transport codec encodes them itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Self

from tcmu_harness.initiator.linux_codes import (
    DriverStatus,
    HostStatus,
    driver_status_name,
    host_status_name,
)
from tcmu_harness.initiator.sense import FieldPointer, Sense, decode_sense, key_name
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, ServiceAction, Status

ANY: Any = object()  # "do not check this field" in expect_check
_DATA_PREVIEW = 32  # data-in bytes shown by describe()
# Which ServiceAction members belong to which multiplexed opcode.
_SERVICE_ACTIONS: dict[int, tuple[int, ...]] = {
    Opcode.SERVICE_ACTION_IN_16: (ServiceAction.READ_CAPACITY_16, ServiceAction.GET_LBA_STATUS),
    Opcode.MAINTENANCE_IN: (
        ServiceAction.REPORT_SUPPORTED_OPERATION_CODES,
        ServiceAction.REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS,
        ServiceAction.REPORT_TARGET_PORT_GROUPS,
    ),
}


def status_name(status: int) -> str:
    try:
        return Status(status).name.replace("_", " ")
    except ValueError:
        return f"UNKNOWN STATUS 0x{status:02x}"


def _spec_name(name: str) -> str:
    """READ_CAPACITY_16 -> READ CAPACITY(16)."""
    head, _, tail = name.rpartition("_")
    if head and tail.isdigit():
        return f"{head.replace('_', ' ')}({tail})"
    return name.replace("_", " ")


def opcode_name(cdb: bytes) -> str:
    """The command's name, e.g. "READ(10)"; service actions resolved where known."""
    if not cdb:
        return "empty CDB"
    if len(cdb) > 1 and (cdb[1] & 0x1F) in _SERVICE_ACTIONS.get(cdb[0], ()):
        return _spec_name(ServiceAction(cdb[1] & 0x1F).name)
    try:
        return _spec_name(Opcode(cdb[0]).name)
    except ValueError:
        return f"opcode 0x{cdb[0]:02x}"


@dataclasses.dataclass(frozen=True, slots=True)
class CdbResult:
    cdb: bytes
    status: int
    sense: bytes = b""  # as written by the target (sb_len_wr bytes)
    data: bytes = b""  # data-in actually transferred (requested - resid)
    resid: int = 0
    host_status: int = 0  # HostStatus
    driver_status: int = 0  # DriverStatus
    duration_s: float = 0.0
    info: int = 0  # sg_io_hdr.info (SG_INFO_* flags)
    device: str = ""
    data_in_len: int = 0  # requested
    data_out_len: int = 0  # sent

    @property
    def decoded(self) -> Sense | None:
        return decode_sense(self.sense) if self.sense else None

    @property
    def transport_ok(self) -> bool:
        """The command reached the target and came back: only the SCSI status speaks."""
        return self.host_status == HostStatus.DID_OK and (self.driver_status & 0x0F) in (
            DriverStatus.DRIVER_OK,
            DriverStatus.DRIVER_SENSE,
        )

    @property
    def good(self) -> bool:
        return self.status == Status.GOOD and self.transport_ok

    @property
    def timed_out(self) -> bool:
        return (
            self.host_status == HostStatus.DID_TIME_OUT
            or (self.driver_status & 0x0F) == DriverStatus.DRIVER_TIMEOUT
        )

    def describe(self) -> str:
        """A readable multi-line account, made for assertion messages."""
        where = f" on {self.device}" if self.device else ""
        lines = [
            f"CDB: {self.cdb.hex(' ')} ({opcode_name(self.cdb)}){where}",
            f"status: {status_name(self.status)} (0x{self.status:02x})",
        ]
        sense = self.decoded
        if sense is not None:
            lines.append(f"sense: {sense.describe()}")
            lines.append(f"sense bytes: {self.sense.hex(' ')}")
        elif self.status == Status.CHECK_CONDITION:
            lines.append("sense: none returned with CHECK CONDITION")
        if self.data_in_len:
            preview = self.data[:_DATA_PREVIEW].hex(" ")
            more = " ..." if len(self.data) > _DATA_PREVIEW else ""
            lines.append(
                f"data-in: {len(self.data)} of {self.data_in_len} bytes, resid {self.resid}"
                + (f": {preview}{more}" if self.data else "")
            )
        elif self.data_out_len:
            lines.append(f"data-out: {self.data_out_len} bytes, resid {self.resid}")
        lines.append(
            f"host status: {host_status_name(self.host_status)}, "
            f"driver status: {driver_status_name(self.driver_status)}, "
            f"info 0x{self.info:x}, {self.duration_s * 1e3:.3f} ms"
        )
        return "\n".join(lines)

    def expect_good(self) -> Self:
        __tracebackhide__ = True  # pytest shows the caller and our message
        if not self.good:
            raise AssertionError(f"expected GOOD status\n{self.describe()}")
        return self

    def expect_status(self, status: int) -> Self:
        __tracebackhide__ = True  # pytest shows the caller and our message
        if self.status != status or not self.transport_ok:
            raise AssertionError(f"expected status {status_name(status)}\n{self.describe()}")
        return self

    def expect_check(
        self,
        key: int,
        asc: int | None = None,
        ascq: int | None = None,
        *,
        information: int | object | None = ANY,
        field: FieldPointer | object | None = ANY,
        descriptor_format: bool | object = ANY,
    ) -> Self:
        """Assert CHECK CONDITION with this sense key, and ASC/ASCQ when given, in sense
        data that keeps every layout rule of SPC-4 4.5 (any deviation the decoder finds,
        such as a fixed ADDITIONAL SENSE LENGTH below 10, fails the assertion).

        `asc` may also be a 16-bit ASC/ASCQ pair such as scsi.constants.Asc members
        (then `ascq` must be None); `asc` alone, as a byte, leaves the ASCQ unchecked.
        `information` (an int, or None for "not VALID"), `field` (the sense-key specific
        field pointer, or None for "SKSV clear") and `descriptor_format` are checked when
        given.
        """
        __tracebackhide__ = True
        if asc is not None and asc > 0xFF:
            if ascq is not None:
                raise ValueError("give ascq only with a one-byte asc")
            asc, ascq = asc >> 8, asc & 0xFF
        want = key_name(key)
        if asc is not None:
            want += f", asc {asc:02X}" + ("" if ascq is None else f"/{ascq:02X}")
        sense = self.decoded
        wrong: list[str] = []
        if sense is not None and sense.valid:
            wrong += [f"sense layout: {problem}" for problem in sense.problems]
            if information is not ANY and sense.information != information:
                wrong.append(f"INFORMATION {_hex_or_none(sense.information)}, expected "
                             f"{_hex_or_none(information)}")
            if field is not ANY and sense.field_pointer != field:
                wrong.append(f"field pointer {sense.field_pointer}, expected {field}")
            if descriptor_format is not ANY and sense.descriptor_format != descriptor_format:
                wrong.append("descriptor format expected" if descriptor_format
                             else "fixed format expected")
        if (
            self.status != Status.CHECK_CONDITION
            or not self.transport_ok
            or sense is None
            or not sense.matches(key, asc, ascq)
            or wrong
        ):
            detail = "".join(f"\n{w}" for w in wrong)
            raise AssertionError(f"expected CHECK CONDITION, {want}{detail}\n{self.describe()}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CdbResult:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown CdbResult fields: {sorted(unknown)}")
        return cls(**d)


def _hex_or_none(value: object) -> str:
    return f"0x{value:x}" if isinstance(value, int) else "not VALID"


def expect_each(cases: Iterable[tuple[str, CdbResult]], check: Callable[[CdbResult], object]
                ) -> None:
    """Apply `check` (e.g. CdbResult.expect_good) to every (what, result), naming the case
    that fails."""
    __tracebackhide__ = True
    for what, result in cases:
        try:
            check(result)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None


def expect_field_pointer(result: CdbResult, key: int, asc: int, pointer: FieldPointer) -> None:
    """CHECK CONDITION with this sense and a field pointer on `pointer`'s byte; the bit
    pointer may be absent (BPV=0) or, when present, must name `pointer.bit` (SPC-4
    4.5.2.4.2: for a multi-bit field, its most significant bit)."""
    __tracebackhide__ = True
    result.expect_check(key, asc)
    got = result.decoded.field_pointer if result.decoded else None
    allowed = {pointer, dataclasses.replace(pointer, bit=None)}
    assert got in allowed, (f"field pointer {got}, expected {pointer} (or without a bit "
                            f"pointer)\n{result.describe()}")


def expect_invalid_field_in_cdb(result: CdbResult, byte: int, bit: int | None) -> None:
    """ILLEGAL REQUEST, INVALID FIELD IN CDB with the field pointer on `byte`: on `bit`
    when given (a one-bit field), else with no bit pointer or one on bit 7 (a whole-byte
    field's leftmost bit, SPC-4 4.5.2.4.2)."""
    __tracebackhide__ = True
    result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    allowed = ({FieldPointer(True, byte, bit)} if bit is not None
               else {FieldPointer(True, byte, None), FieldPointer(True, byte, 7)})
    pointer = result.decoded.field_pointer if result.decoded else None
    assert pointer in allowed, (
        f"field pointer {pointer}, expected {' or '.join(map(str, allowed))}\n"
        f"{result.describe()}"
    )
