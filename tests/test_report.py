"""write_report / read_predictions / CLI on a synthetic predictions table."""

import json
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from bmdjax import metrics
from bmdjax import report

ROOT = pathlib.Path(__file__).resolve().parents[1]
VERTS = ('L1', 'L2', 'L3', 'L4')
VERTEBRA_KEYS = set(metrics.METRIC_KEYS) | {'ci'}
STRATUM_KEYS = {'n', 'n_osteoporosis', 'r', 'rmse', 'auc'}
META_KEYS = {'title', 'n_rows', 'n_patients', 'vertebrae', 'reference',
             'thresholds', 'bootstrap', 'seed', 'ci_level', 'age_bands',
             'figures', 'columns', 'lumbar'}


def synthetic_predictions(n=300, seed=0, verts=VERTS):
  """~n rows, some patients with two images, a few NaNs, ties (rounding)."""
  rng = np.random.default_rng(seed)
  n_pat = int(n * 0.85)
  pid = np.r_[np.arange(n_pat), rng.integers(0, n_pat, n - n_pat)]
  sex = rng.choice(['M', 'F'], n_pat)[pid]
  age = np.round(rng.uniform(38, 90, n_pat))[pid]
  level = np.where(sex == 'F', 1.05 - 0.008 * np.clip(age - 50, 0, None),
                   1.0) + rng.normal(0, 0.14, n_pat)[pid]
  frame = pd.DataFrame(dict(patient_id=[f'P{p}' for p in pid],
                            image=[f'{i}.dcm' for i in range(n)],
                            sex=sex, age=age))
  for k, v in enumerate(VERTS):
    frame[f'true_{v}'] = np.round(level + 0.04 * k + rng.normal(0, 0.05, n), 3)
    frame.loc[rng.random(n) < 0.02, f'true_{v}'] = np.nan
    if v in verts:
      frame[f'pred_{v}'] = np.round(
          0.8 * frame[f'true_{v}'] + 0.2 + rng.normal(0, 0.06, n), 2)
      frame.loc[rng.random(n) < 0.02, f'pred_{v}'] = np.nan
  return frame


def _baseline(frame):
  """An age+sex linear model per vertebra, as the lead fits it."""
  out = frame.copy()
  x = np.c_[np.ones(len(frame)), frame['age'], frame['sex'] == 'F']
  for v in VERTS:
    y = frame[f'true_{v}'].to_numpy()
    ok = np.isfinite(y)
    coef = np.linalg.lstsq(x[ok].astype(float), y[ok], rcond=None)[0]
    out[f'pred_{v}'] = x.astype(float) @ coef
  return out


def _strict_load(path):
  def no_constant(c):
    raise AssertionError(f'non-JSON constant {c} in {path}')
  with open(path, encoding='utf-8') as f:
    return json.load(f, parse_constant=no_constant)


