r"""Landmark annotation in the browser: review, correct and save the 16 points.

  python -m bmdjax.annotate --dicom_dir=DICOMS --out=landmarks.csv \
      [--landmarks=prepared/landmarks_detected.csv | --landmark_workdir=runs/landmarks] \
      [--manifest=prepared/manifest.csv] [--port=8765]
then open http://127.0.0.1:8765/ in a browser on the same machine.

The workflow (README, "Annotating landmarks"):
  1. detect: `bmdjax prepare --landmark_workdir=W` writes landmarks_detected.csv
     (with confidences and failed checks) and a manifest with flagged studies;
     or give --landmark_workdir here and the detector runs on every study first
     (cached in OUT_detected.csv). Without either, --landmarks=landmarks.csv
     pre-fills given points, and studies without any start from a template.
  2. review: the queue opens flagged studies first, then the least confident,
     then the rest. Drag points (or select one with Tab and press Space to put
     it under the cursor); the 14 ROI boxes data prep will cut and the
     plausibility checks follow every change. A accepts (and opens the next
     study), U marks the study unusable with a reason, N/P move in the queue.
  3. every accepted or unusable study is written to --out at once (atomic
     rename; a crash loses at most the study on screen); restarting with the
     same --out resumes. Several tabs may work on one --out: a study saved in
     one tab and then saved from an older copy in another is refused there.
  4. fine-tune: --out is a landmarks.csv (unusable rows have empty points and
     are skipped by data prep): data_prep.build_landmarks on it, then
     bmdjax.train --config=configs/landmarks.py --config.init_from=PRETRAINED
     --config.optim.lr=1e-4 --config.data.dir=...; detect again with the new
     detector and repeat.

Interchange with CVAT / Label Studio (COCO keypoints, 16 named points and
the skeleton of data_prep/rois.py):
  python -m bmdjax.annotate --out=landmarks.csv --export_coco=landmarks_coco.json \
      [--dicom_dir=DICOMS]   (image sizes from the DICOMs when --out lacks them)
  python -m bmdjax.annotate --out=landmarks.csv --import_coco=from_cvat.json
The server binds to 127.0.0.1 (this machine only) unless --host says otherwise,
needs no internet, serves only the studies under --dicom_dir and sends the
page no DICOM header text, only each study's relative path.
"""

from __future__ import annotations

import sys

from absl import app, flags

from bmdjax import cli
from bmdjax.annotation import interchange, sources
from bmdjax.annotation import server as server_lib
from data_prep import rois

FLAGS = flags.FLAGS


def define_flags():
  cli.define_dicom_dir_flag()
  flags.DEFINE_string("out", None, "The annotation CSV, written after every accepted or "
                      "unusable study (a landmarks.csv plus status, reason, flags, ...).")
  flags.DEFINE_string("landmarks", None, "Points to start from: a landmarks.csv or the "
                      "landmarks_detected.csv of bmdjax prepare (its confidences and flags "
                      "order the queue).")
  cli.define_landmark_workdir_flag()
  flags.DEFINE_string("manifest", None, "manifest.csv of bmdjax prepare: its studies are "
                      "the queue, its flagged ones come first.")
  cli.define_min_landmark_confidence_flag()
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind; 127.0.0.1 = this machine only.")
  flags.DEFINE_integer("port", 8765, "Port of the web page.")
  flags.DEFINE_string("export_coco", None, "Write --out's accepted studies as COCO "
                      "keypoints JSON to this file and exit.")
  flags.DEFINE_string("import_coco", None, "Read a COCO keypoints JSON (CVAT, Label Studio) "
                      "into --out as accepted studies and exit.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS.out:
    raise app.UsageError("--out is required: the annotation CSV to write (and resume from)")
  if FLAGS.export_coco:
    interchange.export_coco(FLAGS.out, FLAGS.export_coco, FLAGS.dicom_dir)
    return
  if FLAGS.import_coco:
    interchange.import_coco(FLAGS.import_coco, FLAGS.out)
    return
  if not FLAGS.dicom_dir:
    raise app.UsageError("--dicom_dir is required: the folder of the DICOMs to annotate")
  if FLAGS.landmarks and FLAGS.landmark_workdir:
    raise app.UsageError("give --landmarks (points to start from) or --landmark_workdir (a "
                         "detector to run first), not both")
  session = sources.make_session(FLAGS.dicom_dir, FLAGS.out, FLAGS.landmarks, FLAGS.landmark_workdir,
                         FLAGS.manifest, FLAGS.min_landmark_confidence)
  server = server_lib.Server(session, FLAGS.host, FLAGS.port)
  q = session.queue()
  print(f"{q['annotated']} of {q['total']} studies annotated in {FLAGS.out}; "
        f"{sum(s['flagged'] for s in q['studies'])} flagged. {len(rois.LANDMARK_NAMES)} "
        f"landmarks per study.\nOpen {server.url} (Ctrl-C to stop; every saved study is "
        "already on disk).", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    print("stopped", file=sys.stderr)
  finally:
    server.httpd.server_close()


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
