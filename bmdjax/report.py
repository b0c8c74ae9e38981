"""The evaluation report of a predictions table: metrics.json, tables.md, PNGs.

The paper's Tables I, II, V, VI/VII and Figs 4-6, with the clinical section
and model card of an evaluated run. Its command line is `bmdjax metrics`
(bmdjax/write_report.py, whose help says what each table holds);
docs/metrics.md documents every key of metrics.json.
"""

import json
import os
import warnings

import numpy as np
import pandas as pd

from bmdjax import clinical
from bmdjax import lumbar
from bmdjax import metrics
from bmdjax import model_card
from bmdjax import plots
from bmdjax import tscore

VERTEBRAE = tscore.VERTEBRAE
ID_COLUMNS = ('patient_id', 'image', 'sex', 'age')
TRUE_COLUMNS = tuple(f'true_{v}' for v in VERTEBRAE)
PRED_COLUMNS = tuple(f'pred_{v}' for v in VERTEBRAE)
DEFAULT_AGE_BANDS = ((40, 50), (50, 60), (60, 70), (70, 90))
CI_LEVEL = 0.95
DELTA_KEYS = ('r', 'rmse', 'auc')


# ---------------------------------------------------------------- reading


def validate_predictions(frame: pd.DataFrame, source: str = 'predictions'):
  """Checks the predictions schema; returns a clean copy.

  Requires patient_id, image, sex, age, true_L1..true_L4 and at least one
  pred_Lk. Sex becomes 'M'/'F'; BMD and age become floats (empty = NaN).
  Errors name the source and every missing column at once.
  """
  missing = [c for c in ID_COLUMNS + TRUE_COLUMNS if c not in frame.columns]
  if not any(c in frame.columns for c in PRED_COLUMNS):
    missing.append('pred_L1..pred_L4 (at least one)')
  if missing:
    raise ValueError(
        f'{source}: missing column(s) {", ".join(missing)}; expected '
        f'{",".join(ID_COLUMNS + TRUE_COLUMNS + PRED_COLUMNS)}')
  if frame.empty:
    raise ValueError(f'{source}: no rows')
  out = frame.copy()
  try:
    out['sex'] = tscore.normalize_sex(out['sex'].to_numpy())
  except ValueError as e:
    raise ValueError(f'{source}: column sex: {e}') from e
  for col in ('age',) + TRUE_COLUMNS + PRED_COLUMNS:
    if col not in out:
      continue
    num = pd.to_numeric(out[col], errors='coerce')
    bad = num.isna() & out[col].notna()
    if bad.any():
      examples = ', '.join(repr(x) for x in out.loc[bad, col].unique()[:5])
      raise ValueError(f'{source}: column {col} has non-numeric values '
                       f'({examples})')
    out[col] = num.astype(float)
  for col in TRUE_COLUMNS:  # float32 DXA values: the same categories in memory and CSV
    out[col] = out[col].round(clinical.TRUTH_DECIMALS)
  if out['patient_id'].isna().any():
    raise ValueError(f'{source}: column patient_id has empty cells (needed '
                     'to resample patients)')
  out['patient_id'] = out['patient_id'].astype(str)
  return out


def read_predictions(path) -> pd.DataFrame:
  """Reads and validates predictions.csv (see validate_predictions)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'predictions file not found: {path}')
  try:
    frame = pd.read_csv(path, dtype={'patient_id': str, 'image': str})
  except Exception as e:  # pandas raises several types; all mean a bad file.
    raise ValueError(f'{path}: cannot parse CSV ({e})') from e
  return validate_predictions(frame, path)


def predicted_vertebrae(frame: pd.DataFrame) -> list:
  """Vertebrae with at least one prediction (one-vertebra models report one)."""
  return [v for v in VERTEBRAE
          if f'pred_{v}' in frame and frame[f'pred_{v}'].notna().any()]


def report_columns(frame: pd.DataFrame) -> list:
  """Predicted vertebrae, then L1-L4 (bmdjax/lumbar.py) when >= 2 are predicted."""
  return clinical.columns(frame)


def vertebra_pairs(frame: pd.DataFrame, vertebra: str,
                   ref: tscore.Reference) -> metrics.Pairs:
  """Truth and prediction of one vertebra (or L1-L4, ISCD-combined on each
  side) in BMD and T-score units."""
  if vertebra == lumbar.LUMBAR:
    sex = frame['sex'].to_numpy()
    true = lumbar.combine(lumbar.frame_bmd(frame, 'true_'), sex, ref)
    pred = lumbar.combine(lumbar.frame_bmd(frame, 'pred_'), sex, ref)
    return metrics.Pairs(true['bmd'], pred['bmd'], true['t'], pred['t'])
  true = frame[f'true_{vertebra}'].to_numpy(dtype=float)
  pred = frame[f'pred_{vertebra}'].to_numpy(dtype=float)
  sex = frame['sex'].to_numpy()
  return metrics.Pairs(true, pred, tscore.t_score(true, sex, vertebra, ref),
                       tscore.t_score(pred, sex, vertebra, ref))


# ---------------------------------------------------------------- metrics


def _jsonable(x):
  """numpy -> Python; non-finite -> None so json allow_nan=False holds."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if np.isfinite(x) else None
  return x


