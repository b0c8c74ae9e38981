"""The training loop shared by the BMD models and the landmark detector, and
its pieces (optimiser, jitted step) that bmdjax.benchmark times.

What differs between tasks (inputs, loss and augmentation, validation score)
comes from the task `config.task` names (bmdjax/tasks.py); the loop here is
shared.

The same code runs on one device or many: the batch is sharded over the mesh's
`data` axis, the state is replicated, and XLA inserts the gradient all-reduce.
Restarting with the same workdir resumes from the latest checkpoint, the data
iterator included, so an interrupted run ends with the same parameters as an
uninterrupted one. A checkpoint restores on another number of devices or
processes too (`runs.restore_checkpoint`); `bmdjax.distributed` starts the
processes of a multi-host run (launch/README.md).

Faults: SIGTERM or Ctrl-C saves a checkpoint after the current step and
returns with `preempted` set (`bmdjax.preemption`; the command exits with
status 143 or 130); a kill -9 loses only the steps since the last checkpoint;
a NaN or infinite loss stops the run before it is saved, keeping the last good
checkpoint; a checkpoint that does not read back is moved aside and the
previous one is used.
"""

from __future__ import annotations

import os
import time

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax
from tqdm import tqdm

from bmdjax import (config_lib, distributed, inference, input_pipeline, preemption, runs, tasks,
                    warm_start)
from bmdjax.runs import restore_latest_good, save_checkpoint


# ----------------------------------------------------------------- pieces


def make_optimizer(optim, total_steps: int, steps_per_epoch: int):
  """SGD with momentum; weight decay added to the gradient as PyTorch does."""
  warmup = int(optim.warmup_epochs * steps_per_epoch)
  if optim.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, optim.lr, max(warmup, 1),
                                            max(total_steps, warmup + 1))
  elif optim.schedule == "constant":
    lr = (optax.linear_schedule(0.0, optim.lr, warmup) if warmup else optim.lr)
    if warmup:
      lr = optax.join_schedules([lr, optax.constant_schedule(optim.lr)], [warmup])
  else:
    raise ValueError(f"unknown schedule {optim.schedule!r} (cosine or constant)")
  parts = []
  if optim.grad_clip:
    parts.append(optax.clip_by_global_norm(optim.grad_clip))
  if optim.weight_decay:
    parts.append(optax.add_decayed_weights(optim.weight_decay))
  if optim.name == "sgd":
    parts.append(optax.sgd(lr, momentum=optim.momentum or None))
  elif optim.name == "adam":
    parts.append(optax.adam(lr))
  else:
    raise ValueError(f"unknown optimiser {optim.name!r} (sgd or adam)")
  return optax.chain(*parts), lr


def make_train_step(loss_fn, tx, seed: int):
  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state["step"])
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (rest, metrics)), grads = grad_fn(state["params"], state["rest"], batch, rng)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    # The new parameters too: a finite loss with an overflowing update must not
    # reach a checkpoint.
    metrics["finite"] = jnp.isfinite(metrics["loss"]) & jnp.isfinite(
        metrics["grad_norm"]) & jnp.isfinite(optax.global_norm(params))
    return {"params": params, "rest": rest, "opt": opt, "step": state["step"] + 1}, metrics
  return train_step


