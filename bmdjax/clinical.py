"""The clinical layer fitted on validation predictions and applied to any others.

One pure fit, `fit(validation_predictions)`, gives everything that must be
fixed before the test set is looked at: the linear recalibration per
vertebra, the split-conformal half-widths per vertebra and for L1-L4 (in
g/cm2 and in T-score units), and the screening threshold on predicted T.
bmdjax.evaluate stores the validation predictions in the run
(VALIDATION_PREDICTIONS) and reports the fit on the evaluated split;
bmdjax.predict refits from the stored file(s), so several per-vertebra runs
combine into one L1-L4 result with intervals calibrated on their joint
validation predictions.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from bmdjax import calibration, conformal, lumbar, metrics, screening, tscore

# A model trained on crops of hand-placed landmarks reads the scatter of
# detected ones as density: on the synthetic cohort its L1 predictions were
# 0.08 g/cm2 low on average (README, "BMD with detected ROIs").
DETECTED_ON_GIVEN = ('This model was trained on crops of given (hand-placed) landmarks but '
                     'these landmarks were detected: expect its BMD to be biased low; train '
                     'on data prepared with the same detector (bmdjax prepare '
                     '--landmark_workdir)')


def landmark_caution(trained, used: str) -> str | None:
  """The caution when landmarks of `used` source ("given"/"detected") feed a
  model trained on `trained` ones (a source, or several for several runs;
  None: a run from before run.json recorded it)."""
  trained = {trained} if isinstance(trained, str) or trained is None else set(trained)
  return DETECTED_ON_GIVEN if used == 'detected' and 'given' in trained else None

VALIDATION_PREDICTIONS = os.path.join('calibration', 'predictions_validation.csv')
KEY_COLUMNS = ('patient_id', 'image')
# DXA truth is rounded to this many decimals before use: records hold float32,
# and a DXA value whose T-score is exactly -2.5 (e.g. 0.640 g/cm2 for a woman's
# L1-L4) must be osteoporosis both in memory and when re-read from a CSV.
TRUTH_DECIMALS = 5
VARIANTS = ('raw', 'recalibrated')


def validation_path(workdir: str) -> str:
  return os.path.join(workdir, VALIDATION_PREDICTIONS)


def columns(frame) -> list[str]:
  """Predicted vertebrae, then L1-L4 when at least two are predicted."""
  verts = [v for v in tscore.VERTEBRAE
           if f'pred_{v}' in frame and frame[f'pred_{v}'].notna().any()]
  return verts + ([lumbar.LUMBAR] if len(verts) >= lumbar.MIN_VERTEBRAE else [])


def with_scores(frame: pd.DataFrame, ref, recal: dict | None = None) -> pd.DataFrame:
  """A copy with predictions recalibrated (when `recal`), the L1-L4 columns
  (true_/pred_L1-L4, their labels) and T-scores true_t_X / pred_t_X for every
  column X of `columns`."""
  out = frame.reset_index(drop=True).copy()
  for v in tscore.VERTEBRAE:
    if f'true_{v}' in out:
      out[f'true_{v}'] = out[f'true_{v}'].astype(float).round(TRUTH_DECIMALS)
  verts = [c for c in columns(out) if c != lumbar.LUMBAR]
  for v in verts:
    out[f'pred_{v}'] = calibration.apply(out[f'pred_{v}'], (recal or {}).get(v))
  sex = out['sex'].to_numpy()
  for v in verts:
    for side in ('true', 'pred'):
      out[f'{side}_t_{v}'] = tscore.t_score(out[f'{side}_{v}'].to_numpy(float), sex, v, ref)
  if lumbar.LUMBAR in columns(out):
    for side in ('true', 'pred'):
      comb = lumbar.combine(lumbar.frame_bmd(out, f'{side}_'), sex, ref)
      out[f'{side}_{lumbar.LUMBAR}'] = comb['bmd']
      out[f'{side}_t_{lumbar.LUMBAR}'] = comb['t']
      out[f'{side}_label_{lumbar.LUMBAR}'] = comb['label']
  return out


def _truth_known(scored: pd.DataFrame, ref):
  """(DXA L1-L4 result exists, its T-score): the densitometrist's diagnosis."""
  bmd = lumbar.frame_bmd(scored, 'true_').round(TRUTH_DECIMALS)
  t = lumbar.combine(bmd, scored['sex'].to_numpy(), ref)['t']
  return np.isfinite(t), t


