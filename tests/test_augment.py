"""On-device augmentation against an independent warp (scipy, float64, with
the inverse map taken by np.linalg.inv of the documented forward map:
mirror, then scale, then rotate, then shift, about the image centre), and its
random parameters against the configured ranges."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import pytest
from scipy import ndimage

from bmdjax import augment

H, W = 24, 20  # not square: rows/cols swaps show


def _image():
  yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
  # Smooth and asymmetric: a blob plus a gentle ramp.
  return (np.exp(-((xx - 6.0) ** 2 + (yy - 8.0) ** 2) / 18.0) + 0.02 * xx + 0.01 * yy)


def _forward(s, theta, shift, mirror):
  """Forward map (3x3, homogeneous, x/y pixel coordinates) of the documented warp."""
  cx, cy = (W - 1) / 2, (H - 1) / 2
  to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
  flip = np.diag([-1.0 if mirror else 1.0, 1.0, 1.0])
  scale = np.diag([s, s, 1.0])
  c, si = np.cos(theta), np.sin(theta)
  rot = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1.0]])
  move = np.array([[1, 0, shift[1] + cx], [0, 1, shift[0] + cy], [0, 0, 1.0]])
  return move @ rot @ scale @ flip @ to_centre


def _source(s, theta, shift, mirror):
  """Source (y, x) of every output pixel, by inverting the forward map."""
  inv = np.linalg.inv(_forward(s, theta, shift, mirror))
  yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
  src = inv @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
  return src[1].reshape(H, W), src[0].reshape(H, W)


def _inside(ys, xs, margin=0.0):
  return ((ys >= -margin) & (ys <= H - 1 + margin) & (xs >= -margin)
          & (xs <= W - 1 + margin))


def _reference_warp(img, s, theta, shift, mirror):
  """Bilinear resampling; valid where the source lies inside the image."""
  return ndimage.map_coordinates(img, list(_source(s, theta, shift, mirror)), order=1)


CASES = [(1.0, 0.0, (0.0, 0.0), False), (1.2, np.deg2rad(20), (3.0, -5.0), False),
         (0.85, np.deg2rad(-35), (-2.5, 1.5), True), (1.0, 0.0, (0.0, 0.0), True)]


@pytest.mark.parametrize("s,theta,shift,mirror", CASES)
def test_warp_matches_an_independent_affine_resampling(s, theta, shift, mirror):
  img = _image()
  ys, xs = _source(s, theta, shift, mirror)
  inside, far = _inside(ys, xs), ~_inside(ys, xs, margin=1.0)
  want = _reference_warp(img, s, theta, shift, mirror)
  for mode in ("constant", "reflect"):
    got = np.asarray(augment._warp(
        jnp.asarray(img, jnp.float32), jnp.float32(s), jnp.float32(theta),
        jnp.asarray(shift, jnp.float32), jnp.asarray(mirror), mode))
    np.testing.assert_allclose(got[inside], want[inside], atol=2e-5)
    if far.any():  # beyond the edge: black (constant) or mirrored bone (reflect)
      assert (got[far] == 0).all() if mode == "constant" else (got[far] > 0.01).all()


# Whole-image warps of the landmark task (points move with the image; no flip).
GEOMETRY = [(1.0, 0.0, (0.0, 0.0), 0.0), (1.2, np.deg2rad(20), (3.0, -5.0), 0.1),
            (0.85, np.deg2rad(-35), (-2.5, 1.5), -0.12)]


def _geometry(s, theta, aspect):
  """The documented map in numpy: about the centre, x scaled by s*e^aspect and
  y by s*e^-aspect, then turned by theta; then shifted by (x, y)."""
  c, si = np.cos(theta), np.sin(theta)
  m = np.array([[c, -si], [si, c]]) @ np.diag([s * np.exp(aspect), s * np.exp(-aspect)])
  return m, np.array([(W - 1) / 2, (H - 1) / 2])


@pytest.mark.parametrize("s,theta,shift,aspect", GEOMETRY)
def test_points_move_with_the_documented_forward_map(s, theta, shift, aspect):
  pts = np.array([[2.0, 3.0], [15.5, 20.0], [9.5, 11.5]])
  a = augment.affine_matrices(jnp.float32(s), jnp.float32(aspect), jnp.float32(theta))
  t = jnp.asarray(shift, jnp.float32)
  m, centre = _geometry(s, theta, aspect)
  got = augment.forward_points(jnp.asarray(pts, jnp.float32), a, t, H, W)
  np.testing.assert_allclose(np.asarray(got), (pts - centre) @ m.T + centre + shift,
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(augment.inverse_points(got, a, t, H, W)), pts,
                             atol=1e-4)
  # The image goes where its points go: scipy resampling at the inverse map.
  img = _image()
  yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
  src = (np.c_[xx.ravel(), yy.ravel()] - centre - shift) @ np.linalg.inv(m).T + centre
  want = scipy.ndimage.map_coordinates(img, [src[:, 1].reshape(H, W), src[:, 0].reshape(H, W)],
                                       order=1, mode="grid-constant")
  got_img = np.asarray(augment.warp_affine(jnp.asarray(img, jnp.float32), a, t))
  np.testing.assert_allclose(got_img, want, atol=2e-5)


def test_random_geometry_moves_points_with_the_image():
  """Each image and its points take the same sampled transform: the peak of a
  warped blob sits at the moved point, and the images are warped differently."""
  b = 4
  yy, xx = np.mgrid[0:H, 0:W]
  images = np.stack([np.exp(-((xx - 9.0) ** 2 + (yy - 11.0) ** 2) / 4.0)] * b)
  pts = np.array([[[9.0, 11.0]]] * b)
  out, moved = augment.random_geometry(jax.random.key(3), jnp.asarray(images, jnp.float32),
                                       jnp.asarray(pts, jnp.float32), scale=0.1,
                                       rotate_deg=20.0, translate=0.1, aspect=0.1)
  out, moved = np.asarray(out), np.asarray(moved)
  for i in range(b):
    r, c = np.unravel_index(np.argmax(out[i]), (H, W))
    assert abs(c - moved[i, 0, 0]) <= 1 and abs(r - moved[i, 0, 1]) <= 1
  assert np.ptp(moved[:, 0, 0]) > 0.5 or np.ptp(moved[:, 0, 1]) > 0.5


def test_sampled_parameters_span_the_configured_ranges():
  n = 4000
  s, theta, shift, mirror = augment._sample_affine(
      jax.random.key(0), n, scale=0.2, rotate_deg=15.0, translate=0.1, flip=True,
      h=H, w=W, dtype=jnp.float32)
  s, theta, shift, mirror = map(np.asarray, (s, theta, shift, mirror))
  assert 0.8 <= s.min() < 0.81 and 1.19 < s.max() <= 1.2
  lim = np.deg2rad(15.0)
  assert -lim <= theta.min() < -0.98 * lim and 0.98 * lim < theta.max() <= lim
  for axis, size in ((0, H), (1, W)):  # shift is (rows, cols), in pixels
    assert -0.1 * size <= shift[:, axis].min() < -0.098 * size
    assert 0.098 * size < shift[:, axis].max() <= 0.1 * size
  assert 0.45 < mirror.mean() < 0.55
  _, _, _, never = augment._sample_affine(jax.random.key(0), n, scale=0.2, rotate_deg=15.0,
                                          translate=0.1, flip=False, h=H, w=W,
                                          dtype=jnp.float32)
  assert not np.asarray(never).any()


def test_random_affine_warps_each_crop_on_its_own():
  x = jnp.asarray(np.stack([_image()] * 6).reshape(2, 3, H, W), jnp.float32)
  same = augment.random_affine(jax.random.key(0), x, scale=0.0, rotate_deg=0.0,
                               translate=0.0, flip=False)
  np.testing.assert_allclose(np.asarray(same), np.asarray(x), atol=1e-6)
  out = np.asarray(augment.random_affine(jax.random.key(1), x, scale=0.1, rotate_deg=10.0,
                                         translate=0.05, flip=True))
  assert out.shape == x.shape
  flat = out.reshape(6, H, W)
  assert all(np.abs(flat[i] - flat[j]).max() > 1e-3 for i in range(6) for j in range(i))
  # Flip only: every crop is the image or its left-right mirror, both occur.
  flips = np.asarray(augment.random_affine(jax.random.key(2), jnp.tile(x, (4, 1, 1, 1)),
                                           scale=0.0, rotate_deg=0.0, translate=0.0,
                                           flip=True)).reshape(-1, H, W)
  img = _image()
  is_same = [np.allclose(f, img, atol=1e-5) for f in flips]
  is_mirror = [np.allclose(f, img[:, ::-1], atol=1e-5) for f in flips]
  assert all(a or b for a, b in zip(is_same, is_mirror)) and any(is_same) and any(is_mirror)


def test_intensity_jitter_by_hand():
  x = jnp.asarray(np.linspace(0.05, 0.95, 2 * 16 * 16).reshape(2, 16, 16), jnp.float32)
  kw = dict(gamma=0.0, contrast=0.0, brightness=0.0, noise=0.0)
  np.testing.assert_allclose(np.asarray(augment.random_intensity(jax.random.key(0), x, **kw)),
                             np.asarray(x), atol=1e-6)
  xs = np.asarray(x, np.float64)
  # Gamma alone: out = x ** e per image, with |log e| <= 0.3.
  out = np.asarray(augment.random_intensity(jax.random.key(1), x, **dict(kw, gamma=0.3)),
                   np.float64)
  for i in range(2):
    e = np.log(out[i, 0, 0]) / np.log(xs[i, 0, 0])
    assert abs(np.log(e)) <= 0.3 + 1e-6
    np.testing.assert_allclose(out[i], xs[i] ** e, atol=1e-5)
  # Contrast alone: a line through mid-grey, slope within 1 +- 0.2.
  out = np.asarray(augment.random_intensity(jax.random.key(2), x, **dict(kw, contrast=0.2)),
                   np.float64)
  for i in range(2):
    ok = (out[i] > 0) & (out[i] < 1)  # unclipped
    slope, icpt = np.polyfit(xs[i][ok] - 0.5, out[i][ok] - 0.5, 1)
    assert abs(slope - 1) <= 0.2 + 1e-6 and abs(icpt) < 1e-5 and abs(slope - 1) > 1e-4
  # Brightness alone: a shift within +-0.1, the same for every pixel of an image.
  out = np.asarray(augment.random_intensity(jax.random.key(3), x, **dict(kw, brightness=0.1)),
                   np.float64)
  d = out - xs
  inner = (out > 0) & (out < 1)
  for i in range(2):
    assert np.ptp(d[i][inner[i]]) < 1e-5 and abs(d[i][inner[i]][0]) <= 0.1 + 1e-6
  # Noise alone: zero-mean, sd below the bound, different per image.
  flat = jnp.full((8, 64, 64), 0.5, jnp.float32)
  out = np.asarray(augment.random_intensity(jax.random.key(4), flat, **dict(kw, noise=0.05)))
  sd = out.reshape(8, -1).std(axis=1)
  assert (sd <= 0.05 * 1.05).all() and np.ptp(sd) > 0.005
  assert abs(out.mean() - 0.5) < 0.005
  assert out.min() >= 0.0 and out.max() <= 1.0


def test_contrast_and_brightness_are_drawn_independently():
  x = jnp.asarray(np.linspace(0.3, 0.7, 16 * 8 * 8).reshape(16, 8, 8), jnp.float32)
  out = np.asarray(augment.random_intensity(jax.random.key(5), x, gamma=0.0, contrast=0.2,
                                            brightness=0.1, noise=0.0), np.float64)
  xs = np.asarray(x, np.float64)
  fits = np.array([np.polyfit(xs[i].ravel() - 0.5, out[i].ravel() - 0.5, 1) for i in range(16)])
  contrast, brightness = (fits[:, 0] - 1) / 0.2, fits[:, 1] / 0.1  # both U(-1, 1)
  assert np.abs(contrast).max() <= 1 + 1e-4 and np.abs(brightness).max() <= 1 + 1e-4
  assert abs(np.corrcoef(contrast, brightness)[0, 1]) < 0.9


def test_intensity_jitter_goes_both_ways():
  """U(-a, a), not U(0, a): darker and brighter, more and less contrast."""
  x = jnp.asarray(np.linspace(0.3, 0.7, 32 * 8 * 8).reshape(32, 8, 8), jnp.float32)
  xs = np.asarray(x, np.float64)
  kw = dict(gamma=0.0, contrast=0.0, brightness=0.0, noise=0.0)
  for name, a in (("gamma", 0.3), ("contrast", 0.2), ("brightness", 0.1)):
    out = np.asarray(augment.random_intensity(jax.random.key(7), x, **dict(kw, **{name: a})),
                     np.float64)
    d = (out - xs).reshape(32, -1)
    # Per image, the change at the darkest pixel and its sign over the images.
    signs = np.sign(d[:, -1] if name != "gamma" else d[:, 0])
    assert (signs > 0).sum() >= 6 and (signs < 0).sum() >= 6, name
