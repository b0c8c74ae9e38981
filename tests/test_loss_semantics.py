"""What the BMD loss means: missing vertebrae are ignored (value and
gradient), loss_local_weight scales the local term only, and targets are
standardised with the run's (training-split) statistics. Checked against a
float64 numpy recomputation from the model's own outputs."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmdjax import inference, tasks
from configs import common

STATS = {"L1": {"mean": 0.9, "std": 0.2}, "L2": {"mean": 1.0, "std": 0.25},
         "L3": {"mean": 1.1, "std": 0.1}, "L4": {"mean": 1.2, "std": 0.125}}


def test_masked_mse_value_and_gradient_by_hand():
  pred = jnp.array([[0.5, 1.0, -2.0, 3.0], [1.5, 0.0, 2.0, -1.0]])
  target = jnp.array([[1.0, 1.0, 7.0, 0.0], [0.0, 2.0, 2.0, 5.0]])
  mask = jnp.array([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0]])
  # Present errors: 0.5, 0, 3 | 1.5, 0, 6 -> squares 0.25, 0, 9, 2.25, 0, 36 over 6.
  assert float(tasks.masked_mse(pred, target, mask)) == pytest.approx(47.5 / 6)
  grad = np.asarray(jax.grad(tasks.masked_mse)(pred, target, mask))
  d = np.asarray(pred - target, np.float64)
  np.testing.assert_allclose(grad, 2 * d * np.asarray(mask) / 6, rtol=1e-6)
  assert grad[0, 2] == 0.0 and grad[1, 1] == 0.0  # missing: no gradient at all
  # One label present: its own squared error (the denominator is the count).
  one = jnp.zeros_like(mask).at[1, 3].set(1.0)
  assert float(tasks.masked_mse(pred, target, one)) == pytest.approx(36.0)
  # Nothing present: zero loss and gradient, not NaN.
  none = jnp.zeros_like(mask)
  assert float(tasks.masked_mse(pred, target, none)) == 0.0
  assert not np.asarray(jax.grad(tasks.masked_mse)(pred, target, none)).any()


def test_target_scaler_uses_mean_and_sd_per_vertebra():
  scaler = inference.TargetScaler(STATS, "all")
  assert scaler.names == ("L1", "L2", "L3", "L4")
  y = np.array([[1.3, 0.5, 1.1, 1.45]], np.float32)
  np.testing.assert_allclose(scaler.normalise(y), [[2.0, -2.0, 0.0, 2.0]], rtol=1e-6)
  np.testing.assert_allclose(scaler.denormalise(np.array([[2.0, -2.0, 0.0, 2.0]])), y,
                             rtol=1e-6)
  one = inference.TargetScaler(STATS, "L3")
  np.testing.assert_allclose(one.normalise(np.array([1.2])), [1.0], rtol=1e-6)


def _config(weight):
  config = common.get_config("attmulroi", "width=0.0625,target=all")
  config.model.transformer.update(depth=1, dim=32, heads=2, head_dim=16, mlp_dim=32)
  config.model.regressor_hidden = 16
  config.loss_local_weight = weight
  # No warp: the loss sees exactly the input (checked below), so its value can
  # be recomputed from the model's outputs.
  config.augment.update(scale=0.0, rotate_deg=0.0, translate=0.0, flip=False)
  return config


@pytest.fixture(scope="module")
def setup():
  config = _config(1.0)
  graphdef, params, rest = inference.init_model_state(config)
  rng = np.random.default_rng(0)
  b, size = 4, 32
  batch = {"x": jnp.asarray(rng.integers(0, 65536, (b, 15, size, size), np.uint16)),
           "y": jnp.asarray(rng.uniform(0.6, 1.4, (b, 4)), jnp.float32),
           "mask": jnp.asarray([[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 1]],
                               jnp.float32)}
  model = nnx.merge(graphdef, params, rest)
  out = model(inference.to_unit(batch["x"]), train=True)
  outputs = {k: np.asarray(out[k], np.float64) for k in ("global", "local")}
  return graphdef, params, rest, batch, outputs


def _hand_loss(outputs, batch, weight):
  mean = np.array([STATS[v]["mean"] for v in common.VERTEBRAE])
  std = np.array([STATS[v]["std"] for v in common.VERTEBRAE])
  y = (np.asarray(batch["y"], np.float64) - mean) / std
  m = np.asarray(batch["mask"], np.float64)
  g = np.sum(m * (outputs["global"] - y) ** 2) / m.sum()
  local = outputs["local"]  # [B, tokens, 4]
  ml = np.broadcast_to(m[:, None], local.shape)
  l = np.sum(ml * (local - y[:, None]) ** 2) / ml.sum()
  return g, l, g + weight * l


def _loss(graphdef, params, rest, batch, weight):
  config = _config(weight)
  scaler = inference.TargetScaler(STATS, "all")
  fn = tasks.bmd_loss_fn(graphdef, config, scaler)
  (loss, (_, metrics)), grads = jax.value_and_grad(fn, has_aux=True)(
      params, rest, batch, jax.random.key(0))
  return float(loss), {k: float(v) for k, v in metrics.items()}, grads


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_loss_is_global_plus_weighted_local_mse_on_standardised_targets(setup, weight):
  graphdef, params, rest, batch, outputs = setup
  loss, metrics, _ = _loss(graphdef, params, rest, batch, weight)
  g, l, total = _hand_loss(outputs, batch, weight)
  assert outputs["local"].shape[1] == 15 + 1 and outputs["local"].shape[2] == 4
  assert metrics["mse_global"] == pytest.approx(g, rel=1e-4)
  assert metrics["mse_local"] == pytest.approx(l, rel=1e-4)
  assert loss == pytest.approx(total, rel=1e-4) and metrics["loss"] == loss
  assert abs(l - g) > 1e-3  # the two terms differ, so a swapped weight shows


def test_missing_vertebrae_give_no_loss_and_no_gradient(setup):
  graphdef, params, rest, batch, _ = setup
  loss, _, grads = _loss(graphdef, params, rest, batch, 1.0)
  # Any value at a missing (mask 0) vertebra: same loss, same gradients.
  moved = dict(batch, y=jnp.where(batch["mask"] > 0, batch["y"], 50.0))
  loss2, _, grads2 = _loss(graphdef, params, rest, moved, 1.0)
  assert loss2 == loss
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A present vertebra does move the gradient (the comparison has power).
  present = dict(batch, y=batch["y"].at[1, 0].add(0.3))
  loss3, _, grads3 = _loss(graphdef, params, rest, present, 1.0)
  assert loss3 != loss
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads3)))


@pytest.mark.parametrize("target,cols", [("all", [0, 1, 2, 3]), ("L3", [2]), ("L1", [0])])
def test_missing_bmd_becomes_mask_zero_with_a_finite_target(target, cols):
  """A record's NaN BMD (vertebra not measured) -> mask 0 and y 0, never NaN
  (NaN * 0 is NaN: it would poison the loss and every gradient)."""
  from bmdjax import input_pipeline
  config = common.get_config("attmulroi", f"width=0.0625,target={target}")
  bmd = np.array([0.81, np.nan, 1.02, np.nan], np.float32)
  record = {"rois": np.zeros((14, 4, 4), np.uint16), "whole": np.ones((4, 4), np.uint16),
            "bmd": bmd, "sex": 1, "age": 61.0}
  ex = input_pipeline.make_example_fn(config)(record)
  want_mask = np.isfinite(bmd[cols]).astype(np.float32)
  np.testing.assert_array_equal(ex["mask"], want_mask)
  np.testing.assert_array_equal(ex["y"], np.where(want_mask > 0, bmd[cols], 0.0))
  assert np.isfinite(ex["y"]).all() and ex["y"].dtype == np.float32
  assert ex["x"].shape == (15, 4, 4) and (ex["x"][14] == 1).all()  # whole image last


def test_landmark_losses_ignore_masked_points():
  pred = jnp.array([[[1.0, 2.0], [6.0, 5.0], [0.0, 0.0]]])
  true = jnp.array([[[2.0, 0.0], [5.0, 9.0], [100.0, -50.0]]])
  mask = jnp.array([[1.0, 1.0, 0.0]])  # the third point left the image
  # |errors| of the 2 present points: 1, 2, 1, 4 -> mean over 4 coordinates.
  assert float(tasks.masked_l1(pred, true, mask)) == pytest.approx(8 / 4)
  grad = np.asarray(jax.grad(tasks.masked_l1)(pred, true, mask))
  np.testing.assert_allclose(grad[0, :2], np.sign(np.asarray(pred - true))[0, :2] / 4)
  assert not grad[0, 2].any()
  logits = jax.random.normal(jax.random.key(0), (1, 3, 4, 4))
  points = jnp.array([[[10.0, 10.0], [20.0, 5.0], [1e3, 1e3]]])
  kl = lambda lg: tasks.heatmap_kl(lg, points, 1.5, mask)
  g = np.asarray(jax.grad(kl)(logits))
  assert not g[0, 2].any() and g[0, :2].any()
  # The KL of two points is the mean of their separate KLs.
  one = [float(tasks.heatmap_kl(logits[:, k:k + 1], points[:, k:k + 1], 1.5,
                                jnp.ones((1, 1)))) for k in range(2)]
  assert float(kl(logits)) == pytest.approx(np.mean(one), rel=1e-5)