def fit(val: pd.DataFrame, ref=None, level: float = conformal.DEFAULT_LEVEL,
        target_sensitivity: float = screening.DEFAULT_SENSITIVITY) -> dict:
  """Everything fixed on validation, JSON-serialisable (see module doc)."""
  ref = ref if ref is not None else tscore.load_reference()
  level = conformal.check_level(level)
  val = val.reset_index(drop=True)
  cols = columns(val)
  if not cols:
    raise ValueError('validation predictions have no pred_L1..pred_L4 values')
  recal = {}
  for v in cols:
    if v != lumbar.LUMBAR:
      recal[v] = calibration.fit(val[f'true_{v}'], val[f'pred_{v}'])
  known, truth_t = _truth_known(val, ref)
  positive = known & (truth_t <= metrics.OSTEOPOROSIS_T)
  out = dict(level=level, target_sensitivity=target_sensitivity, n_validation=int(len(val)),
             columns=cols, recalibration=recal, tscore_reference=ref.source)
  for variant in VARIANTS:
    scored = with_scores(val, ref, recal if variant == 'recalibrated' else None)
    entry = {}
    for c in cols:
      res_bmd = scored[f'true_{c}'] - scored[f'pred_{c}']
      res_t = scored[f'true_t_{c}'] - scored[f'pred_t_{c}']
      n = int(np.isfinite(res_bmd).sum())
      pred_t = scored[f'pred_t_{c}'].to_numpy(float)
      thr = screening.choose_threshold(positive[known], pred_t[known], target_sensitivity)
      entry[c] = dict(n=n, q_bmd=conformal.quantile(res_bmd, level),
                      q_t=conformal.quantile(res_t, level),
                      guarantee=list(conformal.guarantee(n, level)),
                      screening_threshold_t=thr,
                      n_validation_osteoporosis=int(positive[known].sum()))
    out[variant] = entry
  return out


def load_validation(workdirs) -> pd.DataFrame:
  """The joint validation predictions of one or several runs (merged on
  patient_id, image); each vertebra may come from one run only."""
  merged = None
  owner = {}
  for w in workdirs:
    path = validation_path(w)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f'{path} is missing: intervals and the screening threshold are fitted on the '
          f'validation predictions that bmdjax.evaluate --workdir={w} stores; run it once')
    frame = pd.read_csv(path, dtype={'patient_id': str, 'image': str})
    preds = [c for c in frame if c.startswith('pred_')]
    for c in preds:
      if c in owner:
        raise ValueError(f'{c[5:]} is predicted by both {owner[c]} and {w}; give each '
                         'vertebra once')
      owner[c] = w
    if merged is None:
      merged = frame
      continue
    joined = merged.merge(frame[list(KEY_COLUMNS) + preds], on=list(KEY_COLUMNS),
                          how='inner', validate='one_to_one')
    if len(joined) != len(merged) or len(joined) != len(frame):
      raise ValueError(f'{path}: its validation studies differ from those of '
                       f'{", ".join(workdirs[:workdirs.index(w)])}; runs combined for '
                       'L1-L4 must share one prepared dataset')
    merged = joined
  return merged


def fit_runs(workdirs, ref=None, level=conformal.DEFAULT_LEVEL,
             target_sensitivity=screening.DEFAULT_SENSITIVITY) -> dict:
  return fit(load_validation(list(workdirs)), ref, level, target_sensitivity)


