"""The landmark detector end to end: its dataset, training through the shared
loop, detection, evaluation, data prep with detected landmarks and screening
a fresh study without landmarks."""

import json
import os
import subprocess
import sys

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pandas as pd
import pytest

from bmdjax import (clinical, detector, inference, input_pipeline, landmark_evaluation,
                    prediction, preparation, tasks)
from data_prep import build, build_landmarks, dicom_io, rois, synthesize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_landmark_dataset_round_trip_and_manifest(cohort_dir, landmark_prepared):
  table = build.load_landmarks(str(cohort_dir / "landmarks.csv"))
  source = input_pipeline.open_split(landmark_prepared, "train")
  rec = source[0]
  image = rec["image"].decode()
  radiograph = dicom_io.read_radiograph(cohort_dir / "dicom" / image)
  shape = radiograph.image.shape
  np.testing.assert_array_equal(rec["pixels"], build_landmarks.prepare_image(radiograph, 64))
  np.testing.assert_allclose(rec["landmarks"], rois.to_letterbox(table[image], shape, 64),
                             atol=1e-4)
  assert rec["mm_per_pixel"] == pytest.approx(radiograph.pixel_spacing * max(shape) / 64)
  assert tuple(rec["image_shape"]) == shape
  manifest = pd.read_csv(landmark_prepared / "manifest.csv").set_index("image")
  first = sorted(table)[0]  # the row the fixture swapped left and right in
  assert manifest.loc[first, "status"] == "skipped"
  assert "left_right" in manifest.loc[first, "reason"]
  assert "does not exist" in manifest.loc["missing.dcm", "reason"]
  ok = manifest[manifest.status == "ok"]
  assert len(ok) == len(table) - 1
  assert (ok.groupby("patient_id").split.nunique() == 1).all()  # patient-level split
  prep = input_pipeline.load_prep_summary(str(landmark_prepared))
  assert prep["task"] == "landmarks" and prep["counts"]["ok"] == len(ok)


def test_tiny_detector_trains_through_the_shared_loop(tiny_detector):
  config, workdir, out = tiny_detector
  history = out["history"]
  assert out["step"] == len(history) >= 8
  assert all(np.isfinite(h["loss"]) for h in history)
  assert np.mean([h["loss"] for h in history[-3:]]) < np.mean([h["loss"] for h in history[:3]])
  best = json.loads((workdir / "best.json").read_text())
  assert best["score"] == best["mre_mm"] and np.isfinite(best["mre_mm"])
  run = json.loads((workdir / "run.json").read_text())
  assert run["image_size"] == 64 and run["config"]["task"] == "landmarks"
  assert list((workdir / "tb").iterdir()) and list((workdir / "checkpoints").iterdir())


def test_a_bmd_dataset_is_refused_by_the_landmark_task(tiny_detector, prepared_dir):
  config, _, _ = tiny_detector
  wrong = config.copy_and_resolve_references()
  wrong.data.dir = str(prepared_dir)
  with pytest.raises(ValueError, match="bmdjax prepare-landmarks"):
    tasks.get(wrong)


def test_detection_equals_the_validation_predictions(tiny_detector, cohort_dir):
  """Detection on a DICOM (build, predict, eval) sees what training saw."""
  config, workdir, _ = tiny_detector
  finder = detector.LandmarkDetector.from_workdir(str(workdir))
  source = input_pipeline.open_split(config.data.dir, "validation")
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  graphdef, _, _ = inference.init_model_state(config)
  pred = detector.predict_split(config, detector.make_predict_fn(graphdef, config.tta),
                                finder.params,
                                finder.rest, source, NamedSharding(mesh, P("data")),
                                tasks.LandmarkTask.example_fn)
  paths = [str(cohort_dir / "dicom" / im) for im in pred["image"][:3]]
  found = finder.detect_files(paths + [str(cohort_dir / "nope.dcm")])
  assert "file not found" in found[-1]["error"]
  for k, d in enumerate(found[:3]):
    boxed = rois.to_letterbox(d["landmarks"], d["shape"], finder.size)
    np.testing.assert_allclose(boxed, pred["points"][k], atol=1e-3)
    np.testing.assert_allclose(d["confidence"], pred["confidence"][k], atol=1e-5)
    scale = rois.letterbox_scale(d["shape"], finder.size)  # spread in the image's pixels
    np.testing.assert_allclose(d["spread"], pred["spread"][k] * scale, rtol=1e-4, atol=1e-4)
    assert isinstance(d["flags"], list)


def test_a_bmd_run_or_nothing_is_not_a_detector(tiny_run, tmp_path):
  _, workdir, _ = tiny_run
  with pytest.raises(ValueError, match="not a landmark detector"):
    detector.LandmarkDetector.from_workdir(str(workdir))
  with pytest.raises(FileNotFoundError, match="run.json"):
    detector.LandmarkDetector.from_workdir(str(tmp_path))


