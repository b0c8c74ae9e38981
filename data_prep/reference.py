"""The young-adult lumbar BMD reference: (sex, vertebra) -> (mean, sd) in g/cm2.

T-scores are taken against it (bmdjax.tscore), and data prep needs it too: the
patient split is stratified by osteoporosis status, which is a T-score. So the
table and its reader live here, at the bottom of the dependency order. The
shipped table (`data_prep/data/tscore_reference.csv`, Biology Direct 2025,
doi:10.1186/s13062-025-00627-w, Table 1) is the default; a CSV of one's own has
the columns `sex,vertebra,mean,sd` (lines starting with `#` are comments; a
`# source: ...` comment names the table in reports).
"""

from __future__ import annotations

import functools
import importlib.resources
import os

import numpy as np
import pandas as pd

from data_prep.schema import VERTEBRAE

COLUMNS = ('sex', 'vertebra', 'mean', 'sd')

_SEX_ALIASES = {
    'm': 'M', 'male': 'M', 'man': 'M',
    'f': 'F', 'female': 'F', 'woman': 'F',
}


def default_path() -> str:
  """Path of the shipped reference CSV (package data)."""
  return str(importlib.resources.files('data_prep.data') / 'tscore_reference.csv')


def normalize_sex(values) -> np.ndarray:
  """Maps 'M'/'F'/'male'/'female' (any case) to 'M'/'F'.

  T-scores need sex, so anything else (missing, 'O', numbers) is an error that
  lists the offending values rather than a silent NaN.
  """
  arr = np.asarray(values, dtype=object).reshape(-1)
  out = np.empty(arr.shape, dtype=object)
  bad = set()
  for i, v in enumerate(arr):
    key = str(v).strip().lower() if isinstance(v, str) else None
    out[i] = _SEX_ALIASES.get(key)
    if out[i] is None:
      bad.add(repr(v))
  if bad:
    raise ValueError(
        f'sex must be M or F (or male/female); got {", ".join(sorted(bad))}')
  return out.reshape(np.shape(values))


def _read_csv(path: str) -> pd.DataFrame:
  """Reads the CSV; wraps parser errors so the message names the file."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'T-score reference file not found: {path}')
  try:
    return pd.read_csv(path, comment='#', skipinitialspace=True)
  except Exception as e:  # pandas raises several types; all mean a bad file.
    raise ValueError(f'T-score reference {path}: cannot parse CSV ({e})') from e


def _source_of(path: str) -> str:
  """The `# source:` comment if any, else the path."""
  with open(path, encoding='utf-8') as f:
    for line in f:
      s = line.strip()
      if s.startswith('#') and s[1:].strip().lower().startswith('source:'):
        return s[1:].strip()[len('source:'):].strip()
  return path


def _validate(df: pd.DataFrame, path: str) -> dict:
  """Checks columns, values and duplicates; returns the lookup dict."""
  df = df.rename(columns=lambda c: str(c).strip().lower())
  missing = [c for c in COLUMNS if c not in df.columns]
  if missing:
    raise ValueError(
        f'T-score reference {path}: missing column(s) {missing}; expected '
        f'columns {list(COLUMNS)}, found {list(df.columns)}')
  if df.empty:
    raise ValueError(f'T-score reference {path}: no rows')
  errors = []
  table = {}
  for i, row in df.iterrows():
    line = f'row {i + 1}'
    try:
      sex = normalize_sex([row['sex']])[0]
    except ValueError as e:
      errors.append(f'{line}: {e}')
      continue
    vert = str(row['vertebra']).strip().upper()
    if vert not in VERTEBRAE:
      errors.append(f'{line}: vertebra must be one of {VERTEBRAE}, got '
                    f'{row["vertebra"]!r}')
      continue
    mean = pd.to_numeric(row['mean'], errors='coerce')
    sd = pd.to_numeric(row['sd'], errors='coerce')
    if not np.isfinite(mean) or not np.isfinite(sd) or sd <= 0:
      errors.append(f'{line}: mean and sd must be numbers with sd > 0, got '
                    f'mean={row["mean"]!r}, sd={row["sd"]!r}')
      continue
    if (sex, vert) in table:
      errors.append(f'{line}: duplicate entry for sex={sex}, vertebra={vert}')
      continue
    table[(sex, vert)] = (float(mean), float(sd))
  if errors:
    raise ValueError(f'T-score reference {path}: ' + '; '.join(errors))
  return table


def read(path: str | None = None) -> tuple[dict, str]:
  """(table, source) of a reference CSV; None = the shipped one.

  Errors name the file and what is wrong, since a wrong table silently shifts
  every T-score and so every sensitivity/specificity in a report.
  """
  if path is None:
    return _read_default()
  path = os.fspath(path)
  return _validate(_read_csv(path), path), _source_of(path)


@functools.lru_cache(maxsize=1)
def _read_default() -> tuple[dict, str]:
  path = default_path()
  return _validate(_read_csv(path), path), _source_of(path)
