"""Screening single studies: same numbers as evaluation, clear refusals, the CLI."""

import json
import os
import shutil
import subprocess
import sys

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pandas as pd
import pytest

from bmdjax import inference, input_pipeline, prediction, predictor, tscore
from bmdjax import runs
from data_prep import synthesize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def evaluated(tiny_run):
  """Predictions of the test split exactly as bmdjax.evaluate computes them."""
  config, workdir, _ = tiny_run
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  run = runs.load_run_info(str(workdir))
  scaler = inference.TargetScaler(run["target_stats"], config.target)
  graphdef, params, rest = inference.init_model_state(config)
  params, rest, _ = runs.restore_params(str(workdir), params, rest, "best")
  source = input_pipeline.open_split(config.data.dir, "test")
  return inference.predict_split(config, inference.make_predict_fn(graphdef), params, rest,
                                 source, NamedSharding(mesh, P("data")), scaler)


@pytest.fixture(scope="module")
def studies(cohort_dir, evaluated, tmp_path_factory):
  """Two good test studies, then one of each kind that must be refused."""
  tmp = tmp_path_factory.mktemp("screen")
  good = [str(cohort_dir / "dicom" / im) for im in evaluated["image"][:2]]
  noise = np.random.default_rng(0).uniform(size=(64, 64))
  synthesize.write_dicom(tmp / "ct.dcm", noise, modality="CT")
  synthesize.write_dicom(tmp / "lateral.dcm", noise, view="LL")
  (tmp / "notes.txt").write_text("not an image\n")
  shutil.copy(good[0], tmp / "offimage.dcm")
  landmarks = pd.read_csv(cohort_dir / "landmarks.csv")
  off = landmarks[landmarks.image == os.path.basename(good[0])].copy()
  off["image"] = "offimage.dcm"
  off[[f"x{i}" for i in range(16)]] += 1e5
  pd.concat([landmarks, off]).to_csv(tmp / "landmarks.csv", index=False)
  bad = {name: str(tmp / name) for name in
         ("ct.dcm", "lateral.dcm", "notes.txt", "missing.dcm", "offimage.dcm")}
  return good, bad, str(tmp / "landmarks.csv"), tmp


@pytest.fixture(scope="module")
def screened(tiny_run, studies):
  _, workdir, _ = tiny_run
  good, bad, landmarks, tmp = studies
  return prediction.predict_studies(str(workdir), good + list(bad.values()),
                                    landmarks=landmarks, out_dir=str(tmp / "out"))


def test_predictions_match_evaluation(screened, studies, evaluated, cohort_dir):
  good, _, _, _ = studies
  labels = pd.read_csv(cohort_dir / "labels.csv").set_index("image")
  ref = tscore.load_reference()
  for result, path in zip(screened, good):
    assert result["status"] == "ok", result
    row = evaluated[evaluated.image == os.path.basename(path)].iloc[0]
    assert list(result["bmd"]) == ["L1"]
    np.testing.assert_allclose(result["bmd"]["L1"], row["pred_L1"], atol=1e-5)
    # Sex from the DICOM header, which the synthetic cohort fills from labels.csv.
    assert result["sex"] == labels.loc[os.path.basename(path), "sex"]
    assert result["sex_source"] == "DICOM header"
    t = tscore.t_score(result["bmd"]["L1"], result["sex"], "L1", ref)
    assert result["t_score"]["L1"] == pytest.approx(t)
    # One vertebra: ISCD forbids a category (it comes from L1-L4 only).
    assert result["who_category"] is None and result["lumbar"] is None
    assert any("ISCD" in note for note in result["notes"])
    assert os.path.getsize(result["overlay"]) > 0
  json.dumps(screened)  # machine-readable as is


def test_unusable_studies_are_refused_with_reasons(screened, studies):
  good, bad, _, _ = studies
  by_path = {r["study"]: r for r in screened[len(good):]}
  expected = {"ct.dcm": "modality CT", "lateral.dcm": "not frontal",
              "notes.txt": "not a readable DICOM", "missing.dcm": "file not found",
              "offimage.dcm": "outside the image"}
  for name, why in expected.items():
    result = by_path[bad[name]]
    assert result["status"] == "refused" and "bmd" not in result
    assert bad[name] in result["reason"] and why in result["reason"], result["reason"]
  text = prediction.format_table(screened)
  assert "REFUSED" in text and "ISCD" in text