def evaluate_frame(frame, ref, vertebrae, samples=None, tag='') -> dict:
  """{vertebra: metrics + ci, 'avg': ...} for one predictions frame.

  samples: this frame's bootstrap samples per vertebra (or None for no ci).
  """
  verts = [v for v in vertebrae if v != lumbar.LUMBAR]
  pairs = {v: vertebra_pairs(frame, v, ref) for v in verts}
  out = metrics.evaluate_vertebrae(pairs, samples=samples, level=CI_LEVEL,
                                   tag=tag)
  if lumbar.LUMBAR in vertebrae:  # beside the vertebrae, never in their Avg
    c = lumbar.LUMBAR
    out[c] = metrics.vertebra_metrics(vertebra_pairs(frame, c, ref), f'{tag}{c}')
    out[c]['ci'] = (metrics.intervals(samples[c], CI_LEVEL, f'{tag}{c}')
                    if samples else None)
  return out


def _band_mask(age, band, last: bool):
  lo, hi = band
  return (age >= lo) & ((age <= hi) if last else (age < hi))


def band_name(sex: str, band) -> str:
  return f'{sex}{band[0]:g}-{band[1]:g}'


def stratum_masks(frame, age_bands) -> dict:
  """name -> row mask of each sex x age band: bands are [low, high), the
  last one [low, high]; rows outside all bands or without age are in none."""
  age = frame['age'].to_numpy(dtype=float)
  return {band_name(sex, band): (frame['sex'].to_numpy() == sex) & _band_mask(
      age, band, i == len(age_bands) - 1)
          for sex in tscore.SEXES for i, band in enumerate(age_bands)}


def strata(frame, ref, vertebrae, age_bands) -> dict:
  """Table V: n, r, rmse, auc per vertebra (L1-L4, avg) in each sex x age band."""
  out = {}
  masks = stratum_masks(frame, age_bands)
  for sex in tscore.SEXES:
    for band in age_bands:
      name = band_name(sex, band)
      sel = masks[name]
      sub = frame[sel]
      entry = dict(sex=sex, age_band=[band[0], band[1]],
                   n_rows=int(sel.sum()),
                   n_patients=int(sub['patient_id'].nunique()))
      per = {v: metrics.stratum_metrics(vertebra_pairs(sub, v, ref),
                                        f'{name} {v}') for v in vertebrae}
      entry.update(per)
      entry['avg'] = metrics.average_metrics(
          {v: x for v, x in per.items() if v != lumbar.LUMBAR}, f'{name} avg',
          keys=metrics.STRATUM_KEYS)
      out[name] = entry
  return out


def ground_truth_pairs(frame, ref=None) -> dict:
  """Tables VI/VII: r and RMSE between DXA BMD of each pair of vertebrae
  (and DXA L1-L4 given a reference).

  A neighbouring vertebra's own DXA value is the natural reference a model's
  prediction should approach (rows where both are present).
  """
  if ref is not None:
    frame = frame.copy()
    frame[f'true_{lumbar.LUMBAR}'] = lumbar.combine(
        lumbar.frame_bmd(frame, 'true_'), frame['sex'].to_numpy(), ref)['bmd']
  present = [v for v in VERTEBRAE + (lumbar.LUMBAR,)
             if f'true_{v}' in frame and frame[f'true_{v}'].notna().sum() >= 2]
  out = {'r': {}, 'rmse': {}, 'n': {}}
  for a in present:
    for key in out:
      out[key][a] = {}
    for b in present:
      x = frame[f'true_{a}'].to_numpy(dtype=float)
      y = frame[f'true_{b}'].to_numpy(dtype=float)
      m = metrics.finite_mask(x, y)
      ctx = f'ground truth {a} vs {b}'
      out['r'][a][b] = (1.0 if a == b else metrics.pearson_r(x[m], y[m], ctx))
      out['rmse'][a][b] = 0.0 if a == b else metrics.rmse(x[m], y[m], ctx)
      out['n'][a][b] = int(m.sum())
  return out


