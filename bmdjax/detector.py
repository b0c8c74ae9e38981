"""A trained landmark detector: prediction over a split, and detection on
radiographs for data prep (data_prep.build), screening (bmdjax.predict) and
evaluation (bmdjax.landmark_eval).

Detection letterboxes the whole radiograph exactly as the training records
were made (data_prep.build_landmarks.prepare_image), predicts in that frame
with test-time augmentation (the config's `tta`: the mean over zoomed,
turned and sharpened views, each mapped back exactly; the spread across them
lowers the confidence), maps the points back to the image's pixels and runs
the plausibility checks (data_prep/landmark_checks.py), so every caller
(validation during training included) gets the same points and the same
flags for a study.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bmdjax import augment, config_lib, inference, runs
from data_prep import build_landmarks, dicom_io, landmark_checks, rois

OUTPUTS = ("points", "heatmap_points", "confidence", "spread")
# The sharpened view of test-time augmentation: unsharp mask of this amount
# and Gaussian sd (share of the side), a mild CR-like edge enhancement.
TTA_SHARPEN = (1.0, 0.02)


def tta_views(tta) -> list[tuple[np.ndarray, bool]]:
  """(2x2 matrix, sharpen) of each view; the identity first. tta: the config's
  `tta` (None or no transforms: the identity alone)."""
  views = [(np.eye(2, dtype=np.float32), False)]
  if tta:
    views += [(np.float32(s) * np.eye(2, dtype=np.float32), False) for s in tta.scales]
    for deg in tta.rotations_deg:
      c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
      views.append((np.array([[c, -s], [s, c]], np.float32), False))
    if tta.sharpen:
      views.append((np.eye(2, dtype=np.float32), True))
  return views


def test_time_augmented(apply_fn, x: jax.Array, tta) -> dict:
  """Runs apply_fn (images [B, S, S] in [0, 1] -> dict with points,
  heatmap_points [B, K, 2] and confidence [B, K]) on every view of x, maps
  the points back with the exact inverse of each view's warp and averages
  them. spread: RMS distance of the views' points from their mean (input
  pixels); confidence: the views' mean heatmap confidence times
  exp(-(spread / tta.spread_px)^2 / 2)."""
  _, h, w = x.shape
  zero = jnp.zeros(2, jnp.float32)
  points, heat, conf = [], [], []
  for a, sharpen in tta_views(tta):
    identity = np.array_equal(a, np.eye(2))
    xv = x if identity else jax.vmap(augment.warp_affine, in_axes=(0, None, None))(
        x, jnp.asarray(a), zero)
    if sharpen:
      amount, sd = TTA_SHARPEN
      sd = sd * max(h, w)
      xv = jnp.clip(xv + amount * (xv - augment.gaussian_blur(xv, sd, int(np.ceil(3 * sd)))),
                    0.0, 1.0)
    out = apply_fn(xv)
    back = (lambda p: p) if identity else (
        lambda p, a=a: augment.inverse_points(p, jnp.asarray(a), zero, h, w))
    points.append(back(out["points"]))
    heat.append(back(out["heatmap_points"]))
    conf.append(out["confidence"])
  points, heat, conf = jnp.stack(points), jnp.stack(heat), jnp.stack(conf)
  mean = points.mean(0)
  spread = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(points - mean), -1), 0))
  confidence = conf.mean(0)
  if len(points) > 1:
    confidence = confidence * jnp.exp(-0.5 * jnp.square(spread / tta.spread_px))
  return {"points": mean, "heatmap_points": heat.mean(0), "confidence": confidence,
          "spread": spread}


def make_predict_fn(graphdef, tta=None):
  """jit: (params, rest, uint16 images [B, S, S]) -> points, heatmap_points
  [B, 16, 2] in input pixels, confidence and spread [B, 16] (test-time
  augmentation `tta`, the config's; None: one view)."""
  @jax.jit
  def predict(params, rest, x):
    model = nnx.merge(graphdef, params, rest)
    return test_time_augmented(lambda v: model(v, train=False), inference.to_unit(x), tta)
  return predict


def predict_split(config, predict_fn, params, rest, source, sharding, example_fn,
                  desc: str = "") -> dict[str, np.ndarray]:
  """Predictions and truth for every record of `source`, in the split's order:
  image, patient_id, points, heatmap_points, confidence, true, mm_per_pixel.
  Each process predicts its slice; the rows are gathered on every process."""
  def to_row(batch, meta, out, i):
    return {**meta, **{k: out[k][i].tolist() for k in OUTPUTS},
            "true": batch["points"][i].tolist(),
            "mm_per_pixel": float(batch["mm_per_pixel"][i])}

  rows = inference.predict_rows(config, predict_fn, params, rest, source, sharding,
                                to_row, example_fn=example_fn, desc=desc)
  keys = ("image", "patient_id", *OUTPUTS, "true", "mm_per_pixel")
  return {k: np.array([r[k] for r in rows], dtype=object if k in ("image", "patient_id")
                      else np.float64) for k in keys}


class LandmarkDetector:
  """A landmark detector ready to run: `from_workdir` restores a trained one
  (bmdjax.train --config=configs/landmarks.py); the constructor takes the
  state itself."""

  def __init__(self, config, params, rest, image_size: int, *, batch_size: int = 16,
               graphdef=None, description: str | None = None, step: int | None = None):
    self.size = int(image_size)
    self.batch_size = batch_size
    self.min_confidence = float(config.checks.min_confidence)
    if graphdef is None:
      graphdef, _, _ = inference.init_model_state(config)
    self.params, self.rest, self.step = params, rest, step
    self.tta = config.get("tta")
    self._predict = make_predict_fn(graphdef, self.tta)
    self.description = description or f"landmark detector ({self.size}x{self.size})"

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str = "best", batch_size: int = 16):
    workdir = os.fspath(workdir)
    run = runs.load_run_info(workdir)
    config = config_lib.for_run(run["config"], where=workdir)
    if config.get("task", "bmd") != "landmarks":
      raise ValueError(
          f"{workdir} holds a {config.model.name} BMD model, not a landmark detector: "
          "give the workdir of `python -m bmdjax.train --config=configs/landmarks.py`")
    if "image_size" not in run:
      raise ValueError(f"{runs.path(workdir, runs.RUN_JSON)} does not record the "
                       "detector's image_size; retrain it with this version of bmdjax")
    size = int(run["image_size"])
    graphdef, params, rest = inference.init_model_state(config)
    params, rest, step = runs.restore_params(workdir, params, rest, checkpoint)
    return cls(config, params, rest, size, batch_size=batch_size, graphdef=graphdef,
               step=step, description=(f"landmark detector {workdir} ({checkpoint} "
                                       f"checkpoint, step {step}, {size}x{size})"))

  def detect(self, radiographs, min_confidence: float | None = None) -> list[dict]:
    """One dict per dicom_io.Radiograph: landmarks, heatmap_landmarks [16, 2]
    in the image's pixels, confidence [16], spread [16] (test-time
    augmentation, the image's pixels) and flags (failed checks)."""
    min_conf = self.min_confidence if min_confidence is None else min_confidence
    results = []
    for start in range(0, len(radiographs), self.batch_size):
      chunk = radiographs[start:start + self.batch_size]
      x = np.zeros((self.batch_size, self.size, self.size), np.uint16)  # one shape: one compile
      for i, r in enumerate(chunk):
        x[i] = build_landmarks.prepare_image(r, self.size)
      out = jax.device_get(self._predict(self.params, self.rest, x))
      for i, r in enumerate(chunk):
        shape = r.image.shape
        points = rois.from_letterbox(out["points"][i], shape, self.size)
        confidence = np.asarray(out["confidence"][i], np.float64)
        results.append({
            "landmarks": points,
            "heatmap_landmarks": rois.from_letterbox(out["heatmap_points"][i], shape,
                                                     self.size),
            "confidence": confidence,
            "spread": np.asarray(out["spread"][i], np.float64) * rois.letterbox_scale(
                shape, self.size),
            "flags": landmark_checks.check_landmarks(points, shape, confidence,
                                                     r.pixel_spacing, min_conf)})
    return results

  def detect_files(self, paths, min_confidence: float | None = None,
                   progress: bool = False, transform=None) -> list[dict]:
    """detect() on DICOM files; a file that cannot be read gives {"error": reason}.
    Reads one batch at a time, so memory stays small on any cohort. `transform`
    (Radiograph -> Radiograph) alters each film first (robustness checks)."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    paths = [os.fspath(p) for p in paths]
    results = []
    bar = tqdm(total=len(paths), desc="detecting landmarks", unit="study",
               disable=not progress)
    for start in range(0, len(paths), self.batch_size):
      read, done = [], []
      for path in paths[start:start + self.batch_size]:
        try:
          r = dicom_io.read_radiograph(path)
        except dicom_io.StudyError as e:
          done.append({"error": e.reason})
        else:
          r = transform(r) if transform else r
          read.append(r)
          done.append(r)
      found = iter(self.detect(read, min_confidence))
      for item in done:
        if isinstance(item, dicom_io.Radiograph):
          results.append({**next(found), "shape": item.image.shape,
                          "pixel_spacing": item.pixel_spacing})
        else:
          results.append(item)
      bar.update(len(done))
    bar.close()
    return results
