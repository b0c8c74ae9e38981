"""From projected attenuation to a processed film, as CR and DX systems do it.

exposure (beam quality, scatter with or without an anti-scatter grid, grid
lines, quantum noise, collimation) -> log image -> exposure recognition over
the collimated field (random percentiles) -> equalisation (dynamic range
compression) -> unsharp masking (CR) or multi-frequency enhancement (DX) ->
a tone curve (S-shaped or gamma) -> lead side markers, burned-in annotation
text, shutter masking. Every step is drawn per film, so the absolute grey
level of bone says nothing about its density; only contrasts inside the film
(bone against the soft tissue and lung next to it, cortex, texture) do.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

PROCESS = dict(
    mu=2.5,                    # log attenuation per soft-tissue unit
    beam=(0.85, 1.15),         # beam-quality factor on all attenuation (kVp)
    scatter_grid=(0.08, 0.25), # scatter fraction with an anti-scatter grid
    scatter_none=(0.3, 0.6),   # without (bedside films)
    scatter_mm=25.0,
    grid_rate=(0.35, 0.15),    # share of PA / AP films showing grid lines
    noise=(0.004, 0.012),      # quantum noise sd at 0.2 mm pixels, range
    percentiles=((0.3, 3.0), (99.5, 99.99)),  # exposure recognition, ranges
    equalise=(0.4, 0.8),       # share of the low-frequency content removed
    equalise_mm=(15.0, 40.0),
    usm_gain=(0.0, 1.0),       # fine band gain
    usm_mm=(1.0, 3.0),
    mid_gain=(0.0, 0.6),       # DX: second (middle) band gain
    mid_mm=(5.0, 10.0),
    gamma=(0.75, 1.33),
    s_width=(0.25, 0.45),
    gain=(0.6, 1.0),           # share of the stored range used
)


def blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
  """Gaussian blur; large kernels run on a block-averaged copy."""
  if sigma_px < 0.3:
    return img
  k = int(sigma_px // 3)
  if k < 2:
    return ndimage.gaussian_filter(img, sigma_px, mode="nearest")
  h, w = img.shape
  small = Image.fromarray(img.astype(np.float32)).resize(
      (max(w // k, 2), max(h // k, 2)), Image.Resampling.BOX)
  small = ndimage.gaussian_filter(np.asarray(small), sigma_px / k, mode="nearest")
  return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


def collimation(shape, spacing: float, rng, keep) -> np.ndarray:
  """Soft mask of the collimated field (1 inside), a slightly turned
  rectangle inset from the detector edges, never cutting into `keep`
  (x0, y0, x1, y1 pixels: the region that must stay in the field)."""
  H, W = shape
  x0, y0, x1, y1 = keep
  room = np.array([x0, y0, W - 1 - x1, H - 1 - y1]) * spacing - 4.0
  inset = np.minimum(rng.uniform(0, 30, 4) * (rng.random(4) < 0.75), np.maximum(room, 0))
  inset = inset / spacing
  ang = np.deg2rad(rng.normal(0, 0.8))
  yy = np.arange(H, dtype=np.float32)[:, None] - (H - 1) / 2
  xx = np.arange(W, dtype=np.float32)[None, :] - (W - 1) / 2
  c, s = np.float32(np.cos(ang)), np.float32(np.sin(ang))
  u = c * xx + s * yy + (W - 1) / 2
  v = -s * xx + c * yy + (H - 1) / 2
  edge = 0.6 / spacing + 0.5  # penumbra
  m = np.ones(shape, np.float32)
  for d in (u - inset[0], v - inset[1], (W - 1 - inset[2]) - u, (H - 1 - inset[3]) - v):
    m *= np.clip(0.5 + d / (2 * edge), 0, 1)
  return m


def _text_mask(text: str, height_px: float) -> np.ndarray:
  """A binary mask of `text` in PIL's built-in bitmap font, scaled."""
  font = ImageFont.load_default()
  box = font.getbbox(text)
  img = Image.new("L", (box[2] + 2, box[3] + 2), 0)
  ImageDraw.Draw(img).text((1, 1), text, fill=255, font=font)
  a = np.asarray(img)
  rows = np.flatnonzero(a.max(1))
  a = a[rows[0]:rows[-1] + 1] if rows.size else a
  scale = max(height_px / a.shape[0], 0.2)
  size = (max(int(a.shape[1] * scale), 1), max(int(a.shape[0] * scale), 1))
  out = Image.fromarray(a).resize(size, Image.Resampling.BILINEAR)
  return np.asarray(out, np.float32) / 255.0


def _place(shape, size, rng, avoid, corners=(0, 1)):
  """Top-left (y, x) of a size (h, w) box in one of the corners (0 top left,
  1 top right, 2 bottom left, 3 bottom right), clear of the boxes in `avoid`
  ([N, 4] x0, y0, x1, y1); None when no corner is clear."""
  H, W = shape
  h, w = size
  for corner in rng.permutation(corners):
    for _ in range(6):
      my, mx = rng.uniform(0.02, 0.12, 2)
      y = int(my * H) if corner < 2 else int(H - h - my * H)
      x = int(mx * W) if corner % 2 == 0 else int(W - w - mx * W)
      if y < 0 or x < 0 or y + h > H or x + w > W:
        continue
      if ((avoid[:, 0] > x + w) | (avoid[:, 2] < x) | (avoid[:, 1] > y + h)
          | (avoid[:, 3] < y)).all():
        return y, x
  return None


