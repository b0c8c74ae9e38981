"""bmdjax.metrics against independent references (scipy, sklearn, numpy)."""

import json
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from bmdjax import metrics

TOL = 1e-9


def _data(n=400, seed=0):
  """BMD-like truth/prediction rounded so that ties are common."""
  rng = np.random.default_rng(seed)
  true = np.round(rng.normal(0.95, 0.15, n), 2)
  pred = np.round(0.8 * true + 0.2 + rng.normal(0, 0.07, n), 2)
  # T-scores with a single reference, rounded to 1 decimal: many ties.
  true_t = np.round((true - 1.0) / 0.12, 1)
  pred_t = np.round((pred - 1.0) / 0.12, 1)
  return metrics.Pairs(true, pred, true_t, pred_t)


def test_data_has_ties():
  p = _data()
  assert len(np.unique(p.pred_t)) < len(p.pred_t) / 4


def test_pearson_r_matches_scipy():
  p = _data()
  assert metrics.pearson_r(p.true, p.pred) == pytest.approx(
      stats.pearsonr(p.true, p.pred).statistic, abs=TOL)


def test_linear_fit_matches_linregress_of_pred_on_true():
  p = _data()
  ref = stats.linregress(p.true, p.pred)  # x = truth, y = prediction
  fit = metrics.linear_fit(p.true, p.pred)
  assert fit['slope'] == pytest.approx(ref.slope, abs=TOL)
  assert fit['intercept'] == pytest.approx(ref.intercept, abs=TOL)
  assert fit['r2'] == pytest.approx(ref.rvalue ** 2, abs=TOL)


def test_rmse_matches_sklearn():
  p = _data()
  assert metrics.rmse(p.true, p.pred) == pytest.approx(
      np.sqrt(skm.mean_squared_error(p.true, p.pred)), abs=TOL)


def test_bland_altman_matches_numpy():
  p = _data()
  d = p.pred - p.true
  ba = metrics.bland_altman(p.true, p.pred)
  sd = np.sqrt(np.sum((d - d.mean()) ** 2) / (len(d) - 1))
  assert ba['ba_mean'] == pytest.approx(d.mean(), abs=TOL)
  assert ba['ba_sd'] == pytest.approx(sd, abs=TOL)
  assert ba['ba_loa_low'] == pytest.approx(d.mean() - 1.96 * sd, abs=TOL)
  assert ba['ba_loa_high'] == pytest.approx(d.mean() + 1.96 * sd, abs=TOL)


def test_average_ranks_match_scipy():
  x = np.round(np.random.default_rng(1).normal(size=300), 1)
  np.testing.assert_allclose(metrics.average_ranks(x), stats.rankdata(x))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
  p = _data(seed=seed)
  labels = p.true_t <= -2.5
  assert 0 < labels.sum() < len(labels)
  assert metrics.roc_auc(labels, -p.pred_t) == pytest.approx(
      skm.roc_auc_score(labels, -p.pred_t), abs=TOL)


def test_roc_curve_matches_sklearn():
  p = _data()
  labels = p.true_t <= -2.5
  fpr, tpr, thr = metrics.roc_curve(labels, -p.pred_t)
  rf, rt, rthr = skm.roc_curve(labels, -p.pred_t, drop_intermediate=False)
  np.testing.assert_allclose(fpr, rf, atol=TOL)
  np.testing.assert_allclose(tpr, rt, atol=TOL)
  np.testing.assert_allclose(thr[1:], rthr[1:])
  assert np.isinf(thr[0])


@pytest.mark.parametrize('cut,truth_cut', [(-2.5, -2.5), (-1.0, -1.0)])
def test_sens_spec_match_confusion_matrix(cut, truth_cut):
  p = _data()
  labels = p.true_t <= truth_cut
  flagged = p.pred_t <= cut
  sens, spec = metrics.sens_spec(labels, flagged)
  tn, fp, fn, tp = skm.confusion_matrix(labels, flagged).ravel()
  assert sens == pytest.approx(tp / (tp + fn), abs=TOL)
  assert spec == pytest.approx(tn / (tn + fp), abs=TOL)
  assert sens == pytest.approx(skm.recall_score(labels, flagged), abs=TOL)
  assert spec == pytest.approx(
      skm.recall_score(labels, flagged, pos_label=False), abs=TOL)


def test_lowest_fraction_is_a_threshold_on_the_roc_curve():
  p = _data()
  flags = metrics.lowest_fraction(p.pred_t, 0.1)
  assert flags.sum() >= np.ceil(0.1 * len(p.pred_t))
  cut = p.pred_t[flags].max()
  np.testing.assert_array_equal(flags, p.pred_t <= cut)
  # Without ties exactly ceil(10%) rows are flagged.
  x = np.random.default_rng(3).normal(size=95)
  assert metrics.lowest_fraction(x, 0.1).sum() == 10
  assert metrics.lowest_fraction(x, 0.2).sum() == 19


