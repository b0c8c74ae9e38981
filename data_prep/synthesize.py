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
local d. Density is written as bone attenuation relative to the surrounding
soft tissue, so it survives exposure (gain, offset, gamma) changes; a burned-in
white label covering > 0.5% of each image anchors the reader's 99.5th
percentile away from bone. Sex and age reach the image only through D (body
size, anatomy and exposure are drawn independently of them), so
E[L_k | image] <= E[L_k | d_1..d_14] and `ceiling_r` in cohort.json is an
upper bound for any estimator.

Usage:
  python -m data_prep.synthesize --out=DIR --patients=N --seed=S
      [--spacing_mm=0.14,0.2] [--followup_fraction=0.1]
      [--missing_fraction=0.03] [--workers=K] [--ceiling_samples=200000]
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
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from data_prep import rois

VERTEBRAE = ("L1", "L2", "L3", "L4")

# ---------------------------------------------------------------------------
# Patients and BMD.
# ---------------------------------------------------------------------------

# Young-adult reference (DESIGN.md; Biology Direct 2025, Table 1), g/cm2.
REF_MEAN = {"M": np.array([0.999, 1.073, 1.081, 1.071]),
            "F": np.array([0.960, 1.064, 1.100, 1.086])}
REF_SD = {"M": np.array([0.123, 0.127, 0.129, 0.127]),
          "F": np.array([0.128, 0.128, 0.127, 0.121])}
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
  """T-scores [n, 4] against the young-adult reference of DESIGN.md."""
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
# Rendering. Anatomy lives in a patient frame in mm (x to the image right,
# y down, origin at the C7 body centre), mapped to the detector by a rotation,
# a scale (body size) and a translation.
# ---------------------------------------------------------------------------

# Rendering constants (attenuation units: 1 = soft tissue of a full chest).
RENDER = dict(
    bone_mu=0.010,            # attenuation per mm of bone at density 1
    spine_depth=0.35,         # vertebral bodies: AP depth / width, partial volume
    trabecular_density=0.5,   # times exp(alpha * d)
    density_alpha=0.3,
    cortical_density=1.6,
    cortical_mm=1.1,          # times exp(cortical_alpha * d)
    cortical_alpha=0.15,
    texture_amplitude=0.35,   # times exp(texture_alpha * d), trabecular texture
    texture_alpha=0.1,
    texture_mm=(0.5, 1.2),    # fine and coarse (porous) texture scales
    density_field_mm=0.07,    # ROI influence radius, fraction of thorax width
    render_mm=0.3,            # finest internal grid; finer pixels are upsampled
    knee=(1.2, 0.35),         # soft saturation of the densest areas (start, width)
    noise=(0.006, 0.014),     # quantum-like noise sd at 0.2 mm, range
    gamma=(0.85, 1.15),
    gain=(0.6, 1.0),          # share of the stored range used
    rotation_deg=3.0,         # sd, clipped at 2.5 sd
    body_scale=(1.0, 0.06),   # mean, sd (independent of sex and age)
    translation_mm=12.0,
)

# Vertebrae C5, C6, C7, T1..T12, L1: body half widths (mm).
_VERT_HALF_WIDTH = (12.0, 13.0, 14.0, 15.0, 15.5, 16.0, 16.5, 17.0, 17.5, 18.0,
                    18.5, 19.5, 20.5, 21.5, 22.5, 23.5)
# Centre-to-centre distances between consecutive vertebrae (mm).
_VERT_STEP = (16.0, 17.0, 18.0, 19.0, 19.5, 20.0, 20.5, 21.0, 21.5, 22.0, 22.5,
              23.5, 24.5, 25.5, 27.0)
# Ribs 1..12: lateral reach (fraction of the widest), drops (mm) from the spine to
# the lateral turn and from there to the anterior end.
_RIB_REACH = (0.45, 0.62, 0.75, 0.84, 0.90, 0.95, 0.98, 1.00, 1.00, 0.97, 0.80, 0.70)
_RIB_DROP = ((15, 25), (22, 40), (26, 50), (28, 55), (30, 58), (30, 60), (30, 60),
             (30, 58), (28, 55), (26, 50), (45, 0), (50, 0))  # posterior, anterior
