"""Training tasks: what differs between the BMD models and the landmark detector.

bmdjax.train's loop (mesh, grain iterator, orbax checkpoints with the data
state, best checkpoint, TensorBoard) is shared; `config.task` picks one of
TASKS, which provides:
  example_fn, train_keys   record -> arrays; which of them go to the device
  run_info                 what run.json keeps beside the config (inference needs it)
  make_loss_fn(graphdef)   (params, rest, batch, rng) -> (loss, (rest, metrics)),
                           on-device augmentation included
  make_validation(graphdef, source, sharding)
                           (params, rest) -> dict holding `score_key` (lower is
                           better: picks the best checkpoint), by the evaluator
                           config.evals.validation names (bmdjax/evaluators.py)
  validation_scalars(val), describe(val)
                           TensorBoard scalars and the epoch log line
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bmdjax import augment, config_lib, evaluators, inference, input_pipeline
from bmdjax.models.landmarks import HEATMAP_STRIDE, cell_centres
from data_prep import build_landmarks


def _new_rest(model):
  """The non-parameter state after a forward pass (BatchNorm statistics)."""
  return nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[2])


# ----------------------------------------------------------------- BMD


def masked_mse(pred, target, mask):
  """Mean squared error over the present labels only (missing BMD -> mask 0)."""
  if pred.shape != target.shape:  # broadcasting would hide a model of the wrong width
    raise ValueError(f"predictions {pred.shape} and labels {target.shape} differ in shape")
  err = jnp.square(pred - target) * mask
  return jnp.sum(err) / jnp.maximum(jnp.sum(mask), 1.0)


def bmd_loss_fn(graphdef, config, scaler):
  """MSE of the global output plus the weighted mean of the local ones, on
  standardised targets, with the paper's augmentation on device."""
  mean, std = jnp.asarray(scaler.mean), jnp.asarray(scaler.std)

  def loss_fn(params, rest, batch, rng):
    model = nnx.merge(graphdef, params, rest)
    x = augment.random_affine(rng, inference.to_unit(batch["x"]), **config.augment)
    out = model(x, train=True)
    y, mask = (batch["y"] - mean) / std, batch["mask"]
    mse_global = masked_mse(out["global"], y, mask)
    metrics = {"mse_global": mse_global}
    loss = mse_global
    if "local" in out:  # [B, K+1, T]: one regressor per transformer output token
      per_token = lambda a: jnp.broadcast_to(a[:, None], out["local"].shape)
      mse_local = masked_mse(out["local"], per_token(y), per_token(mask))
      loss = loss + config.loss_local_weight * mse_local
      metrics["mse_local"] = mse_local
    metrics["loss"] = loss
    return loss, (_new_rest(model), metrics)

  return loss_fn


class BmdTask:
  """The paper's BMD regression (configs/{baseline,mulpat,...,attmulroi}.py)."""

  score_key = "rmse"
  train_keys = input_pipeline.TRAIN_KEYS

  def __init__(self, config):
    self.config = config
    prep = input_pipeline.load_prep_summary(config.data.dir)
    if prep.get("task", "bmd") != "bmd":
      raise ValueError(f"{config.data.dir} was prepared for the {prep['task']} task; "
                       "BMD models need a dataset made by data_prep.build")
    self.scaler = inference.TargetScaler(prep["target_stats"], config.target)
    if config.model.num_outputs != len(self.scaler.names):
      raise ValueError(f"model.num_outputs={config.model.num_outputs} but target "
                       f"{config.target} has {len(self.scaler.names)} label columns")
    self.run_info = {"target_stats": prep["target_stats"],
                     "landmarks": input_pipeline.landmark_source(prep)}
    self.example_fn = input_pipeline.make_example_fn(config)

  def make_loss_fn(self, graphdef):
    return bmd_loss_fn(graphdef, self.config, self.scaler)

  def make_validation(self, graphdef, source, sharding):
    return _validation(self, graphdef, source, sharding, scaler=self.scaler)

  def validation_scalars(self, val) -> dict:
    return self.evaluator.scalars(val)

  def describe(self, val) -> str:
    return self.evaluator.describe(val)


# ----------------------------------------------------------------- landmarks


