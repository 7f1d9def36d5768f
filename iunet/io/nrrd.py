"""NRRD reading (``.nrrd``, or a ``.nhdr`` header with its data file) → :class:`CTVolume`.

NRRD is 3D Slicer's volume format (teem.sourceforge.net/nrrd/format.html). Read here: the
header's ``type``, ``dimension``, ``sizes``, ``encoding`` (raw, gzip, bzip2, ascii), ``endian``,
``space`` with ``space directions`` and ``space origin`` (or bare ``spacings``), ``kinds``,
``data file`` (one detached file), ``line skip`` and ``byte skip``. World coordinates in an
anatomical space (RAS, LAS, LPS, or their ``-time`` variants, whose 4th world coordinate is
dropped) are converted to RAS; a header with spacings only gets ITK's
default (LPS axes) and says so in the volume's notes. Axes that are not spatial (a ``kinds``
entry such as ``time``, ``vector``, ``list`` or ``RGB-color``, or a ``none`` space direction) must have
size 1: a colour or multi-component volume is refused, as a 4D NIfTI is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .rawdata import ascii_voxels, data_file, grid_sizes, inflate, lps_affine_to_ras, numbers, read_at_most, read_text_header, voxels
from .volume import CTLoadError, CTVolume, check_display_size, display_shape_xyz, finish_volume, orientation_note, repair_affine

_TYPES = {
    "int8": ("signed char", "int8", "int8_t"),
    "uint8": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "int16": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "uint16": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "int32": ("int", "signed int", "int32", "int32_t"),
    "uint32": ("uint", "unsigned int", "uint32", "uint32_t"),
    "int64": ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t"),
    "uint64": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "float32": ("float",),
    "float64": ("double",),
}
_DTYPE = {alias: np.dtype(name) for name, aliases in _TYPES.items() for alias in aliases}
_ENCODINGS = {"raw": "raw", "gzip": "zlib", "gz": "zlib", "bzip2": "bzip2", "bz2": "bzip2",
              "ascii": "ascii", "text": "ascii", "txt": "ascii"}
# World-axis signs that take a space's first 3 coordinates to RAS (None: not anatomical) and the
# space's dimension (the -time spaces add a 4th world coordinate, time).
_SPACES: dict[str, tuple[tuple[int, int, int] | None, int]] = {
    "right-anterior-superior": ((1, 1, 1), 3), "ras": ((1, 1, 1), 3),
    "left-anterior-superior": ((-1, 1, 1), 3), "las": ((-1, 1, 1), 3),
    "left-posterior-superior": ((-1, -1, 1), 3), "lps": ((-1, -1, 1), 3),
    "right-anterior-superior-time": ((1, 1, 1), 4), "rast": ((1, 1, 1), 4),
    "left-anterior-superior-time": ((-1, 1, 1), 4), "last": ((-1, 1, 1), 4),
    "left-posterior-superior-time": ((-1, -1, 1), 4), "lpst": ((-1, -1, 1), 4),
    "scanner-xyz": (None, 3), "scanner-xyz-time": (None, 4),
    "3d-right-handed": (None, 3), "3d-left-handed": (None, 3),
    "3d-right-handed-time": (None, 4), "3d-left-handed-time": (None, 4),
}
# Kinds of an axis that may lie in space ("???" / "none": unknown). Every other kind (time, list,
# vector, RGB-color, ...) is not spatial and must have size 1.
_SPATIAL_KINDS = {"domain", "space", "???", "none"}
_MAX_SKIP = 1 << 40  # a 'line skip' / 'byte skip' this large is damage (and would overflow a seek)
_ALIASES = {"datafile": "data file", "lineskip": "line skip", "byteskip": "byte skip", "centerings": "centers"}


def looks_like_nrrd(path: Path) -> bool:
    """True when the file starts with the NRRD magic ``NRRD000N``."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head[:4] == b"NRRD" and head[4:7] == b"000" and head[7:8].isdigit()


def has_nrrd_suffix(path: Path) -> bool:
    return path.name.lower().endswith((".nrrd", ".nhdr"))


