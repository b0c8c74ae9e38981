"""ROI geometry against a hand computation: a synthetic patient drawn in its
own (upright) anatomical frame, then turned, scaled and shifted in the image.

Each ROI centre carries a Gaussian blob of its own height, off-centre
towards the patient's image-right and head, so a crop shows which ROI it is
(order, side) and how it is turned (sign of the rotation, x/y swaps). The
expected crops are the blob function evaluated on the square the ROI
contract describes (centre from the landmark definitions, side
0.14 x thorax width, turned with C7->T12), not by the code under test.
"""

import numpy as np
import pytest

from data_prep import rois

# The contract: ROI side = 0.14 x thorax width. Prepared datasets and trained
# models depend on it, so a change must be deliberate (and change this test).
ROI_SIDE = 0.14

# Upright patient, anatomical frame centred on the thorax (x right, y down;
# the patient's right is on the image left).
CANON = np.array([
    (-20, -100), (-60, -105), (-100, -110),      # right clavicle: sternal, mid, acromial
    (20, -100), (60, -105), (100, -110),         # left clavicle
    (-130, -60), (-145, -10), (-150, 40), (-145, 90),   # right rib-cage edge
    (130, -60), (145, -10), (150, 40), (145, 90),       # left rib-cage edge
    (0, -120), (0, 120),                          # C7, T12
], np.float64)
WIDTH = np.mean([260, 290, 300, 290])  # left-right rib distances by hand
# ROI centres by hand from the landmark definitions (ROI_NAMES order).
CENTRES = np.array([
    (-40, -102.5), (-80, -107.5), (40, -102.5), (80, -107.5),
    (-130, -60), (-145, -10), (-150, 40), (-145, 90),
    (130, -60), (145, -10), (150, 40), (145, 90),
    (0, -120), (0, 120),
], np.float64)
SIDE = ROI_SIDE * WIDTH  # in anatomical units
OFFSET = np.array([0.22, -0.3]) * SIDE  # blob position inside each ROI
SIGMA = 4.0
HEIGHTS = 0.3 + 0.05 * np.arange(14)  # one height per ROI: identifies it
SHAPE = (520, 480)  # (rows, cols): not square, so x/y swaps show

POSES = [  # (angle in degrees, scale, shift (x, y) of the thorax centre)
    (0.0, 1.0, (240.0, 260.0)),
    (15.0, 1.2, (230.0, 270.0)),
    (-25.0, 0.8, (260.0, 240.0)),
    (8.0, 1.1, (221.5, 287.25)),
]


def _rot(theta):
  c, s = np.cos(theta), np.sin(theta)
  return np.array([[c, -s], [s, c]])


def _to_image(p, theta, scale, shift):
  return scale * np.asarray(p) @ _rot(theta).T + np.asarray(shift)


def _blobs(q, blur=0.0):
  """The patient: blob heights at anatomical points q [..., 2]; `blur` (sd)
  convolves it with a Gaussian (exact for Gaussian blobs)."""
  centres = CENTRES + OFFSET
  var = SIGMA ** 2 + blur ** 2
  d2 = np.sum((q[..., None, :] - centres) ** 2, axis=-1)
  return np.sum(HEIGHTS * SIGMA ** 2 / var * np.exp(-d2 / (2 * var)), axis=-1)


def _radiograph(theta, scale, shift):
  """Pixel (row y, col x) shows the anatomy at R(-theta) (p - shift) / scale."""
  yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(np.float64)
  p = np.stack([xx, yy], -1) - np.asarray(shift)
  q = p @ _rot(theta) / scale  # row-vector form of R(-theta) p
  return _blobs(q).astype(np.float32)


def _expected_crops(size, blur=0.0):
  """Crop pixel (i, j) shows anatomy at centre + ((j, i) + 0.5) / size - 1/2) * SIDE."""
  u = ((np.arange(size) + 0.5) / size - 0.5) * SIDE
  gx, gy = np.meshgrid(u, u)
  q = CENTRES[:, None, None, :] + np.stack([gx, gy], -1)
  return _blobs(q, blur)


