r"""Evaluates a trained run the way the paper does, and writes a report.

  python -m bmdjax.evaluate --workdir=runs/demo --split=test

The model, target and preprocessing are those the run was trained with
(WORKDIR/run.json). A --config may only change where and how the data is read
(data.dir, batch_size, input.*); one that differs in what the network
computes (target, inputs, model) is refused, naming the fields.

Writes WORKDIR/report/: predictions.csv (schema in docs/design.md), metrics.json,
tables.md and the figures. Beside the model it reports an age+sex-only linear
regression fitted on the training split, so a reader sees what the image adds.

It also predicts the validation split and stores it in the run
(WORKDIR/calibration/predictions_validation.csv): the prediction intervals,
the recalibration line and the screening threshold are fitted on it
(bmdjax/clinical.py) and reported on --split, with the model card.
bmdjax.predict refits them from that file.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
import jax
from ml_collections import config_flags

from bmdjax import cli, evaluation, runs

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand so that importing this module (tests, other
  entry points) does not claim the --config flag."""
  config_flags.DEFINE_config_file(
      "config", None, "Optional: by default the run's own config (run.json) is used; a "
      "given one may change data.dir, batch_size and input.* only.", lock_config=True)
  flags.DEFINE_string("workdir", None, "The training workdir.")
  flags.DEFINE_string("split", "test", "Split to evaluate: train, validation or test.")
  cli.define_checkpoint_flag()
  flags.DEFINE_string("out", None, "Report folder (default WORKDIR/report).")
  flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples for the 95% intervals.")
  cli.define_reference_flag()
  cli.define_screening_flags()
  cli.define_distributed_flags()


def main(argv):
  del argv
  cli.initialize_distributed()
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  # A refused config or a missing run ends as a usage error (cli.run).
  evaluation.evaluate(FLAGS.config, FLAGS.workdir, FLAGS.split, FLAGS.checkpoint, FLAGS.out,
                      FLAGS.bootstrap, FLAGS.reference, level=FLAGS.level,
                      target_sensitivity=FLAGS.target_sensitivity,
                      recalibrate=FLAGS.recalibrate)
  out_dir = FLAGS.out or runs.path(FLAGS.workdir, runs.REPORT)
  if jax.process_index() == 0:
    with open(os.path.join(out_dir, "tables.md")) as f:
      sys.stdout.write(f.read())
    print(f"\nreport written to {out_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
