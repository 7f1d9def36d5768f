"""MetaImage reading (``.mha``, or a ``.mhd`` header with its ``.raw`` / ``.zraw`` file) → :class:`CTVolume`.

MetaImage is ITK's own format (itk.org, MetaIO): a ``Key = Value`` text header ending with
``ElementDataFile``, whose value is ``LOCAL`` (the voxels follow in the same file) or a data file's
name. Read here: ``NDims``, ``DimSize``, ``ElementType``, ``ElementSpacing`` (or ``ElementSize``),
``Offset`` (or ``Position`` / ``Origin`` / ``ImagePosition``), ``TransformMatrix`` (or ``Rotation`` / ``Orientation``;
each row one axis's direction, as ITK writes it), ``BinaryDataByteOrderMSB``, ``CompressedData``
(zlib; ``CompressedDataSize`` bytes of it when given), ``BinaryData = False`` (voxels as text),
``HeaderSize`` (as MetaIO reads it: the voxels start that many bytes from the start of the file
that holds them, the header file itself for ``LOCAL``; ``-1``: they are its last bytes) and
``ElementNumberOfChannels`` (must be 1). World
coordinates are ITK's LPS, converted to RAS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .rawdata import ascii_voxels, data_file, grid_sizes, inflate, lps_affine_to_ras, numbers, read_block, read_text_header, voxels
from .volume import CTLoadError, CTVolume, check_display_size, display_shape_xyz, finish_volume, orientation_note, repair_affine

_DTYPE = {
    "MET_CHAR": "int8", "MET_UCHAR": "uint8", "MET_SHORT": "int16", "MET_USHORT": "uint16",
    "MET_INT": "int32", "MET_UINT": "uint32", "MET_LONG": "int32", "MET_ULONG": "uint32",
    "MET_LONG_LONG": "int64", "MET_ULONG_LONG": "uint64", "MET_FLOAT": "float32", "MET_DOUBLE": "float64",
}
_TRUE = {"true", "1", "yes"}


def has_metaimage_suffix(path: Path) -> bool:
    return path.name.lower().endswith((".mha", ".mhd"))


def looks_like_metaimage(path: Path) -> bool:
    """True when the file starts with a MetaImage header line (``ObjectType``, ``NDims``, …)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
    except OSError:
        return False
    key = head.split(b"=", 1)[0].strip().lower()
    return b"=" in head and key in (b"objecttype", b"ndims", b"objectsubtype", b"comment")


def _header(path: Path, what: str) -> tuple[dict[str, str], int]:
    lines, offset = read_text_header(path, what, lambda ls: ls[-1].split("=", 1)[0].strip().lower() == "elementdatafile")
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            continue
        if "=" not in line:
            raise CTLoadError(f"{what}: the header line {line[:80]!r} is not 'Key = Value'; it is not a MetaImage file (or it is damaged).")
        key, value = line.split("=", 1)
        fields[key.strip().lower()] = value.strip()
    if "elementdatafile" not in fields:
        raise CTLoadError(f"{what}: the MetaImage header has no 'ElementDataFile' line; the file is damaged.")
    return fields, offset


def _flag(fields: dict[str, str], *keys: str) -> bool:
    return any(fields.get(k, "").lower() in _TRUE for k in keys)


