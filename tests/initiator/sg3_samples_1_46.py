"""sg3_utils 1.46 (Debian bookworm, 1.46-3) output samples for the parser tests.

RECORDED ON THE HOST, not from a real device: the real binaries ran against
tests/initiator/fakesg.c (SG_IO answered from canned responses), with DEVICE = /dev/null.
The text is the tools' own; the device answers are synthetic. TO BE RE-RECORDED in the VM
against a real TCMU LUN once the guest runs, and these constants replaced.
"""

from __future__ import annotations


def _lines(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


# $ sg_inq /dev/null
# stdout, exit 0; standard INQUIRY of a tcmu LUN
SG_INQ_STD_EXIT = 0
SG_INQ_STD = _lines(
    "standard INQUIRY:",
    "  PQual=0  PDT=0  RMB=0  LU_CONG=0  hot_pluggable=0  version=0x06  [SPC-4]",
    "  [AERC=0]  [TrmTsk=0]  NormACA=0  HiSUP=1  Resp_data_format=2",
    "  SCCS=0  ACC=0  TPGS=0  3PC=1  Protect=0  [BQue=0]",
    "  EncServ=0  MultiP=0  [MChngr=0]  [ACKREQQ=0]  Addr16=0",
    "  [RelAdr=0]  WBus16=0  Sync=0  [Linked=0]  [TranDis=0]  CmdQue=1",
    "  [SPI: Clocking=0x0  QAS=0  IUS=0]",
    "    length=96 (0x60)   Peripheral device type: disk",
    " Vendor identification: LIO-ORG ",
    " Product identification: tcmu-harness    ",
    " Product revision level: 0.1 ",
    " Unit serial number: 6001405abcdef0123456789abcdef012",
)

# $ sg_inq /dev/null
# stderr, exit 6
SG_INQ_UNIT_ATTENTION_EXIT = 6
SG_INQ_UNIT_ATTENTION = _lines(
    "sg_inq failed: Unit attention",
)

# $ sg_vpd -p 0x80 -HH /dev/null
# stdout, exit 0
SG_VPD_SN_HH_EXIT = 0
SG_VPD_SN_HH = _lines(
    "Unit serial number VPD page:",
    "00 80 00 20 36 30 30 31  34 30 35 61 62 63 64 65",
    "66 30 31 32 33 34 35 36  37 38 39 61 62 63 64 65",
    "66 30 31 32",
)

# $ sg_vpd -p 0x83 -HH /dev/null
# stdout, exit 0
SG_VPD_DI_HH_EXIT = 0
SG_VPD_DI_HH = _lines(
    "Device Identification VPD page:",
    "00 83 00 14 01 03 00 10  60 01 40 5a bc de f0 12",
    "34 56 78 9a bc de f0 12",
)

# $ sg_readcap /dev/null
# stdout, exit 0
SG_READCAP_10_EXIT = 0
SG_READCAP_10 = _lines(
    "Read Capacity results:",
    "   Last LBA=2047 (0x7ff), Number of logical blocks=2048",
    "   Logical block length=512 bytes",
    "Hence:",
    "   Device size: 1048576 bytes, 1.0 MiB, 0.00 GB",
)

# $ sg_readcap --16 /dev/null
# stdout, exit 0
SG_READCAP_16_EXIT = 0
SG_READCAP_16 = _lines(
    "Read Capacity results:",
    "   Protection: prot_en=0, p_type=0, p_i_exponent=0",
    "   Logical block provisioning: lbpme=1, lbprz=0",
    "   Last LBA=2047 (0x7ff), Number of logical blocks=2048",
    "   Logical block length=512 bytes",
    "   Logical blocks per physical block exponent=0",
    "   Lowest aligned LBA=0",
    "Hence:",
    "   Device size: 1048576 bytes, 1.0 MiB, 0.00 GB",
)

# $ sg_readcap /dev/null
# stdout, exit 0; 10-byte CDB overflowed; 4096-byte blocks, type 1 protection
SG_READCAP_16_PROTECTED_EXIT = 0
SG_READCAP_16_PROTECTED = _lines(
    "READ CAPACITY (10) indicates device capacity too large",
    "  now trying 16 byte cdb variant",
    "Read Capacity results:",
    "   Protection: prot_en=1, p_type=0, p_i_exponent=0 [type 1 protection]",
    "   Logical block provisioning: lbpme=1, lbprz=1",
    "   Last LBA=68719476736 (0x1000000000), Number of logical blocks=68719476737",
    "   Logical block length=4096 bytes",
    "   Logical blocks per physical block exponent=3 [so physical block length=32768 bytes]",
    "   Lowest aligned LBA=1",
    "Hence:",
    "   Device size: 281474976714752 bytes, 268435456.0 MiB, 281474.98 GB, 281.47 TB",
)

# $ sg_readcap --brief /dev/null
# stdout, exit 0
SG_READCAP_BRIEF_EXIT = 0
SG_READCAP_BRIEF = _lines(
    "0x800 0x200",
)

# $ sg_readcap /dev/null
# stderr, exit 22
SG_READCAP_LBA_OUT_OF_RANGE_EXIT = 22
SG_READCAP_LBA_OUT_OF_RANGE = _lines(
    "READ CAPACITY (10) failed: LBA out of range",
    "sg_readcap failed: LBA out of range",
)

# $ sg_modes /dev/null
# stdout, exit 0; MODE SENSE(10), all pages: caching and control
SG_MODES_ALL_EXIT = 0
SG_MODES_ALL = _lines(
    "    LIO-ORG   tcmu-harness      0.1    peripheral_type: disk [0x0]",
    "Mode parameter header from MODE SENSE(10):",
    "  Mode data length=48, medium type=0x00, WP=0, DpoFua=1, longlba=0",
    "  Block descriptor length=8",
    "> Direct access device block descriptors:",
    "   Density code=0x0",
    " 00     00 00 08 00 00 00 02 00",
    "",
    ">> Caching, page_control: current",
    " 00     08 12 04 00 00 00 00 00  00 00 00 00 00 00 00 00",
    " 10     00 00 00 00",
    ">> Control, page_control: current",
    " 00     0a 0a 00 00 00 00 00 00  00 00 00 00",
)

# $ sg_modes --six --page=8,0 /dev/null
# stdout, exit 0
SG_MODES_6_CACHING_EXIT = 0
SG_MODES_6_CACHING = _lines(
    "    LIO-ORG   tcmu-harness      0.1    peripheral_type: disk [0x0]",
    "Mode parameter header from MODE SENSE(6):",
    "  Mode data length=44, medium type=0x00, WP=0, DpoFua=1, longlba=0",
    "  Block descriptor length=8",
    "> Direct access device block descriptors:",
    "   Density code=0x0",
    " 00     00 00 08 00 00 00 02 00",
    "",
    ">> Caching, page_control: current",
    " 00     08 12 04 00 00 00 00 00  00 00 00 00 00 00 00 00",
    " 10     00 00 00 00",
)

# $ sg_luns /dev/null
# stdout, exit 0; LUNs 0, 1 and a flat-space LUN 5 (40 05)
SG_LUNS_EXIT = 0
SG_LUNS = _lines(
    "Lun list length = 24 which imples 3 lun entries",
    "Report luns [select_report=0x0]:",
    "    0000000000000000",
    "    0001000000000000",
    "    4005000000000000",
)

# $ sg_turs /dev/null
# stdout, exit 2
SG_TURS_NOT_READY_EXIT = 2
SG_TURS_NOT_READY = _lines(
    "device not ready",
    "Completed 1 Test Unit Ready commands with 1 errors",
)

# $ sg_turs -n 3 -t /dev/null
# stdout, exit 0
SG_TURS_TIMED_EXIT = 0
SG_TURS_TIMED = _lines(
    "time to perform commands was 0.000089 secs; 33707 operations/sec",
    "Completed 3 Test Unit Ready commands with 0 errors",
)

# $ sg_persist -n -k /dev/null
# stdout, exit 0
SG_PERSIST_KEYS_EXIT = 0
SG_PERSIST_KEYS = _lines(
    "  PR generation=0x3, 2 registered reservation keys follow:",
    "    0x1234",
    "    0xabcdef0012345678",
)

# $ sg_persist -n -k /dev/null
# stdout, exit 0
SG_PERSIST_NO_KEYS_EXIT = 0
SG_PERSIST_NO_KEYS = _lines(
    "  PR generation=0x7, there are NO registered reservation keys",
)

# $ sg_persist -n -r /dev/null
# stdout, exit 0
SG_PERSIST_RESERVATION_EXIT = 0
SG_PERSIST_RESERVATION = _lines(
    "  PR generation=0x3, Reservation follows:",
    "    Key=0x1234",
    "    scope: LU_SCOPE,  type: Write Exclusive",
)

# $ sg_persist -n -r /dev/null
# stdout, exit 0
SG_PERSIST_NO_RESERVATION_EXIT = 0
SG_PERSIST_NO_RESERVATION = _lines(
    "  PR generation=0x5, there is NO reservation held",
)

# $ sg_persist -n -o -R -K 1234 -T 1 /dev/null
# stderr, exit 24
SG_PERSIST_OUT_CONFLICT_EXIT = 24
SG_PERSIST_OUT_CONFLICT = _lines(
    "PR out (Reserve): Reservation conflict",
    "sg_persist failed: Reservation conflict",
)

# $ sg_raw -v -r 96 -o /tmp/rec/raw.bin /dev/null 12 00 00 00 60 00
# stderr, exit 0
SG_RAW_INQUIRY_TO_FILE_EXIT = 0
SG_RAW_INQUIRY_TO_FILE = _lines(
    "    cdb to send: [12 00 00 00 60 00]",
    "SCSI Status: Good ",
    "",
    "Writing 96 bytes of data to /tmp/rec/raw.bin",
    "",
)

# $ sg_raw -v -s 512 -i /tmp/rec/c512.bin /dev/null 2a 00 00 00 00 00 00 00 01 00
# stderr, exit 0
SG_RAW_WRITE_GOOD_EXIT = 0
SG_RAW_WRITE_GOOD = _lines(
    "    cdb to send: [2a 00 00 00 00 00 00 00 01 00]",
    "SCSI Status: Good ",
    "",
    "",
)

# $ sg_raw -v -r 512 /dev/null 28 00 00 00 10 00 00 00 01 00
# stderr, exit 22
SG_RAW_DESCRIPTOR_SENSE_EXIT = 22
SG_RAW_DESCRIPTOR_SENSE = _lines(
    "    cdb to send: [28 00 00 00 10 00 00 00 01 00]",
    "SCSI Status: Check Condition ",
    "",
    "Sense Information:",
    "Descriptor format, current; Sense key: Illegal Request",
    "Additional sense: Logical block address out of range",
    "  Descriptor type: Information: 0x0000000000001000",
    "  Descriptor type: Sense key specific: Field pointer:",
    "        Error in Command: byte 2 bit 7",
    " Raw sense data (in hex), sb_len=28, embedded_len=28",
    "        72 05 21 00 00 00 00 14  00 0a 80 00 00 00 00 00",
    "        00 00 10 00 02 06 00 00  cf 00 02 00",
    "",
    "Error 22 occurred, no data received",
    "LBA out of range",
)

# $ sg_raw -v -r 512 /dev/null 28 00 00 00 10 00 00 00 01 00
# stderr, exit 22
SG_RAW_FIXED_SENSE_EXIT = 22
SG_RAW_FIXED_SENSE = _lines(
    "    cdb to send: [28 00 00 00 10 00 00 00 01 00]",
    "SCSI Status: Check Condition ",
    "",
    "Sense Information:",
    "Fixed format, current; Sense key: Illegal Request",
    "Additional sense: Logical block address out of range",
    "  Info fld=0x1000 [4096] ",
    " Raw sense data (in hex), sb_len=18",
    "        f0 00 05 00 00 10 00 0a  00 00 00 00 21 00 00 00",
    "        00 00",
    "",
    "Error 22 occurred, no data received",
    "LBA out of range",
)

# $ sg_raw -v /dev/null 5f 01 01 00 00 00 00 00 18 00
# stderr, exit 24
SG_RAW_RESERVATION_CONFLICT_EXIT = 24
SG_RAW_RESERVATION_CONFLICT = _lines(
    "    cdb to send: [5f 01 01 00 00 00 00 00 18 00]",
    ">>> unknown pass through result category (1)",
    "SCSI Status: Reservation Conflict ",
    "",
    "Reservation conflict",
)

# $ sg_raw -v -s 512 -i /tmp/rec/c512.bin /dev/null 8a 00 00 00 00 00 00 00 00 00 00 00 00 01 00
#     00
# stderr, exit 99; host status DID_TIME_OUT
SG_RAW_TRANSPORT_ERROR_EXIT = 99
SG_RAW_TRANSPORT_ERROR = _lines(
    "    cdb to send: [8a 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00]",
    ">>> transport error: Host_status=0x03 [DID_TIME_OUT]",
    "Driver_status=0x00 [DRIVER_OK]",
    "",
    "SCSI Status: Good ",
    "",
    "Some other error",
)

# $ sg_compare_and_write --in=/tmp/rec/c512.bin --inw=/tmp/rec/w512.bin --lba=5 --num=1
#     --xferlen=1024 /dev/null
# stderr, exit 14
SG_CAW_MISCOMPARE_EXIT = 14
SG_CAW_MISCOMPARE = _lines(
    "Miscompare at byte offset: 5 [0x5]",
    "sg_compare_and_write failed: Miscompare",
)
