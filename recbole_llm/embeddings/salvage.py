"""Rows read straight from the pages of a damaged SQLite file (and its WAL), without SQLite.

SQLite reaches a row through the file header and the b-tree's interior pages. A file cut short, or with its first
bytes overwritten, loses those, and with them every row, although the rows themselves still sit intact in leaf
pages all over the file. Reading the leaf pages directly (the format is SQLite's documented file format: page
header, cell pointers, varint cells, records, overflow chains) recovers every row whose pages survive. What is read
here is not trusted: the embedding cache keeps a row only if its CRC32 matches.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

from ..errors import RecboleLLMError

HEADER = b"SQLite format 3\x00"
TABLE_LEAF = 0x0D
WAL_HEADER, WAL_FRAME_HEADER = 32, 24


class _Unreadable(RecboleLLMError):
    """A cell that does not parse: skipped by ``table_rows``, never seen outside this module."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(9):
        byte = buf[pos + i]
        if i == 8:
            return (value << 8) | byte, pos + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    raise _Unreadable("bad varint")


def _value(buf: bytes, pos: int, serial: int):
    sizes = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}
    if serial == 0:
        return None, 0
    if serial in sizes:
        n = sizes[serial]
        if pos + n > len(buf):
            raise _Unreadable("record cut short")
        return int.from_bytes(buf[pos : pos + n], "big", signed=True), n
    if serial == 7:
        return struct.unpack(">d", buf[pos : pos + 8])[0], 8
    if serial in (8, 9):
        return serial - 8, 0
    if serial >= 12:
        n = (serial - 12) // 2
        if pos + n > len(buf):
            raise _Unreadable("record cut short")
        raw = bytes(buf[pos : pos + n])
        return (raw if serial % 2 == 0 else raw.decode("utf-8")), n
    raise _Unreadable(f"reserved serial type {serial}")


def _geometry(data: bytes) -> tuple[int, int]:
    """Page size and usable bytes per page from the header; SQLite's default 4096 when the header is damaged."""
    if data[:16] == HEADER and len(data) >= 100:
        size = int.from_bytes(data[16:18], "big")
        size = 65536 if size == 1 else size
        if 512 <= size <= 65536 and size & (size - 1) == 0:
            return size, size - data[20]
    return 4096, 4096


def _pages(path: Path, size: int) -> dict[int, bytes]:
    """Page number -> bytes: the file's whole pages, then the WAL's committed frames over them. A WAL is reused
    from its start after a checkpoint, so only frames carrying the header's salts belong to its current generation,
    and frames after the last commit frame (a non-zero database size) belong to a transaction never committed."""
    data = path.read_bytes()
    pages = {n + 1: data[n * size : (n + 1) * size] for n in range(len(data) // size)}
    wal = path.with_name(path.name + "-wal")
    log = wal.read_bytes() if wal.exists() else b""
    if len(log) < WAL_HEADER:
        return pages
    salts, frame, pending = log[16:24], WAL_FRAME_HEADER + size, {}
    for start in range(WAL_HEADER, len(log) - frame + 1, frame):
        if log[start + 8 : start + 16] != salts:
            break  # an older generation's frames from here on
        number = int.from_bytes(log[start : start + 4], "big")
        pending[number] = log[start + WAL_FRAME_HEADER : start + frame]
        if int.from_bytes(log[start + 4 : start + 8], "big"):  # a commit frame: its transaction is whole
            pages.update(pending)
            pending = {}
    return pages


def _payload(page: bytes, pos: int, usable: int, pages: dict[int, bytes]) -> bytes:
    size, pos = _varint(page, pos)
    _, pos = _varint(page, pos)  # rowid
    local_max = usable - 35
    if size <= local_max:
        return page[pos : pos + size]
    least = (usable - 12) * 32 // 255 - 23
    local = least + (size - least) % (usable - 4)
    local = local if local <= local_max else least
    payload = bytearray(page[pos : pos + local])
    following = int.from_bytes(page[pos + local : pos + local + 4], "big")
    seen = set()
    while len(payload) < size and following and following not in seen:
        seen.add(following)
        overflow = pages.get(following)
        if overflow is None:
            raise _Unreadable("overflow page lost")
        payload += overflow[4:usable]
        following = int.from_bytes(overflow[:4], "big")
    if len(payload) < size:
        raise _Unreadable("payload cut short")
    return bytes(payload[:size])


def _record(payload: bytes) -> list:
    header_size, pos = _varint(payload, 0)
    serials = []
    while pos < header_size:
        serial, pos = _varint(payload, pos)
        serials.append(serial)
    values, body = [], header_size
    for serial in serials:
        value, n = _value(payload, body, serial)
        values.append(value)
        body += n
    return values


def table_rows(path: Path) -> Iterator[list]:
    """Every readable row of every table in the file's leaf pages, as column values; rows of damaged pages, cells
    that do not parse and overflow chains with a page missing are skipped."""
    with open(path, "rb") as f:
        head = f.read(100)
    size, usable = _geometry(head)
    wal = path.with_name(path.name + "-wal")
    if head[:16] != HEADER and wal.exists():  # the file's header is lost: the WAL's states the page size too
        with open(wal, "rb") as f:
            stated = int.from_bytes(f.read(12)[8:12], "big")
        if 512 <= stated <= 65536 and stated & (stated - 1) == 0:
            size = usable = stated
    pages = _pages(path, size)
    for number, page in pages.items():
        offset = 100 if number == 1 else 0
        if len(page) < offset + 8 or page[offset] != TABLE_LEAF:
            continue
        cells = int.from_bytes(page[offset + 3 : offset + 5], "big")
        for i in range(cells):
            at = offset + 8 + 2 * i
            pointer = int.from_bytes(page[at : at + 2], "big")
            if not offset + 8 <= pointer < size:
                continue
            try:
                yield _record(_payload(page, pointer, usable, pages))
            except (IndexError, _Unreadable, UnicodeDecodeError, struct.error):
                continue
