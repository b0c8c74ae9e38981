"""The five BMD models: parameter counts, call convention, transformer numerics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from bmdjax import models, pretrained
from bmdjax.models.transformer import TransformerEncoder
from bmdjax.config_lib import finalize
from configs import common
from tests.test_backbones import output_shape, randomize, run

NAMES = ("baseline", "mulpat", "attmulpat", "mulroi", "attmulroi")
# docs/design.md; components are checked in test_summary.py.
FULL_SIZE = {
    "baseline": 14_846_273,   # VGG16 convs 14,714,688 + regressor 131,585
    "mulpat": 15_894_849,     # convs + Linear(9 x 512, 256)-ReLU-Linear(256, 1)
    "attmulpat": 24_053_579,  # AttMulRoi less 6 positions and 6 local regressors
    "mulroi": 16_681_281,
    "attmulroi": 24_846_161,
}


def tiny_config(model_name, arg="demo", **overrides):
  """A demo-width config with a smaller transformer; overrides go to config.model."""
  c = finalize(common.get_config(model_name, arg)).model
  c.transformer = dict(depth=2, dim=32, heads=2, head_dim=8, mlp_dim=48)
  c.regressor_hidden = 16
  c.update(overrides)
  return c


def abstract(config):
  return nnx.eval_shape(lambda: models.build(config, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameter_counts(name):
  model = abstract(finalize(common.get_config(name)).model)
  assert models.count_params(model) == FULL_SIZE[name]


def test_projection_only_when_feature_size_differs():
  m = abstract(tiny_config("attmulroi", "demo,backbone=resnet18"))
  assert m.backbone.num_features == 64  # transformer dim 32
  assert models.count_params(m.projection) == 64 * 32 + 32
  assert abstract(tiny_config("attmulroi", width=1 / 16)).projection is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("target", ["L1", "all"])
@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name, target, dtype):
  config = tiny_config(name, f"demo,target={target}", dtype=dtype)
  k, t = config.num_inputs, config.num_outputs
  out = output_shape(abstract(config), (2, k, 40, 40))
  assert {key: (v.shape, v.dtype) for key, v in out.items()} == {
      "global": ((2, t), jnp.float32),
      **({"local": ((2, k + 1, t), jnp.float32)} if name.startswith("att") else {})}


def test_bfloat16_training_step():
  """A whole model run in bf16 gives float32 outputs. (bf16 compiles slowly on
  CPU: the transformer runs in test_transformer_matches_numpy, and the ResNet
  BatchNorm path is only traced.)"""
  model = randomize(abstract(tiny_config(
      "baseline", "demo,target=all,backbone=vgg13", dtype="bfloat16")))
  x = jax.random.uniform(jax.random.key(0), (3, 1, 32, 32))
  out = run(model, x, train=True)[0]
  assert out["global"].shape == (3, 4) and out["global"].dtype == jnp.float32
  assert np.isfinite(out["global"]).all()
  resnet = abstract(tiny_config("baseline", backbone="resnet18", dtype="bfloat16"))
  assert output_shape(resnet, (3, 1, 32, 32), train=True)["global"].dtype == (
      jnp.float32)


def test_wrong_number_of_crops_is_an_error():
  model = abstract(tiny_config("mulroi"))
  with pytest.raises(ValueError, match=r"expected input \[B, 15, H, W\]"):
    output_shape(model, (2, 14, 32, 32))


def test_unknown_names():
  with pytest.raises(ValueError, match="unknown model"):
    models.build(tiny_config("mulroi", name="mulroy"), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown backbone 'vgg11'"):
    models.build(tiny_config("mulroi", backbone="vgg11"), rngs=nnx.Rngs(0))


# --- numerics of the parts -------------------------------------------------

def tiny_encoder(dtype="float32"):
  return randomize(nnx.eval_shape(lambda: TransformerEncoder(
      5, dim=16, depth=2, heads=3, head_dim=4, mlp_dim=24, dtype=dtype,
      rngs=nnx.Rngs(0))))


def layer_norm(x, scale, bias):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * scale + bias


def encoder_ref(p, f, heads, head_dim):
  """float64 numpy pre-LN ViT encoder with a prepended bmd token."""
  b, n = f.shape[0], f.shape[1] + 1
  x = np.concatenate([np.broadcast_to(p["bmd_token"], (b, 1, f.shape[2])), f], 1)
  x = x + p["pos_embedding"]
  for blk in p["blocks"].values():
    h = layer_norm(x, blk["norm1"]["scale"], blk["norm1"]["bias"])
    q, k, v = np.split(h @ blk["attention"]["qkv"]["kernel"], 3, axis=-1)
    q, k, v = (t.reshape(b, n, heads, head_dim).transpose(0, 2, 1, 3)
               for t in (q, k, v))
    a = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, heads * head_dim)
    x = x + o @ blk["attention"]["out"]["kernel"] + blk["attention"]["out"]["bias"]
    h = layer_norm(x, blk["norm2"]["scale"], blk["norm2"]["bias"])
    h = h @ blk["mlp1"]["kernel"] + blk["mlp1"]["bias"]
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))  # exact GELU
    x = x + h @ blk["mlp2"]["kernel"] + blk["mlp2"]["bias"]
  return x


def as_numpy(module):
  return jax.tree.map(lambda v: np.asarray(v, np.float64),
                      nnx.state(module).to_pure_dict())


def test_transformer_matches_numpy():
  enc = tiny_encoder()
  f = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32)
  with jax.default_matmul_precision("highest"):
    out = jax.jit(lambda e, f: e(f))(enc, f)
  assert out.shape == (2, 6, 16)
  ref = encoder_ref(as_numpy(enc), f, 3, 4)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  out16 = jax.jit(lambda e, f: e(f))(tiny_encoder("bfloat16"), f)
  assert out16.dtype == jnp.bfloat16  # bf16 keeps ~3 significant digits
  err = np.linalg.norm(np.asarray(out16, np.float64) - ref)
  assert err < 0.02 * np.linalg.norm(ref)


def test_attentive_heads():
  """Global = regressor(mean of the K ROI tokens); local i = regressor i(token i)."""
  model = randomize(abstract(tiny_config("attmulpat", "demo,target=all,grid=2")))
  assert model.projection is not None  # 64 VGG features -> 32
  x = jax.random.uniform(jax.random.key(1), (2, 4, 32, 32))

  @jax.jit
  def parts(model, x):
    z = model.transformer(model.projection(model.crop_features(x, False)))
    return model(x), z

  out, z = parts(model, x)
  z = np.asarray(z, np.float64)
  p = as_numpy(model)

  def regressor(r, h, i=None):
    pick = (lambda a: a) if i is None else (lambda a: a[i])
    h = np.maximum(h @ pick(r["kernel1"]) + pick(r["bias1"]), 0)
    return h @ pick(r["kernel2"]) + pick(r["bias2"])

  np.testing.assert_allclose(
      out["global"], regressor(p["global_regressor"], z[:, 1:].mean(1)),
      rtol=1e-4, atol=1e-5)
  local = np.stack([regressor(p["local_regressors"], z[:, i], i)
                    for i in range(5)], 1)
  np.testing.assert_allclose(out["local"], local, rtol=1e-4, atol=1e-5)


def test_real_init_distributions():
  """build() itself (no trace): PyTorch-default distributions, distinct copies."""
  model = models.build(tiny_config("attmulroi", width=0.25), rngs=nnx.Rngs(0))
  assert models.count_params(model) == models.count_params(
      abstract(tiny_config("attmulroi", width=0.25)))
  conv = model.backbone.features[2].kernel[...]  # 3x3, 16 -> 32 channels
  assert abs(float(conv.std()) / math.sqrt(2 / (9 * 32)) - 1) < 0.05
  local = model.local_regressors.kernel1[...]  # [16, 32, 16]
  assert float(jnp.abs(local).max()) <= 1 / math.sqrt(32)
  assert not np.allclose(local[0], local[1])
  np.testing.assert_array_equal(model.backbone.features[0].bias[...], 0)
  again = models.build(tiny_config("attmulroi", width=0.25), rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(again.local_regressors.kernel1[...], local)


def test_build_loads_backbone_init(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(pretrained, "load_backbone",
                      lambda model, path: calls.append((type(model), path)))
  abstract(tiny_config("baseline", backbone_init=str(tmp_path / "w.npz")))
  assert calls == [(models.ConcatFusion, str(tmp_path / "w.npz"))]
