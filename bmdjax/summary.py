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
from flax import nnx
from ml_collections import config_flags

from bmdjax import cli, config_lib, models

COMPONENTS = ("backbone", "projection", "transformer", "local_regressors",
              "global_regressor")
# The landmark detector (configs/landmarks.py): U-Net, heatmap head, graph step.
DETECTOR_COMPONENTS = ("stem", "stem_bn", "down", "up", "head", "refiner")

FLAGS = flags.FLAGS


def define_flags():
  """Only when run as a program, so importing this module (e.g. next to
  bmdjax.train in one test process) defines no clashing --config flag."""
  config_flags.DEFINE_config_file("config", None, "Model config file.")
  flags.DEFINE_bool("json", False, "Print JSON instead of a table.")
  flags.DEFINE_bool("all", False,
                    "Markdown table of every model with every backbone "
                    "(default config otherwise).")


def component_counts(model_config) -> dict[str, int]:
  """Parameters per component present in the model, and "total"."""
  config = model_config.copy_and_resolve_references()
  with config.unlocked():
    config.backbone_init = ""  # counting needs no weights
  model = nnx.eval_shape(lambda: models.build(config, rngs=nnx.Rngs(0)))
  counts = {name: models.count_params(getattr(model, name))
            for name in COMPONENTS + DETECTOR_COMPONENTS
            if getattr(model, name, None) is not None}
  counts["total"] = models.count_params(model)
  return counts


def format_table(counts: dict[str, int]) -> str:
  total = counts["total"]
  lines = [f"{'component':<18}{'parameters':>14}{'share':>8}"]
  lines += [f"{name:<18}{n:>14,}{n / total:>8.1%}" for name, n in counts.items()]
  return "\n".join(lines)


def all_variants_table() -> str:
  """Markdown table of every BMD model with every backbone."""
  titles = ["backbone params"] + [c.replace("_", " ") for c in COMPONENTS[1:]]
  head = ("| model | backbone | " + " | ".join(titles) + " | total |\n|" +
          "---|" * (len(COMPONENTS) + 3))
  rows = [head]
  for name in (n for n in models.MODELS if n != "landmarks"):
    for backbone in models.BACKBONES:
      counts = component_counts(
          config_lib.finalize(config_lib.load(f"{name}:backbone={backbone}")).model)
      cells = [f"{counts[c]:,}" if c in counts else "-" for c in COMPONENTS]
      rows.append(f"| {name} | {backbone} | " + " | ".join(cells) +
                  f" | {counts['total']:,} |")
  return "\n".join(rows)


def main(argv):
  del argv
  if FLAGS.all:
    print(all_variants_table())
    return
  if FLAGS.config is None:
    raise app.UsageError("give --config=configs/<model>.py[:args] or --all")
  try:
    config_lib.finalize(FLAGS.config)
  except config_lib.ConfigError as e:
    cli.exit_usage(e)
  counts = component_counts(FLAGS.config.model)
  if FLAGS.json:
    print(json.dumps(counts, indent=2))
  else:
    m = FLAGS.config.model
    if m.name == "landmarks":
      print(f"landmarks (width {m.width}, {m.levels} levels, graph "
            f"{m.graph_layers} x {m.graph_dim})")
    else:
      print(f"{m.name} (backbone {m.backbone}, width {m.width}, "
            f"{m.num_inputs} inputs, {m.num_outputs} outputs)")
    print(format_table(counts))


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
