"""A screening threshold on predicted T fixed on validation, before the test set.

Positive = osteoporosis as a densitometrist would diagnose it: DXA L1-L4
T-score <= -2.5 (bmdjax/lumbar.py). A study is flagged "refer for DXA" when
its predicted T-score is at or below the threshold; the threshold is the
lowest one reaching the target sensitivity on the validation split (most
specific at that sensitivity), so the test split's sensitivity, specificity,
PPV and NPV are honest estimates. The paper's fixed thresholds (T <= -2.5,
<= -1) stay in Table II.
"""

from __future__ import annotations

import math

import numpy as np

from bmdjax import metrics

DEFAULT_SENSITIVITY = 0.90
KEYS = ('sensitivity', 'specificity', 'ppv', 'npv')


def choose_threshold(positive, pred_t, target: float = DEFAULT_SENSITIVITY):
  """Lowest predicted-T threshold with sensitivity >= target on these rows:
  the ceil(target * n_pos)-th lowest predicted T among positives. None
  without positives."""
  if not 0.0 < target <= 1.0:
    raise ValueError(f'target sensitivity must be in (0, 1], got {target}')
  positive = np.asarray(positive, bool).reshape(-1)
  pred_t = np.asarray(pred_t, np.float64).reshape(-1)
  scores = np.sort(pred_t[positive & np.isfinite(pred_t)])
  if not len(scores):
    return None
  k = max(1, math.ceil(target * len(scores) - 1e-9))
  return float(scores[k - 1])


def rates(positive, flagged) -> dict:
  """Sensitivity, specificity, PPV, NPV and the 2x2 counts (None if undefined)."""
  p = np.asarray(positive, bool).reshape(-1)
  f = np.asarray(flagged, bool).reshape(-1)
  tp, fn = int((p & f).sum()), int((p & ~f).sum())
  fp, tn = int((~p & f).sum()), int((~p & ~f).sum())
  div = lambda a, b: a / b if b else None  # noqa: E731
  return dict(sensitivity=div(tp, tp + fn), specificity=div(tn, tn + fp),
              ppv=div(tp, tp + fp), npv=div(tn, tn + fn), tp=tp, fn=fn, fp=fp, tn=tn)


def rates_with_ci(positive, flagged, patient_ids, bootstrap: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict:
  """`rates` plus patient-level bootstrap percentile intervals under 'ci'."""
  p = np.asarray(positive, bool).reshape(-1)
  f = np.asarray(flagged, bool).reshape(-1)
  out = rates(p, f)
  out['ci'] = None
  if bootstrap and len(p):
    draws = {k: [] for k in KEYS}
    with np.errstate(invalid='ignore', divide='ignore'):
      for w in metrics.patient_weights(patient_ids, bootstrap, seed):
        tp, fn = w @ (p & f), w @ (p & ~f)
        fp, tn = w @ (~p & f), w @ (~p & ~f)
        for k, (a, b) in zip(KEYS, ((tp, tp + fn), (tn, tn + fp), (tp, tp + fp),
                                    (tn, tn + fn))):
          draws[k].append(np.where(b > 0, a / np.where(b > 0, b, 1), np.nan))
    with metrics.merged_warnings():
      out['ci'] = {k: metrics.percentile_interval(np.concatenate(v), level, k, 'screening')
                   for k, v in draws.items()}
  return out


def decision(pred_t: float | None, threshold: float | None) -> str:
  """The line predict prints."""
  if threshold is None or pred_t is None or not np.isfinite(pred_t):
    return 'no screening decision (no validation threshold or no predicted T-score)'
  if pred_t <= threshold:
    return f'refer for DXA (predicted T {pred_t:+.2f} <= screening threshold {threshold:+.2f})'
  return (f'no DXA referral indicated by this model (predicted T {pred_t:+.2f} > '
          f'screening threshold {threshold:+.2f})')
