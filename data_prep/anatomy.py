"""One patient's chest anatomy for the synthetic films, in a patient frame (mm).

The frame: x to the image right (the patient's left on a PA film), y down,
origin at the centre of the C7 body. Bones are polylines with half widths
(ribs, clavicles, scapular borders, humeri), discs (humeral heads), a plate
(scapular blade) and vertebrae; soft tissue is described by a few shapes
(body outline, lungs, heart, aortic knob, domes, liver, gastric bubble,
breasts, vessel trees). Shapes vary between patients but are drawn
independently of sex and age, so that the films show sex and age only
through bone density (see synthesize.py: this keeps `ceiling_r` a bound).

Landmarks keep the definitions of data_prep/rois.py: clavicle sternal end,
middle and acromial end; the outer edge of ribs 3, 5, 7 and 9 at their
lateral turn (the lateral rib-cage margin); the C7 and T12 body centres.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Vertebrae C5, C6, C7, T1..T12, L1: body half widths (mm).
VERT_HALF_WIDTH = (12.0, 13.0, 14.0, 15.0, 15.5, 16.0, 16.5, 17.0, 17.5, 18.0,
                   18.5, 19.5, 20.5, 21.5, 22.5, 23.5)
# Centre-to-centre distances between consecutive vertebrae (mm).
VERT_STEP = (16.0, 17.0, 18.0, 19.0, 19.5, 20.0, 20.5, 21.0, 21.5, 22.0, 22.5,
             23.5, 24.5, 25.5, 27.0)
C7, T1, T12 = 2, 3, 14  # indices into the vertebra arrays
# Ribs 1..12: lateral reach (fraction of the widest half width) and the drop
# (mm) of the posterior arc from the spine to the lateral turn.
RIB_REACH = (0.42, 0.60, 0.73, 0.83, 0.90, 0.95, 0.98, 1.00, 0.99, 0.95, 0.80, 0.66)
RIB_DROP = (26, 38, 46, 52, 55, 57, 57, 56, 54, 50, 44, 36)
# Anterior rib ends (costochondral junctions): distance from the midline (mm).
RIB_FRONT_X = (28, 36, 44, 50, 56, 62, 70, 84, 100, 112)
LANDMARK_RIBS = (3, 5, 7, 9)  # the rib-cage margin landmarks sit on these ribs


@dataclasses.dataclass
class Tube:
  """A tubular bone or a vessel: polyline [M, 2], half widths [M], density [M]."""
  points: np.ndarray
  half_width: np.ndarray
  rho: np.ndarray


@dataclasses.dataclass
class Anatomy:
  """One patient's skeleton and soft tissue in the patient frame (mm)."""
  view: str
  half_width: float            # widest rib-cage half width
  vert_x: np.ndarray           # [16] vertebra centres C5..L1
  vert_y: np.ndarray
  vert_hw: np.ndarray
  vert_hh: np.ndarray
  tubes: list                  # bones drawn as tubes: ribs, clavicles, scapular borders, humeri
  discs: list                  # (x, y, radius): humeral heads
  arms: list                   # (start, end) of each upper arm axis (soft tissue)
  plates: list                 # (triangle [3, 2], thickness mm): scapular blades
  vessels: list                # Tube (rho = attenuation scale), lung markings
  landmarks: np.ndarray        # [16, 2]
  envelope_y: np.ndarray       # lung lateral envelope (inner rib margin), per side
  envelope_x: np.ndarray       # [2, K]: right (negative x), left
  apex_y: float
  heart: tuple                 # ((cx, cy, a, b, angle), ...) union of ellipses
  knob: tuple                  # aortic knob (x, y, radius)
  domes: tuple                 # ((x, y, curvature) right, (...) left)
  bubble: tuple                # gastric bubble (x, y, a, b)
  breasts: tuple               # (size, y, x offset), size 0 = none
  body_y: np.ndarray           # body outline half width
  body_x: np.ndarray
  carina_y: float


