"""Convolutional feature extractors: torchvision VGG and ResNet, then global
average pooling.

Layers mirror torchvision one to one (VGG cfg B/D/E without BN; ResNet v1.5 with
the stride on the 3x3 conv), so ImageNet weights load by name through
`torch_modules()` (see bmdjax.pretrained). Inputs are grey crops [N, H, W] in
[0, 1]; they are replicated to RGB and ImageNet-normalised here, so pretrained
weights apply unchanged. Every backbone maps [N, H, W] -> [N, num_features].
"""

import functools
import math
from typing import Iterator

import jax.numpy as jnp
from flax import nnx

from bmdjax.models.layers import normal_init

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def grey_to_imagenet(x, dtype):
  """[N, H, W] grey in [0, 1] -> [N, H, W, 3] normalised like torchvision inputs."""
  x = x.astype(jnp.float32)[..., None]
  return ((x - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)).astype(dtype)


def global_average_pool(x):
  """[N, H, W, C] -> [N, C], summed in float32."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)


def scaled(channels: int, width: float) -> int:
  """Channel count under the width multiplier (at least 1)."""
  return max(1, int(round(channels * width)))


def conv(cin, cout, kernel, stride=1, *, bias, dtype, rngs) -> nnx.Conv:
  """torchvision conv: padding (k - 1) // 2 on each side (not XLA's 'SAME',
  which pads stride-2 convs asymmetrically); kaiming_normal_(fan_out) weights."""
  p = (kernel - 1) // 2
  return nnx.Conv(cin, cout, (kernel, kernel), (stride, stride),
                  padding=((p, p), (p, p)), use_bias=bias, dtype=dtype,
                  kernel_init=normal_init(math.sqrt(2 / (kernel**2 * cout))),
                  rngs=rngs)


def batch_norm(channels, *, dtype, rngs) -> nnx.BatchNorm:
  """torchvision BatchNorm2d defaults (its momentum 0.1 is flax's 0.9)."""
  return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       rngs=rngs)


VGG_LAYOUTS = {  # torchvision cfgs B, D, E; "M" is a 2x2 max pool.
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M",
              512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512,
              "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nnx.Module):
  """VGG conv stack (3x3 conv + ReLU, 2x2 max pools), no classifier."""

  def __init__(self, layout, *, width=1.0, dtype=jnp.float32, rngs: nnx.Rngs):
    self.layout = tuple(layout)
    self.dtype = jnp.dtype(dtype)
    convs, cin = [], 3
    for v in self.layout:
      if v != "M":
        convs.append(conv(cin, scaled(v, width), 3, bias=True, dtype=dtype,
                          rngs=rngs))
        cin = scaled(v, width)
    self.features = nnx.List(convs)
    self.num_features = cin

  def __call__(self, x, *, train: bool = False):
    del train  # no batch statistics
    x = grey_to_imagenet(x, self.dtype)
    convs = iter(self.features)
    for v in self.layout:
      x = nnx.max_pool(x, (2, 2), (2, 2)) if v == "M" else nnx.relu(next(convs)(x))
    return global_average_pool(x)

  def torch_modules(self) -> Iterator[tuple[str, nnx.Module]]:
    """(torchvision name, layer): `features.N`, N counting ReLUs and pools."""
    index, convs = 0, iter(self.features)
    for v in self.layout:
      if v != "M":
        yield f"features.{index}", next(convs)
        index += 1  # the ReLU
      index += 1


class ResidualBlock(nnx.Module):
  """torchvision BasicBlock (3x3, 3x3) or Bottleneck (1x1, 3x3 strided, 1x1 x4)."""

  def __init__(self, cin, planes, stride, bottleneck, *, dtype, rngs):
    if bottleneck:
      spec = ((1, 1, planes), (3, stride, planes), (1, 1, 4 * planes))
    else:
      spec = ((3, stride, planes), (3, 1, planes))
    convs, norms, c = [], [], cin
    for kernel, s, cout in spec:
      convs.append(conv(c, cout, kernel, s, bias=False, dtype=dtype, rngs=rngs))
      norms.append(batch_norm(cout, dtype=dtype, rngs=rngs))
      c = cout
    self.convs, self.norms = nnx.List(convs), nnx.List(norms)
    self.out_features = c
    self.downsample = nnx.List([
        conv(cin, c, 1, stride, bias=False, dtype=dtype, rngs=rngs),
        batch_norm(c, dtype=dtype, rngs=rngs),
    ]) if stride != 1 or cin != c else None

  def __call__(self, x, train: bool):
    shortcut = x
    if self.downsample is not None:
      shortcut = self.downsample[1](self.downsample[0](x),
                                    use_running_average=not train)
    for i, (cv, bn) in enumerate(zip(self.convs, self.norms)):
      x = bn(cv(x), use_running_average=not train)
      if i < len(self.convs) - 1:
        x = nnx.relu(x)
    return nnx.relu(x + shortcut)

  def torch_modules(self):
    for i, (cv, bn) in enumerate(zip(self.convs, self.norms)):
      yield f"conv{i + 1}", cv
      yield f"bn{i + 1}", bn
    if self.downsample is not None:
      yield "downsample.0", self.downsample[0]
      yield "downsample.1", self.downsample[1]


RESNET_LAYOUTS = {  # (bottleneck, blocks per stage)
    "resnet18": (False, (2, 2, 2, 2)),
    "resnet34": (False, (3, 4, 6, 3)),
    "resnet50": (True, (3, 4, 6, 3)),
    "resnet101": (True, (3, 4, 23, 3)),
}


class ResNet(nnx.Module):
  """ResNet stem + 4 stages, no fc. `train` picks batch vs running statistics."""

  def __init__(self, bottleneck, blocks, *, width=1.0, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.dtype = jnp.dtype(dtype)
    c = scaled(64, width)
    self.conv1 = conv(3, c, 7, 2, bias=False, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(c, dtype=dtype, rngs=rngs)
    stages = []
    for i, n in enumerate(blocks):
      stage = []
      for j in range(n):
        stage.append(ResidualBlock(c, scaled(64 * 2**i, width),
                                   2 if i > 0 and j == 0 else 1, bottleneck,
                                   dtype=dtype, rngs=rngs))
        c = stage[-1].out_features
      stages.append(nnx.List(stage))
    self.layers = nnx.List(stages)
    self.num_features = c

  def __call__(self, x, *, train: bool = False):
    x = grey_to_imagenet(x, self.dtype)
    x = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    x = nnx.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage in self.layers:
      for block in stage:
        x = block(x, train)
    return global_average_pool(x)

  def torch_modules(self) -> Iterator[tuple[str, nnx.Module]]:
    """(torchvision name, layer): conv1, bn1, layerS.B.{convK,bnK,downsample.I}."""
    yield "conv1", self.conv1
    yield "bn1", self.bn1
    for i, stage in enumerate(self.layers):
      for j, block in enumerate(stage):
        for name, module in block.torch_modules():
          yield f"layer{i + 1}.{j}.{name}", module


# name -> constructor(*, width, dtype, rngs)
BACKBONES = {
    **{name: functools.partial(VGG, layout)
       for name, layout in VGG_LAYOUTS.items()},
    **{name: functools.partial(ResNet, *layout)
       for name, layout in RESNET_LAYOUTS.items()},
}
