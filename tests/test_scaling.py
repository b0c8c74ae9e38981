"""One device and four (simulated, tests/conftest.py) train alike at the same
global batch, and a checkpoint written on one restores on the other."""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from bmdjax import distributed, inference, input_pipeline, training
from bmdjax import runs
from tests import helpers

STOP = 3  # a checkpoint mid-epoch
# Sharding changes the float summation order (and XLA's conv blocking), and a
# narrow VGG without BatchNorm amplifies it: over the 9 steps compared, 1 and 4
# devices differ by up to ~1e-4 relative in the loss and ~3e-4 in parameters
# (max |param| ~1). One SGD step moves parameters by ~2e-2 and another data
# order by ~4e-2 (losses then differ by O(1)), so these tolerances still catch
# a wrong batch or a wrong data position by an order of magnitude.
LOSS_RTOL = 1e-3
PARAM_ATOL = 2e-3


def scaling_config(data_dir):
  """Tiny model; plain SGD (Adam would amplify float noise in near-zero
  gradients); validation each epoch; checkpoints only when stopped."""
  config = helpers.tiny_config(data_dir, num_epochs=2, batch_size=4)
  config.optim.update(name="sgd", lr=0.01, momentum=0.9)
  config.checkpoint_every_steps = 1000
  return config


def num_steps(config):
  """Just past the first epoch: after one validation, mid-way through epoch 2."""
  n = len(input_pipeline.open_split(config.data.dir, config.data.train_split))
  return input_pipeline.steps_per_epoch(config, n) + 2


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """Every run jits its step anew; with the persistent compilation cache a
  repeated program costs ~1 s instead of ~10 s of XLA compilation."""
  from jax._src import compilation_cache as cc
  if jax.config.jax_compilation_cache_dir:  # the session already has one
    yield
    return
  jax.config.update("jax_compilation_cache_dir",
                    str(tmp_path_factory.getbasetemp() / "jax_cache"))
  cc.reset_cache()
  yield
  jax.config.update("jax_compilation_cache_dir", None)
  cc.reset_cache()


def flat(tree):
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def losses(out):
  return np.array([h["loss"] for h in out["history"]])


@pytest.fixture(scope="module")
def reference_runs(prepared_dir, tmp_path_factory):
  """num_steps steps on one device and on four."""
  config = scaling_config(prepared_dir)
  out = {}
  for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
    workdir = tmp_path_factory.mktemp(f"scaling_{name}")
    out[name] = training.train_and_evaluate(config, str(workdir),
                                            stop_after_steps=num_steps(config), devices=devices)
  return config, out


def test_four_devices_train_like_one(reference_runs):
  assert jax.device_count() == 4
  config, out = reference_runs
  one, four = out["one"], out["four"]
  assert one["step"] == four["step"] == num_steps(config)
  np.testing.assert_allclose(losses(four), losses(one), rtol=LOSS_RTOL)
  np.testing.assert_allclose(flat(four["state"]["params"]), flat(one["state"]["params"]),
                             rtol=0, atol=PARAM_ATOL)
  # The state really lives on the mesh each run asked for.
  assert len(one["state"]["step"].sharding.device_set) == 1
  assert len(four["state"]["step"].sharding.device_set) == 4
  # The validation after epoch 1 agrees too.
  assert one["best"]["step"] == four["best"]["step"]
  # Parameters agree to PARAM_ATOL; the validation RMSE of this barely trained
  # model moves ~1e-4 relative with the order of the cross-device sums.
  np.testing.assert_allclose(four["best"]["rmse"], one["best"]["rmse"], rtol=1e-3)


@pytest.mark.parametrize("save_on,restore_on", [(4, 1), (1, 4)])
def test_checkpoint_moves_between_device_counts(reference_runs, tmp_path, save_on,
                                                restore_on):
  config, out = reference_runs
  workdir = str(tmp_path / "run")
  part = training.train_and_evaluate(config, workdir, stop_after_steps=STOP,
                                     devices=jax.devices()[:save_on])
  # Restored onto the other mesh: bit-identical parameters.
  mesh = distributed.data_mesh(jax.devices()[:restore_on])
  graphdef, params, rest = inference.init_model_state(config)
  params, rest, step = runs.restore_params(workdir, params, rest, "latest",
                                                sharding=NamedSharding(mesh, P()))
  assert step == STOP
  assert all(len(x.sharding.device_set) == restore_on for x in jax.tree.leaves(params))
  np.testing.assert_array_equal(flat(params), flat(part["state"]["params"]))
  # Training continues there, on the same data, to what an uninterrupted run gives.
  resumed = training.train_and_evaluate(config, workdir, stop_after_steps=num_steps(config),
                                        devices=jax.devices()[:restore_on])
  assert resumed["step"] == num_steps(config)
  reference = out["one" if restore_on == 1 else "four"]
  np.testing.assert_allclose(losses(resumed), losses(reference)[STOP:], rtol=LOSS_RTOL)
  np.testing.assert_allclose(flat(resumed["state"]["params"]),
                             flat(reference["state"]["params"]), rtol=0, atol=PARAM_ATOL)
  # Momentum is a running gradient, far noisier than the parameters: compare norms.
  momentum, ref_momentum = flat(resumed["state"]["opt"]), flat(reference["state"]["opt"])
  rel = np.linalg.norm(momentum - ref_momentum) / np.linalg.norm(ref_momentum)
  assert rel < 0.05, rel
