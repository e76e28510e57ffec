"""A complete TCMU block device in 20 lines: BlockHandler does the SCSI, this stores blocks
(nothing is volatile, so there is no flush()).

    pytest suites --tcmu-handler examples/dict_disk.py:DictDisk
"""

from tcmu.block import BlockHandler
from tcmu.handler import DeviceInfo, ScatterBuffer


class DictDisk(BlockHandler):
    """Sparse: only the blocks ever written take memory; the rest read as zeroes."""

    def __init__(self, device: DeviceInfo, **options: object) -> None:
        super().__init__(device, **options)
        self.bs = device.block_size
        self.blocks: dict[int, bytes] = {}

    def read(self, offset: int, buf: ScatterBuffer) -> None:
        first, count = offset // self.bs, len(buf) // self.bs
        zero = bytes(self.bs)
        buf.write(b"".join(self.blocks.get(lba, zero) for lba in range(first, first + count)))

    def write(self, offset: int, buf: ScatterBuffer) -> None:
        data = buf.read()
        for i in range(0, len(data), self.bs):
            self.blocks[(offset + i) // self.bs] = data[i : i + self.bs]
