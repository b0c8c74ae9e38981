r"""Prepares DICOMs + labels.csv (+ landmarks.csv) into a TFDS ArrayRecord dataset.

  python -m data_prep.build --dicom_dir=D --labels=labels.csv \
      --landmarks=landmarks.csv --out=OUT [--size=256] [--grids=3]
  python -m data_prep.build --dicom_dir=D --labels=labels.csv \
      --landmark_workdir=LM_RUN --out=OUT [--keep_flagged]

Without --landmarks, the trained landmark detector in --landmark_workdir places
the 16 landmarks first (in this process, in batches), writing
OUT/landmarks_detected.csv with each point's confidence and the failed
plausibility checks (data_prep/landmark_checks.py). A flagged study is not
cropped: manifest.csv lists it with status `flagged` and the checks as reason,
unless --keep_flagged (then its flags stay in the `landmark_flags` column).
The patient split is made before flagged studies are set aside, so it is the
same as with given landmarks.

Each study is read once (modality/VOI LUT, MONOCHROME1 inversion, percentile
normalisation), cropped into the 14 landmark ROIs, the whole image and the NxN
patch grids, resized to `--size` and stored as uint16. Splits are made at the
patient level (a `split` column in labels.csv wins). OUT/manifest.csv lists every
input and what became of it; OUT/prep.json holds the settings, the counts and
the train-split target statistics.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import time

from absl import app, flags, logging
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from data_prep import dicom_io, rois
from data_prep.schema import SEXES, SPLITS, VERTEBRAE

DATASET_NAME = "bmd_cxr"
VERSION = "1.0.0"
# Physiologically possible DXA lumbar BMD (g/cm2); outside is a data error.
BMD_RANGE = (0.2, 2.5)


# ----------------------------------------------------------------- labels


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
  df = pd.read_csv(path)
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
                  given=None) -> np.ndarray:
  """Patient-level split: every study of a patient lands in the same split.

  `given` (per study, '' where absent) wins; a patient with several given splits
  is an error since it would leak between splits.
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
  rng.shuffle(free)
  bounds = np.cumsum(np.asarray(fractions, np.float64) / np.sum(fractions)) * len(free)
  bounds = np.round(bounds).astype(int)
  for i, pid in enumerate(free):
    fixed[pid] = SPLITS[int(np.searchsorted(bounds, i, side="right"))]
  return np.array([fixed[p] for p in patient_ids], dtype=object)


# ----------------------------------------------------------------- studies


@dataclasses.dataclass(frozen=True)
class CropSpec:
  size: int
  grids: tuple[int, ...]


def _check_landmarks(lm: np.ndarray, shape) -> str | None:
  h, w = shape
  if not np.all(np.isfinite(lm)):
    return "landmarks contain empty or non-numeric values"
  margin = 0.05
  if (lm[:, 0].min() < -margin * w or lm[:, 0].max() > (1 + margin) * w or
      lm[:, 1].min() < -margin * h or lm[:, 1].max() > (1 + margin) * h):
    return "landmarks lie outside the image"
  if rois.thorax_width(lm) < 0.1 * w:
    return "landmarks are implausible (thorax narrower than 10% of the image)"
  return None


def _to_uint16(x: np.ndarray) -> np.ndarray:
  return np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)


def process_study(path: str, landmarks: np.ndarray, spec: CropSpec,
                  radiograph: dicom_io.Radiograph | None = None) -> dict:
  """DICOM -> crops; raises dicom_io.StudyError with the reason on failure.

  `radiograph` is the study already read (screening reuses it for its overlay);
  prep and screening share this one function so their crops are identical.
  """
  if radiograph is None:
    radiograph = dicom_io.read_radiograph(path)
  image = radiograph.image
  problem = _check_landmarks(landmarks, image.shape)
  if problem:
    raise dicom_io.StudyError(path, problem)
  out = {
      "rois": _to_uint16(rois.crop_rois(image, landmarks, spec.size)),
      "whole": _to_uint16(rois.whole_image(image, spec.size)),
      "pixel_spacing": np.float32(radiograph.pixel_spacing),
      "landmarks": np.asarray(landmarks, np.float32),
      "image_shape": np.asarray(image.shape, np.int32),
  }
  for g in spec.grids:
    out[f"patches_{g}"] = _to_uint16(rois.patch_grid(image, g, spec.size))
  return out


def worker_pool(workers: int, module: str):
  """A process pool safe to start from a process running JAX threads (landmark
  detection, the benchmark): forkserver, with `module` imported once in the
  server so that each of the three splits' pools starts in milliseconds."""
  ctx = multiprocessing.get_context("forkserver")
  ctx.set_forkserver_preload([module])
  return ctx.Pool(workers)


