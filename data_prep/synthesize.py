"""A synthetic chest X-ray + DXA cohort whose ground truth is known.

Nobody outside a hospital has paired chest radiographs and DXA results, so the
whole pipeline must also run on data we generate. This module draws patients
(sex, age, lumbar L1-L4 BMD following the paper's Fig. 5 and Table VI), renders
one frontal chest radiograph per study with the bone density written into the
bones, and stores everything in the layout of a real export:

  DIR/dicom/S000000.dcm ...   real DICOM files (DX/CR, MONOCHROME1/2, fake PHI)
  DIR/labels.csv              patient_id,image,sex,age,L1,L2,L3,L4
  DIR/landmarks.csv           image,x0,y0,...,x15,y15 (pixels of the stored image)
  DIR/cohort.json             settings, summary statistics and the ceiling r

The density signal. Each patient has a skeletal density latent
  D = sum_k w_k (L_k - c_k) / 0.125      (c_k: sex-pooled young-adult mean)
which every one of the 14 ROI bone regions shows with its own deviation,
d_j = D + BONE_NOISE * e_j, e_j ~ N(0, 1). A bone's trabecular density,
cortical thickness and trabecular texture (amplitude, coarseness) follow the
local d. Everything the film adds afterwards (exposure, scatter, processing,
tone curve, detector gain; film_processing.py) is drawn per film and is
independent of D, and nothing burned into the film anchors the grey scale to
bone: density shows only as contrasts inside the film (bone against the soft
tissue and lung beside it, cortex against medulla, texture). Sex and age reach
the image only through D (body size, breasts, anatomy, devices and exposure
are drawn independently of them), so E[L_k | image] <= E[L_k | d_1..d_14] and
`ceiling_r` in cohort.json is an upper bound for any estimator.

The command is `bmdjax synthesize` (bmdjax/synthesize.py).

The films: anatomy.py (shapes), render.py (attenuation), devices.py (ECG leads,
lines, tubes, pacemakers), film_processing.py (exposure, CR/DX processing,
collimation, lead markers, burned-in text); `--plain` leaves out the markers,
text and collimation and keeps everything else.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import multiprocessing
import os

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from data_prep import anatomy, devices, film_processing, reference, render, rois
from data_prep.schema import VERTEBRAE

# ---------------------------------------------------------------------------
# Patients and BMD.
# ---------------------------------------------------------------------------

# The young-adult reference T-scores use (data_prep/reference.py), g/cm2.
_REF = reference.read()[0]
REF_MEAN = {s: np.array([_REF[(s, v)][0] for v in VERTEBRAE]) for s in ("M", "F")}
REF_SD = {s: np.array([_REF[(s, v)][1] for v in VERTEBRAE]) for s in ("M", "F")}
# Paper, Table VI: Pearson r between vertebrae; used for the residuals.
RESIDUAL_CORR = np.array([[1.000, 0.918, 0.878, 0.807],
                          [0.918, 1.000, 0.931, 0.836],
                          [0.878, 0.931, 1.000, 0.898],
                          [0.807, 0.836, 0.898, 1.000]])
# A hospital DXA cohort is more heterogeneous than healthy young adults.
RESIDUAL_SD_FACTOR = 1.12
# Fig. 5: women above men before the menopause, then a fast loss that slows
# with age (cumulative loss in g/cm2 at these ages); men nearly flat.
FEMALE_OFFSET = 0.02
FEMALE_LOSS_AGES = (20, 48, 60, 75, 90)
FEMALE_LOSS = (0.0, 0.0, 0.24, 0.39, 0.45)
MALE_OFFSET = -0.055
MALE_SLOPE_AFTER_50 = -0.0015
# Age distribution: flat 45-65, Gaussian tails (paper: >200 per age and sex at
# 45-60, <30 above 75 in 13.7k cases).
AGE_RANGE = (20, 90)
AGE_PLATEAU = (45, 65)
AGE_TAIL_SD = (8.0, 5.0)
BMD_CLIP = (0.30, 1.80)

# The density latent that the images show.
DENSITY_WEIGHTS = np.array([0.35, 0.30, 0.20, 0.15])
DENSITY_CENTRE = (REF_MEAN["M"] + REF_MEAN["F"]) / 2
DENSITY_SCALE = 0.125
BONE_NOISE = 1.3  # sd of each ROI's own deviation from D


def sample_ages(n: int, rng: np.random.Generator) -> np.ndarray:
  """Integer ages with most mass 45-75, few above 75."""
  ages = np.arange(AGE_RANGE[0], AGE_RANGE[1] + 1)
  lo, hi = AGE_PLATEAU
  w = np.ones(len(ages))
  w[ages < lo] = np.exp(-0.5 * ((ages[ages < lo] - lo) / AGE_TAIL_SD[0]) ** 2)
  w[ages > hi] = np.exp(-0.5 * ((ages[ages > hi] - hi) / AGE_TAIL_SD[1]) ** 2)
  return rng.choice(ages, size=n, p=w / w.sum())


def mean_bmd(sex, age) -> np.ndarray:
  """Population mean L1-L4 BMD [n, 4] for sex ('F'/'M') and age (years)."""
  sex = np.asarray(sex)
  age = np.asarray(age, np.float64)
  female = (sex == "F")[:, None]
  f = REF_MEAN["F"] + FEMALE_OFFSET - np.interp(age, FEMALE_LOSS_AGES, FEMALE_LOSS)[:, None]
  m = REF_MEAN["M"] + MALE_OFFSET + MALE_SLOPE_AFTER_50 * np.maximum(age - 50, 0)[:, None]
  return np.where(female, f, m)


def residual_sd(sex) -> np.ndarray:
  """Residual sd of L1-L4 [n, 4] around mean_bmd."""
  female = (np.asarray(sex) == "F")[:, None]
  return RESIDUAL_SD_FACTOR * np.where(female, REF_SD["F"], REF_SD["M"])


def t_scores(sex, bmd) -> np.ndarray:
  """T-scores [n, 4] against the shipped young-adult reference (Biology Direct 2025)."""
  female = (np.asarray(sex) == "F")[:, None]
  mean = np.where(female, REF_MEAN["F"], REF_MEAN["M"])
  sd = np.where(female, REF_SD["F"], REF_SD["M"])
  return (np.asarray(bmd, np.float64) - mean) / sd


def density_latent(bmd) -> np.ndarray:
  """Skeletal density D [n] (sd units) of L1-L4 BMD [n, 4]: what images show."""
  return ((np.asarray(bmd, np.float64) - DENSITY_CENTRE) / DENSITY_SCALE) @ DENSITY_WEIGHTS


def sample_patients(n: int, rng: np.random.Generator) -> pd.DataFrame:
  """n patients: patient_id, sex, age, L1..L4 (g/cm2, unrounded), density.

  Pure and vectorised so statistics can be checked on many patients without
  rendering anything.
  """
  sex = np.where(rng.random(n) < 0.5, "F", "M")
  age = sample_ages(n, rng)
  z = rng.multivariate_normal(np.zeros(4), RESIDUAL_CORR, size=n, method="cholesky")
  bmd = np.clip(mean_bmd(sex, age) + residual_sd(sex) * z, *BMD_CLIP)
  df = pd.DataFrame({"patient_id": [f"P{i:06d}" for i in range(n)], "sex": sex,
                     "age": age.astype(int)})
  for k, name in enumerate(VERTEBRAE):
    df[name] = bmd[:, k]
  df["density"] = density_latent(bmd)
  return df


def followup_bmd(sex, age, bmd, years, rng: np.random.Generator) -> np.ndarray:
  """BMD [n, 4] `years` later: the population trend plus a small change."""
  trend = mean_bmd(sex, np.asarray(age) + years) - mean_bmd(sex, age)
  change = 0.012 * rng.standard_normal((len(trend), 1)) + 0.006 * rng.standard_normal(trend.shape)
  return np.clip(np.asarray(bmd) + trend + change, *BMD_CLIP)


def roi_density(density, rng: np.random.Generator) -> np.ndarray:
  """The density [n, 14] each ROI bone region shows: D + own deviation."""
  density = np.asarray(density, np.float64)
  return density[:, None] + BONE_NOISE * rng.standard_normal((len(density), rois.NUM_ROIS))


def ceiling_r(n: int = 200_000, seed: int = 0, bins: int = 256) -> dict:
  """Best Pearson r reachable from the injected density, per vertebra.

  Monte Carlo: the 14 ROI densities are D plus independent equal-variance
  noise, so their mean is sufficient; E[L_k | mean] is estimated by quantile-
  binned means fitted on one half of the sample and scored on the other
  (cross-fitting, so the binning cannot overfit).
  """
  rng = np.random.default_rng([seed, 7919])
  df = sample_patients(n, rng)
  seen = roi_density(df["density"].to_numpy(), rng).mean(axis=1)
  half = n // 2
  edges = np.quantile(seen[:half], np.linspace(0, 1, bins + 1))
  idx = np.clip(np.searchsorted(edges, seen, side="right") - 1, 0, bins - 1)
  counts = np.maximum(np.bincount(idx[:half], minlength=bins), 1)
  out = {}
  for name in VERTEBRAE:
    bmd = df[name].to_numpy()
    cond_mean = np.bincount(idx[:half], bmd[:half], minlength=bins) / counts
    out[name] = float(np.corrcoef(bmd[half:], cond_mean[idx[half:]])[0, 1])
  return out


def assign_missing(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Mask [n, 4] of vertebrae excluded by the densitometrist; never all four."""
  miss = rng.random((n, 4)) < fraction
  full = miss.all(axis=1)
  keep = rng.integers(0, 4, size=n)
  miss[full, keep[full]] = False
  return miss


