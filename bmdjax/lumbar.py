"""The lumbar spine result as a densitometrist reports it (ISCD 2023).

ISCD official positions: diagnose from L1-L4, never from one vertebra; a
vertebra whose T-score differs by more than 1.0 from its neighbour is
excluded; with fewer than two evaluable vertebrae there is no lumbar
diagnosis. The WHO category of a study comes only from its L1-L4 T-score.

How L1-L4 is combined without vertebral areas. A DXA machine divides the
summed bone mineral content by the summed projected area, i.e. the
area-weighted mean of the vertebral BMDs. A chest radiograph gives no areas,
so bmdjax weights the included vertebrae equally (L1-L4 areas differ by
~10-20%, so this moves BMD by a few mg/cm2). The T-score of the combination
uses the same equal weights on the young-adult reference: mean = mean of the
included vertebrae's reference means, sd = mean of their sds (exact for
perfectly correlated vertebrae; inter-vertebral DXA correlations are ~0.9).
The same rule is applied to DXA truth and to predictions, each on its own
T-scores, so evaluation compares like with like.
"""

from __future__ import annotations

import numpy as np

from bmdjax import tscore

LUMBAR = 'L1-L4'  # the combined column's name in every table and output
MAX_NEIGHBOUR_GAP_T = 1.0  # ISCD: exclude a vertebra > 1.0 T from its neighbour
MIN_VERTEBRAE = 2  # ISCD: at least two evaluable vertebrae for a diagnosis
METHOD = ('L1-L4 = equal-weight mean of the BMD of the vertebrae kept by the ISCD rules '
          '(no vertebral areas on a chest radiograph; DXA weights by area); its T-score '
          'uses the equal-weight mean of those vertebrae\'s young-adult means and SDs. '
          'ISCD: a vertebra > 1.0 T from its neighbour is excluded; fewer than 2 '
          'evaluable vertebrae: no L1-L4 result and no WHO category.')


def iscd_included(t) -> np.ndarray:
  """Which of L1..L4 (T-scores, NaN = not evaluable) ISCD keeps.

  Repeatedly, while two adjacent included vertebrae (adjacent among the
  included ones, in anatomical order) differ by > 1.0 T, the vertebra of such
  a pair farthest from the median T of the included ones is excluded (ties:
  the higher T, as fractures and degenerative change raise BMD). Returns a
  bool (4,) mask; fewer than MIN_VERTEBRAE True means no lumbar result.
  """
  t = np.asarray(t, np.float64).reshape(-1)
  keep = np.isfinite(t)
  while keep.sum() >= MIN_VERTEBRAE:
    idx = np.flatnonzero(keep)
    gaps = np.abs(np.diff(t[idx])) > MAX_NEIGHBOUR_GAP_T
    if not gaps.any():
      break
    if keep.sum() == MIN_VERTEBRAE:  # two that disagree: neither can be trusted alone
      keep[:] = False
      break
    suspects = set(idx[:-1][gaps]) | set(idx[1:][gaps])
    median = np.median(t[idx])
    worst = max(suspects, key=lambda i: (abs(t[i] - median), t[i]))
    keep[worst] = False
  return keep


def combine(bmd, sex, ref: tscore.Reference | None = None) -> dict:
  """L1-L4 BMD and T-score of rows of per-vertebra BMD.

  bmd: (n, 4) g/cm2 for L1..L4, NaN where a vertebra is missing; sex: (n,)
  M/F. Returns bmd (n,), t (n,) (NaN where fewer than two vertebrae are
  usable), included (n, 4) bool and label (n,) such as 'L1-L4', 'L1-L3' or
  'L1,L3,L4' (what the densitometrist writes), None when no result.
  """
  ref = ref if ref is not None else tscore.load_reference()
  bmd = np.asarray(bmd, np.float64).reshape(-1, len(tscore.VERTEBRAE))
  sex = np.asarray(sex, dtype=object).reshape(-1)
  n = len(bmd)
  t = tscore.t_score(bmd, sex[:, None], np.array(tscore.VERTEBRAE)[None, :], ref)
  t = np.asarray(t, np.float64).reshape(n, len(tscore.VERTEBRAE))
  stats = np.array([[ref.mean_sd(s, v) for v in tscore.VERTEBRAE]
                    for s in tscore.normalize_sex(sex)]).reshape(n, len(tscore.VERTEBRAE), 2)
  included = np.stack([iscd_included(row) for row in t]) if n else \
      np.zeros((0, len(tscore.VERTEBRAE)), bool)
  k = included.sum(1)
  ok = k >= MIN_VERTEBRAE
  with np.errstate(invalid='ignore', divide='ignore'):
    w = np.where(included, 1.0, 0.0) / np.maximum(k, 1)[:, None]
    value = np.where(ok, np.nansum(np.where(included, bmd, 0.0) * w, 1), np.nan)
    mean = (stats[..., 0] * w).sum(1)
    sd = (stats[..., 1] * w).sum(1)
    t_comb = np.where(ok, (value - mean) / np.where(ok, sd, 1.0), np.nan)
  return dict(bmd=value, t=t_comb, included=included,
              label=np.array([label(row) if o else None
                              for row, o in zip(included, ok)], dtype=object))


def label(included) -> str:
  """'L1-L4', 'L2-L4', 'L1,L3,L4': contiguous runs as ranges, as DXA reports."""
  idx = [i for i, x in enumerate(included) if x]
  if idx and idx == list(range(idx[0], idx[-1] + 1)):
    return (f'{tscore.VERTEBRAE[idx[0]]}-{tscore.VERTEBRAE[idx[-1]]}'
            if len(idx) > 1 else tscore.VERTEBRAE[idx[0]])
  return ','.join(tscore.VERTEBRAE[i] for i in idx)


def exclusion_reasons(t, included) -> list[str]:
  """Why each vertebra left out of L1-L4 was left out (for reports)."""
  out = []
  for v, x, keep in zip(tscore.VERTEBRAE, np.asarray(t, float), included):
    if keep:
      continue
    out.append(f'{v}: not evaluable' if not np.isfinite(x) else
               f'{v}: excluded (T {x:+.1f} differs by > {MAX_NEIGHBOUR_GAP_T:.1f} '
               'from its neighbour)')
  if sum(bool(i) for i in included) < MIN_VERTEBRAE:
    out.append(f'fewer than {MIN_VERTEBRAE} evaluable vertebrae: no L1-L4 result '
               'and no WHO category (ISCD)')
  return out


def frame_bmd(frame, prefix: str) -> np.ndarray:
  """(n, 4) BMD of columns prefix+L1..L4 of a predictions frame, NaN if absent."""
  cols = [frame[f'{prefix}{v}'].to_numpy(float) if f'{prefix}{v}' in frame
          else np.full(len(frame), np.nan) for v in tscore.VERTEBRAE]
  return np.stack(cols, 1) if len(frame) else np.zeros((0, 4))
