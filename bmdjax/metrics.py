r"""Clinical metrics of BMD predictions, as reported in the paper.

Tables I/II/V and Figs 4/6 of Wang et al.: Pearson r, RMSE, the linear fit of
prediction on DXA truth, Bland-Altman agreement, osteoporosis AUC and
sensitivity/specificity at absolute (T <= -2.5, T < -1) and relative (lowest
10%/20%) thresholds, with 95% bootstrap intervals that resample patients.
Pure numpy: undefined values are None (with an UndefinedMetricWarning saying
why), never NaN, so results dump to strict JSON.

The report of a predictions table (metrics.json, tables.md, PNGs) is
bmdjax.report's, on the command line `bmdjax metrics --predictions=P.csv
--out=DIR`; docs/metrics.md documents every key of metrics.json.
"""

import contextlib
import typing
import warnings

import numpy as np

from data_prep.schema import OSTEOPENIA_T, OSTEOPOROSIS_T  # noqa: F401

RELATIVE_FRACTIONS = {'last10': 0.10, 'last20': 0.20}

# Keys of the per-vertebra (and "avg") metric dict, in table order.
METRIC_KEYS = (
    'n', 'n_osteoporosis', 'n_osteopenia',
    'r', 'rmse', 'r2', 'slope', 'intercept',
    'ba_mean', 'ba_sd', 'ba_loa_low', 'ba_loa_high',
    'auc',
    'sens_osteoporosis', 'spec_osteoporosis',
    'sens_osteopenia', 'spec_osteopenia',
    'sens_last10', 'spec_last10', 'sens_last20', 'spec_last20',
)
COUNT_KEYS = ('n', 'n_osteoporosis', 'n_osteopenia')
# Metrics that get bootstrap intervals (relative thresholds excluded: their
# cut-off moves with every resample, so an interval would mix two sources).
CI_KEYS = (
    'r', 'rmse', 'r2', 'slope', 'intercept', 'ba_mean', 'ba_sd', 'auc',
    'sens_osteoporosis', 'spec_osteoporosis',
    'sens_osteopenia', 'spec_osteopenia',
)
BA_FACTOR = 1.96
_TINY = 1e-14  # relative variance below which a column counts as constant


class UndefinedMetricWarning(UserWarning):
  """A metric is undefined for these data and was reported as None."""


class Pairs(typing.NamedTuple):
  """One vertebra's truth and prediction, in BMD (g/cm2) and T-score units."""
  true: np.ndarray
  pred: np.ndarray
  true_t: np.ndarray
  pred_t: np.ndarray


_SEP = ' undefined: '  # warnings read '<context>: <what> undefined: <why>'


def _undefined(what: str, why: str, context: str = ''):
  """Warns that `what` is undefined and returns None (the JSON value)."""
  prefix = f'{context}: ' if context else ''
  warnings.warn(f'{prefix}{what}{_SEP}{why}', UndefinedMetricWarning,
                stacklevel=3)
  return None


@contextlib.contextmanager
def merged_warnings():
  """Decorator merging UndefinedMetricWarnings of the same context and reason.

  One missing class makes several metrics undefined at once; a single line
  ("L1: auc, sensitivity undefined: ...") reads better than a flood. The
  merged warning points at the decorated function's caller.
  """
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    yield
  groups = {}
  for w in caught:
    msg = str(w.message)
    if not issubclass(w.category, UndefinedMetricWarning) or _SEP not in msg:
      warnings.warn(w.message, w.category, stacklevel=4)
      continue
    head, why = msg.split(_SEP, 1)
    ctx, _, what = head.rpartition(': ')
    groups.setdefault((ctx, why), []).append(what)
  for (ctx, why), whats in groups.items():
    prefix = f'{ctx}: ' if ctx else ''
    # stacklevel: generator, contextlib __exit__, decorator wrapper, caller.
    warnings.warn(f'{prefix}{", ".join(whats)}{_SEP}{why}',
                  UndefinedMetricWarning, stacklevel=4)


