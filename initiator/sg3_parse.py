"""Parsers for sg3_utils (1.46) text output. Pure functions of the text, no I/O.

Every parser tolerates missing or unexpected lines: a field it cannot find stays None
(or empty), because a failing tool prints only part of its usual output and the
suites still want the exit code and whatever was printed.
"""

from __future__ import annotations

import dataclasses
import re

from tcmu_harness.scsi.constants import PrType

_HEX_BYTE = re.compile(r"[0-9a-fA-F]{2}")
_ADDRESS = re.compile(r"[0-9a-fA-F]+")


def _int(pattern: str, text: str, base: int = 10, flags: int = re.MULTILINE) -> int | None:
    m = re.search(pattern, text, flags)
    return int(m.group(1), base) if m else None


def _num(text: str) -> int:
    """sg3_utils prints "0x"-prefixed hex or plain decimal (which may have leading 0s)."""
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _hex_tokens(chunk: str) -> list[str] | None:
    tokens = chunk.split()
    if tokens and all(_HEX_BYTE.fullmatch(t) for t in tokens):
        return tokens
    return None


def parse_hexdump(text: str) -> bytes:
    """Bytes of an sg3_utils hex dump, in either form it prints:
    " 00     00 2e 00 10 ...  (ASCII)" (offset, bytes, optional ASCII column, as -H) or
    "00 83 00 14 01 03 00 10  60 01 ..." (bytes only, as -HH). Other lines are skipped.
    """
    out = bytearray()
    for line in text.splitlines():
        # The offset, the bytes and the ASCII column are separated by 3+ blanks; the two
        # halves of a 16-byte row only by 2.
        chunks = re.split(r"\s{3,}", line.strip())
        tokens = None
        if len(chunks) >= 2 and _ADDRESS.fullmatch(chunks[0]):
            tokens = _hex_tokens(chunks[1])
        if tokens is None and len(chunks) == 1:
            tokens = _hex_tokens(chunks[0])
        if tokens:
            out += bytes(int(t, 16) for t in tokens)
    return bytes(out)


# --- sg_inq --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class InquiryInfo:
    peripheral_qualifier: int | None = None
    peripheral_type: int | None = None
    version: int | None = None
    vendor: str | None = None
    product: str | None = None
    revision: str | None = None
    serial: str | None = None
    flags: dict[str, int] = dataclasses.field(default_factory=dict)  # "HiSUP": 1, ...


def _text_field(label: str, text: str) -> str | None:
    m = re.search(rf"^\s*{label}:[ ]?(.*)$", text, re.MULTILINE)
    if not m:
        return None
    value = m.group(1).strip()
    return None if value == "<none>" else value


def parse_sg_inq(text: str) -> InquiryInfo:
    """Standard INQUIRY as `sg_inq DEVICE` prints it."""
    head = text.split("Vendor identification")[0]
    flags = {
        name: _num(value)
        for name, value in re.findall(r"\[?\b([A-Za-z0-9_]+)=(0x[0-9a-fA-F]+|\d+)", head)
    }
    return InquiryInfo(
        peripheral_qualifier=flags.get("PQual"),
        peripheral_type=flags.get("PDT"),
        version=flags.get("version"),
        vendor=_text_field("Vendor identification", text),
        product=_text_field("Product identification", text),
        revision=_text_field("Product revision level", text),
        serial=_text_field("Unit serial number", text),
        flags=flags,
    )


# --- sg_readcap ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Capacity:
    last_lba: int | None = None
    blocks: int | None = None
    block_size: int | None = None
    # READ CAPACITY(16) only (sg_readcap --16, or when the 10-byte CDB overflowed):
    prot_en: int | None = None
    p_type: int | None = None
    p_i_exponent: int | None = None
    lbpme: int | None = None
    lbprz: int | None = None
    lbppbe: int | None = None  # logical blocks per physical block exponent
    lowest_aligned_lba: int | None = None


