"""LUN geometry given on a command line: sizes with K/M/G/T suffixes, and the block size
and size the kernel accepts, checked on the host before anything boots (the pytest
options and the CLI share them)."""

from __future__ import annotations

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """"64M" -> 67108864; plain numbers are bytes."""
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    number, suffix = (value[:-1], value[-1]) if value[-1:] in "KMGT" else (value, "")
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a size: give bytes or a number with K, M, G or T")
    return int(number) * _SIZE_SUFFIXES[suffix]


def check_geometry(size: int, block_size: int, *, size_option: str = "--size",
                   block_size_option: str = "--block-size") -> None:
    """ValueError, naming the option, unless the kernel can make this LUN."""
    if block_size < 512 or block_size & (block_size - 1):
        raise ValueError(f"{block_size_option} {block_size} is not a power of two >= 512")
    if size < block_size or size % block_size:
        raise ValueError(f"{size_option} {size} is not a positive multiple of the block "
                         f"size {block_size}")
