"""Split-conformal intervals keep their coverage guarantee; calibration and the
validation-chosen screening threshold match hand computations."""

import math

import numpy as np
import pytest
from scipy import stats

from bmdjax import calibration, conformal, screening


def test_quantile_is_the_ceil_n_plus_1_order_statistic():
  r = np.arange(1, 20)  # n = 19: ceil(20 * 0.9) = 18th smallest
  assert conformal.quantile(r, 0.9) == 18
  assert conformal.quantile(-r, 0.9) == 18  # absolute residuals
  assert conformal.quantile(r[:8], 0.9) == math.inf  # n=8 < 9: cannot promise 90%
  with pytest.raises(ValueError, match="level"):
    conformal.quantile(r, 90)


@pytest.mark.parametrize("noise", ["normal", "heavy"])
def test_coverage_over_many_seeds_within_guarantee(noise):
  """Marginal coverage averaged over 400 calibration/test draws lies in
  [k/(n+1), (k+1)/(n+1)] up to Monte-Carlo error (4 SE), whatever the noise."""
  n_cal, n_test, level, seeds = 150, 300, 0.9, 400
  cover = []
  for seed in range(seeds):
    rng = np.random.default_rng(seed)
    draw = (lambda n: rng.normal(0, 0.1, n)) if noise == "normal" else \
        (lambda n: 0.05 * rng.standard_t(2, n))
    pred_cal, pred_test = rng.uniform(0.6, 1.2, n_cal), rng.uniform(0.6, 1.2, n_test)
    true_cal, true_test = pred_cal + draw(n_cal), pred_test + draw(n_test)
    q = conformal.quantile(true_cal - pred_cal, level)
    lo, hi = conformal.interval(pred_test, q)
    cover.append(np.nanmean(conformal.covered(true_test, lo, hi)))
  low, high = conformal.guarantee(n_cal, level)
  se = np.std(cover) / np.sqrt(seeds)
  assert low - 4 * se <= np.mean(cover) <= high + 4 * se, (np.mean(cover), low, high)
  # Coverage per draw is Beta(k, n + 1 - k)-distributed; the spread matches too.
  k = math.ceil((n_cal + 1) * level)
  beta_sd = stats.beta(k, n_cal + 1 - k).std()
  assert np.std(cover) == pytest.approx(np.sqrt(beta_sd ** 2 + level * (1 - level) / n_test),
                                        rel=0.25)


def test_covered_marks_unknown_truth_nan():
  c = conformal.covered([1.0, np.nan, 3.0], [0.5, 0.0, 3.5], [1.5, 1.0, 4.0])
  assert c[0] == 1.0 and np.isnan(c[1]) and c[2] == 0.0


def test_calibration_line_against_numpy():
  rng = np.random.default_rng(1)
  pred = rng.uniform(0.6, 1.2, 300)
  true = 0.1 + 1.3 * pred + rng.normal(0, 0.02, 300)
  line = calibration.line(true, pred)
  slope, intercept = np.polyfit(pred, true, 1)
  assert line["slope"] == pytest.approx(slope) and line["intercept"] == pytest.approx(intercept)
  assert line["citl"] == pytest.approx(true.mean() - pred.mean())
  recal = calibration.fit(true, pred)
  after = calibration.line(true, calibration.apply(pred, recal))
  assert after["slope"] == pytest.approx(1.0) and after["citl"] == pytest.approx(0.0, abs=1e-12)
  dec = calibration.deciles(true, pred)
  assert len(dec) == 10 and sum(d["n"] for d in dec) == 300
  assert [d["pred"] for d in dec] == sorted(d["pred"] for d in dec)


def test_screening_threshold_reaches_target_sensitivity_and_no_more():
  pos = np.array([1] * 10 + [0] * 10, bool)
  pred_t = np.r_[np.linspace(-4, -1.3, 10), np.linspace(-2, 1, 10)]
  thr = screening.choose_threshold(pos, pred_t, 0.9)
  assert thr == pytest.approx(pred_t[8])  # 9 of 10 positives: the 9th lowest
  r = screening.rates(pos, pred_t <= thr)
  assert r["sensitivity"] == 0.9
  # Any lower threshold misses the target.
  assert screening.rates(pos, pred_t <= thr - 1e-9)["sensitivity"] < 0.9
  assert r["tp"] + r["fn"] == 10 and r["ppv"] == r["tp"] / (r["tp"] + r["fp"])
  assert screening.choose_threshold(np.zeros(5, bool), np.zeros(5)) is None


@pytest.mark.parametrize("n_pos", [7, 10, 14, 23])
def test_screening_threshold_is_the_most_specific_reaching_the_target(n_pos):
  rng = np.random.default_rng(n_pos)
  pos = np.r_[np.ones(n_pos, bool), np.zeros(60, bool)]
  pred_t = np.r_[rng.normal(-3, 0.6, n_pos), rng.normal(-1, 1, 60)]
  thr = screening.choose_threshold(pos, pred_t, 0.9)
  assert screening.rates(pos, pred_t <= thr)["sensitivity"] >= 0.9
  below = np.max(pred_t[pred_t < thr])
  assert screening.rates(pos, pred_t <= below)["sensitivity"] < 0.9


def test_screening_intervals_cover_the_estimate():
  rng = np.random.default_rng(0)
  pos = rng.uniform(size=400) < 0.2
  flag = np.where(pos, rng.uniform(size=400) < 0.9, rng.uniform(size=400) < 0.3)
  r = screening.rates_with_ci(pos, flag, np.arange(400), bootstrap=300)
  for k in screening.KEYS:
    lo, hi = r["ci"][k]
    assert lo <= r[k] <= hi and hi - lo < 0.3
