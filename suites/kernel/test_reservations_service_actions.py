"""PERSISTENT RESERVE OUT service actions and PERSISTENT RESERVE IN reports between
three I_T nexuses to one TCMU backstore (make_lun(paths=3): paths A, B and C, each a
tcm_loop target with its own initiator port), as drivers/target/target_core_pr.c
answers them with pgr_support=1. Every test ends by proving with the handler's command
log that no reservation command, no conflicting command and no unit attention reached
userspace.

Pinned (measured on 6.1.192 and 6.12.117 alike unless a test says otherwise):
- CLEAR (core_scsi3_emulate_pro_clear): reservation and every registration gone,
  PRGENERATION + 1; UNIT ATTENTION 2A/03 RESERVATIONS PREEMPTED to every other
  registered nexus, none to the caller or an unregistered nexus (SPC-4 5.13.11.2.6);
- RELEASE (core_scsi3_emulate_pro_release): of a registrants-only or all-registrants
  type, 2A/04 RESERVATIONS RELEASED to every other registered nexus; of Write
  Exclusive, no unit attention (SPC-4 5.13.11.2.2);
- REGISTER with a RESERVATION KEY that is not the nexus's: RESERVATION CONFLICT, no
  sense; REGISTER AND IGNORE EXISTING KEY replaces the key whatever is given;
- all-registrants types: every registrant holds the reservation (READ RESERVATION
  reports key 0, READ FULL STATUS R_HOLDER on each), an unregistered nexus may read
  under Write Exclusive - All Registrants and nothing under Exclusive Access - All
  Registrants, and any registrant's RELEASE ends it;
- REPORT CAPABILITIES: CRH, SIP_C, ATP_C, PTPL_C, TMV, ALLOW COMMANDS 001b, the six
  types; PTPL_A follows the last APTPL bit given;
- READ FULL STATUS: one descriptor per registration; its RELATIVE TARGET PORT
  IDENTIFIER is 1 and 2 on 6.1.192 and 0 on 6.12.117 (a real difference, pinned per
  kernel version).

Not here, as they wedge the guest on 6.1.192: PREEMPT AND ABORT (the PR OUT never
completes; SG_IO times out, tcm_loop aborts it, the agent stops answering) and REGISTER
with SPEC_I_PT naming an initiator port no nexus has (answered ILLEGAL REQUEST 26/00,
nothing registered, but deleting the LUN afterwards never returns).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.lun import Lun, LunManager
from tcmu_harness.scsi.constants import Opcode, PrInAction, PrOutAction, PrType, SenseKey, Status
from tcmu_harness.suites.kernel.nexus import pending_unit_attentions

pytestmark = pytest.mark.vm

KEY_A = 0xA1
KEY_B = 0xB2
KEY_C = 0xC3
LBA = 8
UA_RESERVATIONS_PREEMPTED = (0x2A, 0x03)
UA_RESERVATIONS_RELEASED = (0x2A, 0x04)
RESERVATION_OPCODES = {Opcode.PERSISTENT_RESERVE_IN, Opcode.PERSISTENT_RESERVE_OUT}


@pytest.fixture
def nexuses(helper_lun: Callable[..., Lun], lun_manager: LunManager,
            require_attribute: Callable[[str], None]) -> tuple[Lun, Lun, Lun]:
    """Paths A, B and C: one fresh LUN seen through three I_T nexuses. The kernel's
    behaviour is under test, so one handler (helper_lun), whatever --tcmu-handler says."""
    require_attribute("pgr_support")
    a = helper_lun("KernelProbeDisk")
    lun_manager.add_path(a)
    lun_manager.add_path(a)
    return a, a.paths[1], a.paths[2]


def pr_out(lun: Lun, action: int, key: int = 0, sa_key: int = 0, pr_type: int = 0,
           **flags: object) -> CdbResult:
    parameters = cdb.pr_out_parameters(key, sa_key, **flags)  # type: ignore[arg-type]
    return lun.cdb(cdb.persistent_reserve_out(action, pr_type=pr_type,
                                              param_len=len(parameters)),
                   data_out=parameters)


def pr_in(lun: Lun, action: int) -> bytes:
    return lun.cdb(cdb.persistent_reserve_in(action, alloc_len=1024),
                   data_in_len=1024).expect_good().data


def read_keys(lun: Lun) -> tuple[int, list[int]]:
    """PRGENERATION and the registered keys."""
    data = pr_in(lun, PrInAction.READ_KEYS)
    generation, length = struct.unpack_from(">II", data)
    return generation, [k for (k,) in struct.iter_unpack(">Q", data[8 : 8 + length])]


def read_reservation(lun: Lun) -> tuple[int, int] | None:
    """(key, scope << 4 | type) of the reservation, or None (SPC-4 6.15.3.3)."""
    data = pr_in(lun, PrInAction.READ_RESERVATION)
    (length,) = struct.unpack_from(">I", data, 4)
    if length == 0:
        return None
    assert length == 16, f"READ RESERVATION ADDITIONAL LENGTH {length}"
    return struct.unpack_from(">Q", data, 8)[0], data[21]


def register(*pairs: tuple[Lun, int]) -> None:
    for lun, key in pairs:
        pr_out(lun, PrOutAction.REGISTER, 0, key).expect_good()


def conflict(result: CdbResult) -> None:
    __tracebackhide__ = True
    result.expect_status(Status.RESERVATION_CONFLICT)
    assert result.sense == b"", f"RESERVATION CONFLICT with sense\n{result.describe()}"


def handler_saw(lun: Lun, since: int) -> list[int]:
    """Opcodes of the commands the handler completed after its first `since` ones."""
    return [c.opcode for c in lun.handler_commands()[since:]]


def test_clear_drops_everything_and_preempts_the_other_registrants(
    nexuses: tuple[Lun, Lun, Lun]
) -> None:
    """A and B register, A holds Write Exclusive - Registrants Only, C is unregistered.
    B's CLEAR: READ KEYS empty with PRGENERATION + 1, no reservation; A's next command
    is UNIT ATTENTION 2A/03 RESERVATIONS PREEMPTED (once), B (the caller) and C (not
    registered) have none. Only A's second TUR and B's and C's TURs reach the handler."""
    a, b, c = nexuses
    register((a, KEY_A), (b, KEY_B))
    pr_out(a, PrOutAction.RESERVE, KEY_A,
           pr_type=PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY).expect_good()
    generation, _ = read_keys(c)
    since = len(a.handler_commands())
    pr_out(b, PrOutAction.CLEAR, KEY_B).expect_good()
    # Read through B and C: A's first command, PR IN included, is its unit attention.
    assert read_keys(c) == (generation + 1, [])
    assert read_reservation(b) is None
    assert pending_unit_attentions(a, b, c) == [UA_RESERVATIONS_PREEMPTED, None, None]
    assert handler_saw(a, since) == [Opcode.TEST_UNIT_READY] * 3


