"""iunet: interactive segmentation of CT with an interactive U-Net (IU-Net).

Implements Pirabakaran & Khan, "Interactive segmentation using U-Net with weight map and
dynamic user interactions": click maps as extra input channels, a Gaussian boundary weight
map and click weights inside a weighted Dice loss, and a click radius that follows the size
of the object (α · area). Conventions: volumes (Z, Y, X), slices (Y, X), clicks (y, x),
intensities in Hounsfield units, names carry their units.

Typical use::

    import iunet
    vol = iunet.load_ct("case.nii.gz")                 # HU (Z, Y, X), display orientation
    predictor = iunet.Predictor("weights/iunet_agnostic.safetensors")
    session = iunet.Session(predictor, vol.hu[vol.n_slices // 2])
    mask = session.add_click(250, 300, positive=True)  # (Y, X) bool
    session.undo()
    predictor3d = iunet.Predictor("weights/iunet_agnostic3d.safetensors")  # the model that propagates
    volume = iunet.VolumeSession(predictor3d, vol.hu, spacing_mm=vol.spacing_mm)
    mask3d = volume.add_click(z, y, x, positive=True)  # (Z, Y, X) bool, carried to the neighbouring slices
    iunet.save_mask_nifti(vol, mask3d, "mask.nii.gz")   # on the input file's own voxel grid
"""
from .clicks import Click, ClickSize, click_radius_px, encode_clicks
from .ct_io import CTLoadError, CTVolume, export_dicom_seg, load_ct, read_nifti_mask, save_mask_nifti, save_mask_png
from .inference import Predictor, Session, VolumeSession, ZoomIn, ZoomOut, propagate, resolve_device, step_sessions
from .losses import dice_loss, weighted_dice_loss
from .metrics import auc, dice, noc
from .model import Checkpoint, InputConfig, ModelConfig, UNet, load_checkpoint, read_header, save_checkpoint
from .robot import PROTOCOLS, component_click, next_clicks, paper_pair, ritm_click
from .weight_maps import boundary_weight_map, click_weight_map, combined_weight_map
from .windowing import WINDOW_PRESETS, apply_window, get_window, window_to_uint8

__version__ = "0.1.0"
__all__ = [
    "Click", "ClickSize", "click_radius_px", "encode_clicks",
    "CTLoadError", "CTVolume", "export_dicom_seg", "load_ct", "read_nifti_mask", "save_mask_nifti", "save_mask_png",
    "Predictor", "Session", "VolumeSession", "ZoomIn", "ZoomOut", "propagate", "resolve_device", "step_sessions",
    "dice_loss", "weighted_dice_loss", "auc", "dice", "noc",
    "Checkpoint", "InputConfig", "ModelConfig", "UNet", "load_checkpoint", "read_header", "save_checkpoint",
    "PROTOCOLS", "component_click", "next_clicks", "paper_pair", "ritm_click",
    "boundary_weight_map", "click_weight_map", "combined_weight_map",
    "WINDOW_PRESETS", "apply_window", "get_window", "window_to_uint8",
]
