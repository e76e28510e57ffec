"""sg3_utils output parsers, on recorded 1.46 output (sg3_samples_1_46) and on garbage."""

from __future__ import annotations

import sg3_samples_1_46 as s
from hypothesis import given
from hypothesis import strategies as st

from tcmu_harness.initiator import sg3_parse as p
from tcmu_harness.scsi.constants import PrType


def test_sg_inq_standard() -> None:
    info = p.parse_sg_inq(s.SG_INQ_STD)
    assert (info.vendor, info.product, info.revision) == ("LIO-ORG", "tcmu-harness", "0.1")
    assert (info.peripheral_qualifier, info.peripheral_type, info.version) == (0, 0, 6)
    assert info.serial == "6001405abcdef0123456789abcdef012"
    assert info.flags["HiSUP"] == 1 and info.flags["CmdQue"] == 1 and info.flags["3PC"] == 1
    assert info.flags["Resp_data_format"] == 2 and info.flags["TPGS"] == 0
    assert info.flags["AERC"] == 0  # bracketed (obsolete) fields are read too


def test_sg_inq_failure_leaves_fields_empty() -> None:
    info = p.parse_sg_inq(s.SG_INQ_UNIT_ATTENTION)
    assert info.vendor is None and info.peripheral_type is None and info.flags == {}


def test_sg_inq_leading_zero_is_decimal() -> None:
    assert p.parse_sg_inq("  PQual=0  PDT=08  version=0x10\n").flags == {
        "PQual": 0, "PDT": 8, "version": 0x10}


def test_sg_inq_missing_product() -> None:
    text = s.SG_INQ_STD.replace(" Product identification: tcmu-harness    ",
                                " Product identification: <none>")
    assert p.parse_sg_inq(text).product is None


def test_hexdump_both_forms() -> None:
    assert p.parse_hexdump(s.SG_VPD_DI_HH) == bytes.fromhex(
        "00 83 00 14 01 03 00 10 60 01 40 5a bc de f0 12 34 56 78 9a bc de f0 12")
    serial_page = p.parse_hexdump(s.SG_VPD_SN_HH)
    assert serial_page[:4] == bytes.fromhex("00 80 00 20")
    assert serial_page[4:] == b"6001405abcdef0123456789abcdef012"
    with_offsets = " 00     00 2e 00 10 00 00 00 08  00 00 08 00 00 00 02 00\n 10     08 12\n"
    assert p.parse_hexdump(with_offsets) == bytes.fromhex(
        "00 2e 00 10 00 00 00 08 00 00 08 00 00 00 02 00 08 12")
    # -H with an ASCII column that itself looks like hex must not leak into the bytes
    ascii_col = " 00     61 62 20 63 64                                      ab cd\n"
    assert p.parse_hexdump(ascii_col) == b"ab cd"


def test_sg_readcap_10() -> None:
    cap = p.parse_sg_readcap(s.SG_READCAP_10)
    assert (cap.last_lba, cap.blocks, cap.block_size) == (2047, 2048, 512)
    assert cap.lbpme is None and cap.prot_en is None


def test_sg_readcap_16() -> None:
    cap = p.parse_sg_readcap(s.SG_READCAP_16)
    assert (cap.last_lba, cap.blocks, cap.block_size) == (2047, 2048, 512)
    assert (cap.prot_en, cap.p_type, cap.p_i_exponent) == (0, 0, 0)
    assert (cap.lbpme, cap.lbprz, cap.lbppbe, cap.lowest_aligned_lba) == (1, 0, 0, 0)


def test_sg_readcap_16_large_and_protected() -> None:
    cap = p.parse_sg_readcap(s.SG_READCAP_16_PROTECTED)
    assert (cap.last_lba, cap.blocks, cap.block_size) == (2**36, 2**36 + 1, 4096)
    assert (cap.prot_en, cap.p_type, cap.lbprz, cap.lbppbe, cap.lowest_aligned_lba) == (
        1, 0, 1, 3, 1)


def test_sg_readcap_brief_and_failure() -> None:
    cap = p.parse_sg_readcap(s.SG_READCAP_BRIEF)
    assert (cap.last_lba, cap.blocks, cap.block_size) == (2047, 2048, 512)
    assert p.parse_sg_readcap(s.SG_READCAP_LBA_OUT_OF_RANGE) == p.Capacity()


def test_sg_modes_all_pages() -> None:
    modes = p.parse_sg_modes(s.SG_MODES_ALL)
    assert (modes.mode_data_length, modes.medium_type, modes.wp, modes.dpofua) == (48, 0, 0, 1)
    assert modes.block_descriptor_length == 8
    assert modes.block_descriptors == bytes.fromhex("00 00 08 00 00 00 02 00")
    assert [p.page_key(page) for page in modes.pages] == [(0x08, 0), (0x0A, 0)]
    caching = modes.page(0x08)
    assert caching is not None and len(caching) == 20 and caching[2] & 0x04  # WCE
    assert modes.page(0x0A) == bytes([0x0A, 0x0A]) + bytes(10)
    assert modes.page(0x1C) is None and modes.page(0x0A, 1) is None


def test_sg_modes_six_byte() -> None:
    modes = p.parse_sg_modes(s.SG_MODES_6_CACHING)
    assert modes.mode_data_length == 44 and modes.dpofua == 1
    assert [p.page_key(page) for page in modes.pages] == [(0x08, 0)]


