"""REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), answered from BlockHandler's command
table (tcmu.commands): every row is listed, so what RSOC reports is what is served,
the commands a class declares with @scsi_command included."""

from __future__ import annotations

import struct

from tcmu import cdb as cdbs
from tcmu.blockutil import data_in
from tcmu.commands import CommandSpec
from tcmu.handler import Command, Result
from tcmu.sense import SenseError

_RSOC_DESCRIPTOR = struct.Struct(">BxHxBH")  # OPCODE, SA, CTDP|SERVACTV, CDB LENGTH
_RSOC_ONE = struct.Struct(">xBH")  # CTDP|SUPPORT, CDB SIZE (then the usage data)
_RSOC_TIMEOUTS = struct.Struct(">HxxII")  # LENGTH (0x0A), NOMINAL, RECOMMENDED (0: unknown)
_CTDP = 0x02
_SERVACTV = 0x01
_ONE_CTDP = 0x80
_SUPPORTED = 0x03
_NOT_SUPPORTED = 0x01
_RSOC_ALL = 0
_RSOC_OPCODE = 1
_RSOC_OPCODE_SA = 2
_RSOC_OPCODE_MAYBE_SA = 3


class RsocMixin:
    """The RSOC command; part of BlockHandler."""

    _commands: dict[tuple[int, int | None], CommandSpec]
    _sa_opcodes: set[int]

    def _report_supported_opcodes(self, cmd: Command) -> Result:
        c = cdbs.decode_rsoc(cmd.cdb)
        if c.options == _RSOC_ALL:
            data = b"".join(self._rsoc_descriptor(spec, c.rctd) for spec in self._sorted_specs())
            data = struct.pack(">I", len(data)) + data
        elif c.options in (_RSOC_OPCODE, _RSOC_OPCODE_SA, _RSOC_OPCODE_MAYBE_SA):
            data = self._rsoc_one(c)
        else:
            raise SenseError.invalid_cdb(2, 2)  # REPORTING OPTIONS, bits 2-0
        return data_in(cmd, data, c.alloc_len)

    def _sorted_specs(self) -> list[CommandSpec]:
        return sorted(self._commands.values(), key=lambda s: (s.opcode, s.service_action or 0))

    @staticmethod
    def _rsoc_descriptor(spec: CommandSpec, rctd: bool) -> bytes:
        flags = (_CTDP if rctd else 0) | (_SERVACTV if spec.service_action is not None else 0)
        out = _RSOC_DESCRIPTOR.pack(spec.opcode, spec.service_action or 0, flags, len(spec.usage))
        return out + (_RSOC_TIMEOUTS.pack(_RSOC_TIMEOUTS.size - 2, 0, 0) if rctd else b"")

    def _rsoc_one(self, c: cdbs.RsocCdb) -> bytes:
        has_sa = c.opcode in self._sa_opcodes
        if c.options == _RSOC_OPCODE and has_sa:
            raise SenseError.invalid_cdb(3)  # this opcode needs a service action
        if c.options == _RSOC_OPCODE_SA and (c.opcode, None) in self._commands:
            raise SenseError.invalid_cdb(3)  # this opcode has no service actions
        spec = self._commands.get((c.opcode, c.service_action if has_sa else None))
        if spec is None:
            return _RSOC_ONE.pack(_NOT_SUPPORTED, 0)
        timeouts = _RSOC_TIMEOUTS.pack(_RSOC_TIMEOUTS.size - 2, 0, 0) if c.rctd else b""
        flags = _SUPPORTED | (_ONE_CTDP if c.rctd else 0)
        return _RSOC_ONE.pack(flags, len(spec.usage)) + spec.usage + timeouts
