r"""Radiographs + landmarks.csv -> a TFDS dataset for the landmark detector
(the command is `bmdjax prepare-landmarks`).

No BMD is needed: any frontal chest radiographs with 16 landmarks will do.
Each study is read exactly as data_prep/build.py reads it (dicom_io: LUTs,
MONOCHROME1 inversion, percentile normalisation), padded to a centred square
and resized to `size` (rois.whole_image, the BMD models' whole-image input),
and stored as uint16 with its landmarks in that frame, the mm per stored pixel
and the original shape. Splits are per patient when `labels` gives patient_id
(and its `split` column wins), else per image. Landmark sets that fail the
plausibility checks (e.g. left and right swapped) are reported as labelling
errors in OUT/manifest.csv rather than learnt; OUT/prep.json holds the
settings and counts.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from data_prep import build, crops, dicom_io, landmark_checks, rois

DATASET_NAME = "cxr_landmarks"
VERSION = "1.0.0"
TASK = "landmarks"  # prep.json `task`: what bmdjax/tasks.py checks


def prepare_image(radiograph: dicom_io.Radiograph, size: int) -> np.ndarray:
  """The detector's input: the whole radiograph letterboxed to size x size, uint16.

  Training records and detection (bmdjax.detector) both go through here.
  """
  return crops.to_uint16(rois.whole_image(radiograph.image, size))


def process_study(path: str, landmarks: np.ndarray, size: int) -> dict:
  """DICOM + landmarks -> record fields; raises dicom_io.StudyError on failure."""
  radiograph = dicom_io.read_radiograph(path)
  shape = radiograph.image.shape
  problem = crops.check_landmarks(landmarks, shape)
  if problem:
    raise dicom_io.StudyError(path, problem)
  flags_ = landmark_checks.check_landmarks(landmarks, shape,
                                           pixel_spacing=radiograph.pixel_spacing)
  if flags_:
    raise dicom_io.StudyError(path, "landmarks fail the plausibility checks (a "
                              "labelling error?): " + "; ".join(flags_))
  scale = rois.letterbox_scale(shape, size)
  return {
      "pixels": prepare_image(radiograph, size),
      "landmarks": rois.to_letterbox(landmarks, shape, size).astype(np.float32),
      "mm_per_pixel": np.float32(radiograph.pixel_spacing * scale),
      "pixel_spacing": np.float32(radiograph.pixel_spacing),
      "image_shape": np.asarray(shape, np.int32),
  }


def features(size: int):
  f = tfds.features
  return f.FeaturesDict({
      "patient_id": f.Text(),
      "image": f.Text(),
      "pixels": f.Tensor(shape=(size, size), dtype=np.uint16, encoding=f.Encoding.BYTES),
      "landmarks": f.Tensor(shape=(rois.NUM_LANDMARKS, 2), dtype=np.float32),
      "mm_per_pixel": f.Scalar(dtype=np.float32),   # NaN when the spacing is unknown
      "pixel_spacing": f.Scalar(dtype=np.float32),
      "image_shape": f.Tensor(shape=(2,), dtype=np.int32),
  })


class CxrLandmarks(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Letterboxed chest radiographs with 16 landmarks; by data_prep.build_landmarks.
  Not registered by name (see build.BmdCxr)."""

  VERSION = tfds.core.Version(VERSION)
  name = DATASET_NAME

  def __init__(self, *, studies: pd.DataFrame | None = None, size: int = 256,
               workers: int = 1, **kwargs):
    self._studies, self._size, self._workers = studies, size, workers
    self.outcomes: dict[int, str] = {}  # study index -> '' (ok) or the reason
    super().__init__(**kwargs)

  _log_download_bytes = build.BmdCxr._log_download_bytes  # quiet, as build.BmdCxr
  _log_download_done = build.BmdCxr._log_download_done

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=features(self._size),
        description="Whole chest radiographs letterboxed to a square, with the 16 "
                    "landmarks of data_prep/rois.py in that frame.")

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s) for s in build.SPLITS
            if (self._studies["split"] == s).any()}

  def _generate_examples(self, split):
    rows = self._studies[self._studies["split"] == split]
    for index, r, fields in build.processed_studies(
        rows, process_study, self._size, workers=self._workers,
        module="data_prep.build_landmarks", outcomes=self.outcomes, chunksize=4):
      yield str(index), {"patient_id": r.patient_id, "image": r.image, **fields}