# ---------------------------------------------------------------------------
# Rendering: anatomy (data_prep/anatomy.py) -> attenuation (render.py, with
# devices.py) -> exposure and CR/DX processing (film_processing.py).
# ---------------------------------------------------------------------------

POSE = dict(
    ap_share=0.2,             # bedside AP films
    rotation_deg=3.0,         # sd, clipped at 2.5 sd (x1.5 on AP films)
    body_scale=(1.0, 0.06),   # mean, sd (independent of sex and age)
    translation_mm=12.0,
    cr_share=0.4,
    collimated_share=0.7,
    marker_share=0.9,
    annotation_share=(0.1, 0.5),  # PA, AP
    shutter=(0.5, 0.3, 0.2),      # collimated border left as exposed / black / white
)
_ANNOTATIONS = {"PA": ("PA", "ERECT", "STANDING"),
                "AP": ("AP PORTABLE", "SUPINE", "MOBILE", "AP SITTING")}


@dataclasses.dataclass
class Rendered:
  image: np.ndarray      # float32 [H, W] in [0, 1], bone bright (presentation)
  landmarks: np.ndarray  # [16, 2] pixels of the image
  spacing: float         # mm per pixel
  view: str
  params: dict


def render_chest(roi_values, rng: np.random.Generator, spacing_range=(0.14, 0.2),
                 plain: bool = False) -> Rendered:
  """Renders one frontal chest radiograph whose 14 ROI bones show `roi_values`.

  Anatomy, pose, devices, exposure and processing are drawn from `rng`;
  `plain` leaves out lead markers, burned-in text and collimation.
  """
  roi_values = np.asarray(roi_values, np.float64)
  spacing = float(rng.uniform(*spacing_range))
  view = "AP" if rng.random() < POSE["ap_share"] else "PA"
  modality = "CR" if rng.random() < POSE["cr_share"] else "DX"
  an = anatomy.make_anatomy(rng, view)
  scale = float(np.clip(rng.normal(*POSE["body_scale"]), 0.85, 1.15))
  sd = POSE["rotation_deg"] * (1.5 if view == "AP" else 1.0)
  theta = float(np.deg2rad(np.clip(rng.normal(0, sd), -2.5 * sd, 2.5 * sd)))
  c, s = math.cos(theta), math.sin(theta)
  rot = np.array([[c, -s], [s, c]])
  # Field of view: portrait 35x43 or square 43x43 cm with a few mm cropped at
  # random, widened when the patient would not fit. Every ROI box lies inside
  # the image and clear of the collimation, as in a well-positioned chest film.
  lm_rel = (an.landmarks - [0, 130]) @ rot.T * scale
  margin = 0.71 * rois.ROI_SIDE * rois.thorax_width(lm_rel) + 12.0
  span = lm_rel.max(0) - lm_rel.min(0) + 2 * margin
  fov = np.array([350.0 if rng.random() < 0.65 else 430.0, 430.0]) - rng.uniform(0, 15, 2)
  fov = np.maximum(fov, span + 2.0)
  H, W = (int(round(fov[1] / spacing)), int(round(fov[0] / spacing)))
  centre = fov / 2 + rng.normal(0, POSE["translation_mm"], 2) + [0, 10]
  lo = margin - lm_rel.min(0)
  hi = fov - margin - lm_rel.max(0)
  centre = np.clip(centre, lo, np.maximum(hi, lo))
  t = centre - rot @ np.array([0, 130]) * scale
  pose = (t, scale, theta)
  landmarks = (t + an.landmarks @ rot.T * scale) / spacing

  def grid(mm):
    f = max(mm / spacing, 1.0)
    return render.Grid(max(int(math.ceil(H / f)), 2), max(int(math.ceil(W / f)), 2), (H, W),
                       spacing, pose)
  fine, medium = grid(render.BONE["render_mm"]), grid(render.BONE["vessel_mm"])
  soft, lung = render.soft_tissue(grid(2.0), an)
  density = render.resize(render.density_field(grid(4.0), an.landmarks, roi_values),
                          fine.shape)
  bones = render.Bones(fine, density, *render.texture(fine, rng))
  for tube in an.tubes:
    bones.tube(tube)
  for tri, thick in an.plates:
    bones.plate(tri, thick)
  for x, y, r in an.discs:
    bones.disc(x, y, r)
  for k in range(len(an.vert_x)):
    bones.vertebra(an.vert_x[k], an.vert_y[k], an.vert_hw[k], an.vert_hh[k],
                   anatomy.T1 <= k <= anatomy.T12)
  wires, present = devices.draw(rng, an)
  shape = (H, W)
  att = (render.resize(soft, shape) + render.resize(bones.att, shape)
         + render.resize(render.vessels(medium, an) * render.resize(lung, medium.shape), shape)
         + render.resize(render.metal(medium, wires), shape))

  centres, side, angle = rois.roi_boxes(landmarks)
  corners = np.stack([rois.box_corners(c, side, angle) for c in centres])
  boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)
  keep = (*boxes[:, :2].min(0), *boxes[:, 2:].max(0))
  # What `plain` leaves out is drawn from its own stream, so plain films match
  # the others in everything else.
  extra = np.random.default_rng(rng.integers(2 ** 63))
  field = film_processing.collimation(shape, spacing, extra, keep)
  if plain or extra.random() >= POSE["collimated_share"]:
    field = None
  marker = "L" if extra.random() < 0.5 else "R"
  lead = film_processing.lead_marker(shape, spacing, extra, marker, boxes)
  if plain or extra.random() >= POSE["marker_share"]:
    marker = None
  else:
    att = att + lead
  grid_used = rng.random() < (0.85 if view == "PA" else 0.25)
  log, exposure = film_processing.expose(att, spacing, rng, grid=grid_used, field=field)
  img, processing = film_processing.process(log, spacing, rng, modality=modality, field=field)
  annotation = None
  if not plain and extra.random() < POSE["annotation_share"][view == "AP"]:
    annotation = _ANNOTATIONS[view][int(extra.integers(len(_ANNOTATIONS[view])))]
    film_processing.annotate(img, spacing, extra, annotation, boxes)
  shutter = "none"
  if field is not None:
    shutter = ("exposed", "black", "white")[int(extra.choice(3, p=POSE["shutter"]))]
    if shutter != "exposed":
      img = np.where(field < 0.5, 0.0 if shutter == "black" else 1.0, img)
  # Detector gain and offset: the stored values use a random part of the range.
  gain = float(rng.uniform(*film_processing.PROCESS["gain"]))
  offset = float(rng.uniform(0.0, 1.0 - gain))
  img = offset + gain * np.clip(img, 0, 1)
  params = dict(spacing=spacing, view=view, modality=modality, scale=scale,
                rotation_deg=math.degrees(theta), shape=[H, W], anti_scatter_grid=bool(grid_used),
                collimated=field is not None, shutter=shutter, marker=marker,
                annotation=annotation, devices=present, gain=gain, offset=offset,
                **exposure, **processing)
  return Rendered(img.astype(np.float32), landmarks, spacing, view, params)