def test_landmark_eval_writes_its_report(tiny_detector, cohort_dir, tmp_path):
  _, workdir, _ = tiny_detector
  images = sorted(build.load_landmarks(str(cohort_dir / "landmarks.csv")))[:6]
  m = landmark_evaluation.evaluate(str(workdir), str(cohort_dir / "dicom"),
                                   str(cohort_dir / "landmarks.csv"), str(tmp_path), images,
                                   worst=2, progress=False)
  det = pd.read_csv(tmp_path / "detections.csv")
  assert list(det.image) == images and m["studies"] == 6
  truth = build.load_landmarks(str(cohort_dir / "landmarks.csv"))
  pred = det[[f"{a}{i}" for i in range(16) for a in "xy"]].to_numpy().reshape(-1, 16, 2)
  true = np.stack([truth[i] for i in images])
  spacing = np.array([dicom_io.read_radiograph(cohort_dir / "dicom" / i).pixel_spacing
                      for i in images])
  mm = np.hypot(*(pred - true).transpose(2, 0, 1)) * spacing[:, None]
  assert m["overall"]["mre_mm"] == pytest.approx(mm.mean(), rel=1e-3)
  assert m["overall"]["sdr_8mm"] == pytest.approx((mm <= 8).mean(), abs=1 / mm.size)
  assert set(m["per_landmark"]) == set(rois.LANDMARK_NAMES)
  assert m["flagged_studies"] == (det["flags"].fillna("") != "").sum()
  assert sum(b["n"] for b in m["by_confidence"]) == 6 * 16
  assert len(m["worst_overlays"]) == 2 and all(os.path.getsize(p) for p in m["worst_overlays"])
  assert "SDR 2 mm" in (tmp_path / "tables.md").read_text()


@pytest.fixture(scope="module")
def small_cohort(cohort_dir, tmp_path_factory):
  """Six labelled studies of the session cohort (detection in tests is slow)."""
  tmp = tmp_path_factory.mktemp("detect_build")
  labels = pd.read_csv(cohort_dir / "labels.csv", dtype=str, keep_default_na=False)
  labels.head(6).to_csv(tmp / "labels.csv", index=False)
  dicom = tmp / "dicom"
  dicom.mkdir()
  for name in labels.image.head(6):
    os.symlink(cohort_dir / "dicom" / name, dicom / name)
  return tmp