# ---------------------------------------------------------- applying


def category_range(t_low: float, t_high: float) -> str:
  """'T-score -2.9 to -1.8: osteopenia or osteoporosis' (ends as reported)."""
  lo, hi = tscore.reported_t(t_low), tscore.reported_t(t_high)
  order = tscore.WHO_CATEGORIES
  cats = order[order.index(tscore.who_category(hi)):order.index(tscore.who_category(lo)) + 1]
  return f'T-score {lo:+.1f} to {hi:+.1f}: ' + ' or '.join(cats)


def add_intervals(scored: pd.DataFrame, fitted: dict, variant: str) -> pd.DataFrame:
  """lo_X/hi_X (g/cm2) and lo_t_X/hi_t_X columns of every fitted column, and
  refer_dxa (0/1) from the screening column (L1-L4 when available)."""
  out = scored.copy()
  for c, e in fitted[variant].items():
    if f'pred_{c}' not in out:
      continue
    out[f'lo_{c}'], out[f'hi_{c}'] = conformal.interval(out[f'pred_{c}'], e['q_bmd'])
    out[f'lo_t_{c}'], out[f'hi_t_{c}'] = conformal.interval(out[f'pred_t_{c}'], e['q_t'])
  col = screening_column(fitted)
  thr = fitted[variant][col]['screening_threshold_t']
  t = out[f'pred_t_{col}'].to_numpy(float)
  refer = np.full(len(t), np.nan)
  if thr is not None:
    refer[np.isfinite(t)] = (t[np.isfinite(t)] <= thr).astype(float)
  out['refer_dxa'] = refer
  return out


def recalibrated(frame: pd.DataFrame, fitted: dict) -> pd.DataFrame:
  """A copy with each vertebra's prediction on the validation-fitted line."""
  out = frame.copy()
  for v, recal in fitted['recalibration'].items():
    if f'pred_{v}' in out:
      out[f'pred_{v}'] = calibration.apply(out[f'pred_{v}'], recal)
  return out


def screening_column(fitted: dict) -> str:
  """L1-L4 when fitted, else the one (or lowest) vertebra."""
  cols = fitted['columns']
  return lumbar.LUMBAR if lumbar.LUMBAR in cols else cols[0]


# ---------------------------------------------------------- reporting


def _boot_mean(values, patient_ids, bootstrap, seed):
  """Mean of `values` (NaN rows dropped) with a patient bootstrap interval."""
  v = np.asarray(values, float)
  ok = np.isfinite(v)
  if not ok.any():
    return None, None
  mean = float(v[ok].mean())
  if not bootstrap:
    return mean, None
  draws = []
  with np.errstate(invalid='ignore', divide='ignore'):
    for w in metrics.patient_weights(np.asarray(patient_ids)[ok], bootstrap, seed):
      draws.append((w @ v[ok]) / w.sum(1))
  s = np.concatenate(draws)
  s = s[np.isfinite(s)]
  return mean, ([float(x) for x in np.percentile(s, [2.5, 97.5])] if len(s) else None)


def coverage(scored: pd.DataFrame, col: str, entry: dict, bootstrap: int = 0,
             seed: int = 0) -> dict:
  """Empirical coverage (BMD and T intervals) and mean width of one column."""
  ids = scored['patient_id'].to_numpy()
  out = {'n': int((scored[f'true_{col}'].notna() & scored[f'pred_{col}'].notna()).sum())}
  for unit, q, true, pred in (('bmd', entry['q_bmd'], f'true_{col}', f'pred_{col}'),
                              ('t', entry['q_t'], f'true_t_{col}', f'pred_t_{col}')):
    lo, hi = conformal.interval(scored[pred], q)
    cov, ci = _boot_mean(conformal.covered(scored[true], lo, hi), ids, bootstrap, seed)
    out[f'coverage_{unit}'] = cov
    out[f'coverage_{unit}_ci'] = ci
    out[f'width_{unit}'] = 2 * q if np.isfinite(q) else None
  return out


