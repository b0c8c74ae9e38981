"""The paper's five BMD models, built from two fusion schemes.

Every model runs one shared backbone over each of its K input crops:
  ConcatFusion     Baseline (K=1, whole image), MulPat (K=N*N patches), MulRoi
                   (K=15 ROIs): K features concatenated -> global regressor.
  AttentiveFusion  AttMulPat, AttMulRoi: K features -> transformer with a bmd
                   token -> mean of the K ROI tokens -> global regressor; K+1
                   local regressors, one per output token (bmd token first),
                   used for the training loss only.
Call: model(x, train=bool), x float32 [B, K, H, W] grey in [0, 1]; returns
{"global": [B, T]} (+ "local": [B, K+1, T]), float32 whatever the compute dtype.
"""

import jax.numpy as jnp
from flax import nnx

from bmdjax.models.backbones import BACKBONES
from bmdjax.models.heads import Regressor
from bmdjax.models.layers import linear
from bmdjax.models.transformer import TransformerEncoder


class _MultiCrop(nnx.Module):
  """Shared part: one backbone applied to each of the K crops."""

  def __init__(self, *, backbone, num_inputs, width, dtype, rngs):
    if backbone not in BACKBONES:
      raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}")
    self.num_inputs = num_inputs
    self.dtype = jnp.dtype(dtype)
    self.backbone = BACKBONES[backbone](width=width, dtype=self.dtype, rngs=rngs)

  def crop_features(self, x, train):
    """[B, K, H, W] -> [B, K, F]; the K crops share the backbone (and its BN batch)."""
    if x.ndim != 4 or x.shape[1] != self.num_inputs:
      raise ValueError(f"expected input [B, {self.num_inputs}, H, W], got {x.shape}")
    b, k, h, w = x.shape
    return self.backbone(x.reshape(b * k, h, w), train=train).reshape(b, k, -1)


class ConcatFusion(_MultiCrop):
  """Baseline / MulPat / MulRoi: concatenated crop features -> regressor."""

  def __init__(self, *, backbone="vgg16", num_inputs=15, num_outputs=1,
               width=1.0, regressor_hidden=256, dtype=jnp.float32,
               rngs: nnx.Rngs):
    super().__init__(backbone=backbone, num_inputs=num_inputs, width=width,
                     dtype=dtype, rngs=rngs)
    self.global_regressor = Regressor(
        num_inputs * self.backbone.num_features, regressor_hidden, num_outputs,
        dtype=self.dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    f = self.crop_features(x, train)
    y = self.global_regressor(f.reshape(f.shape[0], -1))
    return {"global": y.astype(jnp.float32)}


class AttentiveFusion(_MultiCrop):
  """AttMulPat / AttMulRoi: transformer fusion with global and local regressors."""

  def __init__(self, *, backbone="vgg16", num_inputs=15, num_outputs=1,
               width=1.0, regressor_hidden=256, transformer=None,
               dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(backbone=backbone, num_inputs=num_inputs, width=width,
                     dtype=dtype, rngs=rngs)
    transformer = dict(transformer or {})
    dim = transformer.setdefault("dim", 512)
    features = self.backbone.num_features
    self.projection = (linear(features, dim, dtype=self.dtype, rngs=rngs)
                       if features != dim else None)
    self.transformer = TransformerEncoder(num_inputs, **transformer,
                                          dtype=self.dtype, rngs=rngs)
    self.local_regressors = Regressor(dim, regressor_hidden, num_outputs,
                                      copies=num_inputs + 1, dtype=self.dtype,
                                      rngs=rngs)
    self.global_regressor = Regressor(dim, regressor_hidden, num_outputs,
                                      dtype=self.dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False):
    f = self.crop_features(x, train)
    if self.projection is not None:
      f = self.projection(f)
    z = self.transformer(f)
    f_global = jnp.mean(z[:, 1:].astype(jnp.float32), axis=1).astype(z.dtype)
    return {"global": self.global_regressor(f_global).astype(jnp.float32),
            "local": self.local_regressors(z).astype(jnp.float32)}
