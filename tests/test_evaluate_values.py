"""Report and evaluation VALUES (not just keys) against hand computations and
scipy/sklearn: a tiny known case written out by hand, and the tiny trained
run's metrics.json recomputed from its own predictions.csv and the cohort's
labels."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from bmdjax import evaluation, report, tscore
from configs.common import VERTEBRAE

REF_CSV = "sex,vertebra,mean,sd\n" + "".join(
    f"{s},{v},1.0,0.125\n" for s in "MF" for v in VERTEBRAE)


def _known_case():
  # 8 patients; truth T = (BMD - 1) / 0.125: -3.2, -2.5, -2.0, -1.2, -0.4, 0, 0.8, -2.8.
  true = np.array([0.6, 0.6875, 0.75, 0.85, 0.95, 1.0, 1.1, 0.65])
  pred = np.array([0.7, 0.66, 0.8, 0.86, 0.9, 1.05, 1.0, 0.8])
  return pd.DataFrame({
      "patient_id": [f"p{i}" for i in range(8)], "image": [f"i{i}.dcm" for i in range(8)],
      "sex": ["F", "M", "F", "F", "M", "F", "M", "F"], "age": np.arange(50, 90, 5),
      "true_L1": true, "true_L2": np.nan, "true_L3": np.nan, "true_L4": np.nan,
      "pred_L1": pred}), true, pred


def test_report_values_of_a_known_case_by_hand(tmp_path):
  frame, true, pred = _known_case()
  ref = tmp_path / "ref.csv"
  ref.write_text(REF_CSV)
  report.write_report(frame, tmp_path / "out", reference=str(ref), bootstrap=0)
  got = json.loads((tmp_path / "out" / "metrics.json").read_text())["L1"]
  d = pred - true
  fit = stats.linregress(true, pred)
  t_true, t_pred = (true - 1.0) / 0.125, (pred - 1.0) / 0.125
  porosis = t_true <= -2.5  # 0.6, 0.6875 (T = -2.5 exactly), 0.65
  assert got["n"] == 8 and got["n_osteoporosis"] == 3 and porosis.sum() == 3
  assert got["n_osteopenia"] == 5  # T < -1: also 0.75 (-2.0) and 0.85 (-1.2)
  expected = {
      "r": stats.pearsonr(true, pred)[0],
      "rmse": np.sqrt(np.mean(d ** 2)),
      "slope": fit.slope, "intercept": fit.intercept, "r2": fit.rvalue ** 2,
      "ba_mean": d.mean(), "ba_sd": d.std(ddof=1),
      "ba_loa_low": d.mean() - 1.96 * d.std(ddof=1),
      "ba_loa_high": d.mean() + 1.96 * d.std(ddof=1),
      "auc": skm.roc_auc_score(porosis, -t_pred),
      "sens_osteoporosis": skm.recall_score(porosis, t_pred <= -2.5),
      "spec_osteoporosis": skm.recall_score(porosis, t_pred <= -2.5, pos_label=False),
  }
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, abs=1e-9), key
  # Hand values of the table above, so the references are pinned too.
  assert got["rmse"] == pytest.approx(np.sqrt(0.05085625 / 8), abs=1e-9)
  assert got["ba_mean"] == pytest.approx(0.1825 / 8, abs=1e-12)
  assert (got["sens_osteoporosis"], got["spec_osteoporosis"]) == (1 / 3, 1.0)
  # T-scores use the reference table, sex by sex.
  pairs = report.vertebra_pairs(report.validate_predictions(frame), "L1",
                                tscore.load_reference(str(ref)))
  np.testing.assert_allclose(pairs.true_t, t_true, atol=1e-12)
  np.testing.assert_allclose(pairs.pred_t, t_pred, atol=1e-12)


def test_evaluate_metrics_match_a_recomputation_from_its_predictions(tiny_run, cohort_dir):
  config, workdir, _ = tiny_run
  out = workdir / "report_values"
  evaluation.evaluate(config, str(workdir), split="test", bootstrap=0, out_dir=str(out))
  preds = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
  labels = pd.read_csv(cohort_dir / "labels.csv", dtype={"patient_id": str}).set_index("image")
  # Truth is the labels.csv row of the same image (no shuffled rows).
  for v in VERTEBRAE:
    np.testing.assert_allclose(preds[f"true_{v}"], labels.loc[preds.image, v].to_numpy(float),
                               atol=1e-5, equal_nan=True)
  assert (preds.patient_id.to_numpy() == labels.loc[preds.image, "patient_id"].to_numpy()).all()
  # Predictions are in g/cm2: de-standardised with the training statistics (an
  # untrained-ish model predicts near the training mean, not near 0 or the SD).
  train_stats = json.loads((workdir / "run.json").read_text())["target_stats"]["L1"]
  assert abs(preds.pred_L1.mean() - train_stats["mean"]) < train_stats["std"]
  got = json.loads((out / "metrics.json").read_text())["L1"]
  ok = np.isfinite(preds.true_L1)
  true, pred = preds.true_L1[ok].to_numpy(), preds.pred_L1[ok].to_numpy()
  assert got["n"] == ok.sum() > 2
  # metrics.json is computed before predictions.csv is rounded to 5 decimals.
  assert got["rmse"] == pytest.approx(np.sqrt(np.mean((pred - true) ** 2)), abs=2e-5)
  assert got["ba_mean"] == pytest.approx(np.mean(pred - true), abs=2e-5)
  if np.ptp(pred) > 1e-3:
    assert got["r"] == pytest.approx(stats.pearsonr(true, pred)[0], abs=5e-3)
  ref = tscore.load_reference()
  t_true = np.array([(b - ref.mean_sd(s, "L1")[0]) / ref.mean_sd(s, "L1")[1]
                     for b, s in zip(true, preds.sex[ok])])
  assert got["n_osteoporosis"] == int((t_true <= -2.5).sum())
  # Baseline: the age+sex model of the training split, as its own report.
  base = pd.read_csv(out / "predictions_age_sex.csv")
  manifest = pd.read_csv(config.data.dir + "/manifest.csv")
  train = manifest[(manifest.status == "ok") & (manifest.split == "train")]
  np.testing.assert_allclose(base.pred_L1, evaluation.age_sex_baseline(train, preds).pred_L1,
                             atol=2e-5)
  metrics = json.loads((out / "metrics.json").read_text())
  bt, bp = base.true_L1[ok].to_numpy(), base.pred_L1[ok].to_numpy()
  assert metrics["age_sex_baseline"]["L1"]["rmse"] == pytest.approx(
      np.sqrt(np.mean((bp - bt) ** 2)), abs=2e-5)
