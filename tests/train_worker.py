"""`python -m tests.train_worker DATA WORKDIR`: the tiny test run in its own
process, so tests can SIGTERM or kill -9 it like a scheduler would."""

import sys

from absl import flags


def main(data_dir, workdir):
  flags.FLAGS.mark_as_parsed()
  from bmdjax import train
  from tests import helpers
  out = train.train_and_evaluate(helpers.tiny_config(data_dir, num_epochs=2), workdir)
  print(f"ended at step {out['step']}, preempted={out['preempted']}", flush=True)


if __name__ == "__main__":
  main(*sys.argv[1:3])
