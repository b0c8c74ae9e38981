"""The studies of an annotation session: where they are, their pre-filled
points, the order in which to review them, and their images.

Review order: studies not yet annotated first; among them flagged ones
(manifest status `flagged`, or pre-filled points failing a check), then by
the lowest landmark confidence of the detector, then those without any
confidence; by name within ties. Annotated studies follow, so one can go back.

Only files under --dicom_dir that belong to the session are ever read: a
study is looked up by its relative path in the session's table, and its real
path (symbolic links resolved) must lie inside --dicom_dir.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import os
import threading

import numpy as np
from PIL import Image

from bmdjax.annotation import store as store_lib
from data_prep import dicom_io, landmark_checks, rois

# Files in a DICOM folder that are surely not radiographs (exports put CSVs
# and reports beside the images).
NOT_DICOM = (".csv", ".json", ".txt", ".md", ".png", ".jpg", ".jpeg", ".html", ".pdf",
             ".lock", ".xml", ".zip", ".gz")


@dataclasses.dataclass
class Study:
  image: str                       # path relative to --dicom_dir (forward slashes)
  path: str | None                 # real path, None when outside --dicom_dir
  landmarks: list | None = None    # pre-filled [16][2], image pixels
  confidence: list | None = None   # [16] detector confidence
  flags: list = dataclasses.field(default_factory=list)  # failed checks of the pre-fill
  source: str = ""                 # where the pre-fill came from
  note: str = ""                   # manifest reason, read error of the detection

  @property
  def min_confidence(self) -> float:
    c = [v for v in (self.confidence or []) if math.isfinite(v)]
    return min(c) if c else math.inf


def inside(root: str, path: str) -> str | None:
  """The real path of `root/path` if it lies inside `root`, else None."""
  real = os.path.realpath(os.path.join(root, path))
  return real if os.path.commonpath([real, root]) == root and real != root else None


def list_dicom_dir(root: str) -> list[str]:
  out = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      if not name.startswith(".") and not name.lower().endswith(NOT_DICOM):
        out.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
  return out


def read_prefill(path: str) -> dict[str, dict]:
  """A landmarks.csv, or landmarks_detected.csv (+ conf0..15, flags, error)."""
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in ("image", *store_lib.COORDS) if c not in (reader.fieldnames or [])]
    if missing:
      raise SystemExit(f"{path}: missing column(s) {', '.join(missing[:4])}; expected "
                       "image,x0,y0,...,x15,y15 (a landmarks.csv or landmarks_detected.csv)")
    has_conf = all(f"conf{i}" in reader.fieldnames for i in range(rois.NUM_LANDMARKS))
    out = {}
    for r in reader:
      lm = store_lib.landmarks_of(r)
      conf = None
      if has_conf:
        try:
          conf = [float(r[f"conf{i}"]) for i in range(rois.NUM_LANDMARKS)]
        except ValueError:
          conf = None
      out[r["image"]] = dict(landmarks=lm, confidence=conf,
                             flags=[f for f in (r.get("flags") or "").split("; ") if f],
                             error=r.get("error") or "")
  return out


def read_manifest(path: str) -> dict[str, dict]:
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    if "image" not in (reader.fieldnames or []):
      raise SystemExit(f"{path}: no `image` column; give the manifest.csv of data_prep.build")
    return {r["image"]: r for r in reader}


class Session:
  """Studies, pre-fills and the annotation store of one `bmdjax.annotate` run."""

  def __init__(self, dicom_dir: str, store: store_lib.AnnotationStore,
               prefill: dict[str, dict] | None = None, prefill_source: str = "",
               manifest: dict[str, dict] | None = None, min_confidence: float | None = None):
    self.root = os.path.realpath(dicom_dir)
    if not os.path.isdir(self.root):
      raise SystemExit(f"--dicom_dir {dicom_dir} is not a folder")
    self.store = store
    self.min_confidence = (landmark_checks.MIN_CONFIDENCE if min_confidence is None
                           else min_confidence)
    prefill, manifest = prefill or {}, manifest or {}
    names = list(manifest) or list(prefill) or list_dicom_dir(self.root)
    self.studies: dict[str, Study] = {}
    for name in dict.fromkeys(names):
      s = Study(image=name, path=inside(self.root, name))
      p = prefill.get(name)
      if p is not None:
        s.landmarks, s.confidence, s.source = p["landmarks"], p["confidence"], prefill_source
        s.flags = list(p["flags"])
        s.note = p["error"]
      m = manifest.get(name)
      if m is not None and m.get("status") == "flagged":
        s.flags = s.flags or [m.get("reason") or "flagged in the manifest"]
      if m is not None and m.get("status") == "skipped":
        s.note = s.note or m.get("reason", "")
      self.studies[name] = s
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._cache_lock = threading.Lock()

  # ------------------------------------------------------------ order
  def order(self) -> list[str]:
    done = self.store.refresh()
    def key(name):
      s = self.studies[name]
      return (name in done, not s.flags, s.min_confidence, name)
    return sorted(self.studies, key=key)

  def queue(self) -> dict:
    done = self.store.refresh()
    items = []
    for name in self.order():
      s, row = self.studies[name], done.get(name)
      items.append({"image": name, "flagged": bool(s.flags),
                    "min_confidence": None if math.isinf(s.min_confidence)
                    else round(s.min_confidence, 3),
                    "status": row["status"] if row else ""})
    annotated = sum(1 for n in self.studies if n in done)
    return {"studies": items, "annotated": annotated, "total": len(self.studies)}

  # ------------------------------------------------------------ images
  def radiograph(self, name: str) -> dicom_io.Radiograph:
    """KeyError for a study not in the session or outside --dicom_dir;
    dicom_io.StudyError when the file cannot be read."""
    s = self.studies[name]
    if s.path is None:
      raise KeyError(name)
    with self._cache_lock:
      if name in self._cache:
        self._cache.move_to_end(name)
        return self._cache[name][0]
    r = dicom_io.read_radiograph(s.path)
    png = io.BytesIO()
    Image.fromarray(np.round(r.image * 255.0).astype(np.uint8)).save(png, "PNG",
                                                                     compress_level=1)
    with self._cache_lock:
      self._cache[name] = (r, png.getvalue())
      while len(self._cache) > 4:
        self._cache.popitem(last=False)
    return r

  def png(self, name: str) -> bytes:
    self.radiograph(name)
    with self._cache_lock:
      return self._cache[name][1]

  # ------------------------------------------------------------ geometry
  def check(self, name: str, landmarks, confidence=None) -> dict:
    """Plausibility checks and the 14 ROI boxes of `landmarks` on study `name`."""
    r = self.radiograph(name)
    lm = np.asarray(landmarks, np.float64)
    flags = landmark_checks.check_landmarks(lm, r.image.shape, confidence, r.pixel_spacing,
                                            self.min_confidence)
    boxes = []
    if lm.shape == (rois.NUM_LANDMARKS, 2) and np.all(np.isfinite(lm)):
      centres, side, angle = rois.roi_boxes(lm)
      boxes = [{"name": n, "corners": rois.box_corners(c, side, angle).tolist()}
               for n, c in zip(rois.ROI_NAMES, centres)]
    return {"flags": flags, "rois": boxes}

  def study(self, name: str) -> dict:
    """What the page needs for one study; no DICOM header text besides the
    image shape and pixel spacing."""
    s = self.studies[name]
    r = self.radiograph(name)
    row = self.store.get(name)
    saved = store_lib.landmarks_of(row) if row else None
    landmarks = saved or s.landmarks
    h, w = r.image.shape
    if landmarks is None:  # nothing to start from: a neutral template to drag
      landmarks = default_template(h, w)
    out = {"image": name, "width": w, "height": h,
           "pixel_spacing": None if not math.isfinite(r.pixel_spacing) else r.pixel_spacing,
           "landmarks": landmarks,
           "confidence": None if saved else s.confidence,
           "source": "saved annotation" if saved else (s.source or "template"),
           "prefill_flags": s.flags, "note": s.note,
           "status": row["status"] if row else "", "reason": row["reason"] if row else "",
           "revision": int(row["revision"] or 0) if row else 0,
           "names": list(rois.LANDMARK_NAMES), "edges": [list(e) for e in rois.LANDMARK_EDGES]}
    out.update(self.check(name, landmarks, out["confidence"]))
    return out


def default_template(h: int, w: int) -> list:
  """A plausible upright chest in relative image coordinates (when nothing
  pre-fills a study): every landmark present, to be dragged into place."""
  rel = [(0.45, 0.24), (0.36, 0.22), (0.27, 0.23), (0.55, 0.24), (0.64, 0.22),
         (0.73, 0.23), (0.24, 0.33), (0.20, 0.45), (0.19, 0.57), (0.21, 0.68),
         (0.76, 0.33), (0.80, 0.45), (0.81, 0.57), (0.79, 0.68), (0.50, 0.17),
         (0.50, 0.70)]
  return [[x * (w - 1), y * (h - 1)] for x, y in rel]
