"""Evaluators: how a model is scored on a split, chosen by config.

big_vision's pattern: `config.evals` maps a name to `{type: <EVALUATORS key>}`;
training validates with `config.evals.validation` every epoch (its `score_key`,
lower is better, picks the best checkpoint), and `bmdjax evaluate` predicts
its split with the same evaluator. A new way to score a run is one class
registered here, not an edit of a task. Configs without `evals` (runs trained
before it existed) get their task's default.

An evaluator is built with (config, graphdef, source, sharding, scaler=...,
example_fn=...) (what the task knows) and has
  run(params, rest) -> dict holding score_key    the summary of one pass
  scalars(summary) -> dict, describe(summary)     TensorBoard and the epoch log
"""

from __future__ import annotations

import numpy as np

from bmdjax import detector, inference, landmark_metrics

EVALUATORS = {}
DEFAULT = {"bmd": "bmd_regression", "landmarks": "landmark_errors"}


def register(name: str):
  def add(cls):
    EVALUATORS[name] = cls
    return cls
  return add


def get(config, graphdef, source, sharding, name: str = "validation", **task_parts):
  """The evaluator `config.evals[name]` names (default: the task's)."""
  evals = config.get("evals") or {}
  kind = (evals.get(name) or {}).get("type") or DEFAULT[config.get("task", "bmd")]
  if kind not in EVALUATORS:
    raise ValueError(f"config.evals.{name}.type={kind!r} is unknown; known: "
                     f"{sorted(EVALUATORS)}")
  return EVALUATORS[kind](config, graphdef, source, sharding, **task_parts)


@register("bmd_regression")
class BmdRegression:
  """Per-vertebra r and RMSE in g/cm2 (the report's definitions); the score is
  the mean RMSE over the predicted vertebrae."""

  score_key = "rmse"

  def __init__(self, config, graphdef, source, sharding, *, scaler, **_):
    self.config, self.source, self.sharding = config, source, sharding
    self.scaler = scaler
    self.predict_fn = inference.make_predict_fn(graphdef)

  def predict(self, params, rest, desc: str = "validation"):
    """predictions.csv rows of the split (inference.predict_split)."""
    return inference.predict_split(self.config, self.predict_fn, params, rest, self.source,
                                   self.sharding, self.scaler, desc=desc)

  def run(self, params, rest) -> dict:
    summary = inference.quick_metrics(self.predict(params, rest))
    return {"rmse": float(np.mean([m["rmse"] for m in summary.values()])),
            "metrics": summary}

  @staticmethod
  def scalars(val) -> dict:
    return {"rmse": val["rmse"], **{f"r_{v}": m["r"] for v, m in val["metrics"].items()}}

  @staticmethod
  def describe(val) -> str:
    return ", ".join(f"{v} r={m['r']:.3f} rmse={m['rmse']:.4f}"
                     for v, m in val["metrics"].items())


@register("landmark_errors")
class LandmarkErrors:
  """Landmark MRE (mm where the pixel spacing is known) and SDR within 2/4/8
  mm, of the refined and of the heatmap points; the score is the MRE."""

  score_key = "score"

  def __init__(self, config, graphdef, source, sharding, *, example_fn, **_):
    self.config, self.source, self.sharding = config, source, sharding
    self.example_fn = example_fn
    self.predict_fn = detector.make_predict_fn(graphdef, config.get("tta"))

  def run(self, params, rest) -> dict:
    pred = detector.predict_split(self.config, self.predict_fn, params, rest, self.source,
                                  self.sharding, self.example_fn, desc="validation")
    mm = pred["mm_per_pixel"]
    out = {}
    for name, key in (("", "points"), ("heatmap_", "heatmap_points")):
      s = landmark_metrics.summarize(
          landmark_metrics.radial_errors(pred[key], pred["true"]), mm)["overall"]
      out.update({f"{name}{k}": s[k] for k in ("mre_px", "mre_mm", "sdr_2mm",
                                               "sdr_4mm", "sdr_8mm")})
    out["confidence_median"] = float(np.median(pred["confidence"]))
    out["score"] = out["mre_mm"] if np.isfinite(out["mre_mm"]) else out["mre_px"]
    return out

  @staticmethod
  def scalars(val) -> dict:
    return {k: v for k, v in val.items() if k not in ("step", "epoch")}

  @staticmethod
  def describe(val) -> str:
    return (f"MRE {val['mre_mm']:.2f} mm ({val['mre_px']:.2f} px), SDR 2/4/8 mm "
            f"{100 * val['sdr_2mm']:.0f}/{100 * val['sdr_4mm']:.0f}/"
            f"{100 * val['sdr_8mm']:.0f}%; heatmap only {val['heatmap_mre_mm']:.2f} mm")
