"""Landmark order and ROI geometry: the contract between synthesis, data prep,
the landmark detector and screening.

Image coordinates: x to the right, y down, in pixels of the stored image. A
frontal PA chest radiograph shows the patient's right side on the image left.

The 16 landmarks (paper, Sec. III-B):
  0-2   right clavicle: sternal end, middle, acromial end
  3-5   left clavicle:  sternal end, middle, acromial end
  6-9   right rib-cage lateral edge, top to bottom
  10-13 left rib-cage lateral edge, top to bottom
  14    C7 vertebral body centre
  15    T12 vertebral body centre

The 15 inputs of the ROI models, in this fixed order:
  0-1   right clavicle, medial then lateral half
  2-3   left clavicle, medial then lateral half
  4-7   right rib cage, one crop per rib landmark, top to bottom
  8-11  left rib cage, idem
  12    cervical (C7)
  13    lumbar (T12)
  14    the whole image
ROIs are squares whose side is a fixed fraction of the thorax width, turned
with the patient (the C7->T12 axis), so crops are invariant to position, scale
and in-plane rotation of the patient.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

NUM_LANDMARKS = 16
NUM_ROIS = 14  # local ROIs; the whole image is input number 15
NUM_INPUTS = NUM_ROIS + 1

LANDMARK_NAMES = (
    "r_clavicle_medial", "r_clavicle_mid", "r_clavicle_lateral",
    "l_clavicle_medial", "l_clavicle_mid", "l_clavicle_lateral",
    "r_rib_1", "r_rib_2", "r_rib_3", "r_rib_4",
    "l_rib_1", "l_rib_2", "l_rib_3", "l_rib_4",
    "c7", "t12",
)
ROI_NAMES = (
    "r_clavicle_medial", "r_clavicle_lateral",
    "l_clavicle_medial", "l_clavicle_lateral",
    "r_rib_1", "r_rib_2", "r_rib_3", "r_rib_4",
    "l_rib_1", "l_rib_2", "l_rib_3", "l_rib_4",
    "cervical_c7", "lumbar_t12",
)
INPUT_NAMES = ROI_NAMES + ("whole_image",)

# Side of every ROI square as a fraction of the thorax width.
ROI_SIDE = 0.14
# Graph of anatomical neighbours (used for overlays and plausibility checks).
LANDMARK_EDGES = (
    (0, 1), (1, 2), (3, 4), (4, 5), (0, 3),
    (6, 7), (7, 8), (8, 9), (10, 11), (11, 12), (12, 13),
    (14, 15), (2, 6), (5, 10),
)


def thorax_width(landmarks: np.ndarray) -> float:
  """Mean left-right distance between paired rib-cage landmarks (pixels)."""
  lm = np.asarray(landmarks, np.float64)
  return float(np.mean(np.linalg.norm(lm[10:14] - lm[6:10], axis=-1)))


def patient_angle(landmarks: np.ndarray) -> float:
  """In-plane rotation of the patient (radians, 0 = upright), from C7->T12."""
  lm = np.asarray(landmarks, np.float64)
  dx, dy = lm[15] - lm[14]
  return float(np.arctan2(-dx, dy))


def roi_boxes(landmarks: np.ndarray) -> tuple[np.ndarray, float, float]:
  """Centres [14, 2], side (pixels) and angle (radians) of the 14 local ROIs."""
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != (NUM_LANDMARKS, 2):
    raise ValueError(f"expected landmarks of shape (16, 2), got {lm.shape}")
  centres = np.concatenate([
      (lm[0:2] + lm[1:3]) / 2,   # right clavicle halves
      (lm[3:5] + lm[4:6]) / 2,   # left clavicle halves
      lm[6:10], lm[10:14],       # rib-cage edges
      lm[14:16],                 # C7, T12
  ])
  return centres, ROI_SIDE * thorax_width(lm), patient_angle(lm)


def box_corners(centre, side: float, angle: float) -> np.ndarray:
  """The 4 corners [4, 2] (x, y) of a square turned by `angle`, for drawing."""
  c, s = np.cos(angle), np.sin(angle)
  half = side / 2
  offsets = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
  rot = np.array([[c, -s], [s, c]])
  return np.asarray(centre, np.float64) + offsets @ rot.T


def crop_square(image: np.ndarray, centre, side: float, angle: float,
                size: int) -> np.ndarray:
  """Resample a turned square of `image` to size x size (bilinear, antialiased).

  Pixels outside the image read as 0 (black, i.e. no attenuation).
  """
  image = np.asarray(image, np.float32)
  scale = side / size  # source pixels per output pixel
  c, s = np.cos(angle), np.sin(angle)
  # Output grid in units of source pixels, centred on 0.
  t = (np.arange(size, dtype=np.float64) + 0.5) * scale - side / 2
  gx, gy = np.meshgrid(t, t)
  xs = centre[0] + c * gx - s * gy
  ys = centre[1] + s * gx + c * gy
  # Work on the bounding region only, blurred when downsampling.
  pad = int(np.ceil(2 * scale)) + 2
  x0 = max(int(np.floor(xs.min())) - pad, 0)
  x1 = min(int(np.ceil(xs.max())) + pad + 1, image.shape[1])
  y0 = max(int(np.floor(ys.min())) - pad, 0)
  y1 = min(int(np.ceil(ys.max())) + pad + 1, image.shape[0])
  if x1 <= x0 or y1 <= y0:
    return np.zeros((size, size), np.float32)
  region = image[y0:y1, x0:x1]
  ys, xs = ys - y0, xs - x0
  # Strong downsampling (the whole image, patches): average k x k blocks first,
  # so the Gaussian runs on 1/k^2 of the pixels with a k-times smaller sigma.
  # This was ~2/3 of data prep's time at 0.14-0.2 mm pixels.
  k = int(scale // 2)
  if k >= 2 and min(region.shape) >= 2 * k:
    h, w = (-(-n // k) * k for n in region.shape)  # edge-padded to whole blocks
    region = np.pad(region, ((0, h - region.shape[0]), (0, w - region.shape[1])), "edge")
    region = region.reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    ys, xs = (ys - (k - 1) / 2) / k, (xs - (k - 1) / 2) / k
    scale /= k
  if scale > 1.0:
    region = ndimage.gaussian_filter(region, sigma=0.45 * scale, mode="nearest")
  out = ndimage.map_coordinates(region, [ys, xs], order=1, mode="constant", cval=0.0)
  return out.astype(np.float32)


def crop_rois(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
  """The 14 local ROIs [14, size, size] in the order of ROI_NAMES."""
  centres, side, angle = roi_boxes(landmarks)
  return np.stack([crop_square(image, c, side, angle, size) for c in centres])


def whole_image(image: np.ndarray, size: int) -> np.ndarray:
  """The whole radiograph padded to a centred square and resized [size, size]."""
  h, w = image.shape
  side = float(max(h, w))
  return crop_square(image, ((w - 1) / 2, (h - 1) / 2), side, 0.0, size)


def letterbox_scale(shape, size: int) -> float:
  """Source pixels per pixel of `whole_image(image, size)` (the letterbox)."""
  return float(max(shape)) / size


def to_letterbox(points, shape, size: int) -> np.ndarray:
  """Image pixel coordinates [..., 2] -> pixels of `whole_image(image, size)`.

  Inverts crop_square's grid: output pixel u samples the source at
  (w - 1) / 2 + (u + 0.5) * scale - side / 2.
  """
  h, w = shape
  scale = letterbox_scale(shape, size)
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  return (np.asarray(points, np.float64) - centre + max(h, w) / 2) / scale - 0.5


def from_letterbox(points, shape, size: int) -> np.ndarray:
  """Pixels of `whole_image(image, size)` [..., 2] -> image pixel coordinates."""
  h, w = shape
  scale = letterbox_scale(shape, size)
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  return centre + (np.asarray(points, np.float64) + 0.5) * scale - max(h, w) / 2


def patch_grid(image: np.ndarray, n: int, size: int) -> np.ndarray:
  """The image cut into n x n non-overlapping patches [n*n, size, size], row-major."""
  h, w = image.shape
  ph, pw = h / n, w / n
  out = []
  for i in range(n):
    for j in range(n):
      region = np.asarray(image[int(round(i * ph)):int(round((i + 1) * ph)),
                                int(round(j * pw)):int(round((j + 1) * pw))],
                          np.float32)
      rh, rw = region.shape
      side = float(max(rh, rw))
      out.append(crop_square(region, ((rw - 1) / 2, (rh - 1) / 2), side, 0.0,
                             size))
  return np.stack(out)
