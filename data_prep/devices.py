"""What lies on a patient in a chest film: ECG leads, lines and tubes, a
pacemaker, sternal wires. Drawn in the patient frame (mm) as metal wires
(points, half width mm, attenuation); bedside AP films carry them most often.
"""

from __future__ import annotations

import numpy as np

from data_prep import anatomy as anat

# Probability of each device on (PA, AP) films.
RATES = dict(ecg=(0.12, 0.7), pacemaker=(0.04, 0.08), central_line=(0.04, 0.45),
             endotracheal=(0.0, 0.3), nasogastric=(0.01, 0.35), sternal_wires=(0.04, 0.05))


def _bezier(pts, n=24):
  p = np.asarray(pts, np.float64)
  t = np.linspace(0, 1, n)[:, None]
  return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2]
          + t ** 3 * p[3])


def _circle(cx, cy, r, n=16):
  a = np.linspace(0, 2 * np.pi, n)
  return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], -1)


def draw(rng: np.random.Generator, an: anat.Anatomy) -> tuple[list, list]:
  """Wires to render and the names of the devices present."""
  ap = an.view == "AP"
  on = {k: rng.random() < v[int(ap)] for k, v in RATES.items()}
  hw, vy, vx = an.half_width, an.vert_y, an.vert_x
  clav = an.landmarks[0, 1]
  wires = []
  if on["ecg"]:
    spots = [(-0.75 * hw, clav + 25), (0.75 * hw, clav + 25), (-0.8 * hw, vy[anat.T12]),
             (0.85 * hw, vy[anat.T12] - 10), (0.3 * hw, vy[anat.T12] - 40)]
    for x, y in spots[:int(rng.integers(3, 6))]:
      x, y = x + rng.normal(0, 12), y + rng.normal(0, 12)
      wires.append((_circle(x, y, 7.0), 0.9, 0.25))      # electrode pad rim
      wires.append((_circle(x, y, 2.0, 8), 2.0, 1.2))    # snap
      out = np.array([np.sign(x) * rng.uniform(250, 400), y + rng.normal(0, 150)])
      wires.append((_bezier([(x, y), (x + rng.normal(0, 60), y + rng.normal(0, 60)),
                             out + rng.normal(0, 60, 2), out]), 0.7, 0.6))
  if on["pacemaker"]:
    s = 1 if rng.random() < 0.8 else -1
    gx, gy = s * rng.uniform(0.45, 0.65) * hw, clav + rng.uniform(20, 40)
    wires.append((np.array([[gx - 8, gy], [gx + 8, gy + 3]]), 20.0, 2.5))  # can
    svc = np.array([vx[5] - 20.0, an.carina_y])
    ra = np.array(an.heart[0][:2]) + [0, 10]
    rv = np.array(an.heart[1][:2]) + [10, 25]
    for tip in (ra, rv)[:int(rng.integers(1, 3))]:
      path = np.concatenate([_bezier([(gx, gy), (gx - s * 20, gy - 30), svc + [0, -60], svc]),
                             _bezier([svc, svc + [0, 40], tip + [-20, -30], tip])])
      wires.append((path, 1.1, 1.3))
      wires.append((np.stack([tip, tip + [4, 4]]), 2.5, 1.5))
  if on["central_line"]:
    s = -1 if rng.random() < 0.7 else 1
    start = np.array([s * rng.uniform(60, 110), clav + rng.uniform(-10, 10)])
    end = np.array([vx[5] - 18.0, an.carina_y + rng.uniform(0, 30)])
    wires.append((_bezier([start, start + [-s * 30, 15], end + [0, -40], end]), 0.9, 0.5))
    wires.append((np.stack([start, start + [s * 40, -120]]), 0.9, 0.5))
  if on["endotracheal"]:
    tip = an.carina_y - rng.uniform(30, 60)
    x = vx[3] - 1.0
    wires.append((np.array([[x - 3, -300.0], [x, tip]]), 0.8, 0.7))   # radiopaque stripe
    wires.append((np.array([[x, -300.0], [x, tip]]), 5.5, 0.03))      # tube wall
  if on["nasogastric"]:
    bx, by = an.bubble[:2]
    wires.append((np.concatenate([np.array([[vx[3] + 4, -300.0]]),
                                  _bezier([(vx[3] + 4, 0), (vx[10] + 10, vy[10]),
                                           (bx - 30, by - 20), (bx, by + 10)])]), 1.0, 0.5))
  if on["sternal_wires"]:
    for y in np.linspace(clav + 15, an.heart[0][1] + 20, int(rng.integers(4, 7))):
      c = _circle(vx[6] + rng.normal(0, 2), y, 5.0, 10) * [1.0, 0.5] + [0, 0.5 * y]
      wires.append((c, 0.9, 1.5))
  return wires, sorted(k for k, v in on.items() if v)
