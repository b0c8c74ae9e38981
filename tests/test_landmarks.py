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
  warped, moved = augment.random_geometry(
      jax.random.key(3), jnp.asarray(images), jnp.asarray(points),
      scale=0.15, rotate_deg=15.0, translate=0.08, aspect=0.15, zoom_in=0.2)
  moved = np.asarray(moved)
  assert not np.allclose(moved, points, atol=0.5)  # it did move them
  for img, pts in zip(np.asarray(warped), moved):
    for p in pts:
      np.testing.assert_allclose(_centroid(img, p), p, atol=0.1)


def test_point_maps_are_exact_inverses_and_match_a_float64_affine():
  h, w = 48, 64
  a = np.asarray(augment.affine_matrices(jnp.array(1.2), jnp.array(0.1), jnp.array(0.3)))
  shift = np.array([3.5, -2.25])
  pts = np.random.default_rng(0).uniform(0, 60, (5, 2))
  c = np.array([(w - 1) / 2, (h - 1) / 2])
  rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
  expected = (pts - c) @ (rot @ np.diag([1.2 * np.exp(0.1), 1.2 * np.exp(-0.1)])).T + c + shift
  fwd = augment.forward_points(jnp.asarray(pts, jnp.float32), jnp.asarray(a), shift, h, w)
  np.testing.assert_allclose(fwd, expected, atol=1e-4)
  back = augment.inverse_points(fwd, jnp.asarray(a), shift, h, w)
  np.testing.assert_allclose(back, pts, atol=1e-4)


def test_gaussian_blur_matches_scipy_per_image():
  import scipy.ndimage
  x = np.random.default_rng(1).uniform(0, 1, (3, 40, 50)).astype(np.float32)
  sigma = np.array([1.5, 2.5, 6.0], np.float32)  # (below ~1 px a sampled kernel differs)
  out = np.asarray(augment.gaussian_blur(jnp.asarray(x), jnp.asarray(sigma), 30))
  for img, sd, got in zip(x, sigma, out):
    ref = scipy.ndimage.gaussian_filter(img.astype(np.float64), float(sd), mode="mirror",
                                        truncate=12.0)
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_equalisation_is_the_empirical_cdf_and_ignores_increasing_remaps():
  rng = np.random.default_rng(2)
  levels = (np.arange(10) + 0.5) / 10
  x = levels[rng.integers(0, 10, (2, 20, 30))].astype(np.float32)
  eq = np.asarray(augment.equalize(jnp.asarray(x)))
  for img, got in zip(x, eq):
    np.testing.assert_allclose(got, (img.ravel()[None, :] <= img.ravel()[:, None]).mean(1)
                               .reshape(img.shape), atol=1e-6)
  remapped = 0.1 + 0.7 * x ** 0.5  # window + gamma: increasing, levels kept apart
  np.testing.assert_array_equal(np.asarray(augment.equalize(jnp.asarray(remapped))), eq)


def test_input_normalisation_removes_gain_offset_and_gamma(monkeypatch):
  """What the detector sees barely changes when the film's processing does."""
  yy, xx = np.mgrid[0:64, 0:64] / 64.0
  x = (0.5 + 0.2 * np.sin(12 * xx) * np.cos(9 * yy) + 0.1 * yy).astype(np.float32)[None]
  base = np.asarray(lm_model.normalize_input(jnp.asarray(x), "equalize_lcn"))
  assert base.shape == (1, 64, 64, 2)
  for f in (lambda v: 0.6 * v + 0.3, lambda v: v ** 1.6):
    other = np.asarray(lm_model.normalize_input(jnp.asarray(f(x)), "equalize_lcn"))
    # Equalised: ranks exact up to one histogram bin's share of the pixels.
    bin_share = max(np.histogram(v, 256, (0, 1))[0].max() for v in (x, f(x))) / x.size
    assert np.abs(other[..., 0] - base[..., 0]).max() <= 2 * bin_share + 1e-6
    # Local contrast: gain and offset cancel but for the floor of the local sd.
    assert np.abs(other[..., 1] - base[..., 1]).mean() < 0.2 * np.abs(base[..., 1]).mean()
  monkeypatch.setattr(lm_model, "LCN_MIN_SD", 1e-5)  # without the floor: exactly
  lcn = lambda v: np.asarray(lm_model.normalize_input(jnp.asarray(v), "equalize_lcn"))[..., 1]
  np.testing.assert_allclose(lcn(0.6 * x + 0.3), lcn(x), atol=2e-3)
  raw = lm_model.normalize_input(jnp.asarray(x), "none")
  assert np.abs(np.asarray(lm_model.normalize_input(jnp.asarray(0.6 * x + 0.3), "none"))
                - np.asarray(raw)).mean() > 0.05  # the raw input does change


def test_intensity_jitter_stays_in_range_and_varies_per_image():
  x = jnp.tile(jnp.linspace(0, 1, 32)[None, None], (4, 32, 1))
  out = np.asarray(augment.random_intensity(jax.random.key(0), x, gamma=0.35,
                                            contrast=0.25, brightness=0.1, noise=0.03))
  assert out.min() >= 0 and out.max() <= 1
  assert np.ptp(out.mean(axis=(1, 2))) > 0.01  # not one transform for the batch