def align_baseline(frame, baseline, source='baseline_predictions'):
  """Baseline rows in the order of `frame`, matched on (patient_id, image)."""
  baseline = validate_predictions(baseline, source)
  keys = ['patient_id', 'image']
  a = frame[keys].astype(str).reset_index(drop=True)
  b = baseline[keys].astype(str).reset_index(drop=True)
  if a.equals(b):
    return baseline.reset_index(drop=True)
  if b.duplicated().any():
    raise ValueError(f'{source}: duplicate (patient_id, image) rows and a '
                     'different row order from the predictions')
  idx = pd.MultiIndex.from_frame(b)
  pos = idx.get_indexer(pd.MultiIndex.from_frame(a))
  if (pos < 0).any():
    lost = a[pos < 0].head(3).to_dict('records')
    raise ValueError(f'{source}: {int((pos < 0).sum())} prediction rows have '
                     f'no baseline row, e.g. {lost}')
  return baseline.iloc[pos].reset_index(drop=True)


def _with_truth(frame, baseline):
  """Baseline predictions on the model frame's truth, sex and age."""
  out = frame.reset_index(drop=True).copy()
  for col in PRED_COLUMNS:
    out[col] = baseline[col] if col in baseline else np.nan
  return out


def _delta(model, base, samples_m, samples_b, vertebrae):
  """Model, baseline and model minus baseline for r, rmse, auc, with
  paired-bootstrap intervals of the difference (same patient resamples)."""
  out = {}
  for v in vertebrae + ['avg']:
    sm = sb = None
    if samples_m:
      pick = ([x for x in vertebrae if x != lumbar.LUMBAR] if v == 'avg'
              else [v])
      sm = metrics.average_samples([samples_m[x] for x in pick])
      sb = metrics.average_samples([samples_b[x] for x in pick])
    out[v] = {}
    for key in DELTA_KEYS:
      a, b = model[v][key], base[v][key]
      value = None if a is None or b is None else a - b
      ci = (metrics.percentile_interval(sm[key] - sb[key], CI_LEVEL,
                                        f'delta {key}', v)
            if sm is not None and value is not None else None)
      out[v][key] = {'model': a, 'baseline': b, 'value': value, 'ci': ci}
  return out


def resolve_reference(reference=None) -> tscore.Reference:
  """A Reference from a Reference, a CSV path, or None (shipped default)."""
  if reference is None:
    return tscore.load_reference()
  if isinstance(reference, (str, os.PathLike)):
    return tscore.load_reference(reference)
  return reference


def compute_metrics(frame, *, reference=None,
                    age_bands=DEFAULT_AGE_BANDS, bootstrap=1000, seed=0,
                    baseline_predictions=None, title='') -> dict:
  """Everything in metrics.json, as a dict (no files written)."""
  frame = validate_predictions(frame, 'predictions').reset_index(drop=True)
  ref = resolve_reference(reference)
  if not predicted_vertebrae(frame):
    raise ValueError('predictions: every pred_Lk column is empty')
  vertebrae = report_columns(frame)
  base = None
  base_verts = []
  if baseline_predictions is not None:
    base = _with_truth(frame, align_baseline(frame, baseline_predictions))
    base_verts = [v for v in vertebrae if v == lumbar.LUMBAR or
                  base[f'pred_{v}'].notna().any()]
    lacking = [v for v in vertebrae if v not in base_verts]
    if lacking:
      warnings.warn(f'baseline has no predictions for {", ".join(lacking)}; '
                    'compared on the rest', metrics.UndefinedMetricWarning)
  samples_m = samples_b = None
  if bootstrap:
    sets = {('m', v): vertebra_pairs(frame, v, ref) for v in vertebrae}
    sets.update({('b', v): vertebra_pairs(base, v, ref) for v in base_verts})
    drawn = metrics.bootstrap_samples(frame['patient_id'].to_numpy(), sets,
                                      bootstrap, seed)
    samples_m = {v: drawn[('m', v)] for v in vertebrae}
    samples_b = {v: drawn[('b', v)] for v in base_verts}
  out = {'meta': _meta(frame, ref, vertebrae, age_bands, bootstrap, seed,
                       title)}
  out.update(evaluate_frame(frame, ref, vertebrae, samples_m))
  out['strata'] = strata(frame, ref, vertebrae, age_bands)
  out['vertebra_pairs'] = ground_truth_pairs(frame, ref)
  if base is not None and base_verts:
    bm = evaluate_frame(base, ref, base_verts, samples_b, 'baseline ')
    model_sub = {v: out[v] for v in base_verts}
    model_sub['avg'] = (out['avg'] if base_verts == vertebrae else
                        metrics.average_metrics(model_sub, 'model avg'))
    bm['delta'] = _delta(model_sub, bm, samples_m, samples_b, base_verts)
    out['age_sex_baseline'] = bm
  return out