def parse_sg_readcap(text: str) -> Capacity:
    """`sg_readcap [--16] DEVICE` output; `--brief` output ("0x800 0x200") works too."""
    m = re.search(r"Last LBA=(\d+) \(0x[0-9a-fA-F]+\), Number of logical blocks=(\d+)", text)
    last_lba, blocks = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    block_size = _int(r"Logical block length=(\d+) bytes", text)
    brief = re.fullmatch(r"\s*0x([0-9a-fA-F]+) 0x([0-9a-fA-F]+)\s*", text)
    if brief and m is None:
        blocks, block_size = int(brief.group(1), 16), int(brief.group(2), 16)
        last_lba = blocks - 1
    prot = re.search(r"prot_en=(\d+), p_type=(\d+), p_i_exponent=(\d+)", text)
    lbp = re.search(r"lbpme=(\d+), lbprz=(\d+)", text)
    return Capacity(
        last_lba=last_lba,
        blocks=blocks,
        block_size=block_size,
        prot_en=int(prot.group(1)) if prot else None,
        p_type=int(prot.group(2)) if prot else None,
        p_i_exponent=int(prot.group(3)) if prot else None,
        lbpme=int(lbp.group(1)) if lbp else None,
        lbprz=int(lbp.group(2)) if lbp else None,
        lbppbe=_int(r"Logical blocks per physical block exponent=(\d+)", text),
        lowest_aligned_lba=_int(r"Lowest aligned LBA=(\d+)", text),
    )


# --- sg_luns -------------------------------------------------------------------------


def parse_sg_luns(text: str) -> tuple[bytes, ...]:
    """The 8-byte LUNs `sg_luns DEVICE` lists, one per line in hex."""
    return tuple(
        bytes.fromhex(h) for h in re.findall(r"^\s*([0-9a-fA-F]{16})\b", text, re.MULTILINE)
    )


def lun_to_int(lun: bytes) -> int:
    """The Linux LUN number of an 8-byte SCSI LUN (the kernel's scsilun_to_int): 2-byte
    levels, first level lowest."""
    value = 0
    for i in range(0, 8, 2):
        value |= ((lun[i] << 8) | lun[i + 1]) << (i * 8)
    return value


# --- sg_modes ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModeSenseInfo:
    mode_data_length: int | None = None
    medium_type: int | None = None
    wp: int | None = None
    dpofua: int | None = None
    longlba: int | None = None
    block_descriptor_length: int | None = None
    block_descriptors: bytes = b""
    # Each page as returned, header included; a tuple, not a dict keyed by (page,
    # subpage), so that the result stays JSON-able for the guest agent.
    pages: tuple[bytes, ...] = ()

    def page(self, code: int, subpage: int = 0) -> bytes | None:
        """The page with this PAGE CODE and SUBPAGE CODE, if it was returned."""
        for data in self.pages:
            if page_key(data) == (code, subpage):
                return data
        return None


def page_key(page: bytes) -> tuple[int, int]:
    """(PAGE CODE, SUBPAGE CODE) of a mode page; SPF (byte 0 bit 6) marks subpage format."""
    return page[0] & 0x3F, page[1] if page[0] & 0x40 and len(page) > 1 else 0


def parse_sg_modes(text: str) -> ModeSenseInfo:
    """`sg_modes [-6] [-p PG[,SPG]] DEVICE` output: the header fields it decodes and the
    bytes of each page (from sg_modes' hex dump of it)."""
    header = re.search(
        r"Mode data length=(\d+), medium type=0x([0-9a-fA-F]+), WP=(\d), DpoFua=(\d), "
        r"longlba=(\d)", text)
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(">"):
            sections.append((line, []))
        elif sections:
            sections[-1][1].append(line)
    descriptors = b""
    pages: list[bytes] = []
    for title, body in sections:
        data = parse_hexdump("\n".join(body))
        if title.startswith(">>"):
            if data:
                pages.append(data)
        elif "block descriptor" in title:
            descriptors += data
    return ModeSenseInfo(
        mode_data_length=int(header.group(1)) if header else None,
        medium_type=int(header.group(2), 16) if header else None,
        wp=int(header.group(3)) if header else None,
        dpofua=int(header.group(4)) if header else None,
        longlba=int(header.group(5)) if header else None,
        block_descriptor_length=_int(r"Block descriptor length=(\d+)", text),
        block_descriptors=descriptors,
        pages=tuple(pages),
    )


# --- sg_persist ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrKeys:
    generation: int | None = None
    keys: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrReservation:
    generation: int | None = None
    held: bool = False
    key: int | None = None
    scope: int | None = None
    pr_type: int | None = None


# sg_persist's names for the TYPE field values.
_PR_TYPE_NAMES = {
    "Write Exclusive": PrType.WRITE_EXCLUSIVE,
    "Exclusive Access": PrType.EXCLUSIVE_ACCESS,
    "Write Exclusive, registrants only": PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
    "Exclusive Access, registrants only": PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
    "Write Exclusive, all registrants": PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
    "Exclusive Access, all registrants": PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
}