def test_film_look_is_a_no_op_when_switched_off_and_varied_when_on():
  cfg = lm_config.get_config("demo").augment
  x = jnp.asarray(np.random.default_rng(3).uniform(0.1, 0.9, (6, 64, 64)).astype(np.float32))
  off = cfg.copy_and_resolve_references()
  off.update(gamma=0.0, contrast=0.0, brightness=0.0, noise=0.0, objects=0.0,
             collimation=0.0, processing=0.0, grid_lines=0.0)
  np.testing.assert_allclose(augment.film_look(jax.random.key(0), x, cfg=off), x, atol=1e-6)
  out = np.asarray(augment.film_look(jax.random.key(1), x, cfg=cfg))
  assert out.min() >= 0 and out.max() <= 1 and out.shape == x.shape
  change = np.abs(out - np.asarray(x)).mean(axis=(1, 2))
  assert change.min() > 0.01 and np.ptp(change) > 0.01  # every image, differently
  # Objects are radio-opaque (bright) and only where drawn.
  dark = jnp.zeros((8, 64, 64))
  drawn = np.asarray(augment.random_objects(jax.random.key(2), dark, p=1.0))
  assert (drawn.max(axis=(1, 2)) >= 0.4).all() and ((drawn > 0.1).mean(axis=(1, 2)) < 0.5).all()
  np.testing.assert_array_equal(augment.random_objects(jax.random.key(2), dark, p=0.0), dark)


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


# ----------------------------------------------------------------- test-time augmentation


def _blob_finder(x):
  """A 'detector' that is right in any view: the soft-argmax of one sharp
  blob per image (stride 1), confidence 0.8."""
  points, _ = lm_model.soft_argmax(x[:, None] * 20.0, 1)
  return {"points": points, "heatmap_points": points,
          "confidence": jnp.full(points.shape[:2], 0.8)}


def _tta(**kw):
  import ml_collections
  return ml_collections.ConfigDict(dict(dict(scales=(0.85, 1.15), rotations_deg=(-8.0, 8.0),
                                             sharpen=True, spread_px=4.0), **kw))


def test_tta_maps_every_view_back_exactly():
  from bmdjax import detector
  truth = np.array([[[20.3, 41.7]], [[47.6, 18.2]]], np.float32)  # far from the centre
  x = jnp.asarray(np.stack([_blobs((64, 64), p, sigma=3.0) for p in truth]))
  assert len(detector.tta_views(_tta())) == 6
  out = detector.test_time_augmented(_blob_finder, x, _tta())
  np.testing.assert_allclose(out["points"], truth, atol=0.05)
  np.testing.assert_allclose(out["heatmap_points"], truth, atol=0.05)
  assert float(jnp.max(out["spread"])) < 0.05
  np.testing.assert_allclose(out["confidence"], 0.8, atol=1e-3)
  single = detector.test_time_augmented(_blob_finder, x, None)
  np.testing.assert_allclose(single["points"], truth, atol=0.05)
  assert float(jnp.max(single["spread"])) == 0.0


def test_tta_disagreement_lowers_the_confidence():
  """A detector that ignores the image answers the same pixel in every view;
  mapped back, the views disagree, and the confidence says so."""
  from bmdjax import detector
  fixed = jnp.array([[[10.0, 12.0]]])
  blind = lambda v: {"points": jnp.broadcast_to(fixed, (v.shape[0], 1, 2)),
                     "heatmap_points": jnp.broadcast_to(fixed, (v.shape[0], 1, 2)),
                     "confidence": jnp.full((v.shape[0], 1), 0.9)}
  tta = _tta(sharpen=False)
  out = detector.test_time_augmented(blind, jnp.zeros((1, 64, 64)), tta)
  views = np.stack([np.linalg.solve(a, (np.array([10.0, 12.0]) - 31.5)) + 31.5
                    for a, _ in detector.tta_views(tta)])
  spread = np.sqrt(np.mean(np.sum((views - views.mean(0)) ** 2, -1)))
  np.testing.assert_allclose(out["points"][0, 0], views.mean(0), atol=1e-4)
  np.testing.assert_allclose(out["spread"][0, 0], spread, rtol=1e-4)
  assert spread > 2.0
  np.testing.assert_allclose(out["confidence"][0, 0], 0.9 * np.exp(-0.5 * (spread / 4.0) ** 2),
                             rtol=1e-4)


def test_vendor_reprocessing_keeps_the_film_readable_and_changes_it():
  from bmdjax import landmark_evaluation
  from data_prep import dicom_io
  yy, xx = np.mgrid[0:80, 0:60]
  image = (0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
  film = dicom_io.Radiograph(image, 1.0, "MONOCHROME2", "CR", 12)
  out = landmark_evaluation.reprocess_like_vendor(film)
  assert out.image.shape == image.shape and out.image.dtype == np.float32
  assert out.image.min() >= 0 and out.image.max() <= 1
  assert np.abs(out.image - image).mean() > 0.05
  assert out.pixel_spacing == 1.0 and out.photometric == "MONOCHROME2"
  assert np.corrcoef(out.image.ravel(), image.ravel())[0, 1] > 0.5


def test_split_images_of_a_manifest(tmp_path):
  from bmdjax import landmark_evaluation
  manifest = tmp_path / "manifest.csv"
  manifest.write_text("image,split,status\na.dcm,train,ok\nb.dcm,test,ok\nc.dcm,test,ok\n")
  assert landmark_evaluation.split_images(str(manifest), "test") == ["b.dcm", "c.dcm"]
  with pytest.raises(ValueError, match=r"manifest.csv lists no image of split 'validation'"):
    landmark_evaluation.split_images(str(manifest), "validation")


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
