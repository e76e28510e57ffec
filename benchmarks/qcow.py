"""An empty qcow (version 1) image for tcmu-runner's qcow handler, without qemu-img.

Layout (tcmu-runner qcow.h, struct qcow_header, packed, big-endian): magic 'QFI\\xfb',
version 1, backing_file_offset u64, backing_file_size u32, mtime u32, size u64,
cluster_bits u8, l2_bits u8, padding u16, crypt_method u32, l1_table_offset u64; then
the L1 table (zeroes: nothing allocated). The handler allocates clusters at the end of
the file as they are written. Its size must equal the device's dev_size, in 512-byte
blocks.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">4sIQIIQBBHIQ")
MAGIC = b"QFI\xfb"
CLUSTER_BITS = 16  # 64 KiB clusters
L2_BITS = CLUSTER_BITS - 3  # one cluster of L2 entries
L1_OFFSET = 64  # after the 48-byte header, 8-aligned


def image(size: int) -> bytes:
    """The bytes of an empty qcow image of `size` bytes (a multiple of 512)."""
    if size <= 0 or size % 512:
        raise ValueError(f"qcow image size {size} is not a positive multiple of 512")
    shift = CLUSTER_BITS + L2_BITS
    l1_size = -(-size // (1 << shift))
    header = HEADER.pack(MAGIC, 1, 0, 0, 0, size, CLUSTER_BITS, L2_BITS, 0, 0, L1_OFFSET)
    body = header.ljust(L1_OFFSET, b"\0") + bytes(8 * l1_size)
    cluster = 1 << CLUSTER_BITS
    return body.ljust(-(-len(body) // cluster) * cluster, b"\0")


def write(path: str, size: int) -> None:
    with open(path, "wb") as f:
        f.write(image(size))