def load_metaimage(path: Path, what: str, max_voxels: int | None = None, given: Sequence[Path] = ()) -> CTVolume:
    """Read a MetaImage (.mha, or .mhd with its data file) into a volume; the size is checked from
    the header first. ``given``: other files given with the header, where its data file may be."""
    fields, offset = _header(path, what)
    if fields.get("objecttype", "image").lower() != "image":
        raise CTLoadError(f"{what} holds a MetaIO '{fields['objecttype']}' object, not an image.")
    for key, name in (("ndims", "NDims"), ("dimsize", "DimSize"), ("elementtype", "ElementType")):
        if key not in fields:
            raise CTLoadError(f"{what}: the MetaImage header has no '{name}' line; the file is damaged.")
    n = int(numbers(fields["ndims"], what, "NDims", 1, int)[0])
    if n not in (2, 3, 4):
        raise CTLoadError(f"{what} is {n}-dimensional; a CT slice or volume needs 2 or 3 dimensions.")
    sizes = grid_sizes(fields["dimsize"], what, "DimSize", n)
    channels = int(numbers(fields.get("elementnumberofchannels", "1"), what, "ElementNumberOfChannels", 1, int)[0])
    if channels != 1 or (n == 4 and sizes[3] != 1):
        raise CTLoadError(
            f"{what} has {channels} value(s) per voxel and size {'×'.join(map(str, sizes))} (e.g. colour or several "
            "time points); only a single greyscale 2D or 3D CT volume is accepted."
        )
    dtype_name = _DTYPE.get(fields["elementtype"].upper())
    if dtype_name is None:
        raise CTLoadError(f"{what} holds voxels of type '{fields['elementtype']}', which is not a number type a CT can have.")
    dtype = np.dtype(dtype_name)
    if _flag(fields, "binarydatabyteordermsb", "elementbyteordermsb"):
        dtype = dtype.newbyteorder(">")
    k = min(n, 3)
    spacing_key = "elementspacing" if "elementspacing" in fields else "elementsize"
    notes: list[str] = []
    if spacing_key in fields:
        spacing = [abs(s) for s in numbers(fields[spacing_key], what, "ElementSpacing", n)][:k]
    else:
        spacing = [1.0] * k
        notes.append("no voxel size in the header: 1 mm assumed")
    matrix_key = next((key for key in ("transformmatrix", "rotation", "orientation") if key in fields), None)
    if matrix_key is not None:
        rows = np.array(numbers(fields[matrix_key], what, "TransformMatrix", n * n)).reshape(n, n)[:k, :k]
    else:
        rows = np.eye(k)
    origin_key = next((key for key in ("offset", "position", "origin", "imageposition") if key in fields), None)
    origin = numbers(fields[origin_key], what, "Offset", n)[:k] if origin_key else [0.0] * k
    directions = np.zeros((3, 3))
    for axis in range(k):  # each TransformMatrix row is one axis's direction (ITK's MetaImageIO)
        directions[:k, axis] = rows[axis] * spacing[axis]
    affine, note = repair_affine(lps_affine_to_ras(directions, list(origin) + [0.0] * (3 - k)))
    notes.append(note)
    shape = sizes[:k]
    shape_xyz = shape + [1] * (3 - k)
    check_display_size(display_shape_xyz(shape_xyz, affine), what, max_voxels)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    name = fields["elementdatafile"]
    if name.upper() == "LOCAL":
        source, start = path, offset
    elif (name.split() or [""])[0].upper() == "LIST" or "%" in name:
        raise CTLoadError(f"{what} spreads its voxels over several data files; only one data file is read.")
    else:
        source, start = data_file(name, path, given, what), 0
    skip = int(numbers(fields.get("headersize", "0"), what, "HeaderSize", 1, int)[0])
    if not -1 <= skip < 1 << 40:
        raise CTLoadError(f"{what} has 'HeaderSize = {skip}'; it must be 0 or more (or -1: the voxels are the file's last bytes). The header is damaged.")
    start = skip if skip > 0 else start  # MetaIO seeks HeaderSize bytes from the file's start
    if fields.get("binarydata", "true").lower() not in _TRUE:
        data = ascii_voxels(read_block(source, start, None, what), shape, what)
    elif _flag(fields, "compresseddata"):
        size = int(numbers(fields.get("compresseddatasize", "0"), what, "CompressedDataSize", 1, int)[0])
        if not 0 <= size < 1 << 40:
            raise CTLoadError(f"{what} has 'CompressedDataSize = {size}'; the header is damaged.")
        payload = read_block(source, start, size or None, what)  # 0 or none: the rest of the file
        if size and len(payload) < size:
            raise CTLoadError(
                f"{what} is truncated: its header declares {size} bytes of compressed voxels, the file holds "
                f"{len(payload)}; the upload or copy may have failed."
            )
        data = voxels(inflate(payload, "zlib", need, what), dtype, shape, what)
    else:
        data = voxels(read_block(source, start, need, what, from_end=skip == -1), dtype, shape, what)
    if data.ndim == 2:
        data = data[:, :, None]
    notes.append(orientation_note(affine))
    return finish_volume(data, affine, "metaimage", "MetaImage volume", what, notes)