def test_sg_modes_subpage_key() -> None:
    text = ">> Control extension, page_control: current\n 00     4a 01 00 1c 00 00\n"
    modes = p.parse_sg_modes(text)
    assert modes.page(0x0A, 0x01) == bytes.fromhex("4a 01 00 1c 00 00")
    assert modes.page(0x0A) is None


def test_sg_luns() -> None:
    ids = p.parse_sg_luns(s.SG_LUNS)
    assert ids == (bytes(8), bytes([0, 1]) + bytes(6), bytes([0x40, 5]) + bytes(6))
    assert [p.lun_to_int(i) for i in ids] == [0, 1, 0x4005]
    assert p.lun_to_int(bytes.fromhex("0001 0002 0000 0000")) == 0x0002_0001


def test_sg_persist_keys() -> None:
    keys = p.parse_sg_persist_keys(s.SG_PERSIST_KEYS)
    assert keys == p.PrKeys(generation=3, keys=(0x1234, 0xABCDEF0012345678))
    assert p.parse_sg_persist_keys(s.SG_PERSIST_NO_KEYS) == p.PrKeys(generation=7, keys=())


def test_sg_persist_reservation() -> None:
    resv = p.parse_sg_persist_reservation(s.SG_PERSIST_RESERVATION)
    assert resv == p.PrReservation(generation=3, held=True, key=0x1234, scope=0,
                                   pr_type=PrType.WRITE_EXCLUSIVE)
    none = p.parse_sg_persist_reservation(s.SG_PERSIST_NO_RESERVATION)
    assert none == p.PrReservation(generation=5, held=False)


def test_sg_persist_reservation_type_names() -> None:
    text = ("  PR generation=0x9, Reservation follows:\n    Key=0x1\n"
            "    scope: LU_SCOPE,  type: Exclusive Access, all registrants\n")
    assert p.parse_sg_persist_reservation(text).pr_type == PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS
    odd = text.replace("Exclusive Access, all registrants", "obsolete [0xa]")
    assert p.parse_sg_persist_reservation(odd).pr_type == 0xA


def test_sg_raw_good_data_in() -> None:
    raw = p.parse_sg_raw(s.SG_RAW_INQUIRY_TO_FILE)
    assert raw == p.RawOutput(status=0, data_len=96)


def test_sg_raw_good_data_out() -> None:
    assert p.parse_sg_raw(s.SG_RAW_WRITE_GOOD) == p.RawOutput(status=0)


def test_sg_raw_descriptor_sense() -> None:
    raw = p.parse_sg_raw(s.SG_RAW_DESCRIPTOR_SENSE)
    assert raw.status == 0x02 and raw.data_len == 0
    assert raw.sense == bytes.fromhex(
        "72 05 21 00 00 00 00 14 00 0a 80 00 00 00 00 00 00 00 10 00 02 06 00 00 cf 00 02 00")


def test_sg_raw_fixed_sense() -> None:
    raw = p.parse_sg_raw(s.SG_RAW_FIXED_SENSE)
    assert raw.status == 0x02
    assert raw.sense == bytes.fromhex("f0 00 05 00 00 10 00 0a 00 00 00 00 21 00 00 00 00 00")


def test_sg_raw_status_only_and_transport_error() -> None:
    assert p.parse_sg_raw(s.SG_RAW_RESERVATION_CONFLICT).status == 0x18
    err = p.parse_sg_raw(s.SG_RAW_TRANSPORT_ERROR)
    assert (err.status, err.host_status, err.driver_status) == (0, 3, 0)
    assert p.parse_status_name("Task Set Full") == 0x28
    assert p.parse_status_name("Unknown status [0x7e]") == 0x7E
    assert p.parse_status_name("nonsense") is None


def test_small_parsers() -> None:
    assert p.parse_miscompare_offset(s.SG_CAW_MISCOMPARE) == 5
    assert p.parse_miscompare_offset("Miscompare reported\n") is None
    assert p.parse_sg_turs(s.SG_TURS_NOT_READY) == (1, 1)
    assert p.parse_sg_turs(s.SG_TURS_TIMED) == (3, 0)
    assert p.parse_sg_turs("") == (None, None)


_PARSERS = [p.parse_hexdump, p.parse_sg_inq, p.parse_sg_readcap, p.parse_sg_luns,
            p.parse_sg_modes, p.parse_sg_persist_keys, p.parse_sg_persist_reservation,
            p.parse_sg_raw, p.parse_miscompare_offset, p.parse_sg_turs]
_SAMPLE_LINES = [line for name in dir(s) if name.isupper() and isinstance(getattr(s, name), str)
                 for line in getattr(s, name).splitlines()]


_FIELDISH = st.from_regex(r"\A *[A-Za-z_]{1,8}=(0x)?[0-9a-f]{1,4}[ ,\]]*\Z")


@given(st.sampled_from(_PARSERS),
       st.lists(st.one_of(st.sampled_from(_SAMPLE_LINES), st.text(max_size=60), _FIELDISH),
                max_size=30))
def test_parsers_never_raise(parser: object, lines: list[str]) -> None:
    parser("\n".join(lines))  # type: ignore[operator]
