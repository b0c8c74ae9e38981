r"""Prepares DICOMs + labels.csv into the training dataset, with landmarks from
a CSV or placed by a trained detector.

  bmdjax prepare --dicom_dir=D --labels=labels.csv --landmarks=landmarks.csv \
      --out=OUT [--size=256] [--grids=3]
  bmdjax prepare --dicom_dir=D --labels=labels.csv --landmark_workdir=LM_RUN \
      --out=OUT [--keep_flagged] [--min_landmark_confidence=0.5]

Each study is read once (modality/VOI LUT, MONOCHROME1 inversion, percentile
normalisation), cropped into the 14 landmark ROIs, the whole image and the NxN
patch grids, resized to --size and stored as uint16 in ArrayRecord shards.
The patient split is stratified by sex and osteoporosis status (lowest T-score
<= -2.5 against the shipped young-adult reference, or --reference), so a small
cohort's test split still has osteoporosis cases; a `split` column in
labels.csv wins. OUT/manifest.csv lists every input and what became of it
(`ok`, `skipped` or `flagged`, with the reason); OUT/prep.json holds the
settings, counts and train-split target statistics.

With --landmark_workdir the detector places the 16 landmarks first and
OUT/landmarks_detected.csv keeps them, with each point's confidence and the
failed plausibility checks; a flagged study is set aside unless --keep_flagged.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from bmdjax import cli, preparation

FLAGS = flags.FLAGS


def define_flags():
  cli.define_dicom_dir_flag()
  flags.DEFINE_string("labels", None, "labels.csv: patient_id,image,sex,age,L1,L2,L3,L4"
                      "[,split].")
  flags.DEFINE_string("landmarks", None, "landmarks.csv: image,x0,y0,...,x15,y15 (pixels). "
                      "Without it, --landmark_workdir detects them.")
  flags.DEFINE_string("out", None, "Output folder (must not hold a prepared dataset yet).")
  flags.DEFINE_integer("size", 256, "Side of every crop in pixels (paper: 256).")
  flags.DEFINE_list("grids", ["3"], "Patch grids NxN to store for the Multi-Patch models, "
                    "e.g. 2,3,4.")
  cli.define_split_flags(("0.7", "0.15", "0.15"))
  cli.define_reference_flag()
  cli.define_detector_flags()


def main(argv):
  if len(argv) > 1:
    cli.exit_usage(f"unexpected arguments {argv[1:]}")
  cli.require("dicom_dir", "labels", "out")
  if bool(FLAGS.landmarks) == bool(FLAGS.landmark_workdir):
    cli.exit_usage("give --landmarks=landmarks.csv or --landmark_workdir=W (a trained "
                   "landmark detector), exactly one of them")
  summary = preparation.prepare(
      FLAGS.dicom_dir, FLAGS.labels, FLAGS.landmarks, FLAGS.out,
      landmark_workdir=FLAGS.landmark_workdir,
      min_landmark_confidence=FLAGS.min_landmark_confidence, reference=FLAGS.reference,
      size=FLAGS.size, grids=[int(g) for g in FLAGS.grids if g],
      fractions=[float(x) for x in FLAGS.fractions], seed=FLAGS.seed,
      workers=FLAGS.workers, keep_flagged=FLAGS.keep_flagged)
  c = summary["counts"]
  print(f"prepared {c['ok']} studies ({c['train']} train, {c['validation']} validation, "
        f"{c['test']} test), skipped {c['skipped']}, flagged {c['flagged']} (reasons in "
        f"{os.path.join(FLAGS.out, 'manifest.csv')}), {summary['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