def _as_float(x) -> np.ndarray:
  return np.asarray(x, dtype=float).reshape(-1)


def finite_mask(*arrays) -> np.ndarray:
  """Rows where every array is finite: missing values drop per vertebra."""
  mask = np.ones(len(_as_float(arrays[0])), dtype=bool)
  for a in arrays:
    mask &= np.isfinite(_as_float(a))
  return mask


def _is_constant(x: np.ndarray) -> bool:
  scale = max(float(np.mean(x * x)), 1e-300)
  return float(np.var(x)) <= _TINY * scale


# ----------------------------------------------------------------- regression


def pearson_r(true, pred, context: str = '') -> float | None:
  """Pearson correlation (the paper's R-value); None if n < 2 or constant."""
  x, y = _as_float(true), _as_float(pred)
  if len(x) < 2:
    return _undefined('r', f'needs >= 2 rows, got {len(x)}', context)
  if _is_constant(x) or _is_constant(y):
    which = 'predictions' if _is_constant(y) else 'ground truth'
    return _undefined('r', f'{which} constant', context)
  xc, yc = x - x.mean(), y - y.mean()
  r = float(np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc)))
  return max(-1.0, min(1.0, r))


def rmse(true, pred, context: str = '') -> float | None:
  """Root mean squared error in g/cm2; None without rows."""
  x, y = _as_float(true), _as_float(pred)
  if len(x) == 0:
    return _undefined('rmse', 'no rows', context)
  return float(np.sqrt(np.mean((y - x) ** 2)))


def linear_fit(true, pred, context: str = '') -> dict:
  """Least squares of PREDICTION on TRUTH (pred = slope * true + intercept).

  As the paper's Fig. 4: slope 1 and intercept 0 mean no proportional or fixed
  bias. r2 is the fit's coefficient of determination (= r**2), not
  1 - SSE/SST of the raw predictions.
  """
  x, y = _as_float(true), _as_float(pred)
  out = dict(slope=None, intercept=None, r2=None)
  if len(x) < 2:
    _undefined('slope/intercept/r2', f'needs >= 2 rows, got {len(x)}', context)
    return out
  if _is_constant(x):
    _undefined('slope/intercept/r2', 'ground truth constant', context)
    return out
  xc, yc = x - x.mean(), y - y.mean()
  slope = float(np.dot(xc, yc) / np.dot(xc, xc))
  out['slope'] = slope
  out['intercept'] = float(y.mean() - slope * x.mean())
  if _is_constant(y):
    _undefined('r2', 'predictions constant', context)
  else:
    r = np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    out['r2'] = float(min(1.0, r * r))
  return out


def bland_altman(true, pred, context: str = '') -> dict:
  """Bland-Altman: mean and SD (ddof=1) of pred - true, 95% limits of
  agreement mean +- 1.96 SD. Positive mean = over-estimation."""
  x, y = _as_float(true), _as_float(pred)
  out = dict(ba_mean=None, ba_sd=None, ba_loa_low=None, ba_loa_high=None)
  if len(x) < 2:
    _undefined('Bland-Altman', f'needs >= 2 rows, got {len(x)}', context)
    return out
  d = y - x
  mean, sd = float(d.mean()), float(d.std(ddof=1))
  out.update(ba_mean=mean, ba_sd=sd, ba_loa_low=mean - BA_FACTOR * sd,
             ba_loa_high=mean + BA_FACTOR * sd)
  return out


# ------------------------------------------------------------- classification


def average_ranks(x) -> np.ndarray:
  """1-based ranks, ties sharing their mean rank (as scipy.stats.rankdata)."""
  x = _as_float(x)
  order = np.argsort(x, kind='mergesort')
  xs = x[order]
  new = np.r_[True, xs[1:] != xs[:-1]]
  starts = np.flatnonzero(new)
  ends = np.r_[starts[1:], len(xs)]
  avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1..ends
  ranks = np.empty(len(x))
  ranks[order] = np.repeat(avg, ends - starts)
  return ranks


