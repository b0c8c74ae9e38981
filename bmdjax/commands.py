"""The `bmdjax` command: one entry point, a subcommand per step.

  bmdjax synthesize --out=demo_out/cohort --patients=200
  bmdjax prepare --dicom_dir=D --labels=labels.csv --landmarks=landmarks.csv --out=P
  bmdjax train --config=attmulroi:demo --workdir=runs/demo --config.data.dir=P
  bmdjax evaluate --workdir=runs/demo --split=test
  bmdjax predict --workdir=runs/demo --landmark_workdir=runs/landmarks study.dcm

Each subcommand is also `python -m <module>` (the table below).
"""

from __future__ import annotations

import importlib
import sys

from bmdjax import cli

# name -> (module, what it does). The module provides define_flags() and main(argv).
COMMANDS = {
    "synthesize": ("bmdjax.synthesize", "render a synthetic cohort: DICOMs, labels.csv, "
                   "landmarks.csv"),
    "prepare": ("bmdjax.prepare", "DICOMs + labels (+ landmarks or a detector) -> the "
                "training dataset"),
    "prepare-landmarks": ("bmdjax.prepare_landmarks", "DICOMs + landmarks.csv -> the "
                          "landmark detector's dataset"),
    "train": ("bmdjax.train", "train a BMD model or the landmark detector"),
    "evaluate": ("bmdjax.evaluate", "the paper's metrics of a trained run on a split"),
    "predict": ("bmdjax.predict", "screen DICOM studies: BMD, T-score, WHO category"),
    "metrics": ("bmdjax.write_report", "the report of any predictions.csv"),
    "summary": ("bmdjax.summary", "parameter counts of a model config"),
    "benchmark": ("bmdjax.benchmark", "time training, input, prep and screening"),
    "landmark-eval": ("bmdjax.landmark_eval", "a landmark detector's errors in mm"),
    "annotate": ("bmdjax.annotate", "place and review landmarks in the browser; COCO "
                 "keypoints in and out"),
    "convert-weights": ("bmdjax.convert_weights", "torchvision weights -> .npz backbone init"),
}


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = [__doc__.strip(), "", "commands:"]
  lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
  lines += ["", "`bmdjax COMMAND --help` lists a command's flags. Configs: "
            "--config=NAME[:args] (configs/NAME.py) or --config=PATH.py[:args]."]
  return "\n".join(lines)


def main(argv=None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in cli.HELP_FLAGS:
    cli.print_and_exit(usage(), 0 if len(argv) >= 2 else cli.EXIT_USAGE)
  name = argv[1]
  if name not in COMMANDS:
    cli.exit_usage(f"unknown command {name!r}; one of {', '.join(COMMANDS)} "
                   "(bmdjax --help)")
  module = importlib.import_module(COMMANDS[name][0])
  prog = f"bmdjax {name}"
  define = module.define_flags
  doc = module.__doc__ or ""
  for other, (mod, _) in COMMANDS.items():  # the examples as this command spells them
    doc = doc.replace(f"python -m {mod} ", f"bmdjax {other} ")
  cli.run(module.main, define, [prog] + argv[2:], doc=doc)


if __name__ == "__main__":
  main()