# ---------------------------------------------------------------------------
# DICOM.
# ---------------------------------------------------------------------------

_SOP_CLASS = {"DX": "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
              "CR": "1.2.840.10008.5.1.4.1.1.1"}


def write_dicom(path, image: np.ndarray, *, photometric: str = "MONOCHROME2",
                spacing: float = 0.2, bits_stored: int = 12, modality: str = "DX",
                view: str = "PA", rescale: tuple[float, float] = (1.0, 0.0),
                header: dict | None = None) -> None:
  """Writes a bone-bright float image in [0, 1] as an uncompressed DICOM.

  The image is quantised to `bits_stored` bits; MONOCHROME1 stores it inverted
  (bone dark), as CR readers do. RescaleSlope/Intercept and a window covering
  the whole stored range are set, so a reader applying the modality and VOI
  LUTs and the photometric inversion gets the image back (up to a linear map).
  `header` adds or overrides attributes (keyword -> value).
  """
  if photometric not in ("MONOCHROME1", "MONOCHROME2"):
    raise ValueError(f"unsupported photometric interpretation {photometric}")
  if not 8 < bits_stored <= 16:
    raise ValueError(f"bits_stored must be 9..16, got {bits_stored}")
  top = 2 ** bits_stored - 1
  values = np.round(np.clip(np.asarray(image, np.float64), 0, 1) * top).astype(np.uint16)
  if photometric == "MONOCHROME1":
    values = (top - values).astype(np.uint16)
  header = dict(header or {})
  sop_class = _SOP_CLASS.get(modality, _SOP_CLASS["DX"])
  sop_uid = header.pop("SOPInstanceUID", None) or generate_uid()

  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = sop_class
  meta.MediaStorageSOPInstanceUID = sop_uid
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = sop_class
  ds.SOPInstanceUID = sop_uid
  ds.Modality = modality
  ds.ViewPosition = view
  ds.ImageType = ["ORIGINAL", "PRIMARY"]
  ds.BodyPartExamined = "CHEST"
  ds.PatientOrientation = ["L", "F"]
  if modality == "DX":
    ds.PresentationIntentType = "FOR PRESENTATION"
  ds.set_pixel_data(values, photometric, bits_stored, generate_instance_uid=False)
  ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
  ds.ImagerPixelSpacing = [round(spacing, 6), round(spacing, 6)]
  slope, intercept = rescale
  ds.RescaleSlope = slope
  ds.RescaleIntercept = intercept
  ds.RescaleType = "US"
  lo, hi = float(values.min()) * slope + intercept, float(values.max()) * slope + intercept
  ds.WindowCenter = round((lo + hi) / 2 + 0.5, 2)
  ds.WindowWidth = round(hi - lo + 1, 2)
  ds.VOILUTFunction = "LINEAR"
  ds.PixelIntensityRelationship = "LOG"
  # +1: lower values mean less beam intensity (more attenuation), i.e. bone dark.
  ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME1" else -1
  for key, value in header.items():
    setattr(ds, key, value)
  ds.save_as(path, enforce_file_format=True)


