r"""Parameter counts per model component, computed without allocating weights.

  python -m bmdjax.summary --config=attmulroi
  python -m bmdjax.summary --config=attmulroi:backbone=resnet50 --json
  python -m bmdjax.summary --all      # markdown table, every model x backbone
  python -m bmdjax.summary --config=landmarks   # the landmark detector

Components: backbone, projection (only when the backbone's feature size differs
from the transformer width), transformer (with bmd token and position
embeddings), local regressors, global regressor. BatchNorm running statistics
are not parameters and are not counted (as in PyTorch).
"""

import json

from absl import app, flags
from ml_collections import config_flags

from bmdjax import cli, config_lib, param_counts

FLAGS = flags.FLAGS


def define_flags():
  """Only when run as a program, so importing this module (e.g. next to
  bmdjax.train in one test process) defines no clashing --config flag."""
  config_flags.DEFINE_config_file("config", None, "Model config file.")
  flags.DEFINE_bool("json", False, "Print JSON instead of a table.")
  flags.DEFINE_bool("all", False,
                    "Markdown table of every model with every backbone "
                    "(default config otherwise).")


def main(argv):
  del argv
  if FLAGS.all:
    print(param_counts.all_variants_table())
    return
  if FLAGS.config is None:
    raise app.UsageError("give --config=configs/<model>.py[:args] or --all")
  # A config error ends as a usage error (cli.run).
  config_lib.finalize(FLAGS.config)
  counts = param_counts.component_counts(FLAGS.config.model)
  if FLAGS.json:
    print(json.dumps(counts, indent=2))
  else:
    print(param_counts.describe(FLAGS.config.model))
    print(param_counts.format_table(counts))


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