def lead_marker(shape, spacing: float, rng, letter: str, avoid) -> np.ndarray:
  """Attenuation of a small lead letter (about 1 cm) on its plastic holder."""
  out = np.zeros(shape, np.float32)
  glyph = _text_mask(letter, rng.uniform(9, 15) / spacing)
  pad = max(int(2.5 / spacing), 1)
  holder = np.pad(np.zeros_like(glyph), pad)
  pos = _place(shape, holder.shape, rng, avoid, corners=(0, 1, 2, 3))
  if pos is None:
    return out
  y, x = pos
  h, w = holder.shape
  out[y:y + h, x:x + w] += 0.08  # acrylic holder
  out[y + pad:y + h - pad, x + pad:x + w - pad] += 6.0 * glyph
  return out


def expose(att: np.ndarray, spacing: float, rng, *, grid: bool, field: np.ndarray | None):
  """Log image (bone bright) of attenuation `att` and its parameters."""
  P = PROCESS
  beam = float(rng.uniform(*P["beam"]))
  intensity = np.exp(-P["mu"] * beam * att)
  scatter = float(rng.uniform(*(P["scatter_grid"] if grid else P["scatter_none"])))
  intensity = intensity + scatter * blur(intensity, P["scatter_mm"] / spacing)
  if field is not None:  # outside the field only scatter arrives
    intensity = intensity * (0.04 + 0.96 * field)
  log = -np.log(np.maximum(intensity, 1e-6))
  if grid and rng.random() < 0.6:  # grid lines, aliased by the pixel pitch
    f = spacing / rng.uniform(0.125, 0.25)
    f = abs(f - round(f))
    axis = int(rng.integers(2))
    n = att.shape[1 - axis]
    wave = np.sin(2 * np.pi * max(f, 0.05) * np.arange(n) + rng.uniform(0, 6.3))
    amp = float(rng.uniform(0.004, 0.015))
    log = log + amp * (wave[None, :] if axis == 0 else wave[:, None])
  noise_sd = float(rng.uniform(*P["noise"])) * 0.2 / spacing
  raw = np.frombuffer(rng.bytes(2 * att.size), np.uint8).reshape(2, *att.shape)
  noise = raw[0].astype(np.float32)
  noise += raw[1]
  noise -= 255.0
  log = log + (noise_sd / 104.5) * np.sqrt(np.exp(np.clip(log, 0, 6)) * 0.15) * noise
  return log.astype(np.float32), dict(beam=beam, scatter=scatter, noise_sd=noise_sd)


def process(log: np.ndarray, spacing: float, rng, *, modality: str, field=None):
  """CR / DX image processing of a log image to a presentation in [0, 1]."""
  P = PROCESS
  inside = log if field is None else log[field > 0.9]
  lo_p, hi_p = (float(rng.uniform(*r)) for r in P["percentiles"])
  lo, hi = np.percentile(inside, [lo_p, hi_p])
  img = (log - lo) / max(hi - lo, 1e-6)
  eq = float(rng.uniform(*P["equalise"]))
  eq_mm = float(rng.uniform(*P["equalise_mm"]))
  low = blur(img, eq_mm / spacing)
  img = img - eq * (low - float(np.mean(low)))
  g1, s1 = float(rng.uniform(*P["usm_gain"])), float(rng.uniform(*P["usm_mm"]))
  if modality == "CR":
    s1 *= 1.6
    g2 = 0.0
  else:
    g2 = float(rng.uniform(*P["mid_gain"]))
  s2 = float(rng.uniform(*P["mid_mm"]))
  detail = g1 * (img - blur(img, s1 / spacing))
  if g2:
    detail = detail + g2 * (img - blur(img, s2 / spacing))
  img = img + detail
  if rng.random() < 0.5:
    gamma = float(rng.uniform(*P["gamma"]))
    img = np.clip(img, 0, None) ** gamma
    curve = dict(gamma=gamma)
  else:
    c, w = float(rng.uniform(0.4, 0.6)), float(rng.uniform(*P["s_width"]))
    a, b = np.tanh((0 - c) / w), np.tanh((1 - c) / w)
    img = (np.tanh((img - c) / w) - a) / (b - a)
    curve = dict(s_centre=c, s_width=w)
  img = np.clip(img, 0, 1).astype(np.float32)
  return img, dict(percentiles=[lo_p, hi_p], equalise=eq, equalise_mm=eq_mm, usm_gain=g1,
                   usm_mm=s1, mid_gain=g2, mid_mm=s2, **curve)


def annotate(img: np.ndarray, spacing: float, rng, text: str, avoid) -> None:
  """Burns white annotation text (e.g. 'AP PORTABLE') into a corner."""
  glyphs = _text_mask(text, rng.uniform(4, 7) / spacing)
  pos = _place(img.shape, glyphs.shape, rng, avoid)
  if pos is not None:
    y, x = pos
    h, w = glyphs.shape
    img[y:y + h, x:x + w] = np.maximum(img[y:y + h, x:x + w], glyphs)
