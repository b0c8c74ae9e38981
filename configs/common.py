"""Shared configuration of every BMD model (big_vision style).

`get_config(arg)` of each model file takes a comma-separated argument string,
e.g. `configs/attmulroi.py:demo,backbone=vgg19,target=L2`; every field can then
be overridden on the command line with `--config.optim.lr=...`.
"""

import ml_collections

from bmdjax.config_lib import COMPUTE_DTYPES, TARGETS, VERTEBRAE  # noqa: F401
# What each model reads from the prepared dataset.
MODEL_INPUTS = {
    "baseline": "whole",
    "mulpat": "patches",
    "attmulpat": "patches",
    "mulroi": "rois",
    "attmulroi": "rois",
}


def parse_arg(arg, **defaults):
  """Parses "demo,target=L2" into a ConfigDict, typed after `defaults`."""
  out = ml_collections.ConfigDict(defaults)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not _:  # a bare name is a true boolean
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return out


def get_config(model_name, arg=None):
  """The full configuration of `model_name` for argument string `arg`."""
  a = parse_arg(arg, demo=False, backbone="vgg16", target="L1", grid=3,
                width=1.0, dtype="float32")
  if a.target not in TARGETS:
    raise ValueError(f"target must be one of L1..L4 or all, got {a.target!r}")
  if a.dtype not in COMPUTE_DTYPES:
    raise ValueError(f"dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {a.dtype!r}")
  c = ml_collections.ConfigDict()
  c.task = "bmd"  # bmdjax/tasks.py
  c.seed = 0
  c.target = a.target

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""  # prepared dataset (output of data_prep.build)
  c.data.inputs = MODEL_INPUTS[model_name]
  c.data.grid = a.grid
  c.data.train_split = "train"
  c.data.eval_split = "validation"

  c.model = ml_collections.ConfigDict()
  c.model.name = model_name
  c.model.backbone = a.backbone
  c.model.width = a.width  # channel multiplier of the backbone (tests, demo)
  # Derived after every override by bmdjax.config_lib.finalize (from data.inputs,
  # data.grid and target): leave unset.
  c.model.num_inputs = None
  c.model.num_outputs = None
  c.model.transformer = ml_collections.ConfigDict(
      dict(depth=6, dim=512, heads=6, head_dim=64, mlp_dim=512))
  c.model.regressor_hidden = 256
  c.model.backbone_init = ""  # torchvision-layout weights (.pth/.npz/.safetensors)
  # Compute dtype of convolutions and matmuls (bfloat16: mixed precision).
  # Parameters, optimiser state, loss, LayerNorm/softmax statistics and the
  # regressors' outputs stay float32 whatever it is.
  c.model.dtype = a.dtype

  # Paper: SGD lr 1e-4, weight decay 4e-4 (added to the gradient), 100 epochs.
  # Momentum and batch size are not stated: 0.9 and 32 are our choices.
  c.optim = ml_collections.ConfigDict(
      dict(name="sgd", lr=1e-4, momentum=0.9, weight_decay=4e-4,
           warmup_epochs=0.0, schedule="constant", grad_clip=0.0))
  c.batch_size = 32  # global, over all devices and hosts
  c.num_epochs = 100
  c.loss_local_weight = 1.0  # mean of the local MSEs, added to the global MSE

  # On-device augmentation, per crop (paper: scaling, rotation, translation, flip).
  c.augment = ml_collections.ConfigDict(
      dict(scale=0.1, rotate_deg=10.0, translate=0.05, flip=True))

  # Evaluators (bmdjax/evaluators.py): `validation` scores every epoch and picks
  # the best checkpoint; bmdjax evaluate predicts with it too.
  c.evals = ml_collections.ConfigDict({"validation": {"type": "bmd_regression"}})

  add_loop_settings(c)
  if a.demo:
    _demo(c)
  return c


def add_loop_settings(c):
  """Input, logging, checkpoint and validation cadence of bmdjax.train's loop,
  shared by every task (BMD models and the landmark detector)."""
  c.input = ml_collections.ConfigDict(
      dict(read_threads=8, prefetch_batches=2, shuffle_seed=0))
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.eval_every_epochs = 1
  # Workdir of a finished run whose best parameters start this one (fine-tuning).
  c.init_from = ""


def _demo(c):
  """CPU-sized run on the synthetic cohort: small crops and a narrow network."""
  c.data.dir = "demo_out/prepared"
  c.model.width = 0.125
  c.model.transformer = ml_collections.ConfigDict(
      dict(depth=2, dim=64, heads=4, head_dim=16, mlp_dim=128))
  c.model.regressor_hidden = 64
  c.optim.lr = 0.01
  c.optim.warmup_epochs = 1.0
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 1.0
  c.batch_size = 16
  c.num_epochs = 15
  c.input.read_threads = 2
  c.log_every_steps = 10
  c.checkpoint_every_steps = 200
