"""The files of a run folder: what ``runner`` writes and ``report`` reads, and nothing else.

A run folder holds ``results.csv`` (one row per case × slice × method × protocol × k, fields
:data:`FIELDS`), ``cases_done.txt`` (cases whose rows are complete), ``run.json`` (the
configuration with the checkpoints' SHA-256, versions, status) and ``split.json``. Rows are
appended one case group at a time, flushed and fsynced before the group's cases are marked done,
so a killed run resumes without losing or duplicating rows (:func:`prepare_out`).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# ``slice`` is empty for a row about a whole volume (the ``volume`` protocol), whose
# ``z_err_slices`` is the z-extent error (iunet.evaluation.z_extent_error_slices); empty for slices
FIELDS = ("case", "slice", "method", "protocol", "click", "n_clicks", "dice", "ms", "inter_px", "pred_px", "gt_px", "z_err_slices")
SYNTHETIC_BANNER = "SYNTHETIC DATA: no --data given, so this runs on rendered toy slices, not on CT of patients; its numbers only check that the benchmark works"


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (checkpoints are recorded by content, not by name)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require_run_folder(folder: Path, files: tuple[str, ...] = ("run.json", "results.csv")) -> None:
    """SystemExit, in one line, unless ``folder`` is a run folder holding ``files`` (the commands
    that read a run folder: ``report``, ``compare``)."""
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder; give the --out folder of a benchmark run")
    missing = [n for n in files if not (folder / n).is_file()]
    if missing:
        raise SystemExit(f"error: {folder} is not a benchmark run folder: no {' and no '.join(missing)} "
                         f"(`python -m benchmark run --out {folder}` writes {'it' if len(missing) == 1 else 'them'})")


def read_rows(csv_path: str | Path) -> list[dict]:
    """Complete rows of a results CSV (a line cut short by a kill has missing fields and is skipped)."""
    with open(csv_path, newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values() and r.get("gt_px") not in (None, "")]


def append_rows(out: Path, rows: list[dict], cases: list[str]) -> None:
    """Append a group's rows, then mark its cases done; both flushed to disk in that order."""
    csv_path = out / "results.csv"
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS, restval="")
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    with open(out / "cases_done.txt", "a") as f:
        f.write("".join(c + "\n" for c in cases))
        f.flush()
        os.fsync(f.fileno())


def prepare_out(out: Path, ident: dict, resume: bool = False, overwrite: bool = False) -> set[str]:
    """Make the run folder ``out`` ready and return the cases already done there (resume).

    ``ident``: what decides the numbers (the configuration as stored in ``run.json["config"]``);
    results of another configuration are refused unless ``overwrite`` discards them. ``resume``
    demands that there is something to resume. Rows of cases not marked done (an interrupted
    group, a line cut short) are dropped.
    """
    out.mkdir(parents=True, exist_ok=True)
    csv_path, done_path, meta_path = out / "results.csv", out / "cases_done.txt", out / "run.json"
    has_rows = csv_path.exists() or done_path.exists()
    if has_rows and overwrite:
        for p in (csv_path, done_path):
            p.unlink(missing_ok=True)
        has_rows = False
    if not has_rows:
        if resume:
            raise SystemExit(f"--resume: {out} holds no results to resume")
        return set()
    prev = json.loads(meta_path.read_text()).get("config") if meta_path.exists() else None
    if prev is None or _comparable(prev) != _comparable(ident):
        diff = sorted(k for k in set(ident) | set(prev or {}) if _comparable(prev or {}).get(k) != _comparable(ident).get(k))
        raise SystemExit(
            f"{out} holds results of another configuration (differs in: {', '.join(diff) or 'run.json missing'}); "
            "use a new --out, or --overwrite to discard them"
        )
    done = set(done_path.read_text().split()) if done_path.exists() else set()
    rows = read_rows(csv_path) if csv_path.exists() else []
    # rewrite without the rows of an interrupted group (and any line a kill cut short)
    tmp = csv_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(r for r in rows if r["case"] in done)
    tmp.replace(csv_path)
    return done


def _comparable(ident: dict) -> dict:
    """A run's configuration as far as it decides the numbers: a checkpoint by its SHA-256, not
    by the path it was given as (the same file named another way is the same run)."""
    out = dict(ident)
    for key in ("weights", "unet_weights"):
        if isinstance(out.get(key), dict):
            out[key] = out[key].get("sha256")
    return out


def environment() -> dict:
    """Versions, platform and the git commit of the repository (with a dirty flag), for run.json."""
    import nibabel
    import scipy
    import skimage
    import torch

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__, "scipy": scipy.__version__,
        "scikit-image": skimage.__version__, "nibabel": nibabel.__version__, "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch_threads": torch.get_num_threads(),
        "git_commit": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain", "--", "iunet", "benchmark")),
    }