def dataset_dir(out: str) -> str:
  return os.path.join(out, DATASET_NAME, VERSION)


def _patients(images, labels: str | None) -> tuple[list, list]:
  """patient_id and given split per image, from labels.csv when given."""
  pid = {im: im for im in images}
  split = {im: "" for im in images}
  if labels:
    df = pd.read_csv(labels, dtype=str, keep_default_na=False)
    if "patient_id" not in df or "image" not in df:
      raise SystemExit(f"{labels}: needs columns patient_id,image[,split]")
    for r in df.itertuples():
      if r.image in pid:
        pid[r.image] = r.patient_id
        if "split" in df:
          s = r.split.strip().lower()
          split[r.image] = {"val": "validation", "valid": "validation"}.get(s, s)
  return [pid[i] for i in images], [split[i] for i in images]


def build_dataset(dicom_dir: str, landmarks: str, out: str, *, size: int = 256,
                  labels: str | None = None, fractions=(0.8, 0.1, 0.1), seed: int = 0,
                  workers: int | None = None) -> dict:
  """Runs the whole preparation; returns the summary also written to prep.json."""
  start = time.time()
  if os.path.exists(dataset_dir(out)):
    raise SystemExit(f"{dataset_dir(out)} already exists; choose a new --out or delete it")
  table = build.load_landmarks(landmarks)
  manifest, rows = [], []
  for image, lm in table.items():
    path = os.path.join(dicom_dir, image)
    if not os.path.isfile(path):
      manifest.append({"image": image, "status": "skipped",
                       "reason": f"image file {path} does not exist"})
    else:
      rows.append({"image": image, "path": path, "landmarks": lm})
  if not rows:
    raise SystemExit(f"no image of {landmarks} found under {dicom_dir}")
  studies = pd.DataFrame(rows)
  studies["patient_id"], given = _patients(list(studies.image), labels)
  studies["split"] = build.assign_splits(studies.patient_id, fractions, seed, given)
  for path in build.unlisted_files(dicom_dir, list(studies.path) +
                                   [os.path.join(dicom_dir, m["image"]) for m in manifest]):
    manifest.append({"image": os.path.relpath(path, dicom_dir), "status": "skipped",
                     "reason": "file has no row in the landmarks CSV"})

  builder = CxrLandmarks(studies=studies, size=size, workers=workers or os.cpu_count() or 1,
                         data_dir=out, file_format="array_record")
  builder.download_and_prepare()
  for i, r in studies.iterrows():
    reason = builder.outcomes.get(i, "")
    manifest.append({"patient_id": r.patient_id, "image": r.image, "split": r.split,
                     "status": "skipped" if reason else "ok", "reason": reason})
  man = pd.DataFrame(manifest).reindex(
      columns=["patient_id", "image", "split", "status", "reason"])
  man.to_csv(os.path.join(out, "manifest.csv"), index=False)
  ok = man[man.status == "ok"]
  summary = {
      "task": TASK, "dataset_dir": dataset_dir(out), "size": size,
      "fractions": list(fractions), "seed": seed,
      "inputs": {"dicom_dir": os.path.abspath(dicom_dir),
                 "landmarks": os.path.abspath(landmarks),
                 "labels": os.path.abspath(labels) if labels else None},
      "counts": {"rows": len(table), "ok": int(len(ok)),
                 "skipped": int((man.status == "skipped").sum()),
                 **{s: int((ok.split == s).sum()) for s in build.SPLITS}},
      "seconds": round(time.time() - start, 1),
  }
  with open(os.path.join(out, "prep.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
