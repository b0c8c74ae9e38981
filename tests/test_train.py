"""Training: the loss goes down, and a resumed run equals an uninterrupted one."""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from bmdjax import config_lib, inference, input_pipeline, training
from tests import helpers


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _train_rmse(config, params, rest):
  """r and RMSE on the training split without augmentation (deterministic)."""
  graphdef, _, _ = inference.init_model_state(config)
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  prep = input_pipeline.load_prep_summary(config.data.dir)
  scaler = inference.TargetScaler(prep["target_stats"], config.target)
  source = input_pipeline.open_split(config.data.dir, "train")
  df = inference.predict_split(config, inference.make_predict_fn(graphdef), params, rest,
                               source, NamedSharding(mesh, P("data")), scaler)
  return inference.quick_metrics(df)["L1"]


def test_tiny_training_lowers_the_loss(prepared_dir, tmp_path):
  # ~180 steps: a VGG without BatchNorm first sits on a plateau for ~80 steps.
  config = helpers.tiny_config(prepared_dir, num_epochs=60, lr=3e-3, batch_size=8)
  config.eval_every_epochs = 10
  config.augment.update(rotate_deg=0.0, scale=0.0, translate=0.0)
  _, params0, rest0 = inference.init_model_state(config)
  before = _train_rmse(config, params0, rest0)
  out = training.train_and_evaluate(config, str(tmp_path / "run"))
  after = _train_rmse(config, out["state"]["params"], out["state"]["rest"])
  # The loss falls, and not only by learning the mean: predictions track BMD
  # (an untrained or broken model has r near 0 here).
  assert after["rmse"] < before["rmse"], (before, after)
  assert after["r"] > 0.4 > abs(before["r"]), (before, after)
  assert len(out["history"]) == out["step"]  # logged every step
  assert np.mean([h["loss"] for h in out["history"][-10:]]) < np.mean(
      [h["loss"] for h in out["history"][:10]])
  assert out["best"] is not None and np.isfinite(out["best"]["rmse"])
  assert (tmp_path / "run" / "best.json").exists()
  assert list((tmp_path / "run" / "tb").iterdir()), "no TensorBoard events written"


def test_interrupted_run_resumes_to_identical_parameters(tiny_run, tmp_path):
  config, _, full = tiny_run
  total = full["step"]
  assert total >= 4
  stop = total // 2 + 1  # mid-epoch, so the data iterator state matters
  part = training.train_and_evaluate(config, str(tmp_path / "part"), stop_after_steps=stop)
  assert part["step"] == stop
  resumed = training.train_and_evaluate(config, str(tmp_path / "part"))
  assert resumed["step"] == total
  np.testing.assert_array_equal(_flat(resumed["state"]["params"]),
                                _flat(full["state"]["params"]))
  np.testing.assert_array_equal(_flat(resumed["state"]["opt"]),
                                _flat(full["state"]["opt"]))


def test_training_without_a_data_folder_is_refused_before_anything_is_written(tmp_path):
  config = helpers.tiny_config("")
  with pytest.raises(config_lib.ConfigError, match="set --config.data.dir"):
    training.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
