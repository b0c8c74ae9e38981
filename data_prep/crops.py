"""One study's crops: the 14 landmark ROIs, the whole image and the patch
grids, as uint16. Shared by data prep and screening so their crops are
identical; light (no dataset writer)."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_prep import dicom_io, landmark_checks, rois


@dataclasses.dataclass(frozen=True)
class CropSpec:
  size: int
  grids: tuple[int, ...]


def check_landmarks(lm: np.ndarray, shape) -> str | None:
  h, w = shape
  if not np.all(np.isfinite(lm)):
    return "landmarks contain empty or non-numeric values"
  margin = 0.05
  if (lm[:, 0].min() < -margin * w or lm[:, 0].max() > (1 + margin) * w or
      lm[:, 1].min() < -margin * h or lm[:, 1].max() > (1 + margin) * h):
    return "landmarks lie outside the image"
  if rois.thorax_width(lm) < 0.1 * w:
    return "landmarks are implausible (thorax narrower than 10% of the image)"
  return None


def to_uint16(x: np.ndarray) -> np.ndarray:
  return np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)


def process_study(path: str, landmarks: np.ndarray, spec: CropSpec,
                  radiograph: dicom_io.Radiograph | None = None) -> dict:
  """DICOM -> crops; raises dicom_io.StudyError with the reason on failure.

  `radiograph` is the study already read (screening reuses it for its overlay);
  prep and screening share this one function so their crops are identical.
  """
  if radiograph is None:
    radiograph = dicom_io.read_radiograph(path)
  image = radiograph.image
  problem = check_landmarks(landmarks, image.shape)
  if problem:
    raise dicom_io.StudyError(path, problem)
  spacing, source = radiograph.pixel_spacing, radiograph.spacing_source
  if not np.isfinite(spacing):  # no usable spacing in the header: from the anatomy
    spacing = landmark_checks.estimate_spacing(landmarks)
    source = "estimated" if np.isfinite(spacing) else "unknown"
  out = {
      "rois": to_uint16(rois.crop_rois(image, landmarks, spec.size)),
      "whole": to_uint16(rois.whole_image(image, spec.size)),
      "pixel_spacing": np.float32(spacing),
      "spacing_source": source,  # for the manifest, not stored in the records
      "landmarks": np.asarray(landmarks, np.float32),
      "image_shape": np.asarray(image.shape, np.int32),
  }
  for g in spec.grids:
    out[f"patches_{g}"] = to_uint16(rois.patch_grid(image, g, spec.size))
  return out


