"""COCO keypoints <-> the 16 landmarks of data_prep/rois.py.

COCO keypoints is what CVAT, Label Studio and most annotation tools export
and import. One category ("chest") carries the 16 landmark names of
rois.LANDMARK_NAMES in their order and the skeleton of rois.LANDMARK_EDGES
(1-based, as COCO numbers keypoints); one image per study (`file_name` is
its path relative to the DICOM folder) with one annotation of 16 points,
visibility 2. Coordinates are copied unchanged: COCO keypoints, like our
landmarks.csv, are pixel indices (x = 0 is the centre of the first column).
Floats are written as Python's shortest exact text, so CSV -> COCO -> CSV
gives the same numbers.

An import is refused, naming the image and landmark, when a keypoint is not
labelled (visibility 0), when an image has several annotations, or when the
category's keypoint names are not the 16 landmarks (they may come in another
order; they are put back in ours by name).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom

from data_prep import rois

CATEGORY_NAME = "chest"


def category() -> dict:
  return {"id": 1, "name": CATEGORY_NAME, "supercategory": "radiograph",
          "keypoints": list(rois.LANDMARK_NAMES),
          "skeleton": [[a + 1, b + 1] for a, b in rois.LANDMARK_EDGES]}


def image_shape(path: str) -> tuple[int, int]:
  """(height, width) from a DICOM header, without decoding the pixels."""
  ds = pydicom.dcmread(path, stop_before_pixels=True,
                       specific_tags=["Rows", "Columns"])
  return int(ds.Rows), int(ds.Columns)


def to_coco(studies) -> dict:
  """studies: dicts with image, width, height and landmarks [16, 2]."""
  images, annotations = [], []
  for k, s in enumerate(sorted(studies, key=lambda s: s["image"]), start=1):
    lm = np.asarray(s["landmarks"], np.float64)
    if lm.shape != (rois.NUM_LANDMARKS, 2) or not np.all(np.isfinite(lm)):
      raise ValueError(f"{s['image']}: needs 16 finite (x, y) landmarks")
    images.append({"id": k, "file_name": s["image"], "width": int(s["width"]),
                   "height": int(s["height"])})
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    keypoints = []
    for x, y in lm.tolist():
      keypoints += [x, y, 2]
    annotations.append({"id": k, "image_id": k, "category_id": 1, "iscrowd": 0,
                        "num_keypoints": rois.NUM_LANDMARKS, "keypoints": keypoints,
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "area": float((x1 - x0) * (y1 - y0))})
  return {"info": {"description": "bmdjax chest radiograph landmarks (data_prep/rois.py)"},
          "images": images, "annotations": annotations, "categories": [category()]}


def from_coco(coco: dict, source: str = "COCO file") -> list[dict]:
  """[{image, width, height, landmarks [16, 2]}] from a COCO keypoints dict."""
  cats = [c for c in coco.get("categories", []) if c.get("keypoints")]
  if len(cats) != 1:
    raise ValueError(f"{source}: expected one category with keypoints, found {len(cats)}")
  names = list(cats[0]["keypoints"])
  if sorted(names) != sorted(rois.LANDMARK_NAMES):
    unknown = sorted(set(names) - set(rois.LANDMARK_NAMES))
    missing = sorted(set(rois.LANDMARK_NAMES) - set(names))
    raise ValueError(f"{source}: keypoint names are not the 16 landmarks of "
                     f"data_prep/rois.py (unknown: {unknown or 'none'}; missing: "
                     f"{missing or 'none'})")
  order = [names.index(n) for n in rois.LANDMARK_NAMES]
  cat_id = cats[0]["id"]
  images = {im["id"]: im for im in coco.get("images", [])}
  seen, out = {}, []
  for ann in coco.get("annotations", []):
    if ann.get("category_id") != cat_id:
      continue
    im = images.get(ann["image_id"])
    if im is None:
      raise ValueError(f"{source}: annotation {ann.get('id')} names image_id "
                       f"{ann['image_id']}, which is not in `images`")
    name = im["file_name"]
    if name in seen:
      raise ValueError(f"{source}: {name} has several annotations (ids {seen[name]} and "
                       f"{ann.get('id')}); keep one per image")
    seen[name] = ann.get("id")
    kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
    if len(kp) != len(names):
      raise ValueError(f"{source}: {name} has {len(kp)} keypoints, expected {len(names)}")
    kp = kp[order]
    unlabelled = [rois.LANDMARK_NAMES[i] for i in range(rois.NUM_LANDMARKS)
                  if kp[i, 2] == 0 or not all(math.isfinite(v) for v in kp[i, :2])]
    if unlabelled:
      raise ValueError(f"{source}: {name}: landmark(s) {', '.join(unlabelled)} not labelled "
                       "(visibility 0); label all 16 or leave the image out")
    out.append({"image": name, "width": int(im.get("width", 0)),
                "height": int(im.get("height", 0)), "landmarks": kp[:, :2]})
  return out


def write(coco: dict, path: str) -> None:
  with open(path, "w") as f:
    json.dump(coco, f, indent=1)


def read(path: str) -> list[dict]:
  try:
    with open(path) as f:
      coco = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: cannot read it as JSON ({e})") from e
  return from_coco(coco, path)
