"""Reading frontal chest radiographs from DICOM into normalised float images.

Every failure raises `StudyError` whose message names the file and what to do;
batch jobs catch it, record it in their manifest and go on.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG")
FRONTAL_VIEWS = ("PA", "AP", "")


class StudyError(ValueError):
  """A study that cannot be used; the message says which file and why."""

  def __init__(self, path, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"{path}: {reason}")


@dataclasses.dataclass
class Radiograph:
  image: np.ndarray          # float32 [H, W] in [0, 1], bone bright
  pixel_spacing: float       # mm per pixel (row spacing); nan when not stated
  photometric: str
  modality: str
  bits_stored: int


def _spacing(ds) -> float:
  for tag in ("PixelSpacing", "ImagerPixelSpacing"):
    value = ds.get(tag)
    if value is not None and len(value) >= 1:
      try:
        return float(value[0])
      except (TypeError, ValueError):
        pass
  return float("nan")


def normalise(pixels: np.ndarray, low_pct: float = 0.5,
              high_pct: float = 99.5) -> np.ndarray:
  """Robust percentile rescale to [0, 1]; removes exposure and detector gain."""
  pixels = np.asarray(pixels, np.float32)
  # Python floats, so that NumPy 2 keeps the result float32.
  lo, hi = (float(v) for v in np.percentile(pixels, [low_pct, high_pct]))
  if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
    raise ValueError("image has no contrast (constant pixel values)")
  return np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)


def read_radiograph(path: str | os.PathLike) -> Radiograph:
  """Reads one frontal chest radiograph: modality LUT, VOI LUT, MONOCHROME1
  inversion and percentile normalisation, so bone is bright on any scanner."""
  path = os.fspath(path)
  try:
    ds = pydicom.dcmread(path)
  except FileNotFoundError:
    raise StudyError(path, "file not found") from None
  except Exception as e:  # pydicom raises many types for non-DICOM input
    raise StudyError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
  modality = str(ds.get("Modality", "")).upper()
  if modality and modality not in RADIOGRAPH_MODALITIES:
    raise StudyError(path, f"modality {modality} is not a radiograph (expected one of "
                     f"{', '.join(RADIOGRAPH_MODALITIES)}); only chest X-rays can be used")
  view = str(ds.get("ViewPosition", "")).upper()
  if view not in FRONTAL_VIEWS:
    raise StudyError(path, f"view position {view} is not frontal (PA/AP); lateral "
                     "views cannot be used")
  if "PixelData" not in ds:
    raise StudyError(path, "no pixel data in the file")
  photometric = str(ds.get("PhotometricInterpretation", "")).upper()
  if photometric not in ("MONOCHROME1", "MONOCHROME2"):
    raise StudyError(path, f"photometric interpretation {photometric or 'missing'}: "
                     "only greyscale (MONOCHROME1/2) radiographs can be used")
  try:
    pixels = ds.pixel_array
  except Exception as e:
    raise StudyError(path, f"pixel data cannot be decoded ({type(e).__name__}: {e}); "
                     "compressed files may need `pip install bmdjax[dicom-codecs]`") from None
  if pixels.ndim != 2:
    raise StudyError(path, f"expected one 2-D frame, got pixel array of shape {pixels.shape}")
  values = apply_modality_lut(pixels, ds)
  if "WindowCenter" in ds or "VOILUTSequence" in ds:
    values = apply_voi_lut(values, ds, index=0)
  values = np.asarray(values, np.float32)
  if photometric == "MONOCHROME1":
    values = -values
  try:
    image = normalise(values)
  except ValueError as e:
    raise StudyError(path, str(e)) from None
  return Radiograph(image=image, pixel_spacing=_spacing(ds), photometric=photometric,
                    modality=modality, bits_stored=int(ds.get("BitsStored", 0)))
