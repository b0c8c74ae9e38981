"""Model registry: config.model.name -> module class, and `build`."""

import jax
import numpy as np
from flax import nnx

from bmdjax.config_lib import COMPUTE_DTYPES
from bmdjax.models.backbones import BACKBONES
from bmdjax.models.bmd import AttentiveFusion, ConcatFusion
from bmdjax.models.landmarks import HeatmapGraphDetector

MODELS = {
    "baseline": ConcatFusion,   # num_inputs 1: the whole image
    "mulpat": ConcatFusion,     # num_inputs grid**2
    "attmulpat": AttentiveFusion,
    "mulroi": ConcatFusion,     # num_inputs 15
    "attmulroi": AttentiveFusion,
    "landmarks": HeatmapGraphDetector,  # configs/landmarks.py
}


def build(model_config, *, rngs: nnx.Rngs) -> nnx.Module:
  """The model `model_config` (config.model) describes, with pretrained
  backbone weights loaded when `model_config.backbone_init` names a file."""
  c = model_config
  if c.name not in MODELS:
    raise ValueError(f"unknown model {c.name!r}; known: {sorted(MODELS)}")
  if str(c.dtype) not in COMPUTE_DTYPES:
    raise ValueError(f"model.dtype must be one of {COMPUTE_DTYPES}, got {c.dtype!r} "
                     "(the compute dtype; parameters are always float32)")
  cls = MODELS[c.name]
  if cls is HeatmapGraphDetector:
    return cls(width=c.width, levels=c.levels, graph_dim=c.graph_dim,
               graph_layers=c.graph_layers, heatmap_sigma=c.heatmap_sigma,
               input_norm=c.get("input_norm", "none"), dtype=c.dtype, rngs=rngs)
  if c.num_inputs is None or c.num_outputs is None:
    raise ValueError("model.num_inputs/num_outputs are unset: pass the config through "
                     "bmdjax.config_lib.finalize first (every entry point does)")
  kwargs = dict(backbone=c.backbone, num_inputs=c.num_inputs,
                num_outputs=c.num_outputs, width=c.width,
                regressor_hidden=c.regressor_hidden, dtype=c.dtype)
  if cls is AttentiveFusion:
    kwargs["transformer"] = dict(c.transformer)
  model = cls(**kwargs, rngs=rngs)
  if c.get("backbone_init"):
    from bmdjax import pretrained  # pylint: disable=import-outside-toplevel
    pretrained.load_backbone(model, c.backbone_init)
  return model


def count_params(tree) -> int:
  """Number of parameters: nnx.Param of a Module (abstract or not), or every
  array leaf of a pytree / nnx.State."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


__all__ = ["BACKBONES", "MODELS", "AttentiveFusion", "ConcatFusion",
           "HeatmapGraphDetector", "build", "count_params"]
