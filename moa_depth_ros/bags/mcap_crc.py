"""MCAP checksums: add them to the files this package writes, verify them on the files it reads.

rosbags' MCAP writer leaves every CRC field zero ("not available"), so a bag with flipped bytes
in a message would be read and scored as if nothing were wrong. After writing, :func:`add_crcs`
fills in each Chunk record's ``uncompressed_crc`` and the DataEnd record's ``data_section_crc``
(CRC-32 of the file from the magic up to the DataEnd record), as the MCAP specification defines
them. :func:`verify` checks both wherever they are non-zero (files from other writers too):
rosbags itself checks chunk CRCs while reading, but not the data section.

Both map the file instead of reading it (a bag of several GB costs no memory) and decompress
one chunk at a time; ``add_crcs`` patches the CRC fields in place.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from binascii import crc32
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

__all__ = ["McapCheck", "McapCrcError", "add_crcs", "verify"]

MAGIC = b"\x89MCAP0\r\n"
CHUNK, DATA_END, FOOTER = 0x06, 0x0F, 0x02
_CHUNK_CRC_OFFSET = 24  # after message_start_time, message_end_time, uncompressed_size


class McapCrcError(ValueError):
    """A checksum does not match: the file is corrupt."""


@dataclass(frozen=True)
class McapCheck:
    chunks: int
    chunks_with_crc: int
    data_section_crc: bool  # the DataEnd record carried a CRC (and it matched)


def _records(data: memoryview) -> list[tuple[int, int, int]]:
    """(opcode, start of the record's content, its length) of the data section's records,
    up to and including DataEnd."""
    if bytes(data[:8]) != MAGIC:
        raise McapCrcError("not an MCAP file (bad magic)")
    records, position = [], 8
    while position + 9 <= len(data):
        opcode = data[position]
        (length,) = struct.unpack_from("<Q", data, position + 1)
        start = position + 9
        if start + length > len(data):
            raise McapCrcError(f"record at byte {position} runs past the end of the file")
        records.append((opcode, start, length))
        position = start + length
        if opcode in (DATA_END, FOOTER):
            break
    return records


def _chunk_payload(data: memoryview, start: int) -> tuple[int, bytes]:
    """(offset of the chunk's CRC field, its uncompressed records)."""
    _, _, size, _ = struct.unpack_from("<QQQI", data, start)
    (name_length,) = struct.unpack_from("<I", data, start + 28)
    compression = bytes(data[start + 32 : start + 32 + name_length]).decode()
    (compressed_size,) = struct.unpack_from("<Q", data, start + 32 + name_length)
    body = start + 40 + name_length
    compressed = bytes(data[body : body + compressed_size])
    if compression not in DECOMPRESSORS:
        raise McapCrcError(f"unknown chunk compression {compression!r}")
    return start + _CHUNK_CRC_OFFSET, DECOMPRESSORS[compression](compressed, size)


@contextlib.contextmanager
def _mapped(path: str | Path, writable: bool) -> Iterator[memoryview]:
    with open(path, "r+b" if writable else "rb") as handle:
        if handle.seek(0, 2) < len(MAGIC):
            raise McapCrcError("not an MCAP file (shorter than its magic)")
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        with mmap.mmap(handle.fileno(), 0, access=access) as mapped:
            view = memoryview(mapped)
            try:
                yield view
            finally:
                view.release()  # before the map closes


def add_crcs(path: str | Path) -> McapCheck:
    """Write the chunk and data-section CRCs into an MCAP file written without them."""
    chunks, data_crc = 0, False
    with _mapped(path, writable=True) as data:
        for opcode, start, _ in _records(data):
            if opcode == CHUNK:
                crc_at, payload = _chunk_payload(data, start)
                struct.pack_into("<I", data, crc_at, crc32(payload))
                chunks += 1
            elif opcode == DATA_END:
                struct.pack_into("<I", data, start, crc32(data[: start - 9]))
                data_crc = True
    return McapCheck(chunks, chunks, data_crc)


def verify(path: str | Path) -> McapCheck:
    """Check every non-zero CRC of the data section; McapCrcError naming the first mismatch."""
    chunks = with_crc = 0
    data_crc = False
    with _mapped(path, writable=False) as data:
        for opcode, start, _ in _records(data):
            if opcode == CHUNK:
                chunks += 1
                crc_at, payload = _chunk_payload(data, start)
                (stored,) = struct.unpack_from("<I", data, crc_at)
                if stored:
                    with_crc += 1
                    if crc32(payload) != stored:
                        raise McapCrcError(f"chunk {chunks} (byte {start - 9}): CRC mismatch")
            elif opcode == DATA_END:
                (stored,) = struct.unpack_from("<I", data, start)
                if stored:
                    if crc32(data[: start - 9]) != stored:
                        raise McapCrcError("data section CRC mismatch")
                    data_crc = True
    return McapCheck(chunks, with_crc, data_crc)