def test_clear_with_a_key_that_is_not_the_callers_conflicts(
    nexuses: tuple[Lun, Lun, Lun]
) -> None:
    """CLEAR must carry the caller's own key (SPC-4 5.13.11.2.6): B's CLEAR with A's key
    is RESERVATION CONFLICT and changes nothing. From an unregistered nexus SPC-4 wants
    RESERVATION CONFLICT too, but LIO answers CHECK CONDITION, NOT READY 08/00 LOGICAL
    UNIT COMMUNICATION FAILURE (core_scsi3_emulate_pro_clear finds no registration for
    the nexus: TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE), measured on 6.1 and 6.12."""
    a, b, c = nexuses
    register((a, KEY_A), (b, KEY_B))
    before = read_keys(a)
    conflict(pr_out(b, PrOutAction.CLEAR, KEY_A))
    pr_out(c, PrOutAction.CLEAR, KEY_C).expect_check(SenseKey.NOT_READY, 0x08, 0x00)
    assert read_keys(a) == before
    assert pending_unit_attentions(a, b, c) == [None, None, None]


def test_release_of_a_registrants_only_reservation_tells_the_other_registrants(
    nexuses: tuple[Lun, Lun, Lun]
) -> None:
    """A releases its Write Exclusive - Registrants Only reservation: B (registered)
    gets UNIT ATTENTION 2A/04 RESERVATIONS RELEASED, A and C (unregistered) none; the
    registrations stay. A RELEASE of a plain Write Exclusive tells nobody. A RELEASE
    whose TYPE is not the reservation's is RESERVATION CONFLICT and keeps it."""
    a, b, c = nexuses
    register((a, KEY_A), (b, KEY_B))
    pr_out(a, PrOutAction.RESERVE, KEY_A,
           pr_type=PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY).expect_good()
    conflict(pr_out(a, PrOutAction.RELEASE, KEY_A, pr_type=PrType.WRITE_EXCLUSIVE))
    assert read_reservation(b) == (KEY_A, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY)
    since = len(a.handler_commands())
    pr_out(a, PrOutAction.RELEASE, KEY_A,
           pr_type=PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY).expect_good()
    assert read_reservation(c) is None
    assert read_keys(c)[1] == [KEY_A, KEY_B]
    assert pending_unit_attentions(a, b, c) == [None, UA_RESERVATIONS_RELEASED, None]
    pr_out(a, PrOutAction.RESERVE, KEY_A, pr_type=PrType.WRITE_EXCLUSIVE).expect_good()
    pr_out(a, PrOutAction.RELEASE, KEY_A, pr_type=PrType.WRITE_EXCLUSIVE).expect_good()
    assert pending_unit_attentions(a, b, c) == [None, None, None]
    assert handler_saw(a, since) == [Opcode.TEST_UNIT_READY] * 6


