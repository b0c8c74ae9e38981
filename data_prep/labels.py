"""labels.csv and landmarks.csv: reading and checking them, and the
patient-level split.

Light on purpose (numpy and pandas only): screening reads landmarks.csv
through here without the dataset writer's dependencies.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from data_prep import rois
from data_prep.schema import OSTEOPOROSIS_T, SEXES, SPLITS, VERTEBRAE

# Physiologically possible DXA lumbar BMD (g/cm2); outside is a data error.
BMD_RANGE = (0.2, 2.5)


# Cells that mean "no value" (a vertebra excluded by the densitometrist).
MISSING = ("", "na", "n/a", "nan", "none", "null", "-")
AGE_RANGE = (0, 120)


def _bmd(name: str, cell: str) -> tuple[float, str | None]:
  """One BMD cell -> (value or NaN, problem or None)."""
  if cell.lower() in MISSING:
    return float("nan"), None
  try:
    value = float(cell)
  except ValueError:
    hint = "; use a point as decimal separator" if "," in cell else ""
    return float("nan"), f"{name} {cell!r} is not a number{hint}"
  if not np.isfinite(value):
    return value, f"{name} {cell!r} is not a finite number"
  if value < 0:
    return value, f"{name} = {value} g/cm2 is negative (a T- or Z-score?)"
  if not BMD_RANGE[0] <= value <= BMD_RANGE[1]:
    hint = ("; values in mg/cm2 must be divided by 1000"
            if 1000 * BMD_RANGE[0] <= value <= 1000 * BMD_RANGE[1] else "")
    return value, (f"{name} = {value} g/cm2 is outside the plausible range "
                   f"{BMD_RANGE[0]}-{BMD_RANGE[1]}{hint}")
  return value, None


def _check_row(row, has_split: bool) -> tuple[dict, str | None]:
  """One labels.csv row -> (record, problem or None)."""
  rec = {"patient_id": row["patient_id"].strip(), "image": row["image"].strip()}
  sex = row["sex"].strip().upper()[:1]
  if not rec["patient_id"] or not rec["image"]:
    return rec, "empty patient_id or image"
  image = os.path.normpath(rec["image"])
  if os.path.isabs(image) or image.split(os.sep)[0] == "..":
    return rec, f"image {rec['image']!r} must be a path inside --dicom_dir"
  rec["image"] = image
  if sex not in SEXES:
    return rec, f"sex {row['sex']!r} is not F or M"
  rec["sex"] = sex
  try:
    rec["age"] = float(row["age"])
  except ValueError:
    return rec, f"age {row['age']!r} is not a number"
  if not AGE_RANGE[0] <= rec["age"] <= AGE_RANGE[1]:
    return rec, f"age {row['age']!r} is outside {AGE_RANGE[0]}-{AGE_RANGE[1]}"
  for v in VERTEBRAE:
    rec[v], problem = _bmd(v, row[v].strip())
    if problem:
      return rec, problem
  if all(np.isnan(rec[v]) for v in VERTEBRAE):
    return rec, "no BMD value for any vertebra"
  if has_split:
    split = row["split"].strip().lower()
    split = {"val": "validation", "valid": "validation"}.get(split, split)
    if split and split not in SPLITS:
      return rec, f"split {row['split']!r} is not one of {', '.join(SPLITS)}"
    rec["split"] = split
  return rec, None


def _values(rec: dict) -> tuple:
  """What two rows for one image must agree on (NaN equal to NaN)."""
  return tuple(None if isinstance(x, float) and np.isnan(x) else x
               for k, x in rec.items() if k != "label_line")


def load_labels(path: str) -> tuple[pd.DataFrame, list[dict]]:
  """Validated labels; returns (good rows, rejected rows with reasons).

  A missing BMD cell is fine (NaN, masked in training); a row with no usable
  BMD at all, or with an unreadable or implausible value, is rejected with its
  line number and reason rather than silently dropped. Rows for one image that
  agree are one study (the repeats are reported); rows that disagree are all
  rejected, since nothing says which one is right.
  """
  try:
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
  except UnicodeDecodeError:
    raise SystemExit(f"{path}: labels CSV is not UTF-8 text; save it as UTF-8 CSV")
  except Exception as e:
    raise SystemExit(f"{path}: cannot read labels CSV ({e})")
  df.columns = [str(c).strip() for c in df.columns]
  required = ["patient_id", "image", "sex", "age", *VERTEBRAE]
  missing = [c for c in required if c not in df.columns]
  if missing:
    hint = ("; the file looks semicolon-separated, save it comma-separated"
            if ";" in "".join(df.columns) else "")
    raise SystemExit(f"{path}: missing column(s) {', '.join(missing)}; expected "
                     f"patient_id,image,sex,age,L1,L2,L3,L4[,split]{hint}")
  checked, rejected = [], []
  for i, row in df.iterrows():
    rec, reason = _check_row(row, "split" in df.columns)
    rec["label_line"] = i + 2  # header is line 1
    if reason is None:
      checked.append(rec)
    else:
      rejected.append({**rec, "status": "skipped",
                       "reason": f"labels line {rec['label_line']}: {reason}"})
  by_image: dict[str, list[dict]] = {}
  for rec in checked:
    by_image.setdefault(rec["image"], []).append(rec)
  good = []
  for image, recs in by_image.items():
    first, *repeats = recs
    lines = ", ".join(str(r["label_line"]) for r in recs)
    if all(_values(r) == _values(first) for r in repeats):
      good.append(first)
      rejected += [{**r, "status": "skipped", "reason": f"labels line {r['label_line']}: "
                    f"duplicate row of line {first['label_line']} (same values), ignored"}
                   for r in repeats]
    else:
      differ = [k for k in first if k != "label_line" and
                any(_values({k: r[k]}) != _values({k: first[k]}) for r in repeats)]
      rejected += [{**r, "status": "skipped", "reason": f"labels line {r['label_line']}: "
                    f"image {image} has conflicting rows (lines {lines}) that differ in "
                    f"{', '.join(differ)}; keep one row per image"} for r in recs]
  good.sort(key=lambda r: r["label_line"])
  return pd.DataFrame(good), rejected


def load_landmarks(path: str) -> dict[str, np.ndarray]:
  """image -> [16, 2] landmark array."""
  try:
    df = pd.read_csv(path)
  except pd.errors.EmptyDataError:
    raise SystemExit(f"{path}: the landmarks CSV is empty; expected a header "
                     "image,x0,y0,...,x15,y15 and one row per image") from None
  except Exception as e:  # pandas raises several types; all mean a bad file
    raise SystemExit(f"{path}: cannot read the landmarks CSV ({e})") from None
  cols = [f"{a}{i}" for i in range(rois.NUM_LANDMARKS) for a in "xy"]
  missing = [c for c in ["image", *cols] if c not in df.columns]
  if missing:
    raise SystemExit(f"{path}: missing column(s) {', '.join(missing[:4])}...; expected "
                     "image,x0,y0,...,x15,y15")
  # A non-numeric cell becomes NaN: that study is refused, not the whole table.
  values = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
  values = values.reshape(-1, rois.NUM_LANDMARKS, 2)
  return {str(img): lm for img, lm in zip(df["image"], values)}


def assign_splits(patient_ids, fractions=(0.7, 0.15, 0.15), seed=0,
                  given=None, strata=None) -> np.ndarray:
  """Patient-level split: every study of a patient lands in the same split.

  `given` (per study, '' where absent) wins; a patient with several given splits
  is an error since it would leak between splits. `strata` (per study, e.g.
  `split_strata`'s sex and osteoporosis status) splits each stratum by the
  fractions on its own, so that a small cohort's test split is not left without
  its rare cases; a patient's stratum is the largest of their studies' (with
  split_strata: osteoporotic if any study is). Without `strata`, one shuffled
  list of patients is cut by the fractions.
  """
  patient_ids = np.asarray(patient_ids, dtype=object)
  given = np.asarray(given if given is not None else [""] * len(patient_ids), dtype=object)
  fixed = {}
  for pid, split in zip(patient_ids, given):
    if split:
      if fixed.setdefault(pid, split) != split:
        raise SystemExit(f"labels: patient {pid} is given two splits "
                         f"({fixed[pid]} and {split}); a patient must stay in one")
  free = sorted(set(patient_ids) - set(fixed))
  rng = np.random.default_rng(seed)
  if strata is None:
    rng.shuffle(free)
    bounds = np.cumsum(np.asarray(fractions, np.float64) / np.sum(fractions)) * len(free)
    bounds = np.round(bounds).astype(int)
    for i, pid in enumerate(free):
      fixed[pid] = SPLITS[int(np.searchsorted(bounds, i, side="right"))]
    return np.array([fixed[p] for p in patient_ids], dtype=object)
  stratum = {}
  for pid, s in zip(patient_ids, strata):
    stratum[pid] = max(stratum.get(pid, s), s)
  for key in sorted({stratum[p] for p in free}):
    members = [p for p in free if stratum[p] == key]
    rng.shuffle(members)
    counts = stratum_counts(len(members), fractions)
    for pid, split in zip(members, np.repeat(SPLITS, counts)):
      fixed[pid] = split
  return np.array([fixed[p] for p in patient_ids], dtype=object)


def stratum_counts(n: int, fractions) -> np.ndarray:
  """Patients of one stratum per split: the largest-remainder rounding of
  n * fractions, with at least one in every split of nonzero fraction when the
  stratum has that many patients (taken from the largest split)."""
  f = np.asarray(fractions, np.float64) / np.sum(fractions)
  exact = n * f
  counts = np.floor(exact).astype(int)
  for i in np.argsort(-(exact - counts), kind="stable")[:n - counts.sum()]:
    counts[i] += 1
  wanted = f > 0
  if n >= wanted.sum():
    for i in np.flatnonzero(wanted & (counts == 0)):
      counts[np.argmax(counts)] -= 1
      counts[i] += 1
  return counts


def split_strata(sex, bmd, reference) -> np.ndarray:
  """Per study: "<sex>/osteoporosis" when its lowest T-score is at most -2.5
  against `reference` ((sex, vertebra) -> (mean, sd), the young-adult table of
  bmdjax.tscore), else "<sex>/other". `bmd` [n, 4] in VERTEBRAE order, NaN missing."""
  bmd = np.asarray(bmd, np.float64)
  out = []
  for s, row in zip(sex, bmd):
    t = [(b - reference[(s, v)][0]) / reference[(s, v)][1]
         for v, b in zip(VERTEBRAE, row) if np.isfinite(b)]
    out.append(f"{s}/{'osteoporosis' if t and min(t) <= OSTEOPOROSIS_T else 'other'}")
  return np.array(out, dtype=object)