def _work(args):
  """Pool worker: never raises, so one bad study cannot stop the batch."""
  process, index, path, landmarks, arg = args
  try:
    return index, process(path, landmarks, arg), None
  except dicom_io.StudyError as e:
    return index, None, e.reason
  except Exception as e:  # an unforeseen failure is still reported, not fatal
    return index, None, f"unexpected {type(e).__name__}: {e}"


def processed_studies(rows: pd.DataFrame, process, arg, *, workers: int, module: str,
                      outcomes: dict, chunksize: int = 2):
  """Yields (index, row, process(path, landmarks, arg)) for every usable row, in
  a worker pool; each study's outcome ('' or the reason) goes to `outcomes`,
  and a bad study is logged and passed over, never raised."""
  jobs = [(process, i, r.path, r.landmarks, arg) for i, r in rows.iterrows()]
  pool = worker_pool(workers, module) if workers > 1 else None
  results = pool.imap(_work, jobs, chunksize=chunksize) if pool else map(_work, jobs)
  try:
    for index, fields, reason in results:
      outcomes[index] = reason or ""
      if fields is None:
        logging.warning("skipped %s: %s", rows.loc[index, "path"], reason)
        continue
      yield index, rows.loc[index], fields
  finally:
    if pool:
      pool.close()
      pool.join()


# ----------------------------------------------------------------- TFDS


def features(spec: CropSpec):
  f = tfds.features
  crops = lambda *shape: f.Tensor(shape=shape, dtype=np.uint16, encoding=f.Encoding.BYTES)
  feats = {
      "patient_id": f.Text(),
      "image": f.Text(),
      "sex": f.Scalar(dtype=np.int32),   # 0 female, 1 male
      "age": f.Scalar(dtype=np.float32),
      "bmd": f.Tensor(shape=(4,), dtype=np.float32),  # L1..L4, NaN = missing
      "landmarks": f.Tensor(shape=(rois.NUM_LANDMARKS, 2), dtype=np.float32),
      "pixel_spacing": f.Scalar(dtype=np.float32),
      "image_shape": f.Tensor(shape=(2,), dtype=np.int32),
      "rois": crops(rois.NUM_ROIS, spec.size, spec.size),
      "whole": crops(spec.size, spec.size),
  }
  for g in spec.grids:
    feats[f"patches_{g}"] = crops(g * g, spec.size, spec.size)
  return f.FeaturesDict(feats)


