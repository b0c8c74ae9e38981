"""The 16-landmark detector: heatmaps with a soft-argmax, then a graph step.

  image [B, S, S] in [0, 1]
    -> input normalisation (fixed, no parameters; same at training and
       inference): histogram equalisation (indifferent to any increasing
       intensity remapping: window, gamma, vendor LUT) and local contrast
       normalisation (indifferent to local gain and offset: unsharp masking,
       dynamic range compression, uneven exposure), two channels
    -> U-Net (stride-2 stem, `levels` downsamplings, decoder with skips)
    -> 16 heatmap logits at stride 2 -> spatial softmax p
    -> soft-argmax: sub-pixel points = E_p[cell centre] (differentiable)
    -> confidence: mass of p within 2 sigma of that point
    -> graph refinement (DAG-like, paper ref. [47]): each landmark is a node
       holding the decoder features sampled at its point, its position and
       confidence; graph convolutions over the landmark topology (anatomical
       neighbours and mirror pairs) predict a per-landmark offset.

Heatmaps localise well where the image shows the bone; the graph step lets a
landmark whose heatmap is unsure or split (which rib?) be placed by its
neighbours, which a heatmap alone cannot do. Its last layer starts at zero,
so the refined points start as the soft-argmax points.

Call: model(x, train=bool) -> {"points", "heatmap_points": [B, 16, 2] (x, y)
in input pixels, "confidence": [B, 16], "logits": [B, 16, h, w]}, float32.
"""

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from bmdjax import augment
from bmdjax.models.backbones import batch_norm, conv
from bmdjax.models.layers import linear
from data_prep import rois

HEATMAP_STRIDE = 2
# Input normalisations (HeatmapGraphDetector input_norm) and their channels.
INPUT_NORMS = {"none": 1, "equalize_lcn": 2}
# Local contrast normalisation: Gaussian window sd as a share of the side (8 px
# of 128, ~3 cm of a chest film: wider than a rib or clavicle), and the floor
# of the local sd (flat regions such as the letterbox padding stay flat).
LCN_SIGMA = 1 / 16
LCN_MIN_SD = 0.02
# Graph of the refinement: the overlay topology, the mirror pairs, and the
# spine tied to the ends of the clavicles and of the rib cage.
GRAPH_EDGES = rois.LANDMARK_EDGES + (
    (6, 10), (7, 11), (8, 12), (9, 13), (1, 4),
    (14, 0), (14, 3), (15, 9), (15, 13))


def normalize_input(x: jax.Array, kind: str) -> jax.Array:
  """Images [B, S, S] in [0, 1] -> the network's input [B, S, S, C]: what
  differs between films of the same anatomy (exposure, vendor processing)
  removed as far as a fixed function can (module docstring)."""
  if kind == "none":
    return x[..., None]
  if kind != "equalize_lcn":
    raise ValueError(f"unknown input_norm {kind!r}; known: {sorted(INPUT_NORMS)}")
  sigma = LCN_SIGMA * x.shape[-1]
  radius = int(np.ceil(2 * sigma))
  d = x - augment.gaussian_blur(x, sigma, radius)
  sd = jnp.sqrt(augment.gaussian_blur(d * d, sigma, radius) + LCN_MIN_SD ** 2)
  lcn = jnp.clip(d / sd, -3.0, 3.0) / 3.0
  return jnp.stack([augment.equalize(x) * 2.0 - 1.0, lcn], axis=-1)


def adjacency(num_nodes: int = rois.NUM_LANDMARKS, edges=GRAPH_EDGES) -> np.ndarray:
  """Row-normalised neighbour matrix (no self loops): mean over neighbours."""
  a = np.zeros((num_nodes, num_nodes), np.float32)
  for i, j in edges:
    a[i, j] = a[j, i] = 1.0
  return a / np.maximum(a.sum(1, keepdims=True), 1.0)


def cell_centres(n: int, stride: int) -> jax.Array:
  """Input-pixel coordinate of each of n heatmap cells (pixel centres at 0..S-1)."""
  return jnp.arange(n, dtype=jnp.float32) * stride + (stride - 1) / 2


def soft_argmax(logits: jax.Array, stride: int) -> tuple[jax.Array, jax.Array]:
  """logits [..., h, w] -> (points [..., 2] (x, y) in input pixels, p [..., h, w])."""
  *lead, h, w = logits.shape
  p = jax.nn.softmax(logits.reshape(*lead, h * w).astype(jnp.float32), axis=-1)
  p = p.reshape(*lead, h, w)
  x = jnp.sum(p.sum(-2) * cell_centres(w, stride), axis=-1)
  y = jnp.sum(p.sum(-1) * cell_centres(h, stride), axis=-1)
  return jnp.stack([x, y], axis=-1), p


def peak_mass(p: jax.Array, points: jax.Array, stride: int, radius: float) -> jax.Array:
  """Softmax mass within `radius` input pixels of `points`: near 1 for a sharp
  single peak, low for a flat or split heatmap. p [..., h, w], points [..., 2]."""
  h, w = p.shape[-2:]
  dx = cell_centres(w, stride) - points[..., 0, None]
  dy = cell_centres(h, stride) - points[..., 1, None]
  near = (dy[..., :, None] ** 2 + dx[..., None, :] ** 2) <= radius ** 2
  return jnp.sum(p * near, axis=(-2, -1))


def bilinear_sample(features: jax.Array, points: jax.Array) -> jax.Array:
  """features [B, H, W, C] at points [B, N, 2] (x, y in cell units) -> [B, N, C]."""
  _, h, w, _ = features.shape
  x = jnp.clip(points[..., 0], 0, w - 1)
  y = jnp.clip(points[..., 1], 0, h - 1)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
  at = jax.vmap(lambda f, yy, xx: f[yy, xx])
  return ((1 - fy) * ((1 - fx) * at(features, y0, x0) + fx * at(features, y0, x1))
          + fy * ((1 - fx) * at(features, y1, x0) + fx * at(features, y1, x1)))


