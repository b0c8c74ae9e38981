"""Landmark detection metrics: mean radial error and success detection rate.

The usual figures of landmark papers (e.g. the ISBI cephalometric challenge):
MRE, the mean Euclidean distance between detected and true points, in pixels
and in mm; SDR, the share of points within 2, 4 and 8 mm. Pure numpy, per
landmark and over all; a study whose pixel spacing is unknown (NaN) counts in
the pixel figures only.
"""

from __future__ import annotations

import numpy as np

from data_prep import rois

SDR_MM = (2.0, 4.0, 8.0)


def radial_errors(pred, true) -> np.ndarray:
  """Euclidean distances [N, K] between points pred, true [N, K, 2]."""
  d = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
  return np.sqrt(np.sum(d * d, axis=-1))


def _stats(px: np.ndarray, mm: np.ndarray, thresholds) -> dict:
  """Figures of one set of errors (flat arrays; NaN mm are left out of mm figures)."""
  mm = mm[np.isfinite(mm)]
  out = {"n": int(px.size), "mre_px": float(np.mean(px)) if px.size else float("nan"),
         "sd_px": float(np.std(px)) if px.size else float("nan"),
         "n_mm": int(mm.size),
         "mre_mm": float(np.mean(mm)) if mm.size else float("nan"),
         "sd_mm": float(np.std(mm)) if mm.size else float("nan"),
         "median_mm": float(np.median(mm)) if mm.size else float("nan"),
         "max_mm": float(np.max(mm)) if mm.size else float("nan")}
  for t in thresholds:
    out[f"sdr_{t:g}mm"] = float(np.mean(mm <= t)) if mm.size else float("nan")
  return out


def summarize(errors_px, mm_per_pixel, thresholds=SDR_MM) -> dict:
  """{"overall": figures, "per_landmark": {name: figures}} from errors [N, K]
  in pixels and each study's mm per pixel [N]."""
  px = np.asarray(errors_px, np.float64)
  mm = px * np.asarray(mm_per_pixel, np.float64)[:, None]
  return {"overall": _stats(px.ravel(), mm.ravel(), thresholds),
          "per_landmark": {name: _stats(px[:, k], mm[:, k], thresholds)
                           for k, name in enumerate(rois.LANDMARK_NAMES)}}


def per_study_mre_mm(errors_px, mm_per_pixel) -> np.ndarray:
  """Mean radial error of each study [N] in mm (pixels where spacing is unknown)."""
  px = np.asarray(errors_px, np.float64)
  scale = np.asarray(mm_per_pixel, np.float64)
  return px.mean(axis=1) * np.where(np.isfinite(scale), scale, 1.0)


def markdown_table(summary: dict, thresholds=SDR_MM) -> str:
  """Per-landmark rows and an overall row: MRE px, MRE mm (SD), SDR."""
  head = (["landmark", "n", "MRE px", "MRE mm", "SD mm"] +
          [f"SDR {t:g} mm" for t in thresholds])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  rows = list(summary["per_landmark"].items()) + [("**overall**", summary["overall"])]
  for name, s in rows:
    cells = [name, str(s["n"]), f"{s['mre_px']:.2f}", f"{s['mre_mm']:.2f}",
             f"{s['sd_mm']:.2f}"] + [f"{100 * s[f'sdr_{t:g}mm']:.1f}%" for t in thresholds]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
