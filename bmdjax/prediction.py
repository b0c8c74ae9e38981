"""Screening DICOM studies with trained runs: one result per study, and its table.

Per study: landmarks (given or detected, flagged when implausible), crops by
data_prep's `process_study`, BMD from each run (predictor.Model), then
T-scores, L1-L4, intervals and the screening decision (clinical.assess), an
overlay PNG and optionally a DICOM SR and FHIR Observations. A study that
cannot be used is refused with the reason; the others are still predicted.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pydicom

from bmdjax import clinical, conformal, lumbar, predictor, screening, tscore
from data_prep import dicom_io, rois
from data_prep.crops import process_study
from data_prep.labels import load_landmarks

LANDMARKS_NEEDED = ("no landmarks: pass --landmark_workdir=W (a trained landmark detector, "
                    "bmdjax.train --config=configs/landmarks.py) or --landmarks=landmarks.csv "
                    "with image,x0,y0,...,x15,y15 for each study")
DISCLAIMER = "Research software, not a diagnostic device: confirm with DXA."
OVERLAY_NOTICE = "RESEARCH USE, NOT FOR DIAGNOSIS"


def match_landmarks(table: dict, path: str):
  """The landmarks.csv row whose `image` is the end of the study's path.

  Returns (landmarks, None) or (None, reason). Rows may name the file alone or
  a relative path; a file name that several rows end with is ambiguous.
  """
  parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
  hits = {}
  for key, lm in table.items():
    k = os.path.normpath(key).split(os.sep)
    if parts[-len(k):] == k:
      hits.setdefault(len(k), []).append(lm)
  if not hits:
    return None, ("no row for this study in the landmarks file (its `image` column must "
                  "end with the study's file name)")
  best = hits[max(hits)]
  if len(best) > 1:
    return None, "several landmarks rows match this file name; give their image as a longer path"
  return best[0], None


def header_sex(path: str) -> str | None:
  """PatientSex from the DICOM header as M/F, or None when absent or other."""
  try:
    value = pydicom.dcmread(path, stop_before_pixels=True,
                            specific_tags=["PatientSex"]).get("PatientSex")
    return tscore.normalize_sex([str(value)])[0] if value else None
  except Exception:  # pylint: disable=broad-except  (a damaged header: no sex)
    return None


def _sex_list(sex, n: int) -> list:
  """One sex per study (None = read the header) from None, one value or a list."""
  if sex is None or isinstance(sex, str):
    sex = [sex] * n
  sex = list(sex)
  if len(sex) == 1:
    sex *= n
  if len(sex) != n:
    raise ValueError(f"give one sex for all studies or one per study: got {len(sex)} "
                     f"for {n} studies")
  return [tscore.normalize_sex([s])[0] if s else None for s in sex]

def _scores(bmd: dict, sex: str | None, source: str, ref, fitted, recalibrate) -> dict:
  """T-scores, L1-L4, WHO category, intervals and the screening decision."""
  out = clinical.assess(bmd, sex, ref, fitted, recalibrate)
  out["sex_source"] = source if sex else None
  out["tscore_reference"] = ref.source
  return out


def _overlay_path(out_dir: str, path: str, used: set) -> str:
  stem = os.path.splitext(os.path.basename(path))[0] or "study"
  name, k = stem, 1
  while name in used:  # two studies with the same file name from different folders
    k += 1
    name = f"{stem}_{k}"
  used.add(name)
  return os.path.join(out_dir, f"{name}.png")


def draw_overlay(image: np.ndarray, landmarks: np.ndarray, title: str, out: str,
                 marked=()) -> str:
  """The radiograph with the landmark graph and the 14 labelled ROI boxes;
  landmarks in `marked` (e.g. flagged ones) are circled."""
  from bmdjax import plots  # pylint: disable=import-outside-toplevel  (matplotlib)
  return plots.radiograph_overlay(image, landmarks, out, title, marked=marked,
                                  roi_boxes=True, notice=OVERLAY_NOTICE)


def _title(path: str, result: dict) -> str:
  """Overlay title: every T-score as reported (one decimal) and the category
  of the reported L1-L4 value, so the two always agree."""
  if result["status"] != "ok":
    return (f"{os.path.basename(path)}: {result['status']} "
            f"({result['reason'].split(': ', 1)[-1]})")
  parts = []
  for v, b in result["bmd"].items():
    t = result["t_score_reported"].get(v)
    parts.append(f"{v} {b:.3f}" + (f" T {t:+.1f}" if t is not None else ""))
  text = f"{os.path.basename(path)}: " + ", ".join(parts)
  lum = result.get("lumbar") or {}
  if lum.get("t_score_reported") is not None:
    iv = (result.get("intervals") or {}).get(lumbar.LUMBAR, {}).get("t_score")
    text += (f" | {lum['vertebrae']} {lum['bmd']:.3f} g/cm2, T {lum['t_score_reported']:+.1f}"
             + (f" ({result['intervals']['level']:.0%} interval {iv[0]:+.1f} to {iv[1]:+.1f})"
                if iv else "") + f": {result['who_category']}")
  elif result.get("sex"):
    text += " | no WHO category (needs L1-L4 from >= 2 vertebrae)"
  refer = (result.get("screening") or {}).get("refer_dxa")
  if refer is not None:
    text += " | " + ("REFER FOR DXA" if refer else "no referral")
  return text


def _flagged_landmarks(flags) -> list[int]:
  """Indices of the landmarks named in check messages (for the overlay)."""
  text = " ".join(flags)
  return [i for i, name in enumerate(rois.LANDMARK_NAMES)
          if re.search(rf"\b{name}\b", text)]


def predict_studies(workdir, paths, landmarks=None, sex=None, checkpoint: str = "best",
                    reference: str | None = None, out_dir: str | None = None,
                    size: int | None = None, landmark_workdir: str | None = None,
                    keep_flagged: bool = False,
                    min_landmark_confidence: float | None = None,
                    level: float = conformal.DEFAULT_LEVEL,
                    target_sensitivity: float = screening.DEFAULT_SENSITIVITY,
                    recalibrate: bool = False, sr: bool = False,
                    fhir_json: bool = False) -> list[dict]:
  """Predicts each study; one dict per path, in order.

  `workdir`: one run (a workdir or a `predictor.Model`) or a list (per-vertebra
  runs combined for L1-L4). The intervals and screening threshold are refitted at `level` and
  `target_sensitivity` from the runs' stored validation predictions (none,
  with a note, when a run has not been evaluated). `sr`/`fhir_json` write a
  DICOM SR / FHIR Observations per predicted study to `out_dir`.

  `landmarks`: path of a landmarks.csv or a dict image -> [16, 2]; without
  it, `landmark_workdir` (a trained detector) places them, and a study whose
  detection fails the plausibility checks comes back "flagged" without BMD
  unless `keep_flagged` (`min_landmark_confidence` overrides the detector's
  checks.min_confidence). `sex`: None
  (read PatientSex), "F"/"M" for all, or one per study. `out_dir`: where overlay
  PNGs go (None: none written). `size`: crop size, needed only when the run
  does not record it and its prepared dataset is gone. A study that cannot be
  used comes back with status "refused" and a reason naming the file, one that
  fails unexpectedly with status "error"; errors of the call itself (no run, bad
  sex, bad reference) raise.
  """
  paths = [os.fspath(p) for p in paths]
  sexes = _sex_list(sex, len(paths))
  ref = tscore.load_reference(reference)
  table = load_landmarks(landmarks) if isinstance(landmarks, (str, os.PathLike)) \
      else landmarks
  models = predictor.load_models(workdir, checkpoint, size)
  workdirs = ([workdir] if isinstance(workdir, (str, os.PathLike, predictor.Model))
              else list(workdir))
  run_dirs = [os.fspath(w) for w in workdirs if not isinstance(w, predictor.Model)]
  try:
    if len(run_dirs) < len(workdirs):  # a Model built from state has no validation file
      raise FileNotFoundError("no stored validation predictions for a Model object")
    fitted = clinical.fit_runs(run_dirs, ref, level, target_sensitivity)
  except FileNotFoundError:
    if recalibrate:
      raise
    fitted = None
  description = "; ".join(m.description for m in models)
  if (sr or fhir_json) and not out_dir:
    raise ValueError("--sr and --fhir write next to the overlays: give --out")
  finder = None
  if table is None and landmark_workdir:
    from bmdjax import detector  # pylint: disable=import-outside-toplevel
    finder = detector.LandmarkDetector.from_workdir(landmark_workdir)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
  results, used = [], set()
  for path, given_sex in zip(paths, sexes):
    result = {"study": path, "status": "refused", "reason": "", "model": description}
    image = lm = None
    flags_ = []
    try:
      radiograph = dicom_io.read_radiograph(path)
      image = radiograph.image
      if finder is not None:
        (found,) = finder.detect([radiograph], min_landmark_confidence)
        lm, flags_ = found["landmarks"], found["flags"]
        result["landmarks"] = {
            "source": "detected", "detector": finder.description,
            "points": np.round(lm, 2).tolist(),
            "confidence": np.round(found["confidence"], 4).tolist(), "flags": flags_}
        if flags_ and not keep_flagged:
          result["status"] = "flagged"
          raise dicom_io.StudyError(path, "detected landmarks fail checks: "
                                    + "; ".join(flags_))
      elif table is None:
        raise dicom_io.StudyError(path, LANDMARKS_NEEDED)
      else:
        lm, why = match_landmarks(table, path)
        if why:
          raise dicom_io.StudyError(path, why)
        result["landmarks"] = {"source": "given", "points": np.round(lm, 2).tolist()}
      crops = {}
      for m in models:  # runs trained on other crop sizes get their own crops
        if repr(m.spec) not in crops:
          crops[repr(m.spec)] = process_study(path, lm, m.spec, radiograph=radiograph)
      # From the header, else estimated from the landmarks (dicom_io.SPACING_SOURCES).
      first = next(iter(crops.values()))
      mm = float(first["pixel_spacing"])
      result["pixel_spacing"] = {"mm": round(mm, 4) if np.isfinite(mm) else None,
                                 "source": first["spacing_source"]}
      for c in crops.values():
        c.pop("spacing_source")
    except dicom_io.StudyError as e:
      result["reason"] = str(e)
    except Exception as e:  # a bug on one study must not cost the others theirs
      result.update(status="error", reason=f"{path}: unexpected {type(e).__name__}: {e}")
    else:
      try:
        bmd = {}
        for m in models:
          bmd.update(m(crops[repr(m.spec)]))
        bmd = {v: bmd[v] for v in tscore.VERTEBRAE if v in bmd}
        source = "given" if given_sex else "DICOM header"
        result.update(status="ok",
                      **_scores(bmd, given_sex or header_sex(path), source, ref, fitted,
                                recalibrate))
        caution = clinical.landmark_caution([m.trained_landmarks for m in models],
                                            result["landmarks"]["source"])
        if caution:
          result["notes"].append(caution)
      except Exception as e:  # pylint: disable=broad-except
        result.update(status="error", reason=f"{path}: unexpected {type(e).__name__}: {e}")
    if out_dir and image is not None and lm is not None:
      result["overlay"] = draw_overlay(image, np.asarray(lm, np.float64),
                                       _title(path, result),
                                       _overlay_path(out_dir, path, used),
                                       marked=_flagged_landmarks(flags_))
      stem = os.path.splitext(result["overlay"])[0]
      try:
        if result["status"] == "ok" and sr:
          from bmdjax import dicom_sr  # pylint: disable=import-outside-toplevel
          run_names = [m.description if isinstance(w, predictor.Model) else
                       f"{os.path.basename(os.path.normpath(os.fspath(w)))}: {m.description}"
                       for w, m in zip(workdirs, models)]
          result["sr"] = dicom_sr.write(result, path, np.asarray(lm, np.float64),
                                        f"{stem}_sr.dcm", run_names)
        if result["status"] == "ok" and fhir_json:
          from bmdjax import fhir  # pylint: disable=import-outside-toplevel
          result["fhir"] = fhir.write(result, f"{stem}_fhir.json", description)
      except Exception as e:  # pylint: disable=broad-except  (the others still get theirs)
        result.update(status="error", reason=f"{path}: writing the SR/FHIR output failed: "
                      f"{type(e).__name__}: {e}")
    results.append(result)
  return results


def format_table(results: list[dict]) -> str:
  """Human-readable report of predict_studies' output."""
  lines = [f"model: {results[0]['model']}" if results else "no studies", ""]
  for r in results:
    flags_ = r.get("landmarks", {}).get("flags", [])
    if r["status"] != "ok":
      lines += [f"{r['status'].upper()} {r['reason']}"]
    else:
      sex = f"sex {r['sex']} ({r['sex_source']})" if r["sex"] else "sex unknown"
      iv = r.get("intervals") or {}
      level = f"{iv['level']:.0%} interval" if iv else "interval"
      lines += [f"{r['study']}  [{sex}]" + ("  (recalibrated)" if r["recalibrated"] else ""),
                f"  {'':<9}{'BMD g/cm2':>10}  {'(' + level + ')':<18}{'T-score':>8}  "
                f"{'(' + level + ')':<16}"]
      lum = r.get("lumbar") or {}
      rows = [(v, b, r["t_score_reported"].get(v)) for v, b in r["bmd"].items()]
      if lum.get("bmd") is not None:
        rows.append((lumbar.LUMBAR, lum["bmd"], lum["t_score_reported"]))
      for v, b, t in rows:
        bi, ti = iv.get(v, {}).get("bmd"), iv.get(v, {}).get("t_score")
        name = lum["vertebrae"] if v == lumbar.LUMBAR else v
        lines.append(f"  {name:<9}{b:>10.3f}  {_span(bi, 3):<18}"
                     f"{_num(t, '+.1f'):>8}  {_span(ti, 1, '+'):<16}")
      for why in lum.get("excluded", []):
        lines.append(f"  {why}")
      if r["who_category"]:
        lines.append(f"  WHO category ({lum['vertebrae']} T-score {lum['t_score_reported']:+.1f}"
                     f"): {r['who_category']}")
      if r.get("category_statement"):
        lines.append(f"  {r['category_statement']}")
      if r.get("screening"):
        lines.append(f"  screening: {r['screening']['decision']}")
      for note in r.get("notes", []):
        lines.append(f"  note: {note}")
      if r.get("pixel_spacing"):
        mm = r["pixel_spacing"]["mm"]
        lines.append(f"  pixel spacing: {'unknown' if mm is None else f'{mm:.4f} mm'} "
                     f"({r['pixel_spacing']['source']})")
      if r["landmarks"]["source"] == "detected":
        conf = r["landmarks"]["confidence"]
        lines.append(f"  landmarks: detected (confidence min {min(conf):.2f}, median "
                     f"{float(np.median(conf)):.2f})")
      for flag in flags_:  # kept with --keep_flagged: shown, never hidden
        lines.append(f"  LANDMARK FLAG {flag}")
    if r.get("overlay"):
      lines.append(f"  overlay: {r['overlay']}")
    lines.append("")
  if any(r["status"] == "ok" and r["t_score"] for r in results):
    ok = next(r for r in results if r["status"] == "ok" and r["t_score"])
    lines.append(f"T-score reference: {ok['tscore_reference']}")
  lines.append(DISCLAIMER)
  return "\n".join(lines)


def _num(x, fmt):
  return "-" if x is None else format(x, fmt)


def _span(pair, digits, sign=""):
  return "" if not pair else f"[{pair[0]:{sign}.{digits}f}, {pair[1]:{sign}.{digits}f}]"