def evaluate_split(frame: pd.DataFrame, fitted: dict, ref=None, *, recalibrate=False,
                   strata: dict | None = None, bootstrap: int = 1000, seed: int = 0,
                   validation: pd.DataFrame | None = None) -> dict:
  """metrics.json's "clinical" section for one split's predictions (raw)."""
  ref = ref if ref is not None else tscore.load_reference()
  variant = 'recalibrated' if recalibrate else 'raw'
  raw = with_scores(frame, ref)
  recal = with_scores(frame, ref, fitted['recalibration'])
  used = recal if recalibrate else raw
  known, truth_t = _truth_known(frame.reset_index(drop=True), ref)
  positive = known & (truth_t <= metrics.OSTEOPOROSIS_T)
  ids = used['patient_id'].to_numpy()
  out = dict(level=fitted['level'], variant=variant, n_validation=fitted['n_validation'],
             target_sensitivity=fitted['target_sensitivity'],
             recalibration=fitted['recalibration'], columns={})
  for c in fitted['columns']:
    entry = fitted[variant][c]
    col = dict(q_bmd=entry['q_bmd'], q_t=entry['q_t'], guarantee=entry['guarantee'],
               n_calibration=entry['n'])
    col['coverage'] = coverage(used, c, entry, bootstrap, seed)
    col['coverage']['expected_sd'] = conformal.coverage_sd(entry['n'], col['coverage']['n'],
                                                           fitted['level'])
    if validation is not None:
      val = with_scores(validation, ref, fitted['recalibration'] if recalibrate else None)
      col['coverage_validation'] = coverage(val, c, entry)
    col['coverage_strata'] = {
        name: coverage(used[mask].reset_index(drop=True), c, entry, bootstrap, seed)
        for name, mask in (strata or {}).items() if mask.any()}
    col['calibration'] = {
        'before': calibration.line(raw[f'true_{c}'], raw[f'pred_{c}']),
        'after': calibration.line(recal[f'true_{c}'], recal[f'pred_{c}']),
        'deciles_before': calibration.deciles(raw[f'true_{c}'], raw[f'pred_{c}']),
        'deciles_after': calibration.deciles(recal[f'true_{c}'], recal[f'pred_{c}'])}
    thr = entry['screening_threshold_t']
    pred_t = used[f'pred_t_{c}'].to_numpy(float)
    sel = known & np.isfinite(pred_t)
    col['screening'] = dict(
        threshold_t=thr, truth='DXA L1-L4 T <= -2.5 (ISCD exclusions)',
        n=int(sel.sum()), n_osteoporosis=int(positive[sel].sum()),
        test=(screening.rates_with_ci(positive[sel], pred_t[sel] <= thr, ids[sel],
                                      bootstrap, seed) if thr is not None else None))
    out['columns'][c] = col
  return out


def _f(x, d=3):
  return '—' if x is None else f'{x:.{d}f}'


def _ci(v, ci, d=3):
  return _f(v, d) + (f' [{ci[0]:.{d}f}, {ci[1]:.{d}f}]' if ci else '')


