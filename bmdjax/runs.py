"""A training run on disk: the workdir layout, run.json, and its checkpoints.

  WORKDIR/run.json          the config and what inference needs besides weights
  WORKDIR/checkpoints/N/    orbax: model, optimizer + step, data-iterator state
  WORKDIR/best/N/           the model at the best validation score
  WORKDIR/best.json         that validation summary
  WORKDIR/tb/               TensorBoard events
  WORKDIR/report/           bmdjax.evaluate's report

Every module that reads or writes a run goes through these names and functions.
"""

from __future__ import annotations

import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

RUN_JSON = "run.json"
CHECKPOINTS = "checkpoints"
BEST = "best"
BEST_JSON = "best.json"
TENSORBOARD = "tb"
REPORT = "report"
LANDMARK_REPORT = "landmark_report"


def path(workdir: str, name: str) -> str:
  """WORKDIR/name, absolute (orbax needs absolute paths)."""
  return os.path.join(os.path.abspath(os.fspath(workdir)), name)


def checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """The resumable checkpoints (model, optimizer, data iterator)."""
  return ocp.CheckpointManager(path(workdir, CHECKPOINTS), options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True))


def best_manager(workdir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(path(workdir, BEST), options=ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True))


def save_best(mngr, workdir: str, state, summary: dict, *, write_json: bool = True) -> None:
  """The model of `state` as the best checkpoint, with its validation summary."""
  mngr.save(int(state["step"]), args=ocp.args.Composite(model=ocp.args.PyTreeSave(
      {"params": state["params"], "rest": state["rest"]})), force=True)
  mngr.wait_until_finished()
  if write_json:
    with open(path(workdir, BEST_JSON), "w") as f:
      json.dump(summary, f, indent=2)


def load_best_summary(workdir: str) -> dict | None:
  p = path(workdir, BEST_JSON)
  if not os.path.exists(p):
    return None
  with open(p) as f:
    return json.load(f)


@jax.jit
def all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def save_checkpoint(mngr, state, force=False):
  """Model, optimizer and step. The data iterator's position is not saved: it
  is the step (input_pipeline.train_dataset makes it so in every topology)."""
  mngr.save(int(state["step"]), args=ocp.args.Composite(
      model=ocp.args.PyTreeSave({"params": state["params"], "rest": state["rest"]}),
      opt=ocp.args.PyTreeSave({"opt": state["opt"], "step": state["step"]})), force=force)


def restore_checkpoint(mngr, state, data_iter, step: int | None = None):
  """Restores checkpoint `step` (default: the latest) into the shardings of
  `state` (the current mesh), whatever the number of devices or processes it
  was saved from: the state is replicated plain arrays. `data_iter` is moved to
  the position the step implies, the same in every topology: the run goes on
  exactly where it stopped as long as batch_size and input.shuffle_seed are
  unchanged."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  step = mngr.latest_step() if step is None else step
  def target(tree):  # restore_args: the shardings asked for, not the ones saved
    return ocp.args.PyTreeRestore(
        tree, restore_args=ocp.checkpoint_utils.construct_restore_args(tree))
  restored = mngr.restore(step, args=ocp.args.Composite(
      model=target({"params": abstract["params"], "rest": abstract["rest"]}),
      opt=target({"opt": abstract["opt"], "step": abstract["step"]})))
  state = {**restored["model"], **restored["opt"]}
  if int(state["step"]) != step:
    raise ValueError(f"holds step {int(state['step'])}, not {step}")
  if not bool(all_finite(state["params"])):
    raise ValueError("holds non-finite parameters")
  data_iter.seek(int(state["step"]))
  return state


def restore_latest_good(mngr, state, data_iter):
  """Restores the newest checkpoint that reads back whole and finite.

  A checkpoint broken by a full disk, a bad node or a hand edit is moved aside
  (to `corrupt_<step>_<n>`, which orbax ignores) with a warning, and the one
  before it is tried: losing a few hundred steps beats losing the run or
  training on garbage. Raises if none is usable, rather than silently
  starting over.
  """
  tried = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      return restore_checkpoint(mngr, state, data_iter, step)
    except Exception as e:  # orbax/tensorstore raise many types for bad bytes
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
      tried.append(f"{step} ({reason})")
      aside = _move_aside(mngr, step)
      logging.warning("checkpoint %d in %s cannot be restored (%s); moved it to %s and "
                      "falling back to the previous checkpoint", step, mngr.directory,
                      reason, aside)
  raise RuntimeError(
      f"no checkpoint in {mngr.directory} could be restored: {'; '.join(tried)}. The broken "
      "ones were moved aside as corrupt_*; remove the folder to start the run over.")


def _move_aside(mngr, step: int) -> str:
  directory = str(mngr.directory)
  aside = os.path.join(directory, f"corrupt_{step}")
  n = 0
  while os.path.exists(f"{aside}_{n}"):
    n += 1
  aside = f"{aside}_{n}"
  if jax.process_index() == 0:
    os.rename(os.path.join(directory, str(step)), aside)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"corrupt checkpoint {step} moved aside")
  mngr.reload()
  return aside


def save_run_info(workdir: str, config, info: dict) -> None:
  """What screening needs besides the weights: the config and the task's
  `run_info` (BMD: target_stats, the target scaling; landmarks: image_size)."""
  config = config.to_dict()
  if config.get("data", {}).get("dir"):  # evaluate and predict run from any folder
    config["data"]["dir"] = os.path.abspath(config["data"]["dir"])
  with open(path(workdir, RUN_JSON), "w") as f:
    json.dump({"config": config, **info}, f, indent=2)


def load_run_info(workdir: str) -> dict:
  run_json = path(workdir, RUN_JSON)
  if not os.path.isfile(run_json):
    raise FileNotFoundError(f"{run_json} not found: is {workdir} a bmdjax.train workdir?")
  with open(run_json) as f:
    return json.load(f)


def trained_landmarks(run: dict) -> str | None:
  """Where the training data's landmarks came from ("given" or "detected"):
  run.json's record, else (runs from before it was recorded) the prep.json of
  the training data if it is still there, else None."""
  if run.get("landmarks"):
    return run["landmarks"]
  from bmdjax import input_pipeline  # pylint: disable=import-outside-toplevel
  prep = os.path.join(((run.get("config") or {}).get("data") or {}).get("dir") or "",
                      "prep.json")
  if not os.path.isfile(prep):
    return None
  with open(prep, encoding="utf-8") as f:
    return input_pipeline.landmark_source(json.load(f))


def restore_params(workdir: str, params, rest, which: str = "best", sharding=None):
  """Restores (params, rest) from `workdir/best` or the latest checkpoint.

  With `sharding` (e.g. replicated on the current mesh) the arrays are placed
  so; the checkpoint may have been written on any number of devices/hosts."""
  folder = path(workdir, BEST if which == "best" else CHECKPOINTS)
  with ocp.CheckpointManager(folder) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {folder}; train first (bmdjax.train)")
    target = {"params": params, "rest": rest}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    if sharding is not None:
      abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                             sharding=sharding), abstract)
    restored = mngr.restore(step, args=ocp.args.Composite(model=ocp.args.PyTreeRestore(
        abstract, partial_restore=True,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))))
  return restored["model"]["params"], restored["model"]["rest"], step
