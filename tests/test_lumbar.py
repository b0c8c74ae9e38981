"""ISCD L1-L4 rules on hand-made cases, and the equal-weight combination."""

import numpy as np
import pytest

from bmdjax import lumbar, tscore

NAN = float("nan")


@pytest.mark.parametrize("t, kept", [
    ([-1.0, -1.2, -0.9, -1.1], [1, 1, 1, 1]),      # all within 1.0 of neighbours
    ([-1.0, -1.2, -0.9, +0.5], [1, 1, 1, 0]),      # L4 1.4 above L3 (sclerosis)
    ([-3.5, -2.0, -2.2, -2.1], [0, 1, 1, 1]),      # L1 1.5 below L2 (fracture-free low)
    ([-2.0, -2.0, -0.5, -2.1], [1, 1, 0, 1]),      # middle vertebra out, L2-L4 then adjacent
    ([-2.0, -1.0, -2.0, -1.0], [1, 1, 1, 1]),      # exactly 1.0 apart: kept (rule is > 1.0)
    ([-2.0, NAN, NAN, -0.5], [0, 0, 0, 0]),        # two left that disagree: no result
    ([-2.0, NAN, NAN, -1.5], [1, 0, 0, 1]),        # two evaluable, agree
    ([-2.0, NAN, NAN, NAN], [1, 0, 0, 0]),         # one evaluable (combine: no result)
])
def test_iscd_included(t, kept):
  inc = lumbar.iscd_included(t)
  assert inc.tolist() == [bool(k) for k in kept]


def test_two_vertebra_minimum_gives_no_result():
  ref = tscore.load_reference()
  (m1, s1), (m4, s4) = ref.mean_sd("F", "L1"), ref.mean_sd("F", "L4")
  one = lumbar.combine([[m1, NAN, NAN, NAN]], ["F"], ref)
  assert np.isnan(one["t"][0]) and np.isnan(one["bmd"][0]) and one["label"][0] is None
  # L1 at T -2.0, L4 at T -0.5: 1.5 apart with nothing between: no category.
  split = lumbar.combine([[m1 - 2 * s1, NAN, NAN, m4 - 0.5 * s4]], ["F"], ref)
  assert np.isnan(split["t"][0])
  reasons = lumbar.exclusion_reasons([-2.0, NAN, NAN, -0.5], split["included"][0])
  assert any("fewer than 2" in r for r in reasons)


def test_combination_hand_computed():
  ref = tscore.load_reference()
  stats = [ref.mean_sd("M", v) for v in tscore.VERTEBRAE]
  t = [-1.0, -1.4, -0.6, +1.0]  # L4 1.6 above L3: excluded
  bmd = [m + x * s for (m, s), x in zip(stats, t)]
  out = lumbar.combine([bmd], ["M"], ref)
  assert out["included"][0].tolist() == [True, True, True, False]
  assert out["label"][0] == "L1-L3"
  assert out["bmd"][0] == pytest.approx(np.mean(bmd[:3]))
  mean = np.mean([m for m, _ in stats[:3]])
  sd = np.mean([s for _, s in stats[:3]])
  assert out["t"][0] == pytest.approx((np.mean(bmd[:3]) - mean) / sd)


def test_label():
  assert lumbar.label([1, 1, 1, 1]) == "L1-L4"
  assert lumbar.label([0, 1, 1, 1]) == "L2-L4"
  assert lumbar.label([1, 0, 1, 1]) == "L1,L3,L4"


def test_no_rows_give_empty_results():
  """An empty stratum (e.g. no men over 80 in a small test split) is no error."""
  out = lumbar.combine(np.zeros((0, 4)), np.array([], dtype=object))
  assert len(out["bmd"]) == len(out["t"]) == 0 and out["included"].shape == (0, 4)
