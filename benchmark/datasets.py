"""Data folders: case discovery, case selection (split), slice selection, and a built-in
synthetic dataset in MSD layout.

Two layouts are read (:func:`find_cases`):

- **MSD task folder** (Task09_Spleen, Task10_Colon, or any folder of that layout): ``dataset.json``,
  ``imagesTr/<case>.nii.gz`` and ``labelsTr/<case>.nii.gz``; macOS copies add ``._<case>.nii.gz``
  resource files, which are skipped. A case's name is its file name without ``.nii.gz``
  (``spleen_8``, ``colon_001``); its target is every label > 0 (or ``--label-ids``).
- **One patient with one mask per structure**: a folder with the CT (a DICOM series folder or
  .zip ``PATIENT_DICOM``, ``ct``, ``image``, or a file ``ct`` / ``image`` ``.nii.gz``, ``.nrrd``
  or ``.mha``, or a detached ``.nhdr`` / ``.mhd``) and a masks folder or .zip (``MASKS_DICOM``,
  ``masks``, ``segmentations``) holding one mask per structure: a DICOM series folder
  ``<structure>/`` (0 = background) or a file ``<structure>.nii.gz`` / ``.nrrd`` / ``.mha``
  (3D Slicer's and ITK's formats; in a folder also ``.nhdr`` / ``.mhd``) on the CT's grid. This is 3D-IRCADb's layout (``PATIENT_DICOM/`` +
  ``MASKS_DICOM.zip``) and TotalSegmentator's (``ct.nii.gz`` + ``segmentations/``). Each
  structure is a case named ``<folder>:<structure>`` (``ircadb_patient1:liver``), so results are
  reported per structure and ``--cases`` picks structures.

Volumes are read with :mod:`iunet.ct_io` in the display orientation (Z, Y, X), so slices look the
way the app shows them.
"""
from __future__ import annotations

import functools
import json
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from iunet.ct_io import CTLoadError, load_ct, read_nifti_mask
from iunet.io.nifti import has_nifti_suffix
from iunet.data import choose_target, render_ct, synthetic_labels
from iunet.windowing import HU_AIR

SLICE_MODES = ("all", "largest")
IMAGE_SOURCES = ("PATIENT_DICOM", "PATIENT_DICOM.zip", "ct", "ct.zip", "image", "image.zip", "ct.nii.gz", "ct.nii", "image.nii.gz", "image.nii",
                 "ct.nrrd", "ct.nhdr", "ct.mha", "ct.mhd", "image.nrrd", "image.nhdr", "image.mha", "image.mhd")
# A structure's mask file: NIfTI, NRRD or MetaImage (in a .zip only the single-file ones)
MASK_FILE = re.compile(r"\.(nii(\.gz)?|nrrd|nhdr|mha|mhd)$", re.IGNORECASE)
ZIP_MASK_FILE = re.compile(r"\.(nii(\.gz)?|nrrd|mha)$", re.IGNORECASE)
MASK_SOURCES = ("MASKS_DICOM", "MASKS_DICOM.zip", "masks", "masks.zip", "segmentations", "segmentations.zip")
STRUCTURE_SEP = ":"  # case name = <patient folder>:<structure>


@dataclass(frozen=True)
class Case:
    """One labelled case: an image and its target.

    ``label`` is a label-map NIfTI (MSD), a structure mask (NIfTI file or DICOM series folder), or
    a .zip holding the structure's DICOM series under the folder ``member`` (3D-IRCADb's
    ``MASKS_DICOM.zip``). ``structure`` is the structure's name for a structure mask, else None.
    """

    name: str
    image: Path
    label: Path
    structure: str | None = None
    member: str | None = None


def _case_name(path: Path) -> str:
    return MASK_FILE.sub("", path.name)


