"""Shared parts of the two ITK-family readers (:mod:`.nrrd`, :mod:`.metaimage`): a text header
followed by (or pointing to) a raw voxel block, raw or compressed, in world coordinates given as
per-axis direction vectors.

Both readers parse the header first and check the grid's size from it (``check_display_size``)
before any voxel is read, as the NIfTI reader does; the voxel block is then decompressed up to the
size the header declares (a block that unpacks to more is refused, not read to its end) and
checked for length.
"""
from __future__ import annotations

import bz2
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .volume import LPS_TO_RAS, CTLoadError, format_bytes

MAX_HEADER_BYTES = 1 << 20  # a text header longer than this is not a header
# Upper bound on an ASCII-encoded voxel block (numbers as text): 16 characters a voxel.
ASCII_BYTES_PER_VOXEL = 16


def read_text_header(path: Path, what: str, end: Callable[[list[str]], bool]) -> tuple[list[str], int]:
    """The header lines of ``path`` and the byte offset just after the header.

    Lines are read (``\\n`` or ``\\r\\n`` endings) until ``end(lines_so_far)`` is True or the file
    ends; a header without an end within ``MAX_HEADER_BYTES`` or with bytes that are not text is
    refused.
    """
    lines: list[str] = []
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.readline(MAX_HEADER_BYTES + 1)
            if not raw:
                return lines, offset
            offset += len(raw)
            if offset > MAX_HEADER_BYTES:
                raise CTLoadError(f"{what}: no end of the text header in its first {format_bytes(MAX_HEADER_BYTES)}; the file is damaged.")
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise CTLoadError(f"{what}: the text header holds bytes that are not text; the file is damaged.") from exc
            lines.append(line)
            if end(lines):
                return lines, offset


def numbers(text: str, what: str, field: str, count: int | None = None, kind: type = float) -> list:
    """The whitespace- or comma-separated numbers of a header field; CTLoadError names the field."""
    parts = text.replace(",", " ").split()
    try:
        values = [kind(p) for p in parts]
    except ValueError as exc:
        raise CTLoadError(f"{what}: the header field '{field}' ({text.strip()!r}) is not a list of numbers.") from exc
    if count is not None and len(values) != count:
        raise CTLoadError(f"{what}: the header field '{field}' has {len(values)} value(s), {count} expected.")
    if kind is float and not all(np.isfinite(values)):
        raise CTLoadError(f"{what}: the header field '{field}' holds a number that is not finite.")
    return values


def data_file(name: str, header: Path, given: Sequence[Path], what: str) -> Path:
    """The file a detached header names (``data file`` / ``ElementDataFile``).

    It is looked for among the files given together with the header (an upload of both: each may
    sit in its own temporary folder), then beside the header. Only a plain file name or a path
    below the header's folder is followed: ``..`` and absolute paths are refused.
    """
    rel = Path(name.strip())
    if not name.strip() or rel.is_absolute() or ".." in rel.parts:
        raise CTLoadError(f"{what} names its voxel data file as '{name.strip()}'; only a file beside the header is read.")
    for p in given:
        if p.name == rel.name:
            return p
    beside = header.parent / rel
    if beside.is_file():
        return beside
    raise CTLoadError(
        f"{what} keeps its voxels in a separate file, '{rel.name}', which was not given. "
        "Give the header and its data file together (or a .zip of both), or save the volume as one file."
    )


def inflate(data: bytes, codec: str, max_bytes: int, what: str) -> bytes:
    """Decompress ``data`` (``codec``: "zlib" for a zlib or gzip stream, "bzip2") to at most
    ``max_bytes`` + 1 bytes; CTLoadError for a damaged or truncated stream."""
    out = bytearray()
    try:
        if codec == "bzip2":
            d = bz2.BZ2Decompressor()
            out += d.decompress(data, max_bytes + 1)
            done = d.eof
        else:
            pos = 0
            done = False
            while pos < len(data) and len(out) <= max_bytes:
                if pos and data[pos : pos + 2] != b"\x1f\x8b":
                    if not data[pos:].strip(b"\x00\r\n"):
                        break  # padding after the last gzip member
                    raise CTLoadError(f"{what} is damaged: unexpected bytes after the compressed voxel data.")
                d = zlib.decompressobj(wbits=47)  # zlib or gzip header, detected
                out += d.decompress(memoryview(data)[pos:], max(max_bytes - len(out), 0) + 1)
                while d.unconsumed_tail and len(out) <= max_bytes:
                    out += d.decompress(d.unconsumed_tail, max(max_bytes - len(out), 0) + 1)
                done = d.eof
                if not done:
                    break
                pos = len(data) - len(d.unused_data)
    except (zlib.error, OSError, EOFError) as exc:
        raise CTLoadError(f"{what} is damaged: its compressed voxel data cannot be unpacked ({exc}).") from exc
    if len(out) > max_bytes:
        raise CTLoadError(f"{what} unpacks to more voxel data than its header declares ({format_bytes(max_bytes)}); the file is damaged.")
    if not done:
        raise CTLoadError(f"{what} is truncated: the compressed voxel data ends early; the upload or copy may have failed.")
    return bytes(out)


def voxels(block: bytes, dtype: np.dtype, shape_fastest_first: Sequence[int], what: str) -> np.ndarray:
    """The voxel block as float32 indexed (i, j, k, ...) with i the fastest-varying axis."""
    n = int(np.prod(shape_fastest_first, dtype=np.int64))
    need = n * dtype.itemsize
    if len(block) < need:
        raise CTLoadError(
            f"{what} is truncated: its header declares {format_bytes(need)} of voxels but the file holds "
            f"{format_bytes(len(block))}; the upload or copy may have failed."
        )
    flat = np.frombuffer(block, dtype=dtype, count=n)
    return flat.astype(np.float32).reshape(tuple(shape_fastest_first)[::-1]).transpose()


def ascii_voxels(text: bytes, shape_fastest_first: Sequence[int], what: str) -> np.ndarray:
    """Voxels written as numbers in text, fastest axis first, as float32 (i, j, k, ...)."""
    n = int(np.prod(shape_fastest_first, dtype=np.int64))
    try:
        flat = np.array(text.decode("ascii").replace(",", " ").split(), dtype=np.float32)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CTLoadError(f"{what}: its voxels are written as text but are not all numbers; the file is damaged.") from exc
    if flat.size < n:
        raise CTLoadError(f"{what} is truncated: it holds {flat.size} voxel values, its header declares {n}.")
    return flat[:n].reshape(tuple(shape_fastest_first)[::-1]).transpose()


def lps_affine_to_ras(directions: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    """4x4 voxel → RAS affine from per-axis LPS vectors (columns of ``directions``, mm per voxel)
    and the LPS position of voxel (0, 0, 0)."""
    aff = np.eye(4)
    aff[:3, :3] = directions
    aff[:3, 3] = origin
    return LPS_TO_RAS @ aff
