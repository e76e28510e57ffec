"""CDB builders against byte layouts written out by hand from SPC-5 / SBC-4."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcmu_harness.initiator import cdb
from tcmu_harness.scsi.constants import PrInAction, PrOutAction, PrType


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (cdb.test_unit_ready(), "00 00 00 00 00 00"),
        (cdb.inquiry(), "12 00 00 00 ff 00"),
        (cdb.inquiry(evpd=True, page=0x83, alloc_len=0x1000), "12 01 83 10 00 00"),
        (cdb.inquiry(evpd=False, page=0x80, alloc_len=36), "12 00 80 00 24 00"),
        (cdb.request_sense(), "03 00 00 00 fc 00"),
        (cdb.request_sense(desc=True, alloc_len=18), "03 01 00 00 12 00"),
        (cdb.read_capacity_10(), "25 00 00 00 00 00 00 00 00 00"),
        (cdb.read_capacity_16(), "9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00"),
        (cdb.read_capacity_16(alloc_len=0x010203), "9e 10" + " 00" * 8 + " 00 01 02 03 00 00"),
        (cdb.read_6(0x12345, 1), "08 01 23 45 01 00"),
        (cdb.read_6(0x1FFFFF, 256), "08 1f ff ff 00 00"),
        (cdb.write_6(0, 255), "0a 00 00 00 ff 00"),
        (cdb.read_10(0x12345678, 0x100), "28 00 12 34 56 78 00 01 00 00"),
        (cdb.read_10(1, 2, fua=True, dpo=True), "28 18 00 00 00 01 00 00 02 00"),
        (cdb.read_10(1, 2, rdprotect=3, group=0x3F), "28 60 00 00 00 01 3f 00 02 00"),
        (cdb.write_10(0xFFFFFFFF, 0xFFFF, fua=True), "2a 08 ff ff ff ff 00 ff ff 00"),
        (cdb.read_12(0x01020304, 0x05060708, dpo=True),
         "a8 10 01 02 03 04 05 06 07 08 00 00"),
        (cdb.write_12(1, 1, wrprotect=1), "aa 20 00 00 00 01 00 00 00 01 00 00"),
        (cdb.read_16(0x0102030405060708, 0x090A0B0C, fua=True),
         "88 08 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00"),
        (cdb.write_16(2**64 - 1, 1, group=1),
         "8a 00 ff ff ff ff ff ff ff ff 00 00 00 01 01 00"),
        (cdb.verify_10(0x10, 8, bytchk=1, dpo=True), "2f 12 00 00 00 10 00 00 08 00"),
        (cdb.verify_16(1, 2, bytchk=3, vrprotect=7),
         "8f e6 00 00 00 00 00 00 00 01 00 00 00 02 00 00"),
        (cdb.write_same_10(5, 10, unmap=True, anchor=True), "41 18 00 00 00 05 00 00 0a 00"),
        (cdb.write_same_16(5, 10, unmap=True, ndob=True),
         "93 09 00 00 00 00 00 00 00 05 00 00 00 0a 00 00"),
        (cdb.unmap(24), "42 00 00 00 00 00 00 00 18 00"),
        (cdb.unmap(0x1234, anchor=True, group=2), "42 01 00 00 00 00 02 12 34 00"),
        (cdb.compare_and_write(0x10, 1, fua=True),
         "89 08 00 00 00 00 00 00 00 10 00 00 00 01 00 00"),
        (cdb.synchronize_cache_10(immed=True), "35 02 00 00 00 00 00 00 00 00"),
        (cdb.synchronize_cache_10(0x100, 0x20), "35 00 00 00 01 00 00 00 20 00"),
        (cdb.synchronize_cache_16(8, 16),
         "91 00 00 00 00 00 00 00 00 08 00 00 00 10 00 00"),
        (cdb.mode_sense_6(0x3F, pc=1, dbd=True, alloc_len=0xFC), "1a 08 7f 00 fc 00"),
        (cdb.mode_sense_6(0x0A, subpage=0xFF), "1a 00 0a ff fc 00"),
        (cdb.mode_sense_10(0x08, pc=3, alloc_len=0x200), "5a 00 c8 00 00 00 00 02 00 00"),
        (cdb.mode_sense_10(0x0A, subpage=1, llbaa=True, dbd=True),
         "5a 18 0a 01 00 00 00 10 00 00"),
        (cdb.mode_select_6(24), "15 10 00 00 18 00"),
        (cdb.mode_select_10(0x104, pf=False, sp=True), "55 01 00 00 00 00 00 01 04 00"),
        (cdb.report_luns(), "a0 00 00 00 00 00 00 00 10 00 00 00"),
        (cdb.report_luns(select=2, alloc_len=16), "a0 00 02 00 00 00 00 00 00 10 00 00"),
        (cdb.report_supported_opcodes(), "a3 0c 00 00 00 00 00 00 20 00 00 00"),
        (cdb.report_supported_opcodes(reporting_options=2, opcode=0x9E, service_action=0x10,
                                      rctd=True, alloc_len=0x100),
         "a3 0c 82 9e 00 10 00 00 01 00 00 00"),
        (cdb.persistent_reserve_in(PrInAction.READ_KEYS), "5e 00 00 00 00 00 00 20 00 00"),
        (cdb.persistent_reserve_in(PrInAction.READ_RESERVATION, 24),
         "5e 01 00 00 00 00 00 00 18 00"),
        (cdb.persistent_reserve_out(PrOutAction.REGISTER), "5f 00 00 00 00 00 00 00 18 00"),
        (cdb.persistent_reserve_out(PrOutAction.RESERVE, pr_type=PrType.WRITE_EXCLUSIVE),
         "5f 01 01 00 00 00 00 00 18 00"),
        (cdb.persistent_reserve_out(PrOutAction.PREEMPT_AND_ABORT, scope=2, pr_type=8,
                                    param_len=0x01020304),
         "5f 05 28 00 00 01 02 03 04 00"),
        (cdb.reserve_6(), "16 00 00 00 00 00"),
        (cdb.release_6(), "17 00 00 00 00 00"),
        (cdb.reserve_10(), "56 00 00 00 00 00 00 00 00 00"),
        (cdb.release_10(), "57 00 00 00 00 00 00 00 00 00"),
        (cdb.start_stop_unit(), "1b 00 00 00 01 00"),
        (cdb.start_stop_unit(start=False, loej=True, immed=True), "1b 01 00 00 02 00"),
        (cdb.start_stop_unit(power_condition=3, power_condition_modifier=2, no_flush=True),
         "1b 00 00 02 35 00"),
        (cdb.prevent_allow_medium_removal(), "1e 00 00 00 01 00"),
        (cdb.prevent_allow_medium_removal(0), "1e 00 00 00 00 00"),
    ],
)
def test_cdb_bytes(built: bytes, expected: str) -> None:
    assert built.hex(" ") == expected


def test_unmap_parameter_list() -> None:
    plist = cdb.unmap_parameter_list([(0x10, 8), (0x0102030405060708, 0xAABBCCDD)])
    assert plist == h(
        "00 26 00 20 00 00 00 00"  # UNMAP DATA LENGTH = 38, BLOCK DESCRIPTOR DATA LENGTH = 32
        "00 00 00 00 00 00 00 10  00 00 00 08  00 00 00 00"
        "01 02 03 04 05 06 07 08  aa bb cc dd  00 00 00 00"
    )
    assert cdb.unmap_parameter_list([]) == h("00 06 00 00 00 00 00 00")


def test_pr_out_parameters() -> None:
    plist = cdb.pr_out_parameters(0x1122334455667788, 0xAABB, aptpl=True, all_tg_pt=True)
    assert len(plist) == cdb.PR_OUT_PARAMETER_LIST_LEN
    assert plist == h(
        "11 22 33 44 55 66 77 88  00 00 00 00 00 00 aa bb"
        "00 00 00 00  05 00 00 00"  # obsolete; SPEC_I_PT 0, ALL_TG_PT 1, APTPL 1
    )
    tids = bytes(24)
    with_tids = cdb.pr_out_parameters(0, 1, spec_i_pt=True, transport_ids=tids)
    assert with_tids[20] == 0x08
    assert with_tids[24:28] == h("00 00 00 18")
    assert with_tids[28:] == tids


def test_pr_register_and_move_parameters() -> None:
    tid = bytes([0x06]) + bytes(23)
    plist = cdb.pr_register_and_move_parameters(1, 2, relative_port=3, transport_id=tid,
                                                unreg=True, aptpl=True)
    assert plist[:24] == h(
        "00 00 00 00 00 00 00 01  00 00 00 00 00 00 00 02  00 03 00 03  00 00 00 18"
    )
    assert plist[24:] == tid


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: cdb.read_6(1 << 21, 1), "lba"),
        (lambda: cdb.read_6(0, 0), "blocks"),
        (lambda: cdb.write_6(0, 257), "blocks"),
        (lambda: cdb.read_10(1 << 32, 1), "lba"),
        (lambda: cdb.read_10(0, 1 << 16), "blocks"),
        (lambda: cdb.write_12(0, 1 << 32), "blocks"),
        (lambda: cdb.read_16(1 << 64, 1), "lba"),
        (lambda: cdb.read_16(-1, 1), "lba"),
        (lambda: cdb.read_10(0, 1, rdprotect=8), "protect"),
        (lambda: cdb.read_10(0, 1, group=64), "group"),
        (lambda: cdb.inquiry(page=256), "page"),
        (lambda: cdb.inquiry(alloc_len=1 << 16), "alloc_len"),
        (lambda: cdb.request_sense(alloc_len=256), "alloc_len"),
        (lambda: cdb.mode_sense_6(0x40), "page"),
        (lambda: cdb.mode_sense_10(8, pc=4), "pc"),
        (lambda: cdb.verify_10(0, 1, bytchk=4), "bytchk"),
        (lambda: cdb.write_same_10(0, 1 << 16), "blocks"),
        (lambda: cdb.compare_and_write(0, 256), "blocks"),
        (lambda: cdb.persistent_reserve_out(0, scope=16), "scope"),
        (lambda: cdb.persistent_reserve_out(0, pr_type=16), "pr_type"),
        (lambda: cdb.persistent_reserve_in(32), "service_action"),
        (lambda: cdb.pr_out_parameters(1 << 64), "reservation_key"),
        (lambda: cdb.unmap_parameter_list([(0, 1 << 32)]), "blocks"),
        (lambda: cdb.report_luns(alloc_len=1 << 32), "alloc_len"),
    ],
)
def test_out_of_range_names_the_field(call: Callable[[], bytes], field: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        call()


def test_non_int_is_rejected() -> None:
    with pytest.raises(TypeError, match="lba"):
        cdb.read_10(1.5, 1)  # type: ignore[arg-type]


def test_test_unit_ready_is_not_collected_as_a_test() -> None:
    assert cdb.test_unit_ready.__test__ is False  # type: ignore[attr-defined]


_RW: list[tuple[Callable[..., bytes], int, int, int]] = [
    # builder, CDB length, LBA bytes, TRANSFER LENGTH bytes
    (cdb.read_10, 10, 4, 2),
    (cdb.write_10, 10, 4, 2),
    (cdb.read_12, 12, 4, 4),
    (cdb.write_12, 12, 4, 4),
    (cdb.read_16, 16, 8, 4),
    (cdb.write_16, 16, 8, 4),
]


@given(st.sampled_from(_RW), st.data())
def test_read_write_fields_round_trip(rw: tuple[Callable[..., bytes], int, int, int],
                                      data: st.DataObject) -> None:
    builder, size, lba_bytes, len_bytes = rw
    lba = data.draw(st.integers(0, (1 << (8 * lba_bytes)) - 1))
    blocks = data.draw(st.integers(0, (1 << (8 * len_bytes)) - 1))
    fua, dpo = data.draw(st.booleans()), data.draw(st.booleans())
    built = builder(lba, blocks, fua=fua, dpo=dpo)
    assert len(built) == size
    assert int.from_bytes(built[2 : 2 + lba_bytes], "big") == lba
    length_at = 7 if size == 10 else 2 + lba_bytes
    assert int.from_bytes(built[length_at : length_at + len_bytes], "big") == blocks
    assert built[1] == (dpo << 4) | (fua << 3)
    assert built[-1] == 0  # CONTROL