def _natural_key(name: str) -> list:
    """``spleen_2`` before ``spleen_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def task_name(folder: str | Path) -> str:
    """The task's name from ``dataset.json`` (``Spleen``, ``Colon``), else the folder's name."""
    folder = Path(folder)
    try:
        return str(json.loads((folder / "dataset.json").read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def find_cases(folder: str | Path) -> list[Case]:
    """The labelled cases of ``folder``, whichever of the two layouts (module docstring) it has.
    Raises ValueError that names both layouts when it has neither."""
    folder = Path(folder)
    if (folder / "imagesTr").is_dir() or (folder / "labelsTr").is_dir():
        return msd_cases(folder)
    if folder.is_dir() and any((folder / m).exists() for m in MASK_SOURCES):
        return structure_cases(folder)
    raise ValueError(
        f"{folder} is not an MSD task folder (expected imagesTr/ and labelsTr/ inside it, e.g. Task09_Spleen as "
        "extracted by `python -m benchmark download --task spleen`) nor one patient with structure masks "
        f"(a CT such as PATIENT_DICOM/ or ct.nii.gz next to one of {', '.join(MASK_SOURCES)})"
    )


def _safe_member(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts and ":" not in parts[0]


def _zip_structures(path: Path) -> dict[str, str]:
    """``{structure: member folder}`` of a mask archive: every folder that directly holds files
    (``MASKS_DICOM/liver/image_0`` → ``liver``: ``MASKS_DICOM/liver/``), and top-level NIfTI files."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/") and _safe_member(n)]
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a readable .zip archive ({e})") from e
    out: dict[str, str] = {}
    for n in names:
        pp = PurePosixPath(n)
        if pp.name.startswith(".") or "__MACOSX" in pp.parts:
            continue
        if ZIP_MASK_FILE.search(pp.name):
            out.setdefault(_case_name(Path(pp.name)), n)
        elif len(pp.parts) >= 2:
            out.setdefault(pp.parts[-2], str(pp.parent) + "/")
    return out


def structure_cases(folder: str | Path) -> list[Case]:
    """One case per structure mask of a patient folder (see the module docstring), in natural
    order of the structure names. Raises ValueError when the CT or the masks are missing."""
    folder = Path(folder)
    image = next((folder / n for n in IMAGE_SOURCES if (folder / n).exists()), None)
    masks = next((folder / n for n in MASK_SOURCES if (folder / n).exists()), None)
    if image is None or masks is None:
        raise ValueError(
            f"{folder}: a patient with structure masks needs a CT ({', '.join(IMAGE_SOURCES)}) and a masks "
            f"folder or .zip ({', '.join(MASK_SOURCES)}); found {'no CT' if image is None else 'no masks'}"
        )
    cases = []
    if masks.is_dir():
        for entry in masks.iterdir():
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                cases.append(Case(f"{folder.name}{STRUCTURE_SEP}{entry.name}", image, entry, entry.name))
            elif MASK_FILE.search(entry.name):
                name = _case_name(entry)
                cases.append(Case(f"{folder.name}{STRUCTURE_SEP}{name}", image, entry, name))
    else:
        for name, member in _zip_structures(masks).items():
            cases.append(Case(f"{folder.name}{STRUCTURE_SEP}{name}", image, masks, name, member))
    if not cases:
        raise ValueError(f"{masks} holds no structure mask (a DICOM series folder or a NIfTI file per structure)")
    return sorted(cases, key=lambda c: _natural_key(c.name))


def msd_cases(folder: str | Path) -> list[Case]:
    """Labelled cases of an MSD task folder, in natural order.

    Every ``imagesTr/*.nii[.gz]`` with a label of the same name in ``labelsTr/`` is a case;
    ``._*`` files are skipped. Raises ValueError when the folder is not in MSD layout or holds no
    labelled case.
    """
    folder = Path(folder)
    images, labels = folder / "imagesTr", folder / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise ValueError(
            f"{folder} is not an MSD task folder: expected imagesTr/ and labelsTr/ inside it "
            "(e.g. Task09_Spleen as extracted by `python -m benchmark download --task spleen`)"
        )
    cases = []
    for img in images.iterdir():
        if img.name.startswith("._") or not re.search(r"\.nii(\.gz)?$", img.name):
            continue
        if (labels / img.name).is_file():
            cases.append(Case(_case_name(img), img, labels / img.name))
    if not cases:
        raise ValueError(f"{folder} holds no labelled case (no imagesTr/X.nii.gz with a labelsTr/X.nii.gz)")
    return sorted(cases, key=lambda c: _natural_key(c.name))


