r"""Prepares DICOMs + labels.csv (+ landmarks.csv) into a TFDS ArrayRecord dataset.

  python -m data_prep.build --dicom_dir=D --labels=labels.csv \
      --landmarks=landmarks.csv --out=OUT [--size=256] [--grids=3]
  bmdjax prepare --dicom_dir=D --labels=labels.csv \
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
# Labels, landmarks and crops live in light modules (screening needs them
# without the dataset writer); their names stay importable from here.
from data_prep.crops import CropSpec, process_study  # noqa: F401
from data_prep.labels import (assign_splits, load_labels, load_landmarks,  # noqa: F401
                              split_strata)
from data_prep.schema import SEXES, SPLITS, VERTEBRAE

DATASET_NAME = "bmd_cxr"
VERSION = "1.0.0"
# ----------------------------------------------------------------- studies


def worker_pool(workers: int, module: str):
  """A process pool safe to start from a process running JAX threads (landmark
  detection, the benchmark): forkserver, with `module` imported once in the
  server so that each of the three splits' pools starts in milliseconds."""
  ctx = multiprocessing.get_context("forkserver")
  # The server also runs the main module; preloading that one a second time under
  # its own name would make runpy warn in every pool (`python -m data_prep.build`).
  main = getattr(sys.modules.get("__main__"), "__spec__", None)
  ctx.set_forkserver_preload([] if main is not None and main.name == module else [module])
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
    self.spacing_sources: dict[int, str] = {}  # study index -> dicom_io.SPACING_SOURCES
    super().__init__(**kwargs)

  # TFDS prints "Downloading and preparing" and "Subsequent calls will reuse this
  # data" to stdout: nothing is downloaded, and build() reports what it made.
  def _log_download_bytes(self):
    pass

  def _log_download_done(self):
    pass

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
      self.spacing_sources[index] = crops.pop("spacing_source")
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


def detect_landmarks(paths, images, detect, out_csv: str) -> list[dict]:
  """Runs `detect` (DICOM paths -> one dict per study: landmarks [16, 2],
  confidence [16], flags, or error; bmdjax.detector.LandmarkDetector.detect_files)
  on every study; writes `out_csv` in the landmarks.csv layout (usable as
  --landmarks after review) plus conf0..conf15, flags and error. Returns the
  dicts, in order."""
  found = detect(paths)
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
          workers: int | None = None, detect=None, detector: str | None = None,
          keep_flagged: bool = False, reference=None) -> dict:
  """Runs the whole preparation; returns the summary also written to prep.json.

  Landmarks come from `landmarks` (a CSV) or, when it is None, from `detect`
  (see detect_landmarks; `detector` names it in prep.json). Data prep knows
  nothing of the model: `bmdjax prepare --landmark_workdir=W` passes a trained
  detector in (bmdjax/prepare.py). With `reference` ((sex, vertebra) -> young-adult
  (mean, sd), as bmdjax.tscore loads it) the patient split is stratified by sex
  and osteoporosis status (labels.split_strata).
  """
  start = time.time()
  if os.path.exists(dataset_dir(out)):
    raise SystemExit(f"{dataset_dir(out)} already exists; choose a new --out or delete it")
  if bool(landmarks) == bool(detect):
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
  strata = (split_strata(studies.sex, studies[list(VERTEBRAE)].to_numpy(np.float64),
                         reference) if reference is not None else None)
  studies["split"] = assign_splits(studies.patient_id, fractions, seed,
                                   studies.get("split"), strata)
  studies["landmark_flags"] = ""
  if landmarks:
    studies["landmarks"] = [landmark_table[p] for p in studies.image]
  else:
    os.makedirs(out, exist_ok=True)
    found = detect_landmarks(list(studies.path), list(studies.image), detect,
                             os.path.join(out, DETECTED_CSV))
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
          f"no usable study: the detector {detector or ''} failed or was flagged on "
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
                     "landmark_flags": r.landmark_flags,
                     "spacing_source": builder.spacing_sources.get(i, "")})
  cols = ["patient_id", "image", "sex", "age", *VERTEBRAE, "split", "status", "reason",
          "landmark_flags", "spacing_source"]
  man = pd.DataFrame(manifest).reindex(columns=cols)
  man.to_csv(os.path.join(out, "manifest.csv"), index=False)

  ok = man[man.status == "ok"]
  train = ok[ok.split == "train"]
  summary = {
      "dataset_dir": dataset_dir(out), "size": size, "grids": list(grids),
      "fractions": list(fractions), "seed": seed,
      "split_strata": "sex, osteoporosis" if reference is not None else None,
      "inputs": {"labels": os.path.abspath(labels), "dicom_dir": os.path.abspath(dicom_dir),
                 "landmarks": os.path.abspath(landmarks) if landmarks else None,
                 "landmark_workdir": detector,
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


def build_from_flags(detect=None, detector: str | None = None, keep_flagged: bool = False,
                     reference=None):
  """build() with the flags of define_flags (`detect`: see build); prints the
  counts. Shared by `python -m data_prep.build` and `bmdjax prepare`."""
  for name in ("dicom_dir", "labels", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required (see --help)")
  summary = build(FLAGS.dicom_dir, FLAGS.labels, FLAGS.landmarks, FLAGS.out, size=FLAGS.size,
                  grids=[int(g) for g in FLAGS.grids if g],
                  fractions=[float(x) for x in FLAGS.fractions], seed=FLAGS.seed,
                  workers=FLAGS.workers, detect=detect, detector=detector,
                  keep_flagged=keep_flagged, reference=reference)
  c = summary["counts"]
  print(f"prepared {c['ok']} studies ({c['train']} train, {c['validation']} validation, "
        f"{c['test']} test), skipped {c['skipped']}, flagged {c['flagged']} (reasons in "
        f"{os.path.join(FLAGS.out, 'manifest.csv')}), {summary['seconds']} s", file=sys.stderr)
  return summary


def main(argv):
  del argv
  if not FLAGS.landmarks:
    raise app.UsageError("give --landmarks=landmarks.csv; to detect the landmarks with a "
                         "trained detector run `bmdjax prepare --landmark_workdir=W`")
  build_from_flags()


def define_flags():
  """The data flags (also those of `bmdjax prepare`); defined on demand so
  importing this module does not claim --out etc."""
  flags.DEFINE_string("dicom_dir", None, "Folder of DICOM files; labels.csv `image` is relative to it.")
  flags.DEFINE_string("labels", None, "labels.csv: patient_id,image,sex,age,L1,L2,L3,L4[,split].")
  flags.DEFINE_string("landmarks", None, "landmarks.csv: image,x0,y0,...,x15,y15 (pixels). "
                      "Without it (bmdjax prepare only), --landmark_workdir detects them.")
  flags.DEFINE_string("out", None, "Output folder (must not hold a prepared dataset yet).")
  flags.DEFINE_integer("size", 256, "Side of every crop in pixels (paper: 256).")
  flags.DEFINE_list("grids", ["3"], "Patch grids NxN to store for the Multi-Patch models, e.g. 2,3,4.")
  flags.DEFINE_list("fractions", ["0.7", "0.15", "0.15"], "train,validation,test patient fractions.")
  flags.DEFINE_integer("seed", 0, "Seed of the patient-level split.")
  flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