def _check_classes(labels: np.ndarray, what: str, context: str) -> bool:
  n_pos = int(labels.sum())
  if n_pos == 0 or n_pos == len(labels):
    kind = 'positives' if n_pos == 0 else 'negatives'
    _undefined(what, f'only one class in the ground truth (no {kind} among '
               f'{len(labels)} rows)', context)
    return False
  return True


def roc_auc(labels, scores, context: str = '') -> float | None:
  """ROC AUC, higher score = more likely positive (Mann-Whitney U).

  Tied scores count one half, which equals sklearn.metrics.roc_auc_score.
  """
  labels = np.asarray(labels, dtype=bool).reshape(-1)
  if not _check_classes(labels, 'auc', context):
    return None
  ranks = average_ranks(scores)
  n_pos = labels.sum()
  n_neg = len(labels) - n_pos
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def roc_curve(labels, scores, context: str = ''):
  """(fpr, tpr, thresholds) at every distinct score, descending.

  thresholds[i] flags score >= thresholds[i]; the first point (0, 0) has
  threshold +inf (as sklearn.metrics.roc_curve with drop_intermediate=False).
  None when only one class is present.
  """
  labels = np.asarray(labels, dtype=bool).reshape(-1)
  if not _check_classes(labels, 'ROC curve', context):
    return None
  s = _as_float(scores)
  order = np.argsort(-s, kind='mergesort')
  s, y = s[order], labels[order]
  last = np.r_[s[1:] != s[:-1], True]  # last row of each tie group
  tps = np.cumsum(y)[last]
  fps = np.cumsum(~y)[last]
  fpr = np.r_[0.0, fps / fps[-1]]
  tpr = np.r_[0.0, tps / tps[-1]]
  return fpr, tpr, np.r_[np.inf, s[last]]


def sens_spec(labels, flagged, what: str = '', context: str = ''):
  """(sensitivity, specificity) of boolean flags against boolean truth.

  Sensitivity needs positives and specificity negatives; a missing class
  makes that one None.
  """
  labels = np.asarray(labels, dtype=bool).reshape(-1)
  flagged = np.asarray(flagged, dtype=bool).reshape(-1)
  n_pos = int(labels.sum())
  n_neg = len(labels) - n_pos
  tag = f' ({what})' if what else ''
  sens = (float((labels & flagged).sum() / n_pos) if n_pos else
          _undefined(f'sensitivity{tag}', 'no positives in the ground truth',
                     context))
  spec = (float((~labels & ~flagged).sum() / n_neg) if n_neg else
          _undefined(f'specificity{tag}', 'no negatives in the ground truth',
                     context))
  return sens, spec


def lowest_fraction(values, fraction: float) -> np.ndarray:
  """Flags the lowest `fraction` of values (the paper's "last 10%/20%").

  Cut-off = the ceil(fraction * n)-th smallest value; ties at the cut-off are
  all flagged, so the rule is a threshold and its point lies on the ROC curve.
  """
  v = _as_float(values)
  if len(v) == 0:
    return np.zeros(0, dtype=bool)
  k = max(1, int(np.ceil(fraction * len(v) - 1e-9)))
  cut = np.partition(v, k - 1)[k - 1]
  return v <= cut


# ------------------------------------------------------------- per vertebra