def render(section: dict) -> list[str]:
  """tables.md lines of the clinical section."""
  cols = list(section['columns'])
  lvl = section['level']
  out = [f'## Prediction intervals ({lvl:.0%} split-conformal, calibrated on '
         f'{section["n_validation"]} validation studies; {section["variant"]} predictions)', '',
         'Coverage = share of studies whose DXA value lies inside the interval, with a 95% '
         'patient-bootstrap interval; width = interval width. L1-L4 intervals are '
         'calibrated on L1-L4 itself (ISCD exclusions on both sides).', '']
  rows = []
  for c in cols:
    e = section['columns'][c]
    cv = e['coverage']
    rows.append([c, cv['n'], _ci(cv['coverage_bmd'], cv['coverage_bmd_ci']),
                 _f(cv['width_bmd']), _ci(cv['coverage_t'], cv['coverage_t_ci']),
                 _f(cv['width_t'], 2),
                 f'{e["guarantee"][0]:.3f}-{e["guarantee"][1]:.3f}'])
  out += _md(['Column', 'n', 'Coverage (BMD)', 'Width g/cm²', 'Coverage (T)', 'Width T',
              'Expected (theory)'], rows)
  out += ["Expected: the guarantee's range of the mean coverage for this many calibration "
          'studies; one test split scatters around it with SD ' +
          ', '.join(f'{c} {_f(section["columns"][c]["coverage"].get("expected_sd"))}'
                    for c in cols) + ' (calibration and test sampling).', '']
  strata = sorted({s for c in cols for s in section['columns'][c]['coverage_strata']})
  if strata:
    out += ['Coverage (BMD) by sex × age stratum:', '']
    rows = [[s] + [_ci(section['columns'][c]['coverage_strata'].get(s, {}).get(
        'coverage_bmd'), section['columns'][c]['coverage_strata'].get(s, {}).get(
            'coverage_bmd_ci')) + f" (n={section['columns'][c]['coverage_strata'].get(s, {}).get('n', 0)})"
        for c in cols] for s in strata]
    out += _md(['Stratum'] + cols, rows)
  out += ['## Calibration (DXA = intercept + slope × prediction)', '',
          'Slope 1 and intercept 0 when calibrated; slope > 1 means predictions shrink '
          'toward the mean. Calibration-in-the-large (CITL) = mean DXA − mean prediction. '
          '"After" applies the linear recalibration fitted on validation.', '']
  rows = []
  for c in cols:
    cal = section['columns'][c]['calibration']
    for when in ('before', 'after'):
      rows.append([c, when, _f(cal[when]['slope']), _f(cal[when]['intercept']),
                   _f(cal[when]['citl'], 4)])
  out += _md(['Column', '', 'Slope', 'Intercept', 'CITL g/cm²'], rows)
  out += [f'## Screening threshold fixed on validation (target sensitivity '
          f'{section["target_sensitivity"]:.2f})', '',
          'Positive: DXA L1-L4 T ≤ -2.5 (ISCD). Refer for DXA when the predicted T of '
          'the column is at or below the threshold chosen on validation.', '']
  rows = []
  for c in cols:
    s = section['columns'][c]['screening']
    t = s['test'] or {}
    ci = t.get('ci') or {}
    rows.append([c, _f(s['threshold_t'], 2), s['n'], s['n_osteoporosis']] +
                [_ci(t.get(k), ci.get(k)) for k in screening.KEYS])
  out += _md(['Column', 'Threshold T', 'n', 'Osteoporosis', 'Sensitivity', 'Specificity',
              'PPV', 'NPV'], rows)
  return out


def _md(header, rows):
  return (['| ' + ' | '.join(map(str, header)) + ' |', '|' + '---|' * len(header)] +
          ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows] + [''])


# ---------------------------------------------------------- one study


def _pair(lo, hi, digits):
  return [round(float(lo), digits), round(float(hi), digits)]


