"""Folders and .zip archives of a DICOM series (or of one NIfTI, NRRD or MetaImage volume) → :class:`CTVolume`.

Archives are extracted to a temporary folder that is removed afterwards; path traversal, links,
encryption and zip bombs (more than ``MAX_ZIP_UNCOMPRESSED_BYTES`` or ``MAX_ZIP_MEMBERS``) are
refused.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .dicom import load_dicom_datasets, read_dicom_lazy
from .formats import volume_file_reader
from .volume import ACCEPTED_INPUTS, CTLoadError, CTVolume, format_bytes

MAX_ZIP_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_ZIP_MEMBERS = 100_000


def extract_zip_safely(path: Path, dest: Path, what: str) -> None:
    """Extract ``path`` into ``dest``, refusing path traversal, links, encryption and zip bombs."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CTLoadError(f"{what} is not a readable .zip archive ({exc}).") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise CTLoadError(f"{what} holds {len(infos)} files; at most {MAX_ZIP_MEMBERS} are accepted.")
        declared = sum(i.file_size for i in infos)
        if declared > MAX_ZIP_UNCOMPRESSED_BYTES:
            raise CTLoadError(
                f"{what} would unpack to {format_bytes(declared)}; at most "
                f"{format_bytes(MAX_ZIP_UNCOMPRESSED_BYTES)} are accepted (protection against zip bombs)."
            )
        root = dest.resolve()
        targets = []
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                raise CTLoadError(
                    f"{what} contains an unsafe file name ({info.filename!r}) that points outside the "
                    "archive; it was not extracted. Re-create the .zip from the DICOM folder."
                )
            target = (root / name).resolve()
            if root not in target.parents and target != root:
                raise CTLoadError(f"{what} contains an unsafe file name ({info.filename!r}); it was not extracted.")
            if info.flag_bits & 0x1:
                raise CTLoadError(f"{what} is password-protected; give an unencrypted .zip.")
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            if not info.is_dir() and not is_link:
                targets.append((info, target))
        written = 0
        for info, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_ZIP_UNCOMPRESSED_BYTES:  # declared sizes can lie
                            raise CTLoadError(
                                f"{what} would unpack to more than {format_bytes(MAX_ZIP_UNCOMPRESSED_BYTES)}; "
                                "refused (protection against zip bombs)."
                            )
                        dst.write(chunk)
            except CTLoadError:
                raise
            except Exception as exc:
                raise CTLoadError(f"{what}: member {info.filename!r} could not be extracted ({exc}); the archive may be damaged.") from exc


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (sorted; hidden files and __MACOSX skipped)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return files


def load_folder(folder: Path, what: str, notes: list[str], max_voxels: int | None = None) -> CTVolume:
    """The DICOM series (largest, when several) or the single volume file (NIfTI, NRRD, MetaImage with
    its data file) in a folder."""
    files = [f for f in files_under(folder) if f.is_file() and f.stat().st_size > 0]
    if not files:
        raise CTLoadError(f"{what} contains no files. Accepted inputs: {ACCEPTED_INPUTS}.")
    dicom = [(p, ds) for p in files if (ds := read_dicom_lazy(p)) is not None]
    if dicom:
        skipped = len(files) - len(dicom)
        extra = [f"{skipped} file(s) that are not DICOM images were ignored"] if skipped else []
        return load_dicom_datasets(dicom, what, notes + extra, max_voxels)
    volumes = [(p, r) for p in files if (r := volume_file_reader(p)) is not None]
    if len(volumes) == 1:
        (p, (reader, _)), = volumes
        return reader(p, f"{what} ({p.name})", max_voxels, files)
    if len(volumes) > 1:
        names = ", ".join(p.name for p, _ in volumes[:4]) + (", …" if len(volumes) > 4 else "")
        raise CTLoadError(f"{what} contains {len(volumes)} volume files ({names}); give one volume at a time.")
    raise CTLoadError(
        f"{what} contains no DICOM, NIfTI, NRRD or MetaImage files ({len(files)} other files). Accepted inputs: {ACCEPTED_INPUTS}."
    )


def load_zip(path: Path, what: str, max_voxels: int | None = None) -> CTVolume:
    """Extract a .zip to a temporary folder, load it like a folder, remove the folder."""
    tmp = Path(tempfile.mkdtemp(prefix="iunet_zip_"))
    try:
        extract_zip_safely(path, tmp, what)
        return load_folder(tmp, what, [], max_voxels)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
