r"""Screens chest radiographs with trained runs: BMD, T-scores, L1-L4, intervals.

  python -m bmdjax.predict --workdir=runs/all --landmarks=landmarks.csv \
      [--sex=F] [--json] [--out=predict_out] [--sr] [--fhir] study.dcm [more.dcm ...]
  python -m bmdjax.predict --workdir=runs/l1 --workdir=runs/l2 --workdir=runs/l3 \
      --workdir=runs/l4 --landmark_workdir=runs/landmarks [--keep_flagged] study.dcm

The lumbar result is reported as a densitometrist does (bmdjax/lumbar.py):
BMD and T-score per vertebra, L1-L4 from the vertebrae kept by the ISCD rules,
and the WHO category from the L1-L4 T-score only (one vertebra, or fewer than
two usable ones: no category). A target=all run predicts L1-L4 at once;
several per-vertebra runs combine with repeated --workdir. T-scores are shown
to one decimal and the category is taken from the shown value.

Each result carries a --level (default 90%) split-conformal prediction
interval per vertebra and for L1-L4, calibrated on the validation
predictions bmdjax.evaluate stored in each run, turned into a category
statement ("T-score -2.9 to -1.8: osteopenia or osteoporosis"), and a
screening decision: "refer for DXA" when the predicted T is at or below the
threshold fixed on validation for --target_sensitivity. --recalibrate puts
predictions on the validation-fitted calibration line first. --sr writes a
DICOM Structured Report (TID 1500) referencing the source image, --fhir FHIR
R5 Observations (a model prediction, not a DXA measurement), next to the
overlay in --out.

Each study goes through exactly the preprocessing of data_prep.build (the same
`process_study`: DICOM LUTs, normalisation, landmark ROIs, resize to the
training crop size, uint16) and the model of `--workdir`, so a study predicted
here gets the number bmdjax.evaluate would give it. Prints a table (or with
--json one JSON object per study, `status` "ok", "refused" (the study cannot be
used) or "error" (an unexpected failure on it), with a `reason`)
and writes an overlay PNG per study (landmarks, ROI boxes, predictions) to --out.

Landmarks come from --landmarks or, without it, from the trained detector of
--landmark_workdir (bmdjax/detector.py); the output then says so, with each
point's confidence. Detected landmarks that fail the plausibility checks
(data_prep/landmark_checks.py) make the study `flagged`, with the checks as
reason and no BMD, since crops of the wrong bones give a confident wrong
number; --keep_flagged predicts anyway and lists the flags. The overlay shows
the points used either way, flagged ones circled.

Sex for the T-scores comes from --sex, else from the DICOM PatientSex; without
either only BMD is reported. Studies are identified by the path given, never by
header fields. A study that cannot be used (not a DICOM, CT, lateral view, no or
implausible landmarks) is refused with the reason; the others are still
predicted.

Exit status: 0 when every study was predicted, 1 when any study was refused,
flagged or failed, 2 on a usage error (bad flag, no such run).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from bmdjax import cli, prediction

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand so that importing this module (tests, other entry
  points) does not claim --workdir and friends."""
  flags.DEFINE_multi_string("workdir", None, "The bmdjax.train workdir (run.json, best/, "
                            "checkpoints/); repeat it to combine per-vertebra runs into "
                            "L1-L4.")
  flags.DEFINE_string("landmarks", None, "landmarks.csv: image,x0,y0,...,x15,y15 in "
                      "pixels; `image` matches the end of each study's path. Without it "
                      "--landmark_workdir detects them.")
  cli.define_detector_flags()
  flags.DEFINE_list("sex", None, "F or M for every study, or one per study "
                    "(default: PatientSex from the DICOM header). T-scores need it.")
  flags.DEFINE_bool("json", False, "Print a JSON list (one object per study, status "
                    "ok|refused|flagged|error, reason, landmarks) instead of the table.")
  flags.DEFINE_string("out", "predict_out", "Folder for the overlay PNGs.")
  cli.define_checkpoint_flag()
  cli.define_reference_flag()
  flags.DEFINE_integer("size", None, "Crop size the model was trained on; only needed "
                       "when the run's prepared dataset (prep.json) is gone.")
  cli.define_screening_flags()
  flags.DEFINE_bool("sr", False, "Also write a DICOM Structured Report (TID 1500) per study "
                    "to --out, referencing the source image.")
  flags.DEFINE_bool("fhir", False, "Also write FHIR R5 Observations (JSON Bundle) per study "
                    "to --out.")


def main(argv):
  paths = argv[1:]
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  if not paths:
    raise app.UsageError("give at least one study: python -m bmdjax.predict "
                         "--workdir=W --landmark_workdir=LM study.dcm")
  try:
    results = prediction.predict_studies(
        FLAGS.workdir, paths, FLAGS.landmarks, FLAGS.sex, FLAGS.checkpoint, FLAGS.reference,
        FLAGS.out, FLAGS.size, FLAGS.landmark_workdir, FLAGS.keep_flagged,
        FLAGS.min_landmark_confidence, FLAGS.level, FLAGS.target_sensitivity,
        FLAGS.recalibrate, FLAGS.sr, FLAGS.fhir)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  if FLAGS.json:
    print(json.dumps(results, indent=2))
  else:
    print(prediction.format_table(results))
  refused = sum(r["status"] != "ok" for r in results)
  if refused:
    print(f"{refused} of {len(results)} studies refused, flagged or failed", file=sys.stderr)
  return 1 if refused else 0


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
