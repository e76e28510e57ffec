"""What a device claims about itself, read once per LUN: the suites are capability
driven, so they check each claim and check that what is not claimed is refused.

One batch of CDBs (one agent round trip) reads standard INQUIRY, the VPD pages the device
lists, READ CAPACITY(16), REPORT SUPPORTED OPERATION CODES and MODE SENSE(10) all pages
(current and changeable). A command the device refuses leaves its part empty; tests that
need the claim then skip and say why.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import TYPE_CHECKING, Any

from tcmu_harness.initiator import cdb
from tcmu_harness.initiator.result import CdbResult, opcode_name

if TYPE_CHECKING:
    from tcmu_harness.lun import Lun

_VPD_ALLOC = 1024
_RSOC_ALLOC = 16384
_MODE_ALLOC = 4096
_B0_LAYOUT = struct.Struct(">BBHIIIIIIIQIIIII")  # bytes 4..63 of the Block Limits page
_RSOC_DESCRIPTOR = struct.Struct(">BxHxBH")  # OPCODE, SERVICE ACTION, flags, CDB LENGTH
_SERVACTV = 0x01
_CTDP = 0x02


@dataclasses.dataclass(frozen=True)
class BlockLimits:
    """Block Limits VPD page (0xB0), SBC-4 6.6.4; atomic fields are 0 on short pages."""

    wsnz: bool
    max_compare_and_write: int
    optimal_granularity: int
    max_transfer: int
    optimal_transfer: int
    max_prefetch: int
    max_unmap_lba_count: int
    max_unmap_descriptors: int
    optimal_unmap_granularity: int
    ugavalid: bool
    unmap_alignment: int
    max_write_same: int
    max_atomic_transfer: int
    atomic_alignment: int
    atomic_granularity: int
    max_atomic_with_boundary: int
    max_atomic_boundary: int
    page_length: int

    @classmethod
    def parse(cls, page: bytes) -> BlockLimits:
        body = page[4:64].ljust(60, b"\0")
        (wsnz, caw, gran, mtl, otl, mpf, mulc, mubdc, oug, ugaw, mwsl,
         mat, aa, atg, matb, mabs) = _B0_LAYOUT.unpack(body)  # fmt: skip
        return cls(
            wsnz=bool(wsnz & 1), max_compare_and_write=caw, optimal_granularity=gran,
            max_transfer=mtl, optimal_transfer=otl, max_prefetch=mpf,
            max_unmap_lba_count=mulc, max_unmap_descriptors=mubdc,
            optimal_unmap_granularity=oug, ugavalid=bool(ugaw >> 31),
            unmap_alignment=ugaw & 0x7FFFFFFF, max_write_same=mwsl,
            max_atomic_transfer=mat, atomic_alignment=aa, atomic_granularity=atg,
            max_atomic_with_boundary=matb, max_atomic_boundary=mabs,
            page_length=int.from_bytes(page[2:4], "big"),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Provisioning:
    """Logical Block Provisioning VPD page (0xB2), SBC-4 6.6.6."""

    threshold_exponent: int
    lbpu: bool
    lbpws: bool
    lbpws10: bool
    lbprz: int  # 3-bit field
    anc_sup: bool
    dp: bool
    provisioning_type: int

    @classmethod
    def parse(cls, page: bytes) -> Provisioning:
        body = page[4:8].ljust(4, b"\0")
        return cls(
            threshold_exponent=body[0], lbpu=bool(body[1] & 0x80), lbpws=bool(body[1] & 0x40),
            lbpws10=bool(body[1] & 0x20), lbprz=(body[1] >> 2) & 0x7,
            anc_sup=bool(body[1] & 0x02), dp=bool(body[1] & 0x01),
            provisioning_type=body[2] & 0x07,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Capacity:
    """READ CAPACITY(16) parameter data, SBC-4 5.21.2."""

    last_lba: int
    block_size: int
    p_type: int
    prot_en: bool
    p_i_exponent: int
    lbppbe: int
    lbpme: bool
    lbprz: bool
    lowest_aligned_lba: int

    @property
    def blocks(self) -> int:
        return self.last_lba + 1

    @classmethod
    def parse(cls, data: bytes) -> Capacity:
        last, size, prot, exps, lbp = struct.unpack_from(">QIBBH", data.ljust(32, b"\0"))
        return cls(
            last_lba=last, block_size=size, p_type=(prot >> 1) & 0x7, prot_en=bool(prot & 1),
            p_i_exponent=exps >> 4, lbppbe=exps & 0xF, lbpme=bool(lbp & 0x8000),
            lbprz=bool(lbp & 0x4000), lowest_aligned_lba=lbp & 0x3FFF,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Capabilities:
    inquiry: bytes
    vpd_pages: tuple[int, ...]  # as page 0x00 lists them (empty if it is refused)
    vpd: dict[int, bytes]  # every listed page that answered GOOD, whole
    capacity: Capacity | None
    rsoc: dict[tuple[int, int | None], int] | None  # (opcode, SA) -> CDB length
    mode_current: dict[int, bytes]  # page code -> page (subpage 0), from MODE SENSE(10)
    mode_changeable: dict[int, bytes]
    device_specific: int  # MODE SENSE(10) header byte 3 (WP, DPOFUA)
    answers: dict[str, CdbResult]  # what each discovery command returned

    @property
    def block_limits(self) -> BlockLimits | None:
        page = self.vpd.get(0xB0)
        return BlockLimits.parse(page) if page is not None else None

    @property
    def provisioning(self) -> Provisioning | None:
        page = self.vpd.get(0xB2)
        return Provisioning.parse(page) if page is not None else None

    @property
    def dpofua(self) -> bool:
        return bool(self.device_specific & 0x10)

    @property
    def thin(self) -> bool:
        """LBPME in READ CAPACITY(16): the device claims logical block provisioning."""
        return self.capacity is not None and self.capacity.lbpme

    def claims(self, opcode: int, service_action: int | None = None) -> bool | None:
        """Whether REPORT SUPPORTED OPERATION CODES lists the command; None when the
        device does not support REPORT SUPPORTED OPERATION CODES at all."""
        if self.rsoc is None:
            return None
        return (opcode, service_action) in self.rsoc

    def require(self, opcode: int, service_action: int | None = None) -> None:
        """Skip the calling test unless the device claims the command."""
        claimed = self.claims(opcode, service_action)
        if not claimed:
            import pytest

            name = command_name(opcode, service_action)
            pytest.skip(
                f"the device does not claim {name} (REPORT SUPPORTED OPERATION CODES "
                + ("is not supported)" if claimed is None else "does not list it)")
            )

    def require_absent(self, opcode: int, service_action: int | None = None) -> None:
        """Skip the calling test when the device claims the command (refusal tests)."""
        import pytest

        claimed = self.claims(opcode, service_action)
        name = command_name(opcode, service_action)
        if claimed is None:
            pytest.skip(f"REPORT SUPPORTED OPERATION CODES is not supported: whether "
                        f"{name} is offered is unknown")
        if claimed:
            pytest.skip(f"the device claims {name}; the refusal check does not apply")

    def require_vpd(self, page: int) -> bytes:
        import pytest

        if page not in self.vpd:
            pytest.skip(f"the device does not list VPD page 0x{page:02X} in page 0x00")
        return self.vpd[page]


def command_name(opcode: int, service_action: int | None = None) -> str:
    return opcode_name(bytes([opcode, service_action or 0]))


def discover(lun: Lun) -> Capabilities:
    """Read every claim in two agent round trips."""
    names = ["inquiry", "vpd_00", "rc16", "rsoc", "mode_current", "mode_changeable"]
    first = lun.cdbs([
        (cdb.inquiry(alloc_len=255), None, 255),
        (cdb.inquiry(evpd=True, page=0, alloc_len=_VPD_ALLOC), None, _VPD_ALLOC),
        (cdb.read_capacity_16(alloc_len=32), None, 32),
        (cdb.report_supported_opcodes(alloc_len=_RSOC_ALLOC), None, _RSOC_ALLOC),
        (cdb.mode_sense_10(0x3F, dbd=True, alloc_len=_MODE_ALLOC), None, _MODE_ALLOC),
        (cdb.mode_sense_10(0x3F, pc=1, dbd=True, alloc_len=_MODE_ALLOC), None, _MODE_ALLOC),
    ])  # fmt: skip
    answers = dict(zip(names, first, strict=True))
    pages: tuple[int, ...] = ()
    if answers["vpd_00"].good and len(answers["vpd_00"].data) >= 4:
        data = answers["vpd_00"].data
        pages = tuple(data[4 : 4 + int.from_bytes(data[2:4], "big")])
    listed = [p for p in pages if p != 0x00]
    vpd: dict[int, bytes] = {0x00: answers["vpd_00"].data} if pages else {}
    if listed:
        results = lun.cdbs([(cdb.inquiry(evpd=True, page=p, alloc_len=_VPD_ALLOC), None,
                             _VPD_ALLOC) for p in listed])  # fmt: skip
        for page, result in zip(listed, results, strict=True):
            answers[f"vpd_{page:02x}"] = result
            if result.good:
                vpd[page] = result.data
    rc16 = answers["rc16"]
    mode = answers["mode_current"]
    return Capabilities(
        inquiry=answers["inquiry"].data if answers["inquiry"].good else b"",
        vpd_pages=pages,
        vpd=vpd,
        capacity=Capacity.parse(rc16.data) if rc16.good and len(rc16.data) >= 12 else None,
        rsoc=_parse_rsoc(answers["rsoc"]),
        mode_current=_mode_pages(mode),
        mode_changeable=_mode_pages(answers["mode_changeable"]),
        device_specific=mode.data[3] if mode.good and len(mode.data) >= 8 else 0,
        answers=answers,
    )


def _parse_rsoc(result: CdbResult) -> dict[tuple[int, int | None], int] | None:
    if not result.good or len(result.data) < 4:
        return None
    data = result.data
    end = min(len(data), 4 + int.from_bytes(data[:4], "big"))
    found: dict[tuple[int, int | None], int] = {}
    pos = 4
    while pos + _RSOC_DESCRIPTOR.size <= end:
        opcode, sa, flags, cdb_len = _RSOC_DESCRIPTOR.unpack_from(data, pos)
        found[(opcode, sa if flags & _SERVACTV else None)] = cdb_len
        pos += _RSOC_DESCRIPTOR.size + (12 if flags & _CTDP else 0)
    return found


def _mode_pages(result: CdbResult) -> dict[int, bytes]:
    """Pages of a MODE SENSE(10) answer (header 8 bytes, block descriptors skipped)."""
    if not result.good or len(result.data) < 8:
        return {}
    data = result.data
    end = min(len(data), 2 + int.from_bytes(data[0:2], "big"))
    pos = 8 + int.from_bytes(data[6:8], "big")
    pages: dict[int, bytes] = {}
    while pos + 2 <= end:
        spf = bool(data[pos] & 0x40)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big") + 4 if spf else data[pos + 1] + 2
        if not spf:
            pages[data[pos] & 0x3F] = data[pos : pos + length]
        pos += length
    return pages


def as_dict(caps: Capabilities) -> dict[str, Any]:
    """A summary for reports: what the device claims, readable at a glance."""
    return {
        "vpd_pages": [f"0x{p:02X}" for p in caps.vpd_pages],
        "commands": sorted(command_name(op, sa) for op, sa in (caps.rsoc or {})),
        "capacity": dataclasses.asdict(caps.capacity) if caps.capacity else None,
        "dpofua": caps.dpofua,
        "mode_pages": [f"0x{p:02X}" for p in sorted(caps.mode_current)],
    }
