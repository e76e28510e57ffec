"""Hypothesis strategies for the fuzz suite: CDBs of every opcode, mutations of valid
commands, and data transfers that disagree with the CDB.

CDB length follows the opcode's group code (SPC-4 4.2.5.1): group 0 is 6 bytes, 1 and 2
are 10, 4 is 16, 5 is 12; 7Fh is a variable-length CDB (8 + ADDITIONAL CDB LENGTH, 32
for the SBC commands); the reserved group 3 and the vendor groups 6 and 7 have no
length, so any of 6/10/12/16 is drawn. Sometimes the length is drawn regardless of the
group, so a CDB shorter or longer than its opcode's reaches the handler too.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from tcmu_harness.initiator import cdb as build
from tcmu_harness.scsi.constants import Opcode
from tcmu_harness.suites.fuzz.checks import FuzzCase

MAX_TRANSFER = 16 << 10  # bytes of data-in or data-out a fuzzed command asks for, at most
_GROUP_LENGTHS = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}
_ANY_LENGTH = (6, 10, 12, 16)
_VARIABLE_LENGTH = 0x7F
_MODE_CACHING = bytes([0x08, 0x12, 0x04]) + bytes(17)  # caching page, WCE=1
_MODE_CONTROL = bytes([0x0A, 0x0A, 0x04]) + bytes(9)  # control page, D_SENSE=1

# current(lba, blocks) -> the data the medium holds there before the example
Current = Callable[[int, int], bytes]


def _cdb_length(opcode: int) -> st.SearchStrategy[int]:
    if opcode == _VARIABLE_LENGTH:
        return st.sampled_from((32, 32, 32, 12, 16, 40))
    group = opcode >> 5
    if group in _GROUP_LENGTHS:
        return st.one_of(st.just(_GROUP_LENGTHS[group]), st.just(_GROUP_LENGTHS[group]),
                         st.just(_GROUP_LENGTHS[group]), st.sampled_from(_ANY_LENGTH))
    return st.sampled_from(_ANY_LENGTH)


def _cdb_byte() -> st.SearchStrategy[int]:
    # zeroes make a plausible CDB of most opcodes (small lengths, no flags); all-ones and
    # single bits reach the limits and the reserved bits
    return st.one_of(st.just(0), st.integers(0, 255), st.just(0xFF),
                     st.sampled_from([1 << b for b in range(8)]))


@st.composite
def transfer(draw: st.DrawFn, block_size: int) -> tuple[bytes | None, int]:
    """(data-out, data-in length): none, data-in of some length, or data-out of some
    length (whole blocks or not)."""
    kind = draw(st.sampled_from(("none", "in", "in", "out", "out")))
    size = draw(st.one_of(st.integers(0, 64), st.sampled_from((block_size, 2 * block_size)),
                          st.integers(0, MAX_TRANSFER)))
    if kind == "in":
        return None, size
    if kind == "out":
        return draw(st.binary(min_size=size, max_size=size)), 0
    return None, 0


@st.composite
def any_cdb(draw: st.DrawFn, block_size: int) -> FuzzCase:
    """A CDB of any opcode 00h-FFh, its other bytes random, with a random transfer."""
    opcode = draw(st.integers(0, 255))
    length = draw(_cdb_length(opcode))
    body = bytes(draw(_cdb_byte()) for _ in range(length - 1))
    if opcode == _VARIABLE_LENGTH and length >= 8:  # a consistent ADDITIONAL CDB LENGTH
        body = body[:6] + bytes([length - 8]) + body[7:]
    data_out, data_in_len = draw(transfer(block_size))
    return FuzzCase(bytes([opcode]) + body, data_out, data_in_len,
                    f"random CDB of opcode {opcode:02X}h")


# --- valid commands ----------------------------------------------------------------------


@st.composite
def _extent(draw: st.DrawFn, blocks: int, max_len: int = 16) -> tuple[int, int]:
    n = draw(st.integers(1, max_len))
    return draw(st.integers(0, blocks - n)), n


def _valid_commands(blocks: int, bs: int, current: Current
                    ) -> list[Callable[[st.DrawFn], FuzzCase]]:
    """Builders of commands that are valid on a `blocks`-block medium of `bs`-byte blocks
    (in range, consistent data lengths)."""

    def data(draw: st.DrawFn, n: int) -> bytes:
        return draw(st.binary(min_size=n * bs, max_size=n * bs))

    def read(draw: st.DrawFn) -> FuzzCase:
        lba, n = draw(_extent(blocks))
        make = draw(st.sampled_from((build.read_10, build.read_12, build.read_16)))
        return FuzzCase(make(lba, n), None, n * bs, "READ")

    def read_6(draw: st.DrawFn) -> FuzzCase:
        lba, n = draw(_extent(blocks))
        return FuzzCase(build.read_6(lba, n), None, n * bs, "READ(6)")

    def write(draw: st.DrawFn) -> FuzzCase:
        lba, n = draw(_extent(blocks))
        make = draw(st.sampled_from((build.write_6, build.write_10, build.write_12,
                                     build.write_16, build.write_and_verify_16,
                                     build.orwrite_16)))
        return FuzzCase(make(lba, n), data(draw, n), 0, "WRITE")

    def write_same(draw: st.DrawFn) -> FuzzCase:
        lba, n = draw(_extent(blocks, 32))
        make = draw(st.sampled_from((build.write_same_10, build.write_same_16)))
        return FuzzCase(make(lba, n, unmap=draw(st.booleans())), data(draw, 1), 0,
                        "WRITE SAME")

    def unmap(draw: st.DrawFn) -> FuzzCase:
        params = build.unmap_parameter_list(draw(st.lists(_extent(blocks), min_size=1,
                                                          max_size=3)))
        return FuzzCase(build.unmap(len(params)), params, 0, "UNMAP")

    def compare_and_write(draw: st.DrawFn) -> FuzzCase:
        lba = draw(st.integers(0, blocks - 1))
        compare = current(lba, 1) if draw(st.booleans()) else data(draw, 1)
        return FuzzCase(build.compare_and_write(lba, 1), compare + data(draw, 1), 0,
                        "COMPARE AND WRITE")

    def mode_select(draw: st.DrawFn) -> FuzzCase:
        page = draw(st.sampled_from((_MODE_CACHING, _MODE_CONTROL)))
        if draw(st.booleans()):
            params = bytes(4) + page
            return FuzzCase(build.mode_select_6(len(params)), params, 0, "MODE SELECT(6)")
        params = bytes(8) + page
        return FuzzCase(build.mode_select_10(len(params)), params, 0, "MODE SELECT(10)")

    def verify(draw: st.DrawFn) -> FuzzCase:
        lba, n = draw(_extent(blocks))
        if draw(st.booleans()):
            return FuzzCase(build.verify_16(lba, n, bytchk=1), current(lba, n), 0, "VERIFY")
        return FuzzCase(build.verify_10(lba, n), None, 0, "VERIFY")

    def no_data(draw: st.DrawFn) -> FuzzCase:
        lba, n = draw(_extent(blocks))
        cdb = draw(st.sampled_from((
            build.synchronize_cache_10(lba, n), build.synchronize_cache_16(lba, n),
            build.pre_fetch_10(lba, n), build.pre_fetch_16(lba, n), build.test_unit_ready(),
            build.start_stop_unit(start=True), build.format_unit(),
        )))  # fmt: skip
        return FuzzCase(cdb, None, 0, "no-data command")

    def data_in(draw: st.DrawFn) -> FuzzCase:
        cdb = draw(st.sampled_from((
            build.inquiry(), build.inquiry(evpd=True, page=0xB0), build.request_sense(),
            build.mode_sense_10(0x3F), build.read_capacity_16(), build.read_capacity_10(),
            build.report_supported_opcodes(), build.get_lba_status(0),
        )))  # fmt: skip
        return FuzzCase(cdb, None, 512, "data-in command")

    # the commands that write come twice: the medium check is what the fuzz adds most
    return [read, read_6, write, write, write_same, write_same, unmap, unmap,
            compare_and_write, mode_select, verify, no_data, data_in]


def _name(case: FuzzCase) -> str:
    try:
        return f"{Opcode(case.cdb[0]).name.replace('_', ' ')}"
    except ValueError:
        return case.origin


@st.composite
def valid_command(draw: st.DrawFn, blocks: int, bs: int, current: Current) -> FuzzCase:
    maker = draw(st.sampled_from(_valid_commands(blocks, bs, current)))
    return maker(draw)


@st.composite
def mutated_cdb(draw: st.DrawFn, blocks: int, bs: int, current: Current) -> FuzzCase:
    """A valid command with 0-3 bits of its CDB flipped (0: the command as is), and
    sometimes 1-2 bits of its data-out."""
    case = draw(valid_command(blocks, bs, current))
    cdb = bytearray(case.cdb)
    bits = draw(st.lists(st.integers(0, len(cdb) * 8 - 1), max_size=3, unique=True))
    for bit in bits:
        cdb[bit // 8] ^= 0x80 >> (bit % 8)
    data_out = case.data_out
    data_bits: list[int] = []
    if data_out and draw(st.integers(0, 3)) == 0:
        mutable = bytearray(data_out)
        data_bits = draw(st.lists(st.integers(0, len(mutable) * 8 - 1), min_size=1,
                                  max_size=2, unique=True))
        for bit in data_bits:
            mutable[bit // 8] ^= 0x80 >> (bit % 8)
        data_out = bytes(mutable)
    what = f"{_name(case)} with CDB bits {bits} flipped (bit 0 = byte 0's MSB)"
    if data_bits:
        what += f" and data-out bits {data_bits}"
    return FuzzCase(bytes(cdb), data_out, case.data_in_len, what)


@st.composite
def disagreeing_transfer(draw: st.DrawFn, blocks: int, bs: int, current: Current
                         ) -> FuzzCase:
    """A valid command whose data transfer disagrees with its CDB: data-out cut short,
    extended, off a block boundary or missing; data-in too short or too long; data-out
    sent to a data-in command and data-in asked of a data-out one."""
    case = draw(valid_command(blocks, bs, current))
    expected = len(case.data_out) if case.data_out is not None else case.data_in_len
    size = draw(st.one_of(
        st.integers(0, max(expected - 1, 0)), st.integers(expected + 1, expected + 2 * bs),
        st.sampled_from((0, 1, bs - 1, bs + 1, expected // 2, expected * 2)),
    ).filter(lambda n: n != expected and 0 <= n <= MAX_TRANSFER))  # fmt: skip
    swap = draw(st.integers(0, 3)) == 0
    data_out = case.data_out is not None
    if swap:
        data_out = not data_out
    if data_out:
        payload = (case.data_out or b"")[:size]
        payload += draw(st.binary(min_size=size - len(payload), max_size=size - len(payload)))
        return FuzzCase(case.cdb, payload, 0,
                        f"{_name(case)} with {size} bytes of data-out (expects {expected}"
                        f"{' data-in' if swap else ''})")
    return FuzzCase(case.cdb, None, size,
                    f"{_name(case)} asking {size} bytes of data-in (expects {expected}"
                    f"{' data-out' if swap else ''})")