_FIRST = {"F": ("Mary", "Anna", "Linda", "Mei", "Sofia", "Grace", "Yuki", "Elena",
                "Fatima", "Ingrid", "Chloe", "Hana"),
          "M": ("John", "Wei", "Carlos", "Peter", "Ahmed", "Kenji", "Lars", "David",
                "Ivan", "Tomas", "Omar", "Hiro")}
_LAST = ("Smith", "Chen", "Garcia", "Muller", "Tanaka", "Novak", "Kowalski", "Lin",
         "Haddad", "Johansson", "Rossi", "Nguyen", "Okafor", "Silva", "Wang", "Brown")
_INSTITUTIONS = ("St. Example General Hospital", "Riverside Medical Center",
                 "University Hospital Nowhere", "Lakeside Community Clinic")
_REASONS = ("pre-op evaluation", "cough for 3 weeks", "fall at home, r/o rib fracture",
            "follow-up pneumonia", "routine check-up", "shortness of breath",
            "chest pain, smoker")
_DOCTORS = ("Dr. A. Meyer", "Dr. L. Wong", "Dr. S. Patel", "Dr. M. Rossi")


def fake_header(rng: np.random.Generator, patient: dict, study: dict, seed: int) -> dict:
  """Deterministic fake PHI so privacy tests have something to find."""
  first = _FIRST[patient["sex"]][patient["name_idx"][0] % 12]
  last = _LAST[patient["name_idx"][1] % len(_LAST)]
  date, birth = study["date"], patient["birth"]
  uid = lambda kind: generate_uid(entropy_srcs=[str(seed), kind, patient["patient_id"],
                                                str(study["index"])])
  reason = _REASONS[int(rng.integers(len(_REASONS)))]
  return dict(
      PatientName=f"{last.upper()}^{first.upper()}",
      PatientID=patient["mrn"],
      PatientBirthDate=birth.strftime("%Y%m%d"),
      PatientSex=patient["sex"],
      PatientAge=f"{int(study['age']):03d}Y",
      StudyDate=date.strftime("%Y%m%d"),
      SeriesDate=date.strftime("%Y%m%d"),
      ContentDate=date.strftime("%Y%m%d"),
      StudyTime=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(60)):02d}00",
      AccessionNumber=f"A{int(rng.integers(10**8, 10**9))}",
      InstitutionName=_INSTITUTIONS[patient["name_idx"][2] % len(_INSTITUTIONS)],
      ReferringPhysicianName=_DOCTORS[int(rng.integers(len(_DOCTORS)))].replace(" ", "^"),
      StudyDescription=f"CHEST {study['view']} - {reason}"[:64],
      ImageComments=(f"pt {first} {last}, MRN {patient['mrn']}, born {birth:%d.%m.%Y}; "
                     f"call {_DOCTORS[int(rng.integers(4))]} with results"),
      SeriesDescription=f"CHEST {study['view']}",
      StudyInstanceUID=uid("study"),
      SeriesInstanceUID=uid("series"),
      SOPInstanceUID=uid("sop"),
      StudyID=str(int(rng.integers(1, 10**6))),
      SeriesNumber=1,
      InstanceNumber=1,
      Manufacturer="SYNTHETIC",
  )


