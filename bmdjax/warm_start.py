"""Starting a model from another run's best parameters (`config.init_from`).

A site fine-tunes the landmark detector pre-trained on the synthetic cohort
(or any model) on a few hundred of its own annotations: the new run begins
from the parameters of `init_from`'s best checkpoint instead of a random
initialisation, with a fresh optimiser and step 0. The two models must have
the same parameter tree; every parameter that differs is named, so a config
mismatch (another width, target or backbone) fails before training starts.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from bmdjax import config_lib, inference, runs


def _flat(tree) -> dict[str, jax.ShapeDtypeStruct]:
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_differences(params, other) -> list[str]:
  """Parameters of `params` missing from, absent in, or shaped unlike `other`."""
  mine, theirs = _flat(params), _flat(other)
  out = [f"{k}: {tuple(mine[k].shape)} here, {tuple(theirs[k].shape)} in init_from"
         for k in mine if k in theirs and tuple(mine[k].shape) != tuple(theirs[k].shape)]
  out += [f"{k}: only in this model" for k in mine if k not in theirs]
  out += [f"{k}: only in init_from" for k in theirs if k not in mine]
  return out


def restore_from(workdir: str, params, rest):
  """(params, rest, step): `params` replaced by the best parameters of run
  `workdir`, and the floating-point state of `rest` (BatchNorm statistics) by
  its own; random-number state stays this run's.

  Raises ValueError naming every parameter whose shape differs."""
  workdir = os.path.abspath(os.fspath(workdir))
  run = runs.load_run_info(workdir)
  other_config = config_lib.for_run(run["config"], where=workdir)
  # Shapes of the other run's model, without allocating it.
  other_params, other_rest = jax.eval_shape(
      lambda: inference.init_model_state(other_config)[1:])
  diff = shape_differences(params, other_params)
  if diff:
    shown = "; ".join(diff[:8]) + (f"; ... ({len(diff)} in all)" if len(diff) > 8 else "")
    raise ValueError(
        f"init_from={workdir}: its model ({other_config.model.name}) does not match this "
        f"one ({len(diff)} parameter(s) differ: {shown}). Use the same model settings "
        "(width, levels, backbone, target) as the run you start from.")
  restored, restored_rest, step = runs.restore_params(workdir, other_params, other_rest, "best")
  params = jax.tree.map(lambda new, old: np.asarray(old, dtype=new.dtype), params, restored)
  theirs = _flat(restored_rest)
  def take(path, new):
    old = theirs.get(jax.tree_util.keystr(path))
    if (old is not None and jnp.issubdtype(new.dtype, jnp.floating)
        and tuple(old.shape) == tuple(new.shape)):
      return np.asarray(old, dtype=new.dtype)
    return new
  rest = jax.tree_util.tree_map_with_path(take, rest)
  return params, rest, step
