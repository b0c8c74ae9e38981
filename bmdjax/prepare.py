r"""Prepares DICOMs + labels.csv into the training dataset, with landmarks from
a CSV or placed by a trained detector.

  bmdjax prepare --dicom_dir=D --labels=labels.csv --landmarks=landmarks.csv \
      --out=OUT [--size=256] [--grids=3]
  bmdjax prepare --dicom_dir=D --labels=labels.csv --landmark_workdir=LM_RUN \
      --out=OUT [--keep_flagged] [--min_landmark_confidence=0.5]

The patient split is stratified by sex and osteoporosis status (lowest
T-score <= -2.5 against the shipped young-adult reference, or --reference), so
a small cohort's test split still has osteoporosis cases. What is written is
data_prep.build's (OUT/manifest.csv, OUT/prep.json, the
ArrayRecord shards); with --landmark_workdir the detector (bmdjax.detector)
places the 16 landmarks first and OUT/landmarks_detected.csv keeps them, with
each point's confidence and the failed plausibility checks. Data prep itself
knows nothing of the model: the detector is passed to it as a function.
"""

from __future__ import annotations

import os

from absl import app, flags

from bmdjax import cli, tscore
from data_prep import build

FLAGS = flags.FLAGS


def landmark_detector(landmark_workdir: str, min_confidence: float | None = None,
                      progress: bool = True):
  """DICOM paths -> detections (build.detect_landmarks' `detect`) from a
  trained detector run."""
  from bmdjax import detector  # pylint: disable=import-outside-toplevel  (JAX only here)
  finder = detector.LandmarkDetector.from_workdir(landmark_workdir)
  return lambda paths: finder.detect_files(paths, min_confidence, progress=progress)


def prepare(dicom_dir: str, labels: str, landmarks: str | None, out: str, *,
            landmark_workdir: str | None = None,
            min_landmark_confidence: float | None = None, **kwargs) -> dict:
  """data_prep.build.build, with the landmarks of `landmarks` or detected by
  the run in `landmark_workdir`; returns the prep.json summary."""
  detect = (landmark_detector(landmark_workdir, min_landmark_confidence)
            if landmark_workdir else None)
  kwargs.setdefault("reference", dict(tscore.load_reference(None).table))
  return build.build(dicom_dir, labels, landmarks, out, detect=detect,
                     detector=os.path.abspath(landmark_workdir) if landmark_workdir else None,
                     **kwargs)


def main(argv):
  del argv
  if bool(FLAGS.landmarks) == bool(FLAGS.landmark_workdir):
    raise app.UsageError("give --landmarks=landmarks.csv or --landmark_workdir=W (a trained "
                         "landmark detector), exactly one of them")
  detect = (landmark_detector(FLAGS.landmark_workdir, FLAGS.min_landmark_confidence)
            if FLAGS.landmark_workdir else None)
  build.build_from_flags(detect=detect,
                         detector=(os.path.abspath(FLAGS.landmark_workdir)
                                   if FLAGS.landmark_workdir else None),
                         keep_flagged=FLAGS.keep_flagged,
                         reference=dict(tscore.load_reference(FLAGS.reference).table))


def define_flags():
  build.define_flags()
  cli.define_detector_flags()
  flags.DEFINE_string("reference", None, "Young-adult reference CSV (sex,vertebra,mean,sd) "
                      "for the osteoporosis status the split is stratified by; default: "
                      "the shipped table.")


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