# ---------------------------------------------------------------------------
# The cohort.
# ---------------------------------------------------------------------------


def _make_study(job: dict) -> dict:
  """Renders and writes one study (runs in a worker process)."""
  rng = np.random.default_rng([job["seed"], 1, job["index"]])
  r = render_chest(job["roi_values"], rng, job["spacing_range"], plain=job["plain"])
  photometric = "MONOCHROME1" if rng.random() < 0.5 else "MONOCHROME2"
  modality = r.params["modality"]
  bits = int(rng.integers(12, 17))
  rescale = [(1.0, 0.0), (1.0, -1024.0), (0.5, 0.0), (2.0, 100.0)][int(rng.integers(4))]
  header = fake_header(rng, job["patient"], dict(job["study"], view=r.view), job["seed"])
  write_dicom(job["path"], r.image, photometric=photometric, spacing=r.spacing,
              bits_stored=bits, modality=modality, view=r.view, rescale=rescale,
              header=header)
  return dict(index=job["index"], landmarks=r.landmarks, shape=r.image.shape,
              spacing=r.spacing, photometric=photometric, modality=modality, bits=bits,
              view=r.view, devices=r.params["devices"], collimated=r.params["collimated"],
              marker=r.params["marker"] is not None)


def generate(out: str, patients: int, seed: int = 0, spacing_range=(0.14, 0.2),
             followup_fraction: float = 0.1, missing_fraction: float = 0.03,
             workers: int | None = None, ceiling_samples: int = 200_000,
             progress: bool = True, plain: bool = False) -> dict:
  """Writes the cohort to `out` (see the module docstring); returns cohort.json."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng([seed, 0])
  os.makedirs(os.path.join(out, "dicom"), exist_ok=True)
  pts = sample_patients(patients, rng)
  bone_dev = BONE_NOISE * rng.standard_normal((patients, rois.NUM_ROIS))
  n_follow = int(round(followup_fraction * patients))
  follow = np.sort(rng.choice(patients, size=n_follow, replace=False))
  # Studies: one per patient, a second one `years` later for some.
  years = rng.integers(1, 4, size=n_follow)
  pid = np.concatenate([np.arange(patients), follow])
  age = np.concatenate([pts["age"].to_numpy(), pts["age"].to_numpy()[follow] + years])
  bmd0 = pts[list(VERTEBRAE)].to_numpy()
  bmd = np.concatenate([bmd0, followup_bmd(pts["sex"].to_numpy()[follow],
                                           pts["age"].to_numpy()[follow], bmd0[follow],
                                           years, rng)])
  order = np.lexsort((age, pid))
  pid, age, bmd = pid[order], age[order], bmd[order]
  n = len(pid)
  dens = density_latent(bmd)
  missing = assign_missing(n, missing_fraction, rng)
  base_date = np.datetime64("2015-01-01") + rng.integers(0, 8 * 365, size=patients)
  gap_days = np.zeros(n, int)
  second = np.r_[False, pid[1:] == pid[:-1]]
  gap_days[second] = (age[second] - age[np.flatnonzero(second) - 1]) * 365 + rng.integers(
      -60, 60, size=second.sum())
  mrn = rng.choice(10**7, size=patients, replace=False) + 10**7
  name_idx = rng.integers(0, 10**6, size=(patients, 3))
  birth_offset = rng.integers(0, 365, size=patients)

  jobs = []
  for k in range(n):
    p = int(pid[k])
    date = base_date[p] + np.timedelta64(int(gap_days[k]), "D")
    birth = base_date[p] - np.timedelta64(int(365.25 * pts["age"][p] + birth_offset[p]), "D")
    patient = dict(patient_id=pts["patient_id"][p], sex=pts["sex"][p],
                   mrn=f"MRN{mrn[p]}", name_idx=name_idx[p].tolist(),
                   birth=birth.astype(datetime.date))
    study = dict(index=k, age=int(age[k]), date=date.astype(datetime.date))
    jobs.append(dict(index=k, seed=seed, roi_values=dens[k] + bone_dev[p],
                     spacing_range=tuple(spacing_range), plain=plain, patient=patient, study=study,
                     path=os.path.join(out, "dicom", f"S{k:06d}.dcm")))

  workers = workers or os.cpu_count() or 1
  results = [None] * n
  bar = tqdm(total=n, desc="rendering", unit="study", disable=not progress)
  if workers > 1 and n > 1:
    # forkserver: safe even when the caller has started threads (e.g. JAX).
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
      for res in pool.imap_unordered(_make_study, jobs, chunksize=1):
        results[res["index"]] = res
        bar.update()
  else:
    for job in jobs:
      res = _make_study(job)
      results[res["index"]] = res
      bar.update()
  bar.close()

  images = [f"S{k:06d}.dcm" for k in range(n)]
  labels = pd.DataFrame({"patient_id": pts["patient_id"].to_numpy()[pid], "image": images,
                         "sex": pts["sex"].to_numpy()[pid], "age": age.astype(int)})
  for j, name in enumerate(VERTEBRAE):
    labels[name] = [("" if missing[k, j] else f"{bmd[k, j]:.3f}") for k in range(n)]
  labels.to_csv(os.path.join(out, "labels.csv"), index=False)
  lm_cols = {"image": images}
  for i in range(rois.NUM_LANDMARKS):
    lm_cols[f"x{i}"] = [f"{r['landmarks'][i, 0]:.2f}" for r in results]
    lm_cols[f"y{i}"] = [f"{r['landmarks'][i, 1]:.2f}" for r in results]
  pd.DataFrame(lm_cols).to_csv(os.path.join(out, "landmarks.csv"), index=False)

  info = cohort_info(seed=seed, patients=patients, spacing_range=spacing_range,
                     followup_fraction=followup_fraction, missing_fraction=missing_fraction,
                     ceiling_samples=ceiling_samples, plain=plain, sex=pts["sex"].to_numpy()[pid],
                     age=age, bmd=bmd, missing=missing, results=results)
  with open(os.path.join(out, "cohort.json"), "w") as f:
    json.dump(info, f, indent=2)
  return info


def _share(x) -> float:
  return float(np.mean(x)) if len(x) else float("nan")


def cohort_info(*, seed, patients, spacing_range, followup_fraction, missing_fraction,
                ceiling_samples, plain, sex, age, bmd, missing, results) -> dict:
  """Settings, summary statistics and the achievable-r ceiling."""
  t = t_scores(sex, bmd)
  osteo = t <= -2.5
  summary = dict(
      studies=len(sex), patients=int(patients),
      female_share=_share(sex == "F"),
      age_mean=float(np.mean(age)), age_quantiles_5_50_95=np.percentile(age, [5, 50, 95]).tolist(),
      bmd_mean={v: float(bmd[:, k].mean()) for k, v in enumerate(VERTEBRAE)},
      bmd_sd={v: float(bmd[:, k].std()) for k, v in enumerate(VERTEBRAE)},
      osteoporosis_share={v: _share(osteo[:, k]) for k, v in enumerate(VERTEBRAE)},
      osteoporosis_share_any_vertebra=_share(osteo.any(axis=1)),
      osteoporosis_share_female={v: _share(osteo[sex == "F", k]) for k, v in enumerate(VERTEBRAE)},
      osteoporosis_share_male={v: _share(osteo[sex == "M", k]) for k, v in enumerate(VERTEBRAE)},
      missing_share=float(missing.mean()),
      photometric={p: sum(r["photometric"] == p for r in results) for p in ("MONOCHROME1", "MONOCHROME2")},
      modality={m: sum(r["modality"] == m for r in results) for m in ("DX", "CR")},
      view={v: sum(r["view"] == v for r in results) for v in ("PA", "AP")},
      collimated=sum(r["collimated"] for r in results),
      lead_marker=sum(r["marker"] for r in results),
      devices={d: sum(d in r["devices"] for r in results) for d in devices.RATES},
      image_rows_min_max=[min(r["shape"][0] for r in results), max(r["shape"][0] for r in results)],
      image_cols_min_max=[min(r["shape"][1] for r in results), max(r["shape"][1] for r in results)],
  )
  ceiling = ceiling_r(ceiling_samples, seed)
  return dict(
      generator="data_prep.synthesize",
      settings=dict(seed=seed, patients=patients, spacing_mm=list(spacing_range), plain=plain,
                    followup_fraction=followup_fraction, missing_fraction=missing_fraction),
      bmd_model=dict(
          reference_mean={s: v.tolist() for s, v in REF_MEAN.items()},
          reference_sd={s: v.tolist() for s, v in REF_SD.items()},
          residual_corr=RESIDUAL_CORR.tolist(), residual_sd_factor=RESIDUAL_SD_FACTOR,
          female_offset=FEMALE_OFFSET, female_loss_ages=list(FEMALE_LOSS_AGES),
          female_loss=list(FEMALE_LOSS), male_offset=MALE_OFFSET,
          male_slope_after_50=MALE_SLOPE_AFTER_50, age_range=list(AGE_RANGE),
          age_plateau=list(AGE_PLATEAU), age_tail_sd=list(AGE_TAIL_SD), bmd_clip=list(BMD_CLIP),
          followup="1-3 years later: population trend + N(0, 0.012) shared + N(0, 0.006) per vertebra"),
      density_model=dict(
          latent="D = sum_k w_k (L_k - c_k) / scale", weights=DENSITY_WEIGHTS.tolist(),
          centre=DENSITY_CENTRE.tolist(), scale=DENSITY_SCALE,
          roi_noise_sd=BONE_NOISE, rois=rois.NUM_ROIS,
          rendering=dict(bone=render.BONE, processing=film_processing.PROCESS,
                         pose=POSE, devices=devices.RATES),
          note="each ROI bone region j shows d_j = D + roi_noise_sd * e_j as trabecular "
               "density exp(alpha d), cortical thickness exp(cortical_alpha d) and texture "
               "amplitude/coarseness; body size, pose, exposure and anatomy are drawn "
               "independently of sex and age"),
      summary=summary,
      ceiling_r=ceiling,
      ceiling_method=(f"Monte Carlo over {ceiling_samples} simulated patients: Pearson r "
                      "between L_k and E[L_k | mean of the 14 ROI densities] (a sufficient "
                      "statistic), E estimated by 256 quantile-binned means fitted on one "
                      "half and scored on the other half"),
      ceiling_note=("upper bound: pixel noise, exposure/gamma, anatomy variation, "
                    "rendering and resampling lower what any estimator can reach from "
                    "the images further"),
  )