def heatmap_kl(logits, points, sigma: float, mask) -> jax.Array:
  """Mean KL(target || softmax(logits)) over the masked landmarks; the target is
  a normalised Gaussian of sd `sigma` cells at each true point.
  logits [B, K, h, w], points [B, K, 2] in input pixels, mask [B, K]."""
  h, w = logits.shape[-2:]
  dx = cell_centres(w, HEATMAP_STRIDE) - points[..., 0, None]
  dy = cell_centres(h, HEATMAP_STRIDE) - points[..., 1, None]
  d2 = (dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (sigma * HEATMAP_STRIDE) ** 2
  log_t = jax.nn.log_softmax((-0.5 * d2).reshape(*d2.shape[:2], -1), axis=-1)
  log_p = jax.nn.log_softmax(logits.reshape(*logits.shape[:2], -1), axis=-1)
  kl = jnp.sum(jnp.exp(log_t) * (log_t - log_p), axis=-1)
  return jnp.sum(kl * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_l1(pred, true, mask):
  """Mean |error| per coordinate over the masked points [B, K]."""
  err = jnp.abs(pred - true) * mask[..., None]
  return jnp.sum(err) / jnp.maximum(2.0 * jnp.sum(mask), 1.0)


class LandmarkTask:
  """The 16-landmark detector (configs/landmarks.py, bmdjax/models/landmarks.py)."""

  score_key = "score"  # MRE in mm (pixels where no spacing is known)
  train_keys = ("x", "points")

  def __init__(self, config):
    self.config = config
    prep = input_pipeline.load_prep_summary(config.data.dir)
    if prep.get("task") != build_landmarks.TASK:
      raise ValueError(f"{config.data.dir} is not a landmark dataset: prepare one with "
                       "`bmdjax prepare-landmarks --dicom_dir=D "
                       "--landmarks=landmarks.csv --out=DIR` and pass --config.data.dir=DIR")
    self.run_info = {"image_size": int(prep["size"])}

  @staticmethod
  def example_fn(record) -> dict:
    return {"x": record["pixels"], "points": np.asarray(record["landmarks"], np.float32),
            "mm_per_pixel": np.float32(record["mm_per_pixel"])}

  def make_loss_fn(self, graphdef):
    config = self.config
    aug = config.augment
    geometry = dict(scale=aug.scale, rotate_deg=aug.rotate_deg, translate=aug.translate,
                    aspect=aug.get("aspect", 0.0), zoom_in=aug.get("zoom_in", 0.0))
    weights = config.loss

    def loss_fn(params, rest, batch, rng):
      model = nnx.merge(graphdef, params, rest)
      k_geometry, k_look = jax.random.split(rng)
      x, points = augment.random_geometry(
          k_geometry, inference.to_unit(batch["x"]), batch["points"], **geometry)
      x = augment.film_look(k_look, x, cfg=aug)
      out = model(x, train=True)
      side = x.shape[-1]
      # Points the warp moved off the image cannot be found there: not scored.
      mask = jnp.all((points >= 0) & (points <= side - 1), axis=-1).astype(jnp.float32)
      l1_heatmap = masked_l1(out["heatmap_points"], points, mask) / HEATMAP_STRIDE
      l1_refined = masked_l1(out["points"], points, mask) / HEATMAP_STRIDE
      kl = heatmap_kl(out["logits"], points, config.model.heatmap_sigma, mask)
      loss = (weights.heatmap_points * l1_heatmap + weights.heatmap_kl * kl
              + (weights.refined_points * l1_refined if config.model.graph_layers else 0.0))
      radial = jnp.sqrt(jnp.sum(jnp.square(out["points"] - points), -1))
      metrics = {"loss": loss, "l1_heatmap_cells": l1_heatmap,
                 "l1_refined_cells": l1_refined, "heatmap_kl": kl,
                 "mre_px": jnp.sum(radial * mask) / jnp.maximum(jnp.sum(mask), 1.0)}
      return loss, (_new_rest(model), metrics)

    return loss_fn

  def make_validation(self, graphdef, source, sharding):
    return _validation(self, graphdef, source, sharding, example_fn=self.example_fn)

  def validation_scalars(self, val) -> dict:
    return self.evaluator.scalars(val)

  def describe(self, val) -> str:
    return self.evaluator.describe(val)


def _validation(task, graphdef, source, sharding, **parts):
  """The evaluator config.evals.validation names (bmdjax.evaluators); its
  score_key becomes the task's (it picks the best checkpoint)."""
  task.evaluator = evaluators.get(task.config, graphdef, source, sharding, **parts)
  task.score_key = task.evaluator.score_key
  return task.evaluator.run


TASKS = {"bmd": BmdTask, "landmarks": LandmarkTask}


def get(config):
  """The task object of `config` (configs without `task` are BMD models)."""
  config_lib.finalize(config)  # derived fields first (idempotent)
  name = config.get("task", "bmd")
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
  return TASKS[name](config)
