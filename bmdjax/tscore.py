"""T-scores and WHO categories from a young-adult lumbar BMD reference.

T = (BMD - mean) / sd, with mean and sd of young adults of the same sex for the
same vertebra. The paper read its table off the DXA machine; manufacturers
differ, so we ship one published table as the default
(`bmdjax/data/tscore_reference.csv`, Biology Direct 2025,
doi:10.1186/s13062-025-00627-w, Table 1) and accept a CSV of one's own with
the columns `sex,vertebra,mean,sd` (lines starting with `#` are comments; a
`# source: ...` comment names the table in reports).
"""

import dataclasses
import decimal
import functools
import importlib.resources
import os
from typing import Mapping

import numpy as np
import pandas as pd

from data_prep.schema import OSTEOPENIA_T, OSTEOPOROSIS_T, VERTEBRAE  # noqa: F401

SEXES = ('M', 'F')
WHO_CATEGORIES = ('normal', 'osteopenia', 'osteoporosis')  # by falling T
T_DECIMALS = 12
REFERENCE_COLUMNS = ('sex', 'vertebra', 'mean', 'sd')

_SEX_ALIASES = {
    'm': 'M', 'male': 'M', 'man': 'M',
    'f': 'F', 'female': 'F', 'woman': 'F',
}


@dataclasses.dataclass(frozen=True)
class Reference:
  """Young-adult (mean, sd) in g/cm2 keyed by (sex, vertebra)."""
  table: Mapping[tuple[str, str], tuple[float, float]]
  source: str

  def mean_sd(self, sex: str, vertebra: str) -> tuple[float, float]:
    """The (mean, sd) pair; a KeyError says which entry the table lacks."""
    key = (sex, vertebra)
    if key not in self.table:
      raise KeyError(
          f'T-score reference {self.source!r} has no row for sex={sex}, '
          f'vertebra={vertebra}; it has {sorted(self.table)}')
    return self.table[key]


def default_reference_path() -> str:
  """Path of the shipped reference CSV (package data)."""
  return str(importlib.resources.files('bmdjax.data') / 'tscore_reference.csv')


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


def _read_reference_csv(path: str) -> pd.DataFrame:
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


def _validate_reference(df: pd.DataFrame, path: str) -> dict:
  """Checks columns, values and duplicates; returns the lookup dict."""
  df = df.rename(columns=lambda c: str(c).strip().lower())
  missing = [c for c in REFERENCE_COLUMNS if c not in df.columns]
  if missing:
    raise ValueError(
        f'T-score reference {path}: missing column(s) {missing}; expected '
        f'columns {list(REFERENCE_COLUMNS)}, found {list(df.columns)}')
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


def load_reference(path: str | None = None) -> Reference:
  """Loads a reference CSV (`sex,vertebra,mean,sd`); None = shipped default.

  Errors name the file and what is wrong, since a wrong table silently shifts
  every T-score and so every sensitivity/specificity in a report.
  """
  if path is None:
    return _default_reference()
  path = os.fspath(path)
  df = _read_reference_csv(path)
  return Reference(table=_validate_reference(df, path), source=_source_of(path))


@functools.lru_cache(maxsize=1)
def _default_reference() -> Reference:
  path = default_reference_path()
  df = _read_reference_csv(path)
  return Reference(table=_validate_reference(df, path), source=_source_of(path))


def t_score(bmd, sex, vertebra, ref: Reference | None = None) -> np.ndarray:
  """T-score of BMD (g/cm2); bmd, sex and vertebra broadcast together.

  NaN BMD gives NaN T (a missing vertebra stays missing, it does not fail).
  """
  ref = ref if ref is not None else load_reference()
  bmd = np.asarray(bmd, dtype=float)
  sex = normalize_sex(np.asarray(sex, dtype=object))
  vertebra = np.asarray(vertebra, dtype=object)
  bmd, sex, vertebra = np.broadcast_arrays(bmd, sex, vertebra)
  keys = np.char.add(np.char.add(sex.astype(str), '|'),
                     np.char.upper(vertebra.astype(str)))
  uniq, inv = np.unique(keys.ravel(), return_inverse=True)
  stats = np.array([ref.mean_sd(*k.split('|')) for k in uniq]).reshape(-1, 2)
  mean = stats[inv, 0].reshape(bmd.shape)
  sd = stats[inv, 1].reshape(bmd.shape)
  # Rounded to 1e-12: a BMD exactly at a WHO boundary (0.640 g/cm2 is T -2.5 for
  # a woman's L1) must classify as the definition says, not as float error does
  # ((0.640 - 0.960) / 0.128 = -2.4999999999999996).
  out = np.round((bmd - mean) / sd, T_DECIMALS)
  return out if out.ndim else float(out)


def who_category(t):
  """WHO class of a T-score: normal (T >= -1), osteopenia (-2.5 < T < -1),
  osteoporosis (T <= -2.5); None for NaN. WHO 1994 (TRS 843): "within 1 SD
  of the young adult mean" is normal, so T = -1.0 exactly is normal. Scalar in, str out; array in,
  object array out."""
  arr = np.asarray(t, dtype=float)
  out = np.where(arr <= OSTEOPOROSIS_T, 'osteoporosis',
                 np.where(arr < OSTEOPENIA_T, 'osteopenia', 'normal'))
  out = out.astype(object)
  out[np.isnan(arr)] = None
  return out if out.ndim else out.item()


def reported_t(t: float) -> float:
  """T-score as a report prints it: one decimal (ISCD), half away from zero.

  Wherever a T-score is shown next to its category (predict's table, overlay,
  SR, FHIR) the category is taken from this value, so "-1.0" never reads
  "normal" and "-2.5" never reads "osteopenia". Decimal of the shortest repr
  rounds -0.95 to -1.0 (float rounding would give -0.9).
  """
  if t is None or not np.isfinite(t):
    return float('nan')
  d = decimal.Decimal(repr(float(t))).quantize(decimal.Decimal('0.1'),
                                               rounding=decimal.ROUND_HALF_UP)
  return float(d) + 0.0  # -0.0 -> 0.0
