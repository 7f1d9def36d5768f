"""Do the app's fast paths (bf16 + channels-last; fp32 in ONNX Runtime) give the same Dice as
fp32 in torch? A quick check.

    python -m iunet_app.precision_check --image ../shared/data/Task09_Spleen_sample/imagesTr/spleen_8.nii.gz \\
        --label ../shared/data/Task09_Spleen_sample/labelsTr/spleen_8.nii.gz --weights weights/iunet_spleen.safetensors

Every slice with the label is segmented by the `ritm` robot (the click at the deepest error
pixel) through ``iunet.inference.Session``, once per precision, with the checkpoint's own click
size; prints the mean per-slice Dice after 1 … k clicks for each precision (ONNX Runtime where
onnxruntime is installed) and each one's largest difference from fp32 in points. The app uses a
fast path only where this difference is small (docs/app.md gives the figures and the command).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from iunet.inference import Predictor, Session, onnx_available
from iunet.io import load_ct, read_nifti_mask
from iunet.metrics import dice
from iunet.robot import ritm_click


def dice_curves(
    predictor: Predictor, hu_zyx: np.ndarray, label_zyx: np.ndarray, slices: list[int], n_clicks: int
) -> np.ndarray:
    """(len(slices), n_clicks) Dice of the `ritm` robot's clicks on each slice (label > 0 = target)."""
    out = np.zeros((len(slices), n_clicks))
    for i, z in enumerate(slices):
        gt = label_zyx[z] > 0
        s = Session(predictor, hu_zyx[z])
        clicked: list[tuple[int, int]] = []
        for k in range(n_clicks):
            point = ritm_click(gt, s.mask if s.clicks else None, clicked)
            if point is not None:
                s.add_click(*point)
                clicked.append(point[:2])
            out[i, k] = dice(s.mask, gt)
    return out


def compare(image: Path, label: Path, weights: Path, n_clicks: int = 5, max_slices: int | None = None) -> dict:
    """Mean Dice (%) after 1 … n_clicks for fp32, bf16 + channels-last and (when installed) fp32
    in ONNX Runtime; ``max_gap_points``: bf16's largest gap to fp32, ``onnx_max_gap_points`` ONNX
    Runtime's."""
    vol = load_ct(image)
    lab = read_nifti_mask(label, like=vol)
    slices = [int(z) for z in np.flatnonzero(lab.any(axis=(1, 2)))]
    if max_slices is not None:
        slices = slices[:: max(1, len(slices) // max_slices)][:max_slices]
    result: dict = {"slices": len(slices)}
    variants = {"fp32": {}, "bf16": {"dtype": "bf16", "channels_last": True}}
    if onnx_available():
        variants["onnx"] = {"runtime": "onnx"}
    for name, kwargs in variants.items():
        predictor = Predictor(weights, device="cpu", **kwargs)
        t0 = time.perf_counter()
        result[name] = 100.0 * dice_curves(predictor, vol.hu, lab, slices, n_clicks).mean(axis=0)
        result[f"{name}_s"] = time.perf_counter() - t0
    result["max_gap_points"] = float(np.abs(result["fp32"] - result["bf16"]).max())
    if "onnx" in result:
        result["onnx_max_gap_points"] = float(np.abs(result["fp32"] - result["onnx"]).max())
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Dice of fp32 vs bf16 + channels-last and ONNX Runtime on one labelled volume.")
    p.add_argument("--image", required=True, help="CT volume (NIfTI, DICOM folder, …)")
    p.add_argument("--label", required=True, help="label NIfTI on the image's grid (> 0 = target)")
    p.add_argument("--weights", required=True, help="an interactive IU-Net checkpoint")
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--max-slices", type=int, default=None, help="at most this many slices (evenly spread)")
    a = p.parse_args(argv)
    r = compare(Path(a.image), Path(a.label), Path(a.weights), a.clicks, a.max_slices)
    print(f"{r['slices']} slices, mean Dice % after 1…{a.clicks} ritm clicks")
    for name in ("fp32", "bf16", "onnx"):
        if name in r:
            print(f"  {name:5s} " + " ".join(f"{v:5.1f}" for v in r[name]) + f"   ({r[name + '_s']:.1f} s)")
    print(f"  largest difference from fp32: bf16 {r['max_gap_points']:.2f} points"
          + (f", onnx {r['onnx_max_gap_points']:.2f} points" if "onnx" in r else ""))


if __name__ == "__main__":
    main()
