"""Model state, prediction over a split, and restoring a trained run.

Shared by training (validation each epoch), evaluation and screening, so that
all three see exactly the same preprocessing and de-normalisation.
"""

from __future__ import annotations

import json
import warnings

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pandas as pd

from bmdjax import config_lib, input_pipeline, models
# Run state lives in bmdjax.runs; these names are kept for callers.
from data_prep.schema import SEX_NAMES, VERTEBRAE


def init_model_state(config):
  """(graphdef, params, rest) of a freshly initialised model, as pure dicts.
  `config` is finalized first (its derived fields filled in place)."""
  config_lib.finalize(config)
  model = models.build(config.model, rngs=nnx.Rngs(config.seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def to_unit(x: jax.Array) -> jax.Array:
  """uint16 crops -> float32 in [0, 1]."""
  return x.astype(jnp.float32) / 65535.0


class TargetScaler:
  """The network regresses standardised BMD; this maps back to g/cm2.

  Mean and SD come from the training split (prep.json) and travel with the run.
  """

  def __init__(self, stats: dict, target: str):
    names = config_lib.target_names(target)
    self.names = names
    self.mean = np.array([stats[v]["mean"] for v in names], np.float32)
    self.std = np.array([stats[v]["std"] for v in names], np.float32)

  def normalise(self, y):
    return (y - self.mean) / self.std

  def denormalise(self, z):
    return z * self.std + self.mean


def make_predict_fn(graphdef):
  @jax.jit
  def predict(params, rest, x):
    model = nnx.merge(graphdef, params, rest)
    return model(to_unit(x), train=False)["global"]
  return predict


def predict_rows(config, predict_fn, params, rest, source, sharding, to_row, *,
                 example_fn=None, desc: str = "") -> list[dict]:
  """The one prediction loop over a split, for every task: rows of all
  records of `source`, in the split's order.

  Each process predicts its own slice of the records (`eval_batches`) with
  `predict_fn(params, rest, x)` on the sharded batch; `to_row(batch, meta, out,
  i)` makes the row of real record i of a batch (`out`: the predictions as this
  process's numpy rows). The rows of all processes are then gathered, so every
  process returns the same, complete list (training's validation needs all of
  them to agree on "best"). Each row keeps the record's `index` in the split.
  """
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  # Replicated on the batch's mesh (a no-op when they already are).
  params, rest = jax.device_put((params, rest), NamedSharding(sharding.mesh, P()))
  rows = []
  batches = input_pipeline.eval_batches(config, source, example_fn=example_fn)
  total = input_pipeline.num_eval_batches(config, len(source))
  for batch, meta, valid in tqdm(batches, total=total, desc=desc or "predict",
                                 disable=jax.process_index() != 0, leave=False):
    x = input_pipeline.to_global({"x": batch["x"]}, sharding)["x"]
    out = jax.tree.map(input_pipeline.to_local, predict_fn(params, rest, x))
    rows += [to_row(batch, meta[i], out, i) for i in np.flatnonzero(valid)]
  return sorted(allgather_rows(rows), key=lambda r: r["index"])


def predict_split(config, predict_fn, params, rest, source, sharding,
                  scaler: TargetScaler, desc: str = "") -> pd.DataFrame:
  """BMD predictions for every record of `source`, in the predictions.csv
  schema and in the split's order (predict_rows), on every process."""
  def to_row(batch, meta, z, i):
    pred = scaler.denormalise(z[i])
    row = {**meta, "sex": SEX_NAMES[int(batch["sex"][i])], "age": float(batch["age"][i])}
    row.update({f"true_{v}": float(batch["bmd"][i][j]) for j, v in enumerate(VERTEBRAE)})
    row.update({f"pred_{v}": float(pred[j]) for j, v in enumerate(scaler.names)})
    return row

  rows = predict_rows(config, predict_fn, params, rest, source, sharding, to_row,
                      desc=desc)
  for row in rows:
    del row["index"]
  return pd.DataFrame(rows)


def allgather_rows(rows: list[dict]) -> list[dict]:
  """Every process's rows (JSON-serialisable dicts), on every process."""
  if jax.process_count() == 1:
    return rows
  from jax.experimental import multihost_utils
  blob = np.frombuffer(json.dumps(rows).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([blob.size], np.int32)).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:blob.size] = blob
  blobs = multihost_utils.process_allgather(padded)
  return [row for blob, size in zip(blobs, sizes)
          for row in json.loads(bytes(blob[:size]).decode())]


def quick_metrics(df: pd.DataFrame) -> dict:
  """r and RMSE per predicted vertebra (the per-epoch validation summary).

  Same definitions as the report (bmdjax.metrics); undefined values (e.g. an
  untrained model's constant output) are NaN here so the epoch log still prints.
  """
  from bmdjax import metrics
  out = {}
  for v in VERTEBRAE:
    if f"pred_{v}" not in df:
      continue
    t, p = df[f"true_{v}"].to_numpy(), df[f"pred_{v}"].to_numpy()
    ok = np.isfinite(t) & np.isfinite(p)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
      r, rmse = metrics.pearson_r(t[ok], p[ok]), metrics.rmse(t[ok], p[ok])
    out[v] = {"r": float("nan") if r is None else r,
              "rmse": float("nan") if rmse is None else rmse}
  return out


