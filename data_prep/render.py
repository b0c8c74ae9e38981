"""Projected attenuation of one chest: bones, soft tissue, vessels, devices.

Units: 1 = the soft tissue of a full chest. Bones get their local density d
(a smooth blend of the 14 ROI values, see synthesize.py) as trabecular
attenuation exp(alpha d) with a texture whose coarseness grows as d falls,
and as cortical thickness exp(cortical_alpha d). Everything is vectorised
numpy on grids coarser than the stored pixels where the detail allows.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from data_prep import anatomy as anat
from data_prep import rois

# Attenuation constants.
BONE = dict(
    bone_mu=0.009,            # attenuation per mm of bone at density 1
    spine_depth=0.5,         # vertebral bodies: AP depth / width, partial volume
    trabecular_density=0.5,   # times exp(density_alpha * d)
    density_alpha=0.6,
    cortical_density=1.6,
    cortical_mm=1.1,          # times exp(cortical_alpha * d)
    cortical_alpha=0.25,
    texture_amplitude=0.25,   # times exp(texture_alpha * d), trabecular texture
    texture_alpha=0.1,
    texture_mm=(0.8, 2.0),    # fine and coarse (porous) texture scales
    density_field_mm=0.07,    # ROI influence radius, fraction of thorax width
    render_mm=0.3,            # finest bone grid; finer pixels are upsampled
    vessel_mm=0.6,            # finest vessel / device grid
)


class Grid:
  """A grid of shape (h, w) covering the stored image; node -> patient mm.

  Node (i, j) sits at stored-pixel coordinate ((j + .5) W / w - .5, ...), the
  convention of PIL's resize, so fields rendered on coarse grids line up.
  """

  def __init__(self, h, w, out_shape, spacing, pose):
    self.shape = (h, w)
    H, W = out_shape
    t, scale, theta = pose
    c, s = math.cos(theta), math.sin(theta)
    ax, bx = spacing * W / w, spacing * (0.5 * W / w - 0.5)
    ay, by = spacing * H / h, spacing * (0.5 * H / h - 0.5)
    # q = R(-theta) (p - t) / scale, with p = (ax j + bx, ay i + by)
    self._m = np.array([[c * ax, s * ay], [-s * ax, c * ay]]) / scale
    px0, py0 = bx - t[0], by - t[1]
    self._b = np.array([c * px0 + s * py0, -s * px0 + c * py0]) / scale
    self._minv = np.linalg.inv(self._m)
    self.mm_per_node = ax / scale

  def coords(self, win=None):
    """Patient-frame mm (qx, qy) of the nodes in window (i0, i1, j0, j1)."""
    i0, i1, j0, j1 = win or (0, self.shape[0], 0, self.shape[1])
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


def resize(a: np.ndarray, shape) -> np.ndarray:
  """Bilinear resize of a float field to (h, w), pixel-centre aligned."""
  if a.shape == tuple(shape):
    return a
  img = Image.fromarray(np.ascontiguousarray(a, np.float32))
  return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def sig(x):
  return 0.5 + 0.5 * np.tanh(0.5 * x)


def chord(r, dist):
  """Length of a chord at distance `dist` from the centre of a disc radius r."""
  return 2.0 * np.sqrt(np.maximum(r * r - dist * dist, 0.0))


def near_polyline(grid: Grid, points: np.ndarray, reach: float):
  """Nodes within `reach` mm of a polyline: (flat indices, distance mm,
  position along the polyline in segment units)."""
  win = grid.window(points, reach + 1.0)
  if win is None:
    return None
  i0, i1, j0, j1 = win
  qx, qy = grid.coords(win)
  dist2 = np.full(qx.shape, np.inf, np.float32)
  par = np.zeros(qx.shape, np.float32)
  ji = grid.index(points)
  r_nodes = (reach + 1.0) / grid.mm_per_node + 1.0
  h, w = qx.shape
  chunk = 4 if grid.mm_per_node > 0.45 else 2  # segments sharing one window
  for k0 in range(0, len(points) - 1, chunk):
    k1 = min(k0 + chunk, len(points) - 1)
    lo = np.floor(ji[k0:k1 + 1].min(0) - r_nodes).astype(int) - [j0, i0]
    hi = np.ceil(ji[k0:k1 + 1].max(0) + r_nodes).astype(int) + 1 - [j0, i0]
    sl = (slice(max(lo[1], 0), min(hi[1], h)), slice(max(lo[0], 0), min(hi[0], w)))
    if sl[0].start >= sl[0].stop or sl[1].start >= sl[1].stop:
      continue
    a = points[k0:k1].astype(np.float32)[:, :, None, None]
    ab = (points[k0 + 1:k1 + 1] - points[k0:k1]).astype(np.float32)[:, :, None, None]
    x, y = qx[sl] - a[:, 0], qy[sl] - a[:, 1]
    t = np.clip((x * ab[:, 0] + y * ab[:, 1]) / np.maximum(ab[:, 0] ** 2 + ab[:, 1] ** 2, 1e-6),
                0.0, 1.0)
    x -= t * ab[:, 0]
    y -= t * ab[:, 1]
    dd = x * x + y * y
    best = dd.argmin(axis=0)
    seg = best + k0 + np.take_along_axis(t, best[None], 0)[0]
    dd = dd.min(axis=0)
    better = dd < dist2[sl]
    dist2[sl] = np.where(better, dd, dist2[sl])
    par[sl] = np.where(better, seg, par[sl])
  near = np.flatnonzero(dist2 < reach ** 2)
  if near.size == 0:
    return None
  rows, cols = np.unravel_index(near, par.shape)
  flat = (rows + i0) * grid.shape[1] + cols + j0
  return flat, np.sqrt(dist2.ravel()[near]), par.ravel()[near]


def soft_tissue(grid: Grid, an: anat.Anatomy) -> tuple[np.ndarray, np.ndarray]:
  """Soft-tissue attenuation and the lung mask on `grid`."""
  qx, qy = grid.coords()
  spine_x = np.interp(qy, an.vert_y, an.vert_x).astype(np.float32)
  bw = np.interp(qy, an.body_y, an.body_x).astype(np.float32)
  t0 = np.interp(qy, an.body_y[[0, 3, 7, -1]], [0.4, 0.45, 1.0, 1.05]).astype(np.float32)
  body = t0 * np.sqrt(np.clip(1 - (qx / bw) ** 2, 0, 1)) * sig((bw - np.abs(qx)) / 2.0)
  # Lungs: inside the rib envelope of each side, outside the mediastinum,
  # above the domes, with sharp costophrenic angles.
  right = qx < spine_x
  env = np.where(right, np.interp(qy, an.envelope_y[0], an.envelope_x[0]),
                 np.interp(qy, an.envelope_y[1], an.envelope_x[1])).astype(np.float32)
  ey1 = np.where(right, an.envelope_y[0, 1], an.envelope_y[1, 1])
  ex1 = np.where(right, an.envelope_x[0, 1], an.envelope_x[1, 1])
  frac = np.clip((qy - an.apex_y) / (ey1 - an.apex_y), 0, 1)
  env = np.where(qy < ey1, 14.0 + (ex1 - 14.0) * np.sqrt(frac), env)
  ax = np.abs(qx - spine_x)
  (rx, ry, rc), (lx, ly, lc) = an.domes
  dia = np.where(right, ry + rc * (qx - rx) ** 2, ly + lc * (qx - lx) ** 2)
  heart = 0.0
  for cx, cy, a, b, ang in an.heart:
    c, s = math.cos(ang), math.sin(ang)
    u = (c * (qx - cx) + s * (qy - cy)) / a
    v = (-s * (qx - cx) + c * (qy - cy)) / b
    heart = np.maximum(heart, sig((1 - np.sqrt(u * u + v * v)) * 30.0))
  heart = heart * sig((dia + 8 - qy) / 3.0)  # the heart sits on the diaphragm
  kx, ky, kr = an.knob
  knob = sig((kr - np.hypot(qx - kx, qy - ky)) / 1.5)
  # Mediastinum: narrow above the carina, widening into the heart below it.
  widen = np.clip((qy - an.carina_y) / 60.0, 0, 1) * 14.0
  band = sig((np.where(right, 22.0, 20.0) + widen - ax) / 2.5) * sig((qy - an.apex_y + 30) / 5.0)
  hil = sum(sig((14.0 - np.hypot(qx - s * 50.0, qy - an.carina_y - 25.0)) / 4.0) for s in (-1, 1))
  # Lung wraps in front of and behind the heart: it stays partly lucent.
  medi = np.maximum(np.maximum(band, knob), 0.8 * heart)
  lung = (sig((env - ax) / 2.0) * sig((qy - an.apex_y) / 3.0) * sig((dia - qy) / 1.5)
          * (1 - medi))
  depth = (0.75 + 0.25 * np.clip((qy - an.apex_y - 20) / 150, 0, 1)) * np.sqrt(
      np.clip((env - ax) / 25.0, 0, 1))
  # Gas: trachea and main bronchi, gastric bubble with a fluid level.
  trachea = sig((8.0 - np.abs(qx - spine_x + 1.0)) / 1.2) * sig((an.carina_y - qy) / 3.0)
  for s in (-1, 1):
    d = np.abs((qx - spine_x) * 0.5 - s * (qy - an.carina_y) * 0.866)
    trachea = trachea + sig((6.0 - d) / 1.2) * sig((qy - an.carina_y) / 2.0) * sig(
        (an.carina_y + 30.0 - qy) / 4.0)
  bx, by, ba, bb = an.bubble
  bubble = (sig((1 - np.hypot((qx - bx) / ba, (qy - by) / bb)) * 12.0)
            * sig((by + 0.3 * bb - qy) / 1.0)          # fluid level
            * sig((qy - (ly + lc * (qx - lx) ** 2) - 4.0) / 1.5))  # under the left dome
  size, yb, xb = an.breasts
  breast = 0.0
  if size > 0:
    for s in (-1, 1):
      # A sharp lower fold, fading upwards into the chest wall.
      u, v = (qx - s * xb) / (95.0 * size ** 0.5), (qy - yb) / (75.0 * size ** 0.5)
      breast = breast + 0.28 * size * np.sqrt(np.clip(1 - u * u - np.maximum(v, 0) ** 2, 0, 1)) * (
          np.exp(-np.minimum(v, 0) ** 2 * 1.5))
  # Axillary folds: soft tissue from the chest wall to the arm.
  fold = 0.0
  for s in (-1, 1):
    d = (qx * s - an.half_width - 5.0) * 0.8 + (qy - an.envelope_y[0, 3]) * 0.6
    fold = fold + 0.18 * sig(-d / 4.0) * sig((qx * s - an.half_width + 10.0) / 6.0) * sig(
        (qy - an.envelope_y[0, 2]) / 8.0) * sig((an.envelope_y[0, 7] - qy) / 8.0)
  arm = 0.0
  for a, b in an.arms:
    ab = np.asarray(b, np.float32) - a
    t = np.clip(((qx - a[0]) * ab[0] + (qy - a[1]) * ab[1]) / float(ab @ ab), 0, 1)
    d = np.hypot(qx - a[0] - t * ab[0], qy - a[1] - t * ab[1])
    arm = np.maximum(arm, 0.45 * np.sqrt(np.clip(1 - (d / 45.0) ** 2, 0, 1)))
  body = np.maximum(body, arm)
  att = (body + 0.12 * hil - 0.66 * lung * depth - 0.06 * trachea
         - 0.35 * bubble + breast + fold)
  return np.maximum(att, 0).astype(np.float32), lung.astype(np.float32)


def density_field(grid: Grid, landmarks: np.ndarray, roi_values: np.ndarray) -> np.ndarray:
  """Local bone density d(q): a smooth blend of the 14 ROI values."""
  centres, side, _ = rois.roi_boxes(landmarks)
  rho = BONE["density_field_mm"] * side / rois.ROI_SIDE
  qx, qy = grid.coords()
  logits = -((qx[None] - centres[:, 0, None, None]) ** 2
             + (qy[None] - centres[:, 1, None, None]) ** 2) / (2 * rho ** 2)
  logits -= logits.max(axis=0, keepdims=True)
  w = np.exp(logits)
  return (np.tensordot(roi_values, w, axes=1) / w.sum(axis=0)).astype(np.float32)


def texture(grid: Grid, rng) -> tuple[np.ndarray, np.ndarray]:
  """Fine and coarse (porous) trabecular texture, unit sd: white noise on cells
  of texture_mm, bilinearly resampled to the grid (cheaper than filtering)."""
  out = []
  for mm in BONE["texture_mm"]:
    cells = mm / grid.mm_per_node
    if cells <= 1.0:  # texture finer than the grid: plain per-node noise
      out.append(rng.standard_normal(grid.shape, dtype=np.float32))
      continue
    shape = (int(grid.shape[0] / cells) + 2, int(grid.shape[1] / cells) + 2)
    t = resize(rng.standard_normal(shape, dtype=np.float32), grid.shape)
    out.append(t / max(float(t.std()), 1e-6))
  return out[0], out[1]


class Bones:
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
    amp = np.minimum(BONE["texture_amplitude"] * np.exp(BONE["texture_alpha"] * d), 0.8)
    self.rho = (BONE["trabecular_density"] * np.exp(BONE["density_alpha"] * d)
                * np.maximum(1 + amp * tex, 0)).astype(np.float32)
    self.ct = (BONE["cortical_mm"] * np.exp(BONE["cortical_alpha"] * d)).astype(np.float32)

  def _shell(self, flat, r, dist, scale):
    """Cortex + core of a round cross-section of radius r at `dist` from its axis."""
    rho, ct = self.rho.ravel()[flat], self.ct.ravel()[flat]
    core = chord(np.maximum(r - ct, 0.5), dist)
    att = BONE["bone_mu"] * scale * (BONE["cortical_density"] * (chord(r, dist) - core)
                                     + rho * core)
    self.att.ravel()[flat] += att.astype(np.float32)

  def tube(self, tube: anat.Tube):
    """A tubular bone (rib, clavicle, border) along a polyline."""
    hit = near_polyline(self.grid, tube.points, float(np.max(tube.half_width)))
    if hit is None:
      return
    flat, dist, p = hit
    seg = np.arange(len(tube.points))
    hw = np.interp(p, seg, tube.half_width).astype(np.float32)
    self._shell(flat, hw, dist, np.interp(p, seg, tube.rho).astype(np.float32))

  def disc(self, x, y, r):
    """A sphere seen from the front (humeral head), scaled to partial volume."""
    win = self.grid.window(np.array([[x, y]]), r + 1.0)
    if win is None:
      return
    qx, qy = self.grid.coords(win)
    dist = np.hypot(qx - x, qy - y).ravel()
    rows, cols = np.unravel_index(np.arange(dist.size), qx.shape)
    flat = (rows + win[0]) * self.grid.shape[1] + cols + win[2]
    self._shell(flat, np.float32(r), dist, 0.8)

  def plate(self, tri: np.ndarray, thickness: float):
    """A thin flat bone (scapular blade) over a soft-edged triangle."""
    win = self.grid.window(tri, 2.0)
    if win is None:
      return
    qx, qy = self.grid.coords(win)
    inside = np.full(qx.shape, np.inf, np.float32)
    orient = np.sign(np.cross(tri[1] - tri[0], tri[2] - tri[0]))
    for k in range(3):
      a, b = tri[k], tri[(k + 1) % 3]
      n = np.array([b[1] - a[1], a[0] - b[0]]) * -orient
      n = n / np.linalg.norm(n)
      inside = np.minimum(inside, (qx - a[0]) * n[0] + (qy - a[1]) * n[1])
    rho = self.rho[win[0]:win[1], win[2]:win[3]]
    att = BONE["bone_mu"] * thickness * (0.6 + rho) * sig(inside / 1.0)
    self.att[win[0]:win[1], win[2]:win[3]] += att.astype(np.float32)

  def vertebra(self, cx, cy, hw, hh, thoracic: bool):
    """A vertebra seen front-on: body with endplates, pedicles, spinous and
    transverse processes."""
    g = self.grid
    win = g.window(np.array([[cx, cy]]), max(1.9 * hw, hh) + 3.0)
    if win is None:
      return
    qx, qy = g.coords(win)
    dx, dy = qx - cx, qy - cy
    rho, ct = self.rho[win[0]:win[1], win[2]:win[3]], self.ct[win[0]:win[1], win[2]:win[3]]
    cd = BONE["cortical_density"]
    inner = np.maximum(hw - ct, 1.0)
    core = chord(inner, dx)
    outer = chord(hw, dx)
    body = sig((hh - np.abs(dy)) / 0.4)
    plate = 2.5 * ct * outer / (2 * hw) * np.exp(-((np.abs(dy) - hh + ct) / ct) ** 2)
    ring = 0.0
    for side in (-1, 1):  # pedicles: oval rings of cortex
      r = np.hypot((dx - side * 0.62 * hw) / (0.2 * hw), (dy + 0.3 * hh) / (0.33 * hh))
      ring = ring + np.exp(-((r - 1) * 3.5) ** 2) + 0.4 * sig((1 - r) * 6.0)
    # Spinous process: a teardrop below the body centre, projected over it.
    spinous = sig((1 - np.hypot(dx / 3.5, (dy - 0.45 * hh) / (0.55 * hh))) * 6.0)
    # Transverse processes: lateral bars at the pedicle level.
    reach = (1.75 if thoracic else 1.5) * hw
    trans = sig((reach - np.abs(dx)) / 1.5) * sig((np.abs(dx) - 0.8 * hw) / 1.5) * sig(
        (0.22 * hh - np.abs(dy + 0.25 * hh)) / 0.8)
    att = BONE["bone_mu"] * (BONE["spine_depth"] * (cd * (outer - core + plate) + rho * core)
                             * body + 1.2 * cd * ring + 2.0 * rho * spinous + 3.0 * rho * trans)
    self.att[win[0]:win[1], win[2]:win[3]] += att.astype(np.float32)


def vessels(grid: Grid, an: anat.Anatomy) -> np.ndarray:
  """Lung markings: attenuation of the vessel trees (soft-tissue units)."""
  out = np.zeros(grid.shape, np.float32)
  for v in an.vessels:
    hit = near_polyline(grid, v.points, float(np.max(v.half_width)))
    if hit is None:
      continue
    flat, dist, p = hit
    r = np.interp(p, np.arange(len(v.points)), v.half_width).astype(np.float32)
    out.ravel()[flat] = np.maximum(out.ravel()[flat], 0.03 * chord(r, dist))
  return out


def metal(grid: Grid, wires: list) -> np.ndarray:
  """Devices: (points [M, 2], half width mm, attenuation) wires and shapes."""
  out = np.zeros(grid.shape, np.float32)
  for pts, hw, att in wires:
    hit = near_polyline(grid, np.asarray(pts, np.float64), hw + 1.0)
    if hit is None:
      continue
    flat, dist, _ = hit
    out.ravel()[flat] += (att * sig((hw - dist) / 0.3)).astype(np.float32)
  return out
