"""START STOP UNIT: stopping the unit (TEST UNIT READY and medium access then NOT READY,
LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED; INQUIRY, READ CAPACITY, MODE SENSE and
REQUEST SENSE still served), starting it again with the data intact, IMMED and NO_FLUSH,
and the refusal of what a fixed-medium disk without power conditions cannot do (LOEJ,
POWER CONDITION).

SBC-4 5.31 (the command) and 4.20 (START STOP UNIT and power conditions); SPC-4 6.39 and
5.11.2 (REQUEST SENSE reporting the condition). Every stop gets a fresh LUN.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities
from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult
from tcmu_harness.initiator.sense import FieldPointer, decode_sense
from tcmu_harness.lun import Lun
from tcmu_harness.scsi.constants import Asc, Opcode, SenseKey, ServiceAction

pytestmark = pytest.mark.vm

NOT_READY_STOPPED = Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED
PAGE_POWER_CONDITION = 0x1A
POWER_CONDITIONS = {0x1: "active", 0x2: "idle", 0x3: "standby", 0xB: "force-standby-0"}


def stop(lun: Lun, **flags: bool) -> None:
    """Stop the unit once the sd driver is done probing it (sd answers NOT READY 04/02 to
    its probe with a START UNIT of its own, which would restart the unit under the test)."""
    assert lun.sd
    lun.cdb(cdb.start_stop_unit(start=False, **flags)).expect_good()


def medium_commands(lun: Lun, caps: Capabilities) -> dict[str, tuple[bytes, bytes | None, int]]:
    """TEST UNIT READY and the medium access commands the device claims, each valid."""
    bs = lun.block_size
    one = pattern(8, 1, bs, seed=9)
    candidates: list[tuple[str, int, int | None, bytes, bytes | None, int]] = [
        ("TEST UNIT READY", Opcode.TEST_UNIT_READY, None, cdb.test_unit_ready(), None, 0),
        ("READ(10)", Opcode.READ_10, None, cdb.read_10(8, 1), None, bs),
        ("READ(16)", Opcode.READ_16, None, cdb.read_16(8, 1), None, bs),
        ("WRITE(10)", Opcode.WRITE_10, None, cdb.write_10(8, 1), one, 0),
        ("WRITE(16)", Opcode.WRITE_16, None, cdb.write_16(8, 1), one, 0),
        ("VERIFY(10)", Opcode.VERIFY_10, None, cdb.verify_10(8, 1), None, 0),
        ("SYNCHRONIZE CACHE(10)", Opcode.SYNCHRONIZE_CACHE_10, None,
         cdb.synchronize_cache_10(0, 0), None, 0),
        ("WRITE SAME(16)", Opcode.WRITE_SAME_16, None, cdb.write_same_16(8, 1), one, 0),
        ("COMPARE AND WRITE", Opcode.COMPARE_AND_WRITE, None, cdb.compare_and_write(8, 1),
         one + one, 0),
        ("UNMAP", Opcode.UNMAP, None, cdb.unmap(24), cdb.unmap_parameter_list([(8, 1)]), 0),
        ("PRE-FETCH(10)", Opcode.PRE_FETCH_10, None, cdb.pre_fetch_10(8, 1), None, 0),
        ("GET LBA STATUS", Opcode.SERVICE_ACTION_IN_16, ServiceAction.GET_LBA_STATUS,
         cdb.get_lba_status(8, 64), None, 64),
    ]  # fmt: skip
    return {name: (c, out, n) for name, op, sa, c, out, n in candidates
            if op == Opcode.TEST_UNIT_READY or caps.claims(op, sa)}  # fmt: skip


def non_medium_commands(caps: Capabilities) -> dict[str, tuple[bytes, bytes | None, int]]:
    commands = {
        "INQUIRY": (cdb.inquiry(alloc_len=96), None, 96),
        "READ CAPACITY(10)": (cdb.read_capacity_10(), None, 8),
        "READ CAPACITY(16)": (cdb.read_capacity_16(32), None, 32),
        "MODE SENSE(6)": (cdb.mode_sense_6(0x3F), None, 252),
        "MODE SENSE(10)": (cdb.mode_sense_10(0x3F), None, 4096),
    }
    if caps.claims(Opcode.MAINTENANCE_IN, ServiceAction.REPORT_SUPPORTED_OPERATION_CODES):
        commands["REPORT SUPPORTED OPERATION CODES"] = (
            cdb.report_supported_opcodes(alloc_len=8192), None, 8192)
    return commands


def check_all(results: list[CdbResult], names: list[str],
              expect: Callable[[CdbResult], object]) -> None:
    failures = []
    for name, result in zip(names, results, strict=True):
        try:
            expect(result)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_stopped_unit_answers_test_unit_ready_and_medium_access_not_ready(
    lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 4.20 / 5.31: after START=0 the unit is stopped: TEST UNIT READY and every
    medium access command: NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED
    (02/04/02)."""
    commands = medium_commands(lun, caps)
    stop(lun)
    results = lun.cdbs(list(commands.values()))
    check_all(results, list(commands),
              lambda r: r.expect_check(SenseKey.NOT_READY, NOT_READY_STOPPED))


