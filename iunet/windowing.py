"""HU display windows: (level_hu, width_hu) presets and the linear HU → [0, 1] mapping.

A window keeps the HU range ``[level_hu - width_hu / 2, level_hu + width_hu / 2]`` and maps it
linearly onto [0, 1] (black → white); values outside are clipped. This is the plain linear
window radiologists set on a workstation (we do not use DICOM's ``level - 0.5`` variant: the
half-HU difference is invisible and the plain form is easier to check by hand).
"""

from __future__ import annotations

import numpy as np

HU_AIR = -1000.0  # air: what lies around the body (and a zoomed-out view's margin)

# (level_hu, width_hu) per preset name; common radiology defaults.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "soft_tissue": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
}


def _check_window(level_hu: float, width_hu: float) -> tuple[float, float]:
    level_hu, width_hu = float(level_hu), float(width_hu)
    if not np.isfinite(level_hu) or not np.isfinite(width_hu):
        raise ValueError(f"window level and width must be finite numbers, got level={level_hu} HU, width={width_hu} HU")
    if width_hu <= 0:
        raise ValueError(f"window width must be > 0 HU, got {width_hu} HU")
    return level_hu, width_hu


def apply_window(hu: np.ndarray, level_hu: float, width_hu: float) -> np.ndarray:
    """Window HU values to display intensities.

    Args:
        hu: array of any shape (e.g. a (Y, X) slice or a (Z, Y, X) volume), Hounsfield units.
        level_hu: window centre in HU.
        width_hu: window width in HU, > 0.

    Returns:
        float32 array of the same shape with values in [0, 1]:
        ``clip((hu - (level_hu - width_hu / 2)) / width_hu, 0, 1)``.
        NaN inputs stay NaN (loaders reject NaN, so none should arrive here).
    """
    level_hu, width_hu = _check_window(level_hu, width_hu)
    lower_hu = level_hu - width_hu / 2.0
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(lower_hu)) / np.float32(width_hu)
    return np.asarray(np.clip(scaled, 0.0, 1.0), dtype=np.float32)


def window_to_uint8(hu: np.ndarray, level_hu: float, width_hu: float) -> np.ndarray:
    """Window HU values to 8-bit grey levels for display or PNG export.

    Args/shape as :func:`apply_window`. Returns a uint8 array of the same shape,
    ``round(apply_window(...) * 255)``: the lower window edge → 0, the upper edge → 255.
    """
    return np.rint(apply_window(hu, level_hu, width_hu) * 255.0).astype(np.uint8)


def get_window(name: str) -> tuple[float, float]:
    """Return the (level_hu, width_hu) preset called ``name``.

    Case, surrounding spaces and "-"/" " versus "_" are ignored ("Soft tissue" → "soft_tissue").
    Raises ValueError naming the valid presets when ``name`` is unknown.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in WINDOW_PRESETS:
        valid = ", ".join(sorted(WINDOW_PRESETS))
        raise ValueError(f"unknown window preset {name!r}; valid presets are: {valid}")
    return WINDOW_PRESETS[key]