def test_build_with_the_detector_flags_and_keeps_what_it_is_told(tiny_detector, small_cohort):
  _, workdir, _ = tiny_detector
  tmp = small_cohort
  args = (str(tmp / "dicom"), str(tmp / "labels.csv"), None)
  # The command line (it once imported itself twice through the detector).
  proc = subprocess.run(
      [sys.executable, "-m", "bmdjax.prepare", f"--dicom_dir={args[0]}",
       f"--labels={args[1]}", f"--landmark_workdir={workdir}", "--keep_flagged",
       f"--out={tmp / 'kept'}", "--size=16", "--grids=", "--workers=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads((tmp / "kept" / "prep.json").read_text())
  assert summary["inputs"]["landmark_workdir"] == str(workdir)
  detected = pd.read_csv(tmp / "kept" / build.DETECTED_CSV)
  assert len(detected) == 6 and {"conf0", "conf15", "flags"} <= set(detected.columns)
  table = build.load_landmarks(str(tmp / "kept" / build.DETECTED_CSV))  # reusable as input
  manifest = pd.read_csv(tmp / "kept" / "manifest.csv")
  assert (manifest.status == "ok").sum() == summary["counts"]["ok"] == 6
  flagged = detected["flags"].fillna("") != ""
  assert summary["counts"]["ok_with_landmark_flags"] == flagged.sum()
  source = input_pipeline.open_split(tmp / "kept", "train")
  rec = source[0]
  np.testing.assert_allclose(rec["landmarks"], table[rec["image"].decode()], atol=0.01)
  # By default flagged studies are set aside, never cropped silently.
  if flagged.all():
    with pytest.raises(SystemExit, match="keep_flagged"):
      preparation.prepare(*args, str(tmp / "strict"), size=16, grids=(), workers=1,
                      landmark_workdir=str(workdir))
    manifest = None
  else:
    preparation.prepare(*args, str(tmp / "strict"), size=16, grids=(), workers=1,
                    landmark_workdir=str(workdir))
    manifest = pd.read_csv(tmp / "strict" / "manifest.csv").set_index("image")
    for image, flags in zip(detected.image, detected["flags"].fillna("")):
      assert manifest.loc[image, "status"] == ("flagged" if flags else "ok")
      if flags:
        assert "detected landmarks fail checks" in manifest.loc[image, "reason"]
  # The split does not depend on the landmarks' source.
  given = build.build(str(tmp / "dicom"), str(tmp / "labels.csv"),
                      str(tmp / "kept" / build.DETECTED_CSV), str(tmp / "given"),
                      size=16, grids=(), workers=1)
  splits = lambda d: pd.read_csv(d / "manifest.csv").set_index("image").split.to_dict()
  assert splits(tmp / "given") == splits(tmp / "kept")
  with pytest.raises(SystemExit, match="exactly one"):
    build.build(str(tmp / "dicom"), str(tmp / "labels.csv"), None, str(tmp / "none"))


@pytest.fixture(scope="module")
def fresh_study(tmp_path_factory):
  """A radiograph no run has seen, written as a MONOCHROME1 CR DICOM."""
  rendered = synthesize.render_chest(np.zeros(14), np.random.default_rng(2024),
                                     spacing_range=(1.2, 1.4))
  path = tmp_path_factory.mktemp("fresh") / "fresh.dcm"
  synthesize.write_dicom(path, rendered.image, photometric="MONOCHROME1",
                         spacing=rendered.spacing, modality="CR", view=rendered.view,
                         header={"PatientSex": "F"})
  return str(path)


def test_predict_without_landmarks_end_to_end(tiny_run, tiny_detector, fresh_study, tmp_path):
  _, workdir, _ = tiny_run
  _, lm_workdir, _ = tiny_detector
  proc = subprocess.run(
      [sys.executable, "-m", "bmdjax.predict", f"--workdir={workdir}",
       f"--landmark_workdir={lm_workdir}", "--json", f"--out={tmp_path}", fresh_study],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  (result,) = json.loads(proc.stdout)
  assert result["landmarks"]["source"] == "detected"
  assert np.array(result["landmarks"]["points"]).shape == (16, 2)
  assert len(result["landmarks"]["confidence"]) == 16
  assert os.path.getsize(result["overlay"]) > 0
  if result["landmarks"]["flags"]:  # a tiny detector is mostly unsure: not predicted
    assert result["status"] == "flagged" and "bmd" not in result
    assert proc.returncode == 1, proc.stderr
    assert result["landmarks"]["flags"][0].split(":")[0] in result["reason"]
  else:
    assert result["status"] == "ok" and proc.returncode == 0, proc.stderr
  # Kept regardless of flags, its BMD is that of the same points given by hand.
  (kept,) = prediction.predict_studies(str(workdir), [fresh_study],
                                       landmark_workdir=str(lm_workdir), keep_flagged=True,
                                       out_dir=str(tmp_path / "kept"))
  assert kept["status"] == "ok" and kept["landmarks"]["flags"] == result["landmarks"]["flags"]
  given = {"fresh.dcm": np.array(kept["landmarks"]["points"])}
  (by_hand,) = prediction.predict_studies(str(workdir), [fresh_study], landmarks=given)
  assert kept["bmd"]["L1"] == pytest.approx(by_hand["bmd"]["L1"], abs=1e-3)
  # tiny_run was trained on given landmarks: detected ones carry the caution.
  assert json.loads((workdir / "run.json").read_text())["landmarks"] == "given"
  assert clinical.DETECTED_ON_GIVEN in kept["notes"]
  assert clinical.DETECTED_ON_GIVEN not in by_hand["notes"]
  assert f"note: {clinical.DETECTED_ON_GIVEN}" in prediction.format_table([kept])
  (lenient,) = prediction.predict_studies(str(workdir), [fresh_study],
                                          landmark_workdir=str(lm_workdir),
                                          min_landmark_confidence=0.0)
  assert not any(f.startswith("low_confidence") for f in lenient["landmarks"]["flags"])
  text = prediction.format_table([kept])
  assert "landmarks: detected" in text
  assert all(f"LANDMARK FLAG {f}" in text for f in kept["landmarks"]["flags"])


def test_landmark_caution_only_for_detected_points_on_a_given_trained_model():
  assert input_pipeline.landmark_source({"inputs": {"landmark_workdir": "/runs/lm"}}) == "detected"
  assert input_pipeline.landmark_source({"inputs": {"landmark_workdir": None}}) == "given"
  assert input_pipeline.landmark_source({}) == "given"
  caution = clinical.landmark_caution
  assert caution("given", "detected") == clinical.DETECTED_ON_GIVEN
  assert caution(["detected", "given"], "detected") == clinical.DETECTED_ON_GIVEN  # any run
  assert caution("given", "given") is None
  assert caution("detected", "detected") is None
  assert caution(None, "detected") is None  # a run from before run.json said
