"""Parameter counts per model component, computed without allocating weights
(nnx.eval_shape), so the full-size models are counted on any machine.

BatchNorm running statistics are not parameters and are not counted (as in
PyTorch), so the counts compare with the paper's and torchvision's.
"""

from flax import nnx

from bmdjax import config_lib, models

# The BMD models: projection only when the backbone's feature size differs from
# the transformer width; transformer with bmd token and position embeddings.
COMPONENTS = ("backbone", "projection", "transformer", "local_regressors",
              "global_regressor")
# The landmark detector (configs/landmarks.py): U-Net, heatmap head, graph step.
DETECTOR_COMPONENTS = ("stem", "stem_bn", "down", "up", "head", "refiner")


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


def describe(model_config) -> str:
  """One line naming the model and the sizes that set its parameter count."""
  m = model_config
  if m.name == "landmarks":
    return f"landmarks (width {m.width}, {m.levels} levels, graph {m.graph_layers} x {m.graph_dim})"
  return (f"{m.name} (backbone {m.backbone}, width {m.width}, "
          f"{m.num_inputs} inputs, {m.num_outputs} outputs)")