def parse_sg_persist_keys(text: str) -> PrKeys:
    """`sg_persist -n --read-keys DEVICE` output."""
    generation = _int(r"PR generation=0x([0-9a-fA-F]+)", text, 16)
    after = text.split("PR generation=", 1)[1] if generation is not None else ""
    keys = tuple(int(k, 16) for k in re.findall(r"^\s+0x([0-9a-fA-F]+)\s*$", after, re.MULTILINE))
    return PrKeys(generation=generation, keys=keys)


def _pr_type(name: str) -> int | None:
    if name in _PR_TYPE_NAMES:
        return int(_PR_TYPE_NAMES[name])
    m = re.fullmatch(r"obsolete \[(0x[0-9a-fA-F]+|\d+)\]", name)
    return _num(m.group(1)) if m else None


def parse_sg_persist_reservation(text: str) -> PrReservation:
    """`sg_persist -n --read-reservation DEVICE` output."""
    generation = _int(r"PR generation=0x([0-9a-fA-F]+)", text, 16)
    if "Reservation follows" not in text:
        return PrReservation(generation=generation)
    scope_type = re.search(r"scope: (LU_SCOPE|\d+)\s*,?\s+type: (.+?)\s*$", text, re.MULTILINE)
    scope = pr_type = None
    if scope_type:
        scope = 0 if scope_type.group(1) == "LU_SCOPE" else int(scope_type.group(1))
        pr_type = _pr_type(scope_type.group(2))
    return PrReservation(
        generation=generation,
        held=True,
        key=_int(r"Key=0x([0-9a-fA-F]+)", text, 16),
        scope=scope,
        pr_type=pr_type,
    )


# --- sg_raw --------------------------------------------------------------------------

# sg3_utils' names for SAM status values (sg_get_scsi_status_str).
_STATUS_NAMES = {
    "Good": 0x00,
    "Check Condition": 0x02,
    "Condition Met": 0x04,
    "Busy": 0x08,
    "Intermediate (obsolete)": 0x10,
    "Intermediate-Condition Met (obsolete)": 0x14,
    "Reservation Conflict": 0x18,
    "Command terminated (obsolete)": 0x22,
    "Task Set Full": 0x28,
    "ACA Active": 0x30,
    "Task Aborted": 0x40,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RawOutput:
    status: int | None = None
    sense: bytes = b""  # only printed with -v ("Raw sense data")
    data_len: int | None = None  # data-in bytes sg_raw reported receiving
    host_status: int | None = None  # only printed on a transport error
    driver_status: int | None = None


def parse_status_name(name: str) -> int | None:
    name = name.strip()
    if name in _STATUS_NAMES:
        return _STATUS_NAMES[name]
    m = re.fullmatch(r"Unknown status \[(0x[0-9a-fA-F]+)\]", name)
    return int(m.group(1), 16) if m else None


def _raw_sense(text: str) -> bytes:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "Raw sense data (in hex)" in line:
            block = []
            for follow in lines[i + 1 :]:
                if not follow.strip() or _hex_tokens(follow.replace("  ", " ")) is None:
                    break
                block.append(follow)
            return parse_hexdump("\n".join(block))
    return b""


def parse_sg_raw(stderr: str) -> RawOutput:
    """What `sg_raw -v ...` reports on stderr (status, sense, data length)."""
    status = re.search(r"^SCSI Status: (.*?)\s*$", stderr, re.MULTILINE)
    data_len = _int(r"^(?:Writing|Received) (\d+) bytes of data", stderr)
    if data_len is None and re.search(r"no data received", stderr, re.IGNORECASE):
        data_len = 0
    return RawOutput(
        status=parse_status_name(status.group(1)) if status else None,
        sense=_raw_sense(stderr),
        data_len=data_len,
        host_status=_int(r"Host_status=0x([0-9a-fA-F]+)", stderr, 16),
        driver_status=_int(r"Driver_status=0x([0-9a-fA-F]+)", stderr, 16),
    )


# --- small ones ----------------------------------------------------------------------


def parse_miscompare_offset(stderr: str) -> int | None:
    """sg_compare_and_write: "Miscompare at byte offset: 5 [0x5]" (from INFORMATION)."""
    return _int(r"Miscompare at byte offset: (\d+)", stderr)


def parse_sg_turs(stdout: str) -> tuple[int | None, int | None]:
    """(commands, errors) from "Completed N Test Unit Ready commands with M errors"."""
    m = re.search(r"Completed (\d+) Test Unit Ready commands(?: with (\d+) errors)?", stdout)
    if not m:
        return None, None
    return int(m.group(1)), int(m.group(2) or 0)
