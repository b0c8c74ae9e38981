r"""Trains a BMD model or the landmark detector on a prepared dataset, on
1..N devices and hosts.

  python -m bmdjax.train --config=attmulroi:demo --workdir=runs/demo
  python -m bmdjax.train --config=attmulroi:target=L2 --workdir=W \
      --config.data.dir=PREPARED --config.optim.lr=1e-4
  python -m bmdjax.train --config=landmarks:demo --workdir=runs/lm \
      --config.data.dir=LANDMARKS_PREPARED

The task (`config.task`: BMD or landmarks) sets the inputs, loss, augmentation
and validation score; the loop is shared (bmdjax/training.py).

Rerunning the same command with the same workdir resumes from the latest
checkpoint, on any number of devices or processes, and ends with the same
parameters as an uninterrupted run (launch/README.md for multi-host runs).
SIGTERM or Ctrl-C saves a checkpoint after the current step and exits with
status 143 or 130; a NaN or infinite loss stops the run, keeping the last
good checkpoint.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from bmdjax import cli, preemption, training

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand so that importing this module (tests, other
  entry points) does not claim the --config flag."""
  config_flags.DEFINE_config_file(
      "config", None, "Model config: a name (attmulroi:demo,target=L2; "
      "the files of configs/) or a config file (path/to/config.py:args).",
      lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and reports go here.")
  flags.DEFINE_integer("stop_after_steps", None,
                       "Stop (with a checkpoint) after this global step, as a preemption "
                       "would; rerunning resumes. For tests and time-boxed jobs.")
  cli.define_distributed_flags()


def main(argv):
  del argv
  cli.initialize_distributed()
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  # A config error (also a missing config.data.dir) ends as a usage error (cli.run).
  out = training.train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.stop_after_steps)
  if out["preempted"]:
    # The checkpoint is complete, but the run is not: exit with the shell's status
    # for the signal (143 for SIGTERM), so that `set -e` scripts do not go on to
    # evaluate and schedulers/Kubernetes restart the job.
    sys.exit(128 + preemption.signal_number(out["preempted"]))
  if out["best"]:
    print(json.dumps({"best_validation": out["best"]}, indent=2))


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