class ConvBlock(nnx.Module):
  """Two 3x3 conv + BatchNorm + ReLU."""

  def __init__(self, cin, cout, *, dtype, rngs):
    self.conv1 = conv(cin, cout, 3, bias=False, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(cout, dtype=dtype, rngs=rngs)
    self.conv2 = conv(cout, cout, 3, bias=False, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(cout, dtype=dtype, rngs=rngs)

  def __call__(self, x, train):
    x = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    return nnx.relu(self.bn2(self.conv2(x), use_running_average=not train))


class GraphRefiner(nnx.Module):
  """Graph convolutions over the landmarks -> per-landmark offsets (cells)."""

  def __init__(self, in_features, dim, layers, *, rngs):
    self.embed = nnx.Param(jnp.zeros((rois.NUM_LANDMARKS, dim)))  # which landmark
    self.inp = linear(in_features, dim, rngs=rngs)
    self.self_w = nnx.List([linear(dim, dim, rngs=rngs) for _ in range(layers)])
    self.nbr_w = nnx.List([linear(dim, dim, use_bias=False, rngs=rngs)
                           for _ in range(layers)])
    self.norms = nnx.List([nnx.LayerNorm(dim, rngs=rngs) for _ in range(layers)])
    self.out = nnx.Linear(dim, 2, kernel_init=nnx.initializers.zeros,
                          bias_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, nodes):
    a = jnp.asarray(adjacency())
    h = nnx.relu(self.inp(nodes)) + self.embed[...]
    for sw, nw, norm in zip(self.self_w, self.nbr_w, self.norms):
      h = h + nnx.relu(norm(sw(h) + nw(jnp.einsum("ij,bjd->bid", a, h))))
    return self.out(h)


class HeatmapGraphDetector(nnx.Module):
  """U-Net heatmaps + soft-argmax + graph refinement (module docstring)."""

  def __init__(self, *, width=16, levels=4, graph_dim=64, graph_layers=2,
               heatmap_sigma=1.5, input_norm="none", dtype="float32", rngs: nnx.Rngs):
    self.dtype = jnp.dtype(dtype)
    if input_norm not in INPUT_NORMS:
      raise ValueError(f"unknown input_norm {input_norm!r}; known: {sorted(INPUT_NORMS)}")
    self.input_norm = input_norm
    self.levels = levels
    self.sigma = float(heatmap_sigma)  # target heatmap sd, in cells (the loss uses it)
    if levels < 2:
      raise ValueError(f"levels must be at least 2, got {levels}")
    chans = [int(width) * 2 ** min(i, 3) for i in range(levels + 1)]
    kw = dict(dtype=self.dtype, rngs=rngs)
    self.stem = conv(INPUT_NORMS[input_norm], chans[0], 3, 2, bias=False, **kw)
    self.stem_bn = batch_norm(chans[0], **kw)
    self.down = nnx.List([ConvBlock(chans[max(i - 1, 0)], chans[i], **kw)
                          for i in range(levels + 1)])
    self.up = nnx.List([ConvBlock(chans[i + 1] + chans[i], chans[i], **kw)
                        for i in reversed(range(levels))])
    self.head = nnx.Conv(chans[0], rois.NUM_LANDMARKS, (1, 1), dtype=self.dtype,
                         rngs=rngs)
    self.refiner = (GraphRefiner(chans[0] + chans[1] + 3, graph_dim, graph_layers,
                                 rngs=rngs) if graph_layers else None)

  def __call__(self, x, *, train: bool = False):
    if x.ndim != 3:
      raise ValueError(f"expected images [B, S, S], got {x.shape}")
    s = x.shape[-1]
    if s % (HEATMAP_STRIDE * 2 ** self.levels):
      raise ValueError(f"image side {s} must be a multiple of "
                       f"{HEATMAP_STRIDE * 2 ** self.levels}")
    h = normalize_input(x.astype(jnp.float32), self.input_norm).astype(self.dtype)
    h = nnx.relu(self.stem_bn(self.stem(h), use_running_average=not train))
    skips = []
    for i, block in enumerate(self.down):
      if i:
        h = nnx.max_pool(h, (2, 2), (2, 2))
      h = block(h, train)
      skips.append(h)
    decoded = []
    for block, skip in zip(self.up, reversed(skips[:-1])):
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = block(jnp.concatenate([h, skip], axis=-1), train)
      decoded.append(h)
    logits = jnp.moveaxis(self.head(h).astype(jnp.float32), -1, 1)  # [B, 16, h, w]
    points, p = soft_argmax(logits, HEATMAP_STRIDE)
    confidence = peak_mass(p, points, HEATMAP_STRIDE, 2 * self.sigma * HEATMAP_STRIDE)
    out = {"heatmap_points": points, "confidence": confidence, "logits": logits,
           "points": points}
    if self.refiner is not None:
      # Decoder features at stride 2 and 4, sampled at the (fixed) heatmap points.
      start = jax.lax.stop_gradient(points)
      cells = (start - (HEATMAP_STRIDE - 1) / 2) / HEATMAP_STRIDE
      f2 = bilinear_sample(decoded[-1].astype(jnp.float32), cells)
      f4 = bilinear_sample(decoded[-2].astype(jnp.float32), (cells - 0.5) / 2)
      nodes = jnp.concatenate([f2, f4, start / s - 0.5,
                               jax.lax.stop_gradient(confidence)[..., None]], -1)
      out["points"] = start + HEATMAP_STRIDE * self.refiner(nodes)
    return out