def test_stopped_unit_still_serves_inquiry_read_capacity_and_mode_sense(
    lun: Lun, caps: Capabilities
) -> None:
    """SBC-4 4.20: commands that do not access the medium (INQUIRY, READ CAPACITY, MODE
    SENSE, REPORT SUPPORTED OPERATION CODES) are served GOOD while the unit is stopped, with
    the same data as before."""
    commands = non_medium_commands(caps)
    before = [r.expect_good().data for r in lun.cdbs(list(commands.values()))]
    stop(lun)
    results = lun.cdbs(list(commands.values()))
    check_all(results, list(commands), lambda r: r.expect_good())
    for name, was, result in zip(commands, before, results, strict=True):
        assert result.data == was, f"{name} answers differently while stopped"


@pytest.mark.parametrize("desc", [False, True], ids=["fixed", "descriptor"])
def test_request_sense_on_a_stopped_unit_reports_initializing_command_required(
    lun: Lun, desc: bool
) -> None:
    """SPC-4 6.39 / 5.11.2: REQUEST SENSE is GOOD while stopped and its parameter data
    describe the condition: NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED,
    in the format DESC asks."""
    stop(lun)
    result = lun.cdb(cdb.request_sense(desc=desc, alloc_len=252), data_in_len=252)
    result.expect_good()
    parsed = decode_sense(result.data)
    assert parsed.valid and not parsed.problems, f"{parsed.describe()}"
    assert parsed.descriptor_format == desc
    assert (parsed.key, parsed.asc_ascq) == (SenseKey.NOT_READY, NOT_READY_STOPPED), (
        f"REQUEST SENSE data: {parsed.describe()}")


def test_start_after_stop_makes_the_unit_ready_with_its_data_intact(lun: Lun) -> None:
    """SBC-4 5.31: START=1 returns the stopped unit to the active state: TEST UNIT READY
    GOOD again, and the data written before the stop reads back unchanged."""
    bs = lun.block_size
    blocks = (256 << 10) // bs  # 256 KiB: more than one 64 KiB transfer's worth
    data = pattern(100, blocks, bs, seed=11)
    lun.cdb(cdb.write_10(100, blocks), data_out=data).expect_good()
    stop(lun)
    start, ready, back = lun.cdbs([
        (cdb.start_stop_unit(start=True), None, 0),
        (cdb.test_unit_ready(), None, 0),
        (cdb.read_10(100, blocks), None, len(data)),
    ])  # fmt: skip
    start.expect_good()
    ready.expect_good()
    assert_blocks_equal(back.expect_good().data, data, bs, first_lba=100)


@pytest.mark.parametrize("flag", ["immed", "no_flush"])
def test_start_stop_unit_with_immed_or_no_flush_still_stops_and_starts(
    lun: Lun, flag: str
) -> None:
    """SBC-4 5.31: IMMED=1 (status before completion) and NO_FLUSH=1 (no cache write-back)
    are accepted: the unit stops (TEST UNIT READY 02/04/02) and starts again."""
    assert lun.sd
    results = lun.cdbs([
        (cdb.start_stop_unit(start=False, **{flag: True}), None, 0),
        (cdb.test_unit_ready(), None, 0),
        (cdb.start_stop_unit(start=True, immed=flag == "immed"), None, 0),
        (cdb.test_unit_ready(), None, 0),
    ])  # fmt: skip
    results[0].expect_good()
    results[1].expect_check(SenseKey.NOT_READY, NOT_READY_STOPPED)
    results[2].expect_good()
    results[3].expect_good()


@pytest.mark.parametrize("start", [False, True], ids=["eject", "load"])
def test_start_stop_unit_loej_on_a_fixed_medium_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, start: bool
) -> None:
    """SBC-4 5.31: LOEJ=1 (eject or load) on a device without removable medium: ILLEGAL
    REQUEST, INVALID FIELD IN CDB, field pointer byte 4 bit 1; the unit keeps running."""
    if len(caps.inquiry) > 1 and caps.inquiry[1] & 0x80:
        pytest.skip("INQUIRY RMB=1: the medium is removable, LOEJ may be honoured")
    refused, ready = shared_lun.cdbs([
        (cdb.start_stop_unit(start=start, loej=True), None, 0),
        (cdb.test_unit_ready(), None, 0),
    ])  # fmt: skip
    refused.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                         field=FieldPointer(True, 4, 1))
    ready.expect_good()


@pytest.mark.parametrize("condition", sorted(POWER_CONDITIONS),
                         ids=[POWER_CONDITIONS[c] for c in sorted(POWER_CONDITIONS)])
def test_start_stop_unit_power_condition_without_power_conditions_is_invalid_field_in_cdb(
    shared_lun: Lun, caps: Capabilities, condition: int
) -> None:
    """SBC-4 5.31: a POWER CONDITION the device does not support (no Power Condition mode
    page): ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer byte 4 bit 7; the unit keeps
    running."""
    if PAGE_POWER_CONDITION in caps.mode_current:
        pytest.skip("the device has a Power Condition mode page: power conditions may apply")
    refused, ready = shared_lun.cdbs([
        (cdb.start_stop_unit(start=False, power_condition=condition), None, 0),
        (cdb.test_unit_ready(), None, 0),
    ])  # fmt: skip
    refused.expect_check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB,
                         field=FieldPointer(True, 4, 7))
    ready.expect_good()
