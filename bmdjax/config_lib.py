"""Configs after the command line: derived fields, and the config of a trained run.

A config file (configs/*.py) gives the choices; `finalize` derives what follows
from them (the model's number of inputs and outputs) once every override is
applied, so `--config.target=all` cannot leave a one-output model regressing
four label columns. After training, the run's own config (run.json) is the
truth: `for_run` returns it, and refuses a `--config` that would change what
the network computes instead of silently reinterpreting the weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import ml_collections

from data_prep import rois
from data_prep.schema import VERTEBRAE

TARGETS = VERTEBRAE + ("all",)
COMPUTE_DTYPES = ("float32", "bfloat16")
# Fields that decide what a trained network computes: a run evaluated or
# screened with other values would give wrong numbers without an error.
MODEL_FIELDS = ("task", "target", "data.inputs", "data.grid", "model")
# Fields of the model sub-config that only matter when a run starts.
INIT_ONLY_FIELDS = ("model.backbone_init",)
# Fields an evaluation may take from the command line (where the data is, how
# it is read): they do not change any prediction.
EVAL_SETTINGS = ("data.dir", "batch_size", "input")


# The repository's config files (configs/<name>.py), found by name from any folder.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs")


class ConfigError(ValueError):
  """A config that cannot be right (a usage error: exit status 2)."""


def config_names() -> list[str]:
  """Names `--config=NAME[:args]` accepts (the files of CONFIG_DIR)."""
  if not os.path.isdir(CONFIG_DIR):
    return []
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and f not in ("__init__.py", "common.py"))


def resolve(spec: str) -> str:
  """`attmulroi:demo` (a name) or `path/to/config.py:demo` -> `/abs/path.py:demo`.

  The folder above the config file goes on sys.path, since config files
  import their siblings as a package (`from configs import common`).
  """
  path, sep, arg = spec.partition(":")
  by_name = not path.endswith(".py") and "/" not in path and os.sep not in path
  candidate = os.path.join(CONFIG_DIR, path + ".py") if by_name else path
  if not os.path.isfile(candidate):
    names = ", ".join(config_names()) or "none found"
    raise ConfigError(f"no config {path!r}: give a config file (e.g. configs/attmulroi.py) "
                      f"or a name ({names}), optionally followed by :arguments")
  candidate = os.path.abspath(candidate)
  root = os.path.dirname(os.path.dirname(candidate))
  if root not in sys.path:
    sys.path.insert(0, root)
  return candidate + sep + arg


def load(spec: str):
  """The (not yet finalized) config `spec` names, as --config=spec would give."""
  path, _, arg = resolve(spec).partition(":")
  loader = importlib.util.spec_from_file_location(
      "bmdjax_config_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def target_names(target: str) -> tuple[str, ...]:
  """The label columns a target regresses, in output order."""
  if target not in TARGETS:
    raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
  return VERTEBRAE if target == "all" else (target,)


def num_inputs(data_config) -> int:
  """Crops per study the model reads: 1 (whole image), grid**2 patches or the
  14 ROIs plus the whole image."""
  inputs = data_config.inputs
  if inputs == "whole":
    return 1
  if inputs == "patches":
    return int(data_config.grid) ** 2
  if inputs == "rois":
    return len(rois.INPUT_NAMES)
  raise ConfigError(f"data.inputs must be whole, patches or rois, got {inputs!r}")


def finalize(config):
  """Fills the derived fields of `config` in place (and returns it); raises
  ConfigError where a set value contradicts the fields it derives from.

  Call after every override (entry points do). BMD configs leave
  model.num_inputs / num_outputs unset (None): they follow data.inputs /
  data.grid and target, and the output width must match the label columns the
  loss and the target scaling use.
  """
  if config.get("task", "bmd") != "bmd":
    return config
  m = config.model
  if str(m.dtype) not in COMPUTE_DTYPES:
    raise ConfigError(f"model.dtype must be one of {', '.join(COMPUTE_DTYPES)}, got "
                      f"{m.dtype!r} (the compute dtype; parameters are always float32)")
  derived = {"num_inputs": num_inputs(config.data),
             "num_outputs": len(target_names(config.target))}
  why = {"num_inputs": f"data.inputs={config.data.inputs!r}"
                       + (f", data.grid={config.data.grid}"
                          if config.data.inputs == "patches" else ""),
         "num_outputs": f"target={config.target!r} has {derived['num_outputs']} label "
                        f"column(s)"}
  for key, value in derived.items():
    if m.get(key) is not None and int(m[key]) != value:
      raise ConfigError(
          f"model.{key}={m[key]} contradicts {why[key]}, which needs {value}; leave "
          f"model.{key} unset: it is derived")
    m[key] = value
  return config


def _flat(tree, prefix="") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _plain(config) -> dict:
  """Nested plain dict (tuples as lists, as run.json stores them)."""
  c = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  return json.loads(json.dumps(c))


def _selected(flat: dict, prefixes) -> dict:
  return {k: v for k, v in flat.items()
          if any(k == p or k.startswith(p + ".") for p in prefixes)}


def model_differences(run_config, config) -> list[str]:
  """`field: run value vs given value` for every field of MODEL_FIELDS (except
  INIT_ONLY_FIELDS) in which the two configs differ."""
  a = _selected(_flat(_plain(finalize(_copy(run_config)))), MODEL_FIELDS)
  b = _selected(_flat(_plain(finalize(_copy(config)))), MODEL_FIELDS)
  keys = sorted((set(a) | set(b)) - set(INIT_ONLY_FIELDS))
  return [f"{k}: run {a.get(k, '(absent)')!r}, given {b.get(k, '(absent)')!r}"
          for k in keys if a.get(k) != b.get(k)]


def _copy(config):
  return ml_collections.ConfigDict(_plain(config))


def for_run(run_config, given=None, *, where: str = "the run"):
  """The config to evaluate or screen a run with: the run's own (from
  run.json), finalized. `given` (a --config) may change only EVAL_SETTINGS;
  if it differs in what the network computes, ConfigError says which fields."""
  config = finalize(_copy(run_config))
  if given is None:
    return config
  diffs = model_differences(config, given)
  if diffs:
    raise ConfigError(
        f"--config contradicts the config {where} was trained with ("
        + "; ".join(diffs) + "). Leave out --config to use the run's own, or give the "
        "one it was trained with.")
  given_flat = _selected(_flat(_plain(given)), EVAL_SETTINGS)
  for key, value in given_flat.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if key == "data.dir" and not value:
      continue  # an unset data.dir keeps the run's
    node[leaf] = value
  return config
