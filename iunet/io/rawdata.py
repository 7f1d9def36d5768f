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
from typing import BinaryIO, Callable, Sequence

import numpy as np

from .volume import LPS_TO_RAS, CTLoadError, format_bytes

MAX_HEADER_BYTES = 1 << 20  # a text header longer than this is not a header
# No axis of a real image has this many voxels; a header that says so is damaged (and its byte
# count would overflow the readers' 64-bit arithmetic).
MAX_AXIS_VOXELS = 1 << 31


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


def numbers(text: str, what: str, field: str, count: int | None = None, kind: type = float, finite: bool = True) -> list:
    """The whitespace- or comma-separated numbers of a header field; CTLoadError names the field.
    ``finite=False`` lets NaN / inf through (NRRD writes ``nan`` for the spacing of a non-spatial axis)."""
    parts = text.replace(",", " ").split()
    try:
        values = [kind(p) for p in parts]
    except ValueError as exc:
        raise CTLoadError(f"{what}: the header field '{field}' ({text.strip()!r}) is not a list of numbers.") from exc
    if count is not None and len(values) != count:
        raise CTLoadError(f"{what}: the header field '{field}' has {len(values)} value(s), {count} expected.")
    if kind is float and finite and not all(np.isfinite(values)):
        raise CTLoadError(f"{what}: the header field '{field}' holds a number that is not finite.")
    return values


def grid_sizes(text: str, what: str, field: str, count: int) -> list[int]:
    """The voxel counts per axis of a header field (``sizes``, ``DimSize``): ``count`` integers,
    each at least 1 and below ``MAX_AXIS_VOXELS``."""
    sizes = numbers(text, what, field, count, int)
    if not sizes or min(sizes) < 1:
        raise CTLoadError(f"{what} contains no voxels ({field} {text.strip()!r}).")
    if max(sizes) >= MAX_AXIS_VOXELS:
        raise CTLoadError(
            f"{what}: the header field '{field}' declares an axis of {max(sizes)} voxels, more than any image has; "
            "the file is damaged."
        )
    return sizes


def data_file(name: str, header: Path, given: Sequence[Path], what: str) -> Path:
    """The file a detached header names (``data file`` / ``ElementDataFile``).

    It is looked for among the files given together with the header (an upload of both: each may
    sit in its own temporary folder), then beside the header. Only a plain file name or a path
    below the header's folder is followed: ``..`` and absolute paths are refused, and so is a
    header that names itself (its text would be read as voxels).
    """
    if not name.strip():
        raise CTLoadError(f"{what} names no voxel data file (the data file field is empty); the header is damaged.")
    rel = Path(name.strip())
    if rel.is_absolute() or ".." in rel.parts:
        raise CTLoadError(f"{what} names its voxel data file as '{name.strip()}'; only a file beside the header is read.")
    beside = header.parent / rel
    found = beside if beside.is_file() else next((p for p in given if p.name == rel.name and p.is_file()), None)
    if found is not None:
        if found.resolve() == header.resolve():
            raise CTLoadError(f"{what} names itself ('{rel.name}') as its voxel data file; the header is damaged.")
        return found
    if beside.is_dir():
        raise CTLoadError(f"{what} names '{name.strip()}' as its voxel data file, but that is a folder; the header is damaged.")
    raise CTLoadError(
        f"{what} keeps its voxels in a separate file, '{rel.name}', which was not given. "
        "Give the header and its data file together (or a .zip of both), or save the volume as one file."
    )


def inflate(data: bytes, codec: str, max_bytes: int, what: str, padding: bytes = b"\x00\r\n") -> bytes:
    """Decompress ``data`` (``codec``: "zlib" for a zlib stream or one or more gzip members, each
    member's CRC-32 and length verified; "bzip2") to at most ``max_bytes`` + 1 bytes; CTLoadError
    for a damaged or truncated stream, for more than ``max_bytes``, and for bytes after the last
    member other than ``padding``. (The NIfTI reader's ``gunzip_verified`` too.)"""
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
                    if not data[pos:].strip(padding):
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
    except zlib.error as exc:
        message = str(exc)
        reason = "its checksum (CRC-32) does not match" if "incorrect data check" in message else (
            "its length does not match" if "incorrect length check" in message else "the compressed data is invalid")
        raise CTLoadError(
            f"{what} is damaged: {reason}, so its compressed voxel data cannot be unpacked. The file was changed "
            "or corrupted after it was written; download or export it again."
        ) from exc
    except (OSError, EOFError) as exc:  # bzip2
        raise CTLoadError(f"{what} is damaged: its compressed voxel data cannot be unpacked ({exc}).") from exc
    if len(out) > max_bytes:
        raise CTLoadError(f"{what} unpacks to more voxel data than its header declares ({format_bytes(max_bytes)}); the file is damaged.")
    if not done:
        raise CTLoadError(f"{what} is truncated: the compressed voxel data ends early; the upload or copy may have failed.")
    return bytes(out)


def read_at_most(f: BinaryIO, length: int | None) -> bytes:
    """At most ``length`` bytes from the position of ``f`` (None: to the end). Capped by what the
    file holds: ``f.read(n)`` reserves ``n`` bytes first, and a damaged header's ``n`` may be huge."""
    pos = f.tell()
    end = f.seek(0, 2)
    f.seek(pos)
    return f.read(max(end - pos, 0) if length is None else max(min(length, end - pos), 0))


def read_block(source: Path, start: int, length: int | None, what: str, from_end: bool = False) -> bytes:
    """At most ``length`` bytes of ``source`` from byte ``start`` (``length`` None: to its end);
    ``from_end``: its last ``length`` bytes instead (not before ``start``). Only what the voxels
    need is read, however large the file."""
    try:
        with open(source, "rb") as f:
            if from_end and length is not None:
                f.seek(max(f.seek(0, 2) - length, start))
            else:
                f.seek(start)
            return read_at_most(f, length)
    except (OSError, ValueError, OverflowError) as exc:
        raise CTLoadError(f"{what}: its voxel data could not be read ({exc}).") from exc


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
