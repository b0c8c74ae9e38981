"""Clinical thresholds exactly at T = -2.5 and T = -1.0, on the truth and the
prediction side, against sklearn and the WHO definition (TRS 843, 1994):
osteoporosis T <= -2.5, osteopenia -2.5 < T < -1, normal T >= -1.

Every row below sits on or next to a threshold, so moving a boundary by one
comparison (<= vs <) changes a count, a sensitivity or a specificity.
"""

import numpy as np
import pytest
from sklearn import metrics as skm

from bmdjax import metrics, tscore

# (truth T, predicted T): both sides hit -2.5 and -1.0 exactly.
ROWS = np.array([
    (-2.5, -2.5),    # osteoporosis on both sides, at the boundary
    (-1.0, -1.0),    # normal on both sides, at the boundary
    (-3.0, -2.0),    # missed osteoporosis, flagged osteopenia
    (-2.0, -2.6),    # false osteoporosis alarm
    (0.0, 0.5),
    (-1.5, -0.5),    # missed osteopenia
    (-0.5, -1.5),    # false osteopenia alarm
    (-2.4, -1.0),    # osteopenia truth, prediction exactly -1.0: not flagged
    (-2.6, -2.5),    # osteoporosis, prediction exactly -2.5: flagged
    (-1.0, -2.5),    # truth exactly -1.0 (normal), flagged everything
    (-2.5, -1.0),    # truth exactly -2.5, prediction exactly -1.0
    (-0.99, -1.01),
])


def _pairs(rows=ROWS):
  true_t, pred_t = rows[:, 0], rows[:, 1]
  # BMD in g/cm2 for the regression metrics: any affine map of T.
  return metrics.Pairs(true=1.0 + 0.1 * true_t, pred=1.0 + 0.1 * pred_t,
                       true_t=true_t, pred_t=pred_t)


def _who(t):
  """The WHO rule written out independently of the code under test."""
  return np.array(["osteoporosis" if x <= -2.5 else "osteopenia" if x < -1.0 else "normal"
                   for x in t], dtype=object)


def _sens_spec(truth, flagged):
  return (skm.recall_score(truth, flagged, pos_label=True),
          skm.recall_score(truth, flagged, pos_label=False))


def test_who_category_at_the_boundaries():
  eps = 1e-9
  cases = {-2.5: "osteoporosis", -2.5 - eps: "osteoporosis", -2.5 + eps: "osteopenia",
           -1.0: "normal", -1.0 - eps: "osteopenia", -1.0 + eps: "normal",
           -10.0: "osteoporosis", 3.0: "normal"}
  for t, expected in cases.items():
    assert tscore.who_category(t) == expected, t
  t = np.array(list(cases) + [np.nan])
  got = tscore.who_category(t)
  assert list(got[:-1]) == list(cases.values()) and got[-1] is None
  np.testing.assert_array_equal(got[:-1], _who(t[:-1]))


def test_who_category_of_t_scores_computed_from_bmd():
  ref = tscore.Reference({("F", "L1"): (1.0, 0.125)}, "hand")
  # 0.6875 = 1 - 2.5 * 0.125 and 0.875 = 1 - 0.125 are exact in binary.
  t = tscore.t_score([0.6875, 0.875, 0.6874, 0.8749], "F", "L1", ref)
  np.testing.assert_array_equal(t[:2], [-2.5, -1.0])
  assert list(tscore.who_category(t)) == ["osteoporosis", "normal", "osteoporosis",
                                          "osteopenia"]