class BmdCxr(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Chest X-ray crops with DXA lumbar BMD; generated by data_prep.build.

  Not registered by name: readers open the folder (builder_from_directory),
  and `python -m data_prep.build` imports this module twice (as __main__ and,
  through the landmark detector, as data_prep.build).
  """

  VERSION = tfds.core.Version(VERSION)
  name = DATASET_NAME

  def __init__(self, *, studies: pd.DataFrame | None = None, spec: CropSpec | None = None,
               workers: int = 1, **kwargs):
    self._studies, self._spec, self._workers = studies, spec, workers
    self.outcomes: dict[int, str] = {}  # study index -> '' (ok) or the reason
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=features(self._spec),
        description="14 landmark ROIs, whole image and patch grids of chest "
                    "radiographs, with DXA L1-L4 BMD (g/cm2).")

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s) for s in SPLITS
            if (self._studies["split"] == s).any()}

  def _generate_examples(self, split):
    rows = self._studies[self._studies["split"] == split]
    for index, r, crops in processed_studies(
        rows, process_study, self._spec, workers=self._workers, module="data_prep.build",
        outcomes=self.outcomes):
      yield str(index), {
          "patient_id": r.patient_id, "image": r.image,
          "sex": SEXES[r.sex], "age": np.float32(r.age),
          "bmd": np.array([r[v] for v in VERTEBRAE], np.float32), **crops}


def dataset_dir(out: str) -> str:
  return os.path.join(out, DATASET_NAME, VERSION)


def unlisted_files(dicom_dir: str, listed) -> list[str]:
  """Files under dicom_dir that no input row names (reported, never ignored)."""
  listed = {os.path.normpath(p) for p in listed}
  return [path for root, _, files in os.walk(dicom_dir) for name in sorted(files)
          if (path := os.path.normpath(os.path.join(root, name))) not in listed]


# ----------------------------------------------------------------- main


DETECTED_CSV = "landmarks_detected.csv"


def detect_landmarks(paths, images, landmark_workdir: str, out_csv: str,
                     min_confidence: float | None = None) -> list[dict]:
  """Runs the trained detector on every study; writes `out_csv` in the
  landmarks.csv layout (usable as --landmarks after review) plus conf0..conf15,
  flags and error. Returns detector.detect_files' dicts, in order."""
  from bmdjax import detector  # pylint: disable=import-outside-toplevel  (JAX only here)
  found = detector.LandmarkDetector.from_workdir(landmark_workdir).detect_files(
      paths, min_confidence, progress=True)
  rows = []
  for image, d in zip(images, found):
    lm = d.get("landmarks", np.full((rois.NUM_LANDMARKS, 2), np.nan))
    conf = d.get("confidence", np.full(rois.NUM_LANDMARKS, np.nan))
    row = {"image": image}
    for i in range(rois.NUM_LANDMARKS):
      row[f"x{i}"], row[f"y{i}"] = round(float(lm[i, 0]), 2), round(float(lm[i, 1]), 2)
    row.update({f"conf{i}": round(float(c), 4) for i, c in enumerate(conf)})
    row.update(flags="; ".join(d.get("flags", [])), error=d.get("error", ""))
    rows.append(row)
  pd.DataFrame(rows).to_csv(out_csv, index=False)
  return found


def build(dicom_dir: str, labels: str, landmarks: str | None, out: str, *, size: int = 256,
          grids=(3,), fractions=(0.7, 0.15, 0.15), seed: int = 0,
          workers: int | None = None, landmark_workdir: str | None = None,
          keep_flagged: bool = False, min_landmark_confidence: float | None = None) -> dict:
  """Runs the whole preparation; returns the summary also written to prep.json.

  Landmarks come from `landmarks` (a CSV) or, when it is None, from the
  detector trained in `landmark_workdir` (module docstring).
  """
  start = time.time()
  if os.path.exists(dataset_dir(out)):
    raise SystemExit(f"{dataset_dir(out)} already exists; choose a new --out or delete it")
  if bool(landmarks) == bool(landmark_workdir):
    raise SystemExit("give --landmarks=landmarks.csv or --landmark_workdir=W (a trained "
                     "landmark detector), exactly one of them")
  studies, rejected = load_labels(labels)
  manifest = list(rejected)
  landmark_table = load_landmarks(landmarks) if landmarks else {}
  keep = []
  for i, r in studies.iterrows():
    path = os.path.join(dicom_dir, r.image)
    reason = None
    if not os.path.exists(path):  # a folder or an unreadable file: the reader says why
      reason = (f"image file {path} does not exist; `image` in labels.csv must be a "
                "path relative to --dicom_dir")
    elif landmarks and r.image not in landmark_table:
      reason = ("no landmarks for this image: add a row to --landmarks, or detect them "
                "with --landmark_workdir=W")
    if reason:
      manifest.append({**r.to_dict(), "status": "skipped", "reason": reason})
    keep.append(reason is None)
  studies = studies[np.array(keep, bool)].reset_index(drop=True)
  if studies.empty:
    raise SystemExit(f"no usable study in {labels}; see the reasons above")
  label_rows = int(len(studies) + len(rejected))
  studies["path"] = [os.path.join(dicom_dir, p) for p in studies.image]
  studies["split"] = assign_splits(studies.patient_id, fractions, seed,
                                   studies.get("split"))
  studies["landmark_flags"] = ""
  if landmarks:
    studies["landmarks"] = [landmark_table[p] for p in studies.image]
  else:
    os.makedirs(out, exist_ok=True)
    found = detect_landmarks(list(studies.path), list(studies.image), landmark_workdir,
                             os.path.join(out, DETECTED_CSV), min_landmark_confidence)
    studies["landmarks"] = [d.get("landmarks") for d in found]
    studies["landmark_flags"] = ["; ".join(d.get("flags", [])) for d in found]
    drop = np.zeros(len(studies), bool)
    for i, (r, d) in enumerate(zip(studies.itertuples(), found)):
      if "error" in d:
        status, reason = "skipped", d["error"]
      elif r.landmark_flags and not keep_flagged:
        status, reason = "flagged", "detected landmarks fail checks: " + r.landmark_flags
      else:
        continue
      drop[i] = True
      manifest.append({"patient_id": r.patient_id, "image": r.image, "sex": r.sex,
                       "age": r.age, **{v: getattr(r, v) for v in VERTEBRAE},
                       "split": r.split, "status": status, "reason": reason,
                       "landmark_flags": r.landmark_flags})
    studies = studies[~drop].reset_index(drop=True)
    if studies.empty:
      raise SystemExit(
          f"no usable study: the detector in {landmark_workdir} failed or was flagged on "
          f"all of them (see {os.path.join(out, DETECTED_CSV)}); check the detector, or "
          "pass --keep_flagged to prepare flagged studies anyway")
  # DICOM files on disk that no label row names are reported, not ignored.
  listed = list(studies.path) + [os.path.join(dicom_dir, m["image"]) for m in manifest
                                 if m.get("image")]
  for path in unlisted_files(dicom_dir, listed):
    manifest.append({"image": os.path.relpath(path, dicom_dir), "status": "skipped",
                     "reason": "file has no row in labels.csv"})

  spec = CropSpec(size=size, grids=tuple(grids))
  builder = BmdCxr(studies=studies, spec=spec, workers=workers or os.cpu_count() or 1,
                   data_dir=out, file_format="array_record")
  builder.download_and_prepare()

  status = np.array(["ok" if not builder.outcomes.get(i) else "skipped"
                     for i in range(len(studies))])
  for i, r in studies.iterrows():
    manifest.append({"patient_id": r.patient_id, "image": r.image, "sex": r.sex, "age": r.age,
                     **{v: r[v] for v in VERTEBRAE}, "split": r.split, "status": status[i],
                     "reason": builder.outcomes.get(i, ""),
                     "landmark_flags": r.landmark_flags})
  cols = ["patient_id", "image", "sex", "age", *VERTEBRAE, "split", "status", "reason",
          "landmark_flags"]
  man = pd.DataFrame(manifest).reindex(columns=cols)
  man.to_csv(os.path.join(out, "manifest.csv"), index=False)

  ok = man[man.status == "ok"]
  train = ok[ok.split == "train"]
  summary = {
      "dataset_dir": dataset_dir(out), "size": size, "grids": list(grids),
      "fractions": list(fractions), "seed": seed,
      "inputs": {"labels": os.path.abspath(labels), "dicom_dir": os.path.abspath(dicom_dir),
                 "landmarks": os.path.abspath(landmarks) if landmarks else None,
                 "landmark_workdir": (os.path.abspath(landmark_workdir)
                                      if landmark_workdir else None),
                 "keep_flagged": bool(keep_flagged)},
      "counts": {"label_rows": label_rows,
                 "ok": int(len(ok)), "skipped": int((man.status == "skipped").sum()),
                 "flagged": int((man.status == "flagged").sum()),
                 "ok_with_landmark_flags": int((ok.landmark_flags.fillna("") != "").sum()),
                 **{s: int((ok.split == s).sum()) for s in SPLITS}},
      "target_stats": {v: {"mean": float(train[v].astype(float).mean()),
                           "std": float(train[v].astype(float).std())} for v in VERTEBRAE},
      "seconds": round(time.time() - start, 1),
  }
  with open(os.path.join(out, "prep.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


FLAGS = flags.FLAGS



def main(argv):
  del argv
  for name in ("dicom_dir", "labels", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required (see --help)")
  summary = build(FLAGS.dicom_dir, FLAGS.labels, FLAGS.landmarks, FLAGS.out, size=FLAGS.size,
                  grids=[int(g) for g in FLAGS.grids if g],
                  fractions=[float(x) for x in FLAGS.fractions], seed=FLAGS.seed,
                  workers=FLAGS.workers, landmark_workdir=FLAGS.landmark_workdir,
                  keep_flagged=FLAGS.keep_flagged,
                  min_landmark_confidence=FLAGS.min_landmark_confidence)
  c = summary["counts"]
  print(f"prepared {c['ok']} studies ({c['train']} train, {c['validation']} validation, "
        f"{c['test']} test), skipped {c['skipped']}, flagged {c['flagged']} (reasons in "
        f"{os.path.join(FLAGS.out, 'manifest.csv')}), {summary['seconds']} s", file=sys.stderr)


def define_flags():
  """Defined on demand so importing this module does not claim --out etc."""
  flags.DEFINE_string("dicom_dir", None, "Folder of DICOM files; labels.csv `image` is relative to it.")
  flags.DEFINE_string("labels", None, "labels.csv: patient_id,image,sex,age,L1,L2,L3,L4[,split].")
  flags.DEFINE_string("landmarks", None, "landmarks.csv: image,x0,y0,...,x15,y15 (pixels). "
                      "Without it, --landmark_workdir detects the landmarks.")
  flags.DEFINE_string("landmark_workdir", None, "Workdir of a trained landmark detector "
                      "(bmdjax.train --config=configs/landmarks.py); used when --landmarks "
                      "is not given. Detections go to OUT/landmarks_detected.csv.")
  flags.DEFINE_bool("keep_flagged", False, "Prepare studies whose detected landmarks fail "
                    "the plausibility checks too (their flags stay in manifest.csv); by "
                    "default they are set aside with status `flagged`.")
  flags.DEFINE_float("min_landmark_confidence", None, "Detected landmarks with a lower "
                     "confidence flag their study (default: the detector config's "
                     "checks.min_confidence).")
  flags.DEFINE_string("out", None, "Output folder (must not hold a prepared dataset yet).")
  flags.DEFINE_integer("size", 256, "Side of every crop in pixels (paper: 256).")
  flags.DEFINE_list("grids", ["3"], "Patch grids NxN to store for the Multi-Patch models, e.g. 2,3,4.")
  flags.DEFINE_list("fractions", ["0.7", "0.15", "0.15"], "train,validation,test patient fractions.")
  flags.DEFINE_integer("seed", 0, "Seed of the patient-level split.")
  flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
