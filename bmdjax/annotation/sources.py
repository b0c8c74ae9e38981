"""Where a session's pre-filled points come from: a landmarks CSV, or a
trained detector run once over the studies (its output cached beside --out
in the landmarks_detected.csv layout, so a restart does not detect again)."""

from __future__ import annotations

import os

from bmdjax.annotation import queue as queue_lib
from bmdjax.annotation import store as store_lib


def make_session(dicom_dir: str, out: str, landmarks: str | None = None,
                 landmark_workdir: str | None = None, manifest: str | None = None,
                 min_confidence: float | None = None) -> queue_lib.Session:
  store = store_lib.AnnotationStore(out)
  man = queue_lib.read_manifest(manifest) if manifest else None
  prefill, source = None, ""
  if landmarks:
    prefill, source = queue_lib.read_prefill(landmarks), os.path.basename(landmarks)
  elif landmark_workdir:
    from data_prep import build  # pylint: disable=import-outside-toplevel
    cache = os.path.splitext(os.path.abspath(out))[0] + "_detected.csv"
    names = list(man) if man else queue_lib.list_dicom_dir(os.path.realpath(dicom_dir))
    names = [n for n in names if queue_lib.inside(os.path.realpath(dicom_dir), n)]
    cached = queue_lib.read_prefill(cache) if os.path.exists(cache) else {}
    if set(names) - set(cached):
      print(f"detecting landmarks on {len(names)} studies with {landmark_workdir} "
            f"(cached in {cache})")
      from bmdjax import preparation  # pylint: disable=import-outside-toplevel  (JAX only here)
      build.detect_landmarks([os.path.join(dicom_dir, n) for n in names], names,
                             preparation.landmark_detector(landmark_workdir, min_confidence),
                             cache)
      cached = queue_lib.read_prefill(cache)
    else:
      print(f"using the detections cached in {cache}")
    prefill, source = cached, "detector"
    if min_confidence is None:
      from bmdjax import runs  # pylint: disable=import-outside-toplevel
      run = runs.load_run_info(landmark_workdir)
      min_confidence = run["config"].get("checks", {}).get("min_confidence")
  return queue_lib.Session(dicom_dir, store, prefill, source, man, min_confidence)
