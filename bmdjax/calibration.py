"""Calibration of BMD predictions: does a predicted 0.80 g/cm2 mean 0.80?

Regression of DXA truth on prediction (the calibration line; slope 1 and
intercept 0 when calibrated), calibration-in-the-large (mean truth minus
mean prediction) and a decile table for the plot. A model trained with a
squared loss on a noisy signal shrinks toward the mean (the paper's Fig. 4:
prediction-on-DXA slope < 1), which shows here as a DXA-on-prediction slope
> 1; the linear recalibration fitted on validation (truth = a + b * pred)
stretches predictions back out. It cannot add information (r is unchanged),
so it trades smaller errors near the mean for fewer missed low BMDs.
"""

from __future__ import annotations

import numpy as np


def _finite(true, pred):
  true, pred = (np.asarray(a, np.float64).reshape(-1) for a in (true, pred))
  ok = np.isfinite(true) & np.isfinite(pred)
  return true[ok], pred[ok]


def line(true, pred) -> dict:
  """slope, intercept (truth = intercept + slope * pred, least squares),
  citl (mean truth - mean prediction) and n; None where undefined."""
  y, x = _finite(true, pred)
  out = dict(n=int(len(x)), slope=None, intercept=None, citl=None)
  if len(x):
    out['citl'] = float(y.mean() - x.mean())
  if len(x) >= 2 and np.var(x) > 1e-14 * max(np.mean(x * x), 1e-300):
    slope = float(np.cov(x, y, bias=True)[0, 1] / np.var(x))
    out.update(slope=slope, intercept=float(y.mean() - slope * x.mean()))
  return out


def fit(true, pred) -> dict:
  """Recalibration (a, b) with recalibrated = a + b * pred, from `line`."""
  fitted = line(true, pred)
  if fitted['slope'] is None:
    raise ValueError(f'cannot fit a recalibration line on {fitted["n"]} validation '
                     'rows with distinct predictions; need >= 2')
  return dict(a=fitted['intercept'], b=fitted['slope'], n=fitted['n'])


def apply(pred, recal: dict | None):
  pred = np.asarray(pred, np.float64)
  return pred if not recal else recal['a'] + recal['b'] * pred


def deciles(true, pred, bins: int = 10) -> list[dict]:
  """Mean prediction and mean truth per prediction decile (the plot's points)."""
  y, x = _finite(true, pred)
  if len(x) < bins:
    bins = max(len(x), 0)
  out = []
  for part in np.array_split(np.argsort(x, kind='mergesort'), bins):
    if len(part):
      out.append(dict(n=int(len(part)), pred=float(x[part].mean()),
                      true=float(y[part].mean()),
                      true_sd=float(y[part].std(ddof=1)) if len(part) > 1 else None))
  return out