def _meta(frame, ref, vertebrae, age_bands, bootstrap, seed, title):
  return dict(
      title=title,
      n_rows=int(len(frame)),
      n_patients=int(frame['patient_id'].nunique()),
      vertebrae=[v for v in vertebrae if v != lumbar.LUMBAR],
      columns=list(vertebrae),
      lumbar=lumbar.METHOD if lumbar.LUMBAR in vertebrae else None,
      reference=dict(source=ref.source, table={
          f'{s}_{v}': list(ms) for (s, v), ms in sorted(ref.table.items())}),
      thresholds=dict(osteoporosis_t=metrics.OSTEOPOROSIS_T,
                      osteopenia_t=metrics.OSTEOPENIA_T,
                      relative=dict(metrics.RELATIVE_FRACTIONS)),
      bootstrap=int(bootstrap), seed=int(seed), ci_level=CI_LEVEL,
      age_bands=[[a, b] for a, b in age_bands],
  )


# ----------------------------------------------------------------- tables

_TRIPLE = (('r', 'R'), ('rmse', 'RMSE'), ('auc', 'AUC'))
_AGREEMENT = (('r', 'R-value'), ('rmse', 'RMSE'), ('r2', 'R²'),
              ('slope', 'Slope'), ('intercept', 'Intercept'),
              ('ba_mean', 'BA mean diff'), ('ba_sd', 'BA SD'),
              ('ba_loa_low', 'BA LoA low'), ('ba_loa_high', 'BA LoA high'),
              ('auc', 'AUC'))
_RULES = (('osteoporosis', 'T-score ≤ -2.5'), ('osteopenia', 'T-score < -1'),
          ('last10', 'Lowest 10%'), ('last20', 'Lowest 20%'))


def _f(v, digits=3):
  """A number for a table; undefined (None) shows as a dash."""
  if v is None:
    return '—'
  if isinstance(v, int):
    return str(v)
  return f'{v:.{digits}f}'


def _with_ci(entry, key):
  ci = (entry.get('ci') or {}).get(key)
  text = _f(entry.get(key))
  return text if ci is None else f'{text} [{ci[0]:.3f}, {ci[1]:.3f}]'


def _table(header, rows) -> list:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] * len(header)) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
  return lines + ['']


def _label(col):
  return 'Avg' if col == 'avg' else col


def _triple_header(first, cols):
  return first + [f'{_label(c)} {k}' for c in cols for _, k in _TRIPLE]


def _triple(entries, cols):
  """R, RMSE, AUC cells of each column; a missing column shows dashes."""
  return [_f(entries[c][k]) if c in entries else '—'
          for c in cols for k, _ in _TRIPLE]


def _intro(result) -> list:
  meta = result['meta']
  ci = (f'Intervals: {meta["ci_level"]:.0%} patient-level bootstrap, '
        f'{meta["bootstrap"]} resamples, seed {meta["seed"]}.'
        if meta['bootstrap'] else 'No bootstrap intervals.')
  return [f'# {meta["title"] or "BMD evaluation"}', '',
          f'{meta["n_rows"]} images of {meta["n_patients"]} patients; '
          f'vertebrae {", ".join(meta["vertebrae"])}. T-scores from: '
          f'{meta["reference"]["source"]}. Avg = mean of the per-vertebra '
          f'values. {ci}', ''] + (
              [f'{lumbar.LUMBAR}: {meta["lumbar"]}', ''] if meta.get('lumbar') else [])


