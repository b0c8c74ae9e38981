"""Data preparation driven from the model side: data_prep knows nothing of
the model, so a trained landmark detector is handed to data_prep.build as a
function (`detect`) from here."""

from __future__ import annotations

import os

from bmdjax import tscore
from data_prep import build


def landmark_detector(landmark_workdir: str, min_confidence: float | None = None,
                      progress: bool = True):
  """DICOM paths -> detections (build.detect_landmarks' `detect`) from a
  trained detector run."""
  from bmdjax import detector  # pylint: disable=import-outside-toplevel  (JAX only here)
  finder = detector.LandmarkDetector.from_workdir(landmark_workdir)
  return lambda paths: finder.detect_files(paths, min_confidence, progress=progress)


def prepare(dicom_dir: str, labels: str, landmarks: str | None, out: str, *,
            landmark_workdir: str | None = None,
            min_landmark_confidence: float | None = None,
            reference: str | None = None, **kwargs) -> dict:
  """data_prep.build.build with the landmarks of `landmarks` or detected by the
  run in `landmark_workdir`, the split stratified against the young-adult
  `reference` CSV (None: the shipped table); returns the prep.json summary."""
  if bool(landmarks) == bool(landmark_workdir):
    raise ValueError("give landmarks (a landmarks.csv) or landmark_workdir (a trained "
                     "landmark detector), exactly one of them")
  detect = (landmark_detector(landmark_workdir, min_landmark_confidence)
            if landmark_workdir else None)
  return build.build(dicom_dir, labels, landmarks, out, detect=detect,
                     detector=os.path.abspath(landmark_workdir) if landmark_workdir else None,
                     reference=dict(tscore.load_reference(reference).table), **kwargs)