def _header(path: Path, what: str) -> tuple[dict[str, str], int]:
    lines, offset = read_text_header(path, what, lambda ls: len(ls) > 1 and ls[-1] == "")
    if not lines or not (lines[0].startswith("NRRD000") and lines[0][7:8].isdigit()):
        raise CTLoadError(f"{what} does not start with an NRRD header ('NRRD0004'); it is not an NRRD file (or it is damaged).")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line or line.startswith("#") or ":=" in line.split(": ", 1)[0]:
            continue  # blank end, comment, or key:=value pair
        if ": " not in line:
            raise CTLoadError(f"{what}: the header line {line[:80]!r} is not 'field: value'; the file is damaged.")
        key, value = line.split(": ", 1)
        key = key.strip().lower()
        fields[_ALIASES.get(key, key)] = value.strip()
    return fields, offset


def _vectors(text: str, what: str, n: int, dim: int) -> list[np.ndarray | None]:
    """``space directions``: one ``(a,b,c)`` vector or ``none`` per axis."""
    out: list[np.ndarray | None] = []
    rest = text.strip()
    while rest:
        if rest.lower().startswith("none"):
            out.append(None)
            rest = rest[4:].strip()
            continue
        if not rest.startswith("(") or ")" not in rest:
            raise CTLoadError(f"{what}: the header field 'space directions' ({text!r}) is not a list of '(x,y,z)' vectors.")
        inner, rest = rest[1:].split(")", 1)
        rest = rest.strip()
        out.append(np.array(numbers(inner, what, "space directions", dim)))
    if len(out) != n:
        raise CTLoadError(f"{what}: 'space directions' gives {len(out)} axes, 'dimension' says {n}.")
    return out


def _geometry(fields: dict[str, str], sizes: list[int], what: str) -> tuple[list[int], np.ndarray, list[str]]:
    """The spatial axes (indices into ``sizes``), the voxel → RAS affine and notes."""
    n = len(sizes)
    kinds = fields.get("kinds", "").split() or ["domain"] * n
    if len(kinds) != n:
        raise CTLoadError(f"{what}: 'kinds' names {len(kinds)} axes, 'dimension' says {n}.")
    notes: list[str] = []
    if "space directions" in fields:
        space = fields.get("space", "").strip().lower()
        dim = int(numbers(fields["space dimension"], what, "space dimension", 1, int)[0]) if "space dimension" in fields else 3
        if space in _SPACES:
            dim = _SPACES[space][1]
        if not 1 <= dim <= 16:
            raise CTLoadError(f"{what}: the header's 'space dimension' is {dim}; the file is damaged.")
        dirs = _vectors(fields["space directions"], what, n, dim)
        spatial = [i for i, d in enumerate(dirs) if d is not None and kinds[i].lower() in _SPATIAL_KINDS]
        vecs = [np.pad(dirs[i], (0, max(0, 3 - dim)))[:3] for i in spatial]
        origin = np.zeros(3)
        if "space origin" in fields:
            o = fields["space origin"].strip().strip("()")
            origin = np.pad(np.array(numbers(o, what, "space origin", dim)), (0, max(0, 3 - dim)))[:3]
        signs = _SPACES.get(space, (None, dim))[0]
        if signs is None:
            signs = _SPACES["lps"][0]
            notes.append(f"space '{space or 'unnamed'}' is not anatomical: its axes were taken as LPS (ITK's default)")
        to_ras = np.diag(list(signs) + [1.0])
        aff = np.eye(4)
        for col, v in enumerate(vecs):
            aff[:3, col] = v
        aff[:3, 3] = origin
        affine = to_ras @ aff
    else:
        spatial = [i for i, k in enumerate(kinds) if k.lower() in _SPATIAL_KINDS]
        spacings = numbers(fields["spacings"], what, "spacings", n, finite=False) if "spacings" in fields else [1.0] * n
        vec = [abs(spacings[i]) if np.isfinite(spacings[i]) and spacings[i] != 0 else 1.0 for i in spatial]
        notes.append(
            "no orientation in the header: axes taken as ITK's default (LPS)"
            + ("" if "spacings" in fields else ", voxel size 1 mm assumed")
        )
        affine = lps_affine_to_ras(np.diag((vec + [0.0] * 3)[:3]), np.zeros(3))
    if not spatial or len(spatial) > 3:
        raise CTLoadError(f"{what} has {len(spatial)} spatial axes; a CT slice or volume needs 2 or 3.")
    extra = [i for i in range(n) if i not in spatial]
    if any(sizes[i] != 1 for i in extra):
        sizes_text = "×".join(map(str, sizes))
        raise CTLoadError(
            f"{what} is a {n}D image of size {sizes_text} with {len(extra)} non-spatial axis "
            f"({', '.join(kinds[i] for i in extra)}), e.g. colour or several time points; "
            "only a single greyscale 2D or 3D CT volume is accepted."
        )
    if len(spatial) == 2:
        affine[:3, 2] = 0.0  # a 2D image: repair_affine gives the slice axis a 1 mm normal
    affine, note = repair_affine(affine)
    return spatial, affine, notes + [note]