def test_register_with_the_wrong_key_conflicts_and_register_and_ignore_replaces_it(
    nexuses: tuple[Lun, Lun, Lun]
) -> None:
    """REGISTER from a registered nexus whose RESERVATION KEY is not its key, and from
    an unregistered one with a non-zero RESERVATION KEY: RESERVATION CONFLICT, no sense,
    PRGENERATION unchanged (SPC-4 5.13.7). REGISTER AND IGNORE EXISTING KEY ignores the
    RESERVATION KEY field: A's key becomes the new one, and an unregistered B is
    registered; each success adds 1 to PRGENERATION."""
    a, b, _ = nexuses
    since = len(a.handler_commands())
    register((a, KEY_A))
    generation, keys = read_keys(a)
    assert keys == [KEY_A]
    conflict(pr_out(a, PrOutAction.REGISTER, KEY_B, KEY_C))
    conflict(pr_out(b, PrOutAction.REGISTER, KEY_B, KEY_B))
    assert read_keys(b) == (generation, [KEY_A])
    pr_out(a, PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, 0x77, KEY_C).expect_good()
    assert read_keys(b) == (generation + 1, [KEY_C])
    pr_out(b, PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, 0x77, KEY_B).expect_good()
    assert read_keys(a) == (generation + 2, [KEY_C, KEY_B])
    assert [op for op in handler_saw(a, since) if op in RESERVATION_OPCODES] == []


@pytest.mark.parametrize("pr_type", [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
                                     PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS],
                         ids=["write-exclusive", "exclusive-access"])
def test_all_registrants_reservations(nexuses: tuple[Lun, Lun, Lun], pr_type: PrType) -> None:
    """A and B register, A reserves an all-registrants type, C is unregistered
    (core_scsi3_pr_seq_non_holder: every registrant is a holder). READ RESERVATION
    shows key 0 (SPC-4 6.15.3.3: all-registrants), READ FULL STATUS marks both
    registrants R_HOLDER with the type. B writes; C's WRITE conflicts, and so does its
    READ under Exclusive Access (GOOD under Write Exclusive). B's RELEASE ends it and
    gives A UNIT ATTENTION 2A/04."""
    a, b, c = nexuses
    register((a, KEY_A), (b, KEY_B))
    pr_out(a, PrOutAction.RESERVE, KEY_A, pr_type=pr_type).expect_good()
    assert read_reservation(c) == (0, pr_type)
    status = full_status(c)
    assert [(d.key, d.holder, d.scope_type) for d in status] == [
        (KEY_A, True, pr_type), (KEY_B, True, pr_type)]
    since = len(a.handler_commands())
    block = bytes(a.block_size)
    b.cdb(cdb.write_10(LBA, 1), data_out=block).expect_good()
    conflict(c.cdb(cdb.write_10(LBA, 1), data_out=block))
    read = c.cdb(cdb.read_10(LBA, 1), data_in_len=a.block_size)
    if pr_type == PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS:
        conflict(read)
        expected = [Opcode.WRITE_10]
    else:
        read.expect_good()
        expected = [Opcode.WRITE_10, Opcode.READ_10]
    assert handler_saw(a, since) == expected
    pr_out(b, PrOutAction.RELEASE, KEY_B, pr_type=pr_type).expect_good()
    assert read_reservation(b) is None
    assert pending_unit_attentions(a, b, c) == [UA_RESERVATIONS_RELEASED, None, None]


