"""Pre-LN transformer encoder with a learnable bmd token (paper Eq. 1-8).

ViT-style, as in docs/design.md: LayerNorm eps 1e-5 before attention and MLP,
residuals after, qkv without bias, exact (erf) GELU, no final norm. Attention is
written out (einsum, softmax in float32) so it is easy to check against numpy.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from bmdjax.models.layers import linear, normal_init


class Attention(nnx.Module):
  """Multi-head self-attention; qkv packed as (3, heads, head_dim) like vit-pytorch."""

  def __init__(self, dim, heads, head_dim, *, dtype, rngs):
    self.heads, self.head_dim = heads, head_dim
    self.qkv = linear(dim, 3 * heads * head_dim, use_bias=False, dtype=dtype,
                      rngs=rngs)
    self.out = linear(heads * head_dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    b, n, _ = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits * self.head_dim**-0.5, axis=-1)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(x.dtype), v)
    return self.out(y.reshape(b, n, self.heads * self.head_dim))


class EncoderBlock(nnx.Module):
  """x + MSA(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, dim, heads, head_dim, mlp_dim, *, dtype, rngs):
    self.norm1 = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
    self.attention = Attention(dim, heads, head_dim, dtype=dtype, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
    self.mlp1 = linear(dim, mlp_dim, dtype=dtype, rngs=rngs)
    self.mlp2 = linear(mlp_dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x = x + self.attention(self.norm1(x))
    return x + self.mlp2(nnx.gelu(self.mlp1(self.norm2(x)), approximate=False))


class TransformerEncoder(nnx.Module):
  """[B, K, dim] ROI features -> [B, K + 1, dim] tokens, the bmd token first."""

  def __init__(self, num_inputs, *, dim=512, depth=6, heads=6, head_dim=64,
               mlp_dim=512, dtype=jnp.float32, rngs: nnx.Rngs):
    self.dtype = jnp.dtype(dtype)
    init = normal_init(0.02)
    self.bmd_token = nnx.Param(init(rngs.params(), (1, 1, dim)))
    self.pos_embedding = nnx.Param(init(rngs.params(), (1, num_inputs + 1, dim)))
    self.blocks = nnx.List([
        EncoderBlock(dim, heads, head_dim, mlp_dim, dtype=dtype, rngs=rngs)
        for _ in range(depth)])

  def __call__(self, tokens):
    b, _, dim = tokens.shape
    token = jnp.broadcast_to(self.bmd_token[...], (b, 1, dim))
    x = jnp.concatenate([token, tokens.astype(jnp.float32)], axis=1)
    x = (x + self.pos_embedding[...]).astype(self.dtype)
    for block in self.blocks:
      x = block(x)
    return x
