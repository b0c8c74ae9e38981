"""Split-conformal prediction intervals: a coverage guarantee with no model
assumptions.

With n exchangeable calibration residuals r_i = |y_i - yhat_i| (the
validation split, never seen by training's gradient) and
q = the ceil((n + 1) * level)-th smallest r_i, a new study's interval
yhat +- q holds its truth with probability >= level, and < level + 1/(n + 1)
when residuals are continuous (Vovk et al. 2005; Lei et al. 2018). Split
conformal rather than conformalised quantile regression because the models
are trained for the mean only; the interval is the same width for every
study (not adaptive to study difficulty), which is the price of needing no
second model head. Too few calibration studies for the level give an
infinite interval, never a silently short one.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_LEVEL = 0.90


def check_level(level: float) -> float:
  level = float(level)
  if not 0.0 < level < 1.0:
    raise ValueError(f'interval level must be in (0, 1), e.g. 0.9; got {level}')
  return level


def quantile(residuals, level: float = DEFAULT_LEVEL) -> float:
  """The conformal half-width from absolute calibration residuals (NaN rows
  dropped); inf when n < level / (1 - level), i.e. too few to promise."""
  level = check_level(level)
  r = np.sort(np.abs(np.asarray(residuals, np.float64).reshape(-1)))
  r = r[np.isfinite(r)]
  k = math.ceil((len(r) + 1) * level - 1e-12)
  return float(r[k - 1]) if 0 < k <= len(r) else math.inf


def guarantee(n: int, level: float) -> tuple[float, float]:
  """[lower, upper] bound on the expected coverage with n calibration points."""
  if n <= 0:
    return (1.0, 1.0)
  k = math.ceil((n + 1) * level - 1e-12)
  return (min(k / (n + 1), 1.0), min((k + 1) / (n + 1), 1.0)) if k <= n else (1.0, 1.0)


def coverage_sd(n_calibration: int, n_test: int, level: float) -> float | None:
  """Standard deviation of the empirical coverage on n_test new studies:
  coverage given the calibration set is Beta(k, n + 1 - k), and the test
  share adds binomial noise. With n = n_test = 165 it is ~0.033, so a single
  split's coverage is expected within level -+ 0.065 (95%)."""
  n = n_calibration
  k = math.ceil((n + 1) * level - 1e-12)
  if n <= 0 or n_test <= 0 or k > n:
    return None
  a, b = k, n + 1 - k
  beta_var = a * b / ((a + b) ** 2 * (a + b + 1))
  return math.sqrt(beta_var + level * (1 - level) / n_test)


def interval(pred, q: float):
  """(low, high) arrays: pred -+ q."""
  pred = np.asarray(pred, np.float64)
  return pred - q, pred + q


def covered(true, low, high) -> np.ndarray:
  """1.0 where truth lies in [low, high], 0.0 outside, NaN where unknown."""
  true, low, high = (np.asarray(a, np.float64) for a in (true, low, high))
  out = ((true >= low) & (true <= high)).astype(np.float64)
  out[~(np.isfinite(true) & ~np.isnan(low) & ~np.isnan(high))] = np.nan
  return out