def load_nrrd(path: Path, what: str, max_voxels: int | None = None, given: Sequence[Path] = ()) -> CTVolume:
    """Read an NRRD (attached or detached data) into a volume; the size is checked from the header
    first. ``given``: other files given with the header, where a detached data file may be."""
    fields, offset = _header(path, what)
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in fields:
            raise CTLoadError(f"{what}: the NRRD header has no '{key}' field; the file is damaged.")
    dtype = _DTYPE.get(fields["type"].lower())
    if dtype is None:
        raise CTLoadError(f"{what} holds voxels of type '{fields['type']}', which is not a number type a CT can have.")
    n = int(numbers(fields["dimension"], what, "dimension", 1, int)[0])
    if not 1 <= n <= 16:
        raise CTLoadError(f"{what} has 'dimension: {n}'; a CT slice or volume needs 2 or 3 (the file is damaged).")
    sizes = grid_sizes(fields["sizes"], what, "sizes", n)
    codec = _ENCODINGS.get(fields["encoding"].lower())
    if codec is None:
        raise CTLoadError(f"{what} uses the encoding '{fields['encoding']}', which is not read here (raw, gzip, bzip2 or ascii are).")
    spatial, affine, notes = _geometry(fields, sizes, what)
    shape_xyz = [sizes[i] for i in spatial] + [1] * (3 - len(spatial))
    check_display_size(display_shape_xyz(shape_xyz, affine), what, max_voxels)
    if fields.get("endian", "little").lower() == "big":
        dtype = dtype.newbyteorder(">")
    need = int(np.prod(sizes, dtype=np.int64)) * dtype.itemsize  # sizes are < 2**31, 2 of them ≤ MAX_SLICE_PX

    source, start = path, offset
    if "data file" in fields:
        name = fields["data file"]
        if (name.split() or [""])[0].upper() == "LIST" or "%" in name:
            raise CTLoadError(f"{what} spreads its voxels over several data files; only one data file (or none) is read.")
        source, start = data_file(name, path, given, what), 0
    line_skip = int(numbers(fields.get("line skip", "0"), what, "line skip", 1, int)[0])
    byte_skip = int(numbers(fields.get("byte skip", "0"), what, "byte skip", 1, int)[0])
    if not 0 <= line_skip < _MAX_SKIP or not -1 <= byte_skip < _MAX_SKIP or (byte_skip == -1 and codec != "raw"):
        raise CTLoadError(
            f"{what} has 'line skip: {line_skip}' and 'byte skip: {byte_skip}' with {fields['encoding']} encoding; "
            "skips must be 0 or more (byte skip -1, 'the last bytes', only with raw encoding). The header is damaged."
        )
    try:
        with open(source, "rb") as f:
            f.seek(start)
            for _ in range(line_skip):
                if not f.readline():
                    raise CTLoadError(f"{what}: its 'line skip: {line_skip}' passes the end of its data; the file is damaged or truncated.")
            if codec == "raw" and byte_skip == -1:  # the voxels are the last bytes
                pos = f.tell()
                f.seek(max(f.seek(0, 2) - need, pos))
                payload = read_at_most(f, need)
            elif codec == "raw":
                f.seek(byte_skip, 1)
                payload = read_at_most(f, need)  # only what the voxels need, however large the file
            else:
                payload = read_at_most(f, None)
    except CTLoadError:
        raise
    except (OSError, ValueError, OverflowError) as exc:
        raise CTLoadError(f"{what}: its voxel data could not be read ({exc}).") from exc
    if codec == "raw":
        data = voxels(payload, dtype, sizes, what)
    elif codec == "ascii":
        data = ascii_voxels(payload[byte_skip:], sizes, what)
    else:  # byte skip counts bytes of the decompressed data (teem)
        data = voxels(inflate(payload, codec, need + byte_skip, what)[byte_skip:], dtype, sizes, what)
    data = data.reshape([sizes[i] for i in spatial])  # the other axes have size 1
    if data.ndim == 2:
        data = data[:, :, None]
    notes.append(orientation_note(affine))
    return finish_volume(data, affine, "nrrd", "NRRD volume", what, notes)
