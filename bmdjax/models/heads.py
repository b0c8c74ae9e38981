"""BMD regression heads: Linear-ReLU-Linear (paper Sec. III-D)."""

import jax.numpy as jnp
from flax import nnx

from bmdjax.models.layers import torch_linear_init


def _dense(x, kernel, bias):
  """x [..., d] @ kernel [d, h], or token-wise x [..., n, d] @ kernel [n, d, h]."""
  return (x[..., None, :] @ kernel.astype(x.dtype)).squeeze(-2) + bias.astype(x.dtype)


class Regressor(nnx.Module):
  """Linear(d, hidden) - ReLU - Linear(hidden, num_outputs).

  With `copies=n` it holds n independent regressors (the paper's local
  regressors) stored stacked, applied token-wise: [B, n, d] -> [B, n, T].
  The hidden layer computes in `dtype`; the output layer in float32, so a
  bfloat16 model still regresses BMD at full precision (it costs nothing:
  `hidden` x `num_outputs` multiply-adds).
  """

  def __init__(self, in_features, hidden, num_outputs, *, copies=None,
               dtype=jnp.float32, rngs: nnx.Rngs):
    lead = () if copies is None else (copies,)
    init1, init2 = torch_linear_init(in_features), torch_linear_init(hidden)
    self.dtype = jnp.dtype(dtype)
    self.kernel1 = nnx.Param(init1(rngs.params(), lead + (in_features, hidden)))
    self.bias1 = nnx.Param(init1(rngs.params(), lead + (hidden,)))
    self.kernel2 = nnx.Param(init2(rngs.params(), lead + (hidden, num_outputs)))
    self.bias2 = nnx.Param(init2(rngs.params(), lead + (num_outputs,)))

  def __call__(self, x):
    h = nnx.relu(_dense(x.astype(self.dtype), self.kernel1[...], self.bias1[...]))
    return _dense(h.astype(jnp.float32), self.kernel2[...], self.bias2[...])