@pytest.mark.parametrize("degrees,scale,shift", POSES)
def test_roi_boxes_match_a_hand_computation(degrees, scale, shift):
  theta = np.deg2rad(degrees)
  lm = _to_image(CANON, theta, scale, shift)
  centres, side, angle = rois.roi_boxes(lm)
  np.testing.assert_allclose(centres, _to_image(CENTRES, theta, scale, shift), atol=1e-9)
  assert side == pytest.approx(ROI_SIDE * WIDTH * scale, rel=1e-12)
  assert angle == pytest.approx(theta, abs=1e-12)
  assert rois.thorax_width(lm) == pytest.approx(WIDTH * scale, rel=1e-12)
  # Corners: the turned square, top-left first, clockwise on screen.
  half = SIDE / 2
  square = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
  np.testing.assert_allclose(rois.box_corners(centres[13], side, angle),
                             _to_image(CENTRES[13] + square, theta, scale, shift),
                             atol=1e-9)


def test_upright_patient_puts_right_side_rois_on_the_image_left():
  lm = _to_image(CANON, 0.0, 1.0, (240.0, 260.0))
  centres, _, angle = rois.roi_boxes(lm)
  assert angle == 0.0
  right = [i for i, n in enumerate(rois.ROI_NAMES) if n.startswith("r_")]
  left = [i for i, n in enumerate(rois.ROI_NAMES) if n.startswith("l_")]
  assert len(right) == len(left) == 6
  assert (centres[right, 0] < 240).all() and (centres[left, 0] > 240).all()
  # Clavicle ROIs: medial half nearer the midline than the lateral half.
  assert abs(centres[0, 0] - 240) < abs(centres[1, 0] - 240)
  assert abs(centres[2, 0] - 240) < abs(centres[3, 0] - 240)
  # Rib ROIs top to bottom; C7 above T12.
  assert (np.diff(centres[4:8, 1]) > 0).all() and (np.diff(centres[8:12, 1]) > 0).all()
  assert centres[12, 1] < centres[13, 1]


def test_turning_the_patient_by_a_positive_angle_turns_c7_t12_the_same_way():
  # Image x right, y down: a positive angle turns the spine's lower end to
  # the image left (T12 left of C7), as _rot does to (0, +1).
  lm = _to_image(CANON, np.deg2rad(20), 1.0, (240.0, 260.0))
  assert lm[15, 0] < lm[14, 0]
  assert rois.patient_angle(lm) == pytest.approx(np.deg2rad(20))


@pytest.mark.parametrize("degrees,scale,shift", POSES)
def test_crops_show_each_roi_upright_whatever_the_pose(degrees, scale, shift):
  size = 40  # < SIDE * scale: no antialiasing blur, only bilinear error
  theta = np.deg2rad(degrees)
  image = _radiograph(theta, scale, shift)
  crops = rois.crop_rois(image, _to_image(CANON, theta, scale, shift), size)
  expected = _expected_crops(size)
  assert crops.shape == (14, size, size) and crops.dtype == np.float32
  # Bilinear error <= h^2/8 (|f_xx| + |f_yy|) = (2/8) / sd^2 of a height: 0.024
  # for blobs of sd 4 * 0.8 = 3.2 pixels.
  np.testing.assert_allclose(crops, expected, atol=0.03)
  # Each ROI's own blob is where the contract puts it, at its own height.
  peak = np.unravel_index(np.argmax(crops.reshape(14, -1), axis=1), (size, size))
  want = np.round((OFFSET / SIDE + 0.5) * size - 0.5)  # (col, row)
  np.testing.assert_allclose(peak[1], want[0], atol=1)
  np.testing.assert_allclose(peak[0], want[1], atol=1)
  heights = crops.max(axis=(1, 2))
  np.testing.assert_allclose(heights, expected.max(axis=(1, 2)), atol=0.03)
  assert (np.diff(heights) > 0.03).all()  # ROI k shows blob k: order kept


