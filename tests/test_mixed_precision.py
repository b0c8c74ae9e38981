"""Mixed precision: bfloat16 compute, float32 parameters, gradients, optimiser
state and loss; predictions close to float32 ones."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmdjax import inference, models, tasks, training
from configs import common


def _tiny(dtype):
  config = common.get_config("attmulroi", f"width=0.0625,dtype={dtype}")
  config.model.transformer.update(depth=1, dim=32, heads=2, head_dim=16, mlp_dim=32)
  config.model.regressor_hidden = 16
  return config


def _batch(b=4, size=32):
  rng = np.random.default_rng(0)
  return {"x": jnp.asarray(rng.integers(0, 65536, (b, 15, size, size), np.uint16)),
          "y": jnp.asarray(rng.uniform(0.6, 1.4, (b, 1)), jnp.float32),
          "mask": jnp.ones((b, 1), jnp.float32)}


def _float_dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_config_switch():
  assert common.get_config("attmulroi").model.dtype == "float32"
  assert common.get_config("attmulroi", "demo,dtype=bfloat16").model.dtype == "bfloat16"
  with pytest.raises(ValueError, match="dtype"):
    common.get_config("attmulroi", "dtype=float16")
  config = _tiny("float32")
  config.model.dtype = "int8"
  with pytest.raises(ValueError, match="dtype"):
    models.build(config.model, rngs=nnx.Rngs(0))


def test_bf16_compute_keeps_float32_state_and_loss():
  config = _tiny("bfloat16")
  graphdef, params, rest = inference.init_model_state(config)
  assert _float_dtypes(params) == {"float32"}
  scaler = inference.TargetScaler({v: {"mean": 1.0, "std": 0.15} for v in common.VERTEBRAE},
                                  config.target)
  loss_fn = tasks.bmd_loss_fn(graphdef, config, scaler)
  batch, rng = _batch(), jax.random.key(0)

  # The 13 VGG16 convolutions really run in bfloat16...
  text = str(jax.make_jaxpr(loss_fn)(params, rest, batch, rng)).splitlines()
  convs = [line for line in text if "= conv_general_dilated[" in line]
  assert len(convs) == 13 and all(":bf16[" in line for line in convs), convs

  # ...while the loss, gradients, optimiser state and updated params are float32.
  # (dtypes only: jax.eval_shape traces without computing; the jitted step
  # below computes.)
  (loss, (_, metrics)), grads = jax.eval_shape(jax.value_and_grad(loss_fn, has_aux=True),
                                               params, rest, batch, rng)
  assert loss.dtype == jnp.float32
  assert {str(m.dtype) for m in metrics.values()} == {"float32"}
  assert _float_dtypes(grads) == {"float32"}
  tx, _ = training.make_optimizer(config.optim, 10, 5)
  state = {"params": params, "rest": rest, "opt": tx.init(params),
           "step": jnp.zeros((), jnp.int32)}
  state, metrics = jax.jit(training.make_train_step(loss_fn, tx, 0))(state, batch)
  assert _float_dtypes(state["params"]) == {"float32"}
  assert _float_dtypes(state["opt"]) == {"float32"}
  assert bool(metrics["finite"])


def test_bf16_predictions_close_to_f32():
  """Same weights, both compute dtypes, on inputs from black to white so the
  untrained model's outputs spread (range ~0.10; random noise images gave
  only ~0.016, so a constant passed within the tolerance). Tolerance 0.01 in
  standardised BMD units (0.0015 g/cm2 at a BMD SD of 0.15): ~5x the observed
  bf16 error (~0.002; bfloat16 keeps 8 significant bits, sums and statistics
  are float32) and ~1/5 of what a constant output would be off by."""
  g32, params, rest = inference.init_model_state(_tiny("float32"))
  g16, _, _ = inference.init_model_state(_tiny("bfloat16"))
  rng = np.random.default_rng(0)
  level = np.linspace(0, 65535, 16)[:, None, None, None]
  x = jnp.asarray(np.clip(level + rng.integers(-3000, 3000, (16, 15, 32, 32)), 0, 65535)
                  .astype(np.uint16))
  y32 = np.asarray(inference.make_predict_fn(g32)(params, rest, x))
  y16 = inference.make_predict_fn(g16)(params, rest, x)
  assert y16.dtype == jnp.float32
  atol = 0.01
  # Power: any constant c is off by max|y32 - c| >= ptp(y32) / 2 (~0.05) somewhere,
  # so a constant bf16 output fails the comparison below.
  assert np.ptp(y32) / 2 > 3 * atol
  np.testing.assert_allclose(np.asarray(y16), y32, atol=atol, rtol=0)
  assert np.abs(np.asarray(y16) - y32).max() > 0  # bf16 really ran
