"""Backbones: torchvision parameter counts, shapes, BatchNorm train/eval modes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmdjax import models
from bmdjax.models import backbones
from bmdjax.config_lib import finalize
from configs import common

# torchvision totals minus the classifier (VGG classifier.*, ResNet fc.*).
TORCHVISION_FEATURE_PARAMS = {
    "vgg13": 133_047_848 - 123_642_856,
    "vgg16": 138_357_544 - 123_642_856,
    "vgg19": 143_667_240 - 123_642_856,
    "resnet18": 11_689_512 - 513_000,
    "resnet34": 21_797_672 - 513_000,
    "resnet50": 25_557_032 - 2_049_000,
    "resnet101": 44_549_160 - 2_049_000,
}


def randomize(model, seed=0):
  """Fill every variable of a (possibly abstract) model with random values on
  the host: quicker than a real init, and makes norms/biases non-trivial."""
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = path[-2].key
    if name.startswith("kernel"):
      fan_in = math.prod(x.shape[:-1]) if len(x.shape) == 4 else x.shape[-2]
      value = rng.normal(0, math.sqrt(2 / fan_in), x.shape)
    elif name == "scale":
      value = 1 + 0.1 * rng.normal(size=x.shape)
    elif name == "var":
      value = rng.uniform(0.5, 1.5, x.shape)
    else:  # biases, running means, bmd token, position embeddings
      value = 0.1 * rng.normal(size=x.shape)
    return jnp.asarray(value.astype(np.float32))

  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _forward(graphdef, state, x, train):
  model = nnx.merge(graphdef, state)
  return model(x, train=train), nnx.state(model)


def run(model, x, train=False):
  """Jitted forward as the training loop does it; returns (output, new state)."""
  graphdef, state = nnx.split(model)
  return _forward(graphdef, state, x, train)


def output_shape(model, x_shape, dtype=jnp.float32, train=False):
  """Output shapes of a (possibly abstract) model, computing nothing."""
  graphdef, state = nnx.split(model)
  return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=train),
                        state, jax.ShapeDtypeStruct(x_shape, dtype))


def abstract_backbone(name, width=1.0):
  return nnx.eval_shape(
      lambda: backbones.BACKBONES[name](width=width, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("name", sorted(TORCHVISION_FEATURE_PARAMS))
def test_full_size_counts_with_baseline(name):
  model = nnx.eval_shape(lambda: models.build(
      finalize(common.get_config("baseline", f"backbone={name}")).model, rngs=nnx.Rngs(0)))
  features = 2048 if name in ("resnet50", "resnet101") else 512
  assert model.backbone.num_features == features
  assert models.count_params(model.backbone) == TORCHVISION_FEATURE_PARAMS[name]
  regressor = features * 256 + 256 + 256 + 1
  assert models.count_params(model) == TORCHVISION_FEATURE_PARAMS[name] + regressor


def test_width_multiplier_scales_channels():
  vgg = abstract_backbone("vgg16", 0.125)
  assert vgg.features[0].kernel.shape == (3, 3, 3, 8)
  assert vgg.num_features == 64
  resnet = abstract_backbone("resnet18", 0.125)
  assert resnet.conv1.kernel.shape == (7, 7, 3, 8) and resnet.num_features == 64


def test_vgg_layer_names_follow_torchvision():
  names = [n for n, _ in abstract_backbone("vgg16", 0.125).torch_modules()]
  assert names == [f"features.{i}" for i in
                   (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]


@pytest.mark.parametrize("name, size", [("vgg16", 32), ("vgg19", 100),
                                        ("resnet18", 48)])
def test_feature_shape_for_any_crop_size(name, size):
  model = abstract_backbone(name, 0.125)
  out = output_shape(model, (3, size, size))
  assert out.shape == (3, model.num_features)


def test_grey_input_is_replicated_and_imagenet_normalised():
  x = backbones.grey_to_imagenet(jnp.full((1, 2, 2), 0.5), jnp.float32)
  expected = (0.5 - np.array(backbones.IMAGENET_MEAN)) / backbones.IMAGENET_STD
  np.testing.assert_allclose(x[0, 1, 1], expected, rtol=1e-6)


def test_batchnorm_uses_batch_stats_in_training_only():
  # A ResNet with one BasicBlock per stage: every kind of layer, half the compile.
  model = randomize(nnx.eval_shape(lambda: backbones.ResNet(
      False, (1, 1, 1, 1), width=0.125, rngs=nnx.Rngs(0))))
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32))
  _, state = nnx.split(model)

  y_eval, state_eval = run(model, x, train=False)
  jax.tree.map(np.testing.assert_array_equal, state_eval, state)
  # Running statistics make eval outputs independent of the rest of the batch.
  np.testing.assert_allclose(run(model, x.at[1:].set(0.3))[0][0], y_eval[0],
                             rtol=1e-5, atol=1e-6)

  y_train, state_train = run(model, x, train=True)
  assert not np.allclose(y_train, y_eval)
  # torchvision momentum 0.1: running = 0.9 running + 0.1 batch (first BN).
  h = model.conv1(backbones.grey_to_imagenet(x, jnp.float32))
  expected = 0.9 * model.bn1.mean[...] + 0.1 * h.mean(axis=(0, 1, 2))
  np.testing.assert_allclose(state_train["bn1"]["mean"][...], expected,
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(state_train["layers"][3][0]["norms"][1]["var"][...],
                         state["layers"][3][0]["norms"][1]["var"][...])


def test_vgg_has_no_state_besides_params():
  model = abstract_backbone("vgg16", 0.125)
  assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))