def test_vertebra_metrics_drops_nan_rows_and_counts_them():
  p = _data()
  true = p.true.copy()
  pred_t = p.pred_t.copy()
  true[:7] = np.nan
  pred_t[10:13] = np.nan
  out = metrics.vertebra_metrics(metrics.Pairs(true, p.pred, p.true_t, pred_t))
  keep = np.ones(len(true), bool)
  keep[:7] = keep[10:13] = False
  ref = metrics.vertebra_metrics(metrics.Pairs(*(a[keep] for a in p)))
  assert out['n'] == keep.sum() == len(true) - 10
  assert out == ref
  assert set(out) == set(metrics.METRIC_KEYS)


def test_vertebra_metrics_values():
  p = _data()
  out = metrics.vertebra_metrics(p)
  labels = p.true_t <= -2.5
  assert out['auc'] == pytest.approx(skm.roc_auc_score(labels, -p.pred_t))
  assert out['sens_osteopenia'] == pytest.approx(
      skm.recall_score(p.true_t < -1, p.pred_t < -1))  # WHO: T = -1 is normal
  flags = metrics.lowest_fraction(p.pred_t, 0.2)
  assert out['spec_last20'] == pytest.approx(
      skm.recall_score(labels, flags, pos_label=False))
  assert out['n_osteoporosis'] == labels.sum()


def test_one_class_gives_none_and_warns():
  p = _data()
  true_t = np.zeros_like(p.true_t)  # nobody has osteoporosis or osteopenia
  with pytest.warns(metrics.UndefinedMetricWarning) as rec:
    out = metrics.vertebra_metrics(metrics.Pairs(p.true, p.pred, true_t,
                                                 p.pred_t), 'L1')
  messages = [str(w.message) for w in rec]
  assert 'L1: auc undefined: only one class in the ground truth (no ' \
         f'positives among {len(true_t)} rows)' in messages
  # Metrics undefined for the same reason share one merged warning.
  assert ('L1: sensitivity (osteoporosis), sensitivity (osteopenia), '
          'sensitivity (last10), sensitivity (last20) undefined: no '
          'positives in the ground truth') in messages
  assert out['auc'] is None
  assert out['sens_osteoporosis'] is None
  assert out['spec_osteoporosis'] is not None
  assert out['r'] is not None
  json.dumps(out, allow_nan=False)
  with pytest.warns(metrics.UndefinedMetricWarning, match='only one class'):
    assert metrics.roc_curve(np.ones(5, bool), np.arange(5.)) is None


def test_constant_predictions_give_none_r_and_warn():
  p = _data()
  pred = np.full_like(p.pred, 0.9)
  with pytest.warns(metrics.UndefinedMetricWarning) as rec:
    out = metrics.vertebra_metrics(
        metrics.Pairs(p.true, pred, p.true_t, np.full_like(p.pred_t, -0.8)))
  messages = [str(w.message) for w in rec]
  assert 'r, r2 undefined: predictions constant' in messages
  assert out['r'] is None and out['r2'] is None
  assert out['slope'] == pytest.approx(0.0, abs=TOL)
  assert out['rmse'] == pytest.approx(np.sqrt(np.mean((pred - p.true) ** 2)))
  json.dumps(out, allow_nan=False)


def test_fewer_than_two_rows_gives_none_and_warns():
  p = _data()
  one = metrics.Pairs(*(a[:1] for a in p))
  with pytest.warns(metrics.UndefinedMetricWarning, match='needs >= 2 rows'):
    out = metrics.vertebra_metrics(one, 'L3')
  assert out['n'] == 1
  assert all(out[k] is None for k in metrics.METRIC_KEYS
             if k not in metrics.COUNT_KEYS)
  json.dumps(out, allow_nan=False)
  empty = metrics.Pairs(*(np.full(3, np.nan) for _ in p))
  with pytest.warns(metrics.UndefinedMetricWarning):
    assert metrics.vertebra_metrics(empty)['n'] == 0
  with pytest.warns(metrics.UndefinedMetricWarning):
    assert metrics.pearson_r([1.0], [2.0]) is None


def test_average_metrics_is_mean_and_none_if_any_undefined():
  per = {'L1': dict.fromkeys(metrics.METRIC_KEYS, 1.0),
         'L2': dict.fromkeys(metrics.METRIC_KEYS, 2.0)}
  per['L2']['auc'] = None
  with pytest.warns(metrics.UndefinedMetricWarning, match='undefined for L2'):
    avg = metrics.average_metrics(per)
  assert avg['r'] == 1.5 and avg['auc'] is None


# ---------------------------------------------------------------- bootstrap