@merged_warnings()
def vertebra_metrics(pairs: Pairs, context: str = '') -> dict:
  """All METRIC_KEYS for one vertebra; rows with any NaN are dropped first.

  Osteoporosis: truth T <= -2.5 is positive, the predicted T-score is the
  score (lower = more likely, so AUC uses -pred_t); osteopenia or worse:
  T < -1 (WHO: T = -1.0 is still normal).
  Relative thresholds flag the lowest 10%/20% of predicted T-scores.
  """
  mask = finite_mask(*pairs)
  x, y, tt, pt = (_as_float(a)[mask] for a in pairs)
  out = dict.fromkeys(METRIC_KEYS)
  out['n'] = int(mask.sum())
  porosis = tt <= OSTEOPOROSIS_T
  penia = tt < OSTEOPENIA_T
  out['n_osteoporosis'] = int(porosis.sum())
  out['n_osteopenia'] = int(penia.sum())
  if out['n'] < 2:
    _undefined('all metrics', f'needs >= 2 rows with truth and prediction, '
               f'got {out["n"]}', context)
    return out
  out['r'] = pearson_r(x, y, context)
  out['rmse'] = rmse(x, y, context)
  out.update(linear_fit(x, y, context))
  out.update(bland_altman(x, y, context))
  out['auc'] = roc_auc(porosis, -pt, context)
  out['sens_osteoporosis'], out['spec_osteoporosis'] = sens_spec(
      porosis, pt <= OSTEOPOROSIS_T, 'osteoporosis', context)
  out['sens_osteopenia'], out['spec_osteopenia'] = sens_spec(
      penia, pt < OSTEOPENIA_T, 'osteopenia', context)
  for name, frac in RELATIVE_FRACTIONS.items():
    out[f'sens_{name}'], out[f'spec_{name}'] = sens_spec(
        porosis, lowest_fraction(pt, frac), name, context)
  return out


STRATUM_KEYS = ('n', 'n_osteoporosis', 'r', 'rmse', 'auc')


@merged_warnings()
def stratum_metrics(pairs: Pairs, context: str = '') -> dict:
  """The Table V subset (n, r, rmse, auc) for one vertebra in one stratum.

  Computed alone so that small strata do not warn about metrics the table
  does not show.
  """
  mask = finite_mask(*pairs)
  x, y, tt, pt = (_as_float(a)[mask] for a in pairs)
  porosis = tt <= OSTEOPOROSIS_T
  out = dict(n=int(mask.sum()), n_osteoporosis=int(porosis.sum()), r=None,
             rmse=None, auc=None)
  if out['n'] < 2:
    _undefined('r/rmse/auc', f'needs >= 2 rows, got {out["n"]}', context)
    return out
  out['r'] = pearson_r(x, y, context)
  out['rmse'] = rmse(x, y, context)
  out['auc'] = roc_auc(porosis, -pt, context)
  return out


@merged_warnings()
def average_metrics(per_vertebra: dict, context: str = 'avg',
                    keys: tuple = METRIC_KEYS) -> dict:
  """The paper's Avg column: mean over vertebrae of each value.

  A value undefined for any vertebra is undefined in the average (averaging
  the rest would silently change what Avg means).
  """
  out = {}
  names = list(per_vertebra)
  for key in keys:
    vals = [per_vertebra[v].get(key) for v in names]
    missing = [v for v, x in zip(names, vals) if x is None]
    if not names:
      out[key] = None
    elif missing:
      out[key] = _undefined(key, f'undefined for {", ".join(missing)}',
                            context)
    else:
      out[key] = float(np.mean(vals))
  return out


# ----------------------------------------------------------------- bootstrap


_CHUNK = 250  # resamples per block: bounds memory, fixed for reproducibility


def patient_weights(patient_ids, n_boot: int, seed: int):
  """Yields (b, n_rows) float blocks of resampling weights, n_boot rows in all.

  Each resample draws patients with replacement; a row's weight is how often
  its patient was drawn, so all images of a patient move together (rows of
  one patient are not independent).
  """
  _, codes = np.unique(np.asarray(patient_ids).astype(str),
                       return_inverse=True)
  codes = codes.reshape(-1)
  n_pat = int(codes.max()) + 1 if len(codes) else 0
  rng = np.random.default_rng(seed)
  done = 0
  while done < n_boot:
    b = min(_CHUNK, n_boot - done)
    draws = rng.integers(0, n_pat, size=(b, n_pat))
    flat = (np.arange(b)[:, None] * n_pat + draws).reshape(-1)
    counts = np.bincount(flat, minlength=b * n_pat).reshape(b, n_pat)
    yield counts[:, codes].astype(float)
    done += b