_LANDMARK_RIBS = (3, 5, 7, 9)  # the rib-cage edge landmarks sit on these ribs


@dataclasses.dataclass
class Anatomy:
  """One patient's skeleton and soft tissue in the patient frame (mm)."""
  half_width: float           # widest rib-cage half width
  vert_x: np.ndarray          # [16] vertebra centres
  vert_y: np.ndarray
  vert_hw: np.ndarray
  vert_hh: np.ndarray
  ribs: list                  # (points [M, 2], half widths [M], density factor)
  clavicles: list             # idem
  landmarks: np.ndarray       # [16, 2]
  envelope_y: np.ndarray      # lung lateral envelope (inner rib edge)
  envelope_x: np.ndarray
  apex_y: float
  heart: tuple                # centre x, centre y, semi-axes, angle
  dome: tuple                 # (x, y) of the right and left diaphragm domes
  body_y: np.ndarray          # body outline half width
  body_x: np.ndarray


def make_anatomy(rng: np.random.Generator, view: str) -> Anatomy:
  """Draws a skeleton with small shape variations (independent of sex/age)."""
  hw_max = 140.0 * rng.normal(1.0, 0.04)
  # Spine: C5..L1, C7 at the origin, a gentle scoliosis.
  steps = np.array(_VERT_STEP) * rng.normal(1.0, 0.03)
  centres = np.concatenate([[0.0], np.cumsum(steps)])
  vy = centres - centres[2]
  level = np.arange(16) - 2
  vx = rng.normal(0, 3.0) * np.sin(np.pi * np.clip(level, 0, 13) / 13)
  vhw = np.array(_VERT_HALF_WIDTH) * rng.normal(1.0, 0.04)
  vhh = np.concatenate([steps, steps[-1:]]) / 2 - 2.5

  ribs = []
  rib_lateral = {}
  for side in (-1, 1):
    for i in range(12):
      y0 = vy[3 + i] - 2.0 + rng.normal(0, 1.0)
      reach = hw_max * _RIB_REACH[i] * rng.normal(1.0, 0.015)
      post_drop = _RIB_DROP[i][0] * rng.normal(1.0, 0.05)
      ant_drop = _RIB_DROP[i][1] * rng.normal(1.0, 0.05)
      # A hoop: posterior arc from the spine to the lateral turn (phi = pi/2),
      # anterior arc running down and medially to the costal cartilage.
      phi_end = math.pi - math.asin(0.55) if i < 10 else (0.95, 0.75)[i - 10]
      phi = np.linspace(0.05, phi_end, 18)
      x = 15.0 * np.clip(np.cos(phi), 0, None) + reach * np.sin(phi)
      y = y0 + post_drop * np.where(
          phi <= math.pi / 2, 1 - np.cos(phi), 1 + np.cos(phi) / math.cos(phi_end) * ant_drop / post_drop)
      post = phi <= math.pi / 2
      hw = np.where(post, 4.6 + 1.2 * np.sin(phi), 6.5) * (1.25 if i == 0 else 1.0)
      rho = np.where(post, 1.0, 0.45)  # anterior ribs: thinner, flatter
      ribs.append((np.stack([vx[3 + i] + side * x, y], -1), hw, rho))
      # Outer edge of the rib at its lateral turn: the rib-cage edge.
      rib_lateral[(side, i + 1)] = (vx[3 + i] + side * (reach + 5.8), y0 + post_drop)

  shift = -20.0 if view == "AP" else 0.0
  clav_y = vy[5] + rng.normal(0, 6.0) + shift
  clavicles = []
  for side in (-1, 1):
    t = np.linspace(0, 1, 17)
    sx, ex = side * 20.0, side * (0.95 * hw_max + 15.0)
    rise = rng.normal(25.0, 5.0) * (0.6 if view == "AP" else 1.0)
    x = sx + (ex - sx) * t
    y = clav_y - rise * t ** 0.9 + 5.0 * np.sin(2 * np.pi * t)
    hw = np.interp(t, [0, 0.12, 0.4, 0.75, 1.0], [10.0, 8.5, 7.0, 6.0, 7.5])
    clavicles.append((np.stack([x, y], -1), hw, np.ones_like(t)))

  lm = np.zeros((16, 2))
  lm[0:3] = clavicles[0][0][[0, 8, 16]]  # sternal end, middle, acromial end
  lm[3:6] = clavicles[1][0][[0, 8, 16]]
  for k, rib in enumerate(_LANDMARK_RIBS):
    lm[6 + k] = rib_lateral[(-1, rib)]
    lm[10 + k] = rib_lateral[(1, rib)]
  lm[14] = vx[2], vy[2]
  lm[15] = vx[14], vy[14]

  # Lung envelope: inner edge of the rib lateral extremes, pointed apex.
  apex_y = vy[3] - 12.0
  lat = sorted((v[1], abs(v[0])) for (s, i), v in rib_lateral.items() if s == 1 and i <= 10)
  ey = np.array([apex_y] + [p[0] for p in lat] + [500.0])
  ex = np.array([12.0] + [p[1] - 11.0 for p in lat] + [lat[-1][1] - 11.0])
  heart_scale = rng.normal(1.0, 0.07) * (1.1 if view == "AP" else 1.0)
  heart = (18.0 + rng.normal(0, 4), vy[9] + 30.0 + rng.normal(0, 6),
           68.0 * heart_scale, 55.0 * heart_scale, np.deg2rad(rng.normal(-15, 5)))
  dome_y = lat[8][0] - 20.0 + rng.normal(0, 8.0)
  dome = ((-70.0, dome_y), (75.0, dome_y + 10.0 + rng.normal(0, 4.0)))
  body_y = np.array([-400.0, -40.0, -10.0, 20.0, 60.0, 120.0, 200.0, 600.0])
  body_x = np.array([55.0, 58.0, 120.0, 190.0, 182.0, 165.0, 160.0, 165.0])
  body_x = body_x * np.where(body_y > 0, hw_max / 140.0, 1.0) * rng.normal(1.0, 0.03)
  return Anatomy(hw_max, vx, vy, vhw, vhh, ribs, clavicles, lm, ey, ex,
                 apex_y, heart, dome, body_y, body_x)


