"""Plausibility checks of a set of 16 landmarks (data_prep/rois.py order).

A detector always returns 16 points, right or wrong. Cropping wrong points
gives the BMD model the wrong bones and a confident wrong number, so data prep
and screening run these checks and flag the study instead of cropping it
silently. Each check is loose enough that every ground-truth set of the
synthetic cohorts passes, and catches what a failed detection looks like:
points in the letterbox padding, swapped sides, a flipped spine, collapsed
points, an uncertain heatmap.

Geometry is judged in the patient frame (origin C7, y along C7 -> T12), so
a rotated patient is not flagged; the spine check itself uses the image frame.
"""

from __future__ import annotations

import numpy as np

from data_prep import rois

# Landmarks with a softmax mass near their peak below this are uncertain
# (default; a detector's config sets its own, configs/landmarks.py).
MIN_CONFIDENCE = 0.5
# C7 -> T12 may lean at most this far from the image vertical.
MAX_SPINE_TILT_DEG = 30.0
# Thorax width / spine length (C7-T12), both in pixels: about 1 in adults.
WIDTH_TO_SPINE = (0.5, 2.0)
# Thorax width in mm when the pixel spacing is known (from the header only: with
# a spacing estimated from the same landmarks the check would be circular).
THORAX_MM = (120.0, 500.0)
# Typical adult thorax width (mm) as rois.thorax_width measures it: the mean
# distance between the four pairs of lateral rib-cage landmarks, from the upper
# to the lower chest. Adult PA films show a maximal internal thoracic diameter
# of about 24-30 cm (the cardiothoracic-ratio denominator; narrower at the upper
# landmarks); the synthetic cohort's anatomy gives 266 +- 20 mm
# (tests/test_dicom_spacing.py checks the estimate against its DICOM spacing).
# Between adults it varies by about 8% (SD), so an estimated spacing is good to
# about +-15%: enough for reports in mm, not for measurements.
THORAX_WIDTH_MM = 265.0
# Neighbouring landmarks (LANDMARK_EDGES) closer than this share of the
# thorax width have collapsed onto each other.
MIN_EDGE_SHARE = 0.02
# Right (image left) / left landmark pairs, mirror images of each other.
MIRROR_PAIRS = ((0, 3), (1, 4), (2, 5), (6, 10), (7, 11), (8, 12), (9, 13))
CHECKS = ("off_image", "low_confidence", "spine", "left_right", "vertical_order",
          "degenerate")


def _names(indices) -> str:
  return ", ".join(rois.LANDMARK_NAMES[i] for i in indices)


def patient_frame(landmarks: np.ndarray, angle: float) -> np.ndarray:
  """Landmarks [16, 2] turned by -angle about C7 (C7 at the origin)."""
  lm = np.asarray(landmarks, np.float64)
  c, s = np.cos(-angle), np.sin(-angle)
  return (lm - lm[14]) @ np.array([[c, -s], [s, c]]).T


def estimate_spacing(landmarks) -> float:
  """mm per pixel estimated from the 16 landmarks (THORAX_WIDTH_MM over the
  thorax width in pixels), for films whose header states no usable spacing;
  NaN for degenerate landmarks. Never pass it to check_landmarks (circular)."""
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != (rois.NUM_LANDMARKS, 2) or not np.all(np.isfinite(lm)):
    return float("nan")
  width = rois.thorax_width(lm)
  return THORAX_WIDTH_MM / width if width > 0 else float("nan")


