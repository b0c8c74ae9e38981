"""Training survives what clusters do to it: SIGTERM, kill -9, NaNs and broken
checkpoints. Each interrupted run must end with exactly the parameters of the
uninterrupted `tiny_run`."""

import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bmdjax import inference, training
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _start(data_dir, workdir):
  """The tiny run of conftest through the real command line."""
  return subprocess.Popen(
      [sys.executable, "-m", "bmdjax.train", f"--config=tests/tiny_config.py:{data_dir}",
       f"--workdir={workdir}"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(proc, workdir, after: int, timeout=240.0) -> int:
  """Polls until a committed checkpoint newer than `after` exists."""
  ckpt = os.path.join(workdir, "checkpoints")
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = [int(n) for n in os.listdir(ckpt) if n.isdigit()] if os.path.isdir(ckpt) else []
    done = [s for s in steps if s > after and os.path.exists(
        os.path.join(ckpt, str(s), "commit_success.txt"))]
    if done:
      return max(done)
    if proc.poll() is not None:
      pytest.fail(f"training ended (rc {proc.returncode}) before a checkpoint after step "
                  f"{after}:\n{proc.stdout.read()[-3000:]}")
    time.sleep(0.02)
  proc.kill()
  pytest.fail(f"no checkpoint after step {after} within {timeout} s")


def _wait_for_save_in_progress(proc, workdir, after: int, timeout=240.0) -> int:
  """Polls (every ms) until a checkpoint of a step > `after` is being written;
  returns that step. Saves of the tiny model last tens of milliseconds."""
  ckpt = os.path.join(workdir, "checkpoints")
  deadline = time.time() + timeout
  while time.time() < deadline:
    names = os.listdir(ckpt) if os.path.isdir(ckpt) else []
    for name in names:
      step = name.split(".")[0]
      if ".orbax-checkpoint-tmp" in name and step.isdigit() and int(step) > after:
        return int(step)
    if proc.poll() is not None:
      pytest.fail(f"training ended (rc {proc.returncode}) before a save after step "
                  f"{after} was seen in progress:\n{proc.stdout.read()[-3000:]}")
    time.sleep(0.001)
  proc.kill()
  pytest.fail(f"no save in progress after step {after} within {timeout} s")


def _assert_same_as_uninterrupted(config, workdir, full):
  resumed = training.train_and_evaluate(config, str(workdir))
  assert resumed["step"] == full["step"]
  np.testing.assert_array_equal(_flat(resumed["state"]["params"]),
                                _flat(full["state"]["params"]))
  np.testing.assert_array_equal(_flat(resumed["state"]["opt"]), _flat(full["state"]["opt"]))


def test_sigterm_then_kill9_then_restart_equals_uninterrupted_run(tiny_run, tmp_path):
  config, _, full = tiny_run
  work = tmp_path / "run"
  # 1. A scheduler preempts with SIGTERM: checkpoint at the current step, then a
  # clean exit with SIGTERM's shell status (not finished, nothing lost).
  proc = _start(config.data.dir, work)
  first = _wait_for_checkpoint(proc, work, after=0)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
  assert "SIGTERM: stopped at step" in out, out[-3000:]
  stopped = int(out.split("SIGTERM: stopped at step ")[1].split()[0])
  assert first <= stopped < full["step"]
  mngr = ocp.CheckpointManager(os.path.join(work, "checkpoints"))
  assert mngr.latest_step() == stopped  # the stop itself was checkpointed
  mngr.close()

  # 2. The requeued job is killed with no warning while it writes its next
  # checkpoint (orbax's temporary folder exists, not yet renamed/committed).
  proc = _start(config.data.dir, work)
  partial = _wait_for_save_in_progress(proc, work, after=stopped)
  proc.kill()
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  mngr = ocp.CheckpointManager(os.path.join(work, "checkpoints"))
  assert mngr.latest_step() < partial  # the half-written step is not a checkpoint
  mngr.close()

  # 3. Restarted to the end: the same parameters and optimizer state, bit for bit.
  _assert_same_as_uninterrupted(config, work, full)


def _corrupt(step_dir):
  """Overwrites the model's array bytes, as a bad disk or a partial copy would."""
  for root, _, files in os.walk(os.path.join(step_dir, "model", "d")):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tiny_run, tmp_path, caplog):
  config, _, full = tiny_run
  work = tmp_path / "run"
  part = training.train_and_evaluate(config, str(work), stop_after_steps=7)
  ckpt = work / "checkpoints"
  assert sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) == [3, 6, 7]
  _corrupt(ckpt / "7")
  with caplog.at_level(logging.WARNING):
    _assert_same_as_uninterrupted(config, work, full)
  assert "checkpoint 7" in caplog.text and "cannot be restored" in caplog.text
  assert "falling back to the previous checkpoint" in caplog.text
  assert (ckpt / "corrupt_7_0").is_dir()  # kept for inspection, ignored by orbax
  del part


def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(tiny_run, tmp_path):
  config, _, _ = tiny_run
  work = tmp_path / "run"
  training.train_and_evaluate(config, str(work), stop_after_steps=3)
  _corrupt(work / "checkpoints" / "3")
  with pytest.raises(RuntimeError, match=r"no checkpoint in .* could be restored.*remove "
                     "the folder to start the run over"):
    training.train_and_evaluate(config, str(work))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(prepared_dir, tmp_path):
  config = helpers.tiny_config(prepared_dir, num_epochs=2)
  # Plain SGD at lr 1000 with a warm-up: a few good steps, then divergence.
  config.optim.update(name="sgd", lr=1e3, momentum=0.9, warmup_epochs=1.0, grad_clip=0.0)
  config.checkpoint_every_steps = 1
  work = tmp_path / "run"
  with pytest.raises(FloatingPointError, match=r"NaN or infinite between steps \d+ and "
                     r"(\d+).*last good checkpoint \(step \d+\) is kept") as err:
    training.train_and_evaluate(config, str(work))
  bad_step = int(str(err.value).split(" and ")[1].split(";")[0])
  good = ocp.CheckpointManager(os.path.join(work, "checkpoints"))
  steps = good.all_steps()
  good.close()
  assert steps and max(steps) < bad_step  # nothing at or after the bad step was saved
  assert str(max(steps)) in str(err.value)
  # Every saved checkpoint holds finite parameters.
  _, params, rest = inference.init_model_state(config)
  for step in steps:
    mngr = ocp.CheckpointManager(os.path.join(work, "checkpoints"))
    restored = mngr.restore(step, args=ocp.args.Composite(model=ocp.args.PyTreeRestore(
        {"params": params, "rest": rest})))
    mngr.close()
    assert np.all(np.isfinite(_flat(restored["model"]["params"]))), step