class _Grid:
  """A grid of shape (h, w) covering the stored image; node -> patient mm.

  Node (i, j) sits at stored-pixel coordinate ((j + .5) W / w - .5, ...), the
  convention of PIL's resize, so fields rendered on coarse grids line up.
  """

  def __init__(self, h, w, out_shape, spacing, pose):
    self.shape = (h, w)
    H, W = out_shape
    t, scale, theta = pose
    c, s = math.cos(theta), math.sin(theta)
    # detector mm of node: p = spacing * ((j + .5) * W / w - .5)
    ax, bx = spacing * W / w, spacing * (0.5 * W / w - 0.5)
    ay, by = spacing * H / h, spacing * (0.5 * H / h - 0.5)
    # q = R(-theta) (p - t) / scale, with p = (ax j + bx, ay i + by)
    self._m = np.array([[c * ax, s * ay], [-s * ax, c * ay]]) / scale  # q = m @ [j, i] + b
    px0, py0 = bx - t[0], by - t[1]
    self._b = np.array([c * px0 + s * py0, -s * px0 + c * py0]) / scale
    self._minv = np.linalg.inv(self._m)
    self.mm_per_node = ax / scale

  def coords(self, win):
    """Patient-frame mm (qx, qy) of the nodes in window (i0, i1, j0, j1)."""
    i0, i1, j0, j1 = win
    j = np.arange(j0, j1, dtype=np.float32)[None, :]
    i = np.arange(i0, i1, dtype=np.float32)[:, None]
    m = self._m.astype(np.float32)
    qx = m[0, 0] * j + m[0, 1] * i + np.float32(self._b[0])
    qy = m[1, 0] * j + m[1, 1] * i + np.float32(self._b[1])
    return qx, qy

  def index(self, q):
    """Grid (j, i) coordinates [N, 2] of patient points q [N, 2]."""
    return (np.asarray(q, np.float64) - self._b) @ self._minv.T

  def window(self, q, margin):
    """Index window (i0, i1, j0, j1) covering points q [N, 2] +- margin mm."""
    q = np.asarray(q, np.float64).reshape(-1, 2)
    lo, hi = q.min(0) - margin, q.max(0) + margin
    ji = self.index([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]])
    j0, i0 = np.floor(ji.min(0)).astype(int)
    j1, i1 = np.ceil(ji.max(0)).astype(int) + 1
    h, w = self.shape
    i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, h), min(j1, w)
    if i1 <= i0 or j1 <= j0:
      return None
    return i0, i1, j0, j1


