"""Data integrity through the guest's block device (/dev/sdX): what the Linux sd driver
makes of the device's claims, end to end.

sd turns reads and writes into READ/WRITE(10/16) split per the Block Limits VPD page,
discards into UNMAP or WRITE SAME with UNMAP (Logical Block Provisioning VPD page),
BLKZEROOUT into WRITE SAME, and fsync into SYNCHRONIZE CACHE only while the Caching mode
page says WCE=1 (with WCE=0 the block layer completes flushes without the device).

Covered: blocks written through /dev/sdX (dd, O_DIRECT) read back through SG_IO and the
reverse, neighbours untouched; a multi-megabyte write that sd splits (every command
within MAXIMUM TRANSFER LENGTH, together exactly the range) read back intact; a
4096-byte-block LUN both ways; blkdiscard, BLKZEROOUT and a punched hole reading zeroes
(with LBPRZ) through the commands sd chose, over a range that is not page aligned;
cache_type "write back" / "write through" reaching the handler as MODE SELECT of WCE;
fsync then sending SYNCHRONIZE CACHE.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcmu_harness.blocks import assert_blocks_equal, pattern
from tcmu_harness.caps import Capabilities, discover
from tcmu_harness.initiator import cdb
from tcmu_harness.lun import HandlerCommand, Lun
from tcmu_harness.scsi.constants import Opcode, Status

pytestmark = pytest.mark.vm

_KIB = 1 << 10
_MIB = 1 << 20
_SG_IO_MAX = _MIB  # bytes SG_IO carries per command here
_PAGE_CACHING = 0x08
_WCE = 0x04  # Caching mode page byte 2
_UNMAP_BIT = 0x08  # WRITE SAME byte 1
_WRITES = {Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16}
_WRITE_SAMES = {Opcode.WRITE_SAME_10, Opcode.WRITE_SAME_16}
_SYNCS = {Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16}
_MODE_SELECTS = {Opcode.MODE_SELECT_6, Opcode.MODE_SELECT_10}


def _area(lun: Lun, number: int) -> int:
    """First LBA of the shared LUN's tenth number `number`: each test writes its own."""
    return number * (lun.blocks // 10)


# --- guest side -------------------------------------------------------------------------------


def _dd_write(lun: Lun, lba: int, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` at `lba` through /dev/sdX with one O_DIRECT write (dd)."""
    path = f"/tmp/{lun.name}-dd.bin"
    lun.vm.write_file(path, data)
    conv = "notrunc,fsync" if fsync else "notrunc"
    lun.vm.run(["dd", f"if={path}", f"of={lun.sd}", f"bs={len(data)}", "count=1",
                f"seek={lba * lun.block_size}", "oflag=direct,seek_bytes", f"conv={conv}",
                "status=none"], check=True)  # fmt: skip


def _dd_read(lun: Lun, lba: int, blocks: int) -> bytes:
    """Read blocks through /dev/sdX with O_DIRECT (no page cache in the way)."""
    size = blocks * lun.block_size
    run = lun.vm.run(["dd", f"if={lun.sd}", f"bs={size}", "count=1",
                      f"skip={lba * lun.block_size}", "iflag=direct,skip_bytes,fullblock",
                      "status=none"], check=True)  # fmt: skip
    return run.stdout


def _queue_limit(lun: Lun, name: str) -> int:
    disk = lun.sd.rsplit("/", 1)[1]
    return int(lun.vm.read_file(f"/sys/block/{disk}/queue/{name}").decode())


def _scsi_disk(lun: Lun, name: str) -> str:
    return lun.vm.read_file(f"/sys/class/scsi_disk/{lun.info['address']}/{name}").decode().strip()


def _set_cache_type(lun: Lun, value: str) -> None:
    """What an administrator does: sd sends MODE SENSE, then MODE SELECT of the Caching
    page with WCE changed, then re-reads the page."""
    path = f"/sys/class/scsi_disk/{lun.info['address']}/cache_type"
    try:
        lun.vm.write_file(path, value.encode())
    except Exception as exc:  # sd answers EINVAL when MODE SENSE or MODE SELECT fails
        pytest.fail(f"writing {value!r} to {path} failed (sd's MODE SENSE / MODE SELECT of "
                    f"the Caching page was refused?): {exc}")


# --- SG_IO side -------------------------------------------------------------------------------


def _sg_write(lun: Lun, lba: int, data: bytes) -> None:
    """WRITE(16) through SG_IO, in commands of at most 1 MiB (one batch)."""
    bs = lun.block_size
    step = _SG_IO_MAX
    results = lun.cdbs([(cdb.write_16(lba + start // bs, min(step, len(data) - start) // bs),
                         data[start : start + step], 0)
                        for start in range(0, len(data), step)])  # fmt: skip
    for result in results:
        result.expect_good()


def _sg_read(lun: Lun, lba: int, blocks: int, max_blocks: int = 0) -> bytes:
    """READ(16) through SG_IO, in commands of at most 1 MiB (and max_blocks when given)."""
    bs = lun.block_size
    step = _SG_IO_MAX // bs
    if max_blocks:
        step = min(step, max_blocks)
    results = lun.cdbs([(cdb.read_16(lba + first, min(step, blocks - first)), None,
                         min(step, blocks - first) * bs)
                        for first in range(0, blocks, step)])  # fmt: skip
    return b"".join(r.expect_good().data for r in results)


def _commands_since(lun: Lun, mark: int) -> list[HandlerCommand]:
    return lun.handler_commands()[mark:]


def _extent(command: HandlerCommand) -> tuple[int, int]:
    """(LBA, blocks) of a 10- or 16-byte READ/WRITE/WRITE SAME CDB."""
    c = command.cdb
    if len(c) == 10:
        return int.from_bytes(c[2:6], "big"), int.from_bytes(c[7:9], "big")
    return int.from_bytes(c[2:10], "big"), int.from_bytes(c[10:14], "big")


def _wce(lun: Lun) -> bool:
    data = lun.cdb(cdb.mode_sense_10(_PAGE_CACHING, dbd=True, alloc_len=255),
                   data_in_len=255).expect_good().data
    start = 8 + int.from_bytes(data[6:8], "big")
    assert data[start] & 0x3F == _PAGE_CACHING, f"MODE SENSE(10) page 0x08: {data.hex(' ')}"
    return bool(data[start + 2] & _WCE)


def _require_wce_changeable(caps: Capabilities) -> None:
    if _PAGE_CACHING not in caps.mode_current:
        pytest.skip("the device has no Caching mode page: sd assumes write through")
    changeable = caps.mode_changeable.get(_PAGE_CACHING, b"")
    if len(changeable) < 3 or not changeable[2] & _WCE:
        pytest.skip("WCE (Caching mode page byte 2) is not changeable")


def _lay_down(lun: Lun, lba: int, blocks: int, seed: int) -> bytes:
    """A pattern over [lba-1, lba+blocks+1) through SG_IO; returns it."""
    data = pattern(lba - 1, blocks + 2, lun.block_size, seed=seed)
    _sg_write(lun, lba - 1, data)
    return data


def _expect_zeroed_between_neighbours(lun: Lun, lba: int, blocks: int, before: bytes,
                                      what: str) -> None:
    __tracebackhide__ = True
    bs = lun.block_size
    after = _sg_read(lun, lba - 1, blocks + 2)
    expected = before[:bs] + bytes(blocks * bs) + before[-bs:]
    assert_blocks_equal(after, expected, bs, lba - 1, what=what)


# --- sd writes, SG_IO reads, and back ---------------------------------------------------------


def test_data_written_through_the_block_device_reads_back_through_sg_io(
    shared_lun: Lun
) -> None:
    """SBC-3 5.x (WRITE, READ) / 4.4: blocks written through /dev/sdX (one 64-block
    O_DIRECT write) are stored at their LBAs and read back by READ(16); the neighbours
    keep their data."""
    lun, bs = shared_lun, shared_lun.block_size
    lba, blocks = _area(lun, 1) + 3, 64
    before = _lay_down(lun, lba, blocks, seed=1)
    data = pattern(lba, blocks, bs, seed=2)
    _dd_write(lun, lba, data)
    expected = before[:bs] + data + before[-bs:]
    assert_blocks_equal(_sg_read(lun, lba - 1, blocks + 2), expected, bs, lba - 1,
                        what="READ(16) of what /dev/sdX wrote, and its neighbours")


def test_data_written_through_sg_io_reads_back_through_the_block_device(
    shared_lun: Lun
) -> None:
    """SBC-3 5.x (WRITE, READ): blocks written by WRITE(16) through SG_IO read back
    through /dev/sdX (O_DIRECT: from the device, not the page cache)."""
    lun, bs = shared_lun, shared_lun.block_size
    lba, blocks = _area(lun, 2) + 5, 64
    data = pattern(lba, blocks, bs, seed=3)
    _sg_write(lun, lba, data)
    assert_blocks_equal(_dd_read(lun, lba, blocks), data, bs, lba,
                        what="/dev/sdX read of what WRITE(16) wrote")


def test_a_multi_megabyte_write_through_the_block_device_reads_back_intact(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 6.5.3 / 5.x (WRITE): sd splits a 4 MiB O_DIRECT write into WRITE commands of
    at most MAXIMUM TRANSFER LENGTH blocks that together cover exactly the range; the
    handler stores every one at its LBA (READ(16) returns the whole pattern)."""
    lun, bs = shared_lun, shared_lun.block_size
    blocks = 4 * _MIB // bs
    lba = _area(lun, 3) + 1
    limits = caps.block_limits
    max_transfer = limits.max_transfer if limits is not None else 0
    data = pattern(lba, blocks, bs, seed=4)
    mark = len(lun.handler_commands())
    _dd_write(lun, lba, data)
    writes = sorted(_extent(c) for c in _commands_since(lun, mark) if c.opcode in _WRITES)
    assert writes, "no WRITE reached the handler"
    covered = lba
    for start, count in writes:
        assert start == covered, f"the WRITEs sd sent do not tile the range: {writes}"
        if max_transfer:
            assert count <= max_transfer, (
                f"WRITE of {count} blocks exceeds MAXIMUM TRANSFER LENGTH {max_transfer}")
        covered += count
    assert covered == lba + blocks, f"the WRITEs sd sent cover up to {covered}: {writes}"
    assert_blocks_equal(_sg_read(lun, lba, blocks, max_transfer), data, bs, lba,
                        what="READ(16) of a 4 MiB write through /dev/sdX")


def test_4096_byte_blocks_carry_data_both_ways_through_the_block_device(
    make_lun: Callable[..., Lun]
) -> None:
    """SBC-3 4.4 / 5.x (READ, WRITE) with 4096-byte logical blocks: what /dev/sdX writes
    READ(16) returns (neighbours untouched), and what WRITE(16) stores /dev/sdX reads."""
    lun = make_lun(block_size=4096, size=16 * _MIB)
    bs = lun.block_size
    lba, blocks = 17, 16
    before = _lay_down(lun, lba, blocks, seed=5)
    data = pattern(lba, blocks, bs, seed=6)
    _dd_write(lun, lba, data)
    assert_blocks_equal(_sg_read(lun, lba - 1, blocks + 2), before[:bs] + data + before[-bs:],
                        bs, lba - 1, what="READ(16) of what /dev/sdX wrote (4096-byte blocks)")
    lba = 201
    data = pattern(lba, blocks, bs, seed=7)
    _sg_write(lun, lba, data)
    assert_blocks_equal(_dd_read(lun, lba, blocks), data, bs, lba,
                        what="/dev/sdX read of what WRITE(16) wrote (4096-byte blocks)")


# --- discard and zeroing ----------------------------------------------------------------------


def _require_lbprz(caps: Capabilities) -> None:
    if caps.capacity is None or not caps.capacity.lbpme:
        pytest.skip("READ CAPACITY(16) says LBPME=0: no logical block provisioning")
    if not caps.capacity.lbprz:
        pytest.skip("LBPRZ=0: deallocated blocks need not read zeroes")


def test_blkdiscard_deallocates_and_the_range_reads_zeroes(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 4.7.3.4 / 5.28 (UNMAP), 5.45 (WRITE SAME UNMAP=1): blkdiscard reaches the
    handler as the deallocation command sd chose from the provisioning VPD pages; with
    LBPRZ=1 the range (not page aligned) reads zeroes and its neighbours keep their data."""
    _require_lbprz(caps)
    lun, bs = shared_lun, shared_lun.block_size
    if not _queue_limit(lun, "discard_max_bytes"):
        pytest.skip(f"sd enabled no discard (provisioning_mode "
                    f"{_scsi_disk(lun, 'provisioning_mode')})")
    lba, blocks = _area(lun, 5) + 3, 509
    before = _lay_down(lun, lba, blocks, seed=8)
    mark = len(lun.handler_commands())
    lun.vm.run(["blkdiscard", "-o", str(lba * bs), "-l", str(blocks * bs), lun.sd], check=True)
    seen = [c for c in _commands_since(lun, mark) if c.opcode == Opcode.UNMAP
            or (c.opcode in _WRITE_SAMES and c.cdb[1] & _UNMAP_BIT)]
    assert seen, "blkdiscard sent neither UNMAP nor WRITE SAME with UNMAP to the handler"
    _expect_zeroed_between_neighbours(lun, lba, blocks, before, "after blkdiscard")


def test_blkzeroout_makes_the_range_read_zeroes(shared_lun: Lun) -> None:
    """SBC-3 5.44/5.45 (WRITE SAME): BLKZEROOUT (blkdiscard -z) reaches the handler as
    WRITE SAME when sd offers write-zeroes (else as WRITEs of zeroes); the range (not page
    aligned) reads zeroes and its neighbours keep their data."""
    lun, bs = shared_lun, shared_lun.block_size
    lba, blocks = _area(lun, 6) + 5, 509
    before = _lay_down(lun, lba, blocks, seed=9)
    offload = _queue_limit(lun, "write_zeroes_max_bytes") > 0
    mark = len(lun.handler_commands())
    lun.vm.run(["blkdiscard", "-z", "-o", str(lba * bs), "-l", str(blocks * bs), lun.sd],
               check=True)
    opcodes = {c.opcode for c in _commands_since(lun, mark)}
    if offload:
        assert opcodes & _WRITE_SAMES, (
            f"sd offers write-zeroes (zeroing_mode {_scsi_disk(lun, 'zeroing_mode')}) but "
            f"no WRITE SAME reached the handler: {sorted(map(hex, opcodes))}")
    _expect_zeroed_between_neighbours(lun, lba, blocks, before, "after BLKZEROOUT")


def test_punching_a_hole_through_write_same_with_unmap_makes_the_range_read_zeroes(
    shared_lun: Lun, caps: Capabilities
) -> None:
    """SBC-3 5.45, 4.7.3.4: fallocate --punch-hole on /dev/sdX becomes WRITE SAME with
    UNMAP=1 of a zero block when LBPRZ=1 and LBPWS/LBPWS10 are claimed (sd's zeroing_mode
    writesame_*_unmap); the range (not page aligned) reads zeroes, its neighbours keep
    their data."""
    _require_lbprz(caps)
    lun, bs = shared_lun, shared_lun.block_size
    mode = _scsi_disk(lun, "zeroing_mode")
    if not mode.endswith("_unmap") or not _queue_limit(lun, "write_zeroes_max_bytes"):
        pytest.skip(f"sd does not zero through WRITE SAME with UNMAP (zeroing_mode {mode})")
    lba, blocks = _area(lun, 7) + 7, 509
    before = _lay_down(lun, lba, blocks, seed=10)
    mark = len(lun.handler_commands())
    lun.vm.run(["fallocate", "--punch-hole", "-o", str(lba * bs), "-l", str(blocks * bs),
                lun.sd], check=True)  # fmt: skip
    seen = [c for c in _commands_since(lun, mark)
            if c.opcode in _WRITE_SAMES and c.cdb[1] & _UNMAP_BIT]
    assert seen, "the punched hole reached the handler without WRITE SAME UNMAP=1"
    _expect_zeroed_between_neighbours(lun, lba, blocks, before, "after the punched hole")


# --- write cache and flushes ------------------------------------------------------------------


def test_cache_type_write_back_and_write_through_reach_the_handler_as_mode_select(
    lun: Lun
) -> None:
    """SPC-4 6.11 / SBC-3 6.4.5 (Caching mode page): writing "write back" to sd's
    cache_type makes sd MODE SELECT the Caching page with WCE=1, and the handler then
    reports WCE=1 (sd re-reads it: cache_type says "write back"); "write through" sets
    WCE=0 again."""
    _require_wce_changeable(discover(lun))
    for value, wce in (("write back", True), ("write through", False)):
        mark = len(lun.handler_commands())
        _set_cache_type(lun, value)
        selects = [c for c in _commands_since(lun, mark) if c.opcode in _MODE_SELECTS]
        assert selects, f"{value!r}: no MODE SELECT reached the handler"
        assert _wce(lun) == wce, f"{value!r}: MODE SENSE reports WCE={int(not wce)} afterwards"
        assert _scsi_disk(lun, "cache_type") == value, (
            f"sd re-read the Caching page and says {_scsi_disk(lun, 'cache_type')!r}")


def test_fsync_sends_synchronize_cache_once_the_write_cache_is_on(lun: Lun) -> None:
    """SBC-3 5.22/5.23 (SYNCHRONIZE CACHE), 6.4.5: with WCE=1 (set through sd's
    cache_type) an fsync of /dev/sdX after a write reaches the handler as SYNCHRONIZE
    CACHE, which completes GOOD; the data reads back."""
    _require_wce_changeable(discover(lun))
    _set_cache_type(lun, "write back")
    assert _scsi_disk(lun, "cache_type") == "write back", "sd did not switch to write back"
    bs = lun.block_size
    lba, blocks = 300, 16
    data = pattern(lba, blocks, bs, seed=11)
    mark = len(lun.handler_commands())
    _dd_write(lun, lba, data, fsync=True)
    syncs = [c for c in _commands_since(lun, mark) if c.opcode in _SYNCS]
    assert syncs, "fsync with the write cache on sent no SYNCHRONIZE CACHE to the handler"
    assert all(c.status == Status.GOOD for c in syncs), f"SYNCHRONIZE CACHE not GOOD: {syncs}"
    assert_blocks_equal(_sg_read(lun, lba, blocks), data, bs, lba, what="READ(16) after fsync")
