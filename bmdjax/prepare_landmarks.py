r"""Prepares radiographs + landmarks.csv into the landmark detector's dataset.

  bmdjax prepare-landmarks --dicom_dir=D --landmarks=landmarks.csv \
      --out=OUT [--size=256] [--labels=labels.csv]

No BMD is needed: any frontal chest radiographs with 16 landmarks will do
(a `bmdjax annotate` export, or a cohort's landmarks.csv). Each study is read
as `bmdjax prepare` reads it, letterboxed to --size and stored with its
landmarks in that frame; landmark sets that fail the plausibility checks (e.g.
left and right swapped) are reported in OUT/manifest.csv as labelling errors
rather than learnt. Train on it with `bmdjax train --config=landmarks`.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from bmdjax import cli
from data_prep import build_landmarks

FLAGS = flags.FLAGS


def define_flags():
  cli.define_dicom_dir_flag()
  flags.DEFINE_string("landmarks", None, "landmarks.csv: image,x0,y0,...,x15,y15 in "
                      "pixels of the stored image (order: data_prep/rois.py).")
  flags.DEFINE_string("out", None, "Output folder (must not hold a prepared dataset yet).")
  flags.DEFINE_integer("size", 256, "Side of the letterboxed image in pixels; a "
                       "multiple of 32 (the detector halves it 5 times).")
  flags.DEFINE_string("labels", None, "Optional labels.csv with patient_id,image[,split] "
                      "for a patient-level split (default: one patient per image).")
  cli.define_split_flags(("0.8", "0.1", "0.1"))


def main(argv):
  if len(argv) > 1:
    cli.exit_usage(f"unexpected arguments {argv[1:]}")
  cli.require("dicom_dir", "landmarks", "out")
  if FLAGS.size % 32:
    cli.exit_usage(f"--size={FLAGS.size} is not a multiple of 32")
  summary = build_landmarks.build_dataset(
      FLAGS.dicom_dir, FLAGS.landmarks, FLAGS.out, size=FLAGS.size, labels=FLAGS.labels,
      fractions=[float(x) for x in FLAGS.fractions], seed=FLAGS.seed,
      workers=FLAGS.workers)
  c = summary["counts"]
  print(f"prepared {c['ok']} radiographs ({c['train']} train, {c['validation']} "
        f"validation, {c['test']} test), skipped {c['skipped']} (reasons in "
        f"{os.path.join(FLAGS.out, 'manifest.csv')}), {summary['seconds']} s",
        file=sys.stderr)


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