def _resize(a: np.ndarray, shape) -> np.ndarray:
  """Bilinear resize of a float field to (h, w), pixel-centre aligned."""
  if a.shape == tuple(shape):
    return a
  img = Image.fromarray(np.ascontiguousarray(a, np.float32))
  return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def _sig(x):
  return 0.5 + 0.5 * np.tanh(0.5 * x)


def _chord(r, dist):
  """Length of a chord at distance `dist` from the centre of a disc radius r."""
  return 2.0 * np.sqrt(np.maximum(r * r - dist * dist, 0.0))


def _soft_tissue(grid: _Grid, an: Anatomy) -> np.ndarray:
  """Soft-tissue attenuation: body, lungs (air), mediastinum, heart, trachea."""
  qx, qy = grid.coords((0, grid.shape[0], 0, grid.shape[1]))
  ax = np.abs(qx)
  bw = np.interp(qy, an.body_y, an.body_x).astype(np.float32)
  t0 = np.interp(qy, [-400, -20, 30, 2000], [0.5, 0.55, 1.0, 1.0]).astype(np.float32)
  body = t0 * np.sqrt(np.clip(1 - (qx / bw) ** 2, 0, 1)) * _sig((bw - ax) / 2.0)
  # Lungs: inside the rib envelope, outside the mediastinum, above the domes.
  env = np.interp(qy, an.envelope_y, an.envelope_x).astype(np.float32)
  frac = np.clip((qy - an.apex_y) / (an.envelope_y[1] - an.apex_y), 0, 1)
  env = np.where(qy < an.envelope_y[1], an.envelope_x[1] * np.sqrt(frac), env)
  (rx, ry), (lx, ly) = an.dome
  dia = np.minimum(ry + 0.009 * (qx - rx) ** 2, ly + 0.009 * (qx - lx) ** 2)
  hx, hy, ha, hb, hang = an.heart
  c, s = math.cos(hang), math.sin(hang)
  u, v = (c * (qx - hx) + s * (qy - hy)) / ha, (-s * (qx - hx) + c * (qy - hy)) / hb
  heart = _sig((1 - np.sqrt(u * u + v * v)) * 25.0)
  spine_x = np.interp(qy, an.vert_y, an.vert_x).astype(np.float32)
  band = _sig((26.0 - np.abs(qx - spine_x - 2.0)) / 2.5)
  knob = _sig((17.0 - np.hypot(qx - spine_x - 22.0, qy - an.vert_y[7])) / 2.5)
  medi = np.maximum(np.maximum(band, knob), heart)
  lung = (_sig((env - ax) / 2.5) * _sig((qy - an.apex_y) / 3.0) * _sig((dia - qy) / 2.5)
          * (1 - medi))
  depth = (0.8 + 0.2 * np.clip((qy - an.apex_y - 20) / 150, 0, 1)) * np.sqrt(
      np.clip((env - ax) / 25.0, 0, 1))
  trachea = _sig((8.0 - np.abs(qx - spine_x)) / 1.5) * _sig((an.vert_y[9] - qy) / 5.0)
  return (body - 0.62 * lung * depth - 0.12 * trachea).astype(np.float32)


