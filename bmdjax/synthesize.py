r"""Renders a synthetic chest X-ray + DXA cohort whose ground truth is known.

  bmdjax synthesize --out=DIR --patients=N --seed=S [--spacing_mm=0.14,0.2]
      [--followup_fraction=0.1] [--missing_fraction=0.03] [--workers=K]
      [--ceiling_samples=200000] [--plain]

Writes DIR/dicom/*.dcm (DX/CR, MONOCHROME1/2, fake PHI), DIR/labels.csv
(patient_id,image,sex,age,L1..L4), DIR/landmarks.csv (16 points per image) and
DIR/cohort.json (settings, summary and `ceiling_r`, the best Pearson r any
estimator can reach on the cohort). How patients, density and films are drawn:
data_prep/synthesize.py.
"""

from __future__ import annotations

import json

from absl import flags

from bmdjax import cli
from data_prep import synthesize

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_integer("patients", 200, "Number of patients.")
  flags.DEFINE_integer("seed", 0, "Random seed (everything is deterministic in it).")
  flags.DEFINE_list("spacing_mm", ["0.14", "0.2"], "Pixel spacing range lo,hi in mm.")
  flags.DEFINE_float("followup_fraction", 0.1, "Share of patients with a second study.")
  flags.DEFINE_float("missing_fraction", 0.03, "Share of missing vertebra values.")
  flags.DEFINE_integer("workers", None, "Rendering processes (default: all cores).")
  flags.DEFINE_integer("ceiling_samples", 200_000, "Monte Carlo size for ceiling_r.")
  flags.DEFINE_bool("plain", False, "Render without lead markers, burned-in text and "
                    "collimation (the same patients and anatomy otherwise, for checking "
                    "that a model does not lean on them).")


def main(argv):
  if len(argv) > 1:
    cli.exit_usage(f"unexpected arguments {argv[1:]}")
  cli.require("out")
  if len(FLAGS.spacing_mm) != 2:
    cli.exit_usage(f"--spacing_mm takes lo,hi, got {','.join(FLAGS.spacing_mm)}")
  lo, hi = (float(v) for v in FLAGS.spacing_mm)
  info = synthesize.generate(FLAGS.out, FLAGS.patients, FLAGS.seed, (lo, hi),
                             FLAGS.followup_fraction, FLAGS.missing_fraction, FLAGS.workers,
                             FLAGS.ceiling_samples, plain=FLAGS.plain)
  print(json.dumps(dict(ceiling_r=info["ceiling_r"], summary=info["summary"]), indent=2))


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
