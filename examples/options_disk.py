"""Declared, typed options: a RAM disk whose never-written blocks read as `fill`, and
that refuses writes when `read_only` is set.

    tcmu-harness handler-info examples/options_disk.py:OptionsDisk
    pytest suites --tcmu-handler "examples/options_disk.py:OptionsDisk fill=0"

Options arrive from the spec as strings ("fill=255 read_only=yes"); the base checks
them against `options` (on the host, before any VM boots), converts them by type and
sets them as attributes: self.fill is an int, self.read_only a bool.
"""

from tcmu.block import BlockHandler
from tcmu.handler import DeviceInfo, ScatterBuffer
from tcmu.options import Option
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, SenseKey


class OptionsDisk(BlockHandler):
    """Sparse blocks in a dict; unwritten ones read as `fill`."""

    options = (
        Option("fill", int, 0, "the byte never-written blocks read as", min=0, max=255),
        Option("read_only", bool, False, "refuse writes (DATA PROTECT, WRITE PROTECTED)"),
    )
    fill: int
    read_only: bool

    def __init__(self, device: DeviceInfo, **options: object) -> None:
        super().__init__(device, **options)
        self.blocks: dict[int, bytes] = {}
        self.unwritten = bytes([self.fill]) * self.block_size

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        first, count = offset // self.block_size, len(buf) // self.block_size
        get = self.blocks.get
        buf.write(b"".join(get(lba, self.unwritten) for lba in range(first, first + count)))

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        if self.read_only:
            raise SenseError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
        data, bs = buf.read(), self.block_size
        for i in range(0, len(data), bs):
            self.blocks[(offset + i) // bs] = data[i : i + bs]