def _density_field(grid: _Grid, an: Anatomy, roi_values: np.ndarray) -> np.ndarray:
  """Local bone density d(q): a smooth blend of the 14 ROI values."""
  centres, side, _ = rois.roi_boxes(an.landmarks)
  rho = RENDER["density_field_mm"] * side / rois.ROI_SIDE
  qx, qy = grid.coords((0, grid.shape[0], 0, grid.shape[1]))
  logits = -((qx[None] - centres[:, 0, None, None]) ** 2
             + (qy[None] - centres[:, 1, None, None]) ** 2) / (2 * rho ** 2)
  logits -= logits.max(axis=0, keepdims=True)
  w = np.exp(logits)
  return (np.tensordot(roi_values, w, axes=1) / w.sum(axis=0)).astype(np.float32)


def _texture(grid: _Grid, rng) -> tuple[np.ndarray, np.ndarray]:
  """Fine and coarse (porous) trabecular texture, unit sd: white noise on cells
  of texture_mm, bilinearly resampled to the grid (cheaper than filtering)."""
  out = []
  for mm in RENDER["texture_mm"]:
    cells = mm / grid.mm_per_node
    if cells <= 1.0:  # texture finer than the grid: plain per-node noise
      out.append(rng.standard_normal(grid.shape, dtype=np.float32))
      continue
    shape = (int(grid.shape[0] / cells) + 2, int(grid.shape[1] / cells) + 2)
    t = _resize(rng.standard_normal(shape, dtype=np.float32), grid.shape)
    out.append(t / max(float(t.std()), 1e-6))
  return out[0], out[1]


