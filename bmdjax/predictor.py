"""A trained BMD model restored for screening one study at a time.

The counterpart of detector.LandmarkDetector for BMD: `Model.from_workdir`
restores a run with the config and target scaling it was trained with, and
the crop size it was trained on (never guessed), so a study screened here
gets the number bmdjax evaluate would give it.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from bmdjax import config_lib, inference, input_pipeline, runs
from data_prep.crops import CropSpec


def crop_size(run: dict, config, size: int | None = None) -> int:
  """Side of the crops the model was trained on.

  A different size would silently change every prediction, so it is never
  guessed: run.json's `crop_size`, else the prepared dataset's prep.json, else
  `size` given by the user; a `size` that contradicts a known one is an error.
  """
  known = run.get("crop_size")
  prep_json = os.path.join(config.data.dir, "prep.json")
  if known is None and config.data.dir and os.path.isfile(prep_json):
    known = input_pipeline.load_prep_summary(config.data.dir)["size"]
  if known is not None and size is not None and int(size) != int(known):
    raise ValueError(f"--size={size} but the model was trained on {known}x{known} crops")
  if known is None and size is None:
    raise ValueError(f"cannot tell the crop size the model was trained on: run.json has "
                     f"none and {prep_json} is gone; pass --size=N (the --size given to "
                     "data_prep.build)")
  return int(known if known is not None else size)


class Model:
  """A BMD model ready for screening: config, weights and target scaling.

  `Model.from_workdir` restores a trained run; the constructor takes the state
  itself (e.g. freshly initialised weights, as bmdjax.benchmark times them).
  """

  def __init__(self, config, params, rest, target_stats: dict, crop_size: int, *,
               graphdef=None, description: str | None = None, step: int | None = None,
               trained_landmarks: str | None = None):
    self.config = config_lib.finalize(config)
    self.scaler = inference.TargetScaler(target_stats, self.config.target)
    data = self.config.data
    grids = (data.grid,) if data.inputs == "patches" else ()
    self.spec = CropSpec(size=int(crop_size), grids=grids)
    if graphdef is None:
      graphdef, _, _ = inference.init_model_state(self.config)
    self.params, self.rest, self.step = params, rest, step
    self.trained_landmarks = trained_landmarks  # "given", "detected" or None (unknown)
    self._predict = inference.make_predict_fn(graphdef)
    self._example = input_pipeline.make_example_fn(self.config)
    self.description = description or (
        f"{self.config.model.name} ({self.config.model.backbone}), target "
        f"{self.config.target}")

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str = "best", size: int | None = None):
    """The run trained in `workdir` (its run.json config, `checkpoint` weights)."""
    run = runs.load_run_info(workdir)
    config = config_lib.for_run(run["config"], where=workdir)
    graphdef, params, rest = inference.init_model_state(config)
    params, rest, step = runs.restore_params(workdir, params, rest, checkpoint)
    return cls(config, params, rest, run["target_stats"], crop_size(run, config, size),
               graphdef=graphdef, step=step, trained_landmarks=runs.trained_landmarks(run),
               description=(f"{config.model.name} ({config.model.backbone}), target "
                            f"{config.target}, {checkpoint} checkpoint (step {step})"))

  def __call__(self, crops: dict) -> dict[str, float]:
    """Crops of one study (process_study output) -> BMD (g/cm2) per vertebra."""
    # Placeholder labels: make_example_fn assembles the inputs exactly as in training.
    record = {**crops, "bmd": np.full(4, np.nan, np.float32), "sex": 0, "age": np.nan}
    x = self._example(record)["x"][None]
    z = np.asarray(jax.device_get(self._predict(self.params, self.rest, x)))
    bmd = self.scaler.denormalise(z)[0]
    return {v: float(b) for v, b in zip(self.scaler.names, bmd)}


def load_models(workdirs, checkpoint: str = "best", size: int | None = None) -> list:
  """One Model per workdir; each vertebra may be predicted by one run only."""
  workdirs = [workdirs] if isinstance(workdirs, (str, os.PathLike, Model)) else list(workdirs)
  if not workdirs:
    raise ValueError("give at least one --workdir")
  models, owner = [], {}
  for w in workdirs:
    model = w if isinstance(w, Model) else Model.from_workdir(os.fspath(w), checkpoint, size)
    for v in model.scaler.names:
      if v in owner:
        raise ValueError(f"{v} is predicted by both {owner[v]} and {w}: give each vertebra "
                         "once (a target=all run, or one run per vertebra)")
      owner[v] = w
    models.append(model)
  return models