class StatusDescriptor:
    """One READ FULL STATUS descriptor (SPC-4 6.15.5)."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.key: int = struct.unpack_from(">Q", data, offset)[0]
        flags = data[offset + 12]
        self.all_tg_pt = bool(flags & 0x02)
        self.holder = bool(flags & 0x01)
        self.scope_type: int = data[offset + 13]
        self.rtpi: int = struct.unpack_from(">H", data, offset + 18)[0]
        (length,) = struct.unpack_from(">I", data, offset + 20)
        self.transport_id: bytes = data[offset + 24 : offset + 24 + length]
        self.size = 24 + length


def full_status(lun: Lun) -> list[StatusDescriptor]:
    data = pr_in(lun, PrInAction.READ_FULL_STATUS)
    (length,) = struct.unpack_from(">I", data, 4)
    descriptors, offset = [], 8
    while offset < 8 + length:
        descriptors.append(StatusDescriptor(data, offset))
        offset += descriptors[-1].size
    assert offset == 8 + length, f"descriptors overrun ADDITIONAL LENGTH {length}"
    return descriptors


def sas_transport_id(initiator: str) -> bytes:
    """The SAS TransportID of a tcm_loop initiator port "naa.<16 hex digits>" (SPC-4
    7.6.4.6: PROTOCOL IDENTIFIER 6, 24 bytes): tcm_loop presents its ports as SAS."""
    assert initiator.startswith("naa.") and len(initiator) == 20, initiator
    return bytes([0x06, 0, 0, 0]) + bytes.fromhex(initiator[4:]) + bytes(12)


def initiator_of(lun: Lun) -> str:
    """The initiator port name of a path's I_T nexus (its tcm_loop TPG's nexus)."""
    if "initiator" in lun.info:
        return str(lun.info["initiator"])
    nexus = f"/sys/kernel/config/target/loopback/{lun.info['wwn']}/tpgt_1/nexus"
    return lun.vm.read_file(nexus).decode().strip()


def _kernel_at_least(lun: Lun, major: int, minor: int) -> bool:
    release = lun.vm.kernel_version.split("-")[0].split("+")[0]
    return tuple(int(n) for n in release.split(".")[:2]) >= (major, minor)


def test_read_full_status_describes_each_registration(nexuses: tuple[Lun, Lun, Lun]) -> None:
    """A and B register, A holds Exclusive Access. READ FULL STATUS (from C, who is not
    registered) lists one descriptor per registration in registration order: the key,
    R_HOLDER and SCOPE/TYPE for A only, ALL_TG_PT clear, the nexus's SAS TransportID
    (24 bytes) and a RELATIVE TARGET PORT IDENTIFIER. The RTPI moved from the LUN to
    the TPG in 6.4 (lun_rtpi -> tpg_rtpi), and the two kernels differ: 6.1.192 reports
    1 and 2 (the LUN's two exports), 6.12.117 reports 0 for both tcm_loop TPGs (0 is
    reserved, SPC-4 7.6.3.2: no port identifier at all), pinned per kernel version."""
    a, b, c = nexuses
    register((a, KEY_A), (b, KEY_B))
    pr_out(a, PrOutAction.RESERVE, KEY_A, pr_type=PrType.EXCLUSIVE_ACCESS).expect_good()
    generation, _ = read_keys(c)
    status = full_status(c)
    assert [(d.key, d.holder, d.all_tg_pt, d.scope_type) for d in status] == [
        (KEY_A, True, False, PrType.EXCLUSIVE_ACCESS), (KEY_B, False, False, 0)]
    assert [d.transport_id for d in status] == [sas_transport_id(initiator_of(a)),
                                                sas_transport_id(initiator_of(b))]
    rtpis = [d.rtpi for d in status]
    assert rtpis == ([0, 0] if _kernel_at_least(c, 6, 4) else [1, 2]), rtpis
    assert struct.unpack_from(">I", pr_in(c, PrInAction.READ_FULL_STATUS))[0] == generation


def test_report_capabilities_and_aptpl(nexuses: tuple[Lun, Lun, Lun]) -> None:
    """REPORT CAPABILITIES (SPC-4 6.15.4): LENGTH 8; CRH, SIP_C, ATP_C and PTPL_C set;
    TMV with ALLOW COMMANDS 001b; the type mask lists the six types (0xEA01). PTPL_A is
    clear, set after a REGISTER with APTPL=1 (LIO then keeps the registrations in its
    APTPL file), and clear again when the registration goes with APTPL=0."""
    a, _, _ = nexuses
    caps = pr_in(a, PrInAction.REPORT_CAPABILITIES)[:8]
    assert caps == bytes.fromhex("00081d90ea010000"), caps.hex()
    pr_out(a, PrOutAction.REGISTER, 0, KEY_A, aptpl=True).expect_good()
    assert pr_in(a, PrInAction.REPORT_CAPABILITIES)[:8] == bytes.fromhex("00081d91ea010000")
    pr_out(a, PrOutAction.REGISTER, KEY_A, 0).expect_good()
    assert pr_in(a, PrInAction.REPORT_CAPABILITIES)[:8] == caps
