"""A trained run evaluated the way the paper does, with its report.

The model, target and preprocessing are those the run was trained with
(WORKDIR/run.json): a given config may only change where and how the data is
read, so a report can never describe one network's output rescaled for another
target. Beside the model the report carries an age+sex-only linear regression
fitted on the training split, so a reader sees what the image adds.

The validation predictions are stored in the run
(WORKDIR/calibration/predictions_validation.csv): the prediction intervals,
the recalibration line and the screening threshold are fitted on them
(bmdjax/clinical.py), here and again by bmdjax.predict, so both give a study
the same numbers.
"""

from __future__ import annotations

import os

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pandas as pd

from bmdjax import (clinical, config_lib, conformal, distributed, evaluators, inference,
                    input_pipeline, model_card, report, runs, screening)
from data_prep.schema import VERTEBRAE


def _design(sex, age):
  """Age+sex design matrix: per-sex quadratic in age (captures the female
  post-menopausal decline that a single slope would miss)."""
  male = (np.asarray(sex) == "M").astype(np.float64)
  a = (np.asarray(age, np.float64) - 55.0) / 15.0
  return np.stack([np.ones_like(a), male, a, a * a, male * a, male * a * a], axis=1)


def age_sex_baseline(train: pd.DataFrame, target: pd.DataFrame) -> pd.DataFrame:
  """Least-squares age+sex model per vertebra, fitted on `train` (manifest rows
  with columns sex, age, L1..L4) and applied to `target` (predictions schema)."""
  out = target[["patient_id", "image", "sex", "age"] +
               [f"true_{v}" for v in VERTEBRAE]].copy()
  x_train = _design(train["sex"], train["age"])
  x_target = _design(target["sex"], target["age"])
  for v in VERTEBRAE:
    if f"pred_{v}" not in target:
      continue
    y = train[v].astype(float).to_numpy()
    ok = np.isfinite(y)
    coef, *_ = np.linalg.lstsq(x_train[ok], y[ok], rcond=None)
    out[f"pred_{v}"] = x_target @ coef
  return out


def evaluate(config, workdir: str, split: str = "test", checkpoint: str = "best",
             out_dir: str | None = None, bootstrap: int = 1000, reference=None,
             devices=None, level: float = conformal.DEFAULT_LEVEL,
             target_sensitivity: float = screening.DEFAULT_SENSITIVITY,
             recalibrate: bool = False) -> dict:
  """Predicts `split`, writes the report; returns the metrics dict.

  `config`: None (the run's own, from run.json) or a config that must agree
  with the run's in what the network computes (config_lib.for_run).

  Every process predicts its slice of `split` on its devices (default: all
  devices of all processes); process 0 alone writes the report, of all rows.
  """
  out_dir = out_dir or runs.path(workdir, runs.REPORT)
  run = runs.load_run_info(workdir)
  config = config_lib.for_run(run["config"], config, where=workdir)
  mesh = distributed.data_mesh(devices)
  input_pipeline.check_batch(config.batch_size, mesh)
  scaler = inference.TargetScaler(run["target_stats"], config.target)
  graphdef, params, rest = inference.init_model_state(config)
  params, rest, step = runs.restore_params(workdir, params, rest, checkpoint,
                                           sharding=NamedSharding(mesh, P()))
  sharding = NamedSharding(mesh, P("data"))
  frames = {}
  for name in dict.fromkeys([split, "validation"]):
    evaluator = evaluators.get(config, graphdef, input_pipeline.open_split(config.data.dir, name),
                               sharding, scaler=scaler)  # the one training validated with
    frames[name] = evaluator.predict(params, rest, desc=f"evaluate {name}")
  predictions, validation = frames[split], frames["validation"]
  if jax.process_index() != 0:
    return {}
  os.makedirs(os.path.dirname(clinical.validation_path(workdir)), exist_ok=True)
  validation.to_csv(clinical.validation_path(workdir), index=False, float_format="%.5f")
  ref = report.resolve_reference(reference)
  fitted = clinical.fit(validation, ref, level, target_sensitivity)
  os.makedirs(out_dir, exist_ok=True)
  variant = "recalibrated" if recalibrate else "raw"
  scored = clinical.add_intervals(clinical.with_scores(
      predictions, ref, fitted["recalibration"] if recalibrate else None), fitted, variant)
  scored.to_csv(os.path.join(out_dir, "predictions.csv"), index=False, float_format="%.5f")
  manifest = pd.read_csv(os.path.join(config.data.dir, "manifest.csv"))
  train = manifest[(manifest.status == "ok") & (manifest.split == config.data.train_split)]
  baseline = age_sex_baseline(train, predictions)
  baseline.to_csv(os.path.join(out_dir, "predictions_age_sex.csv"), index=False,
                  float_format="%.5f")
  title = (f"{config.model.name} ({config.model.backbone}), target {config.target}, "
           f"split {split}, checkpoint {checkpoint} (step {step})")
  caution = clinical.landmark_caution(
      runs.trained_landmarks(run),
      input_pipeline.landmark_source(input_pipeline.load_prep_summary(config.data.dir)))
  info = {"model": title, "data": model_card.data_info(config.data.dir),
          "cautions": [caution] if caution else []}
  return report.write_report(predictions, out_dir, baseline_predictions=baseline,
                             bootstrap=bootstrap, title=title, reference=ref,
                             clinical_fit=fitted, validation=validation,
                             recalibrate=recalibrate, model_info=info)