class _Bones:
  """Accumulates bone attenuation on the render grid.

  Trabecular density (with its texture) and cortical thickness are computed
  once for the whole grid from the local density d; each bone adds the chord
  lengths of its cortical shell and trabecular core.
  """

  def __init__(self, grid, d, tex_fine, tex_coarse):
    self.grid = grid
    self.att = np.zeros(grid.shape, np.float32)
    porous = np.clip(0.5 - 0.2 * d, 0.1, 0.95)
    tex = np.sqrt(1 - porous ** 2) * tex_fine + porous * tex_coarse
    amp = np.minimum(RENDER["texture_amplitude"] * np.exp(RENDER["texture_alpha"] * d), 0.8)
    self.rho = (RENDER["trabecular_density"] * np.exp(RENDER["density_alpha"] * d)
                * np.maximum(1 + amp * tex, 0)).astype(np.float32)
    self.ct = (RENDER["cortical_mm"] * np.exp(RENDER["cortical_alpha"] * d)).astype(np.float32)

  def _add(self, win, att):
    self.att[win[0]:win[1], win[2]:win[3]] += att.astype(np.float32)

  def tube(self, points, half_width, rho_scale):
    """A tubular bone (rib, clavicle) along a polyline: cortex + trabecular core."""
    g = self.grid
    win = g.window(points, float(np.max(half_width)) + 1.0)
    if win is None:
      return
    i0, i1, j0, j1 = win
    qx, qy = g.coords(win)
    dist2 = np.full(qx.shape, np.inf, np.float32)
    par = np.zeros(qx.shape, np.float32)
    ji = g.index(points)
    reach = (float(np.max(half_width)) + 1.0) / g.mm_per_node + 1.0
    h, w = qx.shape
    # Segments in chunks sharing one window: fewer numpy calls on coarse grids.
    chunk = 4 if g.mm_per_node > 0.45 else 2
    for k0 in range(0, len(points) - 1, chunk):
      k1 = min(k0 + chunk, len(points) - 1)
      lo = np.floor(ji[k0:k1 + 1].min(0) - reach).astype(int) - [j0, i0]
      hi = np.ceil(ji[k0:k1 + 1].max(0) + reach).astype(int) + 1 - [j0, i0]
      sl = (slice(max(lo[1], 0), min(hi[1], h)), slice(max(lo[0], 0), min(hi[0], w)))
      if sl[0].start >= sl[0].stop or sl[1].start >= sl[1].stop:
        continue
      a = points[k0:k1].astype(np.float32)[:, :, None, None]
      ab = (points[k0 + 1:k1 + 1] - points[k0:k1]).astype(np.float32)[:, :, None, None]
      x, y = qx[sl] - a[:, 0], qy[sl] - a[:, 1]
      t = np.clip((x * ab[:, 0] + y * ab[:, 1]) / (ab[:, 0] ** 2 + ab[:, 1] ** 2), 0.0, 1.0)
      x -= t * ab[:, 0]
      y -= t * ab[:, 1]
      dd = x * x + y * y
      # Position along the polyline (for widths and densities): mid-segment.
      seg = dd.argmin(axis=0) + (k0 + 0.5) if len(dd) > 1 else k0 + 0.5
      dd = dd.min(axis=0)
      better = dd < dist2[sl]
      dist2[sl] = np.where(better, dd, dist2[sl])
      par[sl] = np.where(better, seg, par[sl])
    near = np.flatnonzero(dist2 < float(np.max(half_width)) ** 2)
    if near.size == 0:
      return
    dist = np.sqrt(dist2.ravel()[near])
    seg = np.arange(len(points))
    p = par.ravel()[near]
    hw = np.interp(p, seg, half_width).astype(np.float32)
    rs = np.interp(p, seg, rho_scale).astype(np.float32)
    rows, cols = np.unravel_index(near, par.shape)
    flat = (rows + i0) * self.att.shape[1] + cols + j0
    rho, ct = self.rho.ravel()[flat], self.ct.ravel()[flat]
    inner = np.maximum(hw - ct, 0.5)
    core = _chord(inner, dist)
    att = RENDER["bone_mu"] * rs * (RENDER["cortical_density"] * (_chord(hw, dist) - core)
                                    + rho * core)
    self.att.ravel()[flat] += att.astype(np.float32)

  def vertebra(self, cx, cy, hw, hh):
    """A vertebral body seen front-on: cylinder, endplates, pedicles, spinous."""
    g = self.grid
    win = g.window(np.array([[cx, cy]]), max(hw, hh) + 3.0)
    if win is None:
      return
    qx, qy = g.coords(win)
    dx, dy = qx - cx, qy - cy
    rho, ct = self.rho[win[0]:win[1], win[2]:win[3]], self.ct[win[0]:win[1], win[2]:win[3]]
    cd = RENDER["cortical_density"]
    inner = np.maximum(hw - ct, 1.0)
    core = _chord(inner, dx)
    outer = _chord(hw, dx)
    vert = _sig((hh - np.abs(dy)) / 0.4)
    plate = 2.5 * ct * outer / (2 * hw) * np.exp(-((np.abs(dy) - hh + ct) / ct) ** 2)
    ring = 0.0
    for side in (-1, 1):  # pedicles
      r = np.hypot((dx - side * 0.62 * hw) / (0.22 * hw), (dy + 0.3 * hh) / (0.35 * hh))
      ring = ring + np.exp(-((r - 1) * 4.0) ** 2)
    spinous = _sig((1 - np.hypot(dx / 3.0, (dy - 0.2 * hh) / (0.5 * hh))) * 8.0)
    att = RENDER["bone_mu"] * (RENDER["spine_depth"] * (cd * (outer - core + plate) + rho * core)
                               * vert + 2.0 * cd * ring + 2.0 * rho * spinous)
    self._add(win, att)


@dataclasses.dataclass
class Rendered:
  image: np.ndarray      # float32 [H, W] in [0, 1], bone bright (presentation)
  landmarks: np.ndarray  # [16, 2] pixels of the image
  spacing: float         # mm per pixel
  view: str
  params: dict