def _table_i(result, cols) -> list:
  rows = [['Model'] + _triple(result, cols)]
  if 'age_sex_baseline' in result:
    rows.append(['Age+sex baseline'] +
                _triple(result['age_sex_baseline'], cols))
  return (['## Table I: R-value, RMSE (g/cm²), AUC (osteoporosis)', ''] +
          _table(_triple_header(['Model'], cols), rows))


def _agreement_table(result, cols) -> list:
  rows = [['n'] + [_f(result[c]['n'], 1) for c in cols]]
  rows += [[label] + [_with_ci(result[c], k) for c in cols]
           for k, label in _AGREEMENT]
  return (['## Regression and agreement (Fig. 4), 95% CI in brackets', '',
           'Linear fit: prediction = slope × DXA + intercept; R² of that '
           'fit. Bland-Altman: prediction − DXA, limits of agreement mean ± '
           '1.96 SD. n = rows with truth and prediction.', ''] +
          _table(['Metric'] + [_label(c) for c in cols], rows))


def _table_ii(result, cols) -> list:
  rows = [[label] + [_f(result[c][f'{p}_{rule}']) for c in cols
                     for p in ('sens', 'spec')] for rule, label in _RULES]
  rows.append(['Positives (truth T ≤ -2.5 / < -1)'] + [
      _f(result[c][k], 1) for c in cols
      for k in ('n_osteoporosis', 'n_osteopenia')])
  header = ['Threshold'] + [f'{_label(c)} {k}' for c in cols
                            for k in ('Sens', 'Spec')]
  return (['## Table II: sensitivity / specificity', '',
           'Osteoporosis rules: truth T ≤ -2.5 is positive; osteopenia '
           'rule: truth T < -1. "Lowest 10%/20%" flag that fraction of '
           'predicted T-scores (per vertebra) and are scored for '
           'osteoporosis.', ''] + _table(header, rows))


def _table_v(result, cols) -> list:
  rows = [['All', result['meta']['n_rows']] + _triple(result, cols)]
  rows += [[name, s['n_rows']] + _triple(s, cols)
           for name, s in result['strata'].items()]
  return (['## Table V: sex × age strata', '',
           'n = rows in the group. AUC is — where a group has no '
           'osteoporosis or no non-osteoporosis case.', ''] +
          _table(_triple_header(['Group', 'n'], cols), rows))


def render_tables(result: dict) -> str:
  """tables.md: the paper's tables, from a compute_metrics result."""
  cols = result['meta']['columns'] + ['avg']
  out = _intro(result)
  out += _table_i(result, cols)
  out += _agreement_table(result, cols)
  out += _table_ii(result, cols)
  out += _table_v(result, cols)
  out += _pairs_tables(result)
  if 'age_sex_baseline' in result:
    out += _baseline_table(result)
  if 'clinical' in result:
    out += clinical.render(result['clinical'])
    out += ['', model_card.render(result)]
  return '\n'.join(out)


def _pairs_tables(result) -> list:
  p = result['vertebra_pairs']
  verts = list(p['r'])
  model = result['meta']['columns']
  out = []
  for key, title, name in (('r', 'Table VI: R-value between vertebrae (DXA)',
                            'R-value'),
                           ('rmse', 'Table VII: RMSE between vertebrae (DXA, '
                            'g/cm²)', 'RMSE')):
    out += [f'## {title}', '',
            'Each cell compares the DXA BMD of two vertebrae: what using the '
            'neighbour as the "prediction" would score. Last column: the '
            'model on that vertebra.', '']
    rows = [[a] + [_f(p[key][a][b]) for b in verts] +
            [_f(result[a][key]) if a in model else '—'] for a in verts]
    out += _table([name] + verts + ['Model'], rows)
  return out


