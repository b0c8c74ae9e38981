"""T-scores and WHO categories from a young-adult lumbar BMD reference.

T = (BMD - mean) / sd, with mean and sd of young adults of the same sex for the
same vertebra. The paper read its table off the DXA machine; manufacturers
differ, so we ship one published table as the default
(`data_prep/data/tscore_reference.csv`, Biology Direct 2025,
doi:10.1186/s13062-025-00627-w, Table 1) and accept a CSV of one's own
(data_prep/reference.py reads and checks both: data prep stratifies the split
by osteoporosis status with the same table).
"""

import dataclasses
import decimal
from typing import Mapping

import numpy as np

from data_prep import reference
from data_prep.reference import normalize_sex
from data_prep.schema import OSTEOPENIA_T, OSTEOPOROSIS_T, VERTEBRAE  # noqa: F401

SEXES = ('M', 'F')
WHO_CATEGORIES = ('normal', 'osteopenia', 'osteoporosis')  # by falling T
T_DECIMALS = 12


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


def load_reference(path: str | None = None) -> Reference:
  """Loads a reference CSV (`sex,vertebra,mean,sd`, data_prep.reference);
  None = the shipped default."""
  table, source = reference.read(path)
  return Reference(table=table, source=source)


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
  SR, FHIR) the category is taken from this value, so a printed "-1.0" always
  reads "normal" (WHO: T >= -1) and "-2.5" always "osteoporosis". Decimal of the shortest repr
  rounds -0.95 to -1.0 (float rounding would give -0.9).
  """
  if t is None or not np.isfinite(t):
    return float('nan')
  d = decimal.Decimal(repr(float(t))).quantize(decimal.Decimal('0.1'),
                                               rounding=decimal.ROUND_HALF_UP)
  return float(d) + 0.0  # -0.0 -> 0.0