def read_split(path: str | Path) -> list[str]:
    """Case names from a split file: JSON (a list, or an object with a ``test`` / ``val`` list)
    or plain text (one name per line, ``#`` starts a comment)."""
    text = Path(path).read_text()
    if Path(path).suffix == ".json":
        obj = json.loads(text)
        if isinstance(obj, dict):
            for key in ("test", "val", "validation"):
                if key in obj:
                    obj = obj[key]
                    break
        if not isinstance(obj, list):
            raise ValueError(f"split file {path}: expected a list of case names or an object with a 'test' list")
        names = [str(n) for n in obj]
    else:
        names = [ln.split("#")[0].strip() for ln in text.splitlines()]
    names = [_case_name(Path(n)) for n in names if n]
    if not names:
        raise ValueError(f"split file {path} names no case (an empty split would mean every case)")
    return names


def select_cases(cases: Sequence[Case], names: Sequence[str]) -> list[Case]:
    """The cases called ``names`` (in that order, each once); empty ``names`` = all. Unknown names raise."""
    if not names:
        return list(cases)
    names = list(dict.fromkeys(names))  # a case named twice is evaluated once
    by_name = {c.name: c for c in cases}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"unknown case(s) {missing}; this folder has: {', '.join(by_name)}")
    return [by_name[n] for n in names]


@functools.lru_cache(maxsize=1)
def _load_image(path: Path):
    """The CT of a case; kept for the next call, because every structure of a patient shares it."""
    return load_ct(path)


def _structure_mask(case: Case, vol) -> np.ndarray:
    """A structure's mask as bool (Z, Y, X) on ``vol``'s display grid (0 / the smallest value = background)."""
    if case.member is not None and case.member.endswith("/"):  # a DICOM series inside a .zip
        with tempfile.TemporaryDirectory(prefix="benchmark_mask_") as tmp, zipfile.ZipFile(case.label) as zf:
            members = [n for n in zf.namelist() if n.startswith(case.member) and not n.endswith("/") and _safe_member(n)]
            for n in members:
                zf.extract(n, tmp)
            mask = load_ct(Path(tmp) / case.member)
    elif case.member is not None:  # one mask file inside a .zip
        with tempfile.TemporaryDirectory(prefix="benchmark_mask_") as tmp, zipfile.ZipFile(case.label) as zf:
            path = Path(zf.extract(case.member, tmp))
            if has_nifti_suffix(path):
                return read_nifti_mask(path, like=vol) > 0
            mask = load_ct(path)
    elif case.label.is_dir():
        mask = load_ct(case.label)
    elif has_nifti_suffix(case.label):
        return read_nifti_mask(case.label, like=vol) > 0
    else:  # an NRRD or MetaImage mask (0 = background), read as a volume and checked against the CT's grid
        mask = load_ct(case.label)
    if mask.hu.shape != vol.hu.shape or not np.allclose(mask.affine_ras, vol.affine_ras, atol=1e-3):
        raise CTLoadError(
            f"the mask of {case.structure!r} ({mask.description}) is not on the CT's grid ({vol.description}); "
            "it does not belong to this image"
        )
    return mask.hu > mask.hu.min()