def _baseline_table(result) -> list:
  b = result['age_sex_baseline']
  cols = list(b['delta'])
  out = ['## Model vs age+sex baseline', '',
         'Baseline: a linear model of age and sex only. Delta = model − '
         'baseline (higher R/AUC and lower RMSE favour the model), with '
         'paired bootstrap intervals.', '']
  rows = []
  for key, label in (('r', 'R-value'), ('rmse', 'RMSE'), ('auc', 'AUC')):
    d = {c: b['delta'][c][key] for c in cols}
    rows.append([f'{label} model'] + [_f(d[c]['model']) for c in cols])
    rows.append([f'{label} baseline'] + [_f(d[c]['baseline']) for c in cols])
    rows.append([f'{label} delta'] + [
        _f(d[c]['value']) + (f' [{d[c]["ci"][0]:.3f}, {d[c]["ci"][1]:.3f}]'
                             if d[c]['ci'] else '') for c in cols])
  out += _table(['Metric'] + [_label(c) for c in cols], rows)
  return out


# ----------------------------------------------------------------- writing


def write_plots(frame, out_dir, ref, vertebrae) -> list:
  """Figs 4-6 as PNGs; returns the file names written."""
  written = []
  t_scores = {}
  for v in vertebrae:
    p = vertebra_pairs(frame, v, ref)
    written.append(plots.fit_plot(p.true, p.pred,
                                  os.path.join(out_dir, f'fit_{v}.png'), v))
    written.append(plots.bland_altman_plot(
        p.true, p.pred, os.path.join(out_dir, f'bland_altman_{v}.png'), v))
    t_scores[v] = (p.true_t, p.pred_t)
  written.append(plots.roc_plot(t_scores, os.path.join(out_dir, 'roc.png')))
  written.append(plots.bmd_vs_age_plot(
      frame, os.path.join(out_dir, 'bmd_vs_age.png'), vertebrae))
  return [os.path.basename(w) for w in written]


def write_report(predictions: pd.DataFrame, out_dir, *, reference=None,
                 age_bands=DEFAULT_AGE_BANDS, bootstrap=1000, seed=0,
                 baseline_predictions=None, title='', clinical_fit=None,
                 validation=None, recalibrate=False, model_info=None) -> dict:
  """Writes metrics.json, tables.md and the PNGs into out_dir; returns the
  metrics dict.

  reference: a tscore.Reference, a CSV path, or None (shipped default).
  Undefined metrics are None; their UndefinedMetricWarnings are re-issued
  once each and listed under "warnings" in metrics.json. clinical_fit
  (bmdjax.clinical.fit on `validation`) adds the "clinical" section
  (intervals, calibration, screening), calibration plots and the model card
  (model_card.md; model_info: what model_card.render shows about the run);
  with recalibrate every table is of the recalibrated predictions.
  """
  os.makedirs(out_dir, exist_ok=True)
  raw = predictions
  if clinical_fit is not None and recalibrate:
    predictions = clinical.recalibrated(predictions, clinical_fit)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    result = compute_metrics(
        predictions, reference=reference, age_bands=age_bands,
        bootstrap=bootstrap, seed=seed,
        baseline_predictions=baseline_predictions, title=title)
    frame = validate_predictions(predictions).reset_index(drop=True)
    ref = resolve_reference(reference)
    result['meta']['figures'] = write_plots(frame, out_dir, ref,
                                            result['meta']['columns'])
    if clinical_fit is not None:
      result['clinical'] = clinical.evaluate_split(
          validate_predictions(raw), clinical_fit, ref, recalibrate=recalibrate,
          strata=stratum_masks(frame, age_bands), bootstrap=bootstrap, seed=seed,
          validation=validation)
      result['meta']['figures'] += [os.path.basename(plots.calibration_plot(
          c['calibration'], os.path.join(out_dir, f'calibration_{name}.png'), name))
          for name, c in result['clinical']['columns'].items()]
      result['model_card'] = model_card.card(result, model_info or {})
  seen = []
  for w in caught:
    msg = str(w.message)
    if msg not in seen:
      seen.append(msg)
      warnings.warn_explicit(msg, w.category, w.filename, w.lineno)
  result['warnings'] = seen
  result = _jsonable(result)
  with open(os.path.join(out_dir, 'metrics.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1, allow_nan=False)
  with open(os.path.join(out_dir, 'tables.md'), 'w', encoding='utf-8') as f:
    f.write(render_tables(result))
  if 'model_card' in result:
    with open(os.path.join(out_dir, 'model_card.md'), 'w', encoding='utf-8') as f:
      f.write(model_card.render(result))
  return result