def test_vertebra_metrics_at_the_boundaries_match_sklearn():
  pairs = _pairs()
  out = metrics.vertebra_metrics(pairs)
  true_t, pred_t = ROWS[:, 0], ROWS[:, 1]
  truth, pred = _who(true_t), _who(pred_t)
  porosis, penia = truth == "osteoporosis", truth != "normal"
  flag_porosis, flag_penia = pred == "osteoporosis", pred != "normal"
  assert out["n"] == len(ROWS)
  assert out["n_osteoporosis"] == porosis.sum() == 4
  assert out["n_osteopenia"] == penia.sum() == 7
  sens, spec = _sens_spec(porosis, flag_porosis)
  assert out["sens_osteoporosis"] == pytest.approx(sens, abs=1e-12)
  assert out["spec_osteoporosis"] == pytest.approx(spec, abs=1e-12)
  sens, spec = _sens_spec(penia, flag_penia)
  assert out["sens_osteopenia"] == pytest.approx(sens, abs=1e-12)
  assert out["spec_osteopenia"] == pytest.approx(spec, abs=1e-12)
  # Hand counts of the same table, so that sklearn's reading is pinned too.
  assert (out["sens_osteoporosis"], out["spec_osteoporosis"]) == pytest.approx((2 / 4, 6 / 8))
  assert (out["sens_osteopenia"], out["spec_osteopenia"]) == pytest.approx((4 / 7, 2 / 5))
  assert out["auc"] == pytest.approx(skm.roc_auc_score(porosis, -pred_t), abs=1e-12)


@pytest.mark.parametrize("side", ["truth", "prediction"])
@pytest.mark.parametrize("boundary", [-2.5, -1.0])
def test_a_value_exactly_at_a_boundary_counts_on_the_who_side(side, boundary):
  """One row moves from just inside to exactly on the boundary: only the
  inclusive side (<= -2.5, < -1.0) may count it as diseased."""
  base = np.array([(-3.0, -3.0), (0.0, 0.0), (-1.8, -1.8), (0.5, 0.5), (-2.0, 0.0)])
  col = 0 if side == "truth" else 1
  results = []
  for t in (boundary - 1e-6, boundary, boundary + 1e-6):
    rows = base.copy()
    rows[-1, col] = t
    out = metrics.vertebra_metrics(_pairs(rows))
    truth, pred = _who(rows[:, 0]), _who(rows[:, 1])
    key = "osteoporosis" if boundary == -2.5 else "osteopenia"
    pos = truth == "osteoporosis" if key == "osteoporosis" else truth != "normal"
    flag = pred == "osteoporosis" if key == "osteoporosis" else pred != "normal"
    assert out[f"n_{key}"] == pos.sum()
    sens, spec = _sens_spec(pos, flag)
    assert out[f"sens_{key}"] == pytest.approx(sens) and out[f"spec_{key}"] == pytest.approx(spec)
    results.append((out[f"n_{key}"], out[f"sens_{key}"], out[f"spec_{key}"]))
  exact_is_diseased = boundary == -2.5
  assert (results[1] == results[0]) == exact_is_diseased
  assert (results[1] == results[2]) == (not exact_is_diseased)


def test_bootstrap_weights_of_one_reproduce_the_boundary_metrics():
  """The weighted (bootstrap) path applies the same thresholds."""
  pairs = _pairs()
  direct = metrics.vertebra_metrics(pairs)
  weighted = metrics.weighted_metrics(np.ones((1, len(ROWS))), pairs)
  for key in metrics.CI_KEYS:
    assert weighted[key][0] == pytest.approx(direct[key], abs=1e-9), key


def test_stratum_counts_osteoporosis_at_the_boundary():
  out = metrics.stratum_metrics(_pairs())
  assert out["n_osteoporosis"] == 4 and out["n"] == len(ROWS)
  porosis = ROWS[:, 0] <= -2.5
  assert out["auc"] == pytest.approx(skm.roc_auc_score(porosis, -ROWS[:, 1]))


def test_the_two_modules_share_the_thresholds():
  assert metrics.OSTEOPOROSIS_T == tscore.OSTEOPOROSIS_T == -2.5
  assert metrics.OSTEOPENIA_T == tscore.OSTEOPENIA_T == -1.0
