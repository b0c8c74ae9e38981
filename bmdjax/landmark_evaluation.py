"""A landmark detector measured against known landmarks, in mm.

Detection runs exactly as data_prep.build and bmdjax.predict run it (read the
DICOM, letterbox, detect, map back, check), so the errors are those a user's
studies get; they are measured in the pixels of the original image and in mm
(its pixel spacing), as the landmark literature reports them (MRE, SDR). The
heatmap points before the graph step and the error by confidence are reported
too: they say whether the graph step and the confidence check earn their place.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np
import pandas as pd
import scipy.ndimage

from bmdjax import detector, landmark_metrics, plots, runs
from data_prep import build, dicom_io, landmark_checks, rois

CONFIDENCE_BINS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
# reprocess="vendor": strong CR-like processing no simulator setting draws
# (unsharp mask sd 4 mm amount 3, dynamic range compression sd 25 mm by 0.7,
# half histogram equalisation), to check robustness to an unknown vendor.
VENDOR = dict(unsharp_mm=4.0, amount=3.0, compress_mm=25.0, compress=0.7, equalise=0.5)


def reprocess_like_vendor(radiograph: dicom_io.Radiograph) -> dicom_io.Radiograph:
  """The film re-processed with VENDOR (pixel spacing 0.2 mm when unknown),
  then normalised again as the reader does (dicom_io.normalise), as if the
  vendor had written the processed film."""
  x = np.asarray(radiograph.image, np.float64)
  sp = radiograph.pixel_spacing if np.isfinite(radiograph.pixel_spacing) else 0.2
  v = VENDOR
  x = x + v["amount"] * (x - scipy.ndimage.gaussian_filter(x, v["unsharp_mm"] / sp))
  low = scipy.ndimage.gaussian_filter(x, v["compress_mm"] / sp)
  x = x - v["compress"] * (low - low.mean())
  ranks = np.argsort(np.argsort(x.ravel())).reshape(x.shape) / x.size
  x = v["equalise"] * ranks + (1 - v["equalise"]) * (x - x.min()) / max(np.ptp(x), 1e-9)
  return dataclasses.replace(radiograph, image=dicom_io.normalise(x.astype(np.float32)))


def confidence_table(confidence, errors_mm, bins=CONFIDENCE_BINS) -> list[dict]:
  """Landmark count and MRE (mm) per confidence bin: is low confidence where
  the large errors are, i.e. is the min_confidence check worth its flags?"""
  c, e = np.ravel(confidence), np.ravel(errors_mm)
  out = []
  for lo, hi in zip(bins[:-1], bins[1:]):
    sel = (c >= lo) & ((c < hi) if hi < bins[-1] else (c <= hi)) & np.isfinite(e)
    out.append({"confidence": f"{lo:g}-{hi:g}", "n": int(sel.sum()),
                "mre_mm": float(e[sel].mean()) if sel.any() else float("nan"),
                "share_over_8mm": float((e[sel] > 8).mean()) if sel.any() else float("nan")})
  return out


def evaluate(workdir: str, dicom_dir: str, landmarks: str, out_dir: str | None = None,
             images=None, worst: int = 8, checkpoint: str = "best",
             progress: bool = True, min_confidence: float | None = None,
             reprocess: str = "none") -> dict:
  """Detects every image of `landmarks` (or of `images`), writes the report
  to `out_dir` (default WORKDIR/landmark_report) and returns metrics.json."""
  out_dir = out_dir or runs.path(workdir, runs.LANDMARK_REPORT)
  truth = build.load_landmarks(landmarks)
  names = list(truth) if images is None else list(images)
  missing = [n for n in names if n not in truth]
  if missing:
    raise ValueError(f"{landmarks} has no row for {len(missing)} image(s), e.g. {missing[0]}")
  finder = detector.LandmarkDetector.from_workdir(workdir, checkpoint)
  transform = {"none": None, "vendor": reprocess_like_vendor}[reprocess]
  found = finder.detect_files([os.path.join(dicom_dir, n) for n in names], min_confidence,
                              progress=progress, transform=transform)
  ok = [i for i, d in enumerate(found) if "error" not in d]
  failed = {names[i]: d["error"] for i, d in enumerate(found) if "error" in d}
  if not ok:
    raise ValueError(f"no image could be read ({len(failed)} failed), e.g. "
                     f"{next(iter(failed.items()), None)}")
  pred = np.stack([found[i]["landmarks"] for i in ok])
  heat = np.stack([found[i]["heatmap_landmarks"] for i in ok])
  true = np.stack([truth[names[i]] for i in ok])
  spacing = np.array([found[i]["pixel_spacing"] for i in ok], np.float64)
  confidence = np.stack([found[i]["confidence"] for i in ok])
  errors = landmark_metrics.radial_errors(pred, true)
  summary = landmark_metrics.summarize(errors, spacing)
  heat_summary = landmark_metrics.summarize(landmark_metrics.radial_errors(heat, true),
                                            spacing)
  flag_lists = [found[i]["flags"] for i in ok]
  counts = collections.Counter(n for f in flag_lists for n in landmark_checks.flag_names(f))
  study_mre = landmark_metrics.per_study_mre_mm(errors, spacing)
  metrics = {
      "detector": finder.description, "reprocess": reprocess,
      "dicom_dir": os.path.abspath(dicom_dir),
      "landmarks": os.path.abspath(landmarks), "studies": len(ok), "unreadable": failed,
      "min_confidence": finder.min_confidence if min_confidence is None else min_confidence,
      "flagged_studies": int(sum(bool(f) for f in flag_lists)),
      "flags_by_check": {name: counts.get(name, 0) for name in landmark_checks.CHECKS},
      "flagged_mre_mm": float(np.mean([m for m, f in zip(study_mre, flag_lists) if f]))
                        if any(flag_lists) else None,
      "unflagged_mre_mm": float(np.mean([m for m, f in zip(study_mre, flag_lists) if not f]))
                          if not all(flag_lists) else None,
      **summary, "heatmap_only": heat_summary,
      "by_confidence": confidence_table(confidence, errors * spacing[:, None]),
  }
  os.makedirs(out_dir, exist_ok=True)
  rows = []
  for k, i in enumerate(ok):
    row = {"image": names[i], "mre_mm": round(float(study_mre[k]), 3),
           "max_error_mm": round(float(np.max(errors[k] * spacing[k])), 3),
           "min_confidence": round(float(confidence[k].min()), 4),
           "max_tta_spread_px": round(float(np.max(found[i].get("spread", np.zeros(1)))), 3),
           "flags": "; ".join(flag_lists[k])}
    for j in range(rois.NUM_LANDMARKS):
      row[f"x{j}"], row[f"y{j}"] = round(float(pred[k, j, 0]), 2), round(float(pred[k, j, 1]), 2)
    rows.append(row)
  pd.DataFrame(rows).to_csv(os.path.join(out_dir, "detections.csv"), index=False)
  overlays = []
  for k in np.argsort(-study_mre)[:worst]:
    name = names[ok[k]]
    film = dicom_io.read_radiograph(os.path.join(dicom_dir, name))
    image = (transform(film) if transform else film).image
    title = (f"{name}: MRE {study_mre[k]:.1f} mm, max {np.max(errors[k] * spacing[k]):.1f} mm"
             + (f"\nflags: {'; '.join(landmark_checks.flag_names(flag_lists[k]))}"
                if flag_lists[k] else ""))
    overlays.append(plots.landmark_overlay(
        image, true[k], pred[k], os.path.join(out_dir, f"worst_{len(overlays) + 1:02d}_"
                                                       f"{os.path.splitext(os.path.basename(name))[0]}.png"),
        title, edges=rois.LANDMARK_EDGES))
  metrics["worst_overlays"] = overlays
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  with open(os.path.join(out_dir, "tables.md"), "w") as f:
    f.write(render_tables(metrics))
  return metrics


def render_tables(metrics: dict) -> str:
  """tables.md: the MRE/SDR table, the graph step's effect, checks, confidence."""
  o, h = metrics["overall"], metrics["heatmap_only"]["overall"]
  lines = [f"# Landmark detection: {metrics['studies']} studies",
           "", f"Detector: {metrics['detector']}. Errors in pixels of the original "
           "image and in mm (its pixel spacing); SDR = share of points within the distance.",
           "", landmark_metrics.markdown_table(metrics), "",
           f"Heatmap soft-argmax alone (before the graph step): MRE {h['mre_mm']:.2f} mm, "
           f"SDR 2/4/8 mm {100 * h['sdr_2mm']:.1f}/{100 * h['sdr_4mm']:.1f}/"
           f"{100 * h['sdr_8mm']:.1f}% (with it: {o['mre_mm']:.2f} mm).", "",
           f"Plausibility checks flag {metrics['flagged_studies']} of {metrics['studies']} "
           "studies: " + ", ".join(f"{k} {v}" for k, v in metrics["flags_by_check"].items())
           + ".", ""]
  if metrics["unreadable"]:
    lines += [f"Unreadable: {len(metrics['unreadable'])} studies.", ""]
  lines += ["| confidence | landmarks | MRE mm | share > 8 mm |", "|---|---|---|---|"]
  for b in metrics["by_confidence"]:
    lines.append(f"| {b['confidence']} | {b['n']} | {b['mre_mm']:.2f} | "
                 f"{100 * b['share_over_8mm']:.1f}% |")
  return "\n".join(lines) + "\n"


def split_images(manifest: str, split: str) -> list[str]:
  """The images of `split` in a manifest.csv of data_prep.build or
  build_landmarks: the studies the detector was not trained on."""
  man = pd.read_csv(manifest, dtype=str, keep_default_na=False)
  images = list(man[man.split == split].image)
  if not images:
    raise ValueError(f"{manifest} lists no image of split {split!r}")
  return images
