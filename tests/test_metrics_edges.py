"""Edge cases of the screening metrics that mutation testing found unguarded
(docs/mutation.md): 0/1 integer and column-vector inputs, tiny and empty
inputs, and the exact wording of undefined-metric warnings."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from bmdjax import metrics

LABELS = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.1, 0.4, 0.8, 0.4, 0.3, 0.7, 0.2, 0.5, 0.05])


def test_integer_and_column_inputs_mean_the_same_as_booleans():
  flags = SCORES >= 0.4
  want = (skm.recall_score(LABELS, flags), skm.recall_score(LABELS, flags, pos_label=0))
  for labels in (LABELS, LABELS.astype(bool), LABELS.reshape(-1, 1), list(LABELS)):
    for flagged in (flags, flags.astype(int), flags.reshape(-1, 1)):
      assert metrics.sens_spec(labels, flagged) == pytest.approx(want)
    assert metrics.roc_auc(labels, SCORES) == pytest.approx(skm.roc_auc_score(LABELS, SCORES))
    assert metrics.roc_auc(labels, SCORES.reshape(-1, 1)) == pytest.approx(
        skm.roc_auc_score(LABELS, SCORES))


def test_lowest_fraction_small_and_empty():
  assert metrics.lowest_fraction([3.0], 0.1).tolist() == [True]
  empty = metrics.lowest_fraction([], 0.2)
  assert empty.shape == (0,) and empty.dtype == bool
  assert metrics.lowest_fraction([5.0, 1.0, 4.0, 2.0, 3.0], 0.1).tolist() == [
      False, True, False, False, False]
  rng = np.random.default_rng(0)
  for n in range(1, 60):
    v = rng.permutation(n).astype(float)
    for frac in (0.1, 0.2, 0.5):
      k = max(1, int(np.ceil(frac * n - 1e-9)))
      np.testing.assert_array_equal(metrics.lowest_fraction(v, frac), v < k)


def _warned(fn, *args, **kwargs):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    out = fn(*args, **kwargs)
  return out, [str(w.message) for w in caught]


def test_undefined_metrics_say_which_and_why():
  out, msgs = _warned(metrics.rmse, [], [], 'L1')
  assert out is None and msgs == ['L1: rmse undefined: no rows']
  out, msgs = _warned(metrics.rmse, [1.0], [1.5])
  assert out == pytest.approx(0.5) and msgs == []
  (sens, spec), msgs = _warned(metrics.sens_spec, [True, True], [True, False],
                               'osteoporosis', 'L2')
  assert sens == 0.5 and spec is None
  assert msgs == ['L2: specificity (osteoporosis) undefined: no negatives in the ground truth']
  (sens, spec), msgs = _warned(metrics.sens_spec, [False, False], [True, False])
  assert sens is None and spec == 0.5
  assert msgs == ['sensitivity undefined: no positives in the ground truth']
