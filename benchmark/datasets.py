"""MSD task folders: case discovery, case selection (split), slice selection, and a built-in
synthetic dataset in the same layout.

An MSD task folder (Task09_Spleen, Task10_Colon, or any folder of that layout) holds
``dataset.json``, ``imagesTr/<case>.nii.gz`` and ``labelsTr/<case>.nii.gz``; macOS copies add
``._<case>.nii.gz`` resource files, which are skipped. A case's name is its file name without
``.nii.gz`` (``spleen_8``, ``colon_001``). Volumes are read with :mod:`iunet.ct_io` in the
display orientation (Z, Y, X), so slices look the way the app shows them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from iunet.ct_io import load_ct, read_nifti_mask
from iunet.data import choose_target, render_ct, synthetic_labels

SLICE_MODES = ("all", "largest")


@dataclass(frozen=True)
class Case:
    """One labelled case of a task folder."""

    name: str
    image: Path
    label: Path


def _case_name(path: Path) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", path.name)


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
    return [_case_name(Path(n)) for n in names if n]


def select_cases(cases: Sequence[Case], names: Sequence[str]) -> list[Case]:
    """The cases called ``names`` (in that order); empty ``names`` = all. Unknown names raise."""
    if not names:
        return list(cases)
    by_name = {c.name: c for c in cases}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"unknown case(s) {missing}; this folder has: {', '.join(by_name)}")
    return [by_name[n] for n in names]


def load_case(case: Case, label_ids: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(hu, gt) of a case: float32 (Z, Y, X) HU and bool (Z, Y, X) target, display orientation.

    The target is every label > 0, or the labels in ``label_ids`` when given.
    """
    vol = load_ct(case.image)
    lab = read_nifti_mask(case.label, like=vol)
    gt = np.isin(lab, list(label_ids)) if label_ids else lab > 0
    return vol.hu, gt


def scored_slices(case: Case, label_ids: Sequence[int] = (), mode: str = "all", min_area_px: int = 1) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The slices of a case to score, ``{z: (hu (Y, X) float32, gt (Y, X) bool)}``, copied out of
    the volume so that the volume itself can be freed (see :func:`pick_slices` for ``mode``)."""
    hu, gt = load_case(case, label_ids)
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