def load_volume(case: Case, label_ids: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(hu, gt, spacing_mm) of a case: float32 (Z, Y, X) HU, bool (Z, Y, X) target, display
    orientation, and the voxel size (dz, dy, dx) in mm.

    The target is every label > 0, or the labels in ``label_ids`` when given (label maps only; a
    structure mask is its own target). Raises ValueError (CTLoadError) with a readable message.
    """
    if case.structure is not None and label_ids:
        raise ValueError(f"--label-ids selects labels of a label map; {case.name} is a single-structure mask")
    vol = _load_image(case.image)
    if case.structure is not None:
        gt = _structure_mask(case, vol)
    else:
        lab = read_nifti_mask(case.label, like=vol)
        gt = np.isin(lab, list(label_ids)) if label_ids else lab > 0
    return vol.hu, gt, vol.spacing_mm


def thicken(hu: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float], n: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """The volume as a scan with ``n``-times thicker slices: every ``n`` consecutive axial slices
    averaged into one (HU, as a thick-slice reconstruction averages the tissue of its slab), the
    target where at least half of the slab is target, the slice spacing ``n`` times larger.
    Trailing slices that do not fill a slab are dropped. ``hu``, ``gt``: (Z, Y, X); ``n`` = 1
    returns the volume unchanged. (A check of propagation at clinical slice spacings on a
    thin-slice scan: 1.6 mm × 3 = 4.8 mm.)"""
    if n < 1:
        raise ValueError(f"thick slices: n must be >= 1, got {n}")
    if n == 1:
        return hu, gt, tuple(float(s) for s in spacing_mm)
    k = hu.shape[0] // n
    if k < 1:
        raise ValueError(f"--thick-slices {n}: the volume has only {hu.shape[0]} slices")
    z = k * n
    thick_hu = hu[:z].reshape(k, n, *hu.shape[1:]).mean(1, dtype=np.float32)
    thick_gt = gt[:z].reshape(k, n, *gt.shape[1:]).mean(1, dtype=np.float32) >= 0.5
    dz, dy, dx = (float(s) for s in spacing_mm)
    return thick_hu, thick_gt, (dz * n, dy, dx)


def thin(hu: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float], n: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """The volume as a proxy for a scan with ``n``-times thinner slices: ``n`` - 1 slices inserted
    between each pair of neighbours, their HU interpolated linearly, the target by shape (the
    two slices' signed distance maps in mm, weighted by nearness: a structure that grows or
    shrinks between two slices does so gradually; where it ends between them, the nearer
    slice's mask, none halfway), the slice spacing ``n`` times smaller. ``hu``, ``gt``:
    (Z, Y, X); ``n`` = 1 returns the volume unchanged. A proxy, not a thin-slice scan: the inserted slices show no anatomy the
    stored ones do not and are less noisy (a midway slice by 1/√2; ``--noise-hu`` adds it back).
    What it checks is propagation over ``n`` times as many, more alike steps: whether a mask
    drifts when each step changes little (1.6 mm × 1/2 = 0.8 mm)."""
    if n < 1:
        raise ValueError(f"thin slices: n must be >= 1, got {n}")
    dz, dy, dx = (float(s) for s in spacing_mm)
    if n == 1:
        return hu, gt, (dz, dy, dx)
    if hu.shape[0] < 2:
        raise ValueError(f"--thin-slices {n}: the volume has only {hu.shape[0]} slice")

    def signed_mm(m: np.ndarray) -> np.ndarray:  # < 0 inside, > 0 outside
        return (ndimage.distance_transform_edt(~m, sampling=(dy, dx))
                - ndimage.distance_transform_edt(m, sampling=(dy, dx))).astype(np.float32)

    gt = gt.astype(bool)
    has = gt.any(axis=(1, 2))
    z_out = (hu.shape[0] - 1) * n + 1
    thin_hu = np.empty((z_out, *hu.shape[1:]), np.float32)
    thin_gt = np.zeros((z_out, *gt.shape[1:]), bool)
    thin_hu[::n], thin_gt[::n] = hu, gt
    dist: dict[int, np.ndarray] = {}
    for z in range(hu.shape[0] - 1):
        for k in range(1, n):
            w = k / n
            thin_hu[z * n + k] = (1 - w) * hu[z] + w * hu[z + 1]
            if has[z] and has[z + 1]:
                for zz in (z, z + 1):
                    if zz not in dist:
                        dist[zz] = signed_mm(gt[zz])
                thin_gt[z * n + k] = (1 - w) * dist[z] + w * dist[z + 1] < 0
            elif has[z] or has[z + 1]:  # the structure ends between the two: the nearer slice's mask, none halfway
                thin_gt[z * n + k] = gt[z] if 2 * k < n else gt[z + 1] if 2 * k > n else False
        dist.pop(z, None)
    return thin_hu, thin_gt, (dz / n, dy, dx)


NOISE_GRAIN_PX = 0.75  # the added noise's correlation: a Gaussian of this σ in px, as a soft reconstruction kernel's


def add_noise(hu: np.ndarray, sigma_hu: float, seed: int, case: str) -> np.ndarray:
    """The volume as a noisier (lower-dose) scan of the same patient: ``hu`` (Z, Y, X) plus
    zero-mean Gaussian noise of standard deviation ``sigma_hu`` HU, correlated over about a
    pixel in-plane as CT noise is (white noise blurred by a Gaussian of ``NOISE_GRAIN_PX`` px,
    each slice's field rescaled to ``sigma_hu``). Noise adds in quadrature to the scan's own: a
    scan at 15 HU with ``sigma_hu`` 25 has about 29. Deterministic per (``seed``, ``case``), so
    every method and every rerun sees the same noisy scan. ``sigma_hu`` 0 returns ``hu`` itself."""
    if not sigma_hu >= 0:
        raise ValueError(f"noise: sigma must be >= 0 HU, got {sigma_hu}")
    if sigma_hu == 0:
        return hu
    from scipy import ndimage

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(case.encode())]))
    out = np.asarray(hu, np.float32).copy()
    for z in range(out.shape[0]):
        n = ndimage.gaussian_filter(rng.standard_normal(out.shape[1:]).astype(np.float32), NOISE_GRAIN_PX)
        out[z] += (float(sigma_hu) / (float(n.std()) + 1e-12)) * n
    return out


def widen_fov(hu: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float], fov_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The volume as a scan with a larger field of view at the same pixel size: each slice
    padded with air (-1000 HU, no target) on all four sides, evenly, to ``fov_mm`` mm on its
    longer side (the other side by as many pixels), so the body and its organs take a smaller part of the
    slice. A model that sees the whole slice on a fixed grid then sees them smaller: a check
    that a click's answer does not depend on the scanner's field of view (3D-IRCADb's is about
    290 mm, abdominal scans' often 350-500). ``fov_mm`` 0 returns the volume unchanged;
    one smaller than the scan's own is refused."""
    if not fov_mm >= 0:
        raise ValueError(f"field of view must be >= 0 mm, got {fov_mm}")
    if fov_mm == 0:
        return hu, gt
    _, dy, dx = (float(s) for s in spacing_mm)
    ny, nx = hu.shape[1:]
    own_mm = max(ny * dy, nx * dx)
    if fov_mm < own_mm - 1e-6:
        raise ValueError(f"field of view {fov_mm:g} mm is smaller than the scan's own ({own_mm:.0f} mm)")
    extra = int(round((fov_mm - own_mm) / (dy if ny * dy >= nx * dx else dx)))
    pad = ((0, 0), (extra // 2, extra - extra // 2), (extra // 2, extra - extra // 2))
    return np.pad(np.asarray(hu, np.float32), pad, constant_values=HU_AIR), np.pad(np.asarray(gt, bool), pad)


def load_case(case: Case, label_ids: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(hu, gt) of a case: float32 (Z, Y, X) HU and bool (Z, Y, X) target (see :func:`load_volume`)."""
    hu, gt, _ = load_volume(case, label_ids)
    return hu, gt


def scored_slices(case: Case, label_ids: Sequence[int] = (), mode: str = "all", min_area_px: int = 1) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The slices of a case to score, ``{z: (hu (Y, X) float32, gt (Y, X) bool)}``, copied out of
    the volume so that the volume itself can be freed (see :func:`pick_slices` for ``mode``)."""
    hu, gt = load_case(case, label_ids)
    return slices_of(hu, gt, mode, min_area_px)


def slices_of(hu: np.ndarray, gt: np.ndarray, mode: str = "all", min_area_px: int = 1) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{z: (hu[z], gt[z])}`` (copies) of the slices :func:`pick_slices` scores. ``hu``, ``gt``: (Z, Y, X)."""
    return {z: (hu[z].copy(), gt[z].copy()) for z in pick_slices(gt, mode, min_area_px)}


def pick_slices(gt: np.ndarray, mode: str = "all", min_area_px: int = 1) -> list[int]:
    """Axial slice indices to score: every slice with at least ``min_area_px`` target pixels
    (``all``) or the one with the largest target area (``largest``). ``gt``: (Z, Y, X) bool."""
    if mode not in SLICE_MODES:
        raise ValueError(f"unknown slice mode {mode!r}; use one of {SLICE_MODES}")
    area = gt.reshape(gt.shape[0], -1).sum(1)
    zs = [int(z) for z in np.nonzero(area >= max(min_area_px, 1))[0]]
    if mode == "largest" and zs:
        zs = [int(np.argmax(area))]
    return zs


def _repeat_factor(a: np.ndarray) -> float:
    """How many times, on average, each row of ``a`` (2D) is repeated by the next ones: 1 for a
    natural image; k for one enlarged k-fold by nearest-neighbour interpolation. Rows that are
    constant (air, padding) do not count."""
    rows = a[np.ptp(a, axis=1) > 0]
    if len(rows) < 2:
        return 1.0
    same = float(np.all(rows[1:] == rows[:-1], axis=1).mean())
    return 1.0 / max(1.0 - same, 1e-6)


def upsampling_note(hu: np.ndarray, spacing_mm: Sequence[float] | None = None) -> str | None:
    """A warning when a volume was enlarged by repeating voxels (nearest-neighbour upsampling),
    else None. ``hu``: (Z, Y, X). Such a volume has fewer distinct slices than it shows (runs of
    identical slices) and/or blocks of identical pixels in-plane: its finer grid carries no
    detail, and its 3D figures in slices (z-extent) count repeated slices."""
    zs = [k for k in range(hu.shape[0]) if np.ptp(hu[k]) > 0]  # constant slices (padding) do not count
    if not zs:
        return None
    z = len(zs)
    distinct = 1 + int(sum(not np.array_equal(hu[a], hu[b]) for a, b in zip(zs, zs[1:])))
    mid = hu[zs[z // 2]]
    block = min(_repeat_factor(mid), _repeat_factor(mid.T))
    parts = []
    if distinct < z:
        parts.append(f"{distinct} distinct slices among {z} (each shown {z / distinct:.1f} times on average)")
    if block >= 1.5:
        parts.append(f"blocks of about {block:.0f} × {block:.0f} identical pixels in-plane")
    if not parts:
        return None
    src = ""
    if spacing_mm is not None:
        dz, dy, dx = (float(s) for s in spacing_mm)
        src = (f"; its real resolution is about {dy * max(block, 1):.2g} × {dx * max(block, 1):.2g} × "
               f"{dz * z / distinct:.2g} mm, not the {dy:.2g} × {dx:.2g} × {dz:.2g} mm of its voxel grid")
    return " and ".join(parts) + ": upsampled by repeating voxels" + src


def make_synthetic_msd(
    dest: str | Path, task: str = "colon", n_cases: int = 3, n_slices: int = 4, size_px: int = 192, seed: int = 0
) -> Path:
    """Write a small synthetic task in MSD layout and return its folder.

    Each case is ``n_slices`` independent slices rendered by :func:`iunet.data.render_ct` from
    :func:`iunet.data.synthetic_labels` (one random blob is the target) between two slices
    without target, saved as int16 HU and uint8 label NIfTIs named like the real task
    (``colon_001.nii.gz`` for ``task="colon"``, ``spleen_001.nii.gz`` for ``spleen``).
    Deterministic for ``seed``. It is *not* CT of any patient: numbers on it only check plumbing.
    """
    task = task.lower()
    root = Path(dest) / f"Task{'10_Colon' if task == 'colon' else '09_Spleen'}_synthetic"
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2024])
    # index (x, y, z) → world: x to patient left, y posterior, z superior = display orientation
    affine = np.diag([-0.8, -0.8, 5.0, 1.0])
    training = []
    for i in range(1, n_cases + 1):
        name = f"{task}_{i:03d}.nii.gz"
        hu = np.empty((n_slices + 2, size_px, size_px), np.float32)
        gt = np.zeros(hu.shape, np.uint8)
        for z in range(n_slices + 2):
            sl = synthetic_labels(size_px, rng)
            if 0 < z <= n_slices:
                gt[z] = choose_target(sl, rng)
            hu[z] = render_ct(sl, rng)
        for arr, sub, dtype in ((np.clip(np.rint(hu), -1024, 3071), "imagesTr", np.int16), (gt, "labelsTr", np.uint8)):
            nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0).astype(dtype), affine), str(root / sub / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": f"synthetic ({task} layout)",
        "description": "SYNTHETIC slices rendered by iunet.data; not patient data",
        "labels": {"0": "background", "1": "target"},
        "numTraining": n_cases,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