def _wmean(w, sw, v):
  return (w @ v) / sw


def weighted_metrics(w: np.ndarray, pairs: Pairs) -> dict:
  """CI_KEYS for each row of weights w (b, n_rows), as (b,) arrays.

  Integer weights give exactly the metrics of the data with rows repeated;
  undefined values are NaN here (dropped when taking percentiles).
  """
  mask = finite_mask(*pairs)
  w = np.atleast_2d(w)[:, mask]
  x, y, tt, pt = (_as_float(a)[mask] for a in pairs)
  b = w.shape[0]
  nan = np.full(b, np.nan)
  if len(x) == 0:
    return {k: nan.copy() for k in CI_KEYS}
  sw = w.sum(1)
  x0, y0 = x.mean(), y.mean()
  xc, yc = x - x0, y - y0
  with np.errstate(divide='ignore', invalid='ignore'):
    mx, my = _wmean(w, sw, xc), _wmean(w, sw, yc)
    sxx = _wmean(w, sw, xc * xc) - mx ** 2
    syy = _wmean(w, sw, yc * yc) - my ** 2
    sxy = _wmean(w, sw, xc * yc) - mx * my
    ok_x = sxx > _TINY * max(np.mean(x * x), 1e-300)
    ok_y = syy > _TINY * max(np.mean(y * y), 1e-300)
    r = np.where(ok_x & ok_y, sxy / np.sqrt(sxx * syy), np.nan)
    slope = np.where(ok_x, sxy / sxx, np.nan)
    d = y - x
    dc = d - d.mean()
    md = _wmean(w, sw, dc)
    var_d = (w @ (dc * dc) - sw * md ** 2) / (sw - 1)
    out = dict(
        r=np.clip(r, -1, 1),
        rmse=np.sqrt(_wmean(w, sw, d * d)),
        r2=np.clip(r * r, 0, 1),
        slope=slope,
        intercept=(my + y0) - slope * (mx + x0),
        ba_mean=md + d.mean(),
        ba_sd=np.where(sw > 1, np.sqrt(np.maximum(var_d, 0)), np.nan),
        auc=_weighted_auc(w, tt <= OSTEOPOROSIS_T, -pt),
    )
    for name, pos, flag in (
        ('osteoporosis', tt <= OSTEOPOROSIS_T, pt <= OSTEOPOROSIS_T),
        ('osteopenia', tt < OSTEOPENIA_T, pt < OSTEOPENIA_T)):
      out[f'sens_{name}'] = (w @ (pos & flag)) / (w @ pos)
      out[f'spec_{name}'] = (w @ (~pos & ~flag)) / (w @ ~pos)
  return out


def _weighted_auc(w: np.ndarray, labels: np.ndarray, scores: np.ndarray):
  """Mann-Whitney AUC per weight row: sum over (pos, neg) of w_p w_n
  [s_p > s_n] + 0.5 [s_p == s_n], over (sum w_p)(sum w_n)."""
  order = np.argsort(scores, kind='mergesort')
  s = scores[order]
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
  ws = w[:, order]
  lab = labels[order]
  gpos = np.add.reduceat(ws * lab, starts, axis=1)
  gneg = np.add.reduceat(ws * ~lab, starts, axis=1)
  neg_below = np.cumsum(gneg, axis=1) - gneg
  u = np.sum(gpos * (neg_below + 0.5 * gneg), axis=1)
  return u / (gpos.sum(1) * gneg.sum(1))


