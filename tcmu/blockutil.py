"""Helpers shared by BlockHandler's modules (tcmu.block, tcmu.commands, tcmu.inquiry,
tcmu.modepages, tcmu.sbc, tcmu.sbc_extra):
ScatterBuffer slicing and comparison, data-in truncation, the data-buffer length rules,
storage errors as MEDIUM ERROR sense, and finding the extension points a class declares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from tcmu.handler import Command, Result, ScatterBuffer
from tcmu.sense import SenseError
from tcmu_harness.scsi.constants import Asc, SenseKey

_COMPARE_CHUNK = 4096


def slice_buffer(buf: ScatterBuffer, start: int, length: int) -> ScatterBuffer:
    """Bytes [start, start+length) of buf, as views into the same memory (no copy)."""
    if start == 0 and length >= len(buf):
        return buf
    views: list[memoryview] = []
    pos = 0
    end = start + length
    for view in buf.views:
        vend = pos + len(view)
        if vend > start and pos < end:
            views.append(view[max(start - pos, 0) : min(end, vend) - pos])
        pos = vend
        if pos >= end:
            break
    return ScatterBuffer(views)


def scratch(length: int) -> tuple[bytearray, ScatterBuffer]:
    """A zeroed bytearray and a ScatterBuffer over it (for storage reads we compare)."""
    data = bytearray(length)
    return data, ScatterBuffer([memoryview(data)])


def first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int | None:
    """Offset of the first byte where a and b differ (over the shorter length)."""
    n = min(len(a), len(b))
    for start in range(0, n, _COMPARE_CHUNK):
        stop = min(start + _COMPARE_CHUNK, n)
        if a[start:stop] != b[start:stop]:
            return next(i for i in range(start, stop) if a[i] != b[i])
    return None


@contextlib.contextmanager
def medium_errors(asc: Asc) -> Iterator[None]:
    """Storage OSErrors become MEDIUM ERROR with this ASC."""
    try:
        yield
    except OSError as err:
        raise SenseError(SenseKey.MEDIUM_ERROR, asc) from err


def data_in(cmd: Command, data: bytes, alloc_len: int) -> Result:
    """Data-in limited by the CDB's allocation length; read_len sets the residual."""
    data = data[:alloc_len]
    return Result.good(data, read_len=min(len(data), len(cmd.iov)))


def check_data_out(cmd: Command, length: int) -> None:
    """The data-out buffer must be exactly the length the CDB implies: the kernel's own
    backstores reject an underflow or overflow of a WRITE-type command with 0E/03, and a
    handler cannot tell which part of a wrong-sized buffer the initiator meant."""
    if len(cmd.iov) != length:
        raise SenseError.data_length_mismatch()


def check_data_in(cmd: Command, length: int) -> None:
    """A data-in buffer smaller than the transfer: 24/00 without a field pointer (what
    the kernel's backstores answer); a larger one is fine (the initiator sees a residual)."""
    if len(cmd.iov) < length:
        raise SenseError.invalid_cdb()


def declared(cls: type, marker: str) -> dict[str, Any]:
    """name -> declaration of the methods of `cls` (and its bases) that a decorator
    marked with the attribute `marker`; a subclass's redefinition of a marked method
    without the decorator keeps the declaration (and is the method that runs)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            declaration = getattr(value, marker, None)
            if declaration is not None:
                found[name] = declaration
    return found


def mark(marker: str, declaration: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that sets `marker` on a method (what declared() looks for)."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        setattr(method, marker, declaration)
        return method

    return decorate