def jit_train_step(train_step, mesh):
  """`train_step` jitted on `mesh`: the batch split over the `data` axis, the
  state replicated and donated (updated in place, no second copy of the
  parameters and optimizer state). Used by the loop and by bmdjax.benchmark."""
  replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  return jax.jit(train_step, in_shardings=(replicated, data_sharding),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


# ----------------------------------------------------------------- train


def check_resumable(workdir: str, config) -> None:
  """A workdir holding a run may only be resumed with a config that builds the
  same network: restoring weights into another one would fail deep in orbax,
  or worse, succeed (same shapes, another target)."""
  if not os.path.isfile(runs.path(workdir, runs.RUN_JSON)):
    return
  diffs = config_lib.model_differences(runs.load_run_info(workdir)["config"], config)
  if diffs:
    raise config_lib.ConfigError(
        f"{workdir} holds a run trained with another model config ({'; '.join(diffs)}); "
        "use a new --workdir, or the run's config to resume it")


def train_and_evaluate(config, workdir: str, stop_after_steps: int | None = None,
                       devices=None) -> dict:
  """Runs (or resumes) training; returns the best validation summary.

  `devices`: the devices to train on (default: all devices of all processes).
  """
  workdir = os.path.abspath(workdir)
  config_lib.finalize(config)
  if not config.data.dir:
    raise config_lib.ConfigError(
        "set --config.data.dir to a folder prepared by data_prep.build "
        "(data_prep.build_landmarks for configs/landmarks.py)")
  check_resumable(workdir, config)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0

  # --- mesh: one data-parallel axis over every device of every host.
  mesh = distributed.data_mesh(devices)
  input_pipeline.check_batch(config.batch_size, mesh)
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P("data"))

  # --- input
  task = tasks.get(config)
  train_source = input_pipeline.open_split(config.data.dir, config.data.train_split)
  eval_source = input_pipeline.open_split(config.data.dir, config.data.eval_split)
  steps_per_epoch = input_pipeline.steps_per_epoch(config, len(train_source))
  total_steps = steps_per_epoch * config.num_epochs
  train_iter = input_pipeline.DeviceIterator(
      input_pipeline.train_dataset(config, train_source, task.example_fn, task.train_keys),
      data_sharding,
      depth=config.input.prefetch_batches)

  # --- model
  graphdef, params, rest = inference.init_model_state(config)
  if config.get("init_from"):  # fine-tuning; a resumed run's checkpoint wins below
    params, rest, from_step = warm_start.restore_from(config.init_from, params, rest)
    logging.info("initialised from %s (best checkpoint, step %d)", config.init_from, from_step)

  # --- optimiser
  tx, lr_schedule = make_optimizer(config.optim, total_steps, steps_per_epoch)
  state = {"params": params, "rest": rest, "opt": tx.init(params),
           "step": jnp.zeros((), jnp.int32)}
  state = jax.device_put(state, replicated)

  # --- checkpoint
  mngr = runs.checkpoint_manager(workdir, config.keep_checkpoints)
  best_mngr = runs.best_manager(workdir)
  if mngr.all_steps():
    state = restore_latest_good(mngr, state, train_iter)
    logging.info("resumed from step %d", int(state["step"]))
  if is_chief:
    runs.save_run_info(workdir, config, task.run_info)
  best = runs.load_best_summary(workdir)

  # --- step
  loss_fn = task.make_loss_fn(graphdef)
  train_step = jit_train_step(make_train_step(loss_fn, tx, config.seed), mesh)

  # --- evals
  validate = task.make_validation(graphdef, eval_source, data_sharding)

  def run_validation(step):
    return {"step": step, "epoch": step // steps_per_epoch,
            **validate(state["params"], state["rest"])}

  # --- loop
  writer = None
  if is_chief:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(runs.path(workdir, runs.TENSORBOARD))
  step = int(state["step"])
  end = total_steps if stop_after_steps is None else min(total_steps, stop_after_steps)
  bar = tqdm(total=total_steps, initial=step, disable=not is_chief, desc="train",
             unit="step", dynamic_ncols=True)
  logging.info("%d devices, %d processes; %d steps/epoch, %d epochs, global batch %d",
               mesh.size, jax.process_count(), steps_per_epoch, config.num_epochs,
               config.batch_size)
  history, t0, last_logged = [], time.time(), step
  # Each step's on-device "all finite" flag, since step `checked`; reduced and
  # read only on log, eval and save steps (no extra dispatch or sync per step).
  finite, checked = [], step

  def check_finite(step):
    nonlocal checked
    ok = bool(jnp.all(jnp.stack(finite))) if finite else True
    finite.clear()
    if not ok:
      mngr.wait_until_finished()
      raise FloatingPointError(
          f"the training loss became NaN or infinite between steps {checked} and {step}; "
          f"training stopped before saving it. The last good checkpoint (step "
          f"{mngr.latest_step()}) is kept in {mngr.directory} and a rerun resumes from it. "
          "Lower --config.optim.lr, set --config.optim.grad_clip, or check the data.")
    checked = step

  preempted = None
  with preemption.StopRequest() as stop_request:
    while step < end:
      batch = next(train_iter)
      state, metrics = train_step(state, batch)
      finite.append(metrics.pop("finite"))
      step += 1
      bar.update(1)
      log_step = step % config.log_every_steps == 0 or step == end
      if log_step:
        metrics = jax.device_get(metrics)
        check_finite(step)
        seconds_per_step = (time.time() - t0) / (step - last_logged)
        rate = config.batch_size / max(seconds_per_step, 1e-9)
        t0, last_logged = time.time(), step
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        history.append({"step": step, **{k: float(v) for k, v in metrics.items()},
                        "seconds_per_step": seconds_per_step})
        if writer:
          for k, v in metrics.items():
            writer.add_scalar(f"train/{k}", float(v), step)
          writer.add_scalar("train/lr", float(lr_schedule(step) if callable(lr_schedule)
                                              else lr_schedule), step)
          writer.add_scalar("train/samples_per_second", rate, step)
      if step % steps_per_epoch == 0 and (step // steps_per_epoch) % config.eval_every_epochs == 0:
        check_finite(step)
        t_val = time.time()
        val = run_validation(step)
        t0 += time.time() - t_val  # training throughput excludes validation
        if writer:
          for k, v in task.validation_scalars(val).items():
            writer.add_scalar(f"validation/{k}", v, step)
        tqdm.write(f"epoch {val['epoch']}: validation {task.describe(val)}")
        if best is None or val[task.score_key] < best[task.score_key]:
          best = val
          runs.save_best(best_mngr, workdir, state, best, write_json=is_chief)
      stop_now = stop_request.should_stop(sync_point=log_step)
      if step % config.checkpoint_every_steps == 0 or step == end or stop_now:
        check_finite(step)
        save_checkpoint(mngr, state, force=step == end or stop_now)
      if stop_now:
        preempted = stop_request.local or "a stop on another process"
        tqdm.write(f"{preempted}: stopped at step {step} with a checkpoint in "
                   f"{mngr.directory}; rerun the same command to resume.")
        break
    bar.close()
    mngr.wait_until_finished()  # inside: a SIGTERM now must not kill the save
  mngr.close()
  best_mngr.close()
  if writer:
    writer.close()
  return {"best": best, "history": history, "step": step, "state": state,
          "preempted": preempted}