def bootstrap_samples(patient_ids, sets: dict, n_boot: int = 1000,
                      seed: int = 0) -> dict:
  """Resampled CI_KEYS for several Pairs under the SAME patient resamples.

  `sets` maps any key (e.g. ('model', 'L1')) to Pairs over the same rows;
  sharing resamples lets callers average vertebrae per resample (Avg) and
  take paired differences (model minus baseline). Returns key -> metric ->
  (n_boot,) array, NaN where undefined.
  """
  blocks = {k: {m: [] for m in CI_KEYS} for k in sets}
  for w in patient_weights(patient_ids, n_boot, seed):
    for k, pairs in sets.items():
      for m, v in weighted_metrics(w, pairs).items():
        blocks[k][m].append(v)
  return {k: {m: np.concatenate(v) if v else np.zeros(0)
              for m, v in ms.items()} for k, ms in blocks.items()}


def percentile_interval(samples, level: float = 0.95, what: str = '',
                        context: str = ''):
  """[low, high] percentile interval of the defined resamples, or None.

  Resamples where the metric is undefined (e.g. no osteoporosis drawn) are
  dropped with a warning saying how many.
  """
  s = _as_float(samples)
  ok = np.isfinite(s)
  if not ok.any():
    return _undefined(what, f'in every one of {len(s)} bootstrap resamples '
                      '(no interval)', context)
  if not ok.all():
    _undefined(what, f'in {int((~ok).sum())} of {len(s)} bootstrap '
               'resamples (interval from the rest)', context)
  tail = 50 * (1 - level)
  lo, hi = np.percentile(s[ok], [tail, 100 - tail])
  return [float(lo), float(hi)]


@merged_warnings()
def intervals(samples: dict, level: float = 0.95, context: str = '') -> dict:
  """metric -> [low, high] (or None) for one key of bootstrap_samples."""
  return {m: percentile_interval(v, level, m, context)
          for m, v in samples.items()}


def average_samples(samples_by_vertebra: list) -> dict:
  """Per-resample mean over vertebrae (the Avg column's bootstrap)."""
  return {m: np.mean([s[m] for s in samples_by_vertebra], axis=0)
          for m in CI_KEYS}


def evaluate_vertebrae(pairs_by_vertebra: dict, patient_ids=None,
                       bootstrap: int = 0, seed: int = 0, samples=None,
                       level: float = 0.95, tag: str = '') -> dict:
  """{vertebra: METRIC_KEYS + 'ci', 'avg': ...}: Tables I/II with intervals.

  Intervals come from `samples` (bootstrap_samples output keyed by vertebra,
  when the caller shares resamples with another model) or are drawn here
  from patient_ids; 'ci' is None without either. tag prefixes warnings.
  """
  names = list(pairs_by_vertebra)
  if samples is None and bootstrap and patient_ids is not None:
    samples = bootstrap_samples(patient_ids, pairs_by_vertebra, bootstrap,
                                seed)
  out = {v: vertebra_metrics(pairs_by_vertebra[v], f'{tag}{v}')
         for v in names}
  out['avg'] = average_metrics(out, f'{tag}avg')
  for v in names:
    out[v]['ci'] = (intervals(samples[v], level, f'{tag}{v}') if samples
                    else None)
  out['avg']['ci'] = (intervals(average_samples([samples[v] for v in names]),
                                level, f'{tag}avg') if samples else None)
  return out


# ----------------------------------------------------------------------- CLI


def parse_age_bands(text: str) -> tuple:
  """'40,50,60' -> ((40, 50), (50, 60)); edges must increase."""
  try:
    edges = [float(e) for e in text.split(',') if e.strip()]
  except ValueError as e:
    raise ValueError(f'--age_bands must be comma-separated numbers, got '
                     f'{text!r}') from e
  if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
    raise ValueError(f'--age_bands needs >= 2 increasing edges, got {text!r}')
  edges = [int(e) if e == int(e) else e for e in edges]
  return tuple(zip(edges[:-1], edges[1:]))

