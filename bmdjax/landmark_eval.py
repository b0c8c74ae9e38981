r"""Evaluates a trained landmark detector on DICOMs with known landmarks.

  python -m bmdjax.landmark_eval --workdir=LM_RUN --dicom_dir=D \
      --landmarks=landmarks.csv [--manifest=PREPARED/manifest.csv --split=test] \
      [--out=LM_RUN/landmark_report] [--worst=8]

Detection runs exactly as data_prep.build and bmdjax.predict run it (read the
DICOM, letterbox, detect, map back, check), and errors are measured in the
pixels of the original image and in mm (its pixel spacing). Writes to --out:
metrics.json (MRE px/mm, SDR within 2/4/8 mm, per landmark and overall; the
same for the heatmap points before the graph step; error by confidence; how
many studies the plausibility checks flag), tables.md, detections.csv (one
row per study) and overlays of the --worst studies (true green, detected red).
"""

from __future__ import annotations

import sys

from absl import app, flags

from bmdjax import cli, landmark_evaluation, runs

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand so that importing this module does not claim flags."""
  flags.DEFINE_string("workdir", None, "Workdir of the trained landmark detector.")
  cli.define_dicom_dir_flag()
  flags.DEFINE_string("landmarks", None, "Ground truth: image,x0,y0,...,x15,y15 (pixels).")
  flags.DEFINE_string("manifest", None, "Optional manifest.csv of data_prep.build or "
                      "build_landmarks: evaluate only its images of --split.")
  flags.DEFINE_string("split", "test", "Split to take from --manifest.")
  flags.DEFINE_string("out", None, "Report folder (default WORKDIR/landmark_report).")
  flags.DEFINE_integer("worst", 8, "Overlay PNGs of this many worst studies.")
  cli.define_checkpoint_flag()
  flags.DEFINE_enum("reprocess", "none", ["none", "vendor"], "Re-process every film "
                    "before detection: `vendor` = strong CR-like enhancement no simulator "
                    "setting draws (VENDOR), a robustness check.")
  cli.define_min_landmark_confidence_flag()


def main(argv):
  del argv
  cli.require("workdir", "dicom_dir", "landmarks")
  images = None
  if FLAGS.manifest:
    try:
      images = landmark_evaluation.split_images(FLAGS.manifest, FLAGS.split)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  try:
    metrics = landmark_evaluation.evaluate(
        FLAGS.workdir, FLAGS.dicom_dir, FLAGS.landmarks, FLAGS.out, images, FLAGS.worst,
        FLAGS.checkpoint, min_confidence=FLAGS.min_landmark_confidence,
        reprocess=FLAGS.reprocess)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  sys.stdout.write(landmark_evaluation.render_tables(metrics))
  print(f"\nreport written to {FLAGS.out or runs.path(FLAGS.workdir, runs.LANDMARK_REPORT)}")


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
