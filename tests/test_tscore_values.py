"""T-scores against hand values, and reference-table checks that must hold
row by row (mutation testing found these unguarded; docs/mutation.md)."""

import numpy as np
import pytest

from bmdjax import tscore


def test_t_scores_by_hand_with_the_shipped_table():
  ref = tscore.load_reference()
  # data_prep/data/tscore_reference.csv: M L1 0.999 +- 0.123, F L1 0.960 +- 0.128,
  # F L3 1.100 +- 0.127.
  got = tscore.t_score([0.999, 0.6915, 0.960, 1.100], ['M', 'M', 'F', 'female'],
                       ['L1', 'L1', 'l1', 'L3'], ref)
  np.testing.assert_allclose(got, [0.0, -2.5, 0.0, 0.0], atol=1e-12)
  assert tscore.t_score(0.704, 'F', 'L1', ref) == pytest.approx((0.704 - 0.960) / 0.128)
  assert isinstance(tscore.t_score(0.704, 'F', 'L1', ref), float)  # scalar in, float out
  # Broadcasting: one sex and vertebra for many BMDs; NaN BMD stays NaN.
  t = tscore.t_score(np.array([[0.96, np.nan]]), 'F', 'L1', ref)
  assert t.shape == (1, 2) and t[0, 0] == 0.0 and np.isnan(t[0, 1])


def test_source_comment_without_a_space(tmp_path):
  path = tmp_path / 'ref.csv'
  path.write_text('#source:GE Lunar, site Y\nsex, vertebra, mean, sd\nF, L2, 1.0, 0.125\n')
  ref = tscore.load_reference(path)
  assert ref.source == 'GE Lunar, site Y'
  assert tscore.t_score(0.75, 'F', 'L2', ref) == -2.0
  nameless = tmp_path / 'plain.csv'
  nameless.write_text('# a table\nsex,vertebra,mean,sd\nF,L2,1.0,0.125\n')
  assert tscore.load_reference(nameless).source == str(nameless)


def test_every_bad_row_is_reported_at_once(tmp_path):
  path = tmp_path / 'ref.csv'
  path.write_text('sex,vertebra,mean,sd\nM,L1,1.0,0\nX,L1,1.0,0.1\nM,L9,1.0,0.1\n'
                  'M,L2,1.0,0.1\nM,L2,1.0,0.1\nF,L3,x,0.1\n')
  with pytest.raises(ValueError) as e:
    tscore.load_reference(path)
  msg = str(e.value)
  # sd = 0 is refused (a T-score would divide by it), and all five rows are named.
  assert (f'T-score reference {path}: row 1: mean and sd must be numbers with sd > 0'
          in msg)
  for row in ('; row 2: sex must be', '; row 3: vertebra must be', '; row 5: duplicate',
              '; row 6: mean and sd'):
    assert row in msg, row


def test_unknown_sexes_are_listed_sorted_and_comma_separated():
  with pytest.raises(ValueError, match=r"got 'O', 'x', None$"):
    tscore.normalize_sex(['x', 'M', 'O', None])
  out = tscore.normalize_sex(np.array([['m', 'F'], ['male', 'Woman']], dtype=object))
  assert out.shape == (2, 2) and out.tolist() == [['M', 'F'], ['M', 'F']]


def test_unparseable_reference_names_the_file(tmp_path):
  path = tmp_path / 'ref.csv'
  path.write_text('sex,vertebra,mean,sd\n"M,L1,1.0,0.1\n')  # unterminated quote
  with pytest.raises(ValueError, match='cannot parse CSV') as e:
    tscore.load_reference(path)
  assert str(path) in str(e.value)


def test_reported_t_rounds_half_away_from_zero_as_printed():
  """One decimal as a report prints it (ISCD), half away from zero: -0.95
  prints -1.0 and -2.45 prints -2.5, where binary float rounding gives -0.9
  (-0.95 is stored as -0.94999...). The printed value decides the category,
  so a printed -1.0 reads normal (WHO: T >= -1) and -2.5 osteoporosis."""
  import math  # pylint: disable=import-outside-toplevel
  cases = {-0.95: -1.0, -2.45: -2.5, -0.94: -0.9, -2.449: -2.4, -2.5: -2.5, -1.0: -1.0,
           1.25: 1.3, 0.05: 0.1, 0.04: 0.0, -3.16: -3.2, 2.0: 2.0}
  for t, shown in cases.items():
    out = tscore.reported_t(t)
    assert type(out) is float and out == shown, (t, out)
  assert round(-0.95, 1) == -0.9  # what the rule is there to avoid
  assert tscore.who_category(-1.04) == 'osteopenia'
  assert tscore.who_category(tscore.reported_t(-1.04)) == 'normal'  # shown as -1.0
  assert tscore.who_category(-2.45) == 'osteopenia'
  assert tscore.who_category(tscore.reported_t(-2.45)) == 'osteoporosis'  # shown as -2.5
  assert math.copysign(1.0, tscore.reported_t(-0.04)) == 1.0  # never prints "-0.0"
  for missing in (None, float('nan'), float('inf'), -float('inf')):
    assert math.isnan(tscore.reported_t(missing))