def test_missing_landmarks_say_what_is_needed(tiny_run, studies):
  _, workdir, _ = tiny_run
  good, _, _, _ = studies
  (result,) = prediction.predict_studies(str(workdir), good[:1], sex="F")
  assert result["status"] == "refused"
  assert good[0] in result["reason"] and prediction.LANDMARKS_NEEDED in result["reason"]


def test_crop_size_is_never_guessed(tiny_run, tmp_path):
  config, _, _ = tiny_run
  assert predictor.crop_size({}, config) == 32
  with pytest.raises(ValueError, match="trained on 32x32"):
    predictor.crop_size({}, config, size=64)
  gone = config.copy_and_resolve_references()
  gone.data.dir = str(tmp_path / "deleted")
  with pytest.raises(ValueError, match="--size"):
    predictor.crop_size({}, gone)
  assert predictor.crop_size({}, gone, size=48) == 48


def test_cli_json(tiny_run, studies, screened, tmp_path):
  _, workdir, _ = tiny_run
  good, bad, landmarks, _ = studies
  proc = subprocess.run(
      [sys.executable, "-m", "bmdjax.predict", f"--workdir={workdir}",
       f"--landmarks={landmarks}", "--json", f"--out={tmp_path}", "--sex=M",
       good[0], bad["notes.txt"]],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr  # one study refused
  ok, refused = json.loads(proc.stdout)
  assert ok["status"] == "ok" and ok["sex"] == "M" and ok["sex_source"] == "given"
  assert ok["bmd"]["L1"] == pytest.approx(screened[0]["bmd"]["L1"], abs=1e-5)
  assert ok["who_category"] is None
  assert os.path.isfile(ok["overlay"])
  assert refused["status"] == "refused" and bad["notes.txt"] in refused["reason"]


def test_same_vertebra_from_two_runs_is_refused(tiny_run, studies):
  _, workdir, _ = tiny_run
  good, _, landmarks, _ = studies
  with pytest.raises(ValueError, match="L1 is predicted by both"):
    prediction.predict_studies([str(workdir), str(workdir)], good[:1], landmarks=landmarks)


def test_evaluated_run_gives_intervals_referral_sr_and_fhir(tiny_run, studies, tmp_path):
  """After bmdjax.evaluate stored the validation predictions, predict shows the
  interval calibrated on them, the referral, and writes SR and FHIR files."""
  from fhir.resources.bundle import Bundle  # pylint: disable=import-outside-toplevel
  from bmdjax import clinical, dicom_sr, evaluation  # pylint: disable=import-outside-toplevel
  config, workdir, _ = tiny_run
  evaluation.evaluate(config, str(workdir), split="test", out_dir=str(tmp_path / "report"),
                      bootstrap=0)
  good, _, landmarks, _ = studies
  (result,) = prediction.predict_studies(str(workdir), good[:1], landmarks=landmarks,
                                         out_dir=str(tmp_path / "out"), sr=True,
                                         fhir_json=True, level=0.5)
  assert result["status"] == "ok", result
  fitted = clinical.fit_runs([str(workdir)], level=0.5)
  q = fitted["raw"]["L1"]["q_bmd"]
  lo, hi = result["intervals"]["L1"]["bmd"]
  assert hi - lo == pytest.approx(2 * q, abs=1e-3) and lo < result["bmd"]["L1"] < hi
  assert result["screening"]["column"] == "L1"
  thr = fitted["raw"]["L1"]["screening_threshold_t"]
  if thr is None:  # no osteoporosis among the tiny validation split: no threshold
    assert result["screening"]["refer_dxa"] is None
    assert "no screening decision" in result["screening"]["decision"]
  else:
    assert result["screening"]["refer_dxa"] == (result["t_score"]["L1"] <= thr)
  values = dicom_sr.read_values(result["sr"])
  assert values[("L1 vertebra", "38263-6")]["value"] == pytest.approx(result["bmd"]["L1"])
  with open(result["fhir"]) as f:
    Bundle.model_validate(json.load(f))
  text = prediction.format_table([result])
  assert "50% interval" in text and "screening:" in text
