"""Commands LIO answers itself for a TCMU backstore, and those it passes on, proven with
the handler's command log (what reached userspace), not by assumption.

drivers/target/target_core_device.c passthrough_parse_cdb() (the parse_cdb of
target_core_user.c's tcmu_parse_cdb):
- REPORT LUNS always -> spc_emulate_report_luns (target_core_spc.c);
- emulate_pr=0: PERSISTENT RESERVE IN/OUT, RESERVE/RELEASE(6/10) -> TCM_UNSUPPORTED_
  SCSI_OPCODE, refused before the ring;
- TRANSPORT_FLAG_PASSTHROUGH_PGR clear (pgr_support=1, the default): the same commands
  -> target_scsi3_emulate_pr_in/out, target_scsi2_reservation_reserve/release
  (target_core_pr.c);
- pgr_support=0 sets the flag: they go to the ring like any other command.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import HandlerCommand, Lun, LunManager
from tcmu_harness.scsi.constants import (
    Asc,
    Opcode,
    PrInAction,
    PrOutAction,
    PrType,
    SenseKey,
    Status,
)

pytestmark = pytest.mark.vm

KEY = 0x1234_5678_9ABC_DEF0
RESERVATION_OPCODES = {Opcode.PERSISTENT_RESERVE_IN, Opcode.PERSISTENT_RESERVE_OUT,
                       Opcode.RESERVE_6, Opcode.RELEASE_6}
EXTRA_LUNS = (1, 7)  # mapped beside LUN 0 on the same tcm_loop target


def _read_keys(lun: Lun) -> tuple[int, list[int]]:
    """PR IN READ KEYS: (PRGENERATION, the registered keys)."""
    data = lun.cdb(cdb.persistent_reserve_in(PrInAction.READ_KEYS, alloc_len=1024),
                   data_in_len=1024).expect_good().data
    generation, length = struct.unpack_from(">II", data)
    return generation, [k for (k,) in struct.iter_unpack(">Q", data[8 : 8 + length])]


def _read_reservation(lun: Lun) -> tuple[int, int, int] | None:
    """PR IN READ RESERVATION: (key, scope, type) of the reservation, or None."""
    data = lun.cdb(cdb.persistent_reserve_in(PrInAction.READ_RESERVATION, alloc_len=1024),
                   data_in_len=1024).expect_good().data
    _, length = struct.unpack_from(">II", data)
    if length == 0:
        return None
    assert length == 16, f"READ RESERVATION ADDITIONAL LENGTH {length}, expected 0 or 16"
    key, scope_type = struct.unpack_from(">Q", data, 8)[0], data[21]
    return key, scope_type >> 4, scope_type & 0x0F


def _pr_out(lun: Lun, action: int, key: int = 0, sa_key: int = 0, pr_type: int = 0) -> CdbResult:
    return lun.cdb(cdb.persistent_reserve_out(action, pr_type=pr_type),
                   data_out=cdb.pr_out_parameters(key, sa_key))


def _reservation_commands() -> list[tuple[str, bytes, bytes | None, int]]:
    """One of each reservation command: (name, CDB, data-out, data-in length)."""
    return [
        ("PR IN READ KEYS", cdb.persistent_reserve_in(PrInAction.READ_KEYS, 256), None, 256),
        ("PR IN READ RESERVATION",
         cdb.persistent_reserve_in(PrInAction.READ_RESERVATION, 256), None, 256),
        ("PR OUT REGISTER", cdb.persistent_reserve_out(PrOutAction.REGISTER),
         cdb.pr_out_parameters(0, KEY), 0),
        ("RESERVE(6)", cdb.reserve_6(), None, 0),
        ("RELEASE(6)", cdb.release_6(), None, 0),
    ]


def _seen(lun: Lun) -> list[HandlerCommand]:
    return [c for c in lun.handler_commands() if c.opcode in RESERVATION_OPCODES]


def test_report_luns_lists_every_lun_of_the_target_and_never_reaches_the_handler(
    lun: Lun, lun_manager: LunManager
) -> None:
    """passthrough_parse_cdb: REPORT LUNS is always spc_emulate_report_luns, for every
    TCMU device: the LUN list (SPC-4 6.33, single level LUN addressing, SELECT REPORT 0)
    holds every LUN mapped for this I_T nexus, LUN 0 among them, whichever LUN receives
    the command; the handler never sees it (its command log)."""
    mapped = [lun_manager.vm.call("tcmu_harness.lio.lun:map_again", name=lun.name, lun_index=index,
                                  call_timeout=90) for index in EXTRA_LUNS]
    want = sorted([0, *EXTRA_LUNS])
    for sg in (lun.sg, mapped[-1]["sg"]):
        answer = CdbResult.from_dict(lun_manager.vm.call(
            "tcmu_harness.initiator.guest:sg_io", device=sg, cdb=cdb.report_luns(alloc_len=256),
            data_in_len=256))
        data = answer.expect_good().data
        (length,) = struct.unpack_from(">I", data)
        assert length == 8 * len(want), f"LUN LIST LENGTH {length} via {sg}: {data.hex(' ')}"
        entries = [data[8 + 8 * i : 16 + 8 * i] for i in range(len(want))]
        assert all(e[2:] == bytes(6) and e[0] == 0 for e in entries), data.hex(" ")
        assert sorted(e[1] for e in entries) == want, f"via {sg}: {data.hex(' ')}"
    for m in mapped:
        lun_manager.vm.call("tcmu_harness.initiator.guest:close", device=m["sg"])
    assert Opcode.REPORT_LUNS not in {c.opcode for c in lun.handler_commands()}


def test_persistent_reservations_and_reserve_6_are_emulated_by_the_kernel(
    lun: Lun, require_attribute: Callable[[str], None]
) -> None:
    """pgr_support=1 (the default, checked): target_core_pr.c answers PERSISTENT RESERVE
    IN/OUT and RESERVE/RELEASE(6) (passthrough_parse_cdb): RESERVE(6) then RELEASE(6)
    GOOD; READ KEYS empty; REGISTER a key (PRGENERATION +1, SPC-4 5.13.2); RESERVE Write
    Exclusive -> READ RESERVATION shows key, LU scope, type 1; RELEASE -> none; CLEAR
    removes the key (PRGENERATION +1). None of them reaches the handler."""
    require_attribute("pgr_support")
    assert lun.attribute("pgr_support") == "1"
    lun.cdb(cdb.reserve_6()).expect_good()
    lun.cdb(cdb.release_6()).expect_good()
    generation, keys = _read_keys(lun)
    assert keys == []
    assert _read_reservation(lun) is None
    _pr_out(lun, PrOutAction.REGISTER, 0, KEY).expect_good()
    assert _read_keys(lun) == (generation + 1, [KEY])
    _pr_out(lun, PrOutAction.RESERVE, KEY, pr_type=PrType.WRITE_EXCLUSIVE).expect_good()
    assert _read_reservation(lun) == (KEY, 0, PrType.WRITE_EXCLUSIVE)
    _pr_out(lun, PrOutAction.RELEASE, KEY, pr_type=PrType.WRITE_EXCLUSIVE).expect_good()
    assert _read_reservation(lun) is None
    _pr_out(lun, PrOutAction.CLEAR, KEY).expect_good()
    assert _read_keys(lun) == (generation + 2, [])
    assert _seen(lun) == [], "reservation commands reached the handler"


def test_reservation_commands_reach_the_handler_with_pgr_support_0(
    make_lun: Callable[..., Lun], require_attribute: Callable[[str], None]
) -> None:
    """pgr_support=0 sets TRANSPORT_FLAG_PASSTHROUGH_PGR (target_core_configfs.c
    pgr_support_store): passthrough_parse_cdb then sends PERSISTENT RESERVE IN/OUT and
    RESERVE/RELEASE(6) to the ring; each is in the handler's log, and the initiator
    gets exactly the handler's status and sense bytes (measured on 6.1 with the
    reference handlers: CHECK CONDITION, 20/00, which only the log tells apart from the
    kernel's own refusal under emulate_pr=0)."""
    require_attribute("pgr_support")
    lun = make_lun(attributes={"pgr_support": 0})
    assert lun.attribute("pgr_support") == "0"
    commands = _reservation_commands()
    results = lun.cdbs([(c, out, n) for _, c, out, n in commands])
    seen = _seen(lun)
    assert [c.cdb for c in seen] == [c for _, c, _, _ in commands], \
        f"the handler saw {[c.cdb.hex(' ') for c in seen]}"
    for (name, _, _, _), result, entry in zip(commands, results, seen, strict=True):
        assert result.transport_ok, f"{name}: {result.describe()}"
        assert result.status == entry.status, f"{name}: {result.describe()}"
        assert result.sense == entry.sense, (
            f"{name}: initiator sense {result.sense.hex(' ')}, handler's {entry.sense.hex(' ')}")


def test_reservation_commands_are_refused_by_the_kernel_with_emulate_pr_0(
    make_lun: Callable[..., Lun], require_attribute: Callable[[str], None]
) -> None:
    """emulate_pr=0 (target_core_configfs.c emulate_pr_store; passthrough_parse_cdb
    returns TCM_UNSUPPORTED_SCSI_OPCODE before looking at pgr_support): every
    reservation command is CHECK CONDITION, ILLEGAL REQUEST, INVALID COMMAND OPERATION
    CODE (20/00), and none reaches the handler."""
    require_attribute("emulate_pr")
    lun = make_lun(attributes={"emulate_pr": 0})
    assert lun.attribute("emulate_pr") == "0"
    commands = _reservation_commands()
    results = lun.cdbs([(c, out, n) for _, c, out, n in commands])
    for (name, _, _, _), result in zip(commands, results, strict=True):
        assert result.status == Status.CHECK_CONDITION, f"{name}: {result.describe()}"
        result.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
    assert _seen(lun) == [], "reservation commands reached the handler"
