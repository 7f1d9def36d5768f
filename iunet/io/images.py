"""Plain images (PNG, JPEG, BMP, TIFF) → a one-slice :class:`CTVolume` with a documented HU mapping.

8-bit images are read as a screenshot windowed with the soft-tissue window (level 40, width
400): ``HU = -160 + v * 400 / 255``. 16-bit images are read as CT stored with the usual +1024
offset: ``HU = v - 1024``. 32-bit float TIFF values are taken as HU. Spacing is 1 mm.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .volume import ACCEPTED_INPUTS, MAX_SLICE_PX, CTLoadError, CTVolume, check_display_size, finish_volume

IMAGE_8BIT_LEVEL_HU = 40.0
IMAGE_8BIT_WIDTH_HU = 400.0
IMAGE_8BIT_LOWER_HU = IMAGE_8BIT_LEVEL_HU - IMAGE_8BIT_WIDTH_HU / 2.0
IMAGE_16BIT_OFFSET_HU = -1024.0
# An RGB image counts as a colour photo when more than this fraction of its pixels has channels
# that differ by more than COLOUR_SPREAD_LEVELS grey levels (JPEG noise on grey stays far below).
COLOUR_SPREAD_LEVELS = 16
COLOUR_PIXEL_FRACTION = 0.01
IMAGE_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "TIFF"}


def _too_large(what: str, exc: Exception) -> CTLoadError:
    """Pillow refuses images above ~179 million pixels before decoding them (DecompressionBombError)."""
    m = re.search(r"\((\d+) pixels\)", str(exc))
    size = f" ({int(m.group(1)):,} pixels)" if m else ""
    return CTLoadError(
        f"{what} is too large{size}; the largest slice accepted is {MAX_SLICE_PX}×{MAX_SLICE_PX} pixels "
        "(CT slices are usually 512×512)."
    )


def is_image_file(path: Path) -> bool:
    """True when Pillow recognises the file as an image (also when it is too large to open)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as probe:
            return probe.format is not None
    except Image.DecompressionBombError:
        return True  # an image, refused as too large by load_image
    except (UnidentifiedImageError, OSError, ValueError):
        return False
    except Exception:  # Pillow plugins raise assorted types on garbage
        return False


def image_to_hu(path: Path, what: str, max_voxels: int | None = None) -> np.ndarray:
    """A PNG/JPEG/BMP/TIFF → (Y, X) float32 HU with the documented grey-level mapping."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _too_large(what, exc) from exc
    except UnidentifiedImageError as exc:
        raise CTLoadError(f"{what} is not a recognised file. Accepted inputs: {ACCEPTED_INPUTS}.") from exc
    except Exception as exc:
        raise CTLoadError(f"{what} could not be opened as an image ({exc}).") from exc
    with img:
        if img.format not in IMAGE_FORMATS:
            raise CTLoadError(
                f"{what} is a {img.format} image; accepted image formats are PNG, JPEG, BMP and TIFF "
                f"(accepted inputs: {ACCEPTED_INPUTS})."
            )
        if getattr(img, "n_frames", 1) > 1 and img.format == "TIFF":
            raise CTLoadError(f"{what} is a multi-page TIFF; give one image per file, or the volume as DICOM or NIfTI.")
        width, height = img.size
        check_display_size((width, height, 1), what, max_voxels)
        try:
            img.load()
            img = ImageOps.exif_transpose(img)  # show photos the way viewers show them
        except Exception as exc:
            raise CTLoadError(f"{what}: the image data could not be decoded ({exc}); the file may be truncated.") from exc
        mode = img.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return np.asarray(img, dtype=np.float32) + np.float32(IMAGE_16BIT_OFFSET_HU)
        if mode == "I":
            v = np.asarray(img)
            if v.size and (v.min() < 0 or v.max() > 65535):
                raise CTLoadError(f"{what} holds 32-bit integer values outside 0…65535; expected an 8- or 16-bit greyscale image.")
            return v.astype(np.float32) + np.float32(IMAGE_16BIT_OFFSET_HU)
        if mode == "F":
            return np.asarray(img, dtype=np.float32)  # floating-point TIFF: taken as HU directly
        if mode in ("1", "L", "LA", "La"):
            grey = np.asarray(img.convert("L"), dtype=np.float32)
        else:
            rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
            spread = rgb.max(axis=2) - rgb.min(axis=2)
            if spread.size and np.mean(spread > COLOUR_SPREAD_LEVELS) > COLOUR_PIXEL_FRACTION:
                raise CTLoadError(
                    f"{what} looks like a colour photo (its red, green and blue channels differ); "
                    "a CT screenshot must be greyscale. Accepted inputs: " + ACCEPTED_INPUTS + "."
                )
            grey = rgb.mean(axis=2, dtype=np.float32)
    return np.float32(IMAGE_8BIT_LOWER_HU) + grey * np.float32(IMAGE_8BIT_WIDTH_HU / 255.0)


def load_image(path: Path, what: str, max_voxels: int | None = None) -> CTVolume:
    """A greyscale image as a one-slice volume (no geometry: 1 mm pixels, display orientation)."""
    hu_yx = image_to_hu(path, what, max_voxels)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # already in display orientation (L, P, S)
    data_xyz = hu_yx.T[:, :, None]
    return finish_volume(data_xyz, affine, "image", "image", what, ["no geometry in an image: 1 mm pixels assumed"])
