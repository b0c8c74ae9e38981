"""T-scores, WHO categories and reference tables."""

import numpy as np
import pytest

from bmdjax import tscore

# The shipped young-adult table: Biology Direct 2025, doi 10.1186/s13062-025-00627-w, Table 1.
DESIGN_TABLE = {
    ('M', 'L1'): (0.999, 0.123), ('M', 'L2'): (1.073, 0.127),
    ('M', 'L3'): (1.081, 0.129), ('M', 'L4'): (1.071, 0.127),
    ('F', 'L1'): (0.960, 0.128), ('F', 'L2'): (1.064, 0.128),
    ('F', 'L3'): (1.100, 0.127), ('F', 'L4'): (1.086, 0.121),
}


def test_default_reference_is_the_documented_table():
  ref = tscore.load_reference()
  assert dict(ref.table) == DESIGN_TABLE
  assert '10.1186/s13062-025-00627-w' in ref.source


def test_t_score_by_hand():
  assert tscore.t_score(0.8, 'M', 'L1') == pytest.approx((0.8 - 0.999) / 0.123)
  assert tscore.t_score(0.8, 'female', 'L3') == pytest.approx(
      (0.8 - 1.100) / 0.127)


def test_t_score_vectorised_over_sex_and_vertebra():
  bmd = np.array([0.7, 0.9, 1.1, np.nan, 1.0])
  sex = np.array(['M', 'F', 'm', 'F', 'Male'], dtype=object)
  vert = np.array(['L1', 'L2', 'L4', 'L3', 'L2'], dtype=object)
  got = tscore.t_score(bmd, sex, vert)
  want = [(0.7 - 0.999) / 0.123, (0.9 - 1.064) / 0.128,
          (1.1 - 1.071) / 0.127, np.nan, (1.0 - 1.073) / 0.127]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  # A scalar vertebra broadcasts over arrays.
  np.testing.assert_allclose(tscore.t_score([0.999, 0.960], ['M', 'F'], 'L1'),
                             [0.0, 0.0], atol=1e-12)


def test_who_category_boundaries():
  assert tscore.who_category(-2.5) == 'osteoporosis'
  assert tscore.who_category(-2.49) == 'osteopenia'
  assert tscore.who_category(-1.0) == 'normal'  # WHO: within 1 SD is normal
  assert tscore.who_category(-1.01) == 'osteopenia'
  assert tscore.who_category(-0.99) == 'normal'
  assert tscore.who_category(np.nan) is None
  assert list(tscore.who_category([-3, -1.5, 0.5])) == [
      'osteoporosis', 'osteopenia', 'normal']


def test_custom_reference_csv(tmp_path):
  path = tmp_path / 'ref.csv'
  path.write_text('# source: Hologic spine table, site X\n'
                  'sex,vertebra,mean,sd\n'
                  'M,L1,1.0,0.1\nF,L1,0.9,0.1\n')
  ref = tscore.load_reference(path)
  assert ref.source == 'Hologic spine table, site X'
  assert tscore.t_score(0.75, 'F', 'L1', ref) == pytest.approx(-1.5)
  with pytest.raises(KeyError, match='no row for sex=M, vertebra=L2'):
    tscore.t_score(0.75, 'M', 'L2', ref)


@pytest.mark.parametrize('text,match', [
    ('sex,vertebra,mean\nM,L1,1.0\n', r"missing column\(s\) \['sd'\]"),
    ('sex,vertebra,mean,sd\nM,L1,1.0,-0.1\n', 'row 1: mean and sd'),
    ('sex,vertebra,mean,sd\nM,L1,1.0,abc\n', 'row 1: mean and sd'),
    ('sex,vertebra,mean,sd\nX,L1,1.0,0.1\n', 'sex must be M or F'),
    ('sex,vertebra,mean,sd\nM,L7,1.0,0.1\n', 'vertebra must be one of'),
    ('sex,vertebra,mean,sd\nM,L1,1.0,0.1\nM,L1,1.1,0.1\n', 'duplicate'),
    ('sex,vertebra,mean,sd\n', 'no rows'),
])
def test_broken_reference_names_the_file(tmp_path, text, match):
  path = tmp_path / 'broken_ref.csv'
  path.write_text(text)
  with pytest.raises(ValueError, match=match) as e:
    tscore.load_reference(path)
  assert str(path) in str(e.value)


def test_missing_reference_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.csv'):
    tscore.load_reference(tmp_path / 'nope.csv')


def test_normalize_sex_rejects_unknown_values():
  np.testing.assert_array_equal(
      tscore.normalize_sex(['M', 'f', ' Female ', 'MALE']),
      ['M', 'F', 'F', 'M'])
  with pytest.raises(ValueError, match="'O'"):
    tscore.normalize_sex(['M', 'O', np.nan])


def test_boundary_bmd_classifies_as_defined():
  """A DXA value exactly at T -2.5 is osteoporosis despite float error, also
  when it went through float32 records and the report (truth rounded)."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  from bmdjax import report  # pylint: disable=import-outside-toplevel
  ref = tscore.load_reference()
  assert tscore.who_category(tscore.t_score(0.640, 'F', 'L1', ref)) == 'osteoporosis'
  assert tscore.who_category(tscore.t_score(0.744, 'F', 'L2', ref)) == 'osteoporosis'
  frame = pd.DataFrame({'patient_id': ['a', 'b'], 'image': ['a', 'b'], 'sex': ['F', 'F'],
                        'age': [60, 60], 'true_L1': [0.9, 0.9],
                        'true_L2': np.float32([0.744, 0.9]).astype(float),
                        'true_L3': [0.9, 0.9], 'true_L4': [0.9, 0.9],
                        'pred_L2': [0.7, 0.9]})
  pairs = report.vertebra_pairs(report.validate_predictions(frame), 'L2', ref)
  assert (pairs.true_t <= -2.5).tolist() == [True, False]