def _write(frame, out, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', metrics.UndefinedMetricWarning)
    return report.write_report(frame, out, bootstrap=kw.pop('bootstrap', 100),
                               **kw)


@pytest.fixture(scope='module')
def full_report(tmp_path_factory):
  out = tmp_path_factory.mktemp('full')
  frame = synthetic_predictions()
  result = _write(frame, out, baseline_predictions=_baseline(frame),
                  title='synthetic')
  return out, result


def test_metrics_json_has_exactly_the_documented_keys(full_report):
  out, result = full_report
  data = _strict_load(out / 'metrics.json')
  assert data == result
  assert set(data) == {'meta', *VERTS, 'L1-L4', 'avg', 'strata',
                       'vertebra_pairs', 'warnings', 'age_sex_baseline'}
  assert set(data['meta']) == META_KEYS
  for v in VERTS + ('L1-L4', 'avg'):
    assert set(data[v]) == VERTEBRA_KEYS, v
    assert set(data[v]['ci']) == set(metrics.CI_KEYS)
  assert len(data['strata']) == 8
  for name, s in data['strata'].items():
    assert set(s) == {'sex', 'age_band', 'n_rows', 'n_patients', *VERTS,
                      'L1-L4', 'avg'}, name
    for v in VERTS + ('L1-L4', 'avg'):
      assert set(s[v]) == STRATUM_KEYS
  assert set(data['vertebra_pairs']) == {'r', 'rmse', 'n'}
  base = data['age_sex_baseline']
  assert set(base) == {*VERTS, 'L1-L4', 'avg', 'delta'}
  assert set(base['delta']['L2']['auc']) == {'model', 'baseline', 'value',
                                             'ci'}


def test_documented_keys_appear_in_docs():
  doc = (ROOT / 'docs' / 'metrics.md').read_text(encoding='utf-8')
  keys = (VERTEBRA_KEYS | STRATUM_KEYS | META_KEYS |
          {'strata', 'vertebra_pairs', 'age_sex_baseline', 'warnings',
           'delta', 'n_rows', 'n_patients', 'age_band'})
  missing = [k for k in sorted(keys) if f'`{k}`' not in doc]
  assert not missing


def test_values_are_sensible(full_report):
  _, data = full_report
  frame = synthetic_predictions()
  for v in VERTS:
    m = data[v]
    ok = frame[f'true_{v}'].notna() & frame[f'pred_{v}'].notna()
    assert m['n'] == ok.sum() < len(frame)
    assert 0.7 < m['r'] < 1 and 0 < m['rmse'] < 0.15
    assert m['ci']['r'][0] <= m['r'] <= m['ci']['r'][1]
    assert m['ci']['auc'][0] <= m['auc'] <= m['ci']['auc'][1]
  assert data['avg']['r'] == pytest.approx(np.mean([data[v]['r']
                                                    for v in VERTS]))
  pairs = data['vertebra_pairs']
  assert pairs['r']['L1']['L1'] == 1.0 and pairs['rmse']['L2']['L2'] == 0.0
  assert pairs['r']['L1']['L2'] == pairs['r']['L2']['L1']
  # The image model beats age+sex on r.
  assert data['age_sex_baseline']['delta']['avg']['r']['value'] > 0


def test_tables_md_has_the_tables(full_report):
  out, _ = full_report
  text = (out / 'tables.md').read_text(encoding='utf-8')
  for heading in ('Table I', 'Table II', 'Table V', 'Table VI', 'Table VII',
                  'Model vs age+sex baseline', 'Age+sex baseline'):
    assert heading in text, heading
  for row in ('T-score ≤ -2.5', 'T-score < -1', 'Lowest 10%', 'Lowest 20%',
              '| M40-50 |', '| F70-90 |'):
    assert row in text, row
  assert 'nan' not in text.lower()


def test_pngs_written(full_report):
  out, data = full_report
  names = [f'{k}_{v}.png' for v in VERTS + ('L1-L4',)
           for k in ('fit', 'bland_altman')]
  names += ['roc.png', 'bmd_vs_age.png']
  assert sorted(data['meta']['figures']) == sorted(names)
  for name in names:
    path = out / name
    assert path.stat().st_size > 10_000, name
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_one_vertebra_model(tmp_path):
  frame = synthetic_predictions(verts=('L2',))
  data = _write(frame, tmp_path, bootstrap=0)
  assert data['meta']['vertebrae'] == ['L2']
  assert set(data) == {'meta', 'L2', 'avg', 'strata', 'vertebra_pairs',
                       'warnings'}
  assert data['L2']['ci'] is None
  assert data['avg']['r'] == data['L2']['r']
  assert set(data['strata']['F60-70']) == {'sex', 'age_band', 'n_rows',
                                           'n_patients', 'L2', 'avg'}
  # Ground-truth pairs still cover all vertebrae.
  assert set(data['vertebra_pairs']['r']) == set(VERTS) | {'L1-L4'}
  assert sorted(os.listdir(tmp_path)) == sorted([
      'bland_altman_L2.png', 'bmd_vs_age.png', 'fit_L2.png', 'metrics.json',
      'roc.png', 'tables.md'])
  _strict_load(tmp_path / 'metrics.json')
  assert '| L2 R |' in (tmp_path / 'tables.md').read_text(encoding='utf-8')


@pytest.mark.filterwarnings('ignore::bmdjax.metrics.UndefinedMetricWarning')
def test_empty_pred_columns_count_as_absent():
  frame = synthetic_predictions(verts=('L2',))
  absent = report.compute_metrics(frame, bootstrap=20)
  for v in ('L1', 'L3', 'L4'):  # as a target=L2 model may write them
    frame[f'pred_{v}'] = np.nan
  empty = report.compute_metrics(frame, bootstrap=20)
  assert empty == absent
  assert empty['meta']['vertebrae'] == ['L2']


def test_undefined_strata_warn_and_dump_as_null(tmp_path):
  frame = synthetic_predictions(n=120, verts=('L1',))
  young = frame['age'] < 60
  frame.loc[young, 'true_L1'] = 1.2  # no osteoporosis under 60
  with pytest.warns(metrics.UndefinedMetricWarning):
    data = report.write_report(frame, tmp_path, bootstrap=0)
  assert data['strata']['M40-50']['L1']['auc'] is None
  assert data['strata']['M40-50']['L1']['r'] is None  # constant truth
  assert any('M40-50 L1: auc undefined' in w for w in data['warnings'])
  _strict_load(tmp_path / 'metrics.json')


@pytest.mark.filterwarnings("ignore::bmdjax.metrics.UndefinedMetricWarning")
def test_baseline_rows_matched_by_key_not_order(tmp_path):
  frame = synthetic_predictions(n=150)
  base = _baseline(frame)
  a = report.compute_metrics(frame, bootstrap=50, baseline_predictions=base)
  b = report.compute_metrics(frame, bootstrap=50,
                             baseline_predictions=base.sample(frac=1.0,
                                                              random_state=1))
  assert a['age_sex_baseline'] == b['age_sex_baseline']
  with pytest.raises(ValueError, match='no baseline row'):
    report.compute_metrics(frame, bootstrap=0,
                           baseline_predictions=base.iloc[5:])


def test_read_predictions_roundtrip_and_errors(tmp_path):
  frame = synthetic_predictions(n=40)
  path = tmp_path / 'predictions.csv'
  frame.to_csv(path, index=False)
  back = report.read_predictions(path)
  pd.testing.assert_frame_equal(back, report.validate_predictions(frame),
                                check_dtype=False)
  bad = tmp_path / 'bad.csv'
  frame.drop(columns=['age', 'true_L3']).to_csv(bad, index=False)
  with pytest.raises(ValueError, match='age, true_L3') as e:
    report.read_predictions(bad)
  assert str(bad) in str(e.value)
  frame.drop(columns=[f'pred_{v}' for v in VERTS]).to_csv(bad, index=False)
  with pytest.raises(ValueError, match='pred_L1..pred_L4'):
    report.read_predictions(bad)
  frame.assign(sex='X').to_csv(bad, index=False)
  with pytest.raises(ValueError, match='column sex'):
    report.read_predictions(bad)
  frame.assign(true_L1='high').to_csv(bad, index=False)
  with pytest.raises(ValueError, match="true_L1 has non-numeric"):
    report.read_predictions(bad)
  with pytest.raises(FileNotFoundError, match='missing.csv'):
    report.read_predictions(tmp_path / 'missing.csv')


def test_cli(tmp_path):
  frame = synthetic_predictions(n=100, verts=('L3',))
  path = tmp_path / 'p.csv'
  frame.to_csv(path, index=False)
  ref = tmp_path / 'ref.csv'
  ref.write_text('# source: custom table\nsex,vertebra,mean,sd\n' + ''.join(
      f'{s},{v},1.0,0.12\n' for s in 'MF' for v in VERTS))
  out = tmp_path / 'rep'
  env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND='Agg')
  proc = subprocess.run(
      [sys.executable, '-m', 'bmdjax.write_report', f'--predictions={path}',
       f'--out={out}', f'--reference={ref}', '--bootstrap=20',
       '--age_bands=40,60,90'], capture_output=True, text=True, env=env,
      cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert '## Table I' in proc.stdout
  data = _strict_load(out / 'metrics.json')
  assert data['meta']['reference']['source'] == 'custom table'
  assert sorted(data['strata']) == ['F40-60', 'F60-90', 'M40-60', 'M60-90']
  assert data['meta']['vertebrae'] == ['L3']
  helped = subprocess.run([sys.executable, '-m', 'bmdjax.write_report', '--help'],
                          capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
  assert '--predictions' in helped.stdout and '--bootstrap' in helped.stdout