def check_landmarks(landmarks, shape, confidence=None, pixel_spacing=float("nan"),
                    min_confidence: float = MIN_CONFIDENCE) -> list[str]:
  """Failed checks as "name: detail" strings; empty when the set is plausible.

  landmarks: [16, 2] in pixels of an image of `shape` (H, W); confidence:
  [16] in [0, 1] or None (given landmarks); pixel_spacing: mm per pixel from the
  DICOM header, NaN when unknown (the mm check is then skipped); never one
  estimated from the landmarks (estimate_spacing), which always passes it.
  """
  lm = np.asarray(landmarks, np.float64)
  h, w = shape
  flags = []
  if lm.shape != (rois.NUM_LANDMARKS, 2) or not np.all(np.isfinite(lm)):
    return ["degenerate: landmarks missing or not finite"]
  off = np.flatnonzero((lm[:, 0] < -0.5) | (lm[:, 0] > w - 0.5) |
                       (lm[:, 1] < -0.5) | (lm[:, 1] > h - 0.5))
  if off.size:
    flags.append(f"off_image: {_names(off)} outside the {w}x{h} image")
  if confidence is not None:
    conf = np.asarray(confidence, np.float64)
    low = np.flatnonzero(~(conf >= min_confidence))
    if low.size:
      flags.append("low_confidence: " + ", ".join(
          f"{rois.LANDMARK_NAMES[i]} {conf[i]:.2f}" for i in low) + f" (< {min_confidence})")

  dx, dy = lm[15] - lm[14]
  tilt = np.degrees(np.arctan2(-dx, dy))
  upright = abs(tilt) <= MAX_SPINE_TILT_DEG
  if dy <= 0:
    flags.append("spine: C7 is not above T12")
  elif not upright:
    flags.append(f"spine: C7-T12 tilted {tilt:.0f} degrees (more than "
                 f"{MAX_SPINE_TILT_DEG:.0f})")
  q = patient_frame(lm, np.radians(tilt) if upright else 0.0)

  crossed = [(r, l) for r, l in MIRROR_PAIRS if q[r, 0] >= q[l, 0]]
  spine_x = np.interp(q[:, 1], [q[14, 1], q[15, 1]], [q[14, 0], q[15, 0]])
  wrong_side = [i for i in (2, 6, 7, 8, 9) if q[i, 0] >= spine_x[i]]
  wrong_side += [i for i in (5, 10, 11, 12, 13) if q[i, 0] <= spine_x[i]]
  if crossed or wrong_side:
    detail = [f"{rois.LANDMARK_NAMES[r]} not right of {rois.LANDMARK_NAMES[l]}"
              for r, l in crossed]
    if wrong_side:
      detail.append(f"{_names(wrong_side)} on the wrong side of the spine")
    flags.append("left_right: " + "; ".join(detail))

  y = q[:, 1]
  order = []
  for side, idx in (("right", (6, 7, 8, 9)), ("left", (10, 11, 12, 13))):
    if np.any(np.diff(y[list(idx)]) <= 0):
      order.append(f"{side} rib-cage points not top to bottom")
  if y[0:6].mean() >= y[[7, 11]].mean():
    order.append("clavicles not above the second rib-cage points")
  if y[14] >= min(y[6], y[10]):
    order.append("C7 not above the first rib-cage points")
  if y[15] <= max(y[7], y[11]):
    order.append("T12 not below the second rib-cage points")
  if order:
    flags.append("vertical_order: " + "; ".join(order))

  width = rois.thorax_width(lm)
  spine = float(np.hypot(dx, dy))
  shape_problems = []
  if not WIDTH_TO_SPINE[0] <= width / max(spine, 1e-9) <= WIDTH_TO_SPINE[1]:
    shape_problems.append(f"thorax width / spine length {width / max(spine, 1e-9):.2f} "
                          f"outside {WIDTH_TO_SPINE[0]}-{WIDTH_TO_SPINE[1]}")
  if np.isfinite(pixel_spacing) and pixel_spacing > 0:
    mm = width * pixel_spacing
    if not THORAX_MM[0] <= mm <= THORAX_MM[1]:
      shape_problems.append(f"thorax width {mm:.0f} mm outside "
                            f"{THORAX_MM[0]:.0f}-{THORAX_MM[1]:.0f} mm")
  edges = np.array(rois.LANDMARK_EDGES)
  lengths = np.linalg.norm(lm[edges[:, 0]] - lm[edges[:, 1]], axis=-1)
  short = edges[lengths < MIN_EDGE_SHARE * max(width, 1e-9)]
  if len(short):
    shape_problems.append("collapsed points " + ", ".join(
        f"{rois.LANDMARK_NAMES[a]}/{rois.LANDMARK_NAMES[b]}" for a, b in short))
  if shape_problems:
    flags.append("degenerate: " + "; ".join(shape_problems))
  return flags


def flag_names(flags) -> list[str]:
  """The check names of `check_landmarks` output, e.g. ['spine', 'left_right']."""
  return [f.split(":", 1)[0] for f in flags]