def render_chest(roi_values, rng: np.random.Generator,
                 spacing_range=(0.14, 0.2)) -> Rendered:
  """Renders one frontal chest radiograph whose 14 ROI bones show `roi_values`.

  Exposure, noise, body size and pose are drawn from `rng`.
  """
  roi_values = np.asarray(roi_values, np.float64)
  spacing = float(rng.uniform(*spacing_range))
  view = "AP" if rng.random() < 0.15 else "PA"
  an = make_anatomy(rng, view)
  scale = float(np.clip(rng.normal(*RENDER["body_scale"]), 0.85, 1.15))
  theta = float(np.deg2rad(np.clip(rng.normal(0, RENDER["rotation_deg"]),
                                   -2.5 * RENDER["rotation_deg"], 2.5 * RENDER["rotation_deg"])))
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
  # Translation: thorax centre near the detector centre, ROIs kept inside.
  centre = fov / 2 + rng.normal(0, RENDER["translation_mm"], 2) + [0, 10]
  lo = margin - lm_rel.min(0)
  hi = fov - margin - lm_rel.max(0)
  centre = np.clip(centre, lo, np.maximum(hi, lo))
  t = centre - rot @ np.array([0, 130]) * scale
  pose = (t, scale, theta)
  landmarks = (t + an.landmarks @ rot.T * scale) / spacing

  # Grids: render (fine, for bones), smooth (soft tissue), coarse (density).
  def grid(mm):
    f = max(mm / spacing, 1.0)
    return _Grid(max(int(math.ceil(H / f)), 2), max(int(math.ceil(W / f)), 2), (H, W),
                 spacing, pose)
  fine = grid(RENDER["render_mm"])
  soft = _resize(_soft_tissue(grid(2.0), an), fine.shape)
  density = _resize(_density_field(grid(4.0), an, roi_values), fine.shape)
  bones = _Bones(fine, density, *_texture(fine, rng))
  for pts, hw, rho in an.ribs + an.clavicles:
    bones.tube(pts, hw, rho)
  for k in range(len(an.vert_x)):
    bones.vertebra(an.vert_x[k], an.vert_y[k], an.vert_hw[k], an.vert_hh[k])
  att = np.maximum(soft, 0) + bones.att

  # Presentation: soft knee for the densest areas, gamma, noise, collimation.
  knee, width = RENDER["knee"]
  att = np.where(att > knee, knee + width * np.tanh((att - knee) / width), att)
  gamma = float(rng.uniform(*RENDER["gamma"]))
  img = _resize(((att / (knee + width)) ** gamma).astype(np.float32), (H, W))
  # Quantum-like noise, stronger where fewer photons arrive (dense areas) and
  # on smaller pixels; triangular noise from random bytes is 5x cheaper than
  # Gaussian and looks the same.
  noise_sd = float(rng.uniform(*RENDER["noise"])) * 0.2 / spacing
  raw = np.frombuffer(rng.bytes(2 * H * W), np.uint8).reshape(2, H, W)
  noise = raw[0].astype(np.float32)
  noise += raw[1]
  noise -= 255.0
  img = img + (noise_sd / 104.5) * np.sqrt(0.2 + img) * noise
  # A burned-in white label (side marker and text) in a corner clear of the
  # ROIs, and sometimes a collimated (unexposed, white) border. The label covers
  # > 0.5% of the pixels, so the reader's 99.5th percentile lands on it rather
  # than on bone, whose brightness carries the density.
  lh = max(int(rng.uniform(18, 26) / spacing), 4)
  lw = max(int(max(rng.uniform(60, 85) / spacing, 0.009 * H * W / lh)), 8)
  ly, lx = int(rng.uniform(6, 20) / spacing), int(rng.uniform(6, 20) / spacing)
  centres, side, angle = rois.roi_boxes(landmarks)
  boxes = np.stack([rois.box_corners(c, side, angle) for c in centres])
  first = int(rng.integers(2))
  for corner in (first, 1 - first, 2 + first, 3 - first):  # top corners first
    y0 = ly if corner < 2 else H - ly - lh
    x0 = lx if corner % 2 == 0 else W - lx - lw
    clear = ((boxes[..., 0].max(1) < x0) | (boxes[..., 0].min(1) > x0 + lw)
             | (boxes[..., 1].max(1) < y0) | (boxes[..., 1].min(1) > y0 + lh))
    if clear.all():
      break
  img[y0:y0 + lh, x0:x0 + lw] = 1.0
  for c in range(6):  # dark "characters"
    cx = x0 + int((0.08 + 0.15 * c) * lw)
    img[y0 + lh // 4:y0 + 3 * lh // 4, cx:cx + max(lw // 25, 1)] = 0.35
  collimation = rng.random() < 0.5
  if collimation:
    for k, edge in enumerate(rng.uniform(0, 10, 4) * (rng.random(4) < 0.6)):
      n = int(edge / spacing)
      if n == 0:
        continue
      sl = [slice(None), slice(None)]
      sl[k % 2] = slice(0, n) if k < 2 else slice(-n, None)
      img[tuple(sl)] = 1.0
  # Detector gain and offset: the stored values use a random part of the range.
  gain = float(rng.uniform(*RENDER["gain"]))
  offset = float(rng.uniform(0.0, 1.0 - gain))
  img = offset + gain * np.clip(img, 0, 1)
  params = dict(spacing=spacing, view=view, scale=scale, rotation_deg=math.degrees(theta),
                gamma=gamma, gain=gain, offset=offset, noise_sd=noise_sd,
                collimation=bool(collimation), shape=[H, W])
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
  r = render_chest(job["roi_values"], rng, job["spacing_range"])
  photometric = "MONOCHROME1" if rng.random() < 0.5 else "MONOCHROME2"
  modality = "CR" if rng.random() < 0.4 else "DX"
  bits = int(rng.integers(12, 17))
  rescale = [(1.0, 0.0), (1.0, -1024.0), (0.5, 0.0), (2.0, 100.0)][int(rng.integers(4))]
  header = fake_header(rng, job["patient"], dict(job["study"], view=r.view), job["seed"])
  write_dicom(job["path"], r.image, photometric=photometric, spacing=r.spacing,
              bits_stored=bits, modality=modality, view=r.view, rescale=rescale,
              header=header)
  return dict(index=job["index"], landmarks=r.landmarks, shape=r.image.shape,
              spacing=r.spacing, photometric=photometric, modality=modality, bits=bits)


def generate(out: str, patients: int, seed: int = 0, spacing_range=(0.14, 0.2),
             followup_fraction: float = 0.1, missing_fraction: float = 0.03,
             workers: int | None = None, ceiling_samples: int = 200_000,
             progress: bool = True) -> dict:
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
                     spacing_range=tuple(spacing_range), patient=patient, study=study,
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
                     ceiling_samples=ceiling_samples, sex=pts["sex"].to_numpy()[pid],
                     age=age, bmd=bmd, missing=missing, results=results)
  with open(os.path.join(out, "cohort.json"), "w") as f:
    json.dump(info, f, indent=2)
  return info


