"""Evaluation of a trained run: predictions.csv, metrics.json, tables, baseline."""

import json

import numpy as np
import pandas as pd
import pytest

from bmdjax import clinical, evaluation, model_card
from configs.common import VERTEBRAE


def test_evaluate_writes_the_report(tiny_run):
  config, workdir, _ = tiny_run
  metrics = evaluation.evaluate(config, str(workdir), split="test", bootstrap=20)
  report = workdir / "report"
  predictions = pd.read_csv(report / "predictions.csv")
  expected = (["patient_id", "image", "sex", "age"] + [f"true_{v}" for v in VERTEBRAE]
              + ["pred_L1"])
  assert list(predictions.columns[:len(expected)]) == expected
  # Intervals and the referral flag, calibrated on the stored validation predictions.
  assert {"lo_L1", "hi_L1", "lo_t_L1", "hi_t_L1", "refer_dxa"} <= set(predictions.columns)
  assert (workdir / "calibration" / "predictions_validation.csv").is_file()
  manifest = pd.read_csv(config.data.dir + "/manifest.csv")
  assert len(predictions) == ((manifest.split == "test") & (manifest.status == "ok")).sum()
  assert predictions["pred_L1"].notna().all()
  on_disk = json.loads((report / "metrics.json").read_text())
  for key in ("r", "rmse", "r2", "slope", "intercept", "auc", "ba_mean", "ba_sd"):
    assert key in on_disk["L1"]
  assert on_disk["L1"]["n"] == np.isfinite(predictions["true_L1"]).sum()
  assert "age_sex_baseline" in on_disk and "L1" in on_disk["age_sex_baseline"]
  assert metrics["L1"]["rmse"] == on_disk["L1"]["rmse"]
  assert "age+sex" in (report / "tables.md").read_text().lower()
  assert (report / "fit_L1.png").stat().st_size > 0
  clin = on_disk["clinical"]["columns"]["L1"]
  assert list(on_disk["clinical"]["columns"]) == ["L1"]  # one vertebra: no L1-L4
  q = clin["q_bmd"]
  if q is not None:  # finite: enough validation studies for 90%
    np.testing.assert_allclose(predictions["hi_L1"] - predictions["pred_L1"], q, atol=1e-4)
    inside = ((predictions.true_L1 >= predictions.lo_L1) &
              (predictions.true_L1 <= predictions.hi_L1))[predictions.true_L1.notna()]
    assert clin["coverage"]["coverage_bmd"] == pytest.approx(inside.mean(), abs=1e-4)
  assert set(clin["calibration"]) == {"before", "after", "deciles_before", "deciles_after"}
  assert (report / "calibration_L1.png").stat().st_size > 0
  card = (report / "model_card.md").read_text()
  assert "Intended use" in card and "SYNTHETIC" in card
  assert clinical.DETECTED_ON_GIVEN not in card  # trained and evaluated on given landmarks


def test_model_card_lists_the_landmark_caution_first():
  result = {"meta": {"columns": ["L1"]}, "L1": {"n": 3, "r": 0.5, "rmse": 0.1, "auc": None}}
  plain = model_card.card(result, {"model": "m", "data": {}})
  cautious = model_card.card(result, {"model": "m", "data": {},
                                      "cautions": [clinical.DETECTED_ON_GIVEN]})
  assert cautious["limitations"] == [clinical.DETECTED_ON_GIVEN] + plain["limitations"]


def test_age_sex_baseline_recovers_a_known_linear_rule():
  rng = np.random.default_rng(0)
  n = 400
  sex = rng.choice(["F", "M"], n)
  age = rng.uniform(20, 90, n)
  bmd = 1.1 - 0.004 * (age - 55) * (sex == "F") + 0.02 * (sex == "M")
  train = pd.DataFrame({"sex": sex, "age": age, **{v: bmd for v in VERTEBRAE}})
  target = pd.DataFrame({"patient_id": "p", "image": "i", "sex": sex, "age": age,
                         **{f"true_{v}": bmd for v in VERTEBRAE}, "pred_L2": 0.0})
  out = evaluation.age_sex_baseline(train, target)
  np.testing.assert_allclose(out["pred_L2"], bmd, atol=1e-9)
  assert "pred_L1" not in out