def _bezier(p0, p1, p2, p3, n):
  t = np.linspace(0.0, 1.0, n)[:, None]
  return ((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2
          + t ** 3 * p3)


def _rib(side, i, vx, vy, vhw, vhh, hw_max, clav_y, rng, view):
  """Rib i (1-based) of one side: posterior arc, anterior arc; its lateral turn."""
  k = 2 + i  # T_i
  y0 = vy[k] - 0.35 * vhh[k] + rng.normal(0, 1.0)
  xs = vx[k] + side * (vhw[k] + 3.0)
  reach = hw_max * RIB_REACH[i - 1] * rng.normal(1.0, 0.015)
  drop = RIB_DROP[i - 1] * rng.normal(1.0, 0.06) * (0.85 if view == "AP" else 1.0)
  xl, yl = side * reach, y0 + drop
  # Posterior: up and out over the transverse process, then down and out,
  # vertical at the lateral turn.
  post = _bezier(np.array([xs, y0]), np.array([xs + side * 0.3 * (reach - abs(xs)), y0 - 5.0]),
                 np.array([xl - side * 0.06 * reach, y0 + 0.55 * drop]), np.array([xl, yl]), 16)
  hw_post = np.interp(np.linspace(0, 1, 16), [0, 0.15, 0.7, 1], [4.2, 5.2, 5.0, 5.4])
  if i == 1:
    hw_post = hw_post * 1.25
  tubes = [Tube(post, hw_post, np.ones(16))]
  if i <= 10:
    # Anterior: from the turn down and medially to the costochondral junction;
    # the cartilage beyond it does not show (the gap to the sternum).
    xf = side * RIB_FRONT_X[i - 1] * rng.normal(1.0, 0.05)
    yf = clav_y + 14.0 + 21.0 * (i - 1) * rng.normal(1.0, 0.03)
    yf = max(yf, yl + 15.0)
    ant = _bezier(np.array([xl, yl]), np.array([xl, yl + 0.45 * (yf - yl)]),
                  np.array([xf + 0.35 * (xl - xf), yf - 0.10 * (yf - yl)]), np.array([xf, yf]), 14)
    hw_ant = np.interp(np.linspace(0, 1, 14), [0, 0.3, 1], [5.4, 6.5, 7.5])
    tubes.append(Tube(ant, hw_ant, np.interp(np.linspace(0, 1, 14), [0, 0.3, 1], [0.7, 0.35, 0.3])))
  return tubes, (xl + side * hw_post[-1], yl)


def _vessel_tree(rng, hilum, side, lung_h, reach):
  """Lung markings: branching, tapering vessels fanning out from a hilum."""
  out = []
  angles = np.deg2rad(np.linspace(-75, 80, 9) + rng.normal(0, 6, 9))
  for a in angles:
    # Direction: up (-y) to down (+y) fanning laterally.
    d = np.array([side * np.cos(a), np.sin(a)])
    length = (0.55 + 0.25 * rng.random()) * (reach if abs(a) < 0.6 else lung_h * 0.6)
    n = 7
    steps = np.cumsum(np.full(n - 1, length / (n - 1)))
    wobble = np.cumsum(rng.normal(0, 0.12, n - 1))
    dirs = np.stack([d[0] * np.cos(wobble) - d[1] * np.sin(wobble),
                     d[0] * np.sin(wobble) + d[1] * np.cos(wobble)], -1)
    pts = np.concatenate([[hilum], hilum + np.cumsum(dirs * (length / (n - 1)), 0)])
    hw = np.linspace(2.6, 0.6, n) * rng.normal(1.0, 0.1)
    out.append(Tube(pts, hw, np.ones(n)))
    for b in range(2):  # side branches
      s = int(rng.integers(1, n - 2))
      ba = rng.normal(0, 0.6) + (0.5 if b else -0.5)
      bd = np.array([dirs[s, 0] * np.cos(ba) - dirs[s, 1] * np.sin(ba),
                     dirs[s, 0] * np.sin(ba) + dirs[s, 1] * np.cos(ba)])
      blen = (length - steps[s - 1]) * rng.uniform(0.4, 0.8)
      bp = pts[s] + np.linspace(0, 1, 4)[:, None] * bd * blen
      out.append(Tube(bp, np.linspace(hw[s] * 0.7, 0.5, 4), np.ones(4)))
  return out


def make_anatomy(rng: np.random.Generator, view: str) -> Anatomy:
  """Draws a skeleton and soft tissue with natural shape variation."""
  hw_max = 140.0 * rng.normal(1.0, 0.04)
  ap = view == "AP"
  # Spine: C5..L1, C7 at the origin, a gentle scoliosis.
  steps = np.array(VERT_STEP) * rng.normal(1.0, 0.03)
  centres = np.concatenate([[0.0], np.cumsum(steps)])
  vy = centres - centres[C7]
  level = np.arange(16) - C7
  vx = rng.normal(0, 3.0) * np.sin(np.pi * np.clip(level, 0, 13) / 13)
  vhw = np.array(VERT_HALF_WIDTH) * rng.normal(1.0, 0.04)
  vhh = np.concatenate([steps, steps[-1:]]) / 2 - 2.5

  # Clavicles: medial heads near T3/T4 (higher and flatter on AP films).
  clav_y = vy[T1 + 2] + rng.normal(0, 6.0) - (18.0 if ap else 0.0)
  tubes, discs, plates, arms = [], [], [], []
  clav_pts = []
  for side in (-1, 1):
    t = np.linspace(0, 1, 17)
    sx = side * (18.0 + rng.normal(0, 2.5))
    ex = side * (hw_max + 28.0 + rng.normal(0, 5.0))
    rise = rng.normal(24.0, 6.0) * (0.5 if ap else 1.0)
    # S shape: medial third bowed down, lateral third up, rising laterally.
    x = sx + (ex - sx) * t
    y = (clav_y - rise * (3 * t ** 2 - 2 * t ** 3)
         + rng.normal(6.0, 1.5) * np.sin(2 * np.pi * t) * (1 - 0.3 * t))
    hw = np.interp(t, [0, 0.1, 0.4, 0.75, 0.92, 1.0], [9.5, 8.0, 6.0, 5.5, 6.5, 7.0])
    pts = np.stack([x, y], -1)
    clav_pts.append(pts)
    tubes.append(Tube(pts, hw, np.ones_like(t)))

  lateral = {}
  for side in (-1, 1):
    for i in range(1, 13):
      rib, edge = _rib(side, i, vx, vy, vhw, vhh, hw_max, clav_y, rng, view)
      tubes += rib
      lateral[(side, i)] = edge

  # Shoulder girdle: scapular blade (a thin plate), its thick lateral border,
  # spine and acromion, coracoid, glenoid rim, humeral head and shaft.
  for side, clav in zip((-1, 1), clav_pts):
    acro = clav[-1] + [side * 6.0, -4.0]
    med = 0.42 if ap else 0.52
    sup = np.array([side * hw_max * (med + 0.04), clav_y + rng.normal(0, 5)])
    glen = np.array([side * (hw_max + 14.0), clav_y + 28.0 + rng.normal(0, 4)])
    inf = np.array([side * hw_max * (med + 0.22), clav_y + rng.normal(150, 12)])
    plates.append((np.stack([sup, glen, inf]), 4.0))
    n = 10
    tt = np.linspace(0, 1, n)[:, None]
    tubes.append(Tube(glen + tt * (inf - glen) + np.sin(np.pi * tt) * [side * 8, 0],
                      np.linspace(5.5, 3.5, n), np.full(n, 0.55)))
    tubes.append(Tube(sup + tt * (inf - sup), np.full(n, 2.0), np.full(n, 0.45)))
    sp0 = sup + 0.25 * (inf - sup)
    tubes.append(Tube(_bezier(sp0, sp0 + [side * 40, -10], acro + [-side * 25, 8], acro, n),
                      np.linspace(3.0, 6.0, n), np.full(n, 0.5)))
    cor = glen + [-side * 6.0, -10.0]
    tubes.append(Tube(np.stack([cor, cor + [-side * 22.0, -6.0]]), np.array([5.0, 4.0]),
                      np.array([0.8, 0.8])))
    tubes.append(Tube(np.stack([glen + [0, -16], glen + [side * 2.0, 18]]), np.array([3.5, 3.5]),
                      np.array([0.9, 0.9])))
    head = glen + [side * 24.0, 0.0] + rng.normal(0, 3, 2)
    discs.append((head[0], head[1], 23.0 * rng.normal(1.0, 0.05)))
    shaft_end = head + [side * (25.0 if not ap else 8.0), 260.0]
    arms.append((head + [side * 6.0, 0.0], shaft_end))
    tubes.append(Tube(np.stack([head + [side * 4, 14], head + [side * 10, 60], shaft_end]),
                      np.array([16.0, 12.5, 11.5]), np.array([0.7, 0.6, 0.6])))

  lm = np.zeros((16, 2))
  lm[0:3] = clav_pts[0][[0, 8, 16]]  # sternal end, middle, acromial end
  lm[3:6] = clav_pts[1][[0, 8, 16]]
  for k, rib in enumerate(LANDMARK_RIBS):
    lm[6 + k] = lateral[(-1, rib)]
    lm[10 + k] = lateral[(1, rib)]
  lm[14] = vx[C7], vy[C7]
  lm[15] = vx[T12], vy[T12]

  # Lungs: inside the lateral turns of ribs 1..10, apex above the clavicle.
  apex_y = vy[T1] - 14.0
  env_y, env_x = [], []
  for side in (-1, 1):
    pts = sorted((lateral[(side, i)][1], abs(lateral[(side, i)][0])) for i in range(1, 11))
    env_y.append([apex_y] + [p[0] for p in pts] + [600.0])
    env_x.append([14.0] + [p[1] - 10.0 for p in pts] + [pts[-1][1] - 10.0])
  env_y, env_x = np.array(env_y), np.array(env_x)

  # Heart: right atrium and left ventricle; larger on AP (magnified).
  hs = rng.normal(1.0, 0.08) * (1.12 if ap else 1.0)
  base_y = vy[T1 + 6] + 8.0 + rng.normal(0, 6)
  heart = ((-22.0 * hs, base_y, 32.0 * hs, 56.0 * hs, 0.0),
           (30.0 * hs + rng.normal(0, 4), base_y + 14.0, 72.0 * hs, 60.0 * hs,
            np.deg2rad(rng.normal(-25, 5))))
  knob = (vx[T1 + 3] + 20.0 + rng.normal(0, 3), vy[T1 + 3] + rng.normal(0, 5),
          15.0 * rng.normal(1, 0.08))
  dome_r = lateral[(-1, 9)][1] - 28.0 + rng.normal(0, 8.0) - (20.0 if ap else 0.0)
  domes = ((-65.0, dome_r, 0.010), (70.0, dome_r + 15.0 + rng.normal(0, 5.0), 0.011))
  bubble = (75.0 + rng.normal(0, 8), domes[1][1] + 28.0, 32.0 * rng.uniform(0.5, 1.2),
            16.0 * rng.uniform(0.6, 1.2))
  # Breast / pectoral soft tissue, of a size drawn independently of sex.
  breasts = (float(rng.choice([0.0, rng.uniform(0.3, 1.2)], p=[0.35, 0.65])),
             dome_r - 10.0 + rng.normal(0, 12), 80.0 + rng.normal(0, 10))
  # Neck, trapezius slope to the shoulders, chest wall, abdomen.
  body_y = np.array([-400.0, -70.0, -50.0, -35.0, -20.0, 0.0, 25.0, 60.0, 120.0, 220.0, 600.0])
  body_x = np.array([56.0, 60.0, 85.0, 130.0, 165.0, 190.0, 205.0, 190.0, 175.0, 168.0, 172.0])
  body_x = body_x * np.where(body_y > -30, hw_max / 140.0, 1.0) * rng.normal(1.0, 0.03)
  body_y = body_y + (clav_y - vy[T1 + 2])

  carina_y = vy[T1 + 4] + rng.normal(0, 4)
  vessels = []
  lung_h = dome_r - apex_y
  for side in (-1, 1):
    hilum = np.array([side * (48.0 + rng.normal(0, 4)),
                      carina_y + 25.0 + (8.0 if side > 0 else 0.0)])
    vessels += _vessel_tree(rng, hilum, side, lung_h, hw_max * 0.8)
  return Anatomy(view, hw_max, vx, vy, vhw, vhh, tubes, discs, arms, plates, vessels, lm,
                 env_y, env_x, apex_y, heart, knob, domes, bubble, breasts, body_y, body_x,
                 carina_y)
