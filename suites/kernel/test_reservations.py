"""Reservations between two initiators, as LIO enforces them for a TCMU backstore: one
backstore exported through two tcm_loop targets (make_lun(paths=2): two I_T nexuses,
each with its own initiator port name), path A and path B.

With pgr_support=1 (the default) drivers/target/target_core_pr.c keeps the
registrations and the reservation, and target_core_transport.c
target_cmd_init_cdb -> target_check_reservation() refuses a command the reservation
forbids with RESERVATION CONFLICT (status 0x18) before it is queued, so the handler
never sees it: each test proves that with the handler's command log (commands it
completed), not by assumption. Unit attentions (target_core_ua.c) are likewise answered
before the ring.

Access rules pinned (SPC-4 5.13.10, table 49 / SPC-2 7.21 for RESERVE(6)):
- Write Exclusive held by A: B's WRITE conflicts, B's READ is GOOD;
- Exclusive Access held by A: B's READ and WRITE both conflict;
- PREEMPT from B: A's key and reservation are gone, B holds the reservation, A's next
  command is a UNIT ATTENTION (target_core_pr.c core_scsi3_pro_preempt);
- RESERVE(6) from A: B's READ and WRITE conflict until A's RELEASE(6);
- Exclusive Access - Registrants Only held by A, B unregistered: READ CAPACITY(10)
  conflicts on 6.1 and is GOOD on 6.12 (the one difference measured between 6.1.192
  and 6.12.117; every other answer here is the same on both).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import HandlerCommand, Lun
from tcmu_harness.scsi.constants import Opcode, PrInAction, PrOutAction, PrType, SenseKey, Status

pytestmark = pytest.mark.vm

KEY_A = 0xAAAA_0000_0000_000A
KEY_B = 0xBBBB_0000_0000_000B
# Blocks each path uses for its I/O, so the handler's log tells them apart.
LBA_A = 16
LBA_B = 32
# The unit attention LIO raises for an I_T nexus whose registration another nexus
# preempted (target_core_pr.c core_scsi3_pro_preempt, measured on 6.1):
# REGISTRATIONS PREEMPTED, 2A/05.
UA_PREEMPTED = (0x2A, 0x05)


@pytest.fixture
def paths(make_lun: Callable[..., Lun], require_attribute: Callable[[str], None]
          ) -> tuple[Lun, Lun]:
    """Path A and path B: one fresh LUN seen through two I_T nexuses."""
    require_attribute("pgr_support")
    a = make_lun(size=1 << 20, paths=2)
    assert a.attribute("pgr_support") == "1"
    b = a.paths[1]
    assert b.sg != a.sg and b.info["wwn"] != a.info["wwn"], (a.info, b.info)
    return a, b


def _read_keys(lun: Lun) -> tuple[int, list[int]]:
    data = lun.cdb(cdb.persistent_reserve_in(PrInAction.READ_KEYS, alloc_len=1024),
                   data_in_len=1024).expect_good().data
    generation, length = struct.unpack_from(">II", data)
    return generation, [k for (k,) in struct.iter_unpack(">Q", data[8 : 8 + length])]


def _read_reservation(lun: Lun) -> tuple[int, int] | None:
    """(holder's key, type) of the reservation, or None."""
    data = lun.cdb(cdb.persistent_reserve_in(PrInAction.READ_RESERVATION, alloc_len=1024),
                   data_in_len=1024).expect_good().data
    (length,) = struct.unpack_from(">I", data, 4)
    if length == 0:
        return None
    return struct.unpack_from(">Q", data, 8)[0], data[21] & 0x0F


def _pr_out(lun: Lun, action: int, key: int = 0, sa_key: int = 0, pr_type: int = 0
            ) -> CdbResult:
    return lun.cdb(cdb.persistent_reserve_out(action, pr_type=pr_type),
                   data_out=cdb.pr_out_parameters(key, sa_key))


def _register_both(a: Lun, b: Lun) -> None:
    generation, keys = _read_keys(a)
    assert keys == []
    _pr_out(a, PrOutAction.REGISTER, 0, KEY_A).expect_good()
    _pr_out(b, PrOutAction.REGISTER, 0, KEY_B).expect_good()
    # Either nexus sees both registrations: one device, two I_T nexuses.
    assert _read_keys(b) == (generation + 2, [KEY_A, KEY_B])
    assert _read_keys(a) == (generation + 2, [KEY_A, KEY_B])


def _write(lun: Lun, lba: int) -> CdbResult:
    return lun.cdb(cdb.write_10(lba, 1), data_out=bytes([lba]) * lun.block_size)


def _read(lun: Lun, lba: int) -> CdbResult:
    return lun.cdb(cdb.read_10(lba, 1), data_in_len=lun.block_size)


def _io_seen(lun: Lun, since: int) -> list[tuple[str, int]]:
    """READ(10)/WRITE(10) the handler completed after the first `since` log entries:
    (name, LBA)."""
    names = {Opcode.READ_10: "READ", Opcode.WRITE_10: "WRITE"}
    commands: list[HandlerCommand] = lun.handler_commands()[since:]
    return [(names[c.opcode], int.from_bytes(c.cdb[2:6], "big"))
            for c in commands if c.opcode in names]


def _conflict(result: CdbResult) -> None:
    __tracebackhide__ = True
    result.expect_status(Status.RESERVATION_CONFLICT)
    assert result.sense == b"", f"RESERVATION CONFLICT with sense\n{result.describe()}"


def test_write_exclusive_conflicts_the_other_nexus_writes_only(paths: tuple[Lun, Lun]) -> None:
    """REGISTER from A and B: READ KEYS (from either) lists both keys, PRGENERATION +2.
    A RESERVE Write Exclusive: B's WRITE(10) is RESERVATION CONFLICT (0x18, no sense),
    B's READ(10) GOOD, A's WRITE(10) GOOD (core_scsi3_pr_seq_non_holder: a registered
    non-holder may not write under type 1), and B reads A's data (one device). B's
    WRITE never reaches the handler."""
    a, b = paths
    _register_both(a, b)
    _pr_out(a, PrOutAction.RESERVE, KEY_A, pr_type=PrType.WRITE_EXCLUSIVE).expect_good()
    assert _read_reservation(b) == (KEY_A, PrType.WRITE_EXCLUSIVE)
    since = len(a.handler_commands())
    _conflict(_write(b, LBA_B))
    _read(b, LBA_B).expect_good()
    _write(a, LBA_A).expect_good()
    # One device behind both nexuses: B reads what A wrote.
    assert _read(b, LBA_A).expect_good().data == bytes([LBA_A]) * b.block_size
    assert _io_seen(a, since) == [("READ", LBA_B), ("WRITE", LBA_A), ("READ", LBA_A)]


def test_exclusive_access_conflicts_the_other_nexus_reads_and_writes(
    paths: tuple[Lun, Lun]
) -> None:
    """A RESERVE Exclusive Access (type 3): B's READ(10) and WRITE(10) are both
    RESERVATION CONFLICT, registered or not; A's READ and WRITE GOOD. Neither of B's
    reaches the handler."""
    a, b = paths
    _register_both(a, b)
    _pr_out(a, PrOutAction.RESERVE, KEY_A, pr_type=PrType.EXCLUSIVE_ACCESS).expect_good()
    assert _read_reservation(a) == (KEY_A, PrType.EXCLUSIVE_ACCESS)
    since = len(a.handler_commands())
    _conflict(_read(b, LBA_B))
    _conflict(_write(b, LBA_B))
    _read(a, LBA_A).expect_good()
    _write(a, LBA_A).expect_good()
    assert _io_seen(a, since) == [("READ", LBA_A), ("WRITE", LBA_A)]


def test_preempt_removes_the_other_key_and_reservation_with_a_unit_attention(
    paths: tuple[Lun, Lun]
) -> None:
    """A holds Write Exclusive; B PREEMPTs A's key (service action key = KEY_A, type 1):
    READ KEYS lists only KEY_B, B holds the reservation (SPC-4 5.13.11.4.3). A's next
    command (TEST UNIT READY) is CHECK CONDITION, UNIT ATTENTION, REGISTRATIONS
    PREEMPTED 2A/05 (core_scsi3_pro_preempt -> target_ua_allocate_lun; the ASCQ is
    LIO's choice, not RESERVATIONS PREEMPTED 2A/03), answered by the kernel; the one
    after is GOOD from the handler. A, now unregistered, is RESERVATION CONFLICT on
    WRITE; B writes."""
    a, b = paths
    _register_both(a, b)
    _pr_out(a, PrOutAction.RESERVE, KEY_A, pr_type=PrType.WRITE_EXCLUSIVE).expect_good()
    _pr_out(b, PrOutAction.PREEMPT, KEY_B, KEY_A, pr_type=PrType.WRITE_EXCLUSIVE).expect_good()
    assert _read_keys(b)[1] == [KEY_B]
    assert _read_reservation(b) == (KEY_B, PrType.WRITE_EXCLUSIVE)
    since = len(a.handler_commands())
    first = a.cdb(cdb.test_unit_ready())
    first.expect_check(SenseKey.UNIT_ATTENTION, *UA_PREEMPTED)
    a.cdb(cdb.test_unit_ready()).expect_good()
    turs = [c for c in a.handler_commands()[since:] if c.opcode == Opcode.TEST_UNIT_READY]
    assert len(turs) == 1, "the unit attention reached the handler"
    since = len(a.handler_commands())
    _conflict(_write(a, LBA_A))
    _write(b, LBA_B).expect_good()
    assert _io_seen(a, since) == [("WRITE", LBA_B)]
    # The unit attention was A's alone: B saw none (its TUR is GOOD at once).
    b.cdb(cdb.test_unit_ready()).expect_good()


def test_reserve_6_conflicts_the_other_nexus_until_release_6(paths: tuple[Lun, Lun]) -> None:
    """SPC-2 reservations (target_core_pr.c target_scsi2_reservation_reserve/release,
    target_check_reservation -> core_scsi2_reservation_check): after A's RESERVE(6),
    B's READ(10) and WRITE(10) are RESERVATION CONFLICT and B's own RESERVE(6) too; A's
    RELEASE(6) clears it: B's READ and WRITE are then GOOD. None of B's conflicting
    commands reaches the handler."""
    a, b = paths
    a.cdb(cdb.reserve_6()).expect_good()
    since = len(a.handler_commands())
    _conflict(_read(b, LBA_B))
    _conflict(_write(b, LBA_B))
    _conflict(b.cdb(cdb.reserve_6()))
    _write(a, LBA_A).expect_good()
    assert _io_seen(a, since) == [("WRITE", LBA_A)]
    a.cdb(cdb.release_6()).expect_good()
    since = len(a.handler_commands())
    _read(b, LBA_B).expect_good()
    _write(b, LBA_B).expect_good()
    assert _io_seen(a, since) == [("READ", LBA_B), ("WRITE", LBA_B)]


def _kernel_at_least(lun: Lun, major: int, minor: int) -> bool:
    release = lun.vm.kernel_version.split("-")[0].split("+")[0]
    numbers = tuple(int(n) for n in release.split(".")[:2])
    return numbers >= (major, minor)


def test_read_capacity_from_an_unregistered_nexus_under_exclusive_access_registrants_only(
    paths: tuple[Lun, Lun]
) -> None:
    """A registers and RESERVEs Exclusive Access - Registrants Only (type 6); B is not
    registered. B's READ(10) is RESERVATION CONFLICT on every kernel; B's READ
    CAPACITY(10) is RESERVATION CONFLICT before 6.8 and GOOD from the handler since
    (target_core_pr.c core_scsi3_pr_seq_non_holder, changed by commit 28c58f8a0947):
    a real difference between the default 6.1 and 6.12 kernels, pinned per kernel
    version."""
    a, b = paths
    _pr_out(a, PrOutAction.REGISTER, 0, KEY_A).expect_good()
    _pr_out(a, PrOutAction.RESERVE, KEY_A,
            pr_type=PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY).expect_good()
    since = len(a.handler_commands())
    _conflict(_read(b, LBA_B))
    answer = b.cdb(cdb.read_capacity_10(), data_in_len=8)
    reached = [c for c in a.handler_commands()[since:]
               if c.opcode in (Opcode.READ_10, Opcode.READ_CAPACITY_10)]
    if _kernel_at_least(b, 6, 8):
        answer.expect_good()
        assert [c.opcode for c in reached] == [Opcode.READ_CAPACITY_10]
    else:
        _conflict(answer)
        assert reached == []