def test_weighted_metrics_equal_repeated_rows():
  p = _data(n=120)
  rng = np.random.default_rng(5)
  w = rng.integers(0, 4, size=(3, 120)).astype(float)
  got = metrics.weighted_metrics(w, p)
  for b in range(3):
    rep = metrics.Pairs(*(np.repeat(a, w[b].astype(int)) for a in p))
    ref = metrics.vertebra_metrics(rep)
    for k in metrics.CI_KEYS:
      assert got[k][b] == pytest.approx(ref[k], abs=1e-9), k


def test_weighted_metrics_with_unit_weights_equal_point_estimates():
  p = _data()
  got = metrics.weighted_metrics(np.ones((1, len(p.true))), p)
  ref = metrics.vertebra_metrics(p)
  for k in metrics.CI_KEYS:
    assert got[k][0] == pytest.approx(ref[k], abs=1e-9), k


def test_patient_weights_move_patients_together():
  ids = np.array(['a', 'b', 'a', 'c', 'b', 'a'])
  blocks = list(metrics.patient_weights(ids, 600, seed=3))
  w = np.concatenate(blocks)
  assert w.shape == (600, 6)
  np.testing.assert_array_equal(w[:, 0], w[:, 2])
  np.testing.assert_array_equal(w[:, 0], w[:, 5])
  np.testing.assert_array_equal(w[:, 1], w[:, 4])
  # Each resample draws 3 patients.
  np.testing.assert_array_equal(w[:, [0, 1, 3]].sum(1), 3)


def _ci(pairs, ids, n_boot=300, seed=0):
  s = metrics.bootstrap_samples(ids, {'L1': pairs}, n_boot, seed)['L1']
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', metrics.UndefinedMetricWarning)
    return metrics.intervals(s)


def test_bootstrap_reproducible_and_contains_estimate():
  p = _data()
  ids = np.arange(len(p.true))
  a, b = _ci(p, ids, seed=7), _ci(p, ids, seed=7)
  assert a == b
  assert _ci(p, ids, seed=8) != a
  point = metrics.vertebra_metrics(p)
  for k in ('r', 'rmse', 'auc', 'slope', 'ba_mean', 'sens_osteoporosis'):
    assert a[k][0] <= point[k] <= a[k][1], k
    assert a[k][0] < a[k][1]


def test_bootstrap_resamples_patients_not_rows():
  p = _data(n=200)
  ids = np.array([f'p{i}' for i in range(200)])
  single = _ci(p, ids)
  # Every patient twice (two identical images): the same patients are drawn
  # with the same seed and r/rmse/auc are invariant to doubling weights, so
  # the intervals are unchanged. Row resampling would narrow them.
  doubled = metrics.Pairs(*(np.r_[a, a] for a in p))
  same = _ci(doubled, np.r_[ids, ids])
  for k in ('r', 'rmse', 'auc'):
    assert same[k] == pytest.approx(single[k], abs=1e-12)
  rows = _ci(doubled, np.arange(400))
  assert rows['r'][1] - rows['r'][0] < 0.85 * (same['r'][1] - same['r'][0])


def test_bootstrap_is_fast():
  import time
  p = _data(n=2000)
  t = time.time()
  metrics.bootstrap_samples(np.arange(2000) // 2, {'L1': p}, 1000, 0)
  assert time.time() - t < 5


def test_interval_of_undefined_samples_is_none_and_warns():
  warn = metrics.UndefinedMetricWarning
  with pytest.warns(warn, match='in every one of 10 bootstrap'):
    assert metrics.percentile_interval(np.full(10, np.nan), what='auc') is None
  with pytest.warns(warn, match='in 2 of 10 bootstrap'):
    ci = metrics.percentile_interval(np.r_[np.arange(8.), np.nan, np.nan])
  assert ci == [pytest.approx(0.175), pytest.approx(6.825)]


def test_parse_age_bands():
  assert metrics.parse_age_bands('40,50,60') == ((40, 50), (50, 60))
  with pytest.raises(ValueError, match='increasing'):
    metrics.parse_age_bands('50,40')


def test_evaluate_vertebrae_per_vertebra_and_avg():
  pairs = {'L1': _data(seed=0), 'L3': _data(seed=1)}
  ids = np.arange(len(pairs['L1'].true)) // 2
  out = metrics.evaluate_vertebrae(pairs, ids, bootstrap=100, seed=0)
  assert set(out) == {'L1', 'L3', 'avg'}
  assert out['avg']['rmse'] == pytest.approx(
      (out['L1']['rmse'] + out['L3']['rmse']) / 2)
  assert set(out['avg']['ci']) == set(metrics.CI_KEYS)
  lo, hi = out['avg']['ci']['rmse']
  assert lo <= out['avg']['rmse'] <= hi
  assert metrics.evaluate_vertebrae(pairs)['L1']['ci'] is None
  json.dumps(out, allow_nan=False)
