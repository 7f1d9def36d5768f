"""Shared fixtures: a tiny random checkpoint, the real-data folder (tests skip without it)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("real data folder ../shared/data is absent")
    return SHARED_DATA


def make_checkpoint(path: Path, name: str = "test model", grid_px: int = 128, depth: int = 4) -> Path:
    """A small IU-Net with random (seeded) weights, written as a real checkpoint."""
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint

    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=depth)
    return save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=grid_px), name=name), path)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ct_dataset(hu_yx, ipp_lps, iop, spacing_rc, instance, uids, thickness_mm=2.0, intercept=-1024.0):
    """A minimal but proper CT Image Storage dataset: int16 pixels, slope 1, ``intercept``.

    ``uids`` = (study, series, frame of reference); ``spacing_rc`` = PixelSpacing (row, column) in
    mm; ``ipp_lps`` / ``iop`` in DICOM's LPS patient coordinates. Carries the study attributes
    that DICOM-SEG export (highdicom) needs.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "CT", "Phantom^Test", "PH001", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "20240101", "120000", "", ""
    ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = 3, "phantom", instance
    ds.ImagePositionPatient = [float(v) for v in ipp_lps]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(spacing_rc[0]), float(spacing_rc[1])]
    ds.SliceThickness = float(thickness_mm)
    ds.Rows, ds.Columns = np.asarray(hu_yx).shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, intercept, "HU"
    ds.PixelData = np.round(np.asarray(hu_yx) - intercept).astype(np.int16).tobytes()
    return ds


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 64-px-grid IU-Net with random weights: enough for plumbing tests."""
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint

    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=64), name="tiny"), path)
    return path
