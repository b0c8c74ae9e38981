"""--export_coco / --import_coco: the annotation CSV <-> COCO keypoints
(data_prep/coco_keypoints.py), for CVAT, Label Studio and other tools."""

from __future__ import annotations

import os

from bmdjax.annotation import store as store_lib
from data_prep import coco_keypoints


def export_coco(out: str, path: str, dicom_dir: str | None) -> int:
  rows = store_lib.read_rows(out)
  if not rows:
    raise SystemExit(f"{out}: no annotations to export")
  studies, skipped = [], 0
  for image, row in rows.items():
    lm = store_lib.landmarks_of(row)
    if lm is None or row["status"] == "unusable":
      skipped += 1
      continue
    h, w = row["height"], row["width"]
    if not (h and w):
      if not dicom_dir:
        raise SystemExit(f"{out} has no width/height for {image}: give --dicom_dir so the "
                         "image sizes can be read from the DICOMs")
      h, w = coco_keypoints.image_shape(os.path.join(dicom_dir, image))
    studies.append({"image": image, "width": w, "height": h, "landmarks": lm})
  coco_keypoints.write(coco_keypoints.to_coco(studies), path)
  print(f"wrote {len(studies)} studies to {path}"
        + (f"; left out {skipped} unusable or incomplete" if skipped else ""))
  return len(studies)


def import_coco(path: str, out: str) -> int:
  try:
    studies = coco_keypoints.read(path)
  except ValueError as e:
    raise SystemExit(str(e)) from e
  store = store_lib.AnnotationStore(out)
  for s in studies:
    store.save(s["image"], status="accepted", landmarks=s["landmarks"].tolist(),
               shape=(s["height"], s["width"]) if s["height"] and s["width"] else None)
  print(f"imported {len(studies)} studies from {path} into {out}")
  return len(studies)