def _share(x) -> float:
  return float(np.mean(x)) if len(x) else float("nan")


def cohort_info(*, seed, patients, spacing_range, followup_fraction, missing_fraction,
                ceiling_samples, sex, age, bmd, missing, results) -> dict:
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
      image_rows_min_max=[min(r["shape"][0] for r in results), max(r["shape"][0] for r in results)],
      image_cols_min_max=[min(r["shape"][1] for r in results), max(r["shape"][1] for r in results)],
  )
  ceiling = ceiling_r(ceiling_samples, seed)
  return dict(
      generator="data_prep.synthesize",
      settings=dict(seed=seed, patients=patients, spacing_mm=list(spacing_range),
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
          rendering=RENDER,
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


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("out", None, "output folder", required=True)
  flags.DEFINE_integer("patients", 200, "number of patients")
  flags.DEFINE_integer("seed", 0, "random seed (everything is deterministic in it)")
  flags.DEFINE_string("spacing_mm", "0.14,0.2", "pixel spacing range lo,hi (mm)")
  flags.DEFINE_float("followup_fraction", 0.1, "share of patients with a 2nd study")
  flags.DEFINE_float("missing_fraction", 0.03, "share of missing vertebra values")
  flags.DEFINE_integer("workers", None, "rendering processes (default: all cores)")
  flags.DEFINE_integer("ceiling_samples", 200_000, "Monte Carlo size for ceiling_r")


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  lo, hi = (float(v) for v in f.spacing_mm.split(","))
  info = generate(f.out, f.patients, f.seed, (lo, hi), f.followup_fraction,
                  f.missing_fraction, f.workers, f.ceiling_samples)
  print(json.dumps(dict(ceiling_r=info["ceiling_r"], summary=info["summary"]), indent=2))


if __name__ == "__main__":
  # Flags are defined only when run as a program, so that importing this
  # module next to other data_prep tools never clashes on names like --out.
  from absl import app
  _define_flags()
  app.run(main)
