"""Initialisers (PyTorch's defaults) and the dense layer built on them.

The paper's models were PyTorch with default initialisation; we draw from the
same distributions. Outside a trace (plain eager model building) the values are
drawn with numpy, seeded by the jax key: XLA:CPU compiles every differently
shaped jax.random call separately (0.5-2 s each), which made building even a
tiny model take tens of seconds. Inside jit / eval_shape, jax.random is used.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _host_rng(key):
  """numpy Generator seeded by a concrete jax key; None while tracing."""
  if isinstance(key, jax.core.Tracer):
    return None
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())


def uniform_init(bound: float):
  """U(-bound, bound)."""
  def init(key, shape, dtype=jnp.float32):
    rng = _host_rng(key)
    if rng is None:
      return jax.random.uniform(key, shape, dtype, -bound, bound)
    return jnp.asarray(rng.uniform(-bound, bound, shape).astype(dtype))
  return init


def normal_init(std: float):
  """N(0, std^2), untruncated."""
  def init(key, shape, dtype=jnp.float32):
    rng = _host_rng(key)
    if rng is None:
      return std * jax.random.normal(key, shape, dtype)
    return jnp.asarray(rng.normal(0.0, std, shape).astype(dtype))
  return init


def torch_linear_init(fan_in: int):
  """torch.nn.Linear's weight and bias distribution: U(+-1/sqrt(fan_in))."""
  return uniform_init(1.0 / math.sqrt(fan_in))


def linear(in_features: int, out_features: int, *, use_bias: bool = True,
           dtype=None, rngs: nnx.Rngs) -> nnx.Linear:
  """nnx.Linear initialised like torch.nn.Linear."""
  init = torch_linear_init(in_features)
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype,
                    kernel_init=init, bias_init=init, rngs=rngs)