def assess(bmd: dict, sex: str | None, ref, fitted: dict | None = None,
           recalibrate: bool = False) -> dict:
  """One study's clinical result from its predicted BMD per vertebra.

  T-scores per vertebra (raw and as reported, one decimal); L1-L4 with the
  ISCD exclusions; the WHO category from the reported L1-L4 T-score only;
  with `fitted` (fit / fit_runs) the prediction intervals, a category
  statement and the screening decision. BMD is recalibrated first when
  `recalibrate`.
  """
  variant = 'recalibrated' if recalibrate else 'raw'
  if recalibrate:
    if fitted is None:
      raise ValueError('--recalibrate needs the validation fit (run bmdjax.evaluate)')
    bmd = {v: float(calibration.apply(b, fitted['recalibration'].get(v))) for v, b in bmd.items()}
  out = dict(bmd=bmd, recalibrated=bool(recalibrate), sex=sex, t_score={},
             t_score_reported={}, lumbar=None, who_category=None,
             who_basis=f'{lumbar.LUMBAR} T-score (ISCD 2023), never a single vertebra',
             intervals=None, category_statement=None, screening=None, notes=[])
  pred_t = {}
  if sex is None:
    out['notes'].append('T-scores need sex: pass --sex=F or --sex=M (PatientSex is missing '
                        'from the DICOM header); BMD only')
  else:
    for v, b in bmd.items():
      pred_t[v] = float(tscore.t_score(b, sex, v, ref))
      out['t_score'][v] = pred_t[v]
      out['t_score_reported'][v] = tscore.reported_t(pred_t[v])
    if len(bmd) >= lumbar.MIN_VERTEBRAE:
      row = [[bmd.get(v, np.nan) for v in tscore.VERTEBRAE]]
      comb = lumbar.combine(row, [sex], ref)
      t_row = [pred_t.get(v, np.nan) for v in tscore.VERTEBRAE]
      if np.isfinite(comb['t'][0]):
        t_rep = tscore.reported_t(comb['t'][0])
        pred_t[lumbar.LUMBAR] = float(comb['t'][0])
        out['who_category'] = tscore.who_category(t_rep)
        out['lumbar'] = dict(bmd=float(comb['bmd'][0]), t_score=float(comb['t'][0]),
                             t_score_reported=t_rep, vertebrae=comb['label'][0])
      else:
        out['lumbar'] = dict(bmd=None, t_score=None, t_score_reported=None, vertebrae=None)
      out['lumbar']['excluded'] = lumbar.exclusion_reasons(t_row, comb['included'][0])
      out['lumbar']['method'] = lumbar.METHOD
    else:
      out['notes'].append(f'no WHO category: ISCD diagnoses from {lumbar.LUMBAR}, and this '
                          f'model predicts {", ".join(bmd)} only (combine runs with '
                          'repeated --workdir or use a target=all run)')
  if fitted is None:
    out['notes'].append('no prediction intervals or screening threshold: they are fitted '
                        'on the validation predictions bmdjax.evaluate stores in the run')
    return out
  pred_bmd = dict(bmd)
  if out['lumbar'] and out['lumbar']['bmd'] is not None:
    pred_bmd[lumbar.LUMBAR] = out['lumbar']['bmd']
  intervals = {'level': fitted['level'], 'method': 'split-conformal, validation split'}
  for c, e in fitted[variant].items():
    if c not in pred_bmd:
      continue
    if not (np.isfinite(e['q_bmd']) and np.isfinite(e['q_t'])):
      out['notes'].append(f'no {fitted["level"]:.0%} interval for {c}: {e["n"]} validation '
                          'studies are too few to promise that coverage')
      continue
    iv = {'bmd': _pair(*conformal.interval(pred_bmd[c], e['q_bmd']), 4)}
    if c in pred_t:
      iv['t_score'] = _pair(*conformal.interval(pred_t[c], e['q_t']), 2)
    intervals[c] = iv
  out['intervals'] = intervals
  if lumbar.LUMBAR in intervals and 't_score' in intervals[lumbar.LUMBAR]:
    out['category_statement'] = (f'{fitted["level"]:.0%} interval of the {lumbar.LUMBAR} '
                                 + category_range(*intervals[lumbar.LUMBAR]['t_score']))
  col = screening_column(fitted)
  thr = fitted[variant][col]['screening_threshold_t']
  t = pred_t.get(col)
  out['screening'] = dict(column=col, threshold_t=thr, predicted_t=t,
                          target_sensitivity=fitted['target_sensitivity'],
                          refer_dxa=(None if thr is None or t is None else bool(t <= thr)),
                          decision=screening.decision(t, thr))
  return out
