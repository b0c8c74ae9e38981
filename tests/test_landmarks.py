"""Landmark detector pieces: letterbox geometry, soft-argmax, coordinate-aware
augmentation, the model's outputs, metrics and plausibility checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmdjax import augment, landmark_metrics, models, tasks
from bmdjax.models import landmarks as lm_model
from configs import landmarks as lm_config
from data_prep import build, landmark_checks, rois


def _blobs(shape, points, sigma=1.5):
  """An image with a Gaussian blob at each (x, y) point."""
  yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
  return sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
             for x, y in points).astype(np.float32)


def _centroid(image, point, r=4):
  """Intensity centroid of `image` in a window around `point` (x, y)."""
  x0, y0 = int(round(point[0])), int(round(point[1]))
  win = image[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
  gy, gx = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
  return np.array([(win * gx).sum(), (win * gy).sum()]) / win.sum()


# ----------------------------------------------------------------- geometry


@pytest.mark.parametrize("shape", [(300, 220), (180, 260)])
def test_letterbox_maps_points_where_whole_image_puts_them(shape):
  points = np.array([[30.3, 40.6], [shape[1] - 25.2, shape[0] / 2], [100.0, shape[0] - 30.4]])
  size = 128
  boxed = rois.whole_image(_blobs(shape, points, sigma=4.0), size)
  mapped = rois.to_letterbox(points, shape, size)
  for p in mapped:
    np.testing.assert_allclose(_centroid(boxed, p, r=3), p, atol=0.15)
  np.testing.assert_allclose(rois.from_letterbox(mapped, shape, size), points, atol=1e-9)


def test_soft_argmax_and_peak_mass_match_a_float64_recomputation():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 6, 10)) * 3.0
  stride = 2
  points, p = lm_model.soft_argmax(logits, stride)
  z = np.asarray(logits, np.float64)
  q = np.exp(z - z.max(axis=(-2, -1), keepdims=True))
  q /= q.sum(axis=(-2, -1), keepdims=True)
  xs = np.arange(10) * stride + (stride - 1) / 2
  ys = np.arange(6) * stride + (stride - 1) / 2
  expected = np.stack([np.einsum("...hw,w->...", q, xs), np.einsum("...hw,h->...", q, ys)], -1)
  np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(points, expected, rtol=1e-5, atol=1e-4)
  radius = 3.0
  mass = lm_model.peak_mass(p, points, stride, radius)
  d2 = ((xs[None, None, None, :] - expected[..., 0, None, None]) ** 2 +
        (ys[None, None, :, None] - expected[..., 1, None, None]) ** 2)
  np.testing.assert_allclose(mass, np.sum(q * (d2 <= radius ** 2), axis=(-2, -1)),
                             rtol=1e-5, atol=1e-6)


def test_augmentation_moves_points_with_the_image():
  size = 64
  points = np.array([[[12.3, 20.7], [44.2, 15.5], [30.0, 50.1]],
                     [[20.0, 30.0], [40.5, 35.2], [33.3, 12.8]]], np.float32)
  images = np.stack([_blobs((size, size), p) for p in points])
  warped, moved = augment.random_affine_points(
      jax.random.key(3), jnp.asarray(images), jnp.asarray(points),
      scale=0.15, rotate_deg=15.0, translate=0.08)
  moved = np.asarray(moved)
  assert not np.allclose(moved, points, atol=0.5)  # it did move them
  for img, pts in zip(np.asarray(warped), moved):
    for p in pts:
      np.testing.assert_allclose(_centroid(img, p), p, atol=0.1)


def test_intensity_jitter_stays_in_range_and_varies_per_image():
  x = jnp.tile(jnp.linspace(0, 1, 32)[None, None], (4, 32, 1))
  out = np.asarray(augment.random_intensity(jax.random.key(0), x, gamma=0.35,
                                            contrast=0.25, brightness=0.1, noise=0.03))
  assert out.min() >= 0 and out.max() <= 1
  assert np.ptp(out.mean(axis=(1, 2))) > 0.01  # not one transform for the batch


# ----------------------------------------------------------------- model


@pytest.mark.parametrize("graph", [0, 1])
def test_model_outputs(graph):
  config = lm_config.get_config(f"width=4,graph={graph}").model
  config.levels = 2
  model = models.build(config, rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(1), (3, 32, 32))
  out = model(x, train=False)
  assert out["points"].shape == out["heatmap_points"].shape == (3, 16, 2)
  assert out["confidence"].shape == (3, 16) and out["logits"].shape == (3, 16, 16, 16)
  assert np.all((np.asarray(out["confidence"]) > 0) & (np.asarray(out["confidence"]) <= 1))
  # The graph step's last layer starts at zero: refined = soft-argmax points.
  np.testing.assert_allclose(out["points"], out["heatmap_points"], atol=1e-6)
  assert (model.refiner is None) == (graph == 0)
  with pytest.raises(ValueError, match="multiple of 8"):
    model(jnp.zeros((1, 36, 36)))


def test_heatmap_kl_is_zero_at_the_target_and_positive_elsewhere():
  points = jnp.array([[[9.0, 14.0], [20.0, 3.0]]])
  h = w = 16
  xs, ys = lm_model.cell_centres(w, 2), lm_model.cell_centres(h, 2)
  sigma = 1.5
  d2 = ((xs[None, None, None, :] - points[..., 0, None, None]) ** 2 +
        (ys[None, None, :, None] - points[..., 1, None, None]) ** 2)
  target_logits = -0.5 * d2 / (sigma * 2) ** 2
  mask = jnp.ones((1, 2))
  assert abs(float(tasks.heatmap_kl(target_logits, points, sigma, mask))) < 1e-5
  assert float(tasks.heatmap_kl(jnp.zeros_like(target_logits), points, sigma, mask)) > 1.0


# ----------------------------------------------------------------- metrics


def test_metrics_match_a_direct_recomputation():
  rng = np.random.default_rng(0)
  true = rng.uniform(0, 300, (20, 16, 2))
  pred = true + rng.normal(0, 3, true.shape)
  spacing = rng.uniform(0.8, 1.4, 20)
  spacing[3] = np.nan  # unknown spacing: pixel figures only
  errors = landmark_metrics.radial_errors(pred, true)
  direct = np.hypot(*(pred - true).transpose(2, 0, 1))
  np.testing.assert_allclose(errors, direct)
  s = landmark_metrics.summarize(errors, spacing)
  mm = (direct * spacing[:, None])[np.isfinite(spacing)]
  o = s["overall"]
  assert o["n"] == 320 and o["n_mm"] == 19 * 16
  assert o["mre_px"] == pytest.approx(direct.mean())
  assert o["mre_mm"] == pytest.approx(mm.mean())
  assert o["sd_mm"] == pytest.approx(mm.std())
  for t in (2, 4, 8):
    assert o[f"sdr_{t}mm"] == pytest.approx((mm <= t).mean())
  c7 = s["per_landmark"]["c7"]
  assert c7["mre_mm"] == pytest.approx(mm[:, 14].mean())
  assert c7["sdr_4mm"] == pytest.approx((mm[:, 14] <= 4).mean())
  per_study = landmark_metrics.per_study_mre_mm(errors, spacing)
  assert per_study[3] == pytest.approx(direct[3].mean())  # pixels when unknown
  assert per_study[0] == pytest.approx(direct[0].mean() * spacing[0])
  table = landmark_metrics.markdown_table(s)
  assert "| **overall** | 320 |" in table and "| t12 |" in table


# ----------------------------------------------------------------- checks


@pytest.fixture(scope="module")
def good(cohort_dir):
  """One ground-truth landmark set of the session cohort, with its image shape."""
  table = build.load_landmarks(str(cohort_dir / "landmarks.csv"))
  return table, np.array(table[sorted(table)[0]]), (400, 350)


def test_every_ground_truth_set_passes(cohort_dir, good):
  import pydicom
  table, _, _ = good
  for image, lm in table.items():
    ds = pydicom.dcmread(cohort_dir / "dicom" / image, stop_before_pixels=True)
    assert landmark_checks.check_landmarks(
        lm, (ds.Rows, ds.Columns), np.ones(16), float(ds.PixelSpacing[0])) == [], image


def _turn(lm, degrees):
  a = np.radians(degrees)
  c = lm.mean(0)
  return (lm - c) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T + c


def test_checks_flag_impossible_landmark_sets(good):
  _, lm, shape = good
  check = lambda x, **kw: landmark_checks.flag_names(
      landmark_checks.check_landmarks(x, shape, **kw))
  assert check(lm) == []
  assert check(_turn(lm, 20)) == []  # a rotated patient is fine
  swapped = lm.copy()
  for r, l in landmark_checks.MIRROR_PAIRS:
    swapped[[r, l]] = lm[[l, r]]
  assert check(swapped) == ["left_right"]
  clavicles_low = lm.copy()
  clavicles_low[0:6, 1] += lm[9, 1] - lm[0:6, 1].mean()  # moved down to the 4th rib points
  assert "vertical_order" in check(clavicles_low)
  assert "spine" in check(_turn(lm, 180))  # C7 below T12
  assert "spine" in check(_turn(lm, 45))
  collapsed = np.repeat(lm.mean(0, keepdims=True), 16, 0) + np.arange(16)[:, None] * 0.01
  assert "degenerate" in check(collapsed)
  assert "degenerate" in check(lm, pixel_spacing=0.1)  # a 3 cm wide thorax
  off = lm.copy()
  off[2, 0] = -40.0
  assert "off_image" in check(off)
  conf = np.full(16, 0.9)
  conf[15] = 0.05
  flags = landmark_checks.check_landmarks(lm, shape, conf)
  assert landmark_checks.flag_names(flags) == ["low_confidence"] and "t12 0.05" in flags[0]
  assert check(np.full((16, 2), np.nan)) == ["degenerate"]