def test_downsampled_crops_keep_the_geometry():
  """Fewer output than source pixels: an antialiasing Gaussian of sd 0.45
  output pixels (the Nyquist-safe choice of crop_square) blurs the blobs,
  which stay where the contract puts them."""
  size, scale = 16, 1.3
  theta = np.deg2rad(-12.0)
  image = _radiograph(theta, scale, (240.0, 255.0))
  crops = rois.crop_rois(image, _to_image(CANON, theta, scale, (240.0, 255.0)), size)
  expected = _expected_crops(size, blur=0.45 * SIDE / size)  # anatomical units
  np.testing.assert_allclose(crops, expected, atol=0.02)
  # Mirroring or turning the other way would move the blob by many pixels.
  for wrong in (expected[:, :, ::-1], expected[:, ::-1, :], expected.transpose(0, 2, 1)):
    assert np.abs(crops - wrong).max() > 0.2


def test_roi_side_is_the_contract_value():
  assert rois.ROI_SIDE == ROI_SIDE
  assert rois.NUM_ROIS == 14 and rois.NUM_INPUTS == 15 and len(rois.ROI_NAMES) == 14
  assert rois.INPUT_NAMES[-1] == "whole_image"


def test_pixels_outside_the_image_read_as_black():
  image = np.ones((50, 60), np.float32)
  crop = rois.crop_square(image, (0.0, 25.0), 20.0, 0.0, 20)
  # Left half of the square lies left of x = 0 (beyond the first pixel's centre).
  assert np.all(crop[:, :9] == 0.0) and np.allclose(crop[:, 11:], 1.0)
  assert not rois.crop_square(image, (500.0, 500.0), 20.0, 0.3, 8).any()


def test_patch_grid_by_hand():
  """Row-major cells, each letterboxed (centred, black bars) to a square."""
  image = np.zeros((40, 60), np.float32)
  values = np.array([[0.2, 0.4], [0.6, 0.8]], np.float32)
  for i in range(2):
    for j in range(2):
      image[20 * i:20 * (i + 1), 30 * j:30 * (j + 1)] = values[i, j]
  patches = rois.patch_grid(image, 2, 30)  # a 20 x 30 cell -> 30 x 30, scale 1
  assert patches.shape == (4, 30, 30)
  for k, v in enumerate(values.ravel()):
    want = np.zeros((30, 30), np.float32)
    want[5:25] = v  # 5-pixel bars above and below
    np.testing.assert_allclose(patches[k], want, atol=1e-6)
  # Uneven cells (rounded bounds): each patch's centre shows its own cell.
  image = np.repeat(np.repeat(np.arange(9, dtype=np.float32).reshape(3, 3), 13, 0), 20, 1)
  patches = rois.patch_grid(image, 3, 8)
  np.testing.assert_allclose(patches[:, 4, 4], np.arange(9), atol=1e-6)


def _direct_crop(image, centre, side, size):
  """crop_square without its block-averaging shortcut: antialiasing Gaussian
  of sd 0.45 output pixels on the full image, then bilinear sampling."""
  from scipy import ndimage
  scale = side / size
  t = (np.arange(size) + 0.5) * scale - side / 2
  gx, gy = np.meshgrid(t, t)
  blurred = ndimage.gaussian_filter(np.asarray(image, np.float64), 0.45 * scale, mode="nearest")
  return ndimage.map_coordinates(blurred, [centre[1] + gy, centre[0] + gx], order=1,
                                 mode="constant", cval=0.0)


@pytest.mark.parametrize("shape,size", [((600, 450), 16), ((301, 397), 24)])
def test_strong_downsampling_matches_a_direct_antialiased_resampling(shape, size):
  """Whole images and patches shrink 10-40x: crop_square averages k x k blocks
  first (speed); the result must stay the plain antialiased resampling."""
  h, w = shape
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  side = float(max(h, w))
  s = side / 8  # blobs ~2 output pixels wide, off-centre, of different heights
  image = (np.exp(-((xx - 0.3 * w) ** 2 + (yy - 0.25 * h) ** 2) / (2 * s ** 2))
           + 0.5 * np.exp(-((xx - 0.7 * w) ** 2 + (yy - 0.65 * h) ** 2) / (2 * (0.7 * s) ** 2)))
  got = rois.whole_image(image.astype(np.float32), size)
  want = _direct_crop(image, ((w - 1) / 2, (h - 1) / 2), side, size)
  # Averaging blocks before the blur moves values by < 0.012 of a peak here.
  np.testing.assert_allclose(got, want, atol=0.02)
